"""The one place a job changes: every writer commits through here.

The runner's decisions, admission (a new file, a rename followed, a file moved back), the
upload's progress, the crash handler and the operator's commands (`jobs retry/forget`,
`delete`, one-shot `upload`) all come here, so a rule added here holds for each of them:
the journal enforces the allowed transitions and writes the history line in the same
transaction; then the job's one log line, then its event (metrics, webhooks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from ..events import Fanout, JobEvents
from ..job import FileIdentity, Job, JobState, Transition
from ..logs import human_size, job_fields, log, log_change, log_done
from .contract import JournalStore


class Committer:
    def __init__(self, journal: JournalStore, events: JobEvents | None = None) -> None:
        self.journal = journal  # read it freely; write only through the methods below
        self._events = events or Fanout()

    def commit(self, job: Job, decision: Transition) -> Job:
        """A stage's decision: journal first, then its log line and observers."""
        previous = job.state
        if decision.discard is not None:  # whatever the stage concluded, another job's video stays
            whose = self.journal.whose(decision.discard, job.id)
            decision = replace(decision, discard=None if whose else decision.discard, detail=(
                f"{decision.detail}; video {decision.discard} is {whose}: kept" if whose
                else f"{decision.detail}; video {decision.discard} will be deleted"))
        changes = dict(decision.changes)
        if job.waiting_for and "waiting_for" not in changes:
            changes["waiting_for"] = None
        if decision.discard is not None:
            assert decision.state is not None
            job = self.journal.discard_video(job, decision.state, decision.detail, decision.discard, **changes)
        elif decision.state is None:
            job = self.journal.update(job, **changes)
        else:
            job = self.journal.transition(job, decision.state, decision.detail, **changes)
        self._log(job, decision)
        if decision.state is not None:
            self._events.changed(job, previous, decision.detail)
        return job

    def enqueue(self, identity: FileIdentity) -> Job | None:
        """A settled file is new work (None when the journal already knows it)."""
        job = self.journal.enqueue(identity)
        if job is not None:
            log_change(self.journal, job, logging.INFO, f"queued: {identity.relpath} ({human_size(identity.size)})")
            self._events.changed(job, None, "queued")
        return job

    def relocate(self, job: Job, identity: FileIdentity, detail: str, message: str) -> Job:
        """The job's file is now at `identity` (a rename, the same bytes dropped again)."""
        job = self.journal.relocate(job, identity, detail)
        log(logging.INFO, message, **job_fields(job))
        return job

    def retry(self, job_id: int, place: FileIdentity | None = None, *,
              bring_back: Callable[[Job], str | None] | None = None) -> tuple[Job, str | None]:
        """A failed job tries again: the operator's `jobs retry` and a one-shot `upload` of
        a file that failed (both pass `bring_back`, the post-action's restore: the file comes
        back from failed_dir first, so the job never runs without it), or the file moved
        back into a watched folder (`place`). It resumes on its committed key and S3
        request (journal.retry). Returns what bringing the file back did."""
        job = self.journal.get(job_id)
        if job is None:
            raise KeyError(f"no job {job_id}")
        restored = bring_back(job) if bring_back is not None and job.state is JobState.FAILED else None
        previous = job.state
        job = self.journal.retry(job_id, place)
        where = (f"picked up again: {job.relpath} (failed job {job.id}) was moved back into the folder"
                 if place is not None else f"retried by the operator: {job.relpath}")
        log_change(self.journal, job, logging.INFO, where)
        self._events.changed(job, previous, "retried")
        return job, restored

    def forget(self, job_id: int) -> None:
        """Drop a finished job, so an identical file is uploaded again."""
        job = self.journal.get(job_id)
        self.journal.forget(job_id)
        if job is not None:
            log(logging.INFO, f"forgotten: {job.relpath}: an identical file is uploaded again",
                **job_fields(job))

    def video_deleted(self, video_id: str, detail: str) -> list[Job]:
        """The operator deleted a video: the finished jobs that named it now say so."""
        jobs = {job.id: job.state for job in self.journal.by_video(video_id)}
        recorded = self.journal.video_deleted(video_id, detail)
        for job in recorded:
            log_change(self.journal, job, logging.WARNING, f"failed: {job.relpath}: {detail}")
            if jobs[job.id] is not JobState.FAILED:
                self._events.changed(job, jobs[job.id], detail)
        return recorded

    def set_aside(self, job: Job, error: BaseException, until: float) -> Job:
        """A bug met while driving the job: it rests instead of being picked up at once
        (the runner logged the traceback)."""
        current = self.journal.get(job.id) or job
        return self.journal.update(current, not_before=until, last_error=repr(error))

    def _log(self, job: Job, decision: Transition) -> None:
        """One line per commit. A line about a failed attempt names that attempt."""
        ended = {"attempt": max(job.attempts, 1)} if decision.retry or decision.state is JobState.FAILED else {}
        if decision.state is JobState.DONE:
            log_done(self.journal, job)
        elif decision.state is JobState.FAILED:
            log_change(self.journal, job, logging.ERROR, f"failed: {job.relpath}: {decision.detail}",
                       event="job_failed", **ended)
        elif decision.state is not None:
            log_change(self.journal, job, decision.level, f"{decision.state.value}: {job.relpath}: {decision.detail}",
                       **ended)
        else:
            log(logging.DEBUG if decision.quiet else decision.level, f"{job.relpath}: {decision.detail}",
                **{**job_fields(job), **ended})
