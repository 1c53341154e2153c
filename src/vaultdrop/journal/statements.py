"""Every SQL statement both backends run, written once with `?` placeholders (postgres.py
turns them into psycopg's). The few that truly differ per engine (claims and leases, the
enqueue lock, migrations) live in their backend module."""

from __future__ import annotations

from typing import Any

from ..job import UNCONFIRMED, JobState
from .contract import JOB_COLUMNS, NOTIFICATION_COLUMNS, name_bytes

# The active states as the partial index `jobs_due` names them: a query uses that index
# only with this very condition (tests/unit/test_journal.py checks it names ACTIVE).
DUE_CONDITION = "state IN ('queued', 'uploading', 'confirming', 's3_queueing', 's3_waiting', 'finishing')"


def among(column: str, count: int) -> str:
    """`column IN (?, ...)`; an empty list matches nothing (PostgreSQL refuses `IN ()`)."""
    return f"{column} IN ({', '.join('?' * count)})" if count else "1=0"


SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=?"
FIND = f"SELECT {JOB_COLUMNS} FROM jobs WHERE folder=? AND relpath=? AND size=? AND mtime_ns=? AND inode=? AND released=0"
SAME_INODE = f"SELECT {JOB_COLUMNS} FROM jobs WHERE inode=? ORDER BY id DESC"
BY_VIDEO = f"SELECT {JOB_COLUMNS} FROM jobs WHERE video_id=? ORDER BY id"
WITH_CONTENT = f"SELECT {JOB_COLUMNS} FROM jobs WHERE sha256=? ORDER BY id"
KNOWN_VERSIONS = "SELECT relpath, size, mtime_ns, inode, ctime_ns FROM jobs WHERE folder=? AND released=0"

# enqueue: is the file known, which job of its path has no confirmed video yet, then write
KNOWN = "SELECT id FROM jobs WHERE folder=? AND relpath=? AND size=? AND mtime_ns=? AND inode=? AND released=0"
UNCONFIRMED_AT = ("SELECT id, state FROM jobs WHERE folder=? AND relpath=? AND state IN"
                  f" ({', '.join(repr(state.value) for state in UNCONFIRMED)})")
REFRESH = (f"UPDATE jobs SET size=?, mtime_ns=?, inode=?, ctime_ns=?, sha256=NULL, updated_at=? WHERE id=?"
           f" RETURNING {JOB_COLUMNS}")
INSERT = ("INSERT INTO jobs (folder, relpath, size, mtime_ns, inode, ctime_ns, state, created_at, updated_at)"
          f" VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?) RETURNING {JOB_COLUMNS}")
RELOCATE = f"UPDATE jobs SET folder=?, relpath=?, released=0, moved_to=NULL, updated_at=? WHERE id=? RETURNING {JOB_COLUMNS}"
HISTORY = "INSERT INTO history (job_id, at, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?)"

# a save: the stored row to check, the change, what goes with it
CURRENT = "SELECT state, owner, lease_expiry, lease_epoch FROM jobs WHERE id=?"


def save(columns: list[str]) -> str:
    return f"UPDATE jobs SET {', '.join(f'{name}=?' for name in columns)} WHERE id=? RETURNING {JOB_COLUMNS}"


STALE_VIDEO = ("INSERT INTO stale_videos (video_id, job_id, reason, created_at) VALUES (?, ?, ?, ?)"
               " ON CONFLICT DO NOTHING")
# the job as it ends, snapshotted: a later retry must not change what was reported
NOTIFICATION = ("INSERT INTO outbox (event_id, event, job_id, folder, relpath, size, state, error, video_id,"
                " s3_request_id, created_at, next_at) SELECT ?, ?, id, folder, relpath, size, state, last_error,"
                " video_id, s3_request_id, ?, ? FROM jobs WHERE id=?")
DELETE = "DELETE FROM jobs WHERE id=?"
SPEND = ("INSERT INTO spent_keys (upload_key, video_id, job_id, forgotten_at) SELECT upload_key, video_id, id, ?"
         " FROM jobs WHERE id=? AND upload_key IS NOT NULL ON CONFLICT DO NOTHING")
FORGOTTEN_SENDER = "SELECT job_id FROM spent_keys WHERE video_id=? OR upload_key=? ORDER BY job_id LIMIT 1"
WAKE = "UPDATE jobs SET not_before=0, waiting_for=NULL WHERE waiting_for=?"


def runnable(folders: int, running: int, *, index: str = "", lease: str = "") -> str:
    """Due now (a retry time beyond the horizon too: the clock stepped back), of a configured
    folder, not too big, not running here; `index` and `lease` are the engine's own."""
    return (f"SELECT {JOB_COLUMNS} FROM jobs{index} WHERE {DUE_CONDITION} AND {among('folder', folders)}"
            f" AND NOT (not_before > ? AND not_before <= ?) AND size <= ? AND NOT {among('id', running)}{lease}"
            " ORDER BY not_before, id LIMIT ?")


STALE_DUE = "SELECT video_id, attempts FROM stale_videos WHERE not_before <= ? ORDER BY not_before LIMIT ?"
STALE_DELETED = "DELETE FROM stale_videos WHERE video_id=?"
STALE_RETRY = "UPDATE stale_videos SET attempts=attempts+1, not_before=?, last_error=? WHERE video_id=?"

NOTIFICATIONS_DUE = (f"SELECT {NOTIFICATION_COLUMNS} FROM outbox WHERE next_at <= ? AND {{events}}"
                     " ORDER BY next_at, id LIMIT ?")
DELIVERED = "UPDATE outbox SET next_at=NULL, delivered_at=?, attempts=attempts+1 WHERE id=?"
DEFERRED = "UPDATE outbox SET next_at=?, last_error=?, attempts=attempts+1 WHERE id=?"
PENDING = "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE next_at IS NOT NULL"


def job_filter(state: JobState | None, folder: str | None, since: float | None,
               tail: str) -> tuple[str, list[Any]]:
    """WHERE clause of a jobs listing: `folder` is a folder's path or its last name (`tail`,
    the engine's spelling of the stored folder's last len(name)+1 bytes), `since` a time
    the job last changed at or after."""
    where: list[str] = ["1=1"]
    params: list[Any] = []
    if state is not None:
        where.append("state=?")
        params.append(state.value)
    if folder is not None:
        where.append(f"(folder=? OR {tail}=?)")
        params += [name_bytes(folder), name_bytes(folder), b"/" + name_bytes(folder)]
    if since is not None:
        where.append("updated_at>=?")
        params.append(since)
    return " AND ".join(where), params


def listing(where: str) -> str:
    return f"SELECT {JOB_COLUMNS} FROM jobs WHERE {where} ORDER BY id DESC LIMIT ?"


def counting(where: str) -> str:
    return f"SELECT COUNT(*) AS n FROM jobs WHERE {where}"


HISTORY_OF = "SELECT at, from_state, to_state, detail FROM history WHERE job_id=? ORDER BY id"
SUMMARY = ("SELECT folder, state, s3_status, COUNT(*) AS n, MIN(created_at) AS oldest FROM jobs"
           " GROUP BY folder, state, s3_status")
