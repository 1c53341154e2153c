"""Signatures must match API.md's vectors byte for byte; PHP itself is checked in the sandbox tests."""

import pytest

from vaultdrop.clients.signing import control_signature, php_json_encode, vault_signature

SEED_REQUEST = {
    "command": "aws.upload",
    "api_key": "APX4GKLM0RKQLSP2FBO1ROPKSSW47DZE",
    "timestamp": 1700000000,
    "cdn": 158,
    "path": "sestore{#}/jb/path/to/file.mp4",
    "destination_path": "path/to/file.mp4",
    "metadata": {"param1": "value1"},
    "acl": "private",
    "bucket": "my_bucket",
    "callback": "www.mycallbackurl.com/",
}
SEED_SECRET = "8fc8c48da81e6a2a06a9556379bf798af508dc0792497c678b4c3532ba8b637f"


def test_vault_signature_matches_api_md_vector() -> None:
    assert (
        vault_signature("bob", "secret", "1210700000.5", "/upload/new/file")
        == "1.0:bob:18f5c5dfe97ad8a7f98c26f5e2b108ff"
    )


def test_control_signature_matches_api_md_vector() -> None:
    assert control_signature(SEED_SECRET, SEED_REQUEST) == "FfSRJTHWteff/I3tkMqskCkw9dnKE2VWM+qy3JGMusg="


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ({}, "[]"),
        ({"a/b": "c/d"}, '{"a\\/b":"c\\/d"}'),
        ("é", '"\\u00e9"'),
        ("🎬", '"\\ud83c\\udfac"'),
        ({"0": "x", "1": "y"}, '["x","y"]'),
        ({"1": "x"}, '{"1":"x"}'),
        ("tab\tquote\"", '"tab\\tquote\\""'),
        ([1, True, None], "[1,true,null]"),
    ],
)
def test_php_json_encode_follows_php_defaults(value: object, encoded: str) -> None:
    assert php_json_encode(value) == encoded


def test_php_json_encode_refuses_floats() -> None:
    with pytest.raises(TypeError):
        php_json_encode({"handle_time": 0.5})
