"""SesameVault endpoints against API.md: happy path, the error table, key rules, faults."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from vaultdrop.sandbox.launcher import SandboxProcess, spawn_sandbox

from .client import VaultClient, error_code, wait_for

DATA = b"\x00\x01fake mp4 payload\xff" * 4096


@pytest.fixture
def client(sandbox: SandboxProcess) -> VaultClient:
    return VaultClient(sandbox)


def multipart_stream(boundary: str, filename: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="upload_file"; filename="{filename}"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    yield from chunks
    yield f"\r\n--{boundary}--\r\n".encode()


def multipart_overhead(boundary: str, filename: str) -> int:
    return sum(len(part) for part in multipart_stream(boundary, filename, iter(())))


def test_upload_is_stored_and_confirmed_by_progress(sandbox: SandboxProcess, client: VaultClient) -> None:
    key = client.new_key()
    assert client.progress(key) == (None, 0, 0)
    response = client.upload(key, DATA, filename="clip.mp4")
    assert response.status_code == 200
    assert "<upload_key>" + key in response.text
    assert client.progress(key) == (key, len(DATA), len(DATA))
    stored = sandbox.root / "storage" / "sestore3" / "demo" / key / "clip.mp4"
    assert stored.read_bytes() == DATA
    [video] = sandbox.videos()
    assert video == {
        "video_id": key, "filename": "clip.mp4", "size": len(DATA),
        "sha256": hashlib.sha256(DATA).hexdigest(), "path": str(stored),
    }
    upload = [r for r in sandbox.log() if r["endpoint"] == "upload"][0]
    assert (upload["status"], upload["code"], upload["upload_key"]) == (200, None, key)
    assert upload["bytes_in"] > len(DATA)
    assert list(sandbox.root.joinpath("incoming").iterdir()) == []


def test_filename_is_reduced_to_a_safe_basename(sandbox: SandboxProcess, client: VaultClient) -> None:
    key = client.new_key()
    assert client.upload(key, b"x", filename="../../etc/evil\\name é.mp4").status_code == 200
    [video] = sandbox.videos()
    assert video["filename"] == "name é.mp4"
    assert Path(video["path"]).parent == sandbox.root / "storage" / "sestore3" / "demo" / key


def post_raw_disposition(client: VaultClient, key: str, parameters: bytes) -> httpx.Response:
    """An upload whose part header carries `parameters` byte for byte, as a careless client sends them."""
    body = (b'--b0\r\nContent-Disposition: form-data; name="upload_file"; ' + parameters
            + b"\r\nContent-Type: video/mp4\r\n\r\nxyz\r\n--b0--\r\n")
    return client.http.post(client.upload_url(key), content=body,
                            headers={"Content-Type": "multipart/form-data; boundary=b0"})


@pytest.mark.parametrize("raw", [b"a\x1b[2J.mp4", b"a\nb.mp4", b"a\tb.mp4", b"caf\xe9.mp4"])
def test_a_raw_file_name_that_is_not_text_is_refused_with_400(sandbox: SandboxProcess, client: VaultClient,
                                                             raw: bytes) -> None:
    """A strict server's answer to a control character or a byte that is not UTF-8 in the
    header: 400 at once (it was a 500 on every attempt), and nothing stored."""
    response = post_raw_disposition(client, client.new_key(), b'filename="' + raw + b'"')
    assert response.status_code == 400 and error_code(response) == "invalid_request", response.text
    assert sandbox.videos() == []


def test_a_percent_encoded_file_name_wins_over_its_stand_in(sandbox: SandboxProcess, client: VaultClient) -> None:
    """RFC 5987's filename*: the name itself, safely encoded; its control characters are dropped."""
    response = post_raw_disposition(client, client.new_key(),
                                    b"filename=\"a__b_.mp4\"; filename*=UTF-8''a%1B%0Ab%C3%A9.mp4")
    assert response.status_code == 200, response.text
    assert [video["filename"] for video in sandbox.videos()] == ["abé.mp4"]


def test_every_request_is_logged_in_order_without_secrets(sandbox: SandboxProcess, client: VaultClient) -> None:
    key = client.new_key()
    client.upload(key, b"abc")
    client.progress(key)
    client.get(f"/video/delete/{key}.xml")
    client.control("files.getstorage")
    log = sandbox.log()
    assert [r["endpoint"] for r in log] == ["new_key", "upload", "progress", "delete", "control"]
    assert log[0]["upload_key"] == key and log[-1]["command"] == "files.getstorage"
    assert all(r["status"] == 200 for r in log)
    on_disk = (sandbox.root / "access.log").read_text()
    assert len(on_disk.splitlines()) == 5
    for secret in (sandbox.password, sandbox.api_secret):
        assert secret not in on_disk and secret not in str(log)


def test_signature_errors(sandbox: SandboxProcess, client: VaultClient) -> None:
    assert error_code(client.http.get("/upload/new_upload_key.xml")) == "bad_signature"
    wrong = VaultClient(sandbox)
    wrong.sandbox = SandboxProcess(**{**sandbox.__dict__, "password": "nope"})
    response = wrong.get("/upload/new_upload_key.xml")
    assert (response.status_code, error_code(response)) == (403, "bad_signature")
    stranger = VaultClient(sandbox)
    stranger.sandbox = SandboxProcess(**{**sandbox.__dict__, "user": "mallory"})
    assert error_code(stranger.get("/upload/new_upload_key.xml")) == "bad_signature"
    key = client.new_key()
    response = wrong.http.post(wrong.upload_url(key), files={"upload_file": ("a", b"a")})
    assert (response.status_code, error_code(response)) == (403, "bad_signature")
    # the signed path is the one requested: a progress signature does not open delete
    signature, date = client.sign("/upload/progress.xml")
    response = client.http.get(f"/video/delete/{key}.xml", headers={"Authorization": signature, "x-sesame-date": date})
    assert error_code(response) == "bad_signature"


def test_time_window_is_900_seconds(client: VaultClient) -> None:
    assert client.get("/upload/new_upload_key.xml", when=time.time() - 800).status_code == 200
    for skew in (-1000, 1000):
        response = client.get("/upload/new_upload_key.xml", when=time.time() + skew)
        assert (response.status_code, error_code(response)) == (401, "expired")
    key = client.new_key()
    response = client.http.post(client.upload_url(key, when=time.time() - 1000), files={"upload_file": ("a", b"a")})
    assert (response.status_code, error_code(response)) == (401, "expired")


def test_invalid_requests(client: VaultClient) -> None:
    key = client.new_key()
    response = client.http.post(client.upload_url(key), files={"other": ("a.mp4", b"abc")})
    assert (response.status_code, error_code(response)) == (400, "invalid_request")
    response = client.http.post(client.upload_url(key), content=b"raw", headers={"Content-Type": "video/mp4"})
    assert (response.status_code, error_code(response)) == (400, "invalid_request")
    response = client.get("/upload/progress.xml")
    assert (response.status_code, error_code(response)) == (400, "invalid_request")
    # none of that used the key up
    assert client.upload(key, b"fine").status_code == 200


def test_unknown_key_and_unknown_video(client: VaultClient) -> None:
    response = client.get("/upload/progress.xml", {"upload_key": "no-such-key"})
    assert (response.status_code, error_code(response)) == (404, "unknown_key")
    response = client.upload("no-such-key", b"abc")
    assert (response.status_code, error_code(response)) == (404, "unknown_key")
    response = client.get("/video/delete/no-such-video.xml")
    assert (response.status_code, error_code(response)) == (404, "not_found")


def test_completed_key_cannot_be_reused(sandbox: SandboxProcess, client: VaultClient) -> None:
    key = client.new_key()
    assert client.upload(key, DATA).status_code == 200
    response = client.upload(key, b"second")
    assert (response.status_code, error_code(response)) == (409, "key_used")
    assert client.progress(key) == (key, len(DATA), len(DATA))
    assert [v["size"] for v in sandbox.videos()] == [len(DATA)]


def test_delete_removes_video_and_key(sandbox: SandboxProcess, client: VaultClient) -> None:
    key = client.new_key()
    client.upload(key, DATA)
    response = client.get(f"/video/delete/{key}.xml")
    assert response.status_code == 200
    assert f"<id>{key}</id>" in response.text and "<deleted>true</deleted>" in response.text
    assert sandbox.videos() == []
    assert not (sandbox.root / "storage" / "sestore3" / "demo" / key).exists()
    response = client.get("/upload/progress.xml", {"upload_key": key})
    assert (response.status_code, error_code(response)) == (404, "unknown_key")
    assert error_code(client.get(f"/video/delete/{key}.xml")) == "not_found"


def test_too_large(tmp_path: Path) -> None:
    with spawn_sandbox(tmp_path / "sb", extra_args=["--max-size", "1000"]) as sandbox:
        client = VaultClient(sandbox)
        key = client.new_key()
        response = client.upload(key, b"x" * 1001)
        assert (response.status_code, error_code(response)) == (413, "too_large")
        assert client.progress(key) == (None, 0, 0)
        assert client.upload(key, b"x" * 1000).status_code == 200


def test_broken_off_upload_leaves_key_reusable(sandbox: SandboxProcess, client: VaultClient) -> None:
    key = client.new_key()
    sandbox.add_fault(endpoint="upload", action="drop_after", bytes=10_000)
    big = DATA * 64  # ~5 MiB: far more than the server buffers before it cuts the connection
    with pytest.raises(httpx.TransportError):
        client.upload(key, big)
    dropped = [r for r in sandbox.log() if r["endpoint"] == "upload"][0]
    assert (dropped["status"], dropped["code"], dropped["fault"]) == (None, "dropped", "drop_after")
    assert 10_000 <= dropped["bytes_in"] < len(big)
    assert client.progress(key) == (None, 0, 0)
    assert sandbox.videos() == []
    assert list(sandbox.root.joinpath("incoming").iterdir()) == []
    assert client.upload(key, DATA).status_code == 200
    assert client.progress(key) == (key, len(DATA), len(DATA))


def test_client_disconnect_mid_upload_leaves_key_reusable(sandbox: SandboxProcess, client: VaultClient) -> None:
    key = client.new_key()
    boundary = "b0undary"

    def stalled() -> Iterator[bytes]:
        yield b"x" * 5000
        raise OSError("client gives up")

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
               "Content-Length": str(multipart_overhead(boundary, "a.mp4") + 100_000)}
    with pytest.raises(OSError):
        client.http.post(client.upload_url(key), content=multipart_stream(boundary, "a.mp4", stalled()), headers=headers)
    wait_for(lambda: [r for r in sandbox.log() if r["code"] == "disconnected"])
    assert client.progress(key) == (None, 0, 0)
    assert client.upload(key, b"again").status_code == 200


def test_progress_grows_during_upload_and_newest_post_wins(sandbox: SandboxProcess, client: VaultClient) -> None:
    key = client.new_key()
    boundary = "slowb0undary"
    release = threading.Event()
    outcome: list[BaseException | int] = []

    def slow_chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield b"a" * 65536
            time.sleep(0.1)
        release.wait(10)
        yield b"a" * 65536

    def first_upload() -> None:
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                   "Content-Length": str(multipart_overhead(boundary, "first.mp4") + 4 * 65536)}
        try:
            outcome.append(httpx.post(client.upload_url(key), headers=headers, timeout=10,
                                      content=multipart_stream(boundary, "first.mp4", slow_chunks())).status_code)
        except (httpx.TransportError, OSError) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=first_upload)
    thread.start()
    seen = [wait_for(lambda: (p := client.progress(key))[1] >= 3 * 65536 and p)]
    assert seen[0][0] is None and seen[0][2] == multipart_overhead(boundary, "first.mp4") + 4 * 65536
    response = client.upload(key, b"second wins", filename="second.mp4")
    release.set()
    thread.join(10)
    assert response.status_code == 200
    assert len(outcome) == 1 and not isinstance(outcome[0], int), outcome
    assert client.progress(key) == (key, 11, 11)
    assert [v["filename"] for v in sandbox.videos()] == ["second.mp4"]
    codes = [r["code"] for r in sandbox.log() if r["endpoint"] == "upload"]
    assert sorted(codes, key=str) == [None, "superseded"]


def test_chunked_upload_without_content_length(client: VaultClient) -> None:
    key = client.new_key()
    boundary = "chunkedb0undary"
    response = client.http.post(
        client.upload_url(key), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=multipart_stream(boundary, "c.mp4", iter([DATA[:1000], DATA[1000:]])),
    )
    assert response.status_code == 200
    assert client.progress(key) == (key, len(DATA), len(DATA))


def test_late_video_id(sandbox: SandboxProcess, client: VaultClient) -> None:
    key = client.new_key()
    sandbox.add_fault(endpoint="upload", action="late_video_id", seconds=1.0)
    done = time.monotonic()
    assert client.upload(key, DATA).status_code == 200
    assert client.progress(key) == (None, len(DATA), len(DATA))
    assert error_code(client.upload(key, DATA)) == "key_used"
    wait_for(lambda: client.progress(key)[0] == key, timeout=5)
    assert time.monotonic() - done >= 1.0


def test_stall_then_normal_answer(sandbox: SandboxProcess, client: VaultClient) -> None:
    key = client.new_key()
    sandbox.add_fault(endpoint="progress", action="stall", seconds=1.0)
    started = time.monotonic()
    assert client.progress(key) == (None, 0, 0)
    assert time.monotonic() - started >= 1.0
    started = time.monotonic()
    client.progress(key)
    assert time.monotonic() - started < 1.0  # the fault fired once only


def test_status_fault_fires_count_times(sandbox: SandboxProcess, client: VaultClient) -> None:
    sandbox.add_fault(endpoint="new_key", action="status", status=503, code="server_error", count=2)
    for _ in range(2):
        response = client.get("/upload/new_upload_key.xml")
        assert (response.status_code, error_code(response)) == (503, "server_error")
    assert client.new_key()
    sandbox.add_fault(endpoint="progress", action="status", status=401, code="expired")
    sandbox.clear_faults()
    assert client.get("/upload/progress.xml", {"upload_key": "x"}).status_code == 404
    assert [r["code"] for r in sandbox.log()][:2] == ["server_error", "server_error"]


def test_body_fault_replaces_answer_after_a_real_upload(sandbox: SandboxProcess, client: VaultClient) -> None:
    key = client.new_key()
    sandbox.add_fault(endpoint="upload", action="body", body="<results><upload_key>")
    response = client.upload(key, DATA)
    assert (response.status_code, response.text) == (200, "<results><upload_key>")
    assert client.progress(key) == (key, len(DATA), len(DATA))
    hostile = '<!DOCTYPE r [<!ENTITY e "boom">]><results>&e;</results>'
    sandbox.add_fault(endpoint="progress", action="body", body=hostile, status=500, content_type="text/html")
    response = client.get("/upload/progress.xml", {"upload_key": key})
    assert (response.status_code, response.text, response.headers["content-type"]) == (500, hostile, "text/html")


def test_bad_fault_specs_are_refused(sandbox: SandboxProcess) -> None:
    for spec in (
        {"endpoint": "upload", "action": "explode"},
        {"endpoint": "nowhere", "action": "stall", "seconds": 1},
        {"endpoint": "progress", "action": "drop_after", "bytes": 5},
        {"endpoint": "upload", "action": "vendor_code", "code": "1000"},
        {"endpoint": "upload", "action": "status", "status": 503},
        {"endpoint": "upload", "action": "stall", "seconds": 1, "count": 0},
    ):
        with pytest.raises(httpx.HTTPStatusError):
            sandbox.add_fault(**spec)
