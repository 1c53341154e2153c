"""SesameVault client: upload keys, the signed streaming upload, progress and delete.

This is the edge for the vault: httpx and lxml exceptions and the vendor's error codes
are translated here, once, into vaultdrop's error tree.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import httpx

from .config import VaultSettings
from .errors import ClockSkew, ConfigError, JobFailed, ProtocolError, RetryLater, Unavailable
from .signing import vault_signature
from .throttle import Throttle
from .xmlsafe import MAX_XML_BYTES, child_text, parse_xml

UPLOAD_PATH = "/upload/new/file"
UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)
GATEWAY_DOWN = (502, 503, 504)
CHUNK_SIZE = 1024 * 1024


class UnknownKey(RetryLater):
    """404 unknown_key: the vault does not know this upload key (expired or deleted)."""


class KeyUsed(RetryLater):
    """409 key_used: this key's upload already completed; progress will show the video."""


class FileChanged(RetryLater):
    """The local file changed while it was being sent; the upload cannot be trusted."""


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
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            # identity: bodies are read raw and bounded, so a compressed one (or a bomb) is never inflated
            headers={"Accept-Encoding": "identity"},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            transport=transport or httpx.AsyncHTTPTransport(retries=2),
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, vault: VaultSettings, *, clock: Callable[[], float] = time.time,
                      transport: httpx.AsyncBaseTransport | None = None) -> VaultClient:
        return cls(vault.base_url, vault.user, vault.password.get_secret_value(), timeout=vault.timeout,
                   clock=clock, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

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
        except UnknownKey:
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
        """Stream `size` bytes of `path` as the `upload_file` part; return their sha256.

        Memory stays constant: the body is generated chunk by chunk from the open file and
        hashed on the way, in a worker thread so a slow disk never stalls the event loop.
        """
        signature, timestamp = self._signature(UPLOAD_PATH)
        boundary = uuid.uuid4().hex
        filename = path.name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
        preamble = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="upload_file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode("utf-8", "surrogateescape")
        epilogue = f"\r\n--{boundary}--\r\n".encode()
        hasher = hashlib.sha256()
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise FileChanged(f"cannot open {path}: {exc.strerror}") from None
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(preamble) + size + len(epilogue)),
        }
        params = {"upload_key": key, "_sig": signature, "_date": timestamp}
        body = _file_body(handle, size, preamble, epilogue, hasher, on_progress, throttle)
        try:
            async with self._http.stream(
                "POST", self._base + UPLOAD_PATH, params=params, headers=headers, content=body
            ) as response:
                answer = await _read_bounded(response)
        except httpx.TransportError as exc:
            raise _transport_error(exc, "upload interrupted") from None
        finally:
            await body.aclose()
            handle.close()
        _raise_for_status(response.status_code, answer, UPLOAD_PATH)
        return hasher.hexdigest()


async def _file_body(
    handle: BinaryIO,
    size: int,
    preamble: bytes,
    epilogue: bytes,
    hasher: "hashlib._Hash",
    on_progress: Callable[[int], None],
    throttle: Throttle | None,
) -> AsyncGenerator[bytes, None]:
    """Read and hash the next chunk in a worker thread while this one is being sent.

    Read-ahead keeps the socket fed during the hashing (about a millisecond per MiB), which
    otherwise stalls the stream once per chunk; one chunk ahead keeps memory flat.
    """

    def read(count: int) -> bytes:
        chunk = handle.read(count)
        hasher.update(chunk)
        return chunk

    def read_ahead(done: int) -> asyncio.Future[bytes] | None:
        return asyncio.ensure_future(asyncio.to_thread(read, min(CHUNK_SIZE, size - done))) if done < size else None

    yield preamble
    sent = 0
    pending = read_ahead(0)
    try:
        while pending is not None:
            chunk = await pending
            if not chunk:
                raise FileChanged(f"file shrank to {sent} bytes while uploading (expected {size})")
            sent += len(chunk)
            pending = read_ahead(sent)
            if throttle is not None:
                await throttle.consume(len(chunk))
            on_progress(sent)
            yield chunk
    finally:
        if pending is not None:  # the file is closed after us: let the read in flight end first
            await asyncio.gather(pending, return_exceptions=True)
    yield epilogue


async def _read_bounded(response: httpx.Response) -> bytes:
    """Read at most MAX_XML_BYTES: a huge or endless body is refused, never buffered."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > MAX_XML_BYTES:
        raise ProtocolError(f"response of {declared} bytes refused (limit {MAX_XML_BYTES})")
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > MAX_XML_BYTES:
            raise ProtocolError(f"response over {MAX_XML_BYTES} bytes refused")
    return bytes(body)


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
    if status == 404:  # not the vault's own answer (a proxy?): never a reason to drop a key
        raise ProtocolError(what)
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
