"""The journal is the source of truth: transitions are guarded, facts survive a reopen."""

import sqlite3
from pathlib import Path

import pytest

from vaultdrop.journal import IllegalTransition, Journal, JournalUnwritable
from vaultdrop.model import ALLOWED, FileIdentity, JobState


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "state" / "vaultdrop.db")
    yield j
    j.close()


def identity(name: str = "clip.mov", size: int = 10, mtime: int = 1, inode: int = 7) -> FileIdentity:
    return FileIdentity("/drop", name, size, mtime, inode)


def test_same_file_is_journalled_once(journal: Journal) -> None:
    assert journal.enqueue(identity()) is not None
    assert journal.enqueue(identity()) is None
    assert journal.counts()[JobState.QUEUED] == 1


def test_rewritten_file_updates_its_queued_job(journal: Journal) -> None:
    first = journal.enqueue(identity(size=10))
    second = journal.enqueue(identity(size=20, mtime=2))
    assert second is not None and second.id == first.id and second.size == 20


def test_finished_file_with_new_content_is_a_new_job(journal: Journal) -> None:
    job = journal.enqueue(identity())
    job = journal.transition(job, JobState.UPLOADING, upload_key="k")
    job = journal.transition(job, JobState.CONFIRMING)
    job = journal.transition(job, JobState.FINISHING, video_id="k")
    journal.transition(job, JobState.DONE)
    again = journal.enqueue(identity(mtime=99))
    assert again is not None and again.id != job.id


def test_disallowed_transition_is_refused(journal: Journal) -> None:
    job = journal.enqueue(identity())
    with pytest.raises(IllegalTransition):
        journal.transition(job, JobState.DONE)


def test_stale_job_object_cannot_overwrite_newer_state(journal: Journal) -> None:
    job = journal.enqueue(identity())
    journal.transition(job, JobState.UPLOADING, upload_key="k")
    with pytest.raises(IllegalTransition):
        journal.transition(job, JobState.UPLOADING, upload_key="other")


def test_upload_key_survives_reopen_and_history_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "vaultdrop.db"
    journal = Journal(path)
    job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, "key", upload_key="K1")
    journal.close()
    reopened = Journal(path)
    resumed = reopened.get(job.id)
    assert resumed.state is JobState.UPLOADING and resumed.upload_key == "K1"
    assert [h["to_state"] for h in reopened.history(job.id)] == ["queued", "uploading"]
    assert reopened.runnable(now=0, exclude=set(), limit=10, folders=["/drop"])[0].id == job.id
    reopened.close()


def test_retry_is_not_before_not_a_state(journal: Journal) -> None:
    job = journal.enqueue(identity())
    journal.update(job, attempts=1, not_before=100.0, last_error="boom")
    assert journal.runnable(now=50, exclude=set(), limit=10, folders=["/drop"]) == []
    assert journal.next_due(set(), ["/drop"]) == 100.0
    assert [j.id for j in journal.runnable(now=100, exclude=set(), limit=10, folders=["/drop"])] == [job.id]


def test_runnable_skips_jobs_already_running(journal: Journal) -> None:
    a = journal.enqueue(identity("a"))
    b = journal.enqueue(identity("b", inode=8))
    assert [j.id for j in journal.runnable(0, {a.id}, 10, ["/drop"])] == [b.id]


def test_operator_retry_and_forget(journal: Journal) -> None:
    job = journal.transition(journal.enqueue(identity()), JobState.FAILED, last_error="x")
    retried = journal.retry(job.id)
    assert retried.state is JobState.QUEUED and retried.attempts == 0
    with pytest.raises(IllegalTransition):
        journal.forget(job.id)
    journal.forget(journal.transition(retried, JobState.FAILED).id)
    assert journal.get(job.id) is None


def test_every_active_state_can_fail() -> None:
    for state, allowed in ALLOWED.items():
        if state not in (JobState.DONE, JobState.FAILED, JobState.SKIPPED):
            assert JobState.FAILED in allowed, state


def test_journal_uses_wal_and_full_sync(journal: Journal) -> None:
    assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_file_changing_under_an_upload_is_not_a_second_job(journal: Journal) -> None:
    job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, upload_key="k")
    assert journal.enqueue(identity(size=99, mtime=2)) is None
    assert journal.counts()[JobState.UPLOADING] == 1 and journal.counts()[JobState.QUEUED] == 0
    assert journal.get(job.id).size == 10


def test_retry_resumes_on_the_committed_key_and_s3_request(journal: Journal) -> None:
    job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, upload_key="K")
    job = journal.transition(job, JobState.FAILED, last_error="x", s3_status="requesting", s3_request_id=5)
    retried = journal.retry(job.id)
    assert retried.state is JobState.UPLOADING and retried.upload_key == "K"
    assert (retried.s3_status, retried.s3_request_id) == ("requesting", 5)  # looked up or followed, never re-sent


def test_retry_after_a_failed_s3_request_may_send_a_new_one(journal: Journal) -> None:
    job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, upload_key="K")
    job = journal.transition(job, JobState.FAILED, last_error="x", s3_status="failed", s3_request_id=5)
    retried = journal.retry(job.id)
    assert (retried.s3_status, retried.s3_request_id) == (None, None)


def test_only_a_failed_job_can_be_retried(journal: Journal) -> None:
    job = journal.enqueue(identity())
    with pytest.raises(IllegalTransition, match="not failed"):
        journal.retry(job.id)


def test_an_inode_left_by_a_deleted_file_is_new_content(journal: Journal) -> None:
    job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, upload_key="K")
    job = journal.transition(journal.transition(job, JobState.CONFIRMING), JobState.FINISHING, video_id="K")
    journal.transition(job, JobState.DONE, "deleted", released=1)
    again = journal.enqueue(identity())  # cp -p: same name, size, mtime and (reused) inode
    assert again is not None and again.id != job.id and again.state is JobState.QUEUED


def test_new_content_after_confirmation_is_a_new_job(journal: Journal) -> None:
    job = journal.transition(journal.enqueue(identity()), JobState.UPLOADING, upload_key="K")
    job = journal.transition(journal.transition(job, JobState.CONFIRMING), JobState.S3_QUEUEING, video_id="K")
    newer = journal.enqueue(identity(size=99, mtime=5))
    assert newer is not None and newer.id != job.id


def test_jobs_of_an_unconfigured_folder_wait(journal: Journal) -> None:
    journal.enqueue(identity())
    assert journal.runnable(0, set(), 10, ["/elsewhere"]) == []
    assert journal.next_due(set(), ["/elsewhere"]) is None


def test_a_retry_time_beyond_the_horizon_is_due_now(journal: Journal) -> None:
    """A clock stepped back an hour must not park a job for an hour."""
    job = journal.update(journal.enqueue(identity()), not_before=10_000.0 + 3600)
    assert journal.runnable(10_000.0, set(), 10, ["/drop"]) == []
    assert [j.id for j in journal.runnable(10_000.0, set(), 10, ["/drop"], horizon=10_000.0 + 600)] == [job.id]
    assert journal.next_due(set(), ["/drop"], horizon=10_600.0) == 10_600.0


def test_waking_a_service_makes_only_its_waiting_jobs_due(journal: Journal) -> None:
    vault = journal.update(journal.enqueue(identity()), not_before=9e9, waiting_for="vault")
    other = journal.update(journal.enqueue(identity("b.mov", inode=8)), not_before=9e9, waiting_for="scaleengine")
    assert journal.wake("vault") == 1
    assert journal.get(vault.id).not_before == 0 and journal.get(vault.id).waiting_for is None
    assert journal.get(other.id).not_before == 9e9


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
