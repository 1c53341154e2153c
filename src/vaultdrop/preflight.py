"""Checks that catch at start what would otherwise fail at the first file, hours later.

`check_directories` proves every directory the daemon writes to can be created and
written; `check_online` asks the vault for an upload key and the control API (when one
is configured) for `files.getstorage`, so rejected credentials stop the daemon before
READY=1. Both raise ConfigError (exit 78) naming the key to fix.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from .clients.control import ControlClient
from .clients.vault import VaultClient
from .config import Settings
from .errors import ConfigError, VaultdropError

CHECK_TIMEOUT = 10.0  # seconds: a blackholed host must not hold READY=1 past systemd's start timeout


def _writable(path: Path, key: str, source: str) -> None:
    """Create it the way the daemon would and write a probe file: only that proves it
    (root passes access(2) on /proc and on read-only bind mounts alike)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"{source}: {key}: cannot write to {path}: {exc.strerror or exc}") from None


def check_directories(settings: Settings) -> None:
    """state_dir, and every folder's archive_dir and failed_dir, exist (or are made) and are writable."""
    _writable(settings.daemon.state_dir, "daemon.state_dir", settings.source)
    for index, folder in enumerate(settings.folders):
        for key in ("archive_dir", "failed_dir"):
            path: Path | None = getattr(folder, key)
            if path is not None:
                _writable(path, f"folders[{index}].{key}", settings.source)


async def check_online(settings: Settings) -> list[str]:
    """One authenticated call to each service; a line per service for the operator.

    Rejected credentials raise ConfigError; a service that is down raises what the client
    raised (Unavailable, RetryLater), so the daemon can start anyway and wait it out.
    """
    vault = VaultClient.from_settings(settings.vault.model_copy(update={"timeout": CHECK_TIMEOUT}))
    answers = [await _ask(f"vault {settings.vault.base_url}", vault.new_upload_key(), vault.aclose)]
    engine = settings.scaleengine
    if engine is not None:
        control = ControlClient.from_settings(engine.model_copy(update={"timeout": CHECK_TIMEOUT}))
        answers.append(await _ask(f"control API {engine.api_url}", control.get_storage(), control.aclose))
    return answers


async def _ask(service: str, call: Coroutine[Any, Any, str], close: Callable[[], Awaitable[None]]) -> str:
    """Each error keeps its class (what to do next) and gains the service's name."""
    try:
        await call
    except VaultdropError as exc:
        raise type(exc)(f"{service}: {exc}") from None
    finally:
        await close()
    return f"{service}: credentials accepted"
