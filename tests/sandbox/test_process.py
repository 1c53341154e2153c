"""The sandbox as a process: CLI flags, ready file, signals, and state across restarts."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from vaultdrop.sandbox.launcher import spawn_sandbox

from .client import VaultClient, error_code, wait_for


def test_cli_serves_with_startup_faults_and_stops_on_signals(tmp_path: Path) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        ready = tmp_path / f"ready-{signum}"
        process = subprocess.Popen([
            sys.executable, "-m", "vaultdrop.cli", "sandbox", "--port", "0", "--root", str(tmp_path / "root"),
            "--ready-file", str(ready), "--user", "alice", "--password", "pw",
            "--fault", '{"endpoint": "new_key", "action": "status", "status": 503, "code": "server_error"}',
        ], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            url = wait_for(lambda: ready.exists() and ready.read_text(), timeout=15)
            assert url.startswith("http://127.0.0.1:") and not ready.with_name(ready.name + ".tmp").exists()
            assert [f["action"] for f in httpx.get(f"{url}/_sandbox/faults").json()] == ["status"]
            process.send_signal(signum)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_cli_refuses_a_bad_fault(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vaultdrop.sandbox", "--root", str(tmp_path), "--fault", '{"endpoint": "upload"}'],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2 and "bad --fault" in result.stderr


def test_state_survives_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "sb"
    with spawn_sandbox(root, extra_args=["--s3-step", "0"]) as first:
        client = VaultClient(first)
        done, pending = client.new_key(), client.new_key()
        client.upload(done, b"kept")
        request_id = client.control("aws.upload", path=f"sestore3/demo/{done}/clip.mp4", destination_path="o.mp4",
                                    metadata=[], bucket="b", callback="")["data"]
        wait_for(lambda: first.s3_objects())
    assert first.process.returncode == 0
    with spawn_sandbox(root) as second:
        client = VaultClient(second)
        assert client.progress(done) == (done, 4, 4)
        assert client.progress(pending) == (None, 0, 0)
        assert error_code(client.upload(done, b"again")) == "key_used"
        assert [v["video_id"] for v in second.videos()] == [done]
        assert client.control("aws.status")["data"][0]["id"] == request_id
        assert len(second.s3_objects()) == 1
        assert client.upload(pending, b"later").status_code == 200


def test_stop_is_prompt_even_mid_upload(tmp_path: Path) -> None:
    sandbox = spawn_sandbox(tmp_path / "sb")
    client = VaultClient(sandbox)
    key = client.new_key()
    boundary = "stopb0undary"
    release = threading.Event()

    def body() -> Iterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="upload_file"; filename="a"\r\n\r\n'.encode()
        yield b"x" * 1000
        release.wait(10)
        yield b"x" * 1000

    def upload() -> None:
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": "100000"}
        with contextlib.suppress(Exception):  # the server goes away mid-body: any error is fine
            httpx.post(client.upload_url(key), content=body(), headers=headers, timeout=10)

    thread = threading.Thread(target=upload)
    thread.start()
    try:
        wait_for(lambda: client.progress(key)[1] > 0, timeout=10)
        started = time.monotonic()
        sandbox.stop()
        assert time.monotonic() - started < 5 and sandbox.process.returncode == 0
        assert list((sandbox.root / "incoming").iterdir()) == []
    finally:
        release.set()
        thread.join(10)
