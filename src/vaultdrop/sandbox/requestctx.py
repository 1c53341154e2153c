"""Typed per-request slots shared by the middleware and the API handlers.

The middleware picks the fault for a call and opens its log record; the handlers fill
in what only they know (upload key, request id, outcome code) and apply the faults
that act inside an upload.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .faults import Fault

FAULT = web.RequestKey("fault", Fault)
RECORD = web.RequestKey("record", dict[str, Any])


def fault_of(request: web.Request, action: str) -> Fault | None:
    """The fault chosen for this call, if it is of kind `action`."""
    fault = request.get(FAULT)
    return fault if fault is not None and fault.action == action else None


def note(request: web.Request, **fields: Any) -> None:
    """Add facts to this call's access-log record."""
    record = request.get(RECORD)
    if record is not None:
        record.update(fields)
