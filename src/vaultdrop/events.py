"""What happens to jobs, told to whoever watches: metrics, notifications.

The code that commits a change calls one method of a `JobEvents` here; observers never
touch the journal's write path nor decide anything, so a slow or broken observer cannot
change what happens to a file.
"""

from __future__ import annotations

import re
from typing import Protocol

import httpx

from .errors import ClockSkew, ProtocolError, RetryLater, Unavailable
from .job import Job, JobState

RETRY_REASONS = ("outage", "server_error", "reset", "timeout", "protocol", "clock", "other")
_HTTP_STATUS = re.compile(r"\bHTTP (\d{3})\b")


class JobEvents(Protocol):
    def changed(self, job: Job, previous: JobState | None, detail: str) -> None:
        """`job` (as committed) entered its state; `previous` is None for a new job."""

    def retry_scheduled(self, job: Job, reason: str) -> None:
        """A retry was committed; `reason` is one of RETRY_REASONS (see retry_reason)."""

    def uploaded(self, job: Job, nbytes: int) -> None:
        """`nbytes` more of the job's file went out to the vault."""

    def vault_reachable(self, up: bool) -> None:
        """The vault answered (True) or could not be reached at all (False)."""


class Observer:
    """A JobEvents that ignores everything: observers override only what they care about."""

    def changed(self, job: Job, previous: JobState | None, detail: str) -> None:
        return None

    def retry_scheduled(self, job: Job, reason: str) -> None:
        return None

    def uploaded(self, job: Job, nbytes: int) -> None:
        return None

    def vault_reachable(self, up: bool) -> None:
        return None


class Fanout:
    """Every event to every observer, in order (none of them may raise)."""

    def __init__(self, *observers: JobEvents) -> None:
        self.observers = observers

    def changed(self, job: Job, previous: JobState | None, detail: str) -> None:
        for observer in self.observers:
            observer.changed(job, previous, detail)

    def retry_scheduled(self, job: Job, reason: str) -> None:
        for observer in self.observers:
            observer.retry_scheduled(job, reason)

    def uploaded(self, job: Job, nbytes: int) -> None:
        for observer in self.observers:
            observer.uploaded(job, nbytes)

    def vault_reachable(self, up: bool) -> None:
        for observer in self.observers:
            observer.vault_reachable(up)


def retry_reason(exc: RetryLater) -> str:
    """A small, fixed vocabulary for why a retry happens (a metric label, so no free text).

    The error classes say most of it; a transport failure is told by the httpx exception
    it was translated from, a server error by the HTTP status in the message.
    """
    if isinstance(exc, Unavailable):
        return "outage"
    if isinstance(exc, ClockSkew):
        return "clock"
    if isinstance(exc, ProtocolError):
        return "protocol"
    origin = exc.__cause__ or exc.__context__
    if isinstance(origin, httpx.TimeoutException):
        return "timeout"
    if isinstance(origin, httpx.TransportError):
        return "reset"
    status = _HTTP_STATUS.search(str(exc))
    if status is not None and status[1].startswith("5"):
        return "server_error"
    return "other"
