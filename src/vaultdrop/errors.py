"""The one exception tree. Each class says what the caller must do next.

Foreign exceptions (httpx, lxml, OSError, sqlite3) are translated into these once, at
the edge where they occur, so the pipeline only has to decide between three answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONFIG_EXIT_STATUS = 78  # EX_CONFIG: systemd's RestartPreventExitStatus= keys on it
TEMPFAIL_EXIT_STATUS = 75  # EX_TEMPFAIL: nothing to fix, try again later (systemd restarts it)


class VaultdropError(Exception):
    """Base of everything vaultdrop raises on purpose; a command ends with one line and this status."""

    exit_status = 1


class RetryLater(VaultdropError):
    """Transient: keep the job, try again after a backoff (bounded by max_attempts)."""


class Unavailable(RetryLater):
    """The service is down or unreachable: an outage costs the job no attempt, so a long
    outage never fails files, and jobs waiting on it wake as soon as the service answers."""

    def __init__(self, message: str, service: str = "vault") -> None:
        super().__init__(message)
        self.service = service


class Waiting(VaultdropError):
    """Not an error: the job must wait for something else first (a twin upload, the S3
    listing's grace period, its folder coming back). Costs no attempt."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


class ClockSkew(RetryLater):
    """The server refused our timestamp: re-sign with a fresh time, and warn about NTP."""


class ProtocolError(RetryLater):
    """The server answered something we refuse to trust (garbage, hostile, oversized)."""


class LocalFileError(RetryLater):
    """A post-action could not touch a local file (blocked archive folder, permissions, full
    disk): the operator can fix it, so the job is tried again after a backoff."""


class JobFailed(VaultdropError):
    """Permanent for this job: retrying cannot help; the file goes to failed_dir.

    `changes` are facts the failure itself established, committed with the failed state."""

    def __init__(self, message: str, changes: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.changes = dict(changes or {})


class ConfigError(VaultdropError):
    """The daemon cannot work as configured: stop with exit status 78, do not restart."""

    exit_status = CONFIG_EXIT_STATUS


class Busy(VaultdropError):
    """Another vaultdrop holds the state_dir's lock: nothing is wrong with the configuration,
    so not 78; 75, so systemd tries again and takes over once the other one stopped."""

    exit_status = TEMPFAIL_EXIT_STATUS


class OperatorError(VaultdropError):
    """A command cannot do what it was asked (a missing file, an unknown job, a busy port):
    one line saying so, exit status 1."""
