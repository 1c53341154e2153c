"""Webhook notifications when a job ends, delivered from the journal's outbox.

The journal writes the event in the same transaction as the job's final state, so no
event is lost to a crash. Delivery is at least once: a POST that succeeded but was not
yet marked delivered when the process died is sent again after the restart with the
same `event_id`, which receivers use to drop the duplicate. A delivered event is never
sent again.

Signature: with `notify.secret` set, each POST carries `X-Vaultdrop-Timestamp` (Unix
seconds, at this attempt) and `X-Vaultdrop-Signature-V2: sha256=<hex HMAC-SHA256(secret,
"<timestamp>." + body)>`, so a receiver that checks the time can refuse a replay; the
first `X-Vaultdrop-Signature: sha256=<hex HMAC-SHA256(secret, body)>` is still sent, for
receivers written against it (it covers no time). The body names the sending host.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from .config import NotifySettings
from .errors import RetryLater
from .events import Observer
from .job import Job, JobState, Notification
from .journal import JournalStore, JournalUnavailable
from .logs import log
from .retry import GiveUp, Policy, decide

SIGNATURE_HEADER = "X-Vaultdrop-Signature"  # the body only: kept for receivers written against it
TIMED_SIGNATURE_HEADER = "X-Vaultdrop-Signature-V2"  # the timestamp and the body
TIMESTAMP_HEADER = "X-Vaultdrop-Timestamp"
LATE = 60.0  # seconds after the job ended from which a delivery is logged as late
EVENT_ID_HEADER = "X-Vaultdrop-Event-Id"
POLL_INTERVAL = 5.0  # the longest sleep: a job that ended wakes the sender sooner
BATCH = 50


def notify_states(settings: NotifySettings) -> frozenset[JobState]:
    """The states whose entry writes an outbox event (only events someone wants)."""
    return frozenset(JobState(event) for event in settings.events)


def payload(notification: Notification, host: str) -> dict[str, Any]:
    return {
        "event_id": notification.event_id, "event": notification.event, "host": host, "job_id": notification.job_id,
        "folder": notification.folder, "file": notification.relpath, "size": notification.size,
        "state": notification.state, "error": notification.error, "video_id": notification.video_id,
        "s3_request_id": notification.s3_request_id, "time": notification.created_at,
    }


def signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """Over the body, or (the V2 header) over `<timestamp>.` and the body."""
    signed = body if timestamp is None else f"{timestamp}.".encode("ascii") + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def _where(url: str) -> str:
    """For log lines: a webhook URL's path (or user info) is often its secret, so show host and port only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class NotificationSender(Observer):
    """Sends due outbox events; woken when a job ends, otherwise polls for due retries.
    `on_outcome` hears of each attempt: sent, failed, given_up (the metrics count them)."""

    def __init__(self, journal: JournalStore, settings: Callable[[], NotifySettings], *,
                 clock: Callable[[], float] = time.time, transport: httpx.AsyncBaseTransport | None = None,
                 rng: random.Random | None = None, on_outcome: Callable[[str], None] = lambda outcome: None,
                 host: str | None = None) -> None:
        self._journal = journal
        self._settings = settings
        self._clock = clock
        self._on_outcome = on_outcome
        self._host = host or socket.gethostname()
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._soonest_retry = float("inf")
        self._http = httpx.AsyncClient(transport=transport, follow_redirects=False,
                                       headers={"User-Agent": "vaultdrop"})

    def changed(self, job: Job, previous: JobState | None, detail: str) -> None:
        if job.state in self._journal.notify_states:
            self._wake.set()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            if self._settings().events:
                try:
                    await self.deliver_due()
                except JournalUnavailable as exc:  # the PostgreSQL journal is down: try again later
                    log(logging.WARNING, f"notifications wait for the journal: {exc}", event="journal_outage")
            sleep = min(POLL_INTERVAL, max(0.05, self._soonest_retry - self._clock()))
            try:
                await asyncio.wait_for(self._wake.wait(), sleep)
            except TimeoutError:
                pass

    async def deliver_due(self) -> int:
        """One pass over the due events; returns how many were delivered."""
        settings = self._settings()
        policy = Policy(settings.max_attempts, settings.backoff_base, settings.backoff_max)
        delivered = 0
        self._soonest_retry = float("inf")
        await self._journal.durable()  # never report a state a power cut could take back
        for notification in self._journal.due_notifications(self._clock(), settings.events, BATCH):
            url = settings.url_for(notification.event)
            assert url is not None
            error = await self._post(settings, url, notification)
            if error is None:
                self._journal.notification_delivered(notification.id)
                self._on_outcome("sent")
                self._say_if_late(notification, url)
                delivered += 1
                continue
            self._on_outcome("failed")
            verdict = decide(RetryLater(error), notification.attempts, 0, policy, self._rng)
            if isinstance(verdict, GiveUp):
                self._on_outcome("given_up")
                log(logging.ERROR, f"notification {notification.event_id} ({notification.event}: "
                    f"{notification.relpath}) to {_where(url)} given up after {verdict.attempts} attempts: {error}",
                    job_id=notification.job_id)
                self._journal.notification_deferred(notification.id, None, error)
                continue
            log(logging.WARNING, f"notification to {_where(url)} failed, retry in {verdict.delay:.1f} s: {error}",
                job_id=notification.job_id)
            retry_at = self._clock() + verdict.delay
            self._journal.notification_deferred(notification.id, retry_at, error)
            self._soonest_retry = min(self._soonest_retry, retry_at)
        return delivered

    def _say_if_late(self, notification: Notification, url: str) -> None:
        """A delivery after failed attempts, or long after the job ended (the daemon was
        down), is news to whoever watched the receiver wait."""
        late = self._clock() - notification.created_at
        if notification.attempts or late >= LATE:
            log(logging.INFO, f"notification {notification.event_id} ({notification.event}: {notification.relpath}) "
                f"delivered to {_where(url)} at attempt {notification.attempts + 1}, {late:.0f} s after the job "
                "ended", job_id=notification.job_id)

    async def _post(self, settings: NotifySettings, url: str, notification: Notification) -> str | None:
        """None when the receiver took it (any 2xx), else why not."""
        body = json.dumps(payload(notification, self._host), sort_keys=True, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: notification.event_id}
        if settings.secret is not None:
            secret, timestamp = settings.secret.get_secret_value(), int(self._clock())
            headers[SIGNATURE_HEADER] = signature(secret, body)
            headers[TIMESTAMP_HEADER] = str(timestamp)
            headers[TIMED_SIGNATURE_HEADER] = signature(secret, body, timestamp)
        try:
            response = await self._http.post(url, content=body, headers=headers, timeout=settings.timeout)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
