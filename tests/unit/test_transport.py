"""The vault client's transport over real loopback sockets: what each way a connection
can fail turns into. Only a connection never made is an outage (every job waits for the
vault); one that broke after it was made is this request's failure (it spends an attempt)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from vaultdrop.clients.upload_body import SMALL_BODY
from vaultdrop.clients.vault import VaultClient
from vaultdrop.errors import RetryLater, Unavailable

KEY = b"<results><upload_key>k1</upload_key></results>"
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def answer(body: bytes, length: int | None = None) -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body) if length is None else length}\r\n"
            "Content-Type: application/xml\r\n\r\n").encode() + body


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        writer.write(answer(KEY))


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.close()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await asyncio.sleep(30)


async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HELLO THERE\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(30)


async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def half_a_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(answer(KEY[:10], length=len(KEY)))
    await writer.drain()
    writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Serve], Awaitable[VaultClient]]]:
    servers: list[asyncio.Server] = []
    clients: list[VaultClient] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(serve: Serve) -> VaultClient:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            tasks.add(asyncio.current_task())  # type: ignore[arg-type]
            try:
                await serve(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        listening = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(listening)
        port = listening.sockets[0].getsockname()[1]
        client = VaultClient(f"http://127.0.0.1:{port}", "user", "secret", timeout=0.5)
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.aclose()
    for listening in servers:
        listening.close()
    for task in tasks:  # a connection still being served (never_answer, trickle)
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_answers_on_one_kept_alive_connection(server) -> None:
    connections = 0

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await keep_alive(reader, writer)

    client = await server(counting)
    assert [await client.new_upload_key() for _ in range(3)] == ["k1"] * 3
    assert connections == 1


async def test_nothing_listening_is_an_outage() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = VaultClient(f"http://127.0.0.1:{port}", "user", "secret", timeout=0.5)
    try:
        with pytest.raises(Unavailable, match="ConnectError"):
            await client.new_upload_key()
    finally:
        await client.aclose()


@pytest.mark.parametrize(("serve", "named"), [(hang_up, "ReadError"), (never_answer, "ReadTimeout"),
                                              (half_a_body, "ReadError"), (not_http, "RemoteProtocolError")])
async def test_a_connection_that_breaks_after_it_was_made_is_this_requests_failure(server, serve: Serve,
                                                                                   named: str) -> None:
    client = await server(serve)
    with pytest.raises(RetryLater, match=named) as raised:
        await client.new_upload_key()
    assert not isinstance(raised.value, Unavailable)


async def test_an_upload_nobody_reads_times_out_as_this_uploads_failure(server, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mov"
    clip.write_bytes(os.urandom(SMALL_BODY))
    client = await server(never_read)
    with pytest.raises(RetryLater, match="Timeout") as raised:
        await asyncio.wait_for(client.upload("k1", clip, size=SMALL_BODY, on_progress=lambda sent: None), 10)
    assert not isinstance(raised.value, Unavailable)


async def test_an_answer_trickled_byte_by_byte_cannot_hold_an_upload(server, tmp_path: Path) -> None:
    """Each byte comes before the read timeout (0.5 s), so only the upload's own
    deadline (twice the timeout) ends it."""
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        for byte in b"HTTP/1.1 200 OK\r\n" * 10:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    clip = tmp_path / "clip.mov"
    clip.write_bytes(os.urandom(1000))
    client = await server(trickle)
    started = asyncio.get_running_loop().time()
    with pytest.raises(RetryLater, match="WriteTimeout: not sent and answered within 1 s") as raised:
        await asyncio.wait_for(client.upload("k1", clip, size=1000, on_progress=lambda sent: None), 10)
    assert not isinstance(raised.value, Unavailable)
    assert asyncio.get_running_loop().time() - started < 3
