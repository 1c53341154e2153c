"""The runner: drives one job through the stages; each decision is committed, logged and
announced by the committer (journal/committer.py), the one place any job changes.

Stages (stages/upload.py, s3.py, finish.py) decide and return a Transition; errors say what
to do next: RetryLater goes through the pure retry policy (retry.py), Waiting parks the
job without spending an attempt, JobFailed ends it in failed_dir, ConfigError stops the
daemon. Each commit lands before the side effect that depends on it, so a job picked up
after a crash resumes from the journal alone. A vault copy a decision discards is deleted
apart from the job (stale.py).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Protocol

from ..clients.outage import Outages
from ..config import FolderSettings, Settings
from ..errors import ClockSkew, ConfigError, JobFailed, RetryLater, Unavailable, Waiting
from ..events import Fanout, JobEvents, retry_reason
from ..job import TERMINAL, Job, JobState, Transition
from ..journal import JournalUnavailable, LeaseLost
from ..journal.committer import Committer
from ..logs import job_fields, log
from ..retry import GiveUp, Policy, Retry, decide
from ..stages.finish import PostActions
from ..stages.upload import VaultStages
from .stale import StaleVideos

CRASH_PAUSE = 60.0
S3_GONE_PAUSE = 60.0
VAULT = "vault"
SCALEENGINE = "scaleengine"


class S3Stage(Protocol):
    """The optional S3 stages (see stages/s3.py)."""

    async def queue(self, job: Job, folder: FolderSettings) -> Transition: ...

    async def follow(self, job: Job) -> Transition: ...

    async def aclose(self) -> None: ...


class Pipeline:
    def __init__(
        self,
        committer: Committer,
        stages: VaultStages,
        post: PostActions,
        stale: StaleVideos,
        policy: Policy,
        folder_for: Callable[[Job], FolderSettings | None],
        outages: Outages,
        *,
        s3: S3Stage | None = None,
        clock: Callable[[], float],
        rng: random.Random | None = None,
        events: JobEvents | None = None,
    ) -> None:
        self.committer = committer
        self.journal = committer.journal  # for reading; every job write goes through the committer
        self.stages = stages
        self.post = post
        self.stale = stale
        self.policy = policy
        self._folder_for = folder_for
        self.outages = outages
        self._s3 = s3
        self._clock = clock
        self._rng = rng or random.Random()
        self._events = events or Fanout()

    async def aclose(self) -> None:
        await self.outages.aclose()
        await self.stages.vault.aclose()
        if self._s3 is not None:
            await self._s3.aclose()

    async def run(self, job: Job) -> Job:
        """Drive one job until it ends or waits; only ConfigError escapes.

        If even the failure handling breaks (journal trouble, a bug), the job rests for
        CRASH_PAUSE instead of being picked up again at once.
        """
        try:
            return await self._drive(job)
        except (ConfigError, LeaseLost, JournalUnavailable):  # another host holds it, or no journal: stop here
            raise
        except Exception as exc:  # noqa: BLE001 - one job's trouble must not spin or stop the daemon
            log(logging.ERROR, f"job {job.id} ({job.relpath}) set aside for {CRASH_PAUSE:g} s: {exc!r}; "
                "this is a bug, please report it", exc_info=True, **job_fields(job))
            return self.committer.set_aside(job, exc, self._clock() + CRASH_PAUSE)

    async def _drive(self, job: Job) -> Job:
        resumed = True  # the first look after a pickup: earlier outcomes are unknown
        rescued = False
        while job.state not in TERMINAL:
            folder = self._folder_for(job)
            if folder is None:  # the scheduler skips such jobs; they are due again the moment it returns
                return self.committer.commit(job, Transition(None, "waiting: its folder is not configured",
                                                    {"last_error": "waiting: its folder is not configured"}))
            service = SCALEENGINE if job.state in (JobState.S3_QUEUEING, JobState.S3_WAITING) else VAULT
            try:
                decision = await self._stage(job, folder, resumed)
                self.outages.up(service)
            except Waiting as exc:
                decision = Transition(None, f"waiting: {exc}", {"not_before": self._clock() + exc.delay,
                                                                "last_error": f"waiting: {exc}"}, quiet=True)
            except RetryLater as exc:
                decision = Transition(None, str(exc), retry=exc)
            except JobFailed as exc:
                decision = await self.post.fail(job, folder, str(exc), exc.changes)
            if decision.retry is not None:
                verdict = decide(decision.retry, job.attempts, self.outages.streak, self.policy, self._rng)
                rescue = None if rescued or not isinstance(verdict, GiveUp) else await self._rescue(job)
                rescued = rescued or rescue is not None
                decision = rescue or await self._apply(job, folder, decision, verdict)
            job = self.committer.commit(job, decision)
            if decision.discard is not None:
                await self.stale.delete_due()  # a first try at once; a failure is retried on its own
            if job.not_before > self._clock():
                return job
            resumed = False  # whatever happened since the pickup, this drive did it and knows
        return job

    async def _stage(self, job: Job, folder: FolderSettings, resumed: bool) -> Transition:
        await self.journal.durable()  # every request and file operation waits for the commits before it
        match job.state:
            case JobState.QUEUED:
                return await self.stages.start(job, folder)
            case JobState.UPLOADING:
                return await self.stages.upload(job, folder, resumed)
            case JobState.CONFIRMING:
                return await self.stages.confirm(job, folder)
            case JobState.S3_QUEUEING | JobState.S3_WAITING:
                if self._s3 is None or folder.s3 is None:
                    raise Waiting("its S3 step is no longer configured ([folders.s3], [scaleengine])",
                                  S3_GONE_PAUSE)
                if job.state is JobState.S3_QUEUEING:
                    return await self._s3.queue(job, folder)
                return await self._s3.follow(job)
            case _:
                return await self.post.finish(job, folder)

    async def _rescue(self, job: Job) -> Transition | None:
        """Before giving up on a job that holds a key, ask the vault once more: a POST
        answered with a 500 (or a timeout) may have been stored all the same."""
        if not job.upload_key or job.state not in (JobState.UPLOADING, JobState.CONFIRMING):
            return None
        await self.journal.durable()
        progress = await self.stages.progress_or_none(job)
        if progress is None or not (progress.video_id or progress.received == progress.size == job.size):
            return None
        return Transition(JobState.CONFIRMING if job.state is JobState.UPLOADING else None,
                          "the vault has the upload after all: confirming")

    async def _apply(self, job: Job, folder: FolderSettings, decision: Transition,
                     verdict: Retry | GiveUp) -> Transition:
        """What the retry policy's verdict on a decision's error means for this job."""
        error = decision.retry
        assert error is not None
        if isinstance(verdict, GiveUp):
            return await self.post.fail(job, folder, f"gave up after {verdict.attempts} attempts: {error}",
                                        {**decision.changes, "attempts": verdict.attempts})
        self._events.retry_scheduled(job, retry_reason(error))
        changes = {**decision.changes, "attempts": verdict.attempts, "not_before": self._clock() + verdict.delay,
                   "last_error": str(error)}
        if isinstance(error, Unavailable):
            self.outages.down(error.service, error)
            return Transition(decision.state, decision.detail, {**changes, "waiting_for": error.service},
                              level=decision.level, retry=error, discard=decision.discard,
                              quiet=decision.state is None)
        if isinstance(error, ClockSkew):
            log(logging.WARNING, f"server refused our clock: {error}; check NTP on this machine", **job_fields(job))
        detail = (f"{decision.detail}; retry in {verdict.delay:.1f} s" if decision.state
                  else f"retry in {verdict.delay:.1f} s: {error}")
        return Transition(decision.state, detail, changes, level=logging.WARNING, retry=error,
                          discard=decision.discard)


def max_delay(settings: Settings) -> float:
    """The furthest ahead anything is ever scheduled: a later retry time means the clock
    was stepped back, and the job is due now."""
    delays = [Policy(1, settings.vault.backoff_base, settings.vault.backoff_max).max_delay, CRASH_PAUSE,
              S3_GONE_PAUSE]
    if settings.scaleengine is not None:
        delays.append(settings.scaleengine.status_poll_interval)
    return max(delays)
