"""Command line: `vaultdrop run | sandbox | status | jobs | scan | upload | delete | check-config | version | …`.

Every command ends in one of three ways: its output and status 0; one line naming what is
wrong and a non-zero status (2 for a usage mistake, 78 for the configuration, 1 for the
rest); or, only for a bug, a traceback under a line saying it is one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import re
import socket
import sys
import textwrap
import time
import traceback
from dataclasses import asdict
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import uvloop
from pydantic import TypeAdapter, ValidationError

from . import __version__, logs
from .config import (DEFAULT_CONFIG_PATH, Duration, ListenAddress, Settings, load_config, load_local_config,
                     settings_from_dict)
from .errors import CONFIG_EXIT_STATUS, ConfigError, LocalFileError, OperatorError, RetryLater, VaultdropError
from .files import ignore_lease_breaks
from .job import STARTED, TERMINAL, Job, JobState
from .journal import USED_MARK, Journal, JournalStore, journal_was_used
from .journal.committer import Committer
from .logs import printable
from .runstate import RunState, daemon_running, read_run_state
from .stages import postaction

DEMO_DIR = Path("vaultdrop-demo")
DEMO_PORT = 8765
DEPENDENCIES = ("watchdog", "httpx", "lxml", "pydantic", "pydantic-settings", "systemd-python", "aiohttp",
                "httpx-aiohttp", "uvloop")
_DURATION = TypeAdapter(Duration)
_LISTEN_ADDRESS = TypeAdapter(ListenAddress)
VIDEO_ID = re.compile(r"[A-Za-z0-9_-]+")
# What main() returns, for `--help` (the README's table says the same): a script or a unit
# decides on these.
EXIT_STATUSES = (
    (0, "done"),
    (1, "the command could not do what it was asked (one line says why), or a one-shot upload failed"),
    (2, "a usage mistake (with the usage text)"),
    (70, "a bug: an internal error with a traceback; please report it"),
    (75, "try again later: another vaultdrop holds the state_dir, the journal's database is unreachable "
         "or its disk cannot be written (systemd restarts the daemon)"),
    (78, "the configuration: invalid, credentials rejected, or a journal gone after use (systemd does not "
         "restart the daemon)"),
    (130, "interrupted (Ctrl-C): work in the journal resumes next time"),
    (141, "stdout was closed by its reader (vaultdrop jobs | head)"),
)


def demo_settings(base: Path, url: str, environ: dict[str, str] | None = None) -> Settings:
    """The embedded default: a local drop folder, a local journal, the sandbox's credentials."""
    from .sandbox.launcher import DEFAULT_PASSWORD, DEFAULT_USER

    base = base.resolve()
    for name in ("drop", "archive", "failed", "state"):
        (base / name).mkdir(parents=True, exist_ok=True)
    return settings_from_dict({
        "daemon": {"state_dir": str(base / "state"), "concurrency": 2, "drain_timeout": 30, "rescan_interval": 60},
        "vault": {"base_url": url, "user": DEFAULT_USER, "password": DEFAULT_PASSWORD, "poll_interval": 0.2,
                  "max_attempts": 5},
        "folders": [{"path": str(base / "drop"), "settle": 2, "after_upload": "archive",
                     "archive_dir": str(base / "archive"), "failed_dir": str(base / "failed")}],
    }, source="the built-in sandbox demo", environ=environ)


def _open_journal(args: argparse.Namespace, readonly: bool = True) -> JournalStore:
    """The journal the daemon uses, found with [daemon] and [journal] only: no vault secret;
    --state-dir needs no config at all."""
    if args.state_dir is not None:
        return _sqlite(args.state_dir / "vaultdrop.db", readonly)
    if args.sandbox:
        return _sqlite(args.demo_dir.resolve() / "state" / "vaultdrop.db", readonly)
    settings = load_local_config(args.config)
    if settings.journal.url is None:
        return _sqlite(settings.daemon.journal_path, readonly)
    from .wiring import open_journal

    return open_journal(settings, reader=readonly)


def _state_dir(args: argparse.Namespace) -> Path:
    """Where the journal is; --state-dir needs no config (and so no secrets) at all."""
    if args.state_dir is not None:
        return Path(args.state_dir)
    if args.sandbox:
        return args.demo_dir.resolve() / "state"
    return load_local_config(args.config).daemon.state_dir


def _setup_logs(args: argparse.Namespace, settings: Settings | None = None) -> None:
    """-q, -v and -vv win over log_level: a one-off look must not need a config edit."""
    level = settings.daemon.log_level if settings is not None else "info"
    if args.quiet:
        level = "error"
    elif args.verbose:
        level = "debug"
    logs.setup(level, settings.secrets() if settings is not None else (), libraries=args.verbose > 1,
               log_format=args.log_format)


def _local_time(epoch: float | None) -> str | None:
    """Local ISO 8601 with the offset, to the second: what a person compares with a clock."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds") if epoch else None


# -- run -------------------------------------------------------------------------------


def _port_free(port: int) -> None:
    """A busy demo port is one line with the fix, not a sandbox traceback."""
    if port == 0:
        return
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise OperatorError(f"port {port} is in use (another `make run`?): stop it, or pick another port: "
                                f"make run PORT={port + 1}  (vaultdrop run --sandbox --port {port + 1})") from None


def _demo_hints(args: argparse.Namespace) -> str:
    """The flags the printed commands need to find this demo's journal."""
    return "--sandbox" if args.demo_dir == DEMO_DIR else f"--sandbox --demo-dir {args.demo_dir}"


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon

    # --metrics-addr (checked by the parser) overrides [metrics] listen, across reloads too.
    environ = dict(os.environ)
    if args.metrics_addr is not None:
        environ["VAULTDROP_METRICS__LISTEN"] = args.metrics_addr
    with contextlib.ExitStack() as stack:  # the demo's sandbox stops however the run ends
        if args.sandbox:
            settings = _demo_run(args, environ, stack)
            reload_settings = None
        else:
            settings = load_config(args.config, environ)
            def reload_settings() -> Settings:
                return load_config(args.config, environ)
        _setup_logs(args, settings)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # its loop costs less CPU per file
            return runner.run(Daemon(settings, reload_settings).run())


def _demo_run(args: argparse.Namespace, environ: dict[str, str], stack: contextlib.ExitStack) -> Settings:
    """`make run`: a sandbox of its own (stopped by `stack`), the demo's settings, the banner."""
    from .sandbox.launcher import spawn_sandbox

    _port_free(args.port)
    sandbox = stack.enter_context(spawn_sandbox(args.demo_dir.resolve() / "sandbox", port=args.port))
    settings = demo_settings(args.demo_dir, sandbox.url, environ)
    print("\n".join(map(printable, (
        f"vaultdrop demo: sandbox vault at {sandbox.url}",
        f"  drop files into   {settings.folders[0].path}",
        f"  uploaded videos:  {sandbox.root}/storage",
        f"  archived files:   {settings.folders[0].archive_dir}",
        f"  watch progress:   .venv/bin/vaultdrop status {_demo_hints(args)}",
        f"  upload a file:    .venv/bin/vaultdrop upload {_demo_hints(args)} FILE",
        "  stop with Ctrl-C (in-flight uploads drain first)"))), flush=True)
    return settings


# -- status and jobs --------------------------------------------------------------------


def _sqlite(path: Path, readonly: bool) -> Journal:
    used = journal_was_used(path.parent)
    if not path.exists() and used is None:
        raise OperatorError(f"no journal at {path} yet: has the daemon run?")
    return Journal(path, readonly=readonly, used=used)


def _job_dict(job: Job) -> dict[str, Any]:
    values = asdict(job)
    values["state"] = job.state.value
    for key in ("created_at", "updated_at", "not_before", "s3_since"):
        values[key] = _local_time(values[key])
    return values


def _daemon_line(record: RunState | None, running: bool, journal: JournalStore) -> dict[str, Any]:
    """Whether a daemon holds this journal's lock, in which phase since when, and its last
    error, unless a later change of the job it was about (a retry that went through) has
    resolved it."""
    live = record if record is not None and running else None
    error_job = journal.get(record.last_error_job) if record and record.last_error_job is not None else None
    resolved = record is not None and record.last_error_job is not None and (
        error_job is None or (error_job.state is not JobState.FAILED
                              and error_job.updated_at > (record.last_error_at or 0)))
    phase = live.phase if live else "stopped" if record and record.phase == "stopped" else None
    return {"running": running, "pid": live.pid if live else None,
            "since": _local_time(live.started_at) if live else None,
            "phase": phase, "phase_since": _local_time(record.phase_at) if record and phase else None,
            "drain_deadline": _local_time(live.drain_deadline) if live else None,
            "last_error": record.last_error if record and not resolved else None,
            "last_error_at": _local_time(record.last_error_at) if record and not resolved else None,
            "waiting": live.waiting if live else None,
            "missing_folders": live.missing_folders if live else None}


def _job_progress(job: Job, record: RunState | None, running: bool, now: float) -> tuple[str, dict[str, Any]]:
    """What is happening to a job part way, in the status's words and as JSON: in flight
    (here, with its upload's rate and ETA, or on another host that holds its lease), waiting
    for its next try, or left by a stopped daemon for the next start."""
    rate = (record.upload_rates or {}).get(str(job.id)) if record and running else None
    elsewhere = job.owner not in (None, record.host if record else None) and job.lease_expiry > now
    if elsewhere or (running and job.not_before <= now):
        eta = (job.size - job.bytes_sent) / rate if rate and job.state is JobState.UPLOADING else None
        speed = f"  {logs.human_size(rate)}/s, ETA {logs.human_clock(eta)}" if eta is not None else ""
        return speed, {"status": "in flight", "rate": rate if eta is not None else None, "eta_seconds": eta}
    if running:
        error = f" ({printable(job.last_error)})" if job.last_error else ""
        return f"  waiting: next try {_local_time(job.not_before)}{error}", {"status": "waiting"}
    return "  left part way: resumes when the daemon starts", {"status": "left part way"}


def _daemon_words(daemon: dict[str, Any]) -> str:
    if not daemon["running"]:
        return "daemon: not running" + (f" (stopped {daemon['phase_since']})" if daemon["phase"] == "stopped" else "")
    if daemon["phase"] == "draining":
        return (f"daemon: draining since {daemon['phase_since']} (pid {daemon['pid']}): nothing new starts; uploads "
                f"in flight have until {daemon['drain_deadline']}, the rest resume at the next start")
    if daemon["phase"] == "starting":
        return f"daemon: starting since {daemon['since']} (pid {daemon['pid']})"
    return f"daemon: running since {daemon['since']} (pid {daemon['pid']})"


def cmd_status(args: argparse.Namespace) -> int:
    journal = _open_journal(args)
    state_dir = _state_dir(args)
    record, running = read_run_state(state_dir), daemon_running(state_dir)
    daemon = _daemon_line(record, running, journal)
    counts = journal.counts()
    now = time.time()
    started = [(job, *_job_progress(job, record, running, now)) for s in STARTED for job in journal.jobs(s, limit=1000)]
    if args.json:
        print(json.dumps({"daemon": daemon, "counts": {s.value: n for s, n in counts.items()}, **{
            key: [{**_job_dict(job), **facts} for job, _, facts in started if facts["status"] == status]
            for key, status in (("in_flight", "in flight"), ("waiting", "waiting"), ("left", "left part way"))}},
            indent=2))
        return 0
    print(_daemon_words(daemon))
    if daemon["last_error"]:
        print(printable(f"last error: {daemon['last_error_at']} {daemon['last_error']}"))
    for folder in daemon["missing_folders"] or ():
        print(f"folder missing: {printable(folder)} (watched once it exists: a mount not up yet?)")
    if daemon["waiting"] and any(daemon["waiting"].values()):
        waiting = daemon["waiting"]
        print(f"not complete yet: {waiting.get('settling', 0)} settling, {waiting.get('open', 0)} open for writing"
              f" ({waiting.get('open_too_long', 0)} past incomplete_timeout), {waiting.get('incomplete', 0)} "
              "with an incomplete container")
    print("jobs: " + ("  ".join(f"{state.value} {count}" for state, count in counts.items() if count) or "none yet"))
    for job, words, _ in started:
        percent = 100 * job.bytes_sent / job.size if job.size else 100
        extra = f" s3 request {job.s3_request_id} {job.s3_status or ''}" if job.s3_request_id else ""
        print(printable(f"  #{job.id} {job.state.value:<11} {percent:5.1f}%  {job.relpath}{extra}{_holder(job)}{words}"))
    return 0


def _holder(job: Job) -> str:
    """Which host works on the job (a shared PostgreSQL journal has several)."""
    return f"  [on {job.owner}]" if job.owner and job.state not in TERMINAL else ""


def _metrics_addr(value: str) -> str:
    """A bad --metrics-addr is a usage mistake naming the flag, not an environment variable's."""
    try:
        return str(_LISTEN_ADDRESS.validate_python(value))
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.errors(include_url=False)[0]["msg"]) from None


def _since(value: str) -> float:
    """`--since 2h` (a duration ago) or `--since 2026-11-30T10:00` (local time)."""
    try:
        return time.time() - float(_DURATION.validate_python(value))
    except ValidationError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration (2h, 30m) or a date (2026-11-30T10:00): {value!r}") from None


def _list_jobs(args: argparse.Namespace) -> int:
    journal = _open_journal(args)
    state = JobState(args.state) if args.state else None
    jobs = journal.jobs(state, args.limit, folder=args.folder, since=args.since)
    if args.json:
        print(json.dumps([_job_dict(j) for j in jobs], indent=2))
        return 0
    for job in jobs:
        error = f"  ({job.last_error})" if job.last_error and job.state is not JobState.DONE else ""
        changed = datetime.fromtimestamp(job.updated_at).strftime("%Y-%m-%d %H:%M:%S")
        print(printable(f"#{job.id:<6} {changed}  {job.state.value:<11} {logs.human_size(job.size):>9}  "
                        f"{Path(job.folder).name}/{job.relpath}{error}{_holder(job)}"))
    total = journal.count_jobs(state, folder=args.folder, since=args.since)
    if total > len(jobs):
        print(f"{len(jobs)} of {total} shown, --limit {total} shows all", file=sys.stderr)
    elif not jobs:
        print("no jobs" + (" match" if state or args.folder or args.since else " yet"), file=sys.stderr)
    return 0


def _job_view(job: Job, history: list[dict[str, Any]]) -> list[str]:
    """`jobs show`: what an operator asks of a job, in words; the lease, the fencing epoch
    and the other bookkeeping columns are for `--json`. Attempts are counted as the log
    counts them (`attempt=1` is the first), not as the journal's retry counter."""
    rows = [("file", f"{printable(job.relpath)} in {printable(job.folder)}"),
            ("state", f"{job.state.value} since {_local_time(job.updated_at)}"),
            ("size", logs.human_size(job.size) + (f", {logs.human_size(job.bytes_sent)} sent"
                                                  if job.state is JobState.UPLOADING else ""))]
    if job.state is JobState.FAILED:
        rows.append(("attempts", str(max(job.attempts, 1))))
    elif job.state not in TERMINAL:
        rows.append(("attempt", f"{job.attempts + 1}" + (f", next at {_local_time(job.not_before)}"
                                                          if job.not_before > time.time() else "")))
        if job.waiting_for:
            rows.append(("waiting for", f"{job.waiting_for} to answer again"))
    if job.last_error and job.state is not JobState.DONE:
        rows.append(("error", printable(job.last_error)))
    rows += [(name, str(value)) for name, value in (("video", job.video_id), ("upload key", job.upload_key),
                                                     ("sha256", job.sha256)) if value]
    if job.s3_request_id:
        rows.append(("s3 request", f"{job.s3_request_id} {job.s3_status or ''}".rstrip()))
    if job.moved_to:
        rows.append(("file now at", printable(job.moved_to)))
    elif job.released:
        rows.append(("file now", "deleted after the upload"))
    if job.owner and job.state not in TERMINAL:
        rows.append(("on host", job.owner))
    lines = [f"job {job.id}"] + [f"  {name + ':':<12} {value}" for name, value in rows] + ["history:"]
    for line in history:
        move = f"{line['from_state'] or 'new'} -> {line['to_state']}" if line["from_state"] != line["to_state"] \
            else line["to_state"]
        lines.append(f"  {line['at']}  {move:<26} {printable(line['detail'] or '')}".rstrip())
    return lines


def _known_job(journal: JournalStore, job_id: int) -> Job:
    job = journal.get(job_id)
    if job is None:
        raise OperatorError(f"no job {job_id} (`vaultdrop jobs` lists them)")
    return job


def cmd_jobs(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list_jobs(args)
    if args.action == "retry" and args.all_failed:
        if args.id is not None:
            args.parser.error("jobs retry takes a job id or --all-failed, not both")
    elif args.id is None:
        args.parser.error(f"jobs {args.action} needs a job id")
    if args.action == "show":
        journal = _open_journal(args)
        job = _known_job(journal, args.id)
        history = [{**h, "at": _local_time(h["at"])} for h in journal.history(job.id)]
        if args.json:
            print(json.dumps({**_job_dict(job), "history": history}, indent=2))
        else:
            print("\n".join(_job_view(job, history)))
        return 0
    journal = _open_journal(args, readonly=False)
    try:
        if args.action == "retry":
            return _retry(journal, args)
        job = _known_job(journal, args.id)
        if job.state not in TERMINAL:
            raise OperatorError(f"job {job.id} is {job.state.value}: only a finished job can be forgotten")
        Committer(journal).forget(job.id)
        print(f"job {job.id} forgotten")
        return 0
    finally:
        journal.close()


def _retry(journal: JournalStore, args: argparse.Namespace) -> int:
    jobs = (journal.jobs(JobState.FAILED, journal.count_jobs(JobState.FAILED)) if args.all_failed
            else [_known_job(journal, args.id)])
    refused = 0
    for job in jobs:
        if job.state is not JobState.FAILED:
            what = f"done, video {job.video_id}" if job.state is JobState.DONE else job.state.value
            raise OperatorError(f"job {job.id} is {what}: only a failed job can be retried"
                                + (" (`vaultdrop upload --force` uploads a file again)"
                                   if job.state in TERMINAL else ""))
        try:
            _, restored = Committer(journal).retry(job.id, bring_back=postaction.restore)
        except LocalFileError as exc:  # its path is taken: the job stays failed, its file where it is
            if not args.all_failed:
                raise OperatorError(f"job {job.id} not retried: {exc}") from None
            print(f"vaultdrop: job {job.id} not retried: {printable(str(exc))}", file=sys.stderr)
            refused += 1
            continue
        if restored:
            print(printable(restored))
        print(f"job {job.id} queued again: {printable(job.relpath)}")
    if not jobs:
        print("no failed jobs")
    return 1 if refused else 0


def cmd_scan(args: argparse.Namespace) -> int:
    """What the daemon would do with each file in the watched folders now, and why: nothing
    is uploaded, and the journal is only read."""
    from .intake.preview import preview

    settings = (demo_settings(args.demo_dir, "http://127.0.0.1")  # its vault is never asked
                if args.sandbox else load_config(args.config))
    journal = _journal_of(settings, readonly=True)
    try:
        plans = [plan for folder in settings.folders for plan in preview(folder, journal)]
    finally:
        if journal is not None:
            journal.close()
    if args.json:
        print(json.dumps([asdict(plan) for plan in plans], indent=2))
        return 0
    for plan in plans:
        size = f" ({logs.human_size(plan.size)})" if plan.size is not None else ""
        print(f"{plan.action:<7} {printable(Path(plan.folder).name)}/{printable(plan.file)}{size}: "
              f"{printable(plan.reason)}")
    actions = [plan.action for plan in plans]
    print(f"{len(plans)} file(s): {actions.count('upload')} to upload, {actions.count('wait')} waiting, "
          f"{actions.count('known')} known to the journal, {actions.count('ignore')} ignored", file=sys.stderr)
    return 0


# -- one-shot upload and delete ---------------------------------------------------------


def cmd_upload(args: argparse.Namespace) -> int:
    from .oneshot import checked_files, upload_files

    settings, sandbox = _settings_or_demo(args)
    try:
        files = checked_files(args.files, settings)
        if args.force:
            settings = settings.model_copy(update={"daemon": settings.daemon.model_copy(update={"dedupe": "identity"})})
        _setup_logs(args, settings)
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        return asyncio.run(upload_files(settings, files, force=args.force, progress=progress))
    finally:
        if sandbox is not None:
            sandbox.stop()


def _settings_or_demo(args: argparse.Namespace) -> tuple[Settings, Any]:
    """The config, or with --sandbox the demo's: its running sandbox if `make run` has one,
    else a sandbox of our own (returned, to be stopped)."""
    if not args.sandbox:
        return load_config(args.config), None
    from .sandbox.launcher import spawn_sandbox

    root = args.demo_dir.resolve() / "sandbox"
    url = (root / "ready-url").read_text(encoding="utf-8").strip() if (root / "ready-url").exists() else ""
    if url and _answers(url):
        return demo_settings(args.demo_dir, url), None
    sandbox = spawn_sandbox(root)
    try:
        return demo_settings(args.demo_dir, sandbox.url), sandbox
    except BaseException:  # a bad VAULTDROP_… variable: the sandbox must not outlive us
        sandbox.stop()
        raise


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/_sandbox/videos", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def cmd_delete(args: argparse.Namespace) -> int:
    from .clients.vault import VaultClient

    if not VIDEO_ID.fullmatch(args.video_id):  # the vault issues none other; quoted, it fails the signature
        raise OperatorError(f"no such video: {args.video_id} (video ids are letters, digits, '-' and '_')")
    settings, sandbox = _settings_or_demo(args)
    journal = None
    try:
        journal = _journal_of(settings)
        busy = [job for job in journal.by_video(args.video_id) if job.state not in TERMINAL] if journal else []
        if busy:
            raise OperatorError(f"job {busy[0].id} ({printable(busy[0].relpath)}) is {busy[0].state.value} with "
                                f"video {args.video_id}: delete it once the job is done")

        async def delete() -> bool:
            client = VaultClient.from_settings(settings.vault)
            try:
                return await client.delete(args.video_id)
            finally:
                await client.aclose()

        try:
            deleted = asyncio.run(delete())
        except RetryLater as exc:
            raise OperatorError(f"could not delete video {args.video_id}: {exc}") from None
        if not deleted:  # the journal is left alone: a wrong base_url must not unmake good jobs
            raise OperatorError(f"no such video: {args.video_id}")
        print(f"video {args.video_id} deleted")
        if journal is not None:  # after the vault said so: the jobs then tell the truth
            for job in Committer(journal).video_deleted(
                    args.video_id, f"video {args.video_id} deleted from the vault by the operator (vaultdrop delete)"):
                print(f"job {job.id} ({printable(job.relpath)}) now failed: `vaultdrop jobs retry {job.id}` "
                      "uploads it again")
        return 0
    finally:
        if journal is not None:
            journal.close()
        if sandbox is not None:
            sandbox.stop()


def _journal_of(settings: Settings, readonly: bool = False) -> JournalStore | None:
    """The configured journal if it exists yet (`delete` and `scan` also work before any daemon ran)."""
    if settings.journal.url is None:
        if not settings.daemon.journal_path.exists():
            return None
        return _sqlite(settings.daemon.journal_path, readonly=readonly)
    from .wiring import open_journal

    return open_journal(settings, reader=readonly)


def cmd_journal_copy(args: argparse.Namespace) -> int:
    """Move a single host's SQLite journal to PostgreSQL, so it can grow to several hosts
    without uploading anything again. The daemon must be stopped (its lock is taken)."""
    from .daemon import lock_state_dir
    from .journal.postgres import PgJournal, without_password

    _setup_logs(args)
    state_dir = args.state_dir or load_local_config(args.config).daemon.state_dir
    lock = lock_state_dir(state_dir)
    try:
        source = _sqlite(state_dir / "vaultdrop.db", readonly=True)
        tables = source.dump()
        source.close()
        password = _read_password(args.password_file) if args.password_file else None
        target = PgJournal(args.to, password)
        try:
            target.load(tables)
        finally:
            target.close()
    finally:
        lock.close()
    print(f"copied {len(tables['jobs'])} job(s), {len(tables['history'])} history line(s) and "
          f"{len(tables['stale_videos'])} pending video delete(s) to {without_password(args.to)}; now set "
          "[journal] url on every host (the SQLite journal is left as it was)")
    return 0


def cmd_journal_reset(args: argparse.Namespace) -> int:
    """Start over with an empty journal, on purpose: the daemon refuses to on its own when
    the state_dir shows an earlier run (journal.JournalMissing). Files still in the watched
    folders are then uploaded again. A journal that holds jobs is never thrown away here."""
    from .daemon import lock_state_dir

    _setup_logs(args)
    state_dir = args.state_dir or load_local_config(args.config).daemon.state_dir
    lock = lock_state_dir(state_dir)  # the daemon must be stopped
    try:
        used = journal_was_used(state_dir)
        if used is None:
            print(printable(f"nothing to reset: no journal was set up in {state_dir} yet"))
            return 0
        path = state_dir / "vaultdrop.db"
        if path.exists():
            try:
                jobs = Journal.jobs_held(path)
            except ConfigError as exc:
                raise OperatorError(f"{exc}: move it away first if you really mean to start over") from None
            if jobs:
                raise OperatorError(f"the journal {path} holds {jobs} job(s): move it away first "
                                    "if you really mean to start over")
        for leftover in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm"),
                         state_dir / USED_MARK):
            leftover.unlink(missing_ok=True)
    finally:
        lock.close()
    print(f"journal reset ({used}): the next start begins with a new, empty journal, and uploads "
          "the files in the watched folders again")
    return 0


def _read_password(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the password file {path}: {exc.strerror}") from None


def cmd_check_config(args: argparse.Namespace) -> int:
    from .preflight import check_directories, check_online

    settings = load_config(args.config)
    check_directories(settings)
    for index, folder in enumerate(settings.folders):
        if not folder.path.exists():
            print(printable(f"vaultdrop: warning: {settings.source}: folders[{index}].path: {folder.path} does not exist yet: "
                            "the daemon watches it once it does"), file=sys.stderr)
    if args.online:  # OK comes last, once every check passed
        try:
            for line in asyncio.run(check_online(settings)):
                print(line)
        except RetryLater as exc:
            raise OperatorError(f"not reachable: {exc}") from None
    print(printable(f"{args.config}: OK ({len(settings.folders)} folder(s), vault {settings.vault.base_url})"))
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"vaultdrop {__version__}")
    print(f"python {sys.version.split()[0]}")
    for name in DEPENDENCIES:
        try:
            print(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            print(f"{name} not installed")
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    from .parserdoc import completion

    print(completion(build_parser(), args.shell), end="")
    return 0


def cmd_manpage(args: argparse.Namespace) -> int:
    from .parserdoc import manpage

    print(manpage(build_parser(), __version__), end="")
    return 0


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaultdrop", description="Folders in, videos in the vault, exactly once.",
                                     parents=[logs.verbosity_options()], epilog=_exit_table(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vaultdrop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    verbosity = logs.verbosity_options(keep_earlier=True)  # -v/-q before the command, or after it

    def command(name: str, help: str, demo: bool = False, journal: bool = False,
                config: bool = True) -> argparse.ArgumentParser:
        added = sub.add_parser(name, help=help, parents=[verbosity])
        added.set_defaults(parser=added)
        if config:
            added.add_argument("--config", type=Path,
                               default=Path(os.environ.get("VAULTDROP_CONFIG", DEFAULT_CONFIG_PATH)),
                               help="TOML configuration (default %(default)s, or $VAULTDROP_CONFIG)")
        if demo:
            added.add_argument("--sandbox", action="store_true", help="use the built-in sandbox demo setup")
            added.add_argument("--demo-dir", type=Path, default=DEMO_DIR,
                               help="where the demo keeps its folders (default ./%(default)s)")
        if journal:
            added.add_argument("--state-dir", type=Path,
                               help="read the journal in this directory without loading the config")
        return added

    run = command("run", "run the daemon", demo=True)
    run.add_argument("--port", type=int, default=DEMO_PORT, help="sandbox port with --sandbox (0 = any free)")
    run.add_argument("--metrics-addr", metavar="HOST:PORT", type=_metrics_addr,
                     help="serve Prometheus metrics at http://HOST:PORT/metrics (overrides [metrics] listen)")
    run.set_defaults(func=cmd_run)

    from .sandbox.cli import add_sandbox_arguments, run_sandbox

    sandbox = sub.add_parser("sandbox", help="serve the local SesameVault + ScaleEngine sandbox", parents=[verbosity])
    add_sandbox_arguments(sandbox)
    sandbox.set_defaults(func=run_sandbox)

    status = command("status", "whether the daemon runs, job counts, uploads in flight", demo=True, journal=True)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    jobs = command("jobs", "list, show, retry or forget jobs", demo=True, journal=True)
    jobs.add_argument("action", choices=["list", "show", "retry", "forget"], nargs="?", default="list")
    jobs.add_argument("id", type=int, nargs="?")
    jobs.add_argument("--state", choices=[s.value for s in JobState], help="only jobs in this state")
    jobs.add_argument("--folder", help="only jobs of this folder (its path, or its last name)")
    jobs.add_argument("--since", type=_since, help="only jobs changed since: a duration ago (2h) or a local date")
    jobs.add_argument("--limit", type=int, default=50, help="newest jobs shown (default %(default)s)")
    jobs.add_argument("--all-failed", action="store_true", help="with retry: every failed job")
    jobs.add_argument("--json", action="store_true", help="list, show: the raw journal records as JSON")
    jobs.set_defaults(func=cmd_jobs)

    scan = command("scan", "what the daemon would do with each file in the watched folders now, and why",
                   demo=True)
    scan.add_argument("--json", action="store_true")
    scan.set_defaults(func=cmd_scan)

    upload = command("upload", "upload files once, now, with a progress bar", demo=True)
    upload.add_argument("files", type=Path, nargs="+")
    upload.add_argument("--force", action="store_true", help="upload again even if this file was uploaded")
    upload.add_argument("--progress", action=argparse.BooleanOptionalAction,
                        help="progress bar on stderr (default: when stderr is a terminal)")
    upload.set_defaults(func=cmd_upload)

    delete = command("delete", "delete a video from the vault", demo=True)
    delete.add_argument("video_id")
    delete.set_defaults(func=cmd_delete)

    journal = sub.add_parser("journal", help="manage the journal")
    journal_sub = journal.add_subparsers(dest="journal_command", required=True)
    copy = journal_sub.add_parser("copy", help="copy the SQLite journal into a new PostgreSQL journal",
                                  parents=[verbosity])
    copy.add_argument("--to", required=True, metavar="postgresql://…", help="the new (empty) PostgreSQL database")
    copy.add_argument("--password-file", type=Path, help="its password (else libpq's: ~/.pgpass, PGPASSWORD)")
    copy.add_argument("--config", type=Path, default=Path(os.environ.get("VAULTDROP_CONFIG", DEFAULT_CONFIG_PATH)),
                      help="whose state_dir holds the SQLite journal (default %(default)s)")
    copy.add_argument("--state-dir", type=Path, help="the SQLite journal's directory, without loading the config")
    copy.set_defaults(func=cmd_journal_copy)
    reset = journal_sub.add_parser(
        "reset", help="start over with an empty journal (only when it is empty or gone; the daemon stopped)",
        parents=[verbosity])
    reset.add_argument("--config", type=Path, default=Path(os.environ.get("VAULTDROP_CONFIG", DEFAULT_CONFIG_PATH)),
                       help="whose state_dir to reset (default %(default)s)")
    reset.add_argument("--state-dir", type=Path, help="the state directory, without loading the config")
    reset.set_defaults(func=cmd_journal_reset)

    check = command("check-config", "validate the configuration and exit")
    check.add_argument("--online", action="store_true",
                       help="also ask the vault and the control API whether they accept the credentials")
    check.set_defaults(func=cmd_check_config)

    version = command("version", "vaultdrop's version and its dependencies'", config=False)
    version.set_defaults(func=cmd_version)

    completions = command("completion", "print a shell completion script (deploy/install.sh installs bash's)",
                          config=False)
    completions.add_argument("shell", choices=["bash", "zsh"])
    completions.set_defaults(func=cmd_completion)

    man = command("manpage", "print the vaultdrop(1) man page, in roff (man -l <(vaultdrop manpage))", config=False)
    man.set_defaults(func=cmd_manpage)
    return parser


def _error_text(exc: VaultdropError) -> str:
    """The message, with any file name in it escaped; only a configuration error spans
    lines (one per problem), every other message is one line whatever a name holds."""
    if isinstance(exc, ConfigError):
        return "\n".join(map(printable, str(exc).split("\n")))
    return printable(str(exc))


def _exit_table() -> str:
    return "exit statuses:\n" + "\n".join(textwrap.fill(meaning, 88, initial_indent=f"  {status:<5}",
                                                          subsequent_indent=" " * 7)
                                            for status, meaning in EXIT_STATUSES)


def main(argv: list[str] | None = None) -> int:
    ignore_lease_breaks()
    args = build_parser().parse_args(argv)
    try:
        status = int(args.func(args))
        sys.stdout.flush()
        return status
    except VaultdropError as exc:
        # Only what exits 78 is a configuration error: a journal's full disk or a database
        # that is down (75), a daemon already running (75) are not.
        label = "configuration error: " if exc.exit_status == CONFIG_EXIT_STATUS else ""
        print(f"vaultdrop: {label}{_error_text(exc)}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("\nvaultdrop: interrupted (work in the journal resumes next time)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `vaultdrop jobs | head`: the reader left; say nothing, and keep Python's exit-time
        # flush of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception:  # noqa: BLE001 - the one place a bug is reported as one
        print("vaultdrop: internal error, please report it with this output:", file=sys.stderr)
        traceback.print_exc()
        return 70


if __name__ == "__main__":
    sys.exit(main())
