"""A job and its file: states, their allowed transitions, what makes a file *this* file.

No SQL and no I/O here: the journal stores these, the stages reason about them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from .errors import RetryLater


class JobState(StrEnum):
    """Where a job stands. A retry is attempts + not_before, never a state of its own."""

    QUEUED = "queued"  # journalled; nothing sent yet
    UPLOADING = "uploading"  # upload key committed; a POST may be (or have been) in flight
    CONFIRMING = "confirming"  # POST answered; waiting for the vault's video_id
    S3_QUEUEING = "s3_queueing"  # vault confirmed; asking the control API to queue to S3
    S3_WAITING = "s3_waiting"  # S3 request id committed; following it through aws.status
    FINISHING = "finishing"  # all remote work confirmed; local post-action pending
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # same content already in the vault (sha256 dedupe)


TERMINAL = frozenset({JobState.DONE, JobState.FAILED, JobState.SKIPPED})
ACTIVE = tuple(s for s in JobState if s not in TERMINAL)
STARTED = tuple(s for s in ACTIVE if s is not JobState.QUEUED)  # part way: something was sent or asked
UNCONFIRMED = (JobState.QUEUED, JobState.UPLOADING, JobState.CONFIRMING)
CONFIRMED = frozenset({JobState.S3_QUEUEING, JobState.S3_WAITING, JobState.FINISHING, JobState.DONE,
                       JobState.SKIPPED})

ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.UPLOADING, JobState.S3_QUEUEING, JobState.FINISHING, JobState.FAILED}),
    JobState.UPLOADING: frozenset({JobState.CONFIRMING, JobState.QUEUED, JobState.FAILED}),
    JobState.CONFIRMING: frozenset(
        {JobState.UPLOADING, JobState.QUEUED, JobState.S3_QUEUEING, JobState.FINISHING, JobState.FAILED}
    ),
    JobState.S3_QUEUEING: frozenset({JobState.S3_WAITING, JobState.FAILED}),
    JobState.S3_WAITING: frozenset({JobState.FINISHING, JobState.FAILED}),
    JobState.FINISHING: frozenset({JobState.DONE, JobState.SKIPPED, JobState.FAILED}),
    # done and skipped end for good, unless the operator deletes the video (video_deleted)
    JobState.DONE: frozenset({JobState.FAILED}),
    JobState.FAILED: frozenset({JobState.QUEUED, JobState.UPLOADING}),
    JobState.SKIPPED: frozenset({JobState.FAILED}),
}


class StatLike(Protocol):
    @property
    def st_size(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_ino(self) -> int: ...


class FileVersion(NamedTuple):
    """A file as one stat() saw it, and all that anything keeps of a stat(): `key` says
    which file (same key, same upload; the journal's size, mtime_ns and inode), the change
    time whether its bytes may have changed under that key (`cp -p` over it). A StatLike
    itself; a full os.stat_result is about 610 bytes, which made a 100,000-file start-up
    scan cost 45 MiB more than these four numbers."""

    st_size: int
    st_mtime_ns: int
    st_ino: int
    st_ctime_ns: int | None = None

    @classmethod
    def of(cls, info: StatLike) -> FileVersion:
        return cls(info.st_size, info.st_mtime_ns, info.st_ino, getattr(info, "st_ctime_ns", None))

    @property
    def key(self) -> tuple[int, int, int]:
        """Size, mtime, inode: what tells whether a file changed."""
        return self.st_size, self.st_mtime_ns, self.st_ino

    def columns(self) -> dict[str, int]:
        """The key as the journal's columns, for a job whose file changed before its upload."""
        return {"size": self.st_size, "mtime_ns": self.st_mtime_ns, "inode": self.st_ino}


def version_print(relpath: str, size: int, mtime_ns: int, inode: int, ctime_ns: int | None) -> int:
    """A file version in one int, for rescans that compare 100,000 of them: a set of these
    costs 7 MiB where the tuples and their names cost 32. Within one process only (str
    hashes are salted per process); a collision would only skip a file in one scan."""
    return hash((relpath, size, mtime_ns, inode, ctime_ns))


@dataclass(frozen=True)
class FileIdentity:
    """What makes a file *this* file: same identity means same upload."""

    folder: str
    relpath: str
    size: int
    mtime_ns: int
    inode: int
    # The change time when it was seen: not part of *which* file it is, but a moved ctime
    # with all else equal (`cp -p` over it) may be other content (see files.holds).
    ctime_ns: int | None = field(default=None, compare=False)

    @classmethod
    def of(cls, folder: str, relpath: str, info: StatLike) -> FileIdentity:
        version = FileVersion.of(info)
        return cls(folder, relpath, *version.key, version.st_ctime_ns)

    @property
    def path(self) -> Path:
        return Path(self.folder) / self.relpath


@dataclass(frozen=True)
class Job:
    id: int
    folder: str
    relpath: str
    size: int
    mtime_ns: int
    inode: int
    state: JobState
    attempts: int
    not_before: float
    last_error: str | None
    upload_key: str | None
    video_id: str | None
    bytes_sent: int
    sha256: str | None
    s3_request_id: int | None
    s3_status: str | None
    s3_since: float | None
    created_at: float
    updated_at: float
    waiting_for: str | None  # a service whose outage this job waits out (woken when it answers)
    released: int  # 1 once a post-action deleted or moved the file: the path no longer holds it
    moved_to: str | None  # where a post-action put the file (archive or failed_dir)
    key_unknown: int  # progress answers in a row that did not know the upload key
    upload_seconds: float | None  # the last POST's own duration (throughput on the done line)
    ctime_ns: int | None  # the file's change time when the upload read it (see files.holds)
    # The lease of the host working on the job (several hosts on one journal): who, until
    # when, and the fencing epoch every save of this Job object must still match.
    owner: str | None = None
    lease_expiry: float = 0.0
    lease_epoch: int = 0

    @property
    def identity(self) -> FileIdentity:
        return FileIdentity(self.folder, self.relpath, self.size, self.mtime_ns, self.inode)

    def is_file(self, info: StatLike) -> bool:
        """Whether `info` is still the file this job was journalled (or uploaded) as."""
        return FileVersion.of(info).key == (self.size, self.mtime_ns, self.inode)

    @property
    def path(self) -> Path:
        return Path(self.folder) / self.relpath


@dataclass(frozen=True)
class Transition:
    """A stage's decision; the runner commits it and logs it, and nothing else does either.

    `state` None keeps the job where it is (facts recorded, or a wait). `retry` schedules
    the job again by the retry policy in the same commit; `discard` records a vault video
    to delete on its own, in the same commit too.
    """

    state: JobState | None
    detail: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    level: int = logging.INFO
    retry: RetryLater | None = None
    discard: str | None = None
    quiet: bool = False  # a step worth a debug line only


@dataclass(frozen=True)
class JobSummary:
    """One (folder, state, s3_status) group of jobs, for the metrics."""

    folder: str
    state: JobState
    s3_status: str | None
    count: int
    oldest_created_at: float


@dataclass(frozen=True)
class Notification:
    """One outbox row: the job as it was when it ended, plus its delivery bookkeeping."""

    id: int
    event_id: str
    event: str
    job_id: int
    folder: str
    relpath: str
    size: int
    state: str
    error: str | None
    video_id: str | None
    s3_request_id: int | None
    created_at: float
    attempts: int
