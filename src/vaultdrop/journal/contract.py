"""What the rest of vaultdrop may ask of a journal, and what goes wrong with one.

`JournalStore` is the whole surface: the runner, admission, the CLI and the metrics use
nothing else. Every method is one transaction, and a state change is refused
(IllegalTransition) when the stored job is no longer in the state the caller read, so two
writers never both win. rules.py decides; a backend (sqlite.py, postgres.py, memory.py)
stores.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields
from typing import Any, Protocol

from ..errors import TEMPFAIL_EXIT_STATUS, ConfigError, VaultdropError
from ..job import FileIdentity, Job, JobState, JobSummary, Notification


class IllegalTransition(VaultdropError):
    """A bug: code tried a state change the job's life cycle does not allow."""


class LeaseLost(IllegalTransition):
    """Another host adopted the job after this host's lease ran out (it was paused, cut off
    or too slow to renew): this host must stop working on it and commit nothing more."""


class JournalUnavailable(VaultdropError):
    """The journal's database cannot be reached (PostgreSQL down, the network cut): nothing
    is lost. Not a vault outage and not the job's fault: the work in hand stops, the daemon
    waits for the database, and the job resumes from its last commit."""

    exit_status = TEMPFAIL_EXIT_STATUS  # a command that needs it now: try again later


class JournalUnwritable(ConfigError):
    """The journal's disk is full, read-only or failing (for a read too). Every change is one transaction, so
    nothing is lost: the daemon stops like on a config error, but exits 75 (EX_TEMPFAIL) so
    that systemd starts it again, and it carries on once the disk takes writes."""

    exit_status = 75


class JournalMissing(ConfigError):
    """The journal is gone or empty although this state_dir was used with one: taking it
    as a fresh start would upload every kept file again. An operator decides."""


JOB_COLUMNS = ", ".join(f.name for f in fields(Job))
NOTIFICATION_COLUMNS = ", ".join(f.name for f in fields(Notification))
PATH_COLUMNS = frozenset({"folder", "relpath", "moved_to"})  # stored as their bytes, in every backend
MAX_SIZE = 2**63 - 1  # SQLite's and PostgreSQL's largest integer: "any size"
LEASE_COLUMNS = frozenset({"owner", "lease_expiry", "lease_epoch"})  # written by claim and renew only
UPDATABLE = frozenset(f.name for f in fields(Job)) - {"id", "state", "created_at"} - LEASE_COLUMNS
SEND_LEASE = 60.0  # seconds a host has to deliver a notification before another may (several hosts)


class JournalStore(Protocol):
    """What the rest of vaultdrop may ask of a journal; every backend implements exactly this."""

    location: str  # for messages: a file path, or a database URL without its password
    journal_id: str  # this journal's identity, made when its schema was set up
    notify_states: frozenset[JobState]  # entering one of these also writes an outbox event

    def close(self) -> None: ...
    async def durable(self) -> None: ...
    def enqueue(self, identity: FileIdentity) -> Job | None: ...
    def same_inode(self, identity: FileIdentity) -> list[Job]: ...
    def relocate(self, job: Job, identity: FileIdentity, detail: str) -> Job: ...
    def known_versions(self, folder: str) -> set[int]: ...
    def runnable(self, now: float, exclude: set[int], limit: int, folders: Collection[str],
                 horizon: float = ..., max_size: int = ...) -> list[Job]: ...
    def next_due(self, exclude: set[int], folders: Collection[str], horizon: float = ...) -> float | None: ...
    def wake(self, service: str) -> int: ...
    def get(self, job_id: int) -> Job | None: ...
    def find(self, identity: FileIdentity) -> Job | None: ...
    def transition(self, job: Job, state: JobState, detail: str | None = None, **changes: Any) -> Job: ...
    def update(self, job: Job, **changes: Any) -> Job: ...
    def discard_video(self, job: Job, state: JobState, detail: str, stale: str, **changes: Any) -> Job: ...
    def twins(self, sha256: str, exclude_id: int) -> list[Job]: ...
    def by_video(self, video_id: str) -> list[Job]: ...
    def owner_of(self, video_id: str, other_than: int | None = None) -> Job | None: ...
    def whose(self, video_id: str, other_than: int | None = None) -> str | None: ...
    def video_deleted(self, video_id: str, detail: str) -> list[Job]: ...
    def stale_videos(self, now: float, limit: int = 10) -> list[tuple[str, int]]: ...
    def stale_deleted(self, video_id: str) -> None: ...
    def stale_retry(self, video_id: str, not_before: float, error: str) -> None: ...
    def retry(self, job_id: int, place: FileIdentity | None = None) -> Job: ...
    def forget(self, job_id: int) -> None: ...
    def counts(self) -> dict[JobState, int]: ...
    def jobs(self, state: JobState | None = None, limit: int = 50, *, folder: str | None = None,
             since: float | None = None) -> list[Job]: ...
    def count_jobs(self, state: JobState | None = None, *, folder: str | None = None,
                   since: float | None = None) -> int: ...
    def history(self, job_id: int) -> list[dict[str, Any]]: ...
    def summary(self) -> list[JobSummary]: ...
    def due_notifications(self, now: float, events: Collection[str], limit: int) -> list[Notification]: ...
    def notification_delivered(self, notification_id: int) -> None: ...
    def notification_deferred(self, notification_id: int, next_at: float | None, error: str) -> None: ...
    def outbox_pending(self) -> tuple[int, float | None]: ...
    def claim(self, job: Job) -> Job | None: ...
    def renew(self, job_ids: Collection[int]) -> set[int]: ...
    def hold(self, job: Job) -> None: ...


def name_bytes(value: str) -> bytes:
    """A file name as its bytes (surrogates are the bytes Python could not decode): stored
    so in every backend, a name that is not UTF-8 round-trips byte for byte."""
    return value.encode("utf-8", "surrogateescape")


def from_stored(value: Any) -> Any:
    """A stored value as vaultdrop uses it: names (bytes) back to str."""
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).decode("utf-8", "surrogateescape")
    return value


def free_text(value: Any) -> Any:
    """Free text (an error, a history detail) may quote a non-UTF-8 name: TEXT refuses the
    surrogates, so they are kept escaped; file names themselves are stored as bytes."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def to_stored(column: str, value: Any) -> Any:
    """A value as a backend stores it in `column`."""
    if column in PATH_COLUMNS and isinstance(value, str):
        return name_bytes(value)
    return free_text(value)


def job_from(row: Any) -> Job:
    values = {key: from_stored(value) for key, value in dict(row).items()}
    values["state"] = JobState(values["state"])
    return Job(**values)


def notification_from(row: Any) -> Notification:
    return Notification(**{key: from_stored(value) for key, value in dict(row).items()})
