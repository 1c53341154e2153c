"""The sandbox's aiohttp application: both APIs, the admin window, and the call pipeline.

Every API call passes one middleware that opens its access-log record, picks and applies
the injected fault for it, and turns vault errors into the API.md error document, so the
handlers only implement the happy path and the contract's own refusals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .accesslog import AccessLog, new_record
from .admin import ADMIN_PREFIX, AdminApi
from .control import ControlApi, failure_response, peek_command
from .faults import Fault, FaultBook
from .requestctx import FAULT, RECORD, note
from .s3 import S3Queue
from .settings import SandboxSettings
from .vault import ConnectionDropped, VaultApi
from .vaultstore import Superseded, VaultStore
from .vaultxml import VaultError, error_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SHUTDOWN_TIMEOUT_SECONDS = 2.0


def _code_for_status(status: int) -> str:
    if status == 404:
        return "not_found"
    if status == 413:
        return "too_large"
    return "invalid_request" if status < 500 else "server_error"


async def _pick_fault(request: web.Request, faults: FaultBook, endpoint: str | None) -> Fault | None:
    if endpoint is None:
        return None
    names = [endpoint]
    if endpoint == "control":
        command = await peek_command(request)
        note(request, command=command)
        if command is not None:
            names.insert(0, command)
    fault = faults.take(names)
    if fault is not None:
        request[FAULT] = fault
        note(request, fault=fault.action)
    return fault


async def _answer(request: web.Request, handler: Handler, faults: FaultBook, endpoint: str | None) -> web.StreamResponse:
    started = time.monotonic()
    fault = await _pick_fault(request, faults, endpoint)
    if fault is not None and fault.action == "stall":
        await asyncio.sleep(fault.seconds)
    elif fault is not None and fault.action == "status":
        note(request, code=fault.code)
        return error_response(fault.status, fault.code or "", "injected fault")
    elif fault is not None and fault.action == "vendor_code":
        note(request, code=fault.code)
        return failure_response(started, fault.code or "", "injected fault")
    try:
        response = await handler(request)
    except VaultError as exc:
        note(request, code=exc.code)
        response = error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:  # routing refusals: unknown path, wrong method, too big
        if exc.status < 400:
            raise
        code = _code_for_status(exc.status)
        note(request, code=code)
        response = error_response(exc.status, code, exc.reason)
    if fault is not None and fault.action == "body":
        response = web.Response(body=fault.body.encode(), status=fault.status, headers={"Content-Type": fault.content_type})
    return response


def call_pipeline(faults: FaultBook, access_log: AccessLog) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        endpoint = request.match_info.route.name
        record = new_record(request.method, request.path, dict(request.query), endpoint)
        request[RECORD] = record
        access_log.open(record)
        try:
            response = await _answer(request, handler, faults, endpoint)
            record["status"] = response.status
            return response
        except (ConnectionDropped, Superseded, ConnectionError) as exc:
            # No answer can reach the client any more; the record says why.
            reason = {ConnectionDropped: "dropped", Superseded: "superseded"}.get(type(exc), "disconnected")
            record["code"] = reason
            return web.Response(status=500)
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.path)
            record.update(status=500, code="server_error")
            return error_response(500, "server_error", "unexpected sandbox error")
        finally:
            record["bytes_in"] = request.content.total_bytes
            access_log.close(record)

    return middleware


def build_app(settings: SandboxSettings, faults: FaultBook) -> web.Application:
    settings.root.mkdir(parents=True, exist_ok=True)
    store = VaultStore(settings)
    queue = S3Queue(settings)
    access_log = AccessLog(settings.root / "access.log")
    app = web.Application(middlewares=[call_pipeline(faults, access_log)])
    app.add_routes(VaultApi(settings, store).routes())
    app.add_routes(ControlApi(settings, queue).routes())
    app.add_routes(AdminApi(faults, access_log, store, queue).routes())

    async def start_queue(_: web.Application) -> None:
        queue.start()

    async def stop_queue(_: web.Application) -> None:
        await queue.close()

    app.on_startup.append(start_queue)
    app.on_cleanup.append(stop_queue)
    return app


def _write_ready_file(path: Path, url: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(url, encoding="utf-8")
    os.replace(tmp, path)


async def serve(settings: SandboxSettings, faults: FaultBook, ready_file: Path | None) -> None:
    """Listen until SIGTERM/SIGINT; announce the base URL in `ready_file` once listening."""
    runner = web.AppRunner(build_app(settings, faults), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        port = runner.addresses[0][1]
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        url = f"http://{host}:{port}"
        log.info("sandbox listening on %s, data in %s", url, settings.root)
        if ready_file is not None:
            _write_ready_file(ready_file, url)
        await stop.wait()
    finally:
        await runner.cleanup()
