"""How a delete reads the vault's answers: only the vault's own words decide."""

import httpx
import pytest

from vaultdrop.clients.vault import VaultClient
from vaultdrop.errors import ConfigError, Unavailable

DELETED = b"<video><id>v1</id><deleted>true</deleted></video>"
NOT_FOUND = b"<error><code>not_found</code><message>no such video</message></error>"


def client(status: int, body: bytes) -> VaultClient:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, stream=httpx.ByteStream(body)))
    return VaultClient("http://vault.test", "u", "p", transport=transport)


@pytest.mark.parametrize(("status", "body", "deleted"), [(200, DELETED, True), (404, NOT_FOUND, False),
                                                         (404, b"<html>Not Found</html>", False)])
async def test_delete_answers(status: int, body: bytes, deleted: bool) -> None:
    vault = client(status, body)
    assert await vault.delete("v1") is deleted
    await vault.aclose()


@pytest.mark.parametrize(("status", "body", "error"), [(503, b"", Unavailable),
                                                       (403, b"<error><code>bad_signature</code></error>", ConfigError)])
async def test_delete_failures_keep_their_meaning(status: int, body: bytes, error: type[Exception]) -> None:
    vault = client(status, body)
    with pytest.raises(error):
        await vault.delete("v1")
    await vault.aclose()
