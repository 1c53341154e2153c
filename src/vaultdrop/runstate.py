"""Whether a daemon runs on a journal, since when, and its last error: for `vaultdrop status`.

The daemon holds an exclusive flock on STATE_DIR/vaultdrop.lock while it runs, so the
lock itself answers "is one running" (a crashed daemon's lock is released by the kernel).
Start time and last error live in STATE_DIR/vaultdrop.status, a small JSON file replaced
atomically, kept out of the jobs table: they describe the process, not a file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path

LOCK_NAME = "vaultdrop.lock"
STATUS_NAME = "vaultdrop.status"


@dataclass(frozen=True)
class RunState:
    pid: int
    started_at: float
    last_error: str | None = None
    last_error_at: float | None = None
    waiting: dict[str, int] | None = None  # files not complete yet, by reason (intake/completeness.py)
    missing_folders: list[str] | None = None  # configured folders that do not exist (intake/folders.py)


def daemon_running(state_dir: Path) -> bool:
    """True while some process holds the daemon's lock on this state directory."""
    try:
        with (state_dir / LOCK_NAME).open("r") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except OSError:
        return False


def read_run_state(state_dir: Path) -> RunState | None:
    """The last daemon's record, or None when there is none (or it is unreadable)."""
    try:
        return RunState(**json.loads((state_dir / STATUS_NAME).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


class RunStateRecorder(logging.Handler):
    """Records the daemon's start and, as a log handler, its latest error line."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(logging.ERROR)
        self._path = state_dir / STATUS_NAME
        self._state = RunState(pid=os.getpid(), started_at=time.time())
        self._write()

    def emit(self, record: logging.LogRecord) -> None:
        self._state = replace(self._state, last_error=record.getMessage()[:500], last_error_at=record.created)
        with suppress(OSError):  # a full disk: the error line itself still goes out, no traceback here
            self._write()

    def waiting(self, counts: dict[str, int]) -> None:
        """Why files are not complete yet."""
        self._update(replace(self._state, waiting=counts))

    def missing_folders(self, folders: list[str]) -> None:
        """Which watched folders do not exist now (a mount not up yet)."""
        self._update(replace(self._state, missing_folders=folders))

    def _update(self, state: RunState) -> None:
        """Written only when something changed: the daemon reports every few seconds."""
        if state != self._state:
            self._state = state
            with suppress(OSError):
                self._write()

    def _write(self) -> None:
        temporary = self._path.with_name(f".{STATUS_NAME}.tmp")
        temporary.write_text(json.dumps(asdict(self._state)), encoding="utf-8")
        os.replace(temporary, self._path)
