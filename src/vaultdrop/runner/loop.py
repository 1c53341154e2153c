"""The scheduling loop: claimed jobs run as tasks on the event loop, and keep their leases.

runner/scheduler.py chooses and claims (the `concurrency` slots and the small-file lane);
this runs what it starts, one task per job through the pipeline, frees the slot when the
task is over, renews the leases of the jobs this host works on, deletes stale videos,
and sleeps until the next job is due or someone has news for it (sets `wake`: a new job,
a service back, a signal). Stopping, reloading and draining are the daemon's: it asks
for a turn at a time while it runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Collection

from ..config import Settings
from ..errors import ConfigError
from ..job import Job
from ..journal import JournalStore, JournalUnavailable, LeaseLost
from ..logs import log
from .pipeline import Pipeline, max_delay
from .scheduler import Scheduler

STALE_DELETE_INTERVAL = 5.0
SCHEDULER_MAX_SLEEP = 5.0  # also how soon `vaultdrop jobs retry` from another process is noticed


class JobLoop:
    """The jobs this process runs, as tasks. `settings` and `folders` are the daemon's live
    ones (a reload replaces them); a job that meets an unwritable journal (ConfigError)
    goes to `on_fatal`, which stops the daemon."""

    def __init__(self, journal: JournalStore, pipeline: Pipeline, *, settings: Callable[[], Settings],
                 folders: Collection[str], wake: asyncio.Event, on_fatal: Callable[[ConfigError], None]) -> None:
        self._journal = journal
        self.pipeline = pipeline  # the jobs started from now on run through it (a reload replaces it)
        self._settings = settings
        self._folders = folders
        self._wake = wake
        self._on_fatal = on_fatal
        self._scheduler = Scheduler(journal)
        self._tasks: dict[int, asyncio.Task[Job]] = {}

    def tasks(self) -> list[asyncio.Task[Job]]:
        """The tasks of the jobs running now."""
        return list(self._tasks.values())

    async def turn(self) -> None:
        """Start the jobs due now, then sleep until the next one is due or `wake` is set."""
        try:
            self._start_due()
            due = self._scheduler.next_due(self._folders, self._horizon())
        except JournalUnavailable as exc:  # the PostgreSQL journal is down: an outage, waited out
            log(logging.WARNING, f"journal unreachable, waiting: {exc}", event="journal_outage")
            due = None
        sleep = SCHEDULER_MAX_SLEEP if due is None else min(SCHEDULER_MAX_SLEEP, max(0.0, due - time.time()))
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=sleep if sleep > 0 else 0.05)
        except TimeoutError:
            pass

    def _start_due(self) -> None:
        """Fill `concurrency` slots; one extra lane keeps small files moving past long uploads."""
        daemon = self._settings().daemon
        self._scheduler.start_due(self._start, concurrency=daemon.concurrency, small_file_size=daemon.small_file_size,
                                  folders=self._folders, horizon=self._horizon())

    def _start(self, job: Job) -> None:
        """Run one claimed job as a task."""
        task = asyncio.create_task(self.pipeline.run(job), name=f"job-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(functools.partial(self._ended, job.id))

    def _horizon(self) -> float:
        return time.time() + max_delay(self._settings())

    def _ended(self, job_id: int, task: asyncio.Task[Job]) -> None:
        self._tasks.pop(job_id, None)
        self._scheduler.ended(job_id)
        if not task.cancelled():
            error = task.exception()
            if isinstance(error, ConfigError):
                self._on_fatal(error)
            elif isinstance(error, LeaseLost | JournalUnavailable):
                log(logging.WARNING, f"job {job_id} stopped here: {error}", job_id=job_id)
            elif error is not None:
                log(logging.ERROR, f"job {job_id} crashed: {error!r}", job_id=job_id,
                    exc_info=False)
        self._wake.set()

    async def heartbeat(self) -> None:
        """Renew the leases of the jobs this host works on; stop at once any job another
        host adopted (this one was paused or cut off past its lease)."""
        while True:
            await asyncio.sleep(self._settings().journal.lease / 3)
            running = set(self._tasks)
            if not running:
                continue
            try:
                lost = self._journal.renew(running)
            except JournalUnavailable as exc:
                log(logging.WARNING, f"cannot renew leases: {exc}", event="journal_outage")
                continue
            for job_id in lost & set(self._tasks):
                log(logging.WARNING, f"job {job_id}: lease lost to another host; stopping work on it",
                    job_id=job_id, event="lease_lost")
                self._tasks[job_id].cancel()

    async def delete_stale_videos(self) -> None:
        """Every few seconds, the vault videos the journal holds for deletion (replaced uploads)."""
        while True:
            await asyncio.sleep(STALE_DELETE_INTERVAL)
            try:
                await self.pipeline.stale.delete_due()
            except JournalUnavailable as exc:
                log(logging.WARNING, f"stale video deletes wait for the journal: {exc}", event="journal_outage")

    async def aclose(self) -> None:
        """Close the current pipeline's connection pools (a replaced one closes itself once idle)."""
        await self.pipeline.aclose()
