"""VaultClient.upload through an injected transport (one mock for the loop and the sending
thread): the bytes on the wire, their digest, progress, a file that shrinks, and a
cancelled upload letting go of its file. A small file (sent from the loop) and a large
one (streamed from a thread) must look the same."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from pathlib import Path

import httpx
import psutil
import pytest

from vaultdrop.clients.throttle import Throttle
from vaultdrop.clients.upload_body import CHUNK_SIZE, SMALL_BODY, FileChanged
from vaultdrop.clients.vault import VaultClient

SIZE = 2 * CHUNK_SIZE + 12345  # odd: the last chunk is a short one
OK = b"<results><upload_key>k</upload_key></results>"


def client_with(handler: httpx.MockTransport) -> VaultClient:
    """The mock answers both the loop's requests and the sending thread's (a large body)."""
    return VaultClient("http://vault.test", "user", "secret", transport=handler, upload_transport=handler)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.mark.parametrize("size", [SMALL_BODY - 1, SIZE])
async def test_upload_sends_the_file_as_one_part_and_returns_its_sha256(video: Path, size: int) -> None:
    os.truncate(video, size)
    bodies: list[httpx.Request] = []

    def vault(request: httpx.Request) -> httpx.Response:
        bodies.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(OK))

    client = client_with(httpx.MockTransport(vault))
    progress: list[int] = []
    try:
        digest = await client.upload("k", video, size=size, on_progress=progress.append)
    finally:
        await client.aclose()

    [request] = bodies
    data = video.read_bytes()
    boundary = re.search(r"boundary=(\w+)", request.headers["Content-Type"]).group(1)  # type: ignore[union-attr]
    head, rest = request.content.split(b"\r\n\r\n", 1)
    assert head.startswith(f"--{boundary}\r\n".encode()) and b'filename="clip.mp4"' in head
    assert rest == data + f"\r\n--{boundary}--\r\n".encode()
    assert int(request.headers["Content-Length"]) == len(request.content)
    assert request.url.params["upload_key"] == "k"
    assert digest == hashlib.sha256(data).hexdigest()
    assert progress == sorted(progress) and progress[-1] == size and len(progress) == -(-size // CHUNK_SIZE)


@pytest.mark.parametrize("size", [SMALL_BODY - 1, SIZE])
async def test_a_file_that_shrinks_while_sent_is_refused(video: Path, size: int) -> None:
    os.truncate(video, size - 1000)
    client = client_with(httpx.MockTransport(lambda request: httpx.Response(200, stream=httpx.ByteStream(OK))))
    try:
        with pytest.raises(FileChanged, match="shrank"):
            await client.upload("k", video, size=size, on_progress=lambda sent: None)
    finally:
        await client.aclose()


async def test_a_cancelled_upload_stops_sending_and_closes_its_file(video: Path) -> None:
    client = client_with(httpx.MockTransport(lambda request: httpx.Response(200, stream=httpx.ByteStream(OK))))
    progress: list[int] = []
    throttle = Throttle(CHUNK_SIZE, burst=0.0)  # one chunk per second: the upload takes ~3 s
    upload = asyncio.create_task(client.upload("k", video, size=SIZE, on_progress=progress.append,
                                               throttle=throttle))
    try:
        while not progress:
            await asyncio.sleep(0.01)
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
        for _ in range(100):
            if all(f.path != str(video) for f in psutil.Process().open_files()):
                break
            await asyncio.sleep(0.02)
        assert all(f.path != str(video) for f in psutil.Process().open_files())
        await asyncio.sleep(0.1)
        assert progress == [CHUNK_SIZE]
    finally:
        await client.aclose()


@pytest.mark.parametrize(("raw", "header"), [
    (b"clip.mp4", b'filename="clip.mp4"\r\n'),  # byte for byte what it always was
    ("café.mov".encode(), 'filename="café.mov"\r\n'.encode()),
    (b'take\x1b[31m\t"red"\n\x7f\\.mov',  # tab, quotes, newline, DEL, backslash
     b'filename="take_[31m__red____.mov"; filename*=UTF-8\'\'take%1B%5B31m%09%22red%22%0A%7F%5C.mov\r\n'),
    (b"caf\xe9\n.mov", b"filename=\"caf__.mov\"; filename*=UTF-8''caf%EF%BF%BD%0A.mov\r\n"),  # Latin-1, not UTF-8
])
async def test_a_file_name_reaches_the_part_header_only_as_safe_text(tmp_path: Path, raw: bytes, header: bytes) -> None:
    """A name is data: an ESC, a tab, a newline, a DEL or a byte that is not UTF-8 would
    break the header line (the sandbox's aiohttp refused such a part with a 500 on every
    attempt); such a name travels percent-encoded in filename*, beside an ASCII stand-in."""
    video = tmp_path / os.fsdecode(raw)
    video.write_bytes(b"x" * 100)
    bodies: list[httpx.Request] = []

    def vault(request: httpx.Request) -> httpx.Response:
        bodies.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(OK))

    client = client_with(httpx.MockTransport(vault))
    try:
        await client.upload("k", video, size=100, on_progress=lambda sent: None)
    finally:
        await client.aclose()
    head = bodies[0].content.split(b"\r\n\r\n", 1)[0]
    assert b'Content-Disposition: form-data; name="upload_file"; ' + header in head
