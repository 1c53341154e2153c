"""Upload keys, upload attempts and stored videos: the vault's state and its rules.

Every state change is synchronous (no await inside), so on the single event loop each
one is atomic: a completing upload and a newer POST for the same key cannot interleave.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from aiohttp import StreamReader

from .settings import SandboxSettings
from .snapshot import append_json_line, load_json_lines
from .vaultxml import VaultError

KEY_TTL_SECONDS = 24 * 3600
FALLBACK_FILENAME = "upload.bin"


class Superseded(Exception):
    """A newer POST for the same key took over: this attempt must never complete."""


@dataclass
class Attempt:
    """One POST streaming into a key; `received`/`size` are what progress.xml shows."""

    key: str
    number: int
    transport: asyncio.Transport | None
    body: StreamReader
    size: int

    @property
    def received(self) -> int:
        """Request-body bytes arrived so far, read or still buffered: live, not per chunk."""
        return self.body.total_bytes


@dataclass
class UploadKey:
    key: str
    created: float
    completed: float | None = None
    visible_at: float | None = None  # when video_id starts showing in progress.xml
    stored_size: int = 0
    attempts: int = 0
    live: Attempt | None = field(default=None, repr=False)


@dataclass
class StoredVideo:
    video_id: str
    filename: str
    size: int
    sha256: str
    path: str


def safe_filename(raw: str | None) -> str:
    """Basename of the client's filename, without control characters or dot-names."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    name = name.encode("utf-8")[:255].decode("utf-8", "ignore")
    return FALLBACK_FILENAME if name in ("", ".", "..") else name


class VaultStore:
    def __init__(self, settings: SandboxSettings) -> None:
        self._settings = settings
        self._state_path = settings.root / "vault-state.jsonl"
        self.incoming = settings.root / "incoming"
        shutil.rmtree(self.incoming, ignore_errors=True)  # leftovers of broken uploads
        self.incoming.mkdir(parents=True)
        self._keys: dict[str, UploadKey] = {}
        self._videos: dict[str, StoredVideo] = {}
        for change in load_json_lines(self._state_path):
            self._apply(change)

    def _apply(self, change: dict[str, Any]) -> None:
        if "key" in change:
            self._keys[change["key"]["key"]] = UploadKey(**change["key"])
        if "video" in change:
            self._videos[change["video"]["video_id"]] = StoredVideo(**change["video"])
        if "forget" in change:
            self._keys.pop(change["forget"], None)
            self._videos.pop(change["forget"], None)

    def _save(self, entry: UploadKey | None = None, video: StoredVideo | None = None, forget: str | None = None) -> None:
        """Append one change to the state log: constant cost per call (rewriting the whole
        state made 10,000 uploads cost time quadratic in the keys held)."""
        change: dict[str, Any] = {}
        if entry is not None:
            # Not asdict(): it deep-copies `live`, which holds the streaming request's socket.
            change["key"] = {f.name: getattr(entry, f.name) for f in fields(entry) if f.name != "live"}
        if video is not None:
            change["video"] = asdict(video)
        if forget is not None:
            change["forget"] = forget
        append_json_line(self._state_path, change)

    def issue_key(self) -> str:
        key = str(uuid.uuid4())
        self._keys[key] = UploadKey(key=key, created=time.time())
        self._save(self._keys[key])
        return key

    def newest_completed_key(self) -> str | None:
        done = [entry for entry in self._keys.values() if entry.completed is not None]
        return max(done, key=lambda entry: entry.completed or 0).key if done else None

    def lookup(self, key: str) -> UploadKey:
        entry = self._keys.get(key)
        if entry is None or (entry.completed is None and time.time() - entry.created > KEY_TTL_SECONDS):
            raise VaultError(404, "unknown_key", "upload key unknown or expired")
        return entry

    def begin(self, key: str, transport: asyncio.Transport | None, body: StreamReader, size: int) -> Attempt:
        """Start a POST on `key`; the newest POST wins, an older live one is cut off."""
        entry = self.lookup(key)
        if entry.completed is not None:
            raise VaultError(409, "key_used", "upload key already used by a completed upload")
        if entry.live is not None and entry.live.transport is not None:
            entry.live.transport.abort()
        entry.attempts += 1
        entry.live = Attempt(key=key, number=entry.attempts, transport=transport, body=body, size=size)
        return entry.live

    def temp_path(self, attempt: Attempt) -> Path:
        return self.incoming / f"{attempt.key}.{attempt.number}.part"

    def abandon(self, attempt: Attempt) -> None:
        """The POST broke off: the key goes back to 'nothing received' and stays usable."""
        self.temp_path(attempt).unlink(missing_ok=True)
        entry = self._keys.get(attempt.key)
        if entry is not None and entry.live is attempt:
            entry.live = None

    def replaced(self, attempt: Attempt) -> bool:
        """True once a newer POST has started on the attempt's key."""
        entry = self._keys.get(attempt.key)
        return entry is not None and entry.attempts != attempt.number

    def complete(self, attempt: Attempt, filename: str, size: int, sha256: str, delay: float) -> StoredVideo:
        """Move the finished temp file into storage and mark the key used, in one step."""
        entry = self._keys.get(attempt.key)
        if entry is None or entry.live is not attempt or entry.completed is not None:
            raise Superseded(attempt.key)
        target_dir = self._settings.user_dir / attempt.key
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / filename
        os.replace(self.temp_path(attempt), target)
        now = time.time()
        entry.completed, entry.visible_at, entry.stored_size, entry.live = now, now + delay, size, None
        video = StoredVideo(attempt.key, filename, size, sha256, str(target))
        self._videos[attempt.key] = video
        self._save(entry, video)
        return video

    def progress(self, key: str) -> tuple[str | None, int, int]:
        """(video_id or None, received, size) as progress.xml reports them."""
        entry = self.lookup(key)
        if entry.completed is not None:
            visible = entry.visible_at is None or time.time() >= entry.visible_at
            return (entry.key if visible else None), entry.stored_size, entry.stored_size
        if entry.live is not None:
            return None, entry.live.received, entry.live.size
        return None, 0, 0

    def delete(self, video_id: str) -> None:
        video = self._videos.pop(video_id, None)
        if video is None:
            raise VaultError(404, "not_found", "no such video")
        shutil.rmtree(Path(video.path).parent, ignore_errors=True)
        self._keys.pop(video_id, None)
        self._save(forget=video_id)

    def videos(self) -> list[dict[str, Any]]:
        return [asdict(video) for video in self._videos.values()]
