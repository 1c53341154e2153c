"""Notifications: written with the job's final state, delivered to real loopback receivers,
retried a bounded number of times, never lost nor sent again once delivered."""

from __future__ import annotations

import hashlib
import hmac
import socket
from pathlib import Path

import pytest

from vaultdrop.config import NotifySettings
from vaultdrop.job import FileIdentity, Job, JobState
from vaultdrop.journal import IllegalTransition, Journal
from vaultdrop.notify import SIGNATURE_HEADER, NotificationSender

from ..receiver import closed_port_url, receiver
from .conftest import Clock


@pytest.fixture
def journal(journal: Journal) -> Journal:
    """The shared clocked journal, writing both kinds of events."""
    journal.notify_states = frozenset({JobState.DONE, JobState.FAILED})
    return journal


def failed_job(journal: Journal, name: str = "day1/clip.mov") -> Job:
    job = journal.enqueue(FileIdentity("/srv/drop", name, 1234, 1, 7))
    assert job is not None
    job = journal.transition(job, JobState.UPLOADING, upload_key="key-1")
    return journal.transition(job, JobState.FAILED, "too large", last_error="HTTP 413 too_large")


def done_job(journal: Journal, name: str = "ok.mov") -> Job:
    job = journal.enqueue(FileIdentity("/srv/drop", name, 10, 1, 8))
    assert job is not None
    job = journal.transition(job, JobState.UPLOADING, upload_key="key-2")
    job = journal.transition(job, JobState.CONFIRMING)
    job = journal.transition(job, JobState.FINISHING, video_id="video-2")
    return journal.transition(job, JobState.DONE)


def sender(journal: Journal, clock: Clock, **settings: object) -> NotificationSender:
    notify = NotifySettings(**{"backoff_base": 1, "backoff_max": 4, **settings})
    return NotificationSender(journal, lambda: notify, clock=clock)


async def test_failed_job_is_posted_once_signed_with_every_field(journal: Journal, clock: Clock) -> None:
    with receiver() as hook:
        job = failed_job(journal)
        one = sender(journal, clock, on_failed=hook.url, secret="s3cret")
        assert await one.deliver_due() == 1
        await one.aclose()
        restarted = sender(journal, clock, on_failed=hook.url, secret="s3cret")
        clock.now += 3600
        assert await restarted.deliver_due() == 0, "a delivered event is never sent again"
        await restarted.aclose()
    [post] = hook.posts
    assert post.json == {
        "event_id": post.json["event_id"], "event": "failed", "host": socket.gethostname(), "job_id": job.id,
        "folder": "/srv/drop",
        "file": "day1/clip.mov", "size": 1234, "state": "failed", "error": "HTTP 413 too_large",
        "video_id": None, "s3_request_id": None, "time": 1_000.0,
    }
    expected = "sha256=" + hmac.new(b"s3cret", post.body, hashlib.sha256).hexdigest()
    assert post.headers[SIGNATURE_HEADER.lower()] == expected
    timestamp = post.headers["x-vaultdrop-timestamp"]
    assert int(timestamp) == int(clock.now) - 3600, "the time of the attempt"
    timed = "sha256=" + hmac.new(b"s3cret", f"{timestamp}.".encode() + post.body, hashlib.sha256).hexdigest()
    assert post.headers["x-vaultdrop-signature-v2"] == timed
    assert post.headers["x-vaultdrop-event-id"] == post.json["event_id"]


async def test_receiver_answering_500_gets_the_same_event_again_later(journal: Journal, clock: Clock) -> None:
    with receiver([500, 500]) as hook:
        done_job(journal)
        notify = sender(journal, clock, on_done=hook.url)
        assert await notify.deliver_due() == 0
        assert await notify.deliver_due() == 0, "not due again before its backoff"
        clock.now += 5
        assert await notify.deliver_due() == 0
        clock.now += 5
        assert await notify.deliver_due() == 1
        await notify.aclose()
    assert [p.status for p in hook.posts] == [500, 500, 200]
    assert len({p.json["event_id"] for p in hook.posts}) == 1
    assert SIGNATURE_HEADER.lower() not in hook.posts[0].headers, "no secret, no signature"


async def test_receiver_that_is_down_is_given_up_after_max_attempts(journal: Journal, clock: Clock) -> None:
    failed_job(journal)
    notify = sender(journal, clock, on_failed=closed_port_url(), max_attempts=3)
    for _ in range(5):
        await notify.deliver_due()
        clock.now += 10
    await notify.aclose()
    assert journal.due_notifications(clock.now + 1e6, ["failed"], 10) == []
    row = journal._db.execute("SELECT attempts, delivered_at, last_error FROM outbox").fetchone()
    assert row["attempts"] == 3 and row["delivered_at"] is None and "ConnectError" in row["last_error"]


async def test_only_wanted_events_are_written(journal: Journal, clock: Clock) -> None:
    journal.notify_states = frozenset({JobState.FAILED})
    done_job(journal)
    failed_job(journal)
    with receiver() as hook:
        notify = sender(journal, clock, on_failed=hook.url, on_done=hook.url)
        assert await notify.deliver_due() == 1
        await notify.aclose()
    assert [p.json["event"] for p in hook.posts] == ["failed"]


def test_event_is_part_of_the_transition_that_ends_the_job(journal: Journal) -> None:
    """A refused transition (another writer got there first) writes no event either."""
    job = journal.enqueue(FileIdentity("/srv/drop", "x.mov", 5, 1, 9))
    assert job is not None
    journal.transition(job, JobState.FAILED, last_error="boom")
    with pytest.raises(IllegalTransition, match="changed under us"):
        journal.transition(job, JobState.FAILED, last_error="twice")
    assert len(journal.due_notifications(1e12, ["failed"], 10)) == 1


async def test_event_not_yet_delivered_survives_a_restart(tmp_path: Path, journal: Journal, clock: Clock) -> None:
    failed_job(journal)
    journal.close()  # the process dies before its sender ran
    reopened = Journal(tmp_path / "vaultdrop.db", clock=clock)
    with receiver() as hook:
        notify = sender(reopened, clock, on_failed=hook.url)
        assert await notify.deliver_due() == 1
        await notify.aclose()
    reopened.close()
    assert [p.json["file"] for p in hook.posts] == ["day1/clip.mov"]
