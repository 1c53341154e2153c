"""The journal is the source of truth: transitions are guarded, facts survive a reopen.

One shared class runs against every backend (SQLite in a file, PostgreSQL in a throwaway
cluster), so a backend that drifts from the interface's semantics fails here.
"""

import asyncio
import errno
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.pgcluster import free_port
from tests.unit.conftest import Clock
from vaultdrop import cli
from vaultdrop.config import Settings, settings_from_dict
from vaultdrop.errors import ConfigError
from vaultdrop.job import ACTIVE, ALLOWED, FileIdentity, JobState, version_print
from vaultdrop.journal import USED_MARK, IllegalTransition, Journal, JournalStore, JournalUnwritable, LeaseLost
from vaultdrop.journal import sqlite as journal_module
from vaultdrop.journal.memory import MemoryJournal, Tables
from vaultdrop.journal.postgres import JournalDown, PgJournal
from vaultdrop.journal.statements import DUE_CONDITION
from vaultdrop.wiring import open_journal as open_configured

Opener = Callable[..., JournalStore]


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def open_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the same journal again on each call (a restart, or another host with
    host_id=...); closes them all after. The in-memory store passes the same tests as the
    two engines, so the unit tests that use it stand for them."""
    opened: list[JournalStore] = []
    if request.param == "sqlite":
        path = tmp_path / "state" / "vaultdrop.db"

        def opener(**options: Any) -> JournalStore:
            return Journal(path, **options)
    elif request.param == "memory":
        tables = Tables()

        def opener(**options: Any) -> JournalStore:
            return MemoryJournal(tables, **options)
    else:
        url, password_file = request.getfixturevalue("pg_database")

        def opener(**options: Any) -> JournalStore:
            return PgJournal(url, password_file.read_text().strip(), **options)

    def tracked(**options: Any) -> JournalStore:
        opened.append(opener(**options))
        return opened[-1]

    yield tracked
    for journal in opened:
        journal.close()


@pytest.fixture
def journal(open_journal: Opener) -> JournalStore:
    return open_journal()


def identity(name: str = "clip.mov", size: int = 10, mtime: int = 1, inode: int = 7) -> FileIdentity:
    return FileIdentity("/drop", name, size, mtime, inode)


class TestJournalStore:
    """Every backend: same answers to the same calls."""

    def test_upload_key_survives_reopen_and_history_is_kept(self, open_journal: Opener) -> None:
        journal = open_journal()
        job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, "key", upload_key="K1")
        journal.close()
        reopened = open_journal()
        resumed = reopened.get(job.id)
        assert resumed.state is JobState.UPLOADING and resumed.upload_key == "K1"
        assert [h["to_state"] for h in reopened.history(job.id)] == ["queued", "uploading"]
        assert reopened.runnable(now=0, exclude=set(), limit=10, folders=["/drop"])[0].id == job.id


    def test_listing_filters_count_what_they_leave_out_and_find_one_file(self, journal: JournalStore) -> None:
        for n in range(5):
            journal.enqueue(FileIdentity("/srv/news" if n % 2 else "/srv/sport", f"c{n}.mov", 10, n, n))
        failed = journal.transition(journal.get(1), JobState.FAILED, "no")
        assert [j.id for j in journal.jobs(limit=2)] == [5, 4] and journal.count_jobs() == 5
        assert [j.id for j in journal.jobs(JobState.FAILED)] == [failed.id] == [1]
        assert journal.count_jobs(folder="news") == journal.count_jobs(folder="/srv/news") == 2
        assert journal.count_jobs(folder="ews") == 0, "a folder's last name, not any suffix"
        assert journal.count_jobs(since=failed.updated_at) == 1 and journal.count_jobs(JobState.QUEUED, folder="sport") == 2
        assert journal.find(FileIdentity("/srv/sport", "c2.mov", 10, 2, 2)).id == 3
        assert journal.find(FileIdentity("/srv/sport", "c2.mov", 11, 2, 2)) is None

    def test_file_names_round_trip_byte_exact(self, journal: JournalStore) -> None:
        name = b"caf\xe9 \xff.mov".decode("utf-8", "surrogateescape")
        job = journal.enqueue(identity(name))
        job = journal.transition(job, JobState.UPLOADING, f"uploading {name}", upload_key="k", last_error=name)
        assert journal.get(job.id).relpath.encode("utf-8", "surrogateescape") == b"caf\xe9 \xff.mov"
        assert version_print(name, 10, 1, 7, None) in journal.known_versions("/drop")
        assert journal.enqueue(identity(name)) is None


    def test_same_file_is_journalled_once(self, journal: JournalStore) -> None:
        assert journal.enqueue(identity()) is not None
        assert journal.enqueue(identity()) is None
        assert journal.counts()[JobState.QUEUED] == 1


    def test_rewritten_file_updates_its_queued_job(self, journal: JournalStore) -> None:
        first = journal.enqueue(identity(size=10))
        second = journal.enqueue(identity(size=20, mtime=2))
        assert second is not None and second.id == first.id and second.size == 20


    def test_finished_file_with_new_content_is_a_new_job(self, journal: JournalStore) -> None:
        job = journal.enqueue(identity())
        job = journal.transition(job, JobState.UPLOADING, upload_key="k")
        job = journal.transition(job, JobState.CONFIRMING)
        job = journal.transition(job, JobState.FINISHING, video_id="k")
        journal.transition(job, JobState.DONE)
        again = journal.enqueue(identity(mtime=99))
        assert again is not None and again.id != job.id


    def test_disallowed_transition_is_refused(self, journal: JournalStore) -> None:
        job = journal.enqueue(identity())
        with pytest.raises(IllegalTransition):
            journal.transition(job, JobState.DONE)


    def test_stale_job_object_cannot_overwrite_newer_state(self, journal: JournalStore) -> None:
        job = journal.enqueue(identity())
        journal.transition(job, JobState.UPLOADING, upload_key="k")
        with pytest.raises(IllegalTransition):
            journal.transition(job, JobState.UPLOADING, upload_key="other")


    def test_retry_is_not_before_not_a_state(self, journal: JournalStore) -> None:
        job = journal.enqueue(identity())
        journal.update(job, attempts=1, not_before=100.0, last_error="boom")
        assert journal.runnable(now=50, exclude=set(), limit=10, folders=["/drop"]) == []
        assert journal.next_due(set(), ["/drop"]) == 100.0
        assert [j.id for j in journal.runnable(now=100, exclude=set(), limit=10, folders=["/drop"])] == [job.id]


    def test_runnable_skips_jobs_already_running(self, journal: JournalStore) -> None:
        a = journal.enqueue(identity("a"))
        b = journal.enqueue(identity("b", inode=8))
        assert [j.id for j in journal.runnable(0, {a.id}, 10, ["/drop"])] == [b.id]


    def test_operator_retry_and_forget(self, journal: JournalStore) -> None:
        job = journal.transition(journal.enqueue(identity()), JobState.FAILED, last_error="x")
        retried = journal.retry(job.id)
        assert retried.state is JobState.QUEUED and retried.attempts == 0
        with pytest.raises(IllegalTransition):
            journal.forget(job.id)
        journal.forget(journal.transition(retried, JobState.FAILED).id)
        assert journal.get(job.id) is None


    def test_file_changing_under_an_upload_is_not_a_second_job(self, journal: JournalStore) -> None:
        job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, upload_key="k")
        assert journal.enqueue(identity(size=99, mtime=2)) is None
        assert journal.counts()[JobState.UPLOADING] == 1 and journal.counts()[JobState.QUEUED] == 0
        assert journal.get(job.id).size == 10


    def test_retry_resumes_on_the_committed_key_and_s3_request(self, journal: JournalStore) -> None:
        job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, upload_key="K")
        job = journal.transition(job, JobState.FAILED, last_error="x", s3_status="requesting", s3_request_id=5)
        retried = journal.retry(job.id)
        assert retried.state is JobState.UPLOADING and retried.upload_key == "K"
        assert (retried.s3_status, retried.s3_request_id) == ("requesting", 5)  # looked up or followed, never re-sent

    def test_retry_after_a_failed_s3_request_may_send_a_new_one(self, journal: JournalStore) -> None:
        job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, upload_key="K")
        job = journal.transition(job, JobState.FAILED, last_error="x", s3_status="failed", s3_request_id=5)
        retried = journal.retry(job.id)
        assert (retried.s3_status, retried.s3_request_id) == (None, None)

    def test_only_a_failed_job_can_be_retried(self, journal: JournalStore) -> None:
        job = journal.enqueue(identity())
        with pytest.raises(IllegalTransition, match="not failed"):
            journal.retry(job.id)

    def test_an_inode_left_by_a_deleted_file_is_new_content(self, journal: JournalStore) -> None:
        job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, upload_key="K")
        job = journal.transition(journal.transition(job, JobState.CONFIRMING), JobState.FINISHING, video_id="K")
        journal.transition(job, JobState.DONE, "deleted", released=1)
        again = journal.enqueue(identity())  # cp -p: same name, size, mtime and (reused) inode
        assert again is not None and again.id != job.id and again.state is JobState.QUEUED

    def test_new_content_after_confirmation_is_a_new_job(self, journal: JournalStore) -> None:
        job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, upload_key="K")
        job = journal.transition(journal.transition(job, JobState.CONFIRMING), JobState.S3_QUEUEING, video_id="K")
        newer = journal.enqueue(identity(size=99, mtime=5))
        assert newer is not None and newer.id != job.id


    def test_jobs_of_an_unconfigured_folder_wait(self, journal: JournalStore) -> None:
        journal.enqueue(identity())
        assert journal.runnable(0, set(), 10, ["/elsewhere"]) == []
        assert journal.next_due(set(), ["/elsewhere"]) is None


    def test_a_retry_time_beyond_the_horizon_is_due_now(self, journal: JournalStore) -> None:
        """A clock stepped back an hour must not park a job for an hour."""
        job = journal.update(journal.enqueue(identity()), not_before=10_000.0 + 3600)
        assert journal.runnable(10_000.0, set(), 10, ["/drop"]) == []
        assert [j.id for j in journal.runnable(10_000.0, set(), 10, ["/drop"], horizon=10_000.0 + 600)] == [job.id]
        assert journal.next_due(set(), ["/drop"], horizon=10_600.0) == 10_600.0

    def test_waking_a_service_makes_only_its_waiting_jobs_due(self, journal: JournalStore) -> None:
        vault = journal.update(journal.enqueue(identity()), not_before=9e9, waiting_for="vault")
        other = journal.update(journal.enqueue(identity("b.mov", inode=8)), not_before=9e9, waiting_for="scaleengine")
        assert journal.wake("vault") == 1
        assert journal.get(vault.id).not_before == 0 and journal.get(vault.id).waiting_for is None
        assert journal.get(other.id).not_before == 9e9

    def test_a_final_state_writes_its_notification_once(self, journal: JournalStore) -> None:
        journal.notify_states = frozenset({JobState.DONE})
        job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, upload_key="K")
        job = journal.transition(journal.transition(job, JobState.CONFIRMING), JobState.FINISHING, video_id="K")
        journal.transition(job, JobState.DONE)
        (note,) = journal.due_notifications(now=9e9, events=["done"], limit=10)
        assert (note.job_id, note.relpath, note.video_id) == (job.id, "clip.mov", "K")
        journal.notification_delivered(note.id)
        assert journal.due_notifications(now=9e9, events=["done"], limit=10) == []
        assert [(s.state, s.count) for s in journal.summary()] == [(JobState.DONE, 1)]

    def test_a_video_another_job_accounts_for_is_never_recorded_for_deletion(self, journal: JournalStore) -> None:
        """Whatever a stage concludes, a video the journal gives to another job stays: a
        skipped twin only names its uploader's video, so it is no owner of its own."""
        def to_done(job: Any, video: str, final: JobState = JobState.DONE) -> Any:
            job = journal.transition(job, JobState.UPLOADING, upload_key=video)
            job = journal.transition(job, JobState.CONFIRMING)
            job = journal.transition(job, JobState.FINISHING, video_id=video)
            return journal.transition(job, final)

        owner = to_done(journal.enqueue(identity("a.mov", inode=1)), "V")
        twin = journal.transition(journal.transition(journal.enqueue(identity("t.mov", inode=3)),
                                                     JobState.FINISHING, video_id="V"), JobState.SKIPPED)
        failed_twin = journal.transition(journal.transition(journal.enqueue(identity("u.mov", inode=4)),
                                                            JobState.FINISHING, video_id="V"), JobState.FAILED)
        other = journal.transition(journal.transition(journal.enqueue(identity("b.mov", inode=2)),
                                                      JobState.UPLOADING, upload_key="V"), JobState.CONFIRMING)
        assert [j.id for j in journal.by_video("V")] == [owner.id, twin.id, failed_twin.id]
        assert journal.owner_of("V", owner.id) is None  # twins sent nothing, whatever their state
        assert journal.owner_of("V", other.id).id == owner.id
        journal.discard_video(other, JobState.QUEUED, "sizes differ", "V", upload_key=None)
        assert journal.stale_videos(now=9e9) == []

        recorded = journal.video_deleted("V", "video V deleted from the vault by the operator")
        assert {j.id for j in recorded} == {owner.id, twin.id, failed_twin.id}
        assert all(j.state is JobState.FAILED and j.video_id is None for j in recorded)
        again = journal.get(owner.id)
        assert again.state is JobState.FAILED and again.video_id is None and again.upload_key is None
        assert journal.retry(owner.id).state is JobState.QUEUED  # a re-upload with a new key

    def test_a_job_id_is_never_given_to_another_file(self, open_journal: Opener) -> None:
        """journald's JOB_ID, webhooks and metrics name a file by its id: forgetting the
        newest job, even across a restart, must not hand its id to the next file."""
        journal = open_journal()
        first = journal.enqueue(identity("a.mov", inode=1))
        newest = journal.transition(journal.enqueue(identity("b.mov", inode=2)), JobState.FAILED, last_error="x")
        journal.forget(newest.id)
        after = journal.enqueue(identity("c.mov", inode=3))
        journal.transition(after, JobState.FAILED, last_error="x")
        journal.forget(after.id)
        journal.close()
        reopened = open_journal()
        last = reopened.enqueue(identity("d.mov", inode=4))
        assert len({first.id, newest.id, after.id, last.id}) == 4
        assert first.id < newest.id < after.id < last.id


@pytest.mark.parametrize("open_journal", ["postgresql", "memory"], indirect=True)  # SQLite has one host
class TestLeases:
    """Two hosts on one journal: a claimed job is one host's until its lease runs out."""

    @pytest.fixture
    def hosts(self, open_journal: Opener, clock: Clock) -> tuple[JournalStore, JournalStore]:
        return (open_journal(host_id="a", lease=30.0, clock=clock),
                open_journal(host_id="b", lease=30.0, clock=clock))

    def test_a_claimed_job_is_invisible_to_the_other_host_until_its_lease_ends(
        self, hosts: tuple[JournalStore, JournalStore], clock: Clock
    ) -> None:
        a, b = hosts
        job = a.claim(a.enqueue(identity()))
        assert job is not None and job.owner == "a" and job.lease_expiry == clock.now + 30
        assert b.runnable(clock.now, set(), 10, ["/drop"]) == [] and b.claim(job) is None
        assert b.next_due(set(), ["/drop"]) == job.lease_expiry
        clock.now += 20
        assert a.renew([job.id]) == set()
        clock.now += 20  # past the first expiry, within the renewed lease
        assert b.claim(job) is None

    def test_an_expired_lease_is_adopted_and_the_old_host_is_fenced_off(
        self, hosts: tuple[JournalStore, JournalStore], clock: Clock
    ) -> None:
        a, b = hosts
        mine = a.transition(a.claim(a.enqueue(identity())), JobState.UPLOADING, upload_key="K")
        clock.now += 31
        theirs = b.claim(b.runnable(clock.now, set(), 10, ["/drop"])[0])
        assert theirs is not None and theirs.owner == "b" and theirs.lease_epoch == mine.lease_epoch + 1
        assert "adopted by b from a" in b.history(mine.id)[-1]["detail"]
        with pytest.raises(LeaseLost):
            a.transition(mine, JobState.CONFIRMING)
        with pytest.raises(LeaseLost):  # even after re-reading the row: b holds it now
            a.update(a.get(mine.id), bytes_sent=5)
        with pytest.raises(LeaseLost):  # nor touch the file on the shared folder
            a.hold(mine)
        b.hold(theirs)
        assert a.renew([mine.id]) == {mine.id}
        theirs = b.transition(b.transition(theirs, JobState.CONFIRMING), JobState.FINISHING, video_id="K")
        assert b.transition(theirs, JobState.DONE).owner is None
        clock.now += 60  # long after: b's lease is over, the job is nobody's, a still remembers
        with pytest.raises(LeaseLost):
            a.update(a.get(mine.id), last_error="late")

    def test_a_restarted_host_takes_its_own_jobs_back_at_once(
        self, open_journal: Opener, hosts: tuple[JournalStore, JournalStore], clock: Clock
    ) -> None:
        a, _ = hosts
        job = a.claim(a.enqueue(identity()))
        again = open_journal(host_id="a", clock=clock)
        assert [j.id for j in again.runnable(clock.now, set(), 10, ["/drop"])] == [job.id]
        assert again.claim(job).lease_epoch == job.lease_epoch + 1

    def test_a_finished_job_is_nobodys_so_any_host_may_retry_it(
        self, hosts: tuple[JournalStore, JournalStore]
    ) -> None:
        a, b = hosts
        failed = a.transition(a.claim(a.enqueue(identity())), JobState.FAILED, last_error="x")
        assert failed.owner is None
        assert b.retry(failed.id).state is JobState.QUEUED

    def test_a_job_lost_to_another_host_and_failed_there_can_be_retried_here(
        self, hosts: tuple[JournalStore, JournalStore], clock: Clock
    ) -> None:
        """Found by the two-host model: the claim host a lost stayed in its journal and
        fenced a later retry (a failed file moved back into the folder) as if a still held it."""
        a, b = hosts
        job = a.claim(a.enqueue(identity()))
        clock.now += 31
        adopted = b.claim(b.runnable(clock.now, set(), 10, ["/drop"])[0])
        b.transition(adopted, JobState.FAILED, last_error="file vanished")
        assert a.retry(job.id).state is JobState.QUEUED

    def test_two_hosts_claiming_one_job_at_once_one_wins(
        self, open_journal: Opener, clock: Clock
    ) -> None:
        hosts = [open_journal(host_id=f"h{n}", clock=clock) for n in range(4)]
        job = hosts[0].enqueue(identity())
        with ThreadPoolExecutor(len(hosts)) as pool:
            claimed = list(pool.map(lambda host: host.claim(job), hosts))
        assert len([c for c in claimed if c is not None]) == 1


def test_sqlite_claims_and_renewals_commit_nothing(tmp_path: Path) -> None:
    """One daemon per SQLite journal: a lease would be its own, so no fsync is spent on one."""
    journal = Journal(tmp_path / "vaultdrop.db")
    job = journal.enqueue(identity())
    wal = tmp_path / "vaultdrop.db-wal"
    before = wal.stat().st_size
    claimed = journal.claim(job)
    assert claimed is not None and journal.renew([job.id]) == set()
    journal.hold(claimed)
    assert wal.stat().st_size == before
    moved = journal.transition(claimed, JobState.UPLOADING, upload_key="K")
    assert journal.claim(job) is None and journal.claim(moved) == moved  # a job that moved on is not taken
    journal.close()


def test_the_scheduler_index_holds_exactly_the_active_states() -> None:
    """A new state left out of jobs_due would never be scheduled."""
    assert DUE_CONDITION == "state IN (" + ", ".join(f"'{state.value}'" for state in ACTIVE) + ")"


def test_every_active_state_can_fail() -> None:
    for state, allowed in ALLOWED.items():
        if state not in (JobState.DONE, JobState.FAILED, JobState.SKIPPED):
            assert JobState.FAILED in allowed, state



def _journal_at_schema(path: Path, version: int) -> sqlite3.Connection:
    """A SQLite journal as an earlier vaultdrop left it: the first `version` migrations."""
    db = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(journal_module.MIGRATIONS[:version], start=1):
        for statement in filter(str.strip, script.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")
    return db


@pytest.mark.parametrize("version", range(1, len(journal_module.MIGRATIONS)))
def test_every_earlier_sqlite_schema_upgrades_with_its_jobs(tmp_path: Path, version: int) -> None:
    path = tmp_path / "vaultdrop.db"
    db = _journal_at_schema(path, version)
    db.execute("INSERT INTO jobs (folder, relpath, size, mtime_ns, inode, state, created_at, updated_at)"
               " VALUES ('/drop', 'old.mov', 5, 1, 9, 'done', 1, 1)")
    db.execute("INSERT INTO history (job_id, at, to_state) VALUES (1, 1, 'done')")
    if 3 <= version < 6:  # a forgotten job 7 that a webhook once named (from 6 on, AUTOINCREMENT knows it)
        db.execute("INSERT INTO outbox (event_id, event, job_id, folder, relpath, size, state, created_at)"
                   " VALUES ('e', 'done', 7, '/drop', 'gone.mov', 1, 'done', 1)")
    db.close()
    journal = Journal(path)
    old = journal.get(1)
    assert old is not None and (old.relpath, old.state) == ("old.mov", JobState.DONE)
    assert [h["to_state"] for h in journal.history(1)] == ["done"]
    new = journal.enqueue(identity("new.mov", inode=10))
    assert new.id == (8 if 3 <= version < 6 else 2)
    journal.forget(old.id)  # history goes with its job, as before
    assert journal.history(1) == []
    journal.close()
    with sqlite3.connect(path) as db:  # file names are stored as their bytes, as on PostgreSQL
        assert db.execute("SELECT DISTINCT typeof(folder), typeof(relpath) FROM jobs").fetchall() == [("blob", "blob")]


def test_sqlite_journal_uses_wal_and_full_sync(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "vaultdrop.db")
    assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    journal.enqueue(identity())
    assert journal.unsynced == 0
    journal.close()


class TestGroupCommit:
    """The daemon's SQLite journal commits without an fsync and makes its commits durable
    when a side effect needs them: one fsync of the WAL, off the loop, for every commit
    made before it began."""

    class Syncs(list[int]):
        """The WAL's size as each real fsync began; clearing `gate` holds the next one."""

        def __init__(self) -> None:
            super().__init__()
            self.gate = threading.Event()
            self.gate.set()

    @pytest.fixture
    def syncs(self, monkeypatch: pytest.MonkeyPatch) -> "TestGroupCommit.Syncs":
        sizes = self.Syncs()
        real_sync = journal_module.fsync_path

        def sync(path: str) -> None:
            sizes.append(os.stat(path).st_size)
            sizes.gate.wait(10)
            real_sync(path)

        monkeypatch.setattr(journal_module, "fsync_path", sync)
        return sizes

    @pytest.fixture
    def grouped(self, tmp_path: Path) -> Iterator[Journal]:
        journal = Journal(tmp_path / "vaultdrop.db", group_commit=True)
        yield journal
        journal.close()

    async def test_one_fsync_covers_every_commit_made_before_it(self, grouped: Journal, syncs: Syncs,
                                                                tmp_path: Path) -> None:
        assert grouped._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: no fsync per commit
        for name in ("a", "b", "c"):
            grouped.enqueue(identity(name, inode=ord(name)))
        assert grouped.unsynced == 3
        await asyncio.gather(*(grouped.durable() for _ in range(5)))
        assert grouped.unsynced == 0
        assert syncs == [(tmp_path / "vaultdrop.db-wal").stat().st_size]
        await grouped.durable()  # nothing new: no fsync
        assert len(syncs) == 1

    async def test_a_commit_made_during_an_fsync_waits_for_the_next(self, grouped: Journal, syncs: Syncs) -> None:
        grouped.enqueue(identity("a", inode=1))
        syncs.gate.clear()
        first = asyncio.create_task(grouped.durable())
        await asyncio.sleep(0.05)  # its fsync has begun and is held
        grouped.enqueue(identity("b", inode=2))
        second = asyncio.create_task(grouped.durable())
        await asyncio.sleep(0.05)
        syncs.gate.set()
        await first
        await second
        assert len(syncs) == 2 and syncs[0] < syncs[1] and grouped.unsynced == 0

    async def test_a_failed_fsync_is_an_unwritable_journal_never_a_durable_one(
            self, grouped: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
        """The daemon stops on it (exit 75). Linux reports a lost write once: an fsync that
        succeeds after a failed one proves nothing, so the failure stays."""
        grouped.enqueue(identity())

        def broken(path: str) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(journal_module, "fsync_path", broken)
        with pytest.raises(JournalUnwritable, match="could not be flushed to disk: .*Input/output error"):
            await grouped.durable()
        monkeypatch.undo()
        with pytest.raises(JournalUnwritable, match="could not be flushed to disk"):
            await grouped.durable()
        assert grouped.unsynced == 1

    async def test_a_waiter_is_not_held_up_by_commits_made_after_it_began(self, grouped: Journal,
                                                                          syncs: Syncs) -> None:
        grouped.enqueue(identity("a", inode=1))
        syncs.gate.clear()
        waiter = asyncio.create_task(grouped.durable())
        await asyncio.sleep(0.05)
        grouped.enqueue(identity("b", inode=2))  # others keep committing
        syncs.gate.set()
        await asyncio.wait_for(waiter, 5)
        assert len(syncs) == 1 and grouped.unsynced == 1

    def test_the_daemon_groups_commits_and_the_operators_commands_do_not(self, tmp_path: Path) -> None:
        settings = settings_for(tmp_path, {})
        daemons = open_configured(settings)
        daemons.enqueue(identity("a", inode=1))
        assert daemons.unsynced == 1  # durable at the next side effect
        operators = cli._sqlite(settings.daemon.journal_path, False)
        operators.enqueue(identity("b", inode=2))
        assert operators.unsynced == 0  # durable when the command returns
        operators.close()
        daemons.close()


def settings_for(tmp_path: Path, journal: dict[str, str], environ: dict[str, str] | None = None) -> Settings:
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    return settings_from_dict({"daemon": {"state_dir": str(tmp_path / "state")}, "journal": journal,
                               "vault": {"user": "u", "password": "p"}, "folders": [{"path": str(drop)}]},
                              environ=environ or {})


def test_sqlite_in_state_dir_is_the_default(tmp_path: Path) -> None:
    journal = open_configured(settings_for(tmp_path, {}))
    assert journal.location == str(tmp_path / "state" / "vaultdrop.db")
    journal.close()


def test_postgresql_url_with_password_file_or_credential(tmp_path: Path, pg_database: tuple[str, Path]) -> None:
    url, password_file = pg_database
    first = open_configured(settings_for(tmp_path, {"url": url, "password_file": str(password_file)}))
    job = first.enqueue(identity())
    first.close()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "journal-password").write_bytes(password_file.read_bytes())
    second = open_configured(settings_for(tmp_path, {"url": url}, {"CREDENTIALS_DIRECTORY": str(credentials)}))
    assert second.get(job.id) == job and second.location == url
    second.close()


def test_wrong_postgresql_password_is_a_config_error_without_the_secret(
    tmp_path: Path, pg_database: tuple[str, Path]
) -> None:
    url, _ = pg_database
    with pytest.raises(ConfigError) as refused:
        open_configured(settings_for(tmp_path, {"url": url, "password": "Wr0ngS3cret"}))
    assert "password authentication failed" in str(refused.value) and "Wr0ngS3cret" not in str(refused.value)


def test_journal_url_must_be_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"journal\.url: .*postgresql://"):
        settings_for(tmp_path, {"url": "mysql://db/x"})


def test_postgresql_down_at_start_is_a_temporary_failure(tmp_path: Path) -> None:
    with pytest.raises(JournalDown) as down:
        open_configured(settings_for(tmp_path, {"url": f"postgresql://vaultdrop@127.0.0.1:{free_port()}/x"}))
    assert down.value.exit_status == 75 and "unreachable" in str(down.value)


def test_a_journal_that_cannot_be_read_says_so_once_without_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "state" / "vaultdrop.db"
    journal = Journal(path)
    journal.enqueue(identity())
    with sqlite3.connect(path) as other:  # someone else broke the file under the daemon
        other.execute("DROP TABLE history")
        other.execute("DROP TABLE jobs")
    with pytest.raises(JournalUnwritable, match="cannot be read"):
        journal.jobs()
    journal.close()


def test_two_hosts_never_send_one_notification_at_once(pg_database: tuple[str, Path], clock: Clock) -> None:
    url, password_file = pg_database
    a, b = (PgJournal(url, password_file.read_text().strip(), clock=clock, host_id=h) for h in "ab")
    a.notify_states = frozenset({JobState.FAILED})
    a.transition(a.enqueue(identity()), JobState.FAILED, last_error="x")
    assert len(a.due_notifications(clock.now, ["failed"], 10)) == 1
    assert b.due_notifications(clock.now, ["failed"], 10) == []  # a is sending it
    clock.now += 61  # a died while sending: b takes it over
    assert len(b.due_notifications(clock.now, ["failed"], 10)) == 1
    a.close()
    b.close()


def test_journal_copy_moves_a_sqlite_journal_to_postgresql(
    tmp_path: Path, pg_database: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, password_file = pg_database
    state = tmp_path / "state"
    sqlite = Journal(state / "vaultdrop.db")
    odd = b"caf\xe9.mov".decode("utf-8", "surrogateescape")
    done = sqlite.transition(sqlite.enqueue(identity(odd)), JobState.UPLOADING, upload_key="K")
    done = sqlite.transition(sqlite.transition(done, JobState.CONFIRMING), JobState.FINISHING, video_id="K")
    sqlite.discard_video(done, JobState.FAILED, "replaced", "OLDVIDEO", last_error="x")
    sqlite.enqueue(identity("b.mov", inode=8))
    gone = sqlite.transition(sqlite.enqueue(identity("gone.mov", inode=10)), JobState.FAILED, last_error="x")
    sqlite.forget(gone.id)  # the newest id, named by nothing left but the counter
    expected_jobs, expected_history = sqlite.jobs(), sqlite.history(done.id)
    identity_of_journal = sqlite.journal_id
    sqlite.close()
    argv = ["journal", "copy", "--to", url, "--password-file", str(password_file), "--state-dir", str(state)]
    assert cli.main(argv) == 0
    assert "copied 2 job(s), 6 history line(s) and 1 pending video delete(s)" in capsys.readouterr().out
    target = PgJournal(url, password_file.read_text().strip())
    assert target.jobs() == expected_jobs and target.history(done.id) == expected_history
    assert target.stale_videos(now=9e9) == [("OLDVIDEO", 0)]
    assert target.enqueue(identity("c.mov", inode=9)).id == 4  # ids go on past every id SQLite gave
    assert target.journal_id == identity_of_journal  # the same journal, to every host's mark
    target.close()
    assert cli.main(argv) == 78  # only into an empty journal
    assert "already has 3 job(s)" in capsys.readouterr().err


def test_status_shows_which_host_works_on_each_job(
    tmp_path: Path, pg_database: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, password_file = pg_database
    journal = PgJournal(url, password_file.read_text().strip(), host_id="ingest-2")
    job = journal.claim(journal.enqueue(identity()))
    journal.transition(job, JobState.UPLOADING, upload_key="K")
    journal.close()
    (tmp_path / "drop").mkdir()
    config = tmp_path / "vaultdrop.toml"
    config.write_text(f'[journal]\nurl = "{url}"\npassword_file = "{password_file}"\n'
                      f'[vault]\nuser = "u"\npassword = "p"\n[[folders]]\npath = "{tmp_path / "drop"}"\n')
    assert cli.main(["status", "--config", str(config)]) == 0
    assert "clip.mov  [on ingest-2]" in capsys.readouterr().out


def test_a_used_state_dir_refuses_an_empty_journal_on_either_backend(
    tmp_path: Path, pg_cluster: Any, pg_database: tuple[str, Path]
) -> None:
    """A state_dir that had a journal never starts over by itself: not with a 0-byte SQLite
    file, not with an empty PostgreSQL database (recreated, or the wrong one)."""
    url, password_file = pg_database
    settings = settings_for(tmp_path, {"url": url, "password_file": str(password_file)})
    open_configured(settings).close()
    assert url.rsplit("/", 1)[1] in (tmp_path / "state" / USED_MARK).read_text()
    with pg_cluster.database("t_recreated_empty") as empty_url:
        with pytest.raises(journal_module.JournalMissing, match="is empty.*journal reset") as refused:
            open_configured(settings_for(tmp_path, {"url": empty_url, "password_file": str(password_file)}))
        assert refused.value.exit_status == 78
        # a host without the mark (new, or its state_dir wiped) sets the empty database up:
        # the marked host still refuses it, by the journal's id
        PgJournal(empty_url, password_file.read_text().strip()).close()
        with pytest.raises(journal_module.JournalMissing, match="another journal"):
            open_configured(settings_for(tmp_path, {"url": empty_url, "password_file": str(password_file)}))
        again = settings_for(tmp_path, {"url": empty_url, "password_file": str(password_file)})
        assert cli.main(["journal", "reset", "--state-dir", str(tmp_path / "state")]) == 0
        open_configured(again).close()  # started over on purpose
    sqlite_dir = tmp_path / "sqlite"
    sqlite_dir.mkdir()
    settings = settings_for(sqlite_dir, {})
    open_configured(settings).close()
    settings.daemon.journal_path.write_bytes(b"")
    with pytest.raises(journal_module.JournalMissing, match="is empty"):
        open_configured(settings)
    with pytest.raises(journal_module.JournalMissing, match="is empty"):  # nor do the operator's commands
        cli._sqlite(settings.daemon.journal_path, False)
    assert settings.daemon.journal_path.stat().st_size == 0


# How each engine spells the same column type; a file name is bytes in both (SQLite keeps
# BLOBs in its TEXT columns, see sqlite.MIGRATIONS).
SAME_TYPE = {"INTEGER": {"integer", "bigint"}, "REAL": {"double precision"}, "TEXT": {"text", "bytea"}}


def test_the_sqlite_and_postgresql_schemas_match(tmp_path: Path, pg_database: tuple[str, Path]) -> None:
    Journal(tmp_path / "vaultdrop.db").close()
    with sqlite3.connect(tmp_path / "vaultdrop.db") as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'"
                                               " AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        lite = {table: [(row[1], row[2], bool(row[3]) or bool(row[5])) for row in db.execute(f"PRAGMA table_info({table})")]
                for table in tables}
        lite_indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'"
                                                     " AND name NOT LIKE 'sqlite_autoindex_%'")}
    url, password_file = pg_database
    PgJournal(url, password_file.read_text().strip()).close()
    with psycopg.connect(url, password=password_file.read_text().strip()) as db:
        pg: dict[str, list[tuple[str, str, bool]]] = {}
        for table, column, kind, nullable in db.execute(
                "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name <> 'schema_version' ORDER BY table_name, ordinal_position"):
            pg.setdefault(table, []).append((column, kind, nullable == "NO"))
        pg_indexes = {row[0] for row in db.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
                                                   " AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'")}
    assert sorted(pg) == tables
    for table in tables:
        assert [name for name, _, _ in lite[table]] == [name for name, _, _ in pg[table]], table
        for (name, lite_type, lite_required), (_, pg_type, pg_required) in zip(lite[table], pg[table]):
            assert pg_type in SAME_TYPE[lite_type], (table, name, lite_type, pg_type)
            assert lite_required == pg_required, (table, name)
    assert lite_indexes == pg_indexes
