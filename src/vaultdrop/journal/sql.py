"""The storage both SQL engines share: each statement of statements.py run once, here.

A backend module adds what is its own: how it connects and runs a transaction (SQLite's
single connection and group commit, PostgreSQL's pool), its migrations, and the statements
that truly differ (claims and leases, the enqueue lock, the due-job index).
"""

from __future__ import annotations

import uuid
from abc import abstractmethod
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ..job import FileIdentity, Job, JobState, JobSummary, version_print
from . import statements as sql
from .contract import MAX_SIZE, free_text, from_stored, job_from, name_bytes, to_stored
from .rules import JournalRules, enqueue_action


class SqlJournal(JournalRules):
    """JournalRules over a SQL database; the engine supplies transactions and a few clauses."""

    _FOR_UPDATE = ""  # the row lock a save's check takes where other hosts write too
    _DUE_INDEX = ""  # the index the engine must be told to use for due jobs, if any
    _FOLDER_TAIL = ""  # the stored folder's last len(name)+1 bytes, in the engine's spelling

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Any]:
        """A connection to read on; errors become the journal's own."""

    @abstractmethod
    def _writing(self) -> AbstractContextManager[Any]:
        """One write transaction: committed on leaving, rolled back on an error."""

    def _sql(self, statement: str) -> str:
        """A statement in the engine's placeholder style (`?` as written)."""
        return statement

    def _lock_path(self, db: Any, identity: FileIdentity) -> None:
        """Serialize enqueues of one path across writers (nothing to do where a write
        transaction already excludes every other writer)."""

    def _rows(self, db: Any, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        return db.execute(self._sql(statement), tuple(params)).fetchall()

    def _row(self, db: Any, statement: str, params: Sequence[Any] = ()) -> Any | None:
        rows = self._rows(db, statement, params)
        return rows[0] if rows else None

    def _read(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._reading() as db:
            return self._rows(db, statement, params)

    def _write(self, statement: str, params: Sequence[Any] = ()) -> int:
        with self._writing() as db:
            return db.execute(self._sql(statement), tuple(params)).rowcount

    def _history(self, db: Any, job_id: int, old: JobState | None, new: JobState, detail: str | None) -> None:
        db.execute(self._sql(sql.HISTORY),
                   (job_id, self._clock(), old.value if old else None, new.value, free_text(detail)))

    @staticmethod
    def _identity(identity: FileIdentity) -> tuple[Any, ...]:
        return (name_bytes(identity.folder), name_bytes(identity.relpath), identity.size, identity.mtime_ns,
                identity.inode)

    # -- lookups -----------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        return next(map(job_from, self._read(sql.SELECT_JOB, (job_id,))), None)

    def find(self, identity: FileIdentity) -> Job | None:
        return next(map(job_from, self._read(sql.FIND, self._identity(identity))), None)

    def same_inode(self, identity: FileIdentity) -> list[Job]:
        return [job_from(row) for row in self._read(sql.SAME_INODE, (identity.inode,))]

    def by_video(self, video_id: str) -> list[Job]:
        return [job_from(row) for row in self._read(sql.BY_VIDEO, (video_id,))]

    def _with_content(self, sha256: str) -> list[Job]:
        return [job_from(row) for row in self._read(sql.WITH_CONTENT, (sha256,))]

    def known_versions(self, folder: str) -> set[int]:
        return {version_print(from_stored(row["relpath"]), row["size"], row["mtime_ns"], row["inode"], row["ctime_ns"])
                for row in self._read(sql.KNOWN_VERSIONS, (name_bytes(folder),))}

    # -- discovery ---------------------------------------------------------------------

    def enqueue(self, identity: FileIdentity) -> Job | None:
        now = self._clock()
        path = self._identity(identity)
        with self._writing() as db:
            self._lock_path(db, identity)
            known = self._row(db, sql.KNOWN, path) is not None
            active = None if known else self._row(db, sql.UNCONFIRMED_AT, path[:2])
            action = enqueue_action(known, None if active is None else JobState(active["state"]))
            if action == "refresh":
                row = self._row(db, sql.REFRESH, (identity.size, identity.mtime_ns, identity.inode, identity.ctime_ns,
                                                  now, active["id"]))
            elif action == "insert":
                row = self._row(db, sql.INSERT, (*path, identity.ctime_ns, now, now))
                self._history(db, row["id"], None, JobState.QUEUED, f"{identity.size} bytes")
            else:
                return None
        return job_from(row)

    def relocate(self, job: Job, identity: FileIdentity, detail: str) -> Job:
        with self._writing() as db:
            row = self._row(db, sql.RELOCATE, (*self._identity(identity)[:2], self._clock(), job.id))
            self._history(db, job.id, job.state, job.state, detail)
        return job_from(row)

    # -- scheduling --------------------------------------------------------------------

    def runnable(self, now: float, exclude: set[int], limit: int, folders: Collection[str],
                 horizon: float = float("inf"), max_size: int = MAX_SIZE) -> list[Job]:
        statement = sql.runnable(len(folders), len(exclude), index=self._DUE_INDEX,
                                 lease=" AND (owner IS NULL OR owner = ? OR lease_expiry < ?)")
        rows = self._read(statement, (*map(name_bytes, folders), now, horizon, max_size, *exclude,
                                      self.host_id, now, limit))
        return [job_from(row) for row in rows]

    def wake(self, service: str) -> int:
        return self._write(sql.WAKE, (service,))

    # -- changes -----------------------------------------------------------------------

    def _save(self, job: Job, state: JobState | None, detail: str | None, changes: dict[str, Any],
              stale_video: tuple[str, str] | None) -> Job:
        now = changes["updated_at"]
        with self._writing() as db:
            self._check(job, self._row(db, sql.CURRENT + self._FOR_UPDATE, (job.id,)))
            row = self._row(db, sql.save(list(changes)),
                            (*(to_stored(name, value) for name, value in changes.items()), job.id))
            if state is not None:
                self._history(db, job.id, job.state, state, detail)
            if stale_video is not None:
                db.execute(self._sql(sql.STALE_VIDEO), (stale_video[0], job.id, free_text(stale_video[1]), now))
            if state in self.notify_states:
                db.execute(self._sql(sql.NOTIFICATION), (str(uuid.uuid4()), state.value, now, now, job.id))
        return self._saved(job_from(row))

    def _delete(self, job_id: int) -> None:
        with self._writing() as db:
            db.execute(self._sql(sql.SPEND), (self._clock(), job_id))
            db.execute(self._sql(sql.DELETE), (job_id,))

    def _forgotten_sender(self, video_id: str) -> int | None:
        return next((row["job_id"] for row in self._read(sql.FORGOTTEN_SENDER, (video_id, video_id))), None)

    # -- videos to delete --------------------------------------------------------------

    def stale_videos(self, now: float, limit: int = 10) -> list[tuple[str, int]]:
        return [(row["video_id"], row["attempts"]) for row in self._read(sql.STALE_DUE, (now, limit))]

    def stale_deleted(self, video_id: str) -> None:
        self._write(sql.STALE_DELETED, (video_id,))

    def stale_retry(self, video_id: str, not_before: float, error: str) -> None:
        self._write(sql.STALE_RETRY, (not_before, free_text(error), video_id))

    # -- notification outbox -----------------------------------------------------------

    def notification_delivered(self, notification_id: int) -> None:
        self._write(sql.DELIVERED, (self._clock(), notification_id))

    def notification_deferred(self, notification_id: int, next_at: float | None, error: str) -> None:
        self._write(sql.DEFERRED, (next_at, free_text(error), notification_id))

    def outbox_pending(self) -> tuple[int, float | None]:
        """Events neither delivered nor given up: how many, and when the oldest was written."""
        row = self._read(sql.PENDING)[0]
        return int(row["n"]), row["oldest"]

    # -- reporting ---------------------------------------------------------------------

    def jobs(self, state: JobState | None = None, limit: int = 50, *, folder: str | None = None,
             since: float | None = None) -> list[Job]:
        where, params = sql.job_filter(state, folder, since, self._FOLDER_TAIL)
        return [job_from(row) for row in self._read(sql.listing(where), (*params, limit))]

    def count_jobs(self, state: JobState | None = None, *, folder: str | None = None,
                   since: float | None = None) -> int:
        where, params = sql.job_filter(state, folder, since, self._FOLDER_TAIL)
        return int(self._read(sql.counting(where), params)[0]["n"])

    def history(self, job_id: int) -> list[dict[str, Any]]:
        return [{key: from_stored(value) for key, value in dict(row).items()}
                for row in self._read(sql.HISTORY_OF, (job_id,))]

    def summary(self) -> list[JobSummary]:
        return [JobSummary(from_stored(row["folder"]), JobState(row["state"]), row["s3_status"], row["n"],
                           row["oldest"]) for row in self._read(sql.SUMMARY)]
