"""Completeness: when a file in a watched folder is finished, and why it is not yet.

A file is complete when all of these hold:
- nobody has it open for writing. The kernel says so where it will (files.open_for_writing:
  a read lease is refused exactly while a writer holds the file); elsewhere inotify's
  opens and closes (watchdog's opened, closed and closed_no_write events) are counted: a
  file changed while open is being written until the last close. Readers (a player, our
  own upload) never count.
- it stopped changing for `settle` seconds (size, mtime, inode and change time), and in
  marker mode its ready marker exists;
- with `complete = "auto"`, its container does not say it is unfinished (intake/containers.py):
  an MP4 without its moov or an MXF without its footer waits; one that stays unchanged
  and incomplete for `incomplete_timeout` is admitted all the same, and its job fails
  with the reason in words (stages/upload.py).

A file that was closed after writing and whose container says it is complete needs no
settle time: it is admitted at once. Runs on the event loop only. The runner asks
`waiting_reason` before it sends a file that changed after admission, and `writing`
before a post-action, so the newest version wins end to end.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import containers
from ..config import FolderSettings
from ..files import open_for_writing
from ..job import FileVersion
from ..logs import log
from .watch import candidate_for, is_sidecar, regular_file_stat

ReadyCallback = Callable[[FolderSettings, str, FileVersion], None]
SETTLED_REMEMBERED = 10_000
OPEN, SETTLING, INCOMPLETE, OPEN_TOO_LONG = "open", "settling", "incomplete", "open_too_long"
FAST_EVENTS = ("closed", "created", "moved")  # a writer's close, or a file renamed or linked into the folder
WAIT_REASONS = (SETTLING, OPEN, INCOMPLETE, OPEN_TOO_LONG)  # the last one counts files also counted as open


@dataclass
class _Track:
    """What the loop knows about one path that is not (yet) complete."""

    folder: FolderSettings
    version: FileVersion | None = None  # at the last look; the timer checks it still holds
    timer: asyncio.TimerHandle | None = None
    opens: int = 0  # opened minus closed, as inotify told
    written: bool = False  # changed since the last time nobody had it open
    open_since: float | None = None  # when a check first found a writer
    incomplete_since: float | None = None
    reason: str = SETTLING  # why it waits, in the metric's words
    said: set[str] = field(default_factory=set)  # per-file lines already logged

    @property
    def writing(self) -> bool:
        """inotify's word, where the kernel gives none: counts can be off (identical events
        in a row are merged), so it is only the fallback."""
        return self.opens > 0 and self.written


def marker_missing(folder: FolderSettings, relpath: str) -> bool:
    """In marker mode, whether the file's ready marker is not there yet."""
    return bool(folder.ready_marker) and not (folder.path / (relpath + folder.ready_marker)).exists()


def container_verdict(folder: FolderSettings, relpath: str,
                      judge: Callable[[Path], containers.Verdict] = containers.judge) -> containers.Verdict:
    """What the file's container says of its completeness, where the folder asks (`complete = "auto"`)."""
    if folder.complete != "auto":
        return containers.UNRECOGNISED
    try:
        return judge(folder.path / relpath)
    except OSError:
        return containers.UNRECOGNISED  # unreadable now: settle decides, the upload says why


class Completeness:
    def __init__(self, loop: asyncio.AbstractEventLoop, on_ready: ReadyCallback,
                 folders: Mapping[str, FolderSettings],
                 judge: Callable[[Path], containers.Verdict] = containers.judge) -> None:
        self._loop = loop
        self._folders = folders  # the watched folders, by path (the daemon's live mapping)
        self._on_ready = on_ready
        self._judge = judge
        self._tracks: dict[tuple[str, str], _Track] = {}
        # The version each path had when it was last found complete (bounded: a forgotten
        # path is settled again when asked, which is only slower).
        self._settled: dict[tuple[str, str], FileVersion] = {}
        self._kernel_silent = False  # said once: the kernel would not tell about writers

    # -- what the watcher and the scans say ---------------------------------------

    def event(self, folder: FolderSettings, relpath: str, kind: str) -> None:
        """A watcher event: `opened`, `closed` (after writing), `closed_no_write`, `deleted`,
        or a change (`modified`, `created`, `moved`...)."""
        key = (str(folder.path), relpath)
        if kind == "deleted":  # deleted, or moved away (its new name has an event of its own)
            self._forget(key)
            self._settled.pop(key, None)
            return
        track = self._tracks.get(key)
        if kind == "opened":
            if track is None and not os.path.lexists(folder.path / relpath):
                return  # already deleted: its events came late
            track = track or self._tracks.setdefault(key, _Track(folder))
            track.opens += 1
            return
        if kind in ("closed", "closed_no_write"):
            if track is not None:
                track.opens = max(0, track.opens - 1)
                if track.opens == 0 or kind == "closed":
                    track.written = False
                if track.opens == 0 and track.timer is None and kind == "closed_no_write":
                    self._tracks.pop(key)  # a reader came and went: nothing to remember
                    return
            if kind == "closed_no_write":
                return
        elif track is not None and track.opens > 0:
            track.written = True
        version = self._stat(folder, relpath)
        if version is None:
            return
        if kind in FAST_EVENTS and self._fast(folder, relpath, version, closed=kind == "closed"):
            return
        self.touch(folder, relpath, version)

    def touch(self, folder: FolderSettings, relpath: str, version: FileVersion | None = None) -> None:
        """Something happened to this path: (re)start its settle timer. The path is a candidate
        already (watch.candidate_for: the watcher and the scan filter at the door); `version` is
        the stat() the caller just made, so that it is not made again."""
        key = (str(folder.path), relpath)
        track = self._tracks.get(key)
        if version is None:
            version = self._stat(folder, relpath)
            if version is None:
                return
        track = track or self._tracks.setdefault(key, _Track(folder))
        track.folder = folder
        if track.timer is not None:
            track.timer.cancel()
        if track.version != version:
            track.incomplete_since = None
        track.version = version
        track.timer = self._loop.call_later(folder.settle, self._check, key)

    def _stat(self, folder: FolderSettings, relpath: str) -> FileVersion | None:
        """The path's regular file now; None (and nothing tracked) when there is none."""
        info = regular_file_stat(folder, relpath)
        if info is None:
            self._forget((str(folder.path), relpath))
            return None
        return FileVersion.of(info)

    def lost_events(self) -> None:
        """An event queue overflow: opens and closes may be missing, so no count is trusted
        (a writer becomes visible again by its next write); the rescan that follows touches
        every file anew."""
        for track in self._tracks.values():
            track.opens, track.written, track.open_since = 0, False, None

    # -- the verdicts ----------------------------------------------------------------

    def _fast(self, folder: FolderSettings, relpath: str, version: FileVersion, *, closed: bool) -> bool:
        """Nobody writing it and its container says it is whole: admit now, without the
        settle time. Where the kernel does not say who writes, only right after the writer
        closed it (a file renamed into the folder may still be held open)."""
        key = (str(folder.path), relpath)
        track = self._tracks.get(key)
        if folder.complete != "auto" or folder.ready_marker or version.st_size == 0:
            return False
        if self._settled.get(key) == version:
            return True  # this very version was admitted a moment ago (its create and close both came)
        kernel = open_for_writing(folder.path / relpath)
        if kernel or (kernel is None and (not closed or (track is not None and track.writing))):
            return False
        if self._verdict(folder, relpath).state != "complete":
            return False
        if is_sidecar(folder, relpath):
            return False
        self._complete(key, folder, relpath, version)
        return True

    def _check(self, key: tuple[str, str]) -> None:
        track = self._tracks[key]
        track.timer = None
        folder, relpath = track.folder, key[1]
        version = self._stat(folder, relpath)
        if version is None:
            return
        now = self._loop.time()
        if version != track.version:
            self.touch(folder, relpath, version)
            return
        if self._writer(folder, relpath, track):
            track.reason = OPEN
            track.open_since = track.open_since or now
            if now - track.open_since >= folder.incomplete_timeout:
                self._say(track, "open_long", logging.WARNING, f"{relpath}: open for writing for "
                          f"{now - track.open_since:.0f} s and still not closed: not uploaded while it is open")
            else:
                self._say(track, OPEN, logging.DEBUG, f"{relpath}: waits: open for writing")
            self.touch(folder, relpath, version)
            return
        track.open_since = None
        if marker_missing(folder, relpath):
            self._tracks.pop(key)
            return
        if is_sidecar(folder, relpath):  # the one part of the door's filter that moves: x.y appeared beside
            self._tracks.pop(key)      # this x.y.json meanwhile, so it is a sidecar, not a job
            return
        verdict = self._verdict(folder, relpath)
        if verdict.state == "incomplete":
            track.incomplete_since = track.incomplete_since or now
            if now - track.incomplete_since < folder.incomplete_timeout:
                track.reason = INCOMPLETE
                self._say(track, INCOMPLETE, logging.DEBUG, f"{relpath}: waits: {verdict.reason}")
                track.timer = self._loop.call_later(max(folder.settle, 1.0), self._check, key)
                return
        self._complete(key, folder, relpath, version)

    def _writer(self, folder: FolderSettings, relpath: str, track: _Track | None) -> bool:
        """Whether someone has the file open for writing: the kernel's answer, else inotify's."""
        answer = open_for_writing(folder.path / relpath)
        if answer is not None:
            return answer
        if not self._kernel_silent and os.path.exists(folder.path / relpath):
            self._kernel_silent = True
            log(logging.INFO, f"the kernel does not say who writes {folder.path / relpath} (another user's file "
                "without CAP_LEASE, or a network file system): open writers are known from inotify's opens and "
                "closes there", folder=str(folder.path))
        return track is not None and track.writing

    def _verdict(self, folder: FolderSettings, relpath: str) -> containers.Verdict:
        return container_verdict(folder, relpath, self._judge)

    def _complete(self, key: tuple[str, str], folder: FolderSettings, relpath: str, version: FileVersion) -> None:
        self._forget(key)
        self._settled.pop(key, None)  # re-inserted last: the oldest entries are the ones dropped
        self._settled[key] = version
        if len(self._settled) > SETTLED_REMEMBERED:
            self._settled.pop(next(iter(self._settled)))
        self._on_ready(folder, relpath, version)

    @staticmethod
    def _say(track: _Track, what: str, level: int, text: str) -> None:
        """One line per file and reason (`run -v` shows the debug ones), not one per check."""
        if what not in track.said:
            track.said.add(what)
            log(level, text, folder=str(track.folder.path))

    # -- what the runner asks ------------------------------------------------------

    def writing(self, path: Path) -> bool:
        """Whether someone has this file open for writing."""
        found = self._locate(path)
        if found is None:
            return False
        folder, relpath = found
        return self._writer(folder, relpath, self._tracks.get((str(folder.path), relpath)))

    def waiting_reason(self, path: Path) -> str | None:
        """None when the file at `path` is complete as it is now; else why it waits. A
        version not seen complete yet is settled from now on (events may have been missed)."""
        found = self._locate(path)
        if found is None:
            return None  # not in a watched folder: nothing here can judge it
        folder, relpath = found
        key = (str(folder.path), relpath)
        track = self._tracks.get(key)
        if self._writer(folder, relpath, track):
            return "open for writing"
        if track is not None and track.timer is not None:
            return "incomplete container" if track.reason == INCOMPLETE else "settling"
        info = regular_file_stat(folder, relpath)
        version = None if info is None else FileVersion.of(info)
        if version is None or self._settled.get(key) == version:
            return None
        self._arrive(folder, relpath, version)
        return "settling"

    def look_again(self, path: Path) -> None:
        """Settle a path whose content turned out not to be its job's (stages/finish.py)."""
        found = self._locate(path)
        if found is not None:
            self._arrive(*found)

    def _arrive(self, folder: FolderSettings, relpath: str, version: FileVersion | None = None) -> None:
        """A path the runner brings settles as a watched one does: through the filter first."""
        if candidate_for(folder, relpath) == relpath:
            self.touch(folder, relpath, version)

    def waiting(self) -> Counter[str]:
        """How many files wait, and why (the metric and `status`)."""
        counts: Counter[str] = Counter({reason: 0 for reason in WAIT_REASONS})
        now = self._loop.time()
        for track in self._tracks.values():
            if track.timer is None:
                continue
            counts[track.reason] += 1
            if track.reason == OPEN and track.open_since is not None \
                    and now - track.open_since >= track.folder.incomplete_timeout:
                counts[OPEN_TOO_LONG] += 1
        return counts

    def _locate(self, path: Path) -> tuple[FolderSettings, str] | None:
        folder = next((f for f in self._folders.values() if path.is_relative_to(f.path)), None)
        return None if folder is None else (folder, path.relative_to(folder.path).as_posix())

    # -- folders ------------------------------------------------------------------

    def forget_folder(self, folder: FolderSettings) -> None:
        """A folder was removed on reload: drop its pending timers."""
        for key in [k for k in self._tracks if k[0] == str(folder.path)]:
            self._forget(key)

    def _forget(self, key: tuple[str, str]) -> None:
        track = self._tracks.pop(key, None)
        if track is not None and track.timer is not None:
            track.timer.cancel()

    def close(self) -> None:
        for track in self._tracks.values():
            if track.timer is not None:
                track.timer.cancel()
        self._tracks.clear()
