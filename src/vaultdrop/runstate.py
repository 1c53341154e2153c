"""Whether a daemon runs on a journal, in which phase, and its last error: for `vaultdrop status`.

The daemon holds an exclusive flock on STATE_DIR/vaultdrop.lock while it runs, so the
lock itself answers "is one running" (a crashed daemon's lock is released by the kernel).
The rest lives in STATE_DIR/vaultdrop.status, a small JSON file replaced atomically, kept
out of the jobs table: it describes the process, not a file. Its phase (starting,
running, draining, stopped) says what the daemon does with the jobs the journal shows
part way, and its upload rates give `status` an ETA the journal alone cannot.
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
from typing import Any

from .events import Observer
from .job import Job

LOCK_NAME = "vaultdrop.lock"
STATUS_NAME = "vaultdrop.status"


@dataclass(frozen=True)
class RunState:
    pid: int
    started_at: float
    last_error: str | None = None
    last_error_at: float | None = None
    last_error_job: int | None = None  # the job the error was about: a later change of it may resolve it
    waiting: dict[str, int] | None = None  # files not complete yet, by reason (intake/completeness.py)
    phase: str | None = None  # starting, running, draining, stopped (None: written before phases existed)
    phase_at: float | None = None
    drain_deadline: float | None = None  # while draining: when uploads still running are cut off
    host: str | None = None  # this daemon's journal host_id: its leases are not another host's work
    upload_rates: dict[str, float] | None = None  # job id -> bytes/s sent over the last status interval
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


class RunStateRecorder(logging.Handler, Observer):
    """Records the daemon's start and phase, as a log handler its latest error line, and as
    an observer of the uploads the bytes each job sent, for its rate."""

    def __init__(self, state_dir: Path, host: str | None = None) -> None:
        super().__init__(logging.ERROR)
        self._path = state_dir / STATUS_NAME
        self._state = RunState(pid=os.getpid(), started_at=time.time(), phase="starting", host=host)
        self._sent: dict[int, int] = {}  # bytes per job since the last tick
        self._ticked = time.monotonic()
        self._write()

    def emit(self, record: logging.LogRecord) -> None:
        job_id = getattr(record, "fields", {}).get("JOB_ID")
        self._update(last_error=record.getMessage()[:500], last_error_at=record.created,
                     last_error_job=job_id if isinstance(job_id, int) else None)

    def uploaded(self, job: Job, nbytes: int) -> None:
        self._sent[job.id] = self._sent.get(job.id, 0) + nbytes

    def phase(self, phase: str, drain_deadline: float | None = None) -> None:
        """Starting, running, draining (until `drain_deadline`), stopped."""
        self._update(phase=phase, phase_at=time.time(), drain_deadline=drain_deadline,
                     upload_rates=None if phase == "stopped" else self._state.upload_rates)

    def tick(self, waiting: dict[str, int]) -> None:
        """Each status interval: why files are not complete yet, and each upload's rate over
        the interval; written only when that changed."""
        now = time.monotonic()
        elapsed = max(now - self._ticked, 1e-3)
        rates = {str(job_id): round(sent / elapsed, 1) for job_id, sent in sorted(self._sent.items())}
        self._sent.clear()
        self._ticked = now
        self._update(waiting=waiting, upload_rates=rates)

    def missing_folders(self, folders: list[str]) -> None:
        """Which watched folders do not exist now (a mount not up yet)."""
        self._update(missing_folders=folders)

    def _update(self, **changes: Any) -> None:
        state = replace(self._state, **changes)
        if state != self._state:
            self._state = state
            with suppress(OSError):  # a full disk: the error line itself still goes out, no traceback here
                self._write()

    def _write(self) -> None:
        temporary = self._path.with_name(f".{STATUS_NAME}.tmp")
        temporary.write_text(json.dumps(asdict(self._state)), encoding="utf-8")
        os.replace(temporary, self._path)
