"""A minimal signed client for the sandbox tests, built on vaultdrop.clients.signing.

Deliberately tiny and separate from the daemon's client: these tests pin the server to
API.md, not to whatever the daemon's client happens to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx

from vaultdrop.clients.signing import sign_control_request, vault_signature
from vaultdrop.clients.xmlsafe import child_text, parse_xml
from vaultdrop.sandbox.launcher import SandboxProcess


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


class VaultClient:
    def __init__(self, sandbox: SandboxProcess) -> None:
        self.sandbox = sandbox
        self.http = httpx.Client(base_url=sandbox.url, timeout=30)

    def sign(self, path: str, when: float | None = None) -> tuple[str, str]:
        date = f"{time.time() if when is None else when:.3f}"
        return vault_signature(self.sandbox.user, self.sandbox.password, date, path), date

    def get(self, path: str, params: dict[str, str] | None = None, when: float | None = None) -> httpx.Response:
        signature, date = self.sign(path, when)
        return self.http.get(path, params=params, headers={"Authorization": signature, "x-sesame-date": date})

    def new_key(self) -> str:
        response = self.get("/upload/new_upload_key.xml")
        assert response.status_code == 200, response.text
        key = child_text(parse_xml(response.content, "results"), "upload_key")
        assert key
        return key

    def upload_url(self, key: str, when: float | None = None) -> str:
        signature, date = self.sign("/upload/new/file", when)
        query = urlencode({"upload_key": key, "_sig": signature, "_date": date})
        return f"{self.sandbox.url}/upload/new/file?{query}"

    def upload(self, key: str, data: bytes, filename: str = "clip.mp4", field: str = "upload_file") -> httpx.Response:
        return self.http.post(self.upload_url(key), files={field: (filename, data, "video/mp4")})

    def progress(self, key: str) -> tuple[str | None, int, int]:
        response = self.get("/upload/progress.xml", {"upload_key": key})
        assert response.status_code == 200, response.text
        root = parse_xml(response.content, "results")
        return child_text(root, "video_id"), int(child_text(root, "status/received") or -1), int(child_text(root, "status/size") or -1)

    def control(self, command: str, timestamp: int | None = None, **fields: Any) -> dict[str, Any]:
        sandbox = self.sandbox
        request = {
            "command": command, "api_key": sandbox.api_key,
            "timestamp": int(time.time()) if timestamp is None else timestamp, "cdn": sandbox.cdn, **fields,
        }
        return self.control_raw(sign_control_request(sandbox.api_secret, request))

    def control_raw(self, json_text: str) -> dict[str, Any]:
        response = self.http.post("/stable/", data={"json": json_text})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer


def error_code(response: httpx.Response) -> str | None:
    return child_text(parse_xml(response.content, "error"), "code")
