"""The journal contract kept in dicts: for unit tests of the runner, stages and intake,
which then need neither SQLite nor PostgreSQL. The same contract tests run it beside the
two engines (tests/unit/test_journal.py), so it cannot drift from them. Leases behave as
on PostgreSQL: two MemoryJournals over one `Tables` are two hosts.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..job import ACTIVE, FileIdentity, Job, JobState, JobSummary, Notification, version_print
from .contract import MAX_SIZE, SEND_LEASE
from .rules import JournalRules, enqueue_action


@dataclass
class Tables:
    """What a database would hold; share one between journals to reopen or to be two hosts."""

    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    stale: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    spent: dict[str, tuple[str | None, int]] = field(default_factory=dict)  # key -> (video, forgotten job)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))  # never reused
    journal_id: str = field(default_factory=lambda: uuid.uuid4().hex)


_NOTIFICATION_FIELDS = [f.name for f in fields(Notification)]


class MemoryJournal(JournalRules):
    """Every method is atomic because nothing here awaits or shares a thread."""

    def __init__(self, tables: Tables | None = None, clock: Callable[[], float] = time.time,
                 host_id: str = "local", lease: float = 30.0) -> None:
        self.tables = tables if tables is not None else Tables()
        self._clock = clock
        self.host_id = host_id
        self.lease = lease
        self._claims = {}
        self.location = "memory"
        self.journal_id = self.tables.journal_id
        self.notify_states = frozenset()

    def close(self) -> None:
        """Nothing to release: the tables outlive the journal, as a database would."""

    def _rows(self) -> list[dict[str, Any]]:
        return [self.tables.jobs[job_id] for job_id in sorted(self.tables.jobs)]

    @staticmethod
    def _job(row: dict[str, Any]) -> Job:
        return Job(**{**row, "state": JobState(row["state"])})

    def _history(self, job_id: int, old: JobState | None, new: JobState, detail: str | None) -> None:
        self.tables.history.append({"job_id": job_id, "at": self._clock(), "from_state": old and old.value,
                                    "to_state": new.value, "detail": detail})

    def get(self, job_id: int) -> Job | None:
        row = self.tables.jobs.get(job_id)
        return None if row is None else self._job(row)

    def find(self, identity: FileIdentity) -> Job | None:
        return next((self._job(row) for row in self._rows() if self._holds(row, identity)), None)

    @staticmethod
    def _holds(row: dict[str, Any], identity: FileIdentity) -> bool:
        return not row["released"] and (row["folder"], row["relpath"], row["size"], row["mtime_ns"], row["inode"]) == (
            identity.folder, identity.relpath, identity.size, identity.mtime_ns, identity.inode)

    def same_inode(self, identity: FileIdentity) -> list[Job]:
        return [self._job(row) for row in reversed(self._rows()) if row["inode"] == identity.inode]

    def by_video(self, video_id: str) -> list[Job]:
        return [self._job(row) for row in self._rows() if row["video_id"] == video_id]

    def _with_content(self, sha256: str) -> list[Job]:
        return [self._job(row) for row in self._rows() if row["sha256"] == sha256]

    def _forgotten_sender(self, video_id: str) -> int | None:
        return min((job_id for key, (video, job_id) in self.tables.spent.items() if video_id in (key, video)),
                   default=None)

    def known_versions(self, folder: str) -> set[int]:
        return {version_print(row["relpath"], row["size"], row["mtime_ns"], row["inode"], row["ctime_ns"])
                for row in self._rows() if row["folder"] == folder and not row["released"]}

    def enqueue(self, identity: FileIdentity) -> Job | None:
        now = self._clock()
        known = any(self._holds(row, identity) for row in self._rows())
        active = next((row for row in self._rows() if (row["folder"], row["relpath"]) == (identity.folder, identity.relpath)
                       and row["state"] in ("queued", "uploading", "confirming")), None)
        action = enqueue_action(known, None if active is None else JobState(active["state"]))
        if action == "refresh":
            assert active is not None
            active.update(size=identity.size, mtime_ns=identity.mtime_ns, inode=identity.inode,
                          ctime_ns=identity.ctime_ns, sha256=None, updated_at=now)
            return self._job(active)
        if action is None:
            return None
        job = Job(id=next(self.tables.ids), folder=identity.folder, relpath=identity.relpath, size=identity.size,
                  mtime_ns=identity.mtime_ns, inode=identity.inode, state=JobState.QUEUED, attempts=0, not_before=0,
                  last_error=None, upload_key=None, video_id=None, bytes_sent=0, sha256=None, s3_request_id=None,
                  s3_status=None, s3_since=None, created_at=now, updated_at=now, waiting_for=None, released=0,
                  moved_to=None, key_unknown=0, upload_seconds=None, ctime_ns=identity.ctime_ns)
        self.tables.jobs[job.id] = {**asdict(job), "state": job.state.value}
        self._history(job.id, None, JobState.QUEUED, f"{identity.size} bytes")
        return job

    def relocate(self, job: Job, identity: FileIdentity, detail: str) -> Job:
        row = self.tables.jobs[job.id]
        row.update(folder=identity.folder, relpath=identity.relpath, released=0, moved_to=None,
                   updated_at=self._clock())
        self._history(job.id, job.state, job.state, detail)
        return self._job(row)

    def _free(self, row: dict[str, Any], now: float) -> bool:
        return row["owner"] in (None, self.host_id) or row["lease_expiry"] < now

    def _due(self, exclude: set[int], folders: Collection[str]) -> list[dict[str, Any]]:
        active = {state.value for state in ACTIVE}
        return sorted((row for row in self._rows() if row["state"] in active and row["folder"] in folders
                       and row["id"] not in exclude), key=lambda row: (row["not_before"], row["id"]))

    def runnable(self, now: float, exclude: set[int], limit: int, folders: Collection[str],
                 horizon: float = float("inf"), max_size: int = MAX_SIZE) -> list[Job]:
        return [self._job(row) for row in self._due(exclude, folders)
                if not now < row["not_before"] <= horizon and row["size"] <= max_size and self._free(row, now)][:limit]

    def next_due(self, exclude: set[int], folders: Collection[str], horizon: float = float("inf")) -> float | None:
        due = [max(row["not_before"], row["lease_expiry"] if row["owner"] not in (None, self.host_id) else 0)
               for row in self._due(exclude, folders)]
        return min(min(due), horizon) if due else None

    def wake(self, service: str) -> int:
        waiting = [row for row in self._rows() if row["waiting_for"] == service]
        for row in waiting:
            row.update(not_before=0, waiting_for=None)
        return len(waiting)

    def _save(self, job: Job, state: JobState | None, detail: str | None, changes: dict[str, Any],
              stale_video: tuple[str, str] | None) -> Job:
        row = self.tables.jobs.get(job.id)
        self._check(job, row)
        assert row is not None
        row.update(changes)
        now = changes["updated_at"]
        if state is not None:
            self._history(job.id, job.state, state, detail)
        if stale_video is not None and stale_video[0] not in self.tables.stale:
            self.tables.stale[stale_video[0]] = {"job_id": job.id, "reason": stale_video[1], "attempts": 0,
                                                 "not_before": 0, "last_error": None, "created_at": now}
        if state in self.notify_states:
            self.tables.outbox.append({
                "id": len(self.tables.outbox) + 1, "event_id": str(uuid.uuid4()), "event": state.value,
                "job_id": job.id, "folder": row["folder"], "relpath": row["relpath"], "size": row["size"],
                "state": row["state"], "error": row["last_error"], "video_id": row["video_id"],
                "s3_request_id": row["s3_request_id"], "created_at": now, "attempts": 0, "next_at": now,
                "delivered_at": None, "last_error": None})
        return self._saved(self._job(row))

    def _delete(self, job_id: int) -> None:
        row = self.tables.jobs.pop(job_id)
        if row["upload_key"] is not None:
            self.tables.spent.setdefault(row["upload_key"], (row["video_id"], job_id))
        self.tables.history = [line for line in self.tables.history if line["job_id"] != job_id]

    def claim(self, job: Job) -> Job | None:
        now = self._clock()
        row = self.tables.jobs.get(job.id)
        if row is None or row["state"] != job.state.value or not self._free(row, now):
            return None
        note = self._adoption(row["owner"])
        row.update(owner=self.host_id, lease_expiry=now + self.lease, lease_epoch=row["lease_epoch"] + 1)
        if note:
            self._history(job.id, job.state, job.state, note)
        return self._claimed(self._job(row))

    def renew(self, job_ids: Collection[int]) -> set[int]:
        rows = [self.tables.jobs[job_id] for job_id in job_ids if job_id in self.tables.jobs]
        for row in rows:
            if row["owner"] == self.host_id:
                row["lease_expiry"] = self._clock() + self.lease
        return {row["id"] for row in rows if row["owner"] not in (None, self.host_id)}

    def _renew_one(self, job: Job, epoch: int) -> bool:
        row = self.tables.jobs.get(job.id)
        if row is None or (row["state"], row["lease_epoch"]) != (job.state.value, epoch) \
                or row["owner"] not in (None, self.host_id):
            return False
        row["lease_expiry"] = self._clock() + self.lease
        return True

    def stale_videos(self, now: float, limit: int = 10) -> list[tuple[str, int]]:
        due = sorted((entry["not_before"], video_id) for video_id, entry in self.tables.stale.items()
                     if entry["not_before"] <= now)
        return [(video_id, self.tables.stale[video_id]["attempts"]) for _, video_id in due[:limit]]

    def stale_deleted(self, video_id: str) -> None:
        self.tables.stale.pop(video_id, None)

    def stale_retry(self, video_id: str, not_before: float, error: str) -> None:
        entry = self.tables.stale.get(video_id)
        if entry is not None:
            entry.update(attempts=entry["attempts"] + 1, not_before=not_before, last_error=error)

    def due_notifications(self, now: float, events: Collection[str], limit: int) -> list[Notification]:
        due = sorted((row for row in self.tables.outbox if row["next_at"] is not None and row["next_at"] <= now
                      and row["event"] in events), key=lambda row: (row["next_at"], row["id"]))[:limit]
        for row in due:  # taken for a while, as a host takes them on PostgreSQL
            row["next_at"] = now + SEND_LEASE
        return [Notification(**{name: row[name] for name in _NOTIFICATION_FIELDS}) for row in due]

    def _outbox_row(self, notification_id: int) -> dict[str, Any]:
        return next(row for row in self.tables.outbox if row["id"] == notification_id)

    def notification_delivered(self, notification_id: int) -> None:
        row = self._outbox_row(notification_id)
        row.update(next_at=None, delivered_at=self._clock(), attempts=row["attempts"] + 1)

    def notification_deferred(self, notification_id: int, next_at: float | None, error: str) -> None:
        row = self._outbox_row(notification_id)
        row.update(next_at=next_at, last_error=error, attempts=row["attempts"] + 1)

    def outbox_pending(self) -> tuple[int, float | None]:
        pending = [row["created_at"] for row in self.tables.outbox if row["next_at"] is not None]
        return len(pending), min(pending, default=None)

    def _listed(self, state: JobState | None, folder: str | None, since: float | None) -> list[dict[str, Any]]:
        return [row for row in reversed(self._rows())
                if (state is None or row["state"] == state.value)
                and (folder is None or row["folder"] == folder or row["folder"].endswith("/" + folder))
                and (since is None or row["updated_at"] >= since)]

    def jobs(self, state: JobState | None = None, limit: int = 50, *, folder: str | None = None,
             since: float | None = None) -> list[Job]:
        return [self._job(row) for row in self._listed(state, folder, since)[:limit]]

    def count_jobs(self, state: JobState | None = None, *, folder: str | None = None,
                   since: float | None = None) -> int:
        return len(self._listed(state, folder, since))

    def history(self, job_id: int) -> list[dict[str, Any]]:
        return [{key: line[key] for key in ("at", "from_state", "to_state", "detail")}
                for line in self.tables.history if line["job_id"] == job_id]

    def summary(self) -> list[JobSummary]:
        groups: dict[tuple[str, str, str | None], list[float]] = {}
        for row in self._rows():
            groups.setdefault((row["folder"], row["state"], row["s3_status"]), []).append(row["created_at"])
        return [JobSummary(folder, JobState(state), s3_status, len(created), min(created))
                for (folder, state, s3_status), created in groups.items()]
