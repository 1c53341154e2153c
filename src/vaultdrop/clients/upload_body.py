"""The upload's body: the multipart framing around the file's bytes, read in chunks,
hashed while they are sent, paced by the bandwidth limit, with progress on the loop.

A large body (FileBody) is read and sent from a worker thread through a blocking client
and hashed on another (hashlib releases the GIL): per chunk one read, one hash, one
blocking send, where the event loop's path paid an async generator, a thread hand-off
and the transport's buffer copies (issue 14). Memory stays constant: a few chunks per
upload. A small body (WholeBody) is cheaper read whole and sent from the loop than
handed to two threads. The protocol around it (signature, parameters, the answer) is
the vault client's (vault.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from ..errors import RetryLater
from .throttle import Throttle

CHUNK_SIZE = 1024 * 1024
SMALL_BODY = 256 * 1024  # up to this size a file is read whole and sent from the loop
HASH_AHEAD = 2  # chunks queued for an upload's hashing task

# Control characters (C0, DEL, C1), a quote and a backslash become "_" in the multipart
# filename: a header line may carry none of them (aiohttp refuses an ESC there).
_UNSAFE_IN_FILENAME = {code: "_" for code in (*range(0x20), *range(0x7F, 0xA0), ord("\\"), ord('"'))}
# A byte of the name that is not UTF-8 (os.fsdecode's surrogate escape) is not text at all.
_UNDECODABLE = {code: "_" for code in range(0xDC80, 0xDD00)}


class FileChanged(RetryLater):
    """The local file changed while it was being sent; the upload cannot be trusted."""


@dataclass(frozen=True)
class Multipart:
    """The one `upload_file` part: what comes before and after the file's bytes."""

    boundary: str
    preamble: bytes
    epilogue: bytes

    @classmethod
    def for_file(cls, name: str) -> Multipart:
        boundary = uuid.uuid4().hex
        preamble = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="upload_file"; {_filename_parameters(name)}\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode("utf-8")
        return cls(boundary, preamble, f"\r\n--{boundary}--\r\n".encode())

    def headers(self, size: int) -> dict[str, str]:
        """The request headers for a file of `size` bytes: the length is known before a byte is read."""
        return {"Content-Type": f"multipart/form-data; boundary={self.boundary}",
                "Content-Length": str(len(self.preamble) + size + len(self.epilogue))}


def _filename_parameters(name: str) -> str:
    """`filename="NAME"`, as it always was, for a name a header line can carry as it is.
    Any other name (a control character, a quote, bytes that are not UTF-8) gets an ASCII
    stand-in there, and travels itself percent-encoded in `filename*` (RFC 5987): the
    vault keys the video by its id, so the name is only ever shown, never trusted."""
    safe = name.translate(_UNSAFE_IN_FILENAME).translate(_UNDECODABLE)
    if safe == name:
        return f'filename="{name}"'
    stand_in = "".join(ch if ch.isascii() else "_" for ch in safe)
    text = os.fsencode(name).decode("utf-8", "replace")  # an undecodable byte becomes U+FFFD
    return f"filename=\"{stand_in}\"; filename*=UTF-8''{quote(text, safe='')}"


def is_small(size: int) -> bool:
    """Whether a body of `size` bytes is read whole and sent from the loop (WholeBody)."""
    return size <= SMALL_BODY


def open_file(path: Path) -> BinaryIO:
    """The file, unbuffered (each chunk is one read); a file gone since is a changed file."""
    try:
        return path.open("rb", buffering=0)
    except OSError as exc:
        raise FileChanged(f"cannot open {path}: {exc.strerror}") from None


def _shrank(sent: int, size: int) -> FileChanged:
    return FileChanged(f"file shrank to {sent} bytes while uploading (expected {size})")


@dataclass(frozen=True)
class WholeBody:
    """A small body, read at once on the loop; hashed once it was sent."""

    data: bytes

    @classmethod
    async def read(cls, handle: BinaryIO, size: int, on_progress: Callable[[int], None],
                   throttle: Throttle | None) -> WholeBody:
        """Read `size` bytes and close `handle`; the throttle is paid before sending."""
        with handle:
            data = handle.read(size)
        if len(data) < size:
            raise _shrank(len(data), size)
        if throttle is not None:
            await asyncio.sleep(throttle.delay_for(size))
        on_progress(size)
        return cls(data)

    def content(self, form: Multipart) -> bytes:
        return form.preamble + self.data + form.epilogue

    def hexdigest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class FileBody:
    """The multipart body, iterated by the sending thread.

    Each chunk is a fresh `bytes` from one read: h11 then hands it to the socket without
    another copy. Chunks go to this body's hashing task through a short queue, in order,
    so the digest covers exactly the bytes sent; the queue lets the hash (the slower
    half) run without waiting for a thread hand-off per chunk, and bounds memory to a
    few chunks. `on_progress` runs on the loop, in order.
    """

    handle: BinaryIO
    size: int
    form: Multipart
    hashers: Executor
    loop: asyncio.AbstractEventLoop
    on_progress: Callable[[int], None]
    throttle: Throttle | None
    hasher: Any = field(default_factory=hashlib.sha256)
    abandoned: threading.Event = field(default_factory=threading.Event)

    def abandon(self) -> None:
        """The upload's task was cancelled: the sending thread stops at its next chunk."""
        self.abandoned.set()

    def hexdigest(self) -> str:
        return self.hasher.hexdigest()

    def __iter__(self) -> Iterator[bytes]:
        chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=HASH_AHEAD)
        hashing = self.hashers.submit(_hash_all, self.hasher, chunks)
        sent = 0
        yield self.form.preamble
        try:
            while sent < self.size:
                chunk = self.handle.read(min(CHUNK_SIZE, self.size - sent))
                if not chunk:
                    raise _shrank(sent, self.size)
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
        yield self.form.epilogue


def _hash_all(hasher: Any, chunks: queue.Queue[bytes | None]) -> None:
    while (chunk := chunks.get()) is not None:
        hasher.update(chunk)
