"""Logging: structured journald records under systemd, readable lines in a terminal.

Every record may carry operator-facing fields (JOB_ID, FOLDER, FILE, STAGE, ...) passed
as `extra={"fields": {...}}`; journald stores them as fields, the console appends them as
key=value. A redaction filter is the safety net that keeps secrets out of every line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from .job import Job
    from .journal import JournalStore

logger = logging.getLogger("vaultdrop")
JOURNAL_SOCKET = "/run/systemd/journal/socket"
LIBRARIES = ("httpx", "httpcore", "watchdog")

# Fixed MESSAGE_IDs for key events, explained by deploy/vaultdrop.catalog.
MESSAGE_IDS = {
    "job_done": "5b8a4d3f0c2e4e51a1d7e3b9f2c60a11",
    "job_failed": "9e2f7c1a4b3d4c6e8f0a2b4c6d8e0f12",
    "config_reloaded": "3c1d5e7f9a0b4c2d8e6f1a3b5c7d9e13",
    "daemon_ready": "7a9c1e3f5b7d4f0a2c4e6a8c0e2f4a14",
    "drain_timeout": "1f3e5d7c9b1a4e2c6a8e0c2a4f6d8b15",
    "journal_outage": "034d2f0966e642e98b56c9598f66b533",
    "lease_lost": "adfeddd8e6214d899ff60b73c25485c8",
}


def human_size(size: float) -> str:
    """The one spelling of a size everywhere a person reads it: decimal units, `52.4 MB`."""
    units = ("B", "kB", "MB", "GB", "TB")
    power = 0
    while abs(size) >= 1000 and power < len(units) - 1:
        size /= 1000
        power += 1
    return f"{size:.0f} B" if power == 0 else f"{size:.1f} {units[power]}"


def verbosity_options(keep_earlier: bool = False, formats: bool = True) -> argparse.ArgumentParser:
    """-v/-vv/-q (and --log-format, unless not `formats`) as a parent parser. A command's copy must `keep_earlier`: argparse copies
    every value a subcommand's parser has over the main parser's, so with a default there
    `vaultdrop -v status` would lose its -v."""
    options = argparse.ArgumentParser(add_help=False)
    loudness = options.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS if keep_earlier else 0,
                          help="debug lines (-vv: also httpx and watchdog); wins over log_level")
    loudness.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS if keep_earlier else False,
                          help="errors only; wins over log_level")
    if formats:
        options.add_argument("--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS if keep_earlier else "auto",
                             help="log lines on stderr: text, or one JSON object per line with journald's fields "
                                  "(default auto: journald under systemd, else text)")
    return options


def human_clock(seconds: float) -> str:
    """A time left as a clock shows it (`2:05`, `1:02:05`): the ETA of an upload."""
    minutes, whole = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{whole:02d}" if hours else f"{minutes}:{whole:02d}"


def log(level: int, message: str, *, event: str | None = None, exc_info: bool = False, **fields: Any) -> None:
    """Log with structured fields (upper-cased for journald); `event` adds its MESSAGE_ID."""
    structured = {key.upper(): value for key, value in fields.items() if value is not None}
    if event is not None:
        structured["MESSAGE_ID"] = MESSAGE_IDS[event]
    logger.log(level, message, extra={"fields": structured}, exc_info=exc_info)


def job_fields(job: Job) -> dict[str, Any]:
    """What an operator filters a job's lines on (`journalctl JOB_ID=7`, `FILE=a.mov`);
    ATTEMPT is the attempt in progress (a line about a failed attempt overrides it)."""
    return {"job_id": job.id, "folder": job.folder, "file": job.relpath, "upload_key": job.upload_key,
            "video_id": job.video_id, "s3_request_id": job.s3_request_id, "stage": job.state.value,
            "attempt": job.attempts + 1, "bytes": job.size}


def log_change(journal: JournalStore, job: Job, level: int, message: str, *, event: str | None = None,
               **fields: Any) -> None:
    """The one line of a state change `job` just went through; DURATION_MS is the time it
    spent in the previous state, from the journal's history (so it survives a restart)."""
    history = journal.history(job.id)
    spent = history[-1]["at"] - history[-2]["at"] if len(history) > 1 else 0.0
    log(level, message, event=event, **{**job_fields(job), "duration_ms": int(spent * 1000), **fields})


def log_done(journal: JournalStore, job: Job) -> None:
    """The summary line of a finished job: size, time since it was queued (from its
    history, across restarts), and the rate of its upload's own POST."""
    history = journal.history(job.id)
    total = history[-1]["at"] - history[0]["at"]
    rate = f", upload {job.size / job.upload_seconds / 1e6:.1f} MB/s" if job.upload_seconds else ""
    log_change(journal, job, logging.INFO,
               f"done: {job.relpath} ({human_size(job.size)} in {total:.1f} s{rate}) video {job.video_id}",
               event="job_done", duration_ms=int(total * 1000))


class _Redact(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for secret in self.secrets:
                    message = message.replace(secret, "[redacted]")
                record.msg, record.args = message, None
        return True


# C0, DEL and C1 (a lone 0x9b starts an escape sequence on some terminals), and a byte
# that is not UTF-8 (os.fsdecode's surrogate escape, which a UTF-8 stdout cannot print).
_CONTROL_CHARACTERS = {**{i: f"\\x{i:02x}" for i in (*range(32), *range(0x7F, 0xA0))},
                       10: "\\n", 13: "\\r", 9: "\\t", **{0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)}}


def printable(text: str) -> str:
    """A file name as data on a terminal: control characters and undecodable bytes shown escaped."""
    return text.translate(_CONTROL_CHARACTERS)


class _ConsoleFormatter(logging.Formatter):
    """One record, one short line for a person: control characters (a newline in a file
    name) are shown escaped, so a crafted name cannot forge log lines; the folder by its
    name, sizes in human units, a value the message already says (the file, the video id,
    an upload key equal to it) not again. journald keeps every field in full."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record).translate(_CONTROL_CHARACTERS)
        message = record.getMessage()
        fields: Mapping[str, Any] = getattr(record, "fields", {})
        shown: dict[str, str] = {}
        for key, value in fields.items():
            text = os.path.basename(str(value).rstrip("/")) if key == "FOLDER" else str(value)
            if key in _CONSOLE_HIDDEN:
                continue
            if key in _SAID_ONCE and (text in message or text in shown.values()):
                continue
            shown[key] = text
        pairs = " ".join(f"{k.lower()}={v.translate(_CONTROL_CHARACTERS)}" for k, v in shown.items())
        return f"{line} {pairs}" if pairs else line


# The numbers of the daemon's stats line (daemon.Throughput), which its words say already.
STATS_FIELDS = ("FILES_DONE", "BYTES_DONE", "BYTES_SENT", "RATE_BPS", "QUEUE", "UPLOADING", "OLDEST_PENDING_S")
# A console line leaves out what its message says (stage, size) or only queries need
# (durations); a file, video id or upload key
# (the sandbox's video id is the key) is shown only if not on the line already.
_CONSOLE_HIDDEN = frozenset({"MESSAGE_ID", "STAGE", "DURATION_MS", "BYTES", *STATS_FIELDS})
_SAID_ONCE = frozenset({"FILE", "UPLOAD_KEY", "VIDEO_ID"})


def journal_fields(record: logging.LogRecord, message: str) -> dict[str, Any]:
    """What journald stores of a record: its message and priority, where it came from, and
    its operator-facing fields (JOB_ID, FOLDER, FILE, STAGE, ...)."""
    fields: Mapping[str, Any] = getattr(record, "fields", {})
    return {"MESSAGE": message, "PRIORITY": _priority(record.levelno), "SYSLOG_IDENTIFIER": "vaultdrop",
            "LOGGER": record.name, "CODE_FILE": record.pathname, "CODE_LINE": record.lineno,
            "CODE_FUNC": record.funcName, **{k: str(v) for k, v in fields.items()}}


class _JournalHandler(logging.Handler):
    """Send straight to journald with the record's fields (systemd-python's sendv)."""

    def __init__(self) -> None:
        super().__init__()
        from systemd import journal

        self._send = journal.send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(**journal_fields(record, self.format(record)))
        except Exception:  # noqa: BLE001 - logging must never take the daemon down
            self.handleError(record)


class _JsonFormatter(logging.Formatter):
    """`--log-format json`, for hosts without journald: one JSON object per line with the
    fields journald would get, plus the time (journald adds its own). ASCII only, so a
    control character or an undecodable byte in a file name travels escaped."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")
        return json.dumps({"TIMESTAMP": at, **journal_fields(record, super().format(record))})


def _priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


LogFormat = Literal["auto", "text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
_log_format: LogFormat = "auto"


def journald_available() -> bool:
    """Under systemd, stderr is a journal stream whose device:inode JOURNAL_STREAM names;
    a child whose stderr was redirected inherits the variable but not the stream."""
    try:
        info = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (os.environ.get("JOURNAL_STREAM") == f"{info.st_dev}:{info.st_ino}"
            and os.path.exists(JOURNAL_SOCKET))


def setup(level: str = "info", secrets: Iterable[str] = (), force_journal: bool | None = None,
          libraries: bool = False, log_format: LogFormat | None = None) -> None:
    """Configure the vaultdrop logger once per process (re-callable on reload); `libraries`
    (`-vv`) adds the debug lines of httpx, httpcore and watchdog. `log_format` None keeps
    the one chosen before (a reload keeps the command line's); "auto" is journald when
    stderr is a journal stream, else text."""
    global _log_format
    _log_format = log_format or _log_format
    use_journal = journald_available() if force_journal is None else force_journal
    handler: logging.Handler
    if _log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonFormatter("%(message)s"))
    elif use_journal and _log_format == "auto":
        handler = _JournalHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_ConsoleFormatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    handler.vaultdrop_output = True  # type: ignore[attr-defined]
    handler.addFilter(_Redact(secrets))
    for name in (logger.name, *LIBRARIES):
        named = logging.getLogger(name)
        for old in [h for h in named.handlers if getattr(h, "vaultdrop_output", False)]:
            named.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    for name in LIBRARIES if libraries else ():
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.DEBUG)


def attach(handler: logging.Handler, secrets: Iterable[str]) -> None:
    """Add a handler of vaultdrop's lines beside the output `setup` manages, redacted too."""
    handler.addFilter(_Redact(secrets))
    logger.addHandler(handler)
