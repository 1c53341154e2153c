"""SesameVault request authentication, checked with the daemon's own signing code.

Verification recomputes the signature with `vault_signature` over the path the server
received, so the sandbox and the client can only agree if the wire bytes agree.
"""

from __future__ import annotations

import hmac
import math
import time

from ..clients.signing import vault_signature
from .settings import SandboxSettings
from .vaultxml import VaultError

TIME_WINDOW_SECONDS = 900


def check_vault_signature(settings: SandboxSettings, signature: str | None, date: str | None, path: str) -> None:
    """Raise VaultError 403 bad_signature / 401 expired unless the request is signed right."""
    if not signature or not date:
        raise VaultError(403, "bad_signature", "signature or date missing")
    version, _, rest = signature.partition(":")
    user, _, digest = rest.rpartition(":")
    if version != "1.0" or not digest:
        raise VaultError(403, "bad_signature", "malformed signature")
    if not hmac.compare_digest(user.encode(), settings.user.encode()):
        raise VaultError(403, "bad_signature", "unknown user")
    try:
        stamp = float(date)
    except ValueError:
        raise VaultError(403, "bad_signature", "date is not a unix time") from None
    if not math.isfinite(stamp) or abs(time.time() - stamp) > TIME_WINDOW_SECONDS:
        raise VaultError(401, "expired", f"date outside the {TIME_WINDOW_SECONDS} s window")
    expected = vault_signature(settings.user, settings.password, date, path)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise VaultError(403, "bad_signature", "signature mismatch")
