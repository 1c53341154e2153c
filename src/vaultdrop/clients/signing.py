"""Request signatures for both remote APIs, byte-exact with the vendors' clients.

The sandbox verifies with the same functions, so any drift shows up as a test failure
against the API.md vectors, PHP itself and curl.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


def _md5hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def vault_signature(user: str, password: str, timestamp: str, path: str, data: str = "") -> str:
    """SesameVault signature (vendor Ruby library): `path` is the URL path only."""
    cypher = _md5hex(password)
    inner = _md5hex(timestamp + user + cypher + path + data)
    return f"1.0:{user}:{_md5hex(cypher + inner)}"


def php_json_encode(value: Any) -> str:
    """Encode exactly as PHP's json_encode() does with default flags.

    Escaped `/`, `\\uXXXX` for non-ASCII (surrogate pairs above U+FFFF), no spaces, and
    PHP's array rule: an empty map or one keyed "0".."n-1" in order is a JSON list.
    Floats are refused: their PHP rendering is not worth reproducing for a signature.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise TypeError("floats are not allowed in a signed control-API request")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True).replace("/", "\\/")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(php_json_encode(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = [str(k) for k in value]
        if keys == [str(i) for i in range(len(keys))]:
            return "[" + ",".join(php_json_encode(v) for v in value.values()) + "]"
        return "{" + ",".join(
            php_json_encode(str(k)) + ":" + php_json_encode(v) for k, v in value.items()
        ) + "}"
    raise TypeError(f"cannot encode {type(value).__name__} for the control API")


def control_signature(api_secret: str, request: dict[str, Any]) -> str:
    """base64(HMAC-SHA256) over the PHP encoding of `request` (without `signature`)."""
    body = php_json_encode({k: v for k, v in request.items() if k != "signature"})
    digest = hmac.new(api_secret.encode("utf-8"), body.encode("ascii"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sign_control_request(api_secret: str, request: dict[str, Any]) -> str:
    """The form value to send: the signed bytes plus the signature, field last."""
    signed = dict(request)
    signed["signature"] = control_signature(api_secret, request)
    return php_json_encode(signed)
