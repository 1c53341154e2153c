"""Outages: one warning when a service stops answering, one when it is back, and a cheap
probe in between, so every job waiting on it resumes within seconds of its return.

Jobs that meet an outage are parked (costing no attempt) with `waiting_for` set; while
the service is down only the probe talks to it; its first answer wakes them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from ..errors import Unavailable
from ..logs import log

PROBE_FIRST = 1.0
PROBE_MAX = 5.0

Probe = Callable[[], Awaitable[object]]


class Outages:
    def __init__(self, probes: dict[str, tuple[str, Probe]], on_back: Callable[[str], None],
                 clock: Callable[[], float],
                 on_verdict: Callable[[str, bool], None] = lambda service, up: None) -> None:
        """`probes` maps a service name to (its URL, a call that raises Unavailable while it is down);
        `on_verdict(service, up)` hears every answer and every outage (the up/down gauges)."""
        self._probes = probes
        self._on_back = on_back
        self._on_verdict = on_verdict
        self._clock = clock
        self._down: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.failed_probes = 0

    def is_down(self, service: str) -> bool:
        return service in self._down

    @property
    def streak(self) -> int:
        """Failed probes in the current outage: a waiting job's safety-net delay grows with it."""
        return self.failed_probes if self._down else 0

    def down(self, service: str, error: Unavailable) -> None:
        self._on_verdict(service, False)
        if service in self._down:
            return
        self._down[service] = self._clock()
        self.failed_probes = 0
        url = self._probes[service][0] if service in self._probes else ""
        log(logging.WARNING, f"{service} at {urlsplit(url).netloc or url} is not answering: {error}; "
            "jobs wait and resume as soon as it answers", service=service)
        if service in self._probes:
            self._tasks[service] = asyncio.create_task(self._probe(service), name=f"probe-{service}")

    def up(self, service: str) -> None:
        self._on_verdict(service, True)
        since = self._down.pop(service, None)
        if since is None:
            return
        task = self._tasks.pop(service, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        log(logging.WARNING, f"{service} is answering again after {self._clock() - since:.0f} s of outage",
            service=service)
        self._on_back(service)

    async def _probe(self, service: str) -> None:
        delay = PROBE_FIRST
        while service in self._down:
            await asyncio.sleep(delay)
            try:
                await self._probes[service][1]()
            except Unavailable:
                self.failed_probes += 1
                delay = min(delay * 2, PROBE_MAX)
                continue
            except Exception:  # noqa: BLE001,S110 - any other answer proves the service is there
                pass
            self.up(service)

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
