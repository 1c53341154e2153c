"""Byte-exact control-API signatures: PHP itself (Debian's php-cli) produces the vectors."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from vaultdrop.clients.signing import control_signature, php_json_encode

SECRET = "8fc8c48da81e6a2a06a9556379bf798af508dc0792497c678b4c3532ba8b637f"
CASES = {
    "ascii": {"param1": "value1"},
    "slashes": {"dir/name": "a/b/c.mp4", "url": "https://example.com/x?y=1"},
    "non_ascii": {"titre": "Été à Zürich", "名前": "動画"},
    "astral": {"emoji": "clip 🎬 🍿", "math": "𝔸"},
    "empty": {},
    "controls": {"text": "line\nbreak\ttab \"quoted\" back\\slash"},
}

PHP = r"""
$cases = json_decode(file_get_contents('php://stdin'), true);
$out = array();
foreach ($cases as $name => $metadata) {
    $request = array(
        'command' => 'aws.upload',
        'api_key' => 'APX4GKLM0RKQLSP2FBO1ROPKSSW47DZE',
        'timestamp' => 1700000000,
        'cdn' => 158,
        'path' => 'sestore3/jb/path/to/file.mp4',
        'destination_path' => 'path/to/file.mp4',
        'metadata' => $metadata,
        'acl' => 'private',
        'bucket' => 'my_bucket',
        'callback' => '',
    );
    $json = json_encode($request);
    $out[$name] = array('json' => $json,
        'sig' => base64_encode(hash_hmac('sha256', $json, '%s', true)));
}
echo json_encode($out);
"""


@pytest.fixture(scope="module")
def php_vectors() -> dict[str, dict[str, str]]:
    if shutil.which("php") is None:
        pytest.skip("php-cli is not installed (make test installs it)")
    # json_decode(..., true) gives PHP the associative arrays a PHP caller would hold
    # (the empty object becomes array(), which json_encode prints as []).
    payload = json.dumps(CASES, ensure_ascii=False)
    result = subprocess.run(["php", "-r", PHP % SECRET], input=payload.encode(), capture_output=True,
                            check=True, timeout=30)
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", sorted(CASES))
def test_encoding_and_signature_match_php(php_vectors: dict[str, dict[str, str]], name: str) -> None:
    request = {
        "command": "aws.upload", "api_key": "APX4GKLM0RKQLSP2FBO1ROPKSSW47DZE", "timestamp": 1700000000,
        "cdn": 158, "path": "sestore3/jb/path/to/file.mp4", "destination_path": "path/to/file.mp4",
        "metadata": CASES[name], "acl": "private", "bucket": "my_bucket", "callback": "",
    }
    assert php_json_encode(request) == php_vectors[name]["json"]
    assert control_signature(SECRET, request) == php_vectors[name]["sig"]
