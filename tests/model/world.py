"""The exploration's whole contact surface with vaultdrop: settings, journal, pipeline, a
scheduler, a crash and a restart. When main changes `build_pipeline`, `Pipeline` or the
journal's interface, this module is the one place to adapt.

The journal is SQLite in the example's state_dir, or a PostgreSQL database (`PgDatabase`)
emptied before each example: the same promises hold on both backends.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from vaultdrop.admission import admit
from vaultdrop.completeness import Version, version_of
from vaultdrop.config import FolderSettings, Settings, settings_from_dict
from vaultdrop.journal import Journal
from vaultdrop.model import TERMINAL, Job, JobState
from vaultdrop.pipeline import Pipeline
from vaultdrop.watch import regular_file_stat
from vaultdrop.wiring import build_pipeline, max_delay, open_journal

from .fakes import (API_KEY, API_SECRET, CDN, CONTROL_URL, PASSWORD, USER, VAULT_URL, FakeClock, NotDurable, Runaway,
                    Services)

RUNAWAY_REQUESTS = 400  # one job run never needs this many requests
BACKOFF_MAX = 60.0
STATUS_POLL = 30.0

HOST_ID = "explorer"  # the same after a crash, as a restarted host's default id is

# The journal's writing methods: a crash can strike right after any of them commits.
JOURNAL_WRITES = frozenset({"enqueue", "follow", "wake", "transition", "update", "discard_video", "stale_deleted",
                            "stale_retry", "retry", "forget"})


@dataclass(frozen=True)
class PgDatabase:
    """A PostgreSQL database the exploration owns: each example starts it empty."""

    url: str  # without the password, as [journal] url
    password: str

    def empty(self) -> None:
        """Drop every table (the journal migrates again when it opens): no job, no id
        sequence left from the previous example."""
        with psycopg.connect(self.url, password=self.password, autocommit=True) as db:
            db.execute("DROP SCHEMA public CASCADE")
            db.execute("CREATE SCHEMA public")


class FakeTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on the fake clock: a background `asyncio.sleep` (the outage probe)
    ends when simulated time passes, never by wall time, so runs stay reproducible."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._fake_clock = clock

    def time(self) -> float:
        return self._fake_clock()


class FakeIntake:
    """Intake (completeness.py) as the exploration plays it, the runner's Readiness: who
    holds which drop folder file open for writing, and the version (size, mtime, inode,
    change time) each path had when the world last settled it.

    Who writes is the kernel's answer, as completeness.py asks it (files.open_for_writing:
    a read lease, taken through a symlink too, is refused while any writer holds the inode,
    under whatever name, and across a daemon restart)."""

    def __init__(self, drop: Path, folder: Callable[[], FolderSettings | None]) -> None:
        self.drop = drop
        self._folder = folder
        self.writers: dict[str, int] = {}  # relpath a writer opened (and wrote to) -> its inode
        self.settled: dict[str, Version] = {}
        self.touched: list[str] = []  # said "settling": its settle timer runs (World.run_due fires it)

    def open_for_writing(self, relpath: str) -> bool:
        try:
            info = os.stat(self.drop / relpath)  # through a symlink, as the kernel's lease is taken
        except OSError:
            return False
        return info.st_ino in self.writers.values()

    def _relpath(self, path: Path) -> str | None:
        return path.relative_to(self.drop).as_posix() if path.is_relative_to(self.drop) else None

    def waiting_reason(self, path: Path) -> str | None:
        relpath, folder = self._relpath(path), self._folder()
        if relpath is None or folder is None:
            return None
        if self.open_for_writing(relpath):
            return "open for writing"
        info = regular_file_stat(folder, relpath)
        if info is None or self.settled.get(relpath) == version_of(info):
            return None
        if relpath not in self.touched:
            self.touched.append(relpath)
        return "settling"

    def writing(self, path: Path) -> bool:
        relpath = self._relpath(path)
        return relpath is not None and self.open_for_writing(relpath)

    def forget_settled(self) -> None:
        """A restart: the versions found complete lived in memory (the rescan settles anew)."""
        self.settled.clear()
        self.touched.clear()


class Crash(BaseException):
    """The process died right after a journal commit (BaseException: nothing may catch it)."""


class CrashingJournal:
    """The real journal, made to die right after its Nth commit from when it is armed."""

    def __init__(self, inner: Journal) -> None:
        self.inner = inner
        self.countdown: int | None = None

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name not in JOURNAL_WRITES:
            return attribute

        def write(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if self.countdown is not None:
                self.countdown -= 1
                if self.countdown <= 0:
                    self.countdown = None
                    raise Crash(f"crash right after journal.{name}")
            return result

        return write


def make_settings(root: Path, *, after_upload: str, s3: bool, dedupe: str, database: PgDatabase | None = None,
                  drop_configured: bool = True) -> Settings:
    """Two folders: `drop` (explored) and `other` (idle, so a reload can remove `drop`);
    the journal in `database`, else SQLite in state_dir."""
    drop: dict[str, Any] = {"path": str(root / "drop"), "settle": 1, "after_upload": after_upload,
                            "archive_dir": str(root / "archive"), "failed_dir": str(root / "failed")}
    if s3:
        drop["s3"] = {"bucket": "bucket"}
    data: dict[str, Any] = {
        "daemon": {"state_dir": str(root / "state"), "dedupe": dedupe},
        "vault": {"base_url": VAULT_URL, "user": USER, "password": PASSWORD, "poll_interval": 2, "timeout": 30,
                  "max_attempts": 4, "confirm_timeout": 20, "backoff_base": 1, "backoff_max": BACKOFF_MAX},
        "folders": ([drop] if drop_configured else []) + [{"path": str(root / "other")}],
    }
    data["journal"] = {"host_id": HOST_ID}
    if database is not None:
        data["journal"].update(url=database.url, password=database.password)
    if s3:
        data["scaleengine"] = {"api_url": CONTROL_URL, "api_key": API_KEY, "api_secret": API_SECRET, "cdn": CDN,
                               "status_poll_interval": STATUS_POLL, "status_timeout": 600}
    return settings_from_dict(data, source="exploration", environ={})


class World:
    """A daemon without threads or watchers: settle, schedule, crash and restart by hand."""

    def __init__(self, root: Path, *, after_upload: str, s3: bool, dedupe: str,
                 database: PgDatabase | None = None) -> None:
        if database is not None:
            database.empty()
        for name in ("drop", "other", "archive", "failed", "state"):
            (root / name).mkdir(parents=True, exist_ok=True)
        self.root = root
        self.drop = root / "drop"
        self.options: dict[str, Any] = {"after_upload": after_upload, "s3": s3, "dedupe": dedupe,
                                       "database": database}
        self.clock = FakeClock()
        self.services = Services(self.clock)
        self.loop = FakeTimeLoop(self.clock)
        self.drop_configured = True
        self.crashes = 0
        self.intake = FakeIntake(self.drop, lambda: self.folders.get(str(self.drop)))
        self._start()

    # -- life cycle ----------------------------------------------------------------

    def _start(self) -> None:
        self.settings = make_settings(self.root, drop_configured=self.drop_configured, **self.options)
        self.journal = CrashingJournal(open_journal(self.settings, clock=self.clock))
        self.displaced: list[Path] = []  # paths a post-action found other content at (Completeness.look_again)
        self._build()

    def _build(self) -> None:
        self.folders: dict[str, FolderSettings] = {str(f.path): f for f in self.settings.folders}
        self.pipeline: Pipeline = build_pipeline(
            self.settings, self.journal, self._folder_for,  # type: ignore[arg-type]
            clock=self.clock, sleep=self.clock.sleep, transport=self.services.transport(self._on_disk_first),
            on_displaced=self.displaced.append, readiness=self.intake,
        )
        self.pipeline._rng = random.Random(0)  # deterministic jitter: build_pipeline takes no rng (yet)
        self.max_wait = max_delay(self.settings) + 1.0  # no job may rest longer than this from now

    def _on_disk_first(self, request: httpx.Request) -> None:
        """No request leaves while a commit is only in the page cache: after a power cut
        the journal must still know of everything the vault or the control API was told."""
        if self.journal.unsynced:
            raise NotDurable(f"{request.method} {request.url.path} sent with {self.journal.unsynced} "
                             "journal commit(s) not yet on disk")

    def _horizon(self) -> float:
        return self.clock() + max_delay(self.settings)

    def _folder_for(self, job: Job) -> FolderSettings | None:
        return self.folders.get(job.folder)

    def reload(self, *, drop_configured: bool) -> None:
        """SIGHUP: new settings, a new pipeline, the same journal."""
        self.drop_configured = drop_configured
        self._do(self.pipeline.aclose())
        self.settings = make_settings(self.root, drop_configured=drop_configured, **self.options)
        self._build()
        if drop_configured:
            self.rescan()

    def crash(self) -> None:
        """Drop every in-memory object (a PostgreSQL journal's pooled connections too)
        and start again from what the journal committed alone."""
        self.crashes += 1
        self._do(self.pipeline.aclose())
        self.journal.inner.close()
        self.intake.forget_settled()
        self._start()
        self.rescan()

    def close(self) -> None:
        self._do(self.pipeline.aclose())
        self.journal.inner.close()
        self.loop.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def arm_crash(self, after_commits: int) -> None:
        self.journal.countdown = after_commits

    def _do(self, coroutine: Any) -> Any:
        """Run one coroutine on this world's loop; a Crash restarts the world."""
        try:
            return self.loop.run_until_complete(coroutine)
        except Crash:
            self.crash()
            return None
        except NotDurable as exc:
            raise AssertionError(str(exc)) from None

    # -- the daemon's moves ----------------------------------------------------------

    def settle(self, relpath: str) -> Job | None:
        """Intake's verdict on one path that stopped changing: never while a writer holds it
        open; else the version is complete, remembered, and admitted (daemon._on_settled)."""
        folder = self.folders.get(str(self.drop))
        if folder is None or self.intake.open_for_writing(relpath):
            return None
        info = regular_file_stat(folder, relpath)
        if info is None:
            return None
        self.intake.settled[relpath] = version_of(info)
        if relpath in self.intake.touched:
            self.intake.touched.remove(relpath)
        if info.st_size == 0:
            return None
        left: list[Path] = []  # paths a followed job left: intake settles them again (Completeness.look_again)
        job = self._do(admit(self.pipeline.committer, folder, relpath, info, look_again=left.append))
        for path in left:
            self.settle(path.relative_to(self.drop).as_posix())
        return job

    def writer_opened(self, relpath: str) -> None:
        """A writer opened the path and writes to it (held open until writer_closed)."""
        self.intake.writers[relpath] = os.stat(self.drop / relpath).st_ino

    def writer_closed(self, relpath: str) -> None:
        """The writer closed it: settling decides from now on."""
        self.intake.writers.pop(relpath, None)

    def rescan(self) -> None:
        """What a start-up or reload scan settles: every file in the drop folder."""
        for path in sorted(self.drop.iterdir()):
            self.settle(path.name)

    def run_due(self, limit: int) -> int:
        """Run up to `limit` due jobs one after another (each until it ends or waits)."""
        self._do(self.pipeline.delete_stale_videos())  # the daemon does this every few seconds
        for relpath in list(self.intake.touched):  # their settle timers fired (each open one restarts)
            self.settle(relpath)
        ran = 0
        while ran < limit:
            jobs = self.journal.runnable(self.clock(), set(), 1, self.folders, self._horizon())
            if not jobs:
                break
            ran += 1
            self.services.start_run(RUNAWAY_REQUESTS)
            try:
                self._do(self.pipeline.run(jobs[0]))
            except Runaway as exc:
                raise AssertionError(f"job {jobs[0].id} spins: {exc}") from None
            finally:
                self.services.runaway_limit = None
            while self.displaced:  # the daemon settles such a path again at once
                self.settle(self.displaced.pop(0).relative_to(self.drop).as_posix())
        return ran

    def quiesce(self, max_rounds: int = 300) -> None:
        """Faults cleared, folder back, a rescan, then the scheduler until nothing is due."""
        self.services.clear_faults()
        self.journal.countdown = None
        if not self.drop_configured:
            self.reload(drop_configured=True)
        self.rescan()
        for _ in range(max_rounds):
            self.run_due(50)
            due = self.journal.next_due(set(), self.folders, self._horizon())
            if due is None:
                return
            self.clock.advance(max(0.0, due - self.clock()) + 1.0)
        raise AssertionError(f"jobs still due after {max_rounds} scheduler rounds: {self.active_jobs()}")

    # -- what the invariants read ----------------------------------------------------------

    def due_within(self, seconds: float) -> set[int]:
        """Ids of the jobs the scheduler would start if `seconds` passed now."""
        jobs = self.journal.runnable(self.clock() + seconds, set(), 100_000, self.folders, self._horizon())
        return {job.id for job in jobs}

    def all_jobs(self) -> list[Job]:
        return self.journal.jobs(limit=100_000)

    def active_jobs(self) -> list[Job]:
        return [job for job in self.all_jobs() if job.state not in TERMINAL]

    def failed_jobs(self) -> list[Job]:
        return self.journal.jobs(JobState.FAILED, limit=100_000)

    def operator(self, command: str, job_id: int) -> None:
        """`vaultdrop jobs retry|forget ID` as cli.py does it: through the same committer
        (a failed job's file is brought back from failed_dir before its retry)."""
        try:
            getattr(self.pipeline.committer, command)(job_id)
        except Crash:
            self.crash()
