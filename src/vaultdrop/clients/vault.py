"""SesameVault client: upload keys, the signed streaming upload, progress and delete.

This is the edge for the vault: httpx and lxml exceptions and the vendor's error codes
are translated here, once, into vaultdrop's error tree.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from ..config import VaultSettings
from ..errors import ClockSkew, ConfigError, JobFailed, ProtocolError, RetryLater, Unavailable
from .signing import vault_signature
from .throttle import Throttle
from .transport import Transport
from .upload_body import FileBody, Multipart, WholeBody, is_small, open_file
from .xmlsafe import MAX_XML_BYTES, child_text, parse_xml

UPLOAD_PATH = "/upload/new/file"
UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)
GATEWAY_DOWN = (502, 503, 504)
MAX_CONNECTIONS = 64  # uploads sending at once (the sending and hashing threads)
# Above every request that can be in flight (concurrency <= 64, the small lane, a stale
# delete, the outage probe): waiting for a free connection would time out as an outage.
CONNECTIONS = 100


class UnknownKey(RetryLater):
    """404 unknown_key: the vault does not know this upload key (expired or deleted)."""


class NotFound(ProtocolError):
    """404 without the vault's own error code (a proxy, a path it does not route): never a
    reason to drop an upload key, but for a delete it means there is no such video."""


class KeyUsed(RetryLater):
    """409 key_used: this key's upload already completed; progress will show the video."""


@dataclass(frozen=True)
class Progress:
    received: int
    size: int
    video_id: str | None


class VaultClient:
    """One httpx connection pool to the vault, shared by every upload."""

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        *,
        timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        upload_transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`transport` and `upload_transport` replace the network (a test's): the first for
        the loop's requests, the second for the bodies streamed from a sending thread."""
        self._base = base_url.rstrip("/")
        self._user = user
        self._password = password
        self._clock = clock
        self._timeout = timeout
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=16)
        options: dict[str, Any] = {
            "timeout": httpx.Timeout(timeout),
            # identity: bodies are read raw and bounded, so a compressed one (or a bomb) is never inflated
            "headers": {"Accept-Encoding": "identity"},
            "follow_redirects": False,
        }
        self._http = httpx.AsyncClient(transport=transport or Transport(limits=limits), **options)
        self._upload_http = httpx.Client(
            transport=upload_transport or httpx.HTTPTransport(retries=2, limits=limits), **options)
        self._senders = ThreadPoolExecutor(MAX_CONNECTIONS, thread_name_prefix="vault-send")
        self._hashers = ThreadPoolExecutor(MAX_CONNECTIONS, thread_name_prefix="vault-hash")

    @classmethod
    def from_settings(cls, vault: VaultSettings, *, clock: Callable[[], float] = time.time,
                      transport: httpx.AsyncBaseTransport | None = None,
                      upload_transport: httpx.BaseTransport | None = None) -> VaultClient:
        return cls(vault.base_url, vault.user, vault.password.get_secret_value(), timeout=vault.timeout,
                   clock=clock, transport=transport, upload_transport=upload_transport)

    async def aclose(self) -> None:
        await self._http.aclose()
        self._upload_http.close()
        self._senders.shutdown(wait=False)
        self._hashers.shutdown(wait=False)

    def _signature(self, path: str) -> tuple[str, str]:
        timestamp = f"{self._clock():.3f}"
        return vault_signature(self._user, self._password, timestamp, path), timestamp

    async def _get(self, path: str, params: dict[str, str] | None = None) -> bytes:
        signature, timestamp = self._signature(path)
        headers = {"Authorization": signature, "x-sesame-date": timestamp}
        try:
            async with self._http.stream("GET", self._base + path, params=params, headers=headers) as response:
                body = await _read_bounded(response)
        except httpx.TransportError as exc:
            raise _transport_error(exc, f"GET {path}") from None
        _raise_for_status(response.status_code, body, path)
        return body

    async def new_upload_key(self) -> str:
        root = parse_xml(await self._get("/upload/new_upload_key.xml"), "results")
        key = child_text(root, "upload_key")
        if not key:
            raise ProtocolError("new_upload_key.xml carried no upload_key")
        return key

    async def progress(self, key: str) -> Progress:
        root = parse_xml(await self._get("/upload/progress.xml", {"upload_key": key}), "results")
        try:
            received = int(child_text(root, "status/received") or "")
            size = int(child_text(root, "status/size") or "")
        except ValueError:
            raise ProtocolError("progress.xml without numeric status/received and status/size") from None
        return Progress(received=received, size=size, video_id=child_text(root, "video_id") or None)

    async def delete(self, video_id: str) -> bool:
        """Delete a video: True when it was deleted, False when the vault did not have it.

        An answer of `<deleted>false</deleted>` is neither: the video may still be there, so
        it is a reason to try again, never a success.
        """
        try:
            body = await self._get(f"/video/delete/{quote(video_id, safe='')}.xml")
        except (UnknownKey, NotFound):
            return False
        if child_text(parse_xml(body, "video"), "deleted") != "true":
            raise RetryLater(f"the vault did not delete video {video_id}")
        return True

    async def upload(
        self,
        key: str,
        path: Path,
        *,
        size: int,
        on_progress: Callable[[int], None],
        throttle: Throttle | None = None,
    ) -> str:
        """Send `size` bytes of `path` as the `upload_file` part; return their sha256.

        A small body is sent from the loop, a large one streamed from a sending thread
        (upload_body.py says why). `on_progress` runs on the loop, in order, before this
        returns or raises.
        """
        signature, timestamp = self._signature(UPLOAD_PATH)
        form = Multipart.for_file(path.name)
        handle = open_file(path)
        headers = form.headers(size)
        params = {"upload_key": key, "_sig": signature, "_date": timestamp}
        if is_small(size):
            whole = await WholeBody.read(handle, size, on_progress, throttle)
            try:
                # aiohttp has no write timeout: a vault that stops reading would hold this forever
                async with asyncio.timeout(2 * self._timeout):
                    async with self._http.stream("POST", self._base + UPLOAD_PATH, params=params, headers=headers,
                                                 content=whole.content(form)) as response:
                        status, answer = response.status_code, await _read_bounded(response)
            except TimeoutError:
                stalled = httpx.WriteTimeout(f"not sent and answered within {2 * self._timeout:g} s")
                raise _transport_error(stalled, "upload interrupted") from None
            except httpx.TransportError as exc:
                raise _transport_error(exc, "upload interrupted") from None
            _raise_for_status(status, answer, UPLOAD_PATH)
            return whole.hexdigest()
        body = FileBody(handle, size, form, self._hashers, asyncio.get_running_loop(), on_progress, throttle)

        def send() -> tuple[int, bytes]:
            with handle:
                try:
                    with self._upload_http.stream("POST", self._base + UPLOAD_PATH, params=params, headers=headers,
                                                  content=body) as response:
                        return response.status_code, _read_bounded_sync(response)
                except httpx.TransportError as exc:
                    raise _transport_error(exc, "upload interrupted") from None

        sending = self._senders.submit(send)
        try:
            status, answer = await asyncio.wrap_future(sending)
        except asyncio.CancelledError:
            body.abandon()  # a running send stops at its next chunk and closes the file itself
            if sending.cancel():  # it never started: nothing else will close the file
                handle.close()
            raise
        _raise_for_status(status, answer, UPLOAD_PATH)
        return body.hexdigest()


class _Bounded:
    """At most MAX_XML_BYTES of a response: a huge or endless body is refused, never buffered."""

    def __init__(self, response: httpx.Response) -> None:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > MAX_XML_BYTES:
            raise ProtocolError(f"response of {declared} bytes refused (limit {MAX_XML_BYTES})")
        self.body = bytearray()

    def add(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) > MAX_XML_BYTES:
            raise ProtocolError(f"response over {MAX_XML_BYTES} bytes refused")


async def _read_bounded(response: httpx.Response) -> bytes:
    bounded = _Bounded(response)
    async for chunk in response.aiter_raw():
        bounded.add(chunk)
    return bytes(bounded.body)


def _read_bounded_sync(response: httpx.Response) -> bytes:
    bounded = _Bounded(response)
    for chunk in response.iter_raw():
        bounded.add(chunk)
    return bytes(bounded.body)


def _raise_for_status(status: int, body: bytes, path: str) -> None:
    """Translate the vendor's error table (API.md section 1) into what to do next."""
    if status == 200:
        return
    code = message = None
    try:
        error = parse_xml(body, "error")
        code, message = child_text(error, "code"), child_text(error, "message")
    except ProtocolError:
        pass
    what = f"{path}: HTTP {status} {code or 'no error code'}: {message or ''}".rstrip(": ")
    if status == 401 or code == "expired":
        raise ClockSkew(f"{what} (is this machine's clock right?)")
    if status == 403 or code == "bad_signature":
        raise ConfigError(f"the vault rejected our signature ({what}): check vault.user and vault.password")
    if status == 404 and code in ("unknown_key", "not_found"):
        raise UnknownKey(what)
    if status == 404:
        raise NotFound(what)
    if status == 409:
        raise KeyUsed(what)
    if status in (400, 413):
        raise JobFailed(what)
    if status in GATEWAY_DOWN:
        raise Unavailable(what)
    raise RetryLater(what)


def _transport_error(exc: httpx.TransportError, what: str) -> RetryLater:
    """No connection at all is an outage; a connection that broke may be this file's doing."""
    kind = Unavailable if isinstance(exc, UNREACHABLE) else RetryLater
    return kind(f"{what}: {type(exc).__name__}: {exc}")
