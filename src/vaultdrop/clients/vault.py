"""SesameVault client: upload keys, the signed streaming upload, progress and delete.

This is the edge for the vault: httpx and lxml exceptions and the vendor's error codes
are translated here, once, into vaultdrop's error tree.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from ..config import VaultSettings
from ..errors import ClockSkew, ConfigError, JobFailed, ProtocolError, RetryLater, Unavailable
from .signing import vault_signature
from .throttle import Throttle
from .transport import Transport
from .xmlsafe import MAX_XML_BYTES, child_text, parse_xml

UPLOAD_PATH = "/upload/new/file"
UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)
GATEWAY_DOWN = (502, 503, 504)
CHUNK_SIZE = 1024 * 1024
SMALL_BODY = 256 * 1024  # up to this size a file is read whole and sent from the loop
HASH_AHEAD = 2  # chunks queued for an upload's hashing task
MAX_CONNECTIONS = 64  # uploads sending at once (the sending and hashing threads)
# Above every request that can be in flight (concurrency <= 64, the small lane, a stale
# delete, the outage probe): waiting for a free connection would time out as an outage.
CONNECTIONS = 100
LOOP_EXTENSION = "vaultdrop.loop"  # request extension: the loop an _OnLoop transport sends on


class UnknownKey(RetryLater):
    """404 unknown_key: the vault does not know this upload key (expired or deleted)."""


class NotFound(ProtocolError):
    """404 without the vault's own error code (a proxy, a path it does not route): never a
    reason to drop an upload key, but for a delete it means there is no such video."""


class KeyUsed(RetryLater):
    """409 key_used: this key's upload already completed; progress will show the video."""


class FileChanged(RetryLater):
    """The local file changed while it was being sent; the upload cannot be trusted."""


# Control characters (C0, DEL, C1), a quote and a backslash become "_" in the multipart
# filename: a header line may carry none of them (aiohttp refuses an ESC there).
_UNSAFE_IN_FILENAME = {code: "_" for code in (*range(0x20), *range(0x7F, 0xA0), ord("\\"), ord('"'))}


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
    ) -> None:
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
            transport=_OnLoop(transport) if transport is not None else httpx.HTTPTransport(retries=2, limits=limits),
            **options)
        self._senders = ThreadPoolExecutor(MAX_CONNECTIONS, thread_name_prefix="vault-send")
        self._hashers = ThreadPoolExecutor(MAX_CONNECTIONS, thread_name_prefix="vault-hash")

    @classmethod
    def from_settings(cls, vault: VaultSettings, *, clock: Callable[[], float] = time.time,
                      transport: httpx.AsyncBaseTransport | None = None) -> VaultClient:
        return cls(vault.base_url, vault.user, vault.password.get_secret_value(), timeout=vault.timeout,
                   clock=clock, transport=transport)

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

        A large body is read and sent from a worker thread through a blocking client and
        hashed on another (hashlib releases the GIL): per chunk one read, one hash, one
        blocking send, where the event loop's path paid an async generator, a thread
        hand-off and the transport's buffer copies (issue 14). Memory stays constant:
        a few chunks per upload. A small body is cheaper read whole and sent from the
        loop than handed to two threads. `on_progress` runs on the loop, in order, before
        this returns or raises.
        """
        signature, timestamp = self._signature(UPLOAD_PATH)
        boundary = uuid.uuid4().hex
        filename = path.name.translate(_UNSAFE_IN_FILENAME)
        preamble = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="upload_file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode("utf-8", "surrogateescape")
        epilogue = f"\r\n--{boundary}--\r\n".encode()
        try:
            handle = path.open("rb", buffering=0)
        except OSError as exc:
            raise FileChanged(f"cannot open {path}: {exc.strerror}") from None
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(preamble) + size + len(epilogue)),
        }
        params = {"upload_key": key, "_sig": signature, "_date": timestamp}
        if size <= SMALL_BODY:
            with handle:
                data = handle.read(size)
            if len(data) < size:
                raise FileChanged(f"file shrank to {len(data)} bytes while uploading (expected {size})")
            if throttle is not None:
                await asyncio.sleep(throttle.delay_for(size))
            on_progress(size)
            try:
                # aiohttp has no write timeout: a vault that stops reading would hold this forever
                async with asyncio.timeout(2 * self._timeout):
                    async with self._http.stream("POST", self._base + UPLOAD_PATH, params=params, headers=headers,
                                                 content=preamble + data + epilogue) as response:
                        status, answer = response.status_code, await _read_bounded(response)
            except TimeoutError:
                stalled = httpx.WriteTimeout(f"not sent and answered within {2 * self._timeout:g} s")
                raise _transport_error(stalled, "upload interrupted") from None
            except httpx.TransportError as exc:
                raise _transport_error(exc, "upload interrupted") from None
            _raise_for_status(status, answer, UPLOAD_PATH)
            return hashlib.sha256(data).hexdigest()
        loop = asyncio.get_running_loop()
        body = _FileBody(handle, size, preamble, epilogue, self._hashers, loop, on_progress, throttle)

        def send() -> tuple[int, bytes]:
            with handle:
                try:
                    with self._upload_http.stream("POST", self._base + UPLOAD_PATH, params=params, headers=headers,
                                                  content=body, extensions={LOOP_EXTENSION: loop}) as response:
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


@dataclass
class _FileBody:
    """The multipart body, iterated by the sending thread.

    Each chunk is a fresh `bytes` from one read: h11 then hands it to the socket without
    another copy. Chunks go to this body's hashing task through a short queue, in order,
    so the digest covers exactly the bytes sent; the queue lets the hash (the slower
    half) run without waiting for a thread hand-off per chunk, and bounds memory to a
    few chunks.
    """

    handle: BinaryIO
    size: int
    preamble: bytes
    epilogue: bytes
    hashers: Executor
    loop: asyncio.AbstractEventLoop
    on_progress: Callable[[int], None]
    throttle: Throttle | None
    hasher: Any = field(default_factory=hashlib.sha256)
    abandoned: threading.Event = field(default_factory=threading.Event)

    def abandon(self) -> None:
        self.abandoned.set()

    def hexdigest(self) -> str:
        return self.hasher.hexdigest()

    def __iter__(self) -> Iterator[bytes]:
        chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=HASH_AHEAD)
        hashing = self.hashers.submit(_hash_all, self.hasher, chunks)
        sent = 0
        yield self.preamble
        try:
            while sent < self.size:
                chunk = self.handle.read(min(CHUNK_SIZE, self.size - sent))
                if not chunk:
                    raise FileChanged(f"file shrank to {sent} bytes while uploading (expected {self.size})")
                if self.throttle is not None:
                    self.abandoned.wait(self.throttle.delay_for(len(chunk)))
                if self.abandoned.is_set():
                    raise RetryLater("upload abandoned: its task was cancelled")
                chunks.put(chunk)
                sent += len(chunk)
                self.loop.call_soon_threadsafe(self.on_progress, sent)
                yield chunk
        finally:
            chunks.put(None)
            hashing.result()  # the digest is read once the body is done
        yield self.epilogue


def _hash_all(hasher: Any, chunks: queue.Queue[bytes | None]) -> None:
    while (chunk := chunks.get()) is not None:
        hasher.update(chunk)


class _OnLoop(httpx.BaseTransport):
    """Carries the upload thread's requests to an injected async transport (a test's
    MockTransport, say) on the event loop, so a passed transport serves every call."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()

        async def send() -> httpx.Response:
            forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=content)
            response = await self._transport.handle_async_request(forwarded)
            return httpx.Response(response.status_code, headers=response.headers,
                                  stream=httpx.ByteStream(await response.aread()))

        loop: asyncio.AbstractEventLoop = request.extensions[LOOP_EXTENSION]
        return asyncio.run_coroutine_threadsafe(send(), loop).result()


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
