"""Settling: a file is complete once it has stopped changing for `settle` seconds.

Every event for a path restarts its timer; when the timer fires, size and mtime must be
what they were at the last event, and in marker mode the marker must exist. Runs on the
event loop only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from .config import FolderSettings
from .model import stat_key
from .watch import candidate_for, regular_file_stat

ReadyCallback = Callable[[FolderSettings, str, os.stat_result], None]


class Settler:
    def __init__(self, loop: asyncio.AbstractEventLoop, on_ready: ReadyCallback) -> None:
        self._loop = loop
        self._on_ready = on_ready
        self._pending: dict[tuple[str, str], tuple[asyncio.TimerHandle, tuple[int, int, int]]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def touch(self, folder: FolderSettings, relpath: str) -> None:
        """Something happened to this path: (re)start its settle timer."""
        key = (str(folder.path), relpath)
        previous = self._pending.pop(key, None)
        if previous is not None:
            previous[0].cancel()
        info = regular_file_stat(folder, relpath)
        if info is None:
            return
        handle = self._loop.call_later(folder.settle, self._check, folder, relpath)
        self._pending[key] = (handle, stat_key(info))

    def _check(self, folder: FolderSettings, relpath: str) -> None:
        key = (str(folder.path), relpath)
        _, before = self._pending.pop(key)
        info = regular_file_stat(folder, relpath)
        if info is None:
            return
        if stat_key(info) != before:
            self.touch(folder, relpath)
            return
        if folder.ready_marker and not (folder.path / (relpath + folder.ready_marker)).exists():
            return
        if candidate_for(folder, relpath) != relpath:
            return  # e.g. an x.y.json whose x.y appeared meanwhile: a sidecar, not a job
        self._on_ready(folder, relpath, info)

    def forget_folder(self, folder: FolderSettings) -> None:
        """A folder was removed on reload: drop its pending timers."""
        for key in [k for k in self._pending if k[0] == str(folder.path)]:
            self._pending.pop(key)[0].cancel()

    def close(self) -> None:
        for handle, _ in self._pending.values():
            handle.cancel()
        self._pending.clear()
