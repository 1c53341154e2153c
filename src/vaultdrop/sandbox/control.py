"""The ScaleEngine control API at POST /stable/: verification, envelope, commands.

Verification follows API.md to the letter: decode keeping key order, drop `signature`,
re-encode PHP-style with the daemon's own `php_json_encode`, compare HMACs in constant
time. A client that signs anything but the bytes it sends is caught here.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from aiohttp import web

from ..clients.signing import control_signature
from .requestctx import note
from .s3 import S3Queue
from .settings import SandboxSettings

CONTROL_PATH = "/stable/"
TIMESTAMP_WINDOW_SECONDS = 300
ACLS = ("private", "public-read")
UPLOAD_FIELDS = ("path", "destination_path", "metadata", "bucket", "callback")


class ControlFailure(Exception):
    """Ends a control call with a failure envelope carrying vendor `code`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def envelope(started: float, status: str, message: str, data: Any, code: str | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message, "status": status, "handle_time": round(time.monotonic() - started, 4)}
    if code is not None:
        body["code"] = code
    body["data"] = data
    return web.json_response(body)


def failure_response(started: float, code: str, message: str) -> web.Response:
    return envelope(started, "failure", message, 0, code)


def _reject_float(text: str) -> Any:
    raise ValueError(f"number {text} is not an integer")


def decode_request(text: str) -> dict[str, Any]:
    """The request object in wire order; floats and NaN are refused (they cannot be signed)."""
    try:
        value = json.loads(text, parse_float=_reject_float, parse_constant=_reject_float)
    except ValueError as exc:
        raise ControlFailure("0006", f"json is not a valid request: {exc}") from None
    if not isinstance(value, dict):
        raise ControlFailure("0006", "json must be an object")
    return value


async def peek_command(request: web.Request) -> str | None:
    """The command named in the body, for fault matching; None when unreadable."""
    try:
        text = (await request.post()).get("json")
        value = json.loads(text) if isinstance(text, str) else None
    except (ValueError, web.HTTPException):  # the handler meets the same body and answers it
        return None
    command = value.get("command") if isinstance(value, dict) else None
    return command if isinstance(command, str) else None


def _int_field(req: dict[str, Any], name: str, default: int, minimum: int) -> int:
    value = req.get(name, default)
    if type(value) is not int or value < minimum:
        raise ControlFailure("0006", f"{name} must be an integer >= {minimum}")
    return value


class ControlApi:
    def __init__(self, settings: SandboxSettings, queue: S3Queue) -> None:
        self._settings = settings
        self._queue = queue

    def routes(self) -> list[web.RouteDef]:
        return [web.post(CONTROL_PATH, self.handle, name="control")]

    async def handle(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        try:
            text = (await request.post()).get("json")
            if not isinstance(text, str):
                raise ControlFailure("0006", "form field json missing")
            req = decode_request(text)
            self._verify(req)
            message, data = self._dispatch(request, req)
        except ControlFailure as failure:
            note(request, code=failure.code)
            return failure_response(started, failure.code, failure.message)
        return envelope(started, "success", message, data)

    def _verify(self, req: dict[str, Any]) -> None:
        settings = self._settings
        missing = [f for f in ("command", "api_key", "timestamp", "signature") if f not in req]
        if "cdn" not in req and "cdn_id" not in req:
            missing.append("cdn")
        if missing:
            raise ControlFailure("0006", f"required fields missing: {', '.join(missing)}")
        cdn = req.get("cdn", req.get("cdn_id"))
        key_ok = isinstance(req["api_key"], str) and hmac.compare_digest(req["api_key"].encode(), settings.api_key.encode())
        if not key_ok or type(cdn) not in (int, str) or str(cdn) != str(settings.cdn):
            raise ControlFailure("0001", "CDN authentication failed")
        if type(req["timestamp"]) is not int:
            raise ControlFailure("0006", "timestamp must be an integer")
        if abs(time.time() - req["timestamp"]) > TIMESTAMP_WINDOW_SECONDS:
            raise ControlFailure("0002", "timestamp outside the valid range")
        signature = req["signature"]
        expected = control_signature(settings.api_secret, req)
        if not isinstance(signature, str) or not hmac.compare_digest(expected.encode(), signature.encode()):
            raise ControlFailure("0003", "signature check failed")

    def _dispatch(self, request: web.Request, req: dict[str, Any]) -> tuple[str, Any]:
        command = req["command"]
        if command == "aws.upload":
            return "Queued file for upload", self._aws_upload(request, req)
        if command == "aws.status":
            limit = _int_field(req, "limit", 25, 1)
            offset = _int_field(req, "offset", 0, 0)
            return "Upload requests", self._queue.status(limit, offset)
        if command == "files.getstorage":
            return "Storage prefix", {"storage": self._settings.storage}
        raise ControlFailure("0000", f"unknown command {command!r}")

    def _aws_upload(self, request: web.Request, req: dict[str, Any]) -> int:
        missing = [f for f in UPLOAD_FIELDS if f not in req]
        if missing:
            raise ControlFailure("0006", f"required fields missing: {', '.join(missing)}")
        strings = ("path", "destination_path", "bucket", "callback")
        if not all(isinstance(req[f], str) for f in strings) or not isinstance(req["metadata"], (dict, list)):
            raise ControlFailure("0006", "path, destination_path, bucket, callback must be strings, metadata a map")
        acl = req.get("acl", "private")
        if acl not in ACLS:
            raise ControlFailure("0006", f"acl must be one of {', '.join(ACLS)}")
        request_id = self._queue.submit(
            path=req["path"], destination_path=req["destination_path"], bucket=req["bucket"],
            metadata=req["metadata"], acl=acl, callback=req["callback"],
        )
        note(request, request_id=request_id)
        return request_id
