"""The control API (codes, envelope, faults) and the S3 queue it drives."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vaultdrop.clients.signing import php_json_encode, sign_control_request
from vaultdrop.sandbox.launcher import SandboxProcess, spawn_sandbox

from .client import VaultClient, error_code, wait_for


@pytest.fixture
def fast(tmp_path: Path) -> Iterator[SandboxProcess]:
    """A sandbox whose S3 queue steps every 0.2 s, with a non-default storage prefix."""
    with spawn_sandbox(tmp_path / "fast", storage="sestore7", extra_args=["--s3-step", "0.2"]) as sandbox:
        yield sandbox


def stored_video(client: VaultClient, data: bytes = b"movie" * 1000, filename: str = "clip.mp4") -> str:
    key = client.new_key()
    assert client.upload(key, data, filename=filename).status_code == 200
    return f"{client.sandbox.storage}/{client.sandbox.user}/{key}/{filename}"


def queue_upload(client: VaultClient, path: str, **fields: Any) -> int:
    request = {"path": path, "destination_path": "vod/out.mp4", "metadata": {"title": "t"},
               "bucket": "bkt", "callback": "", **fields}
    answer = client.control("aws.upload", **request)
    assert answer["status"] == "success", answer
    request_id: int = answer["data"]
    return request_id


def status_of(client: VaultClient, request_id: int) -> dict[str, Any]:
    records: list[dict[str, Any]] = client.control("aws.status", limit=100)["data"]
    [record] = [r for r in records if r["id"] == request_id]
    return record


def test_getstorage_names_the_storage_prefix(fast: SandboxProcess) -> None:
    answer = VaultClient(fast).control("files.getstorage")
    assert answer["status"] == "success" and answer["data"] == {"storage": "sestore7"}
    assert isinstance(answer["handle_time"], float)


def test_aws_upload_copies_the_stored_video_to_s3(fast: SandboxProcess) -> None:
    client = VaultClient(fast)
    path = stored_video(client)
    request_id = queue_upload(client, path, destination_path="shows/ep1/out.mp4", metadata={"a/b": "é"})
    seen: list[str] = []

    def finished() -> bool:
        status = status_of(client, request_id)["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        return status in ("complete", "failed")

    wait_for(finished, timeout=10, interval=0.02)
    assert seen == ["queued", "uploading", "complete"]
    assert status_of(client, request_id) == {
        "id": request_id, "status": "complete", "path": path, "destination_path": "shows/ep1/out.mp4",
        "bucket": "bkt", "message": "uploaded to S3",
    }
    target = fast.root / "s3" / "bkt" / "shows" / "ep1" / "out.mp4"
    assert target.read_bytes() == b"movie" * 1000
    sidecar = json.loads(target.with_name("out.mp4.metadata.json").read_text())
    assert sidecar == {"metadata": {"a/b": "é"}, "acl": "private"}
    [obj] = fast.s3_objects()
    assert obj["bucket"] == "bkt" and obj["destination_path"] == "shows/ep1/out.mp4"
    assert obj["size"] == 5000 and obj["sha256"] == fast.videos()[0]["sha256"]
    assert obj["metadata"] == {"a/b": "é"} and obj["acl"] == "private"
    [logged] = [r for r in fast.log() if r["command"] == "aws.upload"]
    assert logged["request_id"] == request_id and logged["endpoint"] == "control"


@pytest.mark.parametrize(
    ("path", "destination", "bucket"),
    [
        ("sestore7/demo/nope/clip.mp4", "out.mp4", "bkt"),
        ("../vault-state.jsonl", "out.mp4", "bkt"),
        ("sestore7/demo/../../../vault-state.jsonl", "out.mp4", "bkt"),
        ("/etc/passwd", "out.mp4", "bkt"),
        ("sestore7", "out.mp4", "bkt"),
        ("{real}", "../../escape.mp4", "bkt"),
        ("{real}", "out.mp4", ".."),
    ],
)
def test_paths_not_held_fail_the_request(fast: SandboxProcess, path: str, destination: str, bucket: str) -> None:
    client = VaultClient(fast)
    if path == "{real}":
        path = stored_video(client)
    request_id = queue_upload(client, path, destination_path=destination, bucket=bucket)
    record = wait_for(lambda: (r := status_of(client, request_id))["status"] != "queued" and r, timeout=10)
    assert record["status"] == "failed" and record["message"]
    assert fast.s3_objects() == []
    assert not (fast.root / "escape.mp4").exists() and not (fast.root / "s3" / "escape.mp4").exists()


def test_aws_status_pages_newest_first(fast: SandboxProcess) -> None:
    client = VaultClient(fast)
    ids = [queue_upload(client, f"sestore7/demo/k{i}/x.mp4") for i in range(5)]
    assert ids == [1, 2, 3, 4, 5]

    def page(**fields: int) -> list[int]:
        return [r["id"] for r in client.control("aws.status", **fields)["data"]]

    assert page() == [5, 4, 3, 2, 1]
    assert page(limit=2) == [5, 4]
    assert page(limit=2, offset=2) == [3, 2]
    assert page(limit=2, offset=4) == [1]
    assert page(offset=5) == []
    assert set(client.control("aws.status")["data"][0]) == {"id", "status", "path", "destination_path", "bucket", "message"}
    assert client.control("aws.status", limit="2")["code"] == "0006"
    assert client.control("aws.status", offset=-1)["code"] == "0006"


class CallbackSink(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_callback_receives_the_finished_record(fast: SandboxProcess) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), CallbackSink)
    CallbackSink.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = VaultClient(fast)
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        good = queue_upload(client, stored_video(client), callback=url)
        bad = queue_upload(client, "sestore7/demo/missing/x.mp4", callback=url)
        wait_for(lambda: len(CallbackSink.received) == 2, timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    by_id = {r["id"]: r for r in CallbackSink.received}
    assert by_id[good]["status"] == "complete" and by_id[bad]["status"] == "failed"
    assert by_id[good] == status_of(client, good)


def test_control_failure_codes(sandbox: SandboxProcess) -> None:
    client = VaultClient(sandbox)

    def fails(answer: dict[str, Any], code: str) -> None:
        assert answer == {"message": answer["message"], "status": "failure", "handle_time": answer["handle_time"],
                          "code": code, "data": 0}

    fails(client.control("files.nosuch"), "0000")
    fails(client.control("aws.upload", path="x", destination_path="y", metadata=[], callback=""), "0006")
    fails(client.control("aws.upload", path="x", destination_path="y", metadata=[], bucket="b", callback="", acl="open"), "0006")
    fails(client.control_raw("{not json"), "0006")
    fails(client.control_raw('{"command":"files.getstorage","timestamp":1.5}'), "0006")
    response = client.http.post("/stable/", data={"other": "x"})
    fails(response.json(), "0006")
    fails(client.control("files.getstorage", timestamp=int(time.time()) + 301), "0002")
    wrong_cdn = {"command": "files.getstorage", "api_key": sandbox.api_key, "timestamp": int(time.time()), "cdn": 99}
    fails(client.control_raw(sign_control_request(sandbox.api_secret, wrong_cdn)), "0001")
    unsigned = {"command": "files.getstorage", "api_key": sandbox.api_key, "timestamp": int(time.time()), "cdn": 1}
    fails(client.control_raw(php_json_encode({**unsigned, "signature": 5})), "0003")
    fails(client.control_raw(sign_control_request("wrong-secret", unsigned)), "0003")


def test_cdn_id_is_accepted_instead_of_cdn(sandbox: SandboxProcess) -> None:
    client = VaultClient(sandbox)
    request = {"command": "files.getstorage", "api_key": sandbox.api_key, "timestamp": int(time.time()), "cdn_id": 1}
    assert client.control_raw(sign_control_request(sandbox.api_secret, request))["status"] == "success"


def test_control_faults(sandbox: SandboxProcess) -> None:
    client = VaultClient(sandbox)
    sandbox.add_fault(endpoint="aws.upload", action="vendor_code", code="1000")
    sandbox.add_fault(endpoint="control", action="vendor_code", code="0004", count=2)
    assert client.control("aws.status")["code"] == "0004"
    assert client.control("aws.upload", path="p", destination_path="d", metadata=[], bucket="b", callback="")["code"] == "1000"
    assert client.control("files.getstorage")["code"] == "0004"
    assert client.control("files.getstorage")["status"] == "success"
    sandbox.add_fault(endpoint="control", action="status", status=502, code="server_error")
    response = client.http.post("/stable/", data={"json": "{}"})
    assert (response.status_code, error_code(response)) == (502, "server_error")
    sandbox.add_fault(endpoint="files.getstorage", action="body", body='{"status": "success", "data": ', content_type="application/json")
    assert client.http.post("/stable/", data={"json": json.dumps({"command": "files.getstorage"})}).text == '{"status": "success", "data": '
    log = sandbox.log()
    assert [(r["command"], r["code"], r["fault"]) for r in log[:4]] == [
        ("aws.status", "0004", "vendor_code"), ("aws.upload", "1000", "vendor_code"),
        ("files.getstorage", "0004", "vendor_code"), ("files.getstorage", None, None),
    ]
