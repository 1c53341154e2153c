"""The transport under the async httpx clients: aiohttp's connection handling.

httpx stays the client API (timeouts, limits, MockTransport in tests). Under it,
httpx-aiohttp's transport spends about a quarter of httpcore's CPU per small request,
which is most of what a small file costs the daemon (issue 14). Its error map is
corrected here: it reports a connection that broke mid-request as a connect timeout,
which the clients would take for an outage, so one misbehaving file would park every
job instead of spending its own attempts; and it lets an answer that is not HTTP escape
as an aiohttp exception, which no client expects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


@contextmanager
def _translated() -> Iterator[None]:
    """Re-translate from the aiohttp exception that httpx-aiohttp chained as the cause."""
    try:
        yield
    except httpx.TransportError as exc:
        cause = exc.__cause__
        if isinstance(cause, aiohttp.ConnectionTimeoutError):
            raise httpx.ConnectTimeout(str(cause)) from cause
        if isinstance(cause, aiohttp.ClientConnectorError):
            raise httpx.ConnectError(str(cause)) from cause
        if isinstance(cause, aiohttp.ServerTimeoutError):
            raise httpx.ReadTimeout(str(cause)) from cause
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):  # the connection was made, then broke
            raise httpx.ReadError(str(cause or exc)) from cause
        raise
    except aiohttp.ClientError as exc:  # outside its map: an answer that is not HTTP
        raise httpx.RemoteProtocolError(str(exc)) from exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _translated():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        with _translated():
            await self._stream.aclose()


class Transport(AiohttpTransport):
    """httpx-aiohttp whose errors mean what httpcore's would."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _translated():
            response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Body(response.stream)
        return response
