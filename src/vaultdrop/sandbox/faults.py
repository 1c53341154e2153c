"""Injected faults: scripted misbehaviour for the next N matching calls.

Tests (and `--fault`) queue faults so the daemon can be driven through every failure
the real services could show, deterministically. A fault is validated when it is
queued, so a typo in a test fails loudly instead of silently never firing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

VAULT_ENDPOINTS = frozenset({"new_key", "upload", "progress", "delete"})
CONTROL_COMMANDS = frozenset({"aws.upload", "aws.status", "files.getstorage"})
CONTROL_ENDPOINTS = frozenset({"control"}) | CONTROL_COMMANDS
# used_key: new_key hands out the key of the newest completed upload (a caching proxy, a
# vault bug), so the client's POST meets 409 on a key it never used.
ACTIONS = frozenset({"status", "vendor_code", "drop_after", "stall", "late_video_id", "body", "used_key"})
_UPLOAD_ONLY = frozenset({"drop_after", "late_video_id"})


class FaultSpecError(ValueError):
    """A fault description that cannot fire as written."""


@dataclass
class Fault:
    endpoint: str
    action: str
    count: int = 1
    status: int = 200
    code: str | None = None
    bytes: int = 0
    seconds: float = 0.0
    body: str = ""
    content_type: str = "application/xml"

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise FaultSpecError(message)


def parse_fault(spec: Any) -> Fault:
    """Build a Fault from its JSON form, refusing anything that could not fire."""
    _require(isinstance(spec, dict), "a fault is a JSON object")
    known = {"endpoint", "action", "count", "status", "code", "bytes", "seconds", "body", "content_type"}
    unknown = set(spec) - known
    _require(not unknown, f"unknown fault fields: {sorted(unknown)}")
    endpoint, action = spec.get("endpoint"), spec.get("action")
    _require(endpoint in VAULT_ENDPOINTS | CONTROL_ENDPOINTS, f"unknown endpoint {endpoint!r}")
    _require(action in ACTIONS, f"unknown action {action!r}")
    count = spec.get("count", 1)
    _require(type(count) is int and count >= 1, "count must be an integer >= 1")
    fault = Fault(endpoint=endpoint, action=action, count=count)

    if action == "status":
        status, code = spec.get("status"), spec.get("code")
        _require(type(status) is int and 100 <= status <= 599, "status needs an HTTP `status`")
        _require(isinstance(code, str) and code != "", "status needs a vault error `code`")
        fault.status, fault.code = status, code
    elif action == "vendor_code":
        code = spec.get("code")
        _require(endpoint in CONTROL_ENDPOINTS, "vendor_code only applies to the control API")
        _require(isinstance(code, str) and len(code) == 4 and code.isdigit(), "vendor_code needs a 4-digit `code`")
        fault.code = code
    elif action == "drop_after":
        _require(type(spec.get("bytes")) is int and spec["bytes"] >= 0, "drop_after needs `bytes` >= 0")
        fault.bytes = spec["bytes"]
    elif action in ("stall", "late_video_id"):
        seconds = spec.get("seconds")
        _require(type(seconds) in (int, float) and seconds >= 0, f"{action} needs `seconds` >= 0")
        fault.seconds = float(seconds)
    elif action == "body":
        _require(isinstance(spec.get("body"), str), "body needs a string `body`")
        status = spec.get("status", 200)
        content_type = spec.get("content_type", "application/xml")
        _require(type(status) is int and 100 <= status <= 599, "`status` must be an HTTP status")
        _require(isinstance(content_type, str), "`content_type` must be a string")
        fault.body, fault.status, fault.content_type = spec["body"], status, content_type
    _require(action not in _UPLOAD_ONLY or endpoint == "upload", f"{action} only applies to upload")
    _require(action != "used_key" or endpoint == "new_key", "used_key only applies to new_key")
    return fault


class FaultBook:
    """Queued faults in the order they were added; each fires `count` times, then is gone."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def active(self) -> list[dict[str, Any]]:
        return [fault.describe() for fault in self._faults]

    def take(self, names: list[str]) -> Fault | None:
        """The first queued fault for any of `names`, used up once (one fault per call)."""
        for fault in self._faults:
            if fault.endpoint in names:
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                return fault
        return None
