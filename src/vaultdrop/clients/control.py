"""ScaleEngine control API client: the signed JSON envelope and its vendor error codes.

The edge for the control API: httpx errors, malformed JSON and the vendor's codes are
translated here, once, into vaultdrop's error tree.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..config import ScaleEngineSettings
from ..errors import ClockSkew, ConfigError, JobFailed, ProtocolError, RetryLater, Unavailable
from .signing import sign_control_request
from .transport import Transport
from .vault import UNREACHABLE

MAX_JSON_BYTES = 1024 * 1024


SERVICE = "scaleengine"


class NoAnswer(Unavailable):
    """The call may or may not have reached the server: its effect is unknown."""

    def __init__(self, message: str) -> None:
        super().__init__(message, SERVICE)


class ControlClient:
    def __init__(self, api_url: str, api_key: str, api_secret: str, cdn: int, *,
                 timeout: float = 60.0, clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._url = api_url
        self._key = api_key
        self._secret = api_secret
        self._cdn = cdn
        self._clock = clock
        # identity: bodies are read raw and bounded, so a compressed one (or a bomb) is never inflated
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout), headers={"Accept-Encoding": "identity"},
                                       transport=transport or Transport())

    @classmethod
    def from_settings(cls, engine: ScaleEngineSettings, *, clock: Callable[[], float] = time.time,
                      transport: httpx.AsyncBaseTransport | None = None) -> ControlClient:
        return cls(engine.api_url, engine.api_key, engine.api_secret.get_secret_value(), engine.cdn,
                   timeout=engine.timeout, clock=clock, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, command: str, **fields: Any) -> Any:
        """One signed call with a fresh timestamp; returns `data` on success."""
        request = {"command": command, "api_key": self._key, "timestamp": int(self._clock()),
                   "cdn": self._cdn, **fields}
        try:
            async with self._http.stream("POST", self._url,
                                         data={"json": sign_control_request(self._secret, request)}) as response:
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > MAX_JSON_BYTES:
                        raise ProtocolError(f"{command}: response over {MAX_JSON_BYTES} bytes refused")
        except httpx.TransportError as exc:
            what = f"{command}: {type(exc).__name__}: {exc}"
            raise (Unavailable(what, SERVICE) if isinstance(exc, UNREACHABLE) else NoAnswer(what)) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise NoAnswer(f"{command}: HTTP {response.status_code}")
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
            raise ProtocolError(f"{command}: HTTP {response.status_code}, response is not JSON") from None
        if not isinstance(answer, dict) or answer.get("status") not in ("success", "failure"):
            raise ProtocolError(f"{command}: response without a success/failure status")
        if answer["status"] == "success":
            return answer.get("data")
        _raise_for_code(command, str(answer.get("code", "")), str(answer.get("message", ""))[:200])

    async def aws_upload(self, *, path: str, destination_path: str, metadata: dict[str, str], acl: str,
                         bucket: str, callback: str) -> int:
        data = await self.call("aws.upload", path=path, destination_path=destination_path,
                               metadata=metadata, acl=acl, bucket=bucket, callback=callback)
        if isinstance(data, bool) or not isinstance(data, int) or data <= 0:
            raise ProtocolError(f"aws.upload returned {data!r}, not a request id")
        return data

    async def aws_status(self, limit: int, offset: int) -> list[dict[str, Any]]:
        data = await self.call("aws.status", limit=limit, offset=offset)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ProtocolError("aws.status did not return a list of records")
        return data

    async def get_storage(self) -> str:
        data = await self.call("files.getstorage")
        storage = data.get("storage") if isinstance(data, dict) else None
        if not isinstance(storage, str) or not storage or "/" in storage:
            raise ProtocolError(f"files.getstorage returned {data!r}")
        return storage


def _raise_for_code(command: str, code: str, message: str) -> None:
    """The vendor's code table (API.md section 2), each mapped to what to do next."""
    what = f"{command}: code {code or '?'}: {message}"
    if code == "0001":
        raise ConfigError(f"{what}: check scaleengine.api_key and scaleengine.cdn")
    if code == "0003":
        raise ConfigError(f"{what}: check scaleengine.api_secret")
    if code == "0005":
        raise ConfigError(f"{what}: the account behind scaleengine.api_key may not do this")
    if code == "0002":
        raise ClockSkew(f"{what} (is this machine's clock right?)")
    if code in ("0000", "0006"):
        raise JobFailed(what)
    raise RetryLater(what)
