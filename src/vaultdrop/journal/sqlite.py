"""The SQLite journal: one host's jobs in one file beside the daemon (state_dir).

Every state change is one committed transaction (WAL) made *before* the side effect that
depends on it, so a crash at any instant resumes correctly. The daemon group-commits (see
`durable`); operator commands sync each commit (synchronous=FULL). One connection, one
writer at a time (BEGIN IMMEDIATE); the state_dir lock keeps a second daemon away, so the
leases of rules.py are always this host's own and cost nothing here.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..files import fsync_path
from ..job import Job, JobState, Notification
from .contract import (JOB_COLUMNS, NOTIFICATION_COLUMNS, JournalMissing, JournalUnwritable, from_stored, job_from,
                       name_bytes, notification_from)
from .marks import check_identity, refuse_missing
from .sql import SqlJournal
from .statements import DUE_CONDITION, NOTIFICATIONS_DUE, among

# SQLite's primary result codes that mean "the disk refuses the write", not "a bug".
_UNWRITABLE = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
                         sqlite3.SQLITE_CANTOPEN})
BUSY_TIMEOUT = 10.0  # seconds a writer waits for another (the CLI, a second opener)

# The jobs table's columns after the fifth migration, in their stored order.
_JOB_COLUMNS_V5 = """
        folder TEXT NOT NULL,
        relpath TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        upload_key TEXT,
        video_id TEXT,
        bytes_sent INTEGER NOT NULL DEFAULT 0,
        sha256 TEXT,
        s3_request_id INTEGER,
        s3_status TEXT,
        s3_since REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        waiting_for TEXT,
        released INTEGER NOT NULL DEFAULT 0,
        moved_to TEXT,
        key_unknown INTEGER NOT NULL DEFAULT 0,
        upload_seconds REAL,
        ctime_ns INTEGER,
        owner TEXT,
        lease_expiry REAL NOT NULL DEFAULT 0,
        lease_epoch INTEGER NOT NULL DEFAULT 0"""

# Append-only: a migration is never edited once released, only added.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        folder TEXT NOT NULL,
        relpath TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        upload_key TEXT,
        video_id TEXT,
        bytes_sent INTEGER NOT NULL DEFAULT 0,
        sha256 TEXT,
        s3_request_id INTEGER,
        s3_status TEXT,
        s3_since REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX jobs_identity ON jobs (folder, relpath, size, mtime_ns, inode);
    CREATE INDEX jobs_state ON jobs (state, not_before);
    CREATE INDEX jobs_sha256 ON jobs (sha256);
    CREATE TABLE history (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        at REAL NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX history_job ON history (job_id);
    """,
    # Same inode, size and mtime no longer means "known": a deleted file's inode is reused
    # (cp -p), and a rename or a link is found by inode at another path.
    """
    ALTER TABLE jobs ADD COLUMN waiting_for TEXT;
    ALTER TABLE jobs ADD COLUMN released INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN moved_to TEXT;
    ALTER TABLE jobs ADD COLUMN key_unknown INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN upload_seconds REAL;
    ALTER TABLE jobs ADD COLUMN ctime_ns INTEGER;
    DROP INDEX jobs_identity;
    CREATE INDEX jobs_identity ON jobs (folder, relpath, size, mtime_ns, inode);
    CREATE INDEX jobs_inode ON jobs (inode);
    CREATE INDEX jobs_video ON jobs (video_id);
    CREATE TABLE stale_videos (
        video_id TEXT PRIMARY KEY,
        job_id INTEGER NOT NULL,
        reason TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at REAL NOT NULL
    );
    """,
    # Notifications to send: written in the same transaction as the job's final state, so
    # none is lost; `next_at` is NULL once delivered (delivered_at) or given up.
    # jobs_summary covers the metrics' GROUP BY: 14 ms instead of 95 ms at 100,000 jobs.
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        event TEXT NOT NULL,
        job_id INTEGER NOT NULL,
        folder TEXT NOT NULL,
        relpath TEXT NOT NULL,
        size INTEGER NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        video_id TEXT,
        s3_request_id INTEGER,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL,
        delivered_at REAL,
        last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox (next_at);
    CREATE INDEX jobs_summary ON jobs (folder, state, s3_status, created_at);
    """,
    # Several hosts on one journal (PostgreSQL; SQLite has one host, same columns): the
    # lease of the host working on a job and its fencing epoch.
    """
    ALTER TABLE jobs ADD COLUMN owner TEXT;
    ALTER TABLE jobs ADD COLUMN lease_expiry REAL NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
    """,
    # The scheduler's two questions (what is due, when is the next one due) read active
    # jobs in due order; on jobs_state they sorted every active job on each wake-up:
    # 4.2 + 2.1 ms per finished job with 10,000 queued, 0.01 ms with this index.
    f"CREATE INDEX jobs_due ON jobs (not_before, id) WHERE {DUE_CONDITION}",
    # A job id names one file for good (journald's JOB_ID, webhooks, metrics): without
    # AUTOINCREMENT, SQLite hands a forgotten newest job's id to the next file. The table
    # is rebuilt (SQLite cannot add AUTOINCREMENT); history is rebuilt first, so dropping
    # the old jobs cascades to nothing, and the renames carry its reference along. The
    # counter starts past every id the journal ever named, the outbox's included.
    f"""
    CREATE TABLE jobs_v6 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        {_JOB_COLUMNS_V5}
    );
    INSERT INTO jobs_v6 SELECT * FROM jobs;
    CREATE TABLE history_v6 (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs_v6 (id) ON DELETE CASCADE,
        at REAL NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        detail TEXT
    );
    INSERT INTO history_v6 SELECT * FROM history;
    DROP TABLE history;
    DROP TABLE jobs;
    ALTER TABLE jobs_v6 RENAME TO jobs;
    ALTER TABLE history_v6 RENAME TO history;
    CREATE INDEX history_job ON history (job_id);
    CREATE INDEX jobs_identity ON jobs (folder, relpath, size, mtime_ns, inode);
    CREATE INDEX jobs_state ON jobs (state, not_before);
    CREATE INDEX jobs_sha256 ON jobs (sha256);
    CREATE INDEX jobs_inode ON jobs (inode);
    CREATE INDEX jobs_video ON jobs (video_id);
    CREATE INDEX jobs_summary ON jobs (folder, state, s3_status, created_at);
    CREATE INDEX jobs_due ON jobs (not_before, id) WHERE {DUE_CONDITION};
    DELETE FROM sqlite_sequence WHERE name = 'jobs';
    INSERT INTO sqlite_sequence (name, seq) SELECT 'jobs', max(
        (SELECT coalesce(max(id), 0) FROM jobs), (SELECT coalesce(max(job_id), 0) FROM outbox))
    """,
    # The journal's own identity, also written into state_dir's journal-used mark: a
    # journal that is not the one this state_dir used (emptied and set up again, another
    # one restored) is refused like a missing one.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta VALUES ('journal_id', lower(hex(randomblob(16))))
    """,
    # File names stored as their bytes, as PostgreSQL stores them: one spelling of a path
    # in every backend and every statement (a name that is not UTF-8 was a BLOB already).
    """
    UPDATE jobs SET folder = CAST(folder AS BLOB), relpath = CAST(relpath AS BLOB),
        moved_to = CAST(moved_to AS BLOB);
    UPDATE outbox SET folder = CAST(folder AS BLOB), relpath = CAST(relpath AS BLOB)
    """,
    # What a forgotten job leaves behind: the upload key it spent and its video. A vault
    # that hands that key out again must not make the video pass for another's upload.
    """
    CREATE TABLE spent_keys (
        upload_key TEXT PRIMARY KEY,
        video_id TEXT,
        job_id INTEGER NOT NULL,
        forgotten_at REAL NOT NULL
    );
    CREATE INDEX spent_keys_video ON spent_keys (video_id)
    """,
)


def _reader(path: Path) -> sqlite3.Connection:
    """A read-only connection, also for a member of the service's group, who may read the
    state_dir but not write it. SQLite reads a WAL journal through its -shm file: a running
    or crashed daemon leaves one (read-only access to it is enough), a cleanly stopped one
    removes it, and such a reader cannot create it. Then the database file alone holds the
    whole journal (the last close checkpointed it) and is read as immutable: a daemon that
    starts during that read may make it fail; reading again shows the new state."""
    def connect(query: str) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{path}?{query}", uri=True, isolation_level=None, check_same_thread=False)

    db = connect("mode=ro")
    try:
        db.execute("PRAGMA schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        db.close()
        if exc.sqlite_errorcode != sqlite3.SQLITE_READONLY_DIRECTORY:
            raise
        db = connect("immutable=1")
    return db


class Journal(SqlJournal):
    """One SQLite database; every method is one explicit transaction."""

    _DUE_INDEX = " INDEXED BY jobs_due"
    _FOLDER_TAIL = "substr(folder, -length(?) - 1)"

    def __init__(self, path: Path, clock: Callable[[], float] = time.time, readonly: bool = False,
                 host_id: str = "local", lease: float = 30.0, group_commit: bool = False,
                 used: str | None = None) -> None:
        """`used`: what the state_dir says about an earlier journal (journal_was_used);
        then a missing, empty or other journal is refused, never created."""
        self.path = path
        self.location = str(path)
        self._clock = clock
        self.host_id = host_id
        self.lease = lease
        self._claims = {}
        self._group_commit = False  # the migrations commit with a full sync
        self._wal = f"{os.path.realpath(path)}-wal"
        self._commits = self._synced = 0
        self._syncing: asyncio.Task[None] | None = None
        self._flush_failed: str | None = None
        # its own thread: the shared pool may be busy hashing or copying large files
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="journal-sync")
        self.notify_states: frozenset[JobState] = frozenset()
        try:
            if used is not None and not path.exists():
                raise refuse_missing(str(path), "missing", used)
            if readonly:
                self._db = _reader(path)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                if used is not None and self._db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    self._db.close()
                    raise refuse_missing(str(path), "empty", used)
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            self._db.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                self._enable_wal()
                self._db.execute("PRAGMA synchronous = FULL")
                self._migrate()
                if group_commit:
                    self._db.execute("PRAGMA synchronous = NORMAL")
                    self._group_commit = True
            elif self._db.execute("PRAGMA user_version").fetchone()[0] == 0:
                self._db.close()
                if used is not None:
                    raise refuse_missing(str(path), "empty", used)
                raise ConfigError(f"the journal {path} is not set up yet: the daemon is starting")
            self.journal_id = self._stored_id()
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the journal {path}: {exc}") from None
        if used is not None:
            try:
                check_identity(self.location, self.journal_id, used)
            except JournalMissing:
                self._db.close()
                raise

    def _stored_id(self) -> str:
        """The journal id (migration 7); a reader of a journal the daemon has not upgraded
        yet finds none."""
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'journal_id'").fetchone()
        except sqlite3.OperationalError:
            return "unknown"
        return str(row[0]) if row else "unknown"

    @staticmethod
    def jobs_held(path: Path) -> int:
        """How many jobs (and videos still to delete) a SQLite journal file holds, 0 when it
        has no schema; one that cannot be read is a ConfigError (it may hold jobs: nobody
        may throw it away)."""
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    return 0
                return int(db.execute("SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM stale_videos)")
                           .fetchone()[0])
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot read the journal {path}: {exc}") from None

    def close(self) -> None:
        self._syncer.shutdown()
        if self.unsynced:  # this connection may not be the last, whose close would checkpoint
            with suppress(OSError):  # on a failing disk the next start reads what did reach it
                fsync_path(self._wal)
        self._db.close()

    @property
    def unsynced(self) -> int:  # type: ignore[override]
        return self._commits - self._synced

    async def durable(self) -> None:
        """Group commit: with `group_commit`, a commit returns before its fsync
        (synchronous=NORMAL), and a side effect that depends on it waits here. One fsync
        of the WAL, on the journal's own thread, covers every commit made before it
        began, so the jobs in flight share it and the event loop never waits on the disk.
        A failed fsync fails every later call too: Linux reports a lost write once, and
        a second fsync that succeeds proves nothing about it."""
        target = self._commits
        while self._synced < target:
            if self._flush_failed is not None:
                raise JournalUnwritable(self._flush_failed)
            if self._syncing is None:
                self._syncing = asyncio.get_running_loop().create_task(self._sync())
                self._syncing.add_done_callback(lambda task: task.cancelled() or task.exception())
            await asyncio.shield(self._syncing)

    async def _sync(self) -> None:
        covered = self._commits
        try:
            await asyncio.get_running_loop().run_in_executor(self._syncer, fsync_path, self._wal)
            self._synced = covered  # one fsync at a time: covered only grows
        except OSError as exc:
            self._flush_failed = f"the journal {self.path} could not be flushed to disk: {exc}; fix the disk"
            raise JournalUnwritable(self._flush_failed) from None
        finally:
            self._syncing = None

    def _enable_wal(self) -> None:
        """Switching a new database to WAL takes a lock that busy_timeout does not wait for:
        two processes opening a fresh journal at once must take turns, not fail."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front so concurrent writers queue, not fail."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db
            self._db.execute("COMMIT")
            if self._group_commit:
                self._commits += 1
        except BaseException as exc:
            if self._db.in_transaction:
                with suppress(sqlite3.Error):  # a disk that refused the write may refuse this too
                    self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode & 0xFF in _UNWRITABLE:
                raise JournalUnwritable(f"the journal {self.path} cannot be written: {exc}; "
                                        "nothing was lost, make room or fix the disk") from None
            raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read outside a write transaction; a failing disk is said once, here."""
        try:
            yield self._db
        except sqlite3.Error as exc:
            raise JournalUnwritable(f"the journal {self.path} cannot be read: {exc}") from None

    def _migrate(self) -> None:
        with self._writing() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise ConfigError(f"journal {self.path} has schema {version}, newer than this vaultdrop")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    # -- what SQLite says its own way ------------------------------------------------

    def next_due(self, exclude: set[int], folders: Collection[str], horizon: float = float("inf")) -> float | None:
        row = next(iter(self._read(
            f"SELECT not_before FROM jobs INDEXED BY jobs_due WHERE {DUE_CONDITION} AND {among('folder', len(folders))}"
            f" AND NOT {among('id', len(exclude))} ORDER BY not_before, id LIMIT 1",
            (*map(name_bytes, folders), *exclude))), None)
        return None if row is None else min(row["not_before"], horizon)

    def due_notifications(self, now: float, events: Collection[str], limit: int) -> list[Notification]:
        rows = self._read(NOTIFICATIONS_DUE.format(events=among("event", len(events))), (now, *events, limit))
        return [notification_from(row) for row in rows]

    # One daemon per SQLite journal (the state_dir lock; a network file system is refused),
    # so every lease would be this host's own: claiming and renewing look and write nothing.
    # Each write here was an fsynced commit, two per file.

    def claim(self, job: Job) -> Job | None:
        """The job as journalled, if it is still in the state it was picked up in."""
        rows = self._read(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=? AND state=?", (job.id, job.state.value))
        return self._claimed(job_from(rows[0])) if rows else None

    def renew(self, job_ids: Collection[int]) -> set[int]:
        return set()

    def _renew_one(self, job: Job, epoch: int) -> bool:
        return True

    # -- moving to another backend -----------------------------------------------------

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every table, for `vaultdrop journal copy` (file names decoded)."""
        tables = {"meta": "key, value", "jobs": JOB_COLUMNS, "history": "id, job_id, at, from_state, to_state, detail",
                  "stale_videos": "video_id, job_id, reason, attempts, not_before, last_error, created_at",
                  "outbox": NOTIFICATION_COLUMNS, "spent_keys": "upload_key, video_id, job_id, forgotten_at"}
        dumped = {table: [{key: from_stored(value) for key, value in dict(row).items()}
                          for row in self._read(f"SELECT {columns} FROM {table} ORDER BY rowid")]
                  for table, columns in tables.items()}
        # the highest job id ever given, a forgotten newest job's too: ids never repeat
        dumped["job_ids"] = [dict(row) for row in self._read("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'")]
        return dumped
