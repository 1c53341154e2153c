"""Watching folders: watchdog observers hand file events to the event loop.

The observer thread never touches daemon state: it only calls
`loop.call_soon_threadsafe(on_event, folder, relpath, kind)`. Which paths count as candidates
(temporary names, include/exclude globs, markers, sidecars) is decided here, once, for
both live events and scans.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from ..config import FolderSettings
from ..files import has_lease_capability
from ..job import FileVersion
from ..names import marker_owner, sidecar_owner
from ..netfs import filesystem_type, is_network

# (folder, relpath, event kind): `opened`, `closed` (after writing), `closed_no_write`,
# `deleted` (or moved away), or a change (`modified`, `created`, `moved` in);
# completeness.py counts the writers.
EventCallback = Callable[[FolderSettings, str, str], None]
OPEN_CLOSE_EVENTS = ("opened", "closed", "closed_no_write")
logger = logging.getLogger("vaultdrop.watch")
NOTICES_REMEMBERED = 10_000


class _Notices:
    """Says each (path, reason) once: a rescan meets the same skipped symlink every time,
    and a line per rescan would bury everything else. Bounded, so memory is too."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def log(self, level: int, path: str, reason: str) -> None:
        if not logger.isEnabledFor(level):
            return
        with self._lock:
            if (path, reason) in self._seen:
                return
            if len(self._seen) >= NOTICES_REMEMBERED:
                self._seen.clear()
            self._seen.add((path, reason))
        logger.log(level, "ignored %s: %s", path, reason)


_notices = _Notices()


def is_sidecar(folder: FolderSettings, relpath: str) -> bool:
    """`clip.mov.json` is clip.mov's metadata sidecar while clip.mov exists beside it;
    alone, it is an ordinary file."""
    owner = sidecar_owner(PurePosixPath(relpath).name)
    return owner is not None and (folder.path / relpath).with_name(owner).is_file()


def ignore_reason(folder: FolderSettings, relpath: str) -> tuple[str, str | None]:
    """The media file this event path is about, and why it is ignored (None: it is not).

    A ready marker (`clip.mov.done`) stands for its file; so does a sidecar, whose late
    arrival must not be missed in marker mode. Globs ignore case unless the folder sets
    `case_sensitive_globs`.
    """
    path = PurePosixPath(relpath)
    owner = marker_owner(path.name, folder.ready_marker) or (
        sidecar_owner(path.name) if is_sidecar(folder, relpath) else None)
    if owner is not None:
        path = path.with_name(owner)
        relpath = str(path)
        if marker_owner(path.name, folder.ready_marker) is not None:
            return relpath, "stands for a ready marker, not a media file"
    if path.name.startswith((".", "~")):
        return relpath, "temporary name (dot or ~ prefix)"
    if path.name.lower().endswith(tuple(folder.temp_suffixes)):
        return relpath, "temporary name (temp_suffixes)"
    if any(part.startswith(".") for part in path.parts[:-1]):
        return relpath, "inside a hidden directory"
    if not folder.recursive and len(path.parts) > 1:
        return relpath, "in a subfolder (recursive = false)"
    if not _matches_any(folder, relpath, path.name, folder.include):
        return relpath, "matches no include glob"
    excluded = next((p for p in folder.exclude if _matches_any(folder, relpath, path.name, [p])), None)
    if excluded is not None:
        return relpath, f"exclude glob {excluded!r}"
    return relpath, None


def candidate_for(folder: FolderSettings, relpath: str) -> str | None:
    """The relative path of the media file this event path is about, or None to ignore it
    (said once per path at debug level, so `-v` explains a file that never became a job)."""
    target, reason = ignore_reason(folder, relpath)
    if reason is not None:
        _notices.log(logging.DEBUG, str(folder.path / relpath), reason)
        return None
    return target


def _matches_any(folder: FolderSettings, relpath: str, name: str, patterns: list[str]) -> bool:
    if not folder.case_sensitive_globs:
        relpath, name, patterns = relpath.casefold(), name.casefold(), [p.casefold() for p in patterns]
    return any(fnmatch.fnmatchcase(relpath, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def regular_file_stat(folder: FolderSettings, relpath: str) -> os.stat_result | None:
    """stat() of a regular file inside the folder; None for FIFOs, devices, escaping symlinks."""
    path = folder.path / relpath
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            target = path.resolve(strict=True)
            if not target.is_relative_to(folder.path.resolve()):
                _notices.log(logging.WARNING, str(path), f"symlink out of the folder (to {target}), not followed")
                return None
            info = os.stat(path)
    except (OSError, RuntimeError):
        return None
    if not stat.S_ISREG(info.st_mode):
        _notices.log(logging.DEBUG, str(path), "not a regular file (FIFO, device or socket)")
        return None
    return info


def walk(folder: FolderSettings) -> Iterator[str]:
    """The relative path of every file a scan looks at: hidden directories are not entered,
    nor subfolders when the folder is not recursive (blocking)."""
    root = str(folder.path)
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")] if folder.recursive else []
        for name in files:
            yield os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/")


def scan(folder: FolderSettings) -> list[tuple[str, FileVersion]]:
    """Every candidate regular file in a folder (blocking: run it in a worker thread)."""
    found: list[tuple[str, FileVersion]] = []
    for relpath in walk(folder):
        if candidate_for(folder, relpath) == relpath:
            info = regular_file_stat(folder, relpath)
            if info is not None:
                found.append((relpath, FileVersion.of(info)))
    return found


class _Handler(FileSystemEventHandler):
    def __init__(self, folder: FolderSettings, loop: asyncio.AbstractEventLoop, on_event: EventCallback,
                 on_rescan: Callable[[FolderSettings], None]) -> None:
        self._folder = folder
        self._root = str(folder.path)
        self._loop = loop
        self._on_event = on_event
        self._on_rescan = on_rescan

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if event.is_directory:
            path = os.fsdecode(event.dest_path if kind == "moved" else event.src_path)
            if kind in ("moved", "created") and path != self._root:
                self._loop.call_soon_threadsafe(self._on_rescan, self._folder)
            return
        if kind == "moved":  # its old name is gone: what was known of it goes too
            self._send(os.fsdecode(event.src_path), "deleted")
            self._send(os.fsdecode(event.dest_path), kind)
        else:
            self._send(os.fsdecode(event.src_path), kind)

    def _send(self, path: str, kind: str) -> None:
        relpath = os.path.relpath(path, self._root).replace(os.sep, "/")
        if relpath.startswith("../"):
            return
        target = candidate_for(self._folder, relpath)
        if target is None:
            return
        if target != relpath:  # a marker or sidecar: only its writing counts, as a change of its file
            if kind in OPEN_CLOSE_EVENTS or kind == "deleted":
                return
            kind = "modified"
        self._loop.call_soon_threadsafe(self._on_event, self._folder, target, kind)


# Every event but opens and reads' closes: where the kernel says who writes a file, they only
# cost a loop wake-up each, for every open anyone makes (our own uploads' and probes' too).
WITHOUT_OPENS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent,
    DirCreatedEvent, DirModifiedEvent, DirMovedEvent, DirDeletedEvent]


def needs_open_events(folder: FolderSettings) -> bool:
    """Whether intake must count opens and closes itself: the kernel answers "is anyone
    writing it" for every file only with CAP_LEASE and on a local file system."""
    if folder.watcher == "polling":
        return True  # a polling watcher sees no opens at all: nothing to leave out
    return not has_lease_capability() or is_network(filesystem_type(folder.path))


def _directory_identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


@dataclass
class FolderWatch:
    """One observer thread per folder, so folders can be added and removed on reload."""

    folder: FolderSettings
    observer: BaseObserver
    identity: tuple[int, int] | None

    @classmethod
    def start(cls, folder: FolderSettings, loop: asyncio.AbstractEventLoop, on_event: EventCallback,
              on_rescan: Callable[[FolderSettings], None]) -> FolderWatch:
        identity = _directory_identity(folder.path)
        observer: BaseObserver = (
            PollingObserver(timeout=folder.poll_interval) if folder.watcher == "polling" else Observer()
        )
        observer.schedule(_Handler(folder, loop, on_event, on_rescan), str(folder.path), recursive=folder.recursive,
                          event_filter=None if needs_open_events(folder) else WITHOUT_OPENS)
        observer.daemon = True
        observer.start()
        return cls(folder, observer, identity)

    def is_live(self) -> bool:
        """Whether events still arrive: a deleted folder stops its emitter (even when a new
        folder reuses the inode at once), a moved one leaves another directory at the path."""
        emitters = self.observer.emitters
        return (bool(emitters) and all(e.is_alive() for e in emitters)
                and _directory_identity(self.folder.path) == self.identity)

    @staticmethod
    def folder_exists(folder: FolderSettings) -> bool:
        return _directory_identity(folder.path) is not None

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)


class OverflowHook(logging.Handler):
    """watchdog reports a lost-events overflow only as a log line: turn it into a rescan."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._loop = loop
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._loop.call_soon_threadsafe(self._on_overflow)

    def install(self) -> None:
        logging.getLogger("watchdog.observers").addHandler(self)

    def remove(self) -> None:
        logging.getLogger("watchdog.observers").removeHandler(self)

