"""The one exception tree. Each class says what the caller must do next.

Foreign exceptions (httpx, lxml, OSError, sqlite3) are translated into these once, at
the edge where they occur, so the pipeline only has to decide between three answers.
"""

from __future__ import annotations

CONFIG_EXIT_STATUS = 78  # EX_CONFIG: systemd's RestartPreventExitStatus= keys on it


class VaultdropError(Exception):
    """Base of everything vaultdrop raises on purpose."""


class RetryLater(VaultdropError):
    """Transient: keep the job, try again after a backoff (bounded by max_attempts)."""


class Unavailable(RetryLater):
    """The service is down or unreachable: an outage is waited out with growing backoff and
    costs the job no attempt, so a long outage never fails files."""


class ClockSkew(RetryLater):
    """The server refused our timestamp: re-sign with a fresh time, and warn about NTP."""


class ProtocolError(RetryLater):
    """The server answered something we refuse to trust (garbage, hostile, oversized)."""


class JobFailed(VaultdropError):
    """Permanent for this job: retrying cannot help; the file goes to failed_dir."""


class ConfigError(VaultdropError):
    """The daemon cannot work as configured: stop with exit status 78, do not restart."""

    exit_status = CONFIG_EXIT_STATUS
