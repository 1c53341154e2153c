"""Unauthenticated /_sandbox/ endpoints: the test harness's window into the sandbox.

Loopback-only test tooling: queue and clear faults, read the access log, list what the
vault stored and what reached "S3". Admin calls are never written to the access log.
"""

from __future__ import annotations

from aiohttp import web

from .accesslog import AccessLog
from .faults import FaultBook, parse_fault
from .s3 import S3Queue
from .vaultstore import VaultStore

ADMIN_PREFIX = "/_sandbox/"


class AdminApi:
    def __init__(self, faults: FaultBook, log: AccessLog, store: VaultStore, queue: S3Queue) -> None:
        self._faults = faults
        self._log = log
        self._store = store
        self._queue = queue

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(ADMIN_PREFIX + "faults", self.add_fault),
            web.delete(ADMIN_PREFIX + "faults", self.clear_faults),
            web.get(ADMIN_PREFIX + "faults", self.list_faults),
            web.get(ADMIN_PREFIX + "log", self.log),
            web.get(ADMIN_PREFIX + "videos", self.videos),
            web.get(ADMIN_PREFIX + "s3", self.s3),
        ]

    async def add_fault(self, request: web.Request) -> web.Response:
        try:
            fault = parse_fault(await request.json())
        except ValueError as exc:  # bad JSON, or a FaultSpecError: a fault that cannot fire
            return web.json_response({"error": str(exc)}, status=400)
        self._faults.add(fault)
        return web.json_response(fault.describe(), status=201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        self._faults.clear()
        return web.json_response([])

    async def list_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._faults.active())

    async def log(self, request: web.Request) -> web.Response:
        return web.json_response(self._log.records())

    async def videos(self, request: web.Request) -> web.Response:
        return web.json_response(self._store.videos())

    async def s3(self, request: web.Request) -> web.Response:
        return web.json_response(self._queue.objects())
