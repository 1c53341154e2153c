"""Outside peers: curl speaks the vault API, PHP's own json_encode/hash_hmac signs control calls.

The vault signature is written out here from API.md's formula (hashlib md5), not taken
from vaultdrop.clients.signing, so the server is checked against an independent implementation.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vaultdrop.clients.signing import sign_control_request
from vaultdrop.sandbox.launcher import SandboxProcess

from .client import wait_for


def md5hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def sesame_signature(user: str, password: str, when: str, path: str, data: str = "") -> str:
    cypher = md5hex(password)
    return "1.0:" + user + ":" + md5hex(cypher + md5hex(when + user + cypher + path + data))


def curl(*args: str) -> tuple[int, str]:
    """Run curl; return (HTTP status, body)."""
    result = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=60, check=True)
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def signed_headers(sandbox: SandboxProcess, path: str) -> list[str]:
    when = f"{time.time():.2f}"
    signature = sesame_signature(sandbox.user, sandbox.password, when, path)
    return ["-H", f"Authorization: {signature}", "-H", f"x-sesame-date: {when}"]


def test_written_out_formula_matches_api_md_vector() -> None:
    assert sesame_signature("bob", "secret", "1210700000.5", "/upload/new/file") == "1.0:bob:18f5c5dfe97ad8a7f98c26f5e2b108ff"


def test_curl_uploads_a_file(sandbox: SandboxProcess, tmp_path: Path) -> None:
    status, body = curl(*signed_headers(sandbox, "/upload/new_upload_key.xml"), f"{sandbox.url}/upload/new_upload_key.xml")
    assert status == 200
    key = body.split("<upload_key>")[1].split("</upload_key>")[0]

    video = tmp_path / "holiday clip.mp4"
    video.write_bytes(bytes(range(256)) * 5000)
    when = f"{time.time():.1f}"
    signature = sesame_signature(sandbox.user, sandbox.password, when, "/upload/new/file")
    url = f"{sandbox.url}/upload/new/file?upload_key={key}&_sig={quote(signature, safe='')}&_date={when}"
    status, body = curl("-F", f"upload_file=@{video}", url)
    assert status == 200, body

    status, body = curl(*signed_headers(sandbox, "/upload/progress.xml"), f"{sandbox.url}/upload/progress.xml?upload_key={key}")
    size = video.stat().st_size
    assert status == 200
    assert f"<video_id>{key}</video_id>" in body
    assert f"<received>{size}</received>" in body and f"<size>{size}</size>" in body
    [stored] = sandbox.videos()
    assert stored["filename"] == "holiday clip.mp4"
    assert stored["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert hashlib.sha256(Path(stored["path"]).read_bytes()).hexdigest() == stored["sha256"]

    status, body = curl("-F", f"upload_file=@{video}", url)
    assert (status, "<code>key_used</code>" in body) == (409, True)


PHP_REQUEST = r"""<?php
// argv: api_key secret cdn timestamp metadata-kind path callback
[$_, $key, $secret, $cdn, $timestamp, $kind, $path, $callback] = $argv;
$metadata = $kind === 'empty' ? array() : array(
    'title' => "Caf\u{e9} \u{1F3AC} \u{65E5}\u{672C}",
    'folder/name' => 'a/b/c',
    'quote' => "say \"hi\"\ttab",
);
$request = array(
    'command' => 'aws.upload',
    'api_key' => $key,
    'timestamp' => (int)$timestamp,
    'cdn' => (int)$cdn,
    'path' => $path,
    'destination_path' => 'vod/clips/out.mp4',
    'metadata' => $metadata,
    'acl' => 'public-read',
    'bucket' => 'my_bucket',
    'callback' => $callback,
);
$json_request = json_encode($request);
$sig = base64_encode(hash_hmac('sha256', $json_request, $secret, true));
$request['signature'] = $sig;
echo json_encode($request);
"""


def php_request(tmp_path: Path, sandbox: SandboxProcess, *, kind: str = "full", key: str | None = None,
                timestamp: int | None = None, path: str = "sestore3/demo/none/x.mp4") -> str:
    script = tmp_path / "request.php"
    script.write_text(PHP_REQUEST)
    args = [key or sandbox.api_key, sandbox.api_secret, str(sandbox.cdn), str(timestamp or int(time.time())), kind, path, ""]
    return subprocess.run(["php", str(script), *args], capture_output=True, text=True, check=True, timeout=30).stdout


def post_form(sandbox: SandboxProcess, json_text: str, multipart: bool = True) -> dict[str, Any]:
    form = ["--form-string", f"json={json_text}"] if multipart else ["--data-urlencode", f"json={json_text}"]
    status, body = curl(*form, f"{sandbox.url}/stable/")
    assert status == 200
    answer: dict[str, Any] = json.loads(body)
    return answer


def test_php_signed_requests_are_accepted(sandbox: SandboxProcess, tmp_path: Path) -> None:
    for kind, multipart in (("full", True), ("empty", False)):
        text = php_request(tmp_path, sandbox, kind=kind)
        request = json.loads(text)
        # PHP's bytes are exactly what vaultdrop.clients.signing would produce for the same request
        assert text == sign_control_request(sandbox.api_secret, {k: v for k, v in request.items() if k != "signature"})
        answer = post_form(sandbox, text, multipart)
        assert answer["status"] == "success", answer
        assert type(answer["data"]) is int and answer["data"] > 0
        assert set(answer) == {"message", "status", "handle_time", "data"}
    assert '"metadata":[]' in php_request(tmp_path, sandbox, kind="empty")
    full = php_request(tmp_path, sandbox)
    assert "\\ud83c\\udfac" in full and "a\\/b\\/c" in full and "\\u00e9" in full


def test_php_request_metadata_reaches_s3(sandbox: SandboxProcess, tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"video bytes")
    when = f"{time.time():.1f}"
    key_headers = signed_headers(sandbox, "/upload/new_upload_key.xml")
    _, body = curl(*key_headers, f"{sandbox.url}/upload/new_upload_key.xml")
    key = body.split("<upload_key>")[1].split("</upload_key>")[0]
    signature = sesame_signature(sandbox.user, sandbox.password, when, "/upload/new/file")
    curl("-F", f"upload_file=@{video}", f"{sandbox.url}/upload/new/file?upload_key={key}&_sig={quote(signature)}&_date={when}")

    answer = post_form(sandbox, php_request(tmp_path, sandbox, path=f"sestore3/demo/{key}/v.mp4"))
    assert answer["status"] == "success"
    [obj] = wait_for(sandbox.s3_objects, timeout=10)
    assert obj["metadata"] == {"title": "Café 🎬 日本", "folder/name": "a/b/c", "quote": 'say "hi"\ttab'}
    assert obj["acl"] == "public-read" and obj["size"] == len(b"video bytes")
    sidecar = sandbox.root / "s3" / "my_bucket" / "vod" / "clips" / "out.mp4.metadata.json"
    assert json.loads(sidecar.read_text())["metadata"]["title"] == "Café 🎬 日本"


def test_php_requests_that_must_fail(sandbox: SandboxProcess, tmp_path: Path) -> None:
    good = json.loads(php_request(tmp_path, sandbox))
    tampered = dict(good, signature=good["signature"][:-4] + "AAA=")
    assert post_form(sandbox, json.dumps(tampered))["code"] == "0003"
    changed = php_request(tmp_path, sandbox).replace("out.mp4", "other.mp4")
    assert post_form(sandbox, changed)["code"] == "0003"
    stale = post_form(sandbox, php_request(tmp_path, sandbox, timestamp=int(time.time()) - 400))
    assert (stale["status"], stale["code"], stale["data"]) == ("failure", "0002", 0)
    assert post_form(sandbox, php_request(tmp_path, sandbox, key="wrong-key"))["code"] == "0001"
    codes = [r["code"] for r in sandbox.log()]
    assert codes == ["0003", "0003", "0002", "0001"]
