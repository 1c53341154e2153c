"""systemd notifications (sd_notify): a no-op outside systemd, where NOTIFY_SOCKET is unset."""

from __future__ import annotations

import os
import time

from systemd import daemon as sd_daemon


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        watchdog_for_us = usec.isdigit() and (not pid or pid == str(os.getpid()))
        # Ping at half the deadline, as sd_watchdog_enabled(3) recommends.
        self.watchdog_interval: float | None = int(usec) / 2e6 if watchdog_for_us else None
        self._last_status = ""

    def _send(self, *lines: str) -> None:
        if self.enabled:
            sd_daemon.notify("\n".join(lines))

    def ready(self, status: str) -> None:
        self._send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        self._send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str) -> None:
        self._send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")
