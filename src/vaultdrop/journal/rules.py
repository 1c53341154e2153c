"""The journal's rules, written once and without SQL: what may change, in what order, and
what a change writes. A backend (sqlite.py, postgres.py, memory.py) only stores: each of
its methods is one transaction that looks up or writes rows and decides nothing.

Leases: a host claims a job before working on it (owner, lease_expiry, and a new
lease_epoch); a heartbeat renews the lease; a save must match the epoch this journal
claimed the job at and the job must not be held by another host, so a host presumed dead
that comes back cannot overwrite its successor. With one host (SQLite) the same calls
simply always succeed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal

from ..job import ALLOWED, TERMINAL, FileIdentity, Job, JobState, JobSummary, Notification
from .contract import MAX_SIZE, UPDATABLE, IllegalTransition, LeaseLost


def enqueue_action(known: bool, active: JobState | None) -> Literal["insert", "refresh"] | None:
    """What a settled file means for the journal, from what it holds for the file's path.

    `known`: a job still owns exactly this file (path, size, mtime, inode): nothing to do.
    `active`: the state of the path's job that has no confirmed video yet, if any. A
    still-queued job whose file changed is refreshed in place: nothing was sent yet, so it
    simply uploads the newer content. A job uploading the path checks the file itself
    before trusting its upload (its confirm stage notices the change and starts over).
    Once a job's video is confirmed, new content at its path is a new job (and that job's
    post-action leaves the newer file alone). A job whose file a post-action removed no
    longer owns the path: the same identity there is new content (an inode reused by `cp -p`).
    """
    if known or (active is not None and active is not JobState.QUEUED):
        return None
    return "refresh" if active is JobState.QUEUED else "insert"


class JournalRules(ABC):
    """Every rule of the journal over a backend's storage (the abstract methods below)."""

    _clock: Callable[[], float]
    _claims: dict[int, int]  # job id -> the lease epoch this journal claimed it at
    host_id: str
    lease: float
    location: str
    journal_id: str
    notify_states: frozenset[JobState]
    unsynced = 0  # commits that returned but are not yet known to be on disk

    # -- the storage a backend provides: one transaction each, no decisions ------------

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def get(self, job_id: int) -> Job | None: ...

    @abstractmethod
    def find(self, identity: FileIdentity) -> Job | None:
        """The job that still owns exactly this file (not released), if any."""

    @abstractmethod
    def same_inode(self, identity: FileIdentity) -> list[Job]:
        """Jobs of a file with this inode at any path, newest first: the same file renamed,
        linked, moved back from failed_dir or re-dropped, or a reused inode."""

    @abstractmethod
    def by_video(self, video_id: str) -> list[Job]:
        """Every job that names this video, oldest first (its uploader, skipped twins)."""

    @abstractmethod
    def _with_content(self, sha256: str) -> list[Job]:
        """Every job with this content, oldest first."""

    @abstractmethod
    def _forgotten_sender(self, video_id: str) -> int | None:
        """The forgotten job that sent this video (its upload key or its video id), if any:
        `_delete` keeps that much of a job, so its key is never taken for another's upload."""

    @abstractmethod
    def known_versions(self, folder: str) -> set[int]:
        """The version_print of every file a job still owns (relpath, size, mtime, inode and
        the change time the job last saw, None where not recorded), for fast rescans."""

    @abstractmethod
    def enqueue(self, identity: FileIdentity) -> Job | None:
        """Journal a settled file as `enqueue_action` says, in one transaction that no
        other writer (host) can interleave with for the same path; None: nothing to do."""

    @abstractmethod
    def relocate(self, job: Job, identity: FileIdentity, detail: str) -> Job:
        """The job's file now lives at another path (a rename, a move back by the operator)."""

    @abstractmethod
    def runnable(self, now: float, exclude: set[int], limit: int, folders: Collection[str],
                 horizon: float = float("inf"), max_size: int = MAX_SIZE) -> list[Job]:
        """Active jobs of configured folders due now, oldest due first, minus those already
        running (`exclude`), no larger than `max_size` (the small-file lane asks for one it
        can take) and not leased by another host.

        A job whose folder left the configuration waits (it resumes if the folder comes back)
        rather than finishing without its folder's post-action and S3 step. A retry time
        beyond `horizon` can only come from a clock stepped back: it is due now.
        """

    @abstractmethod
    def next_due(self, exclude: set[int], folders: Collection[str], horizon: float = float("inf")) -> float | None:
        """When the next runnable job not running here is due (another host's lease counts
        as not due before it ends), for the scheduler's sleep."""

    @abstractmethod
    def wake(self, service: str) -> int:
        """The service answers again: every job waiting out its outage is due now."""

    @abstractmethod
    def _save(self, job: Job, state: JobState | None, detail: str | None, changes: dict[str, Any],
              stale_video: tuple[str, str] | None) -> Job:
        """In one transaction: `_check` the stored row, write `changes`, the history line
        (on a state change), the stale video and the outbox event (entering notify_states)."""

    @abstractmethod
    def _delete(self, job_id: int) -> None:
        """Drop the job and its history; remember its upload key and video as spent."""

    @abstractmethod
    def claim(self, job: Job) -> Job | None:
        """Take the job for this host (a new lease epoch, through `_claimed`) if it is still
        in the state it was picked up in and no other host holds it; None otherwise."""

    @abstractmethod
    def renew(self, job_ids: Collection[int]) -> set[int]:
        """Extend this host's leases; returns the ids another host holds now."""

    @abstractmethod
    def _renew_one(self, job: Job, epoch: int) -> bool:
        """Extend one lease if the job is still ours at `epoch` and in its state."""

    @abstractmethod
    def stale_videos(self, now: float, limit: int = 10) -> list[tuple[str, int]]:
        """(video_id, attempts) of discarded vault copies due for another delete."""

    @abstractmethod
    def stale_deleted(self, video_id: str) -> None: ...

    @abstractmethod
    def stale_retry(self, video_id: str, not_before: float, error: str) -> None: ...

    @abstractmethod
    def due_notifications(self, now: float, events: Collection[str], limit: int) -> list[Notification]:
        """Undelivered notifications of `events` due now, oldest first; with several hosts
        each is taken for a while, so two hosts never deliver one at once."""

    @abstractmethod
    def notification_delivered(self, notification_id: int) -> None: ...

    @abstractmethod
    def notification_deferred(self, notification_id: int, next_at: float | None, error: str) -> None:
        """A failed attempt: try again at `next_at`, or never (None: given up)."""

    @abstractmethod
    def jobs(self, state: JobState | None = None, limit: int = 50, *, folder: str | None = None,
             since: float | None = None) -> list[Job]:
        """The newest `limit` jobs in `state`, of `folder` (its path or its last name),
        changed at or after `since`."""

    @abstractmethod
    def count_jobs(self, state: JobState | None = None, *, folder: str | None = None,
                   since: float | None = None) -> int:
        """How many jobs `jobs` would list without a limit: a listing says what it left out."""

    @abstractmethod
    def history(self, job_id: int) -> list[dict[str, Any]]: ...

    @abstractmethod
    def summary(self) -> list[JobSummary]:
        """Jobs per (folder, state, s3_status) with the oldest one's creation time."""

    async def durable(self) -> None:
        """Return once every commit so far is on disk: a side effect that depends on the
        journal awaits this first. Here each commit is durable when it returns."""

    # -- the rules ---------------------------------------------------------------------

    def counts(self) -> dict[JobState, int]:
        found = dict.fromkeys(JobState, 0)
        for group in self.summary():
            found[group.state] += group.count
        return found

    def twins(self, sha256: str, exclude_id: int) -> list[Job]:
        """Other jobs with this content that have not failed, oldest first (sha256 dedupe)."""
        return [job for job in self._with_content(sha256) if job.id != exclude_id and job.state is not JobState.FAILED]

    def transition(self, job: Job, state: JobState, detail: str | None = None, **changes: Any) -> Job:
        """Move a job to `state` (and set `changes`) in one committed transaction."""
        if state not in ALLOWED[job.state]:
            raise IllegalTransition(f"job {job.id}: {job.state} -> {state} is not allowed")
        return self._save(job, state, detail, self._changes(state, changes), None)

    def update(self, job: Job, **changes: Any) -> Job:
        """Record facts about a job (key, bytes sent, a retry) without changing its state."""
        return self._save(job, None, None, self._changes(None, changes), None)

    def discard_video(self, job: Job, state: JobState, detail: str, stale: str, **changes: Any) -> Job:
        """Start a job over and, in the same transaction, record its vault copy `stale` for
        deletion: the new content never waits on a delete that keeps failing. A video that
        another job accounts for is never recorded: whatever the reason, it is that job's."""
        if state not in ALLOWED[job.state]:
            raise IllegalTransition(f"job {job.id}: {job.state} -> {state} is not allowed")
        theirs = self.whose(stale, job.id) is not None
        return self._save(job, state, detail, self._changes(state, changes), None if theirs else (stale, detail))

    def owner_of(self, video_id: str, other_than: int | None = None) -> Job | None:
        """The job that sent this video, if any but `other_than` did. A twin (dedupe by
        sha256) names its uploader's video without having sent it: never the owner, in any
        state, and never a reason for the uploader itself to start over."""
        return next((job for job in self.by_video(video_id)
                     if job.id != other_than and job.upload_key is not None and job.state is not JobState.SKIPPED),
                    None)

    def whose(self, video_id: str, other_than: int | None = None) -> str | None:
        """Which other job sent this video, in words ("job 4's (a.mp4)"), a forgotten one
        included: a vault that hands out a completed key must never make that video pass
        for this job's upload, nor be deleted as this job's stale copy."""
        owner = self.owner_of(video_id, other_than)
        if owner is not None:
            return f"job {owner.id}'s ({owner.relpath})"
        forgotten = self._forgotten_sender(video_id)
        return None if forgotten is None or forgotten == other_than else f"job {forgotten}'s (forgotten since)"

    def video_deleted(self, video_id: str, detail: str) -> list[Job]:
        """The operator deleted this video from the vault: every finished job that named it
        now says so and may be uploaded again (`jobs retry`, `vaultdrop upload`), with a new
        key and its S3 step to do again. A running job's video is not the operator's to
        delete (refused before the vault is asked)."""
        jobs = self.by_video(video_id)
        running = next((job for job in jobs if job.state not in TERMINAL), None)
        if running is not None:
            raise IllegalTransition(f"job {running.id} is {running.state} with video {video_id}")
        forget_video = {"last_error": detail, "video_id": None, "upload_key": None, "bytes_sent": 0,
                        "key_unknown": 0, "s3_request_id": None, "s3_status": None, "s3_since": None}
        return [self.update(job, **forget_video) if job.state is JobState.FAILED  # failed already: facts only
                else self.transition(job, JobState.FAILED, detail, **forget_video) for job in jobs]

    def _changes(self, state: JobState | None, changes: dict[str, Any]) -> dict[str, Any]:
        """The columns a save writes: the caller's, checked, plus updated_at and the state."""
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"not journal columns: {sorted(unknown)}")
        changes = {**changes, "updated_at": self._clock()}
        if state is not None:
            changes["state"] = state.value
        if state in TERMINAL:
            changes["owner"] = None  # a finished job is nobody's: the operator may retry it anywhere
        return changes

    def _check(self, job: Job, current: Mapping[str, Any] | None) -> None:
        """Refuse a save on a stale read: another host's lease first, then another state.

        The epoch this journal claimed the job at counts, not only the one in `job`: a
        Job re-read with get() carries the successor's epoch, and must not pass for ours.
        """
        if current is not None:
            claimed = self._claims.get(job.id, job.lease_epoch)
            held_elsewhere = current["owner"] not in (None, self.host_id) and current["lease_expiry"] >= self._clock()
            if current["lease_epoch"] != claimed or claimed != job.lease_epoch or held_elsewhere:
                raise LeaseLost(f"job {job.id}: another host took it over (lease epoch {current['lease_epoch']}, "
                                f"ours {claimed}; now held by {current['owner'] or 'nobody'})")
        if current is None or current["state"] != job.state.value:
            raise IllegalTransition(f"job {job.id} changed under us (now {current and current['state']})")

    def _claimed(self, job: Job) -> Job:
        """Remember the epoch of a claim, so later saves through this journal are fenced by it."""
        self._claims[job.id] = job.lease_epoch
        return job

    def _saved(self, job: Job) -> Job:
        if job.state in TERMINAL:
            self._claims.pop(job.id, None)
        return job

    def _adoption(self, previous_owner: str | None) -> str | None:
        """The history note when a claim takes a job another host left behind."""
        if previous_owner in (None, self.host_id):
            return None
        return f"adopted by {self.host_id} from {previous_owner} after its lease ran out"

    def hold(self, job: Job) -> None:
        """Renew the job's lease and make sure it is still ours (LeaseLost if not), right
        before a side effect on the shared folder that no commit could undo."""
        if not self._renew_one(job, self._claims.get(job.id, job.lease_epoch)):
            raise LeaseLost(f"job {job.id}: another host took it over; leaving its file alone")

    # -- operator commands -------------------------------------------------------------

    def retry(self, job_id: int, place: FileIdentity | None = None) -> Job:
        """Operator asked to try a failed job again: fresh attempts, due now.

        Only a failed job: one still running or finished is not touched. A job that holds
        an upload key resumes on that key (progress first), and a committed S3 request is
        followed again, never sent twice. `place`: where the file is now, when the
        operator moved it back into a watched folder.
        """
        job = self._require(job_id)
        if job.state is not JobState.FAILED:
            raise IllegalTransition(f"job {job_id} is {job.state.value}, not failed: nothing to retry")
        # a failed job is nobody's: a claim this journal once had on it (lost to a host that
        # adopted the job and failed it) fences nothing any more
        self._claims.pop(job_id, None)
        state = JobState.UPLOADING if job.upload_key else JobState.QUEUED
        s3: dict[str, Any] = {"s3_request_id": None, "s3_status": None} if job.s3_status == "failed" else {}
        return self.transition(job, state, "retry requested", attempts=0, not_before=0, last_error=None,
                               key_unknown=0, released=0, moved_to=None, s3_since=self._clock(), **s3,
                               **({"folder": place.folder, "relpath": place.relpath} if place else {}))

    def forget(self, job_id: int) -> None:
        """Drop a finished job so an identical file would be uploaded again."""
        job = self._require(job_id)
        if job.state not in TERMINAL:
            raise IllegalTransition(f"job {job_id} is {job.state}; only finished jobs can be forgotten")
        self._delete(job_id)

    def _require(self, job_id: int) -> Job:
        job = self.get(job_id)
        if job is None:
            raise KeyError(f"no job {job_id}")
        return job
