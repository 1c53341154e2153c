"""Run the sandbox as a child process and drive its admin endpoints: the tests' handle.

A real subprocess (not an in-process app) so the daemon under test talks to it over
loopback exactly as it would to the vendor, and so its memory can be measured apart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

DEFAULT_USER = "demo"
DEFAULT_PASSWORD = "demo-password"
DEFAULT_API_KEY = "demo-key"
DEFAULT_API_SECRET = "demo-secret"
DEFAULT_CDN = 1
DEFAULT_STORAGE = "sestore3"
READY_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 10.0
ADMIN_TIMEOUT_SECONDS = 10.0


@dataclass
class SandboxProcess:
    url: str
    root: Path
    user: str
    password: str
    api_key: str
    api_secret: str
    cdn: int
    storage: str
    process: subprocess.Popen[bytes]

    def _admin(self, method: str, name: str, json: Any = None) -> Any:
        response = httpx.request(method, f"{self.url}/_sandbox/{name}", json=json, timeout=ADMIN_TIMEOUT_SECONDS)
        response.raise_for_status()
        return response.json()

    def add_fault(self, **fault: Any) -> None:
        """Queue a fault, e.g. add_fault(endpoint="upload", action="drop_after", bytes=4096)."""
        self._admin("POST", "faults", fault)

    def clear_faults(self) -> None:
        self._admin("DELETE", "faults")

    def log(self) -> list[dict[str, Any]]:
        """One record per API call, in arrival order (see the /_sandbox/log format)."""
        records: list[dict[str, Any]] = self._admin("GET", "log")
        return records

    def videos(self) -> list[dict[str, Any]]:
        """Stored videos: video_id, filename, size, sha256, path."""
        videos: list[dict[str, Any]] = self._admin("GET", "videos")
        return videos

    def s3_objects(self) -> list[dict[str, Any]]:
        """Objects in the fake S3: bucket, destination_path, size, sha256, metadata, acl."""
        objects: list[dict[str, Any]] = self._admin("GET", "s3")
        return objects

    def stop(self) -> None:
        """SIGTERM, wait, and kill if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()


def spawn_sandbox(
    root: Path,
    *,
    port: int = 0,
    user: str = DEFAULT_USER,
    password: str = DEFAULT_PASSWORD,
    api_key: str = DEFAULT_API_KEY,
    api_secret: str = DEFAULT_API_SECRET,
    cdn: int = DEFAULT_CDN,
    storage: str = DEFAULT_STORAGE,
    extra_args: list[str] | tuple[str, ...] = (),
) -> SandboxProcess:
    """Start `python -m vaultdrop.sandbox` on `root` and wait until it listens.

    The child's output goes to ROOT/sandbox.out; on a failed start it is in the error.
    """
    root.mkdir(parents=True, exist_ok=True)
    ready = root / "ready-url"
    ready.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "vaultdrop.sandbox", "--root", str(root), "--port", str(port),
        "--user", user, "--password", password, "--api-key", api_key, "--api-secret", api_secret,
        "--cdn", str(cdn), "--storage", storage, "--ready-file", str(ready), *extra_args,
    ]
    output_path = root / "sandbox.out"
    with output_path.open("ab") as output:
        # Its own session: a Ctrl-C in the terminal reaches only the parent, whose drain
        # still needs the sandbox; the parent stops it afterwards (`stop`).
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait()
            tail = output_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"sandbox did not start (exit {process.returncode}):\n{tail}")
        time.sleep(0.05)
    return SandboxProcess(
        url=ready.read_text(encoding="utf-8").strip(), root=root, user=user, password=password,
        api_key=api_key, api_secret=api_secret, cdn=cdn, storage=storage, process=process,
    )
