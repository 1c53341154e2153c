"""Which due jobs start now: `concurrency` slots, plus one lane for small files.

Bookkeeping over the journal and nothing else (no signals, no reload, no tasks): the
job loop (runner/loop.py) asks `start_due` whenever it wakes and calls `ended` when a
job's task is over; the exploration (tests/model) drives this same class on its fake
clock, so the slots and the lane it explores are the daemon's own.

The small-file lane takes one job up to `small_file_size` when it is free, so a
two-hour upload filling every slot never holds up small files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from ..job import Job
from ..journal import MAX_SIZE, JournalStore


class Scheduler:
    """The jobs this process runs: which are in flight, and which one holds the small lane."""

    def __init__(self, journal: JournalStore, clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self._clock = clock
        self._running: set[int] = set()
        self.small_lane: int | None = None  # the job running in the small-file lane

    @property
    def running(self) -> frozenset[int]:
        """Ids of the jobs started here and not yet ended."""
        return frozenset(self._running)

    def start_due(self, start: Callable[[Job], object], *, concurrency: int, small_file_size: int,
                  folders: Collection[str], horizon: float, budget: int | None = None) -> list[Job]:
        """Claim and start the jobs due now: first the free slots of `concurrency`, then the
        small-file lane if it is free. `start(job)` launches one claimed job (the job loop
        makes it a task); `ended(job.id)` must follow when it is over. A job another host
        claimed first is skipped. At most `budget` jobs start (None: as many as fit).
        Returns the jobs started, in order."""
        started: list[Job] = []
        free = concurrency - (len(self._running) - (self.small_lane is not None))
        if budget is not None:
            free = min(free, budget)
        if free > 0:
            for job in self._due(free, folders, horizon):
                claimed = self._start(job, start)
                if claimed is not None:
                    started.append(claimed)
        if self.small_lane is None and (budget is None or len(started) < budget):
            for job in self._due(1, folders, horizon, small_file_size):
                claimed = self._start(job, start)
                if claimed is not None:
                    self.small_lane = claimed.id
                    started.append(claimed)
        return started

    def ended(self, job_id: int) -> None:
        """The job's run is over (it ended, waits, or its task died): its slot or lane is free."""
        self._running.discard(job_id)
        if self.small_lane == job_id:
            self.small_lane = None

    def next_due(self, folders: Collection[str], horizon: float) -> float | None:
        """When the next job not running here is due (for the scheduler's sleep)."""
        return self.journal.next_due(set(self._running), folders, horizon)

    def _due(self, limit: int, folders: Collection[str], horizon: float, max_size: int = MAX_SIZE) -> list[Job]:
        return self.journal.runnable(self._clock(), set(self._running), limit, folders, horizon, max_size)

    def _start(self, job: Job, start: Callable[[Job], object]) -> Job | None:
        claimed = self.journal.claim(job)
        if claimed is None:
            return None  # another host took it first
        self._running.add(job.id)
        try:
            start(claimed)
        except BaseException:
            self._running.discard(job.id)
            raise
        return claimed
