"""Metrics: job gauges read from the journal at scrape time, event counters, retry reasons."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from vaultdrop.errors import ClockSkew, ProtocolError, RetryLater, Unavailable
from vaultdrop.events import retry_reason
from vaultdrop.job import FileIdentity, Job, JobState
from vaultdrop.journal import Journal, JournalUnwritable
from vaultdrop.metrics import JournalCollector, MetricsRecorder

from .conftest import Clock


def queued(journal: Journal, folder: str, name: str) -> Job:
    job = journal.enqueue(FileIdentity(folder, name, 100, 1, hash(name) & 0xFFFF))
    assert job is not None
    return job


def test_job_gauges_come_from_the_journal_even_through_a_second_reader(journal: Journal, clock: Clock) -> None:
    old = queued(journal, "/a", "old.mov")
    clock.now += 60
    queued(journal, "/a", "new.mov")
    waiting = journal.transition(queued(journal, "/b", "s3.mov"), JobState.UPLOADING, upload_key="k")
    waiting = journal.transition(waiting, JobState.CONFIRMING)
    waiting = journal.transition(waiting, JobState.S3_QUEUEING, video_id="v")
    journal.transition(waiting, JobState.S3_WAITING, s3_request_id=7, s3_status="queued")
    journal.transition(old, JobState.FAILED, last_error="x")
    clock.now += 30
    reader = Journal(journal.path, readonly=True)
    registry = CollectorRegistry()
    registry.register(JournalCollector(reader, clock=clock))
    value = registry.get_sample_value
    assert value("vaultdrop_jobs", {"folder": "/a", "state": "queued"}) == 1
    assert value("vaultdrop_jobs", {"folder": "/a", "state": "failed"}) == 1
    assert value("vaultdrop_jobs", {"folder": "/a", "state": "done"}) == 0
    assert value("vaultdrop_oldest_pending_seconds", {"folder": "/a"}) == 30, "the failed job is not pending"
    assert value("vaultdrop_oldest_pending_seconds", {"folder": "/b"}) == 30
    assert value("vaultdrop_s3_requests", {"status": "queued"}) == 1
    reader.close()


def test_ingest_histogram_and_outcomes_follow_the_events(journal: Journal, clock: Clock) -> None:
    registry = CollectorRegistry()
    recorder = MetricsRecorder(registry, clock=clock)
    recorder.watching("/a")
    job = journal.transition(queued(journal, "/a", "x.mov"), JobState.UPLOADING, upload_key="k")
    recorder.uploaded(job, 60)
    recorder.uploaded(job, 40)
    confirming = journal.transition(job, JobState.CONFIRMING)
    clock.now += 12
    finishing = journal.transition(confirming, JobState.FINISHING, video_id="v")
    recorder.changed(finishing, JobState.CONFIRMING, "confirmed")
    recorder.changed(journal.transition(finishing, JobState.DONE), JobState.FINISHING, "archived")
    value = registry.get_sample_value
    assert value("vaultdrop_ingest_seconds_count", {"folder": "/a"}) == 1
    assert value("vaultdrop_ingest_seconds_sum", {"folder": "/a"}) == 12
    assert value("vaultdrop_upload_bytes_total", {"folder": "/a"}) == 100
    assert value("vaultdrop_files_total", {"folder": "/a", "outcome": "done"}) == 1
    assert value("vaultdrop_files_total", {"folder": "/a", "outcome": "failed"}) == 0, "exists before a failure"
    assert value("vaultdrop_last_success_timestamp_seconds") == clock.now
    recorder.vault_reachable(False)
    assert value("vaultdrop_vault_up") == 0
    assert value("vaultdrop_build_info", {"version": "0.1.0"}) == 1


def _raised_from(cause: BaseException) -> RetryLater:
    try:
        try:
            raise cause
        except httpx.TransportError:
            raise RetryLater("upload interrupted") from None
    except RetryLater as exc:
        return exc


@pytest.mark.parametrize(("error", "reason"), [
    (Unavailable("GET /x: ConnectError"), "outage"),
    (ClockSkew("expired"), "clock"),
    (ProtocolError("garbage"), "protocol"),
    (RetryLater("/upload: HTTP 500 server_error: boom"), "server_error"),
    (_raised_from(httpx.ReadTimeout("slow")), "timeout"),
    (_raised_from(httpx.RemoteProtocolError("peer closed")), "reset"),
    (RetryLater("no video id 10 s after the upload"), "other"),
])
def test_retry_reason(error: RetryLater, reason: str) -> None:
    assert retry_reason(error) == reason


def test_unreadable_journal_costs_the_job_gauges_not_the_scrape() -> None:
    class Unreadable:
        def summary(self) -> list[object]:
            raise JournalUnwritable("the journal /x cannot be read: disk I/O error")

    registry = CollectorRegistry()
    MetricsRecorder(registry)
    registry.register(JournalCollector(Unreadable()))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert "vaultdrop_vault_up 1.0" in text and "vaultdrop_jobs" not in text
