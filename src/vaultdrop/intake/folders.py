"""The watched folders: watch → settle → admit, for every configured folder.

One object holds what intake does while the daemon runs: a watcher per folder (started,
replaced or stopped to match the configuration at start-up and on reload, and started
once a folder that is missing comes, or comes back: a late mount, a deleted folder made
again), the scans that find files no event announced
(at start, every `rescan_interval`, after lost events), the settle step (Completeness)
and admission. A path is filtered once, at the door (the watcher's event or the scan:
watch.candidate_for), and stat()ed there; the settle check's own stat() is the version
admission journals. A new job wakes the scheduler; nothing here calls up into the daemon.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ..config import FolderSettings, Settings
from ..job import FileVersion, Job, version_print
from ..journal import JournalUnavailable
from ..journal.committer import Committer
from ..logs import log
from .admission import admit
from .completeness import Completeness
from .watch import FolderWatch, OverflowHook, scan

WATCH_CHECK_INTERVAL = 1.0  # how soon a deleted and recreated folder is watched again
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class WatchedFolders:
    """`spawn` runs a coroutine in the background under the daemon's eye (an unwritable
    journal met there stops the daemon, any other error is reported); `wake` tells the
    scheduler a job was admitted; `on_watching(folder)` hears of each watcher started."""

    def __init__(self, committer: Committer, *, spawn: Spawn, wake: Callable[[], None],
                 on_watching: Callable[[str], None] = lambda folder: None) -> None:
        self._loop = asyncio.get_running_loop()
        self._committer = committer
        self._spawn = spawn
        self._wake = wake
        self._on_watching = on_watching
        self.folders: dict[str, FolderSettings] = {}  # by path; the scheduler reads this live mapping
        self._watches: dict[str, FolderWatch] = {}  # a folder missing since the start has none yet
        self._missing: set[str] = set()  # configured folders that do not exist now (logged once)
        self._rescan_interval = 0.0
        self._admitting = asyncio.Lock()
        self.completeness = Completeness(self._loop, self._on_settled, self.folders)
        self._overflow = OverflowHook(self._loop, self._rescan_all)

    def folder_for(self, job: Job) -> FolderSettings | None:
        return self.folders.get(job.folder)

    @property
    def missing(self) -> list[str]:
        """Configured folders that do not exist now, for `status` and the metrics."""
        return sorted(self._missing)

    def apply(self, settings: Settings) -> None:
        """Start, replace or stop watchers so they match the configuration (start-up and reload)."""
        self._overflow.install()  # before the first watcher; logging adds a handler only once
        self._rescan_interval = settings.daemon.rescan_interval
        wanted = {str(f.path): f for f in settings.folders}
        for key in list(self.folders):
            if key not in wanted or wanted[key] != self.folders[key]:
                watch = self._watches.pop(key, None)
                if watch is not None:
                    watch.stop()
                self._missing.discard(key)
                self.completeness.forget_folder(self.folders.pop(key))
                log(logging.INFO, f"stopped watching {key}", folder=key)
        for key, folder in wanted.items():
            if key not in self.folders:
                self.folders[key] = folder
                self._on_watching(key)
                if self._start(key, folder):
                    log(logging.INFO, f"watching {key} ({folder.watcher}, settle {folder.settle:g} s, "
                        f"after upload: {folder.after_upload})", folder=key)
                else:
                    self._gone(key, watched_before=False)

    def _start(self, key: str, folder: FolderSettings) -> bool:
        """Watch and rescan the folder; False when it is not there (it may also vanish
        between the check and the watch). Any other reason not to watch it is raised."""
        if not FolderWatch.folder_exists(folder):
            return False
        try:
            self._watches[key] = FolderWatch.start(folder, self._loop, self.completeness.event, self._rescan)
        except OSError:
            if FolderWatch.folder_exists(folder):
                raise
            return False
        self._missing.discard(key)
        self._rescan(folder)
        return True

    def _gone(self, key: str, watched_before: bool) -> None:
        """Say once that a folder is missing; status and the metrics show it meanwhile."""
        if key not in self._missing:
            self._missing.add(key)
            what = ("disappeared: watching it again once it is back" if watched_before
                    else "does not exist (yet: a mount not up?): watching it once it does")
            log(logging.WARNING, f"folder {key} {what}", folder=key)

    async def keep_watching(self) -> None:
        """A watch dies with its directory: a folder missing at the start (a late mount), or
        deleted or moved away and created again, is watched (and rescanned) within
        WATCH_CHECK_INTERVAL of being there."""
        while True:
            await asyncio.sleep(WATCH_CHECK_INTERVAL)
            for key, folder in list(self.folders.items()):
                watch = self._watches.get(key)
                if self.folders.get(key) is not folder or (watch is not None and watch.is_live()):
                    continue  # replaced by a reload meanwhile, or fine
                try:
                    started = self._start(key, folder)
                except OSError:
                    continue  # there, but not watchable this time (a mount still settling): try again
                if not started:
                    self._gone(key, watched_before=watch is not None)
                    continue
                log(logging.INFO, f"watching {key} again: the folder is back" if watch is not None
                    else f"watching {key}: the folder is there now", folder=key)
                if watch is not None:
                    await asyncio.to_thread(watch.stop)

    async def rescan_periodically(self) -> None:
        while True:
            interval = self._rescan_interval
            await asyncio.sleep(interval if interval > 0 else 3600)
            if interval > 0:
                for folder in self.folders.values():
                    await self._scan(folder)

    def _rescan(self, folder: FolderSettings) -> None:
        self._spawn(self._scan(folder))

    def _rescan_all(self) -> None:
        log(logging.WARNING, "file events were lost (inotify overflow): rescanning every folder")
        self.completeness.lost_events()
        for folder in self.folders.values():
            self._rescan(folder)

    async def _scan(self, folder: FolderSettings) -> None:
        """Find files that arrived unseen (while down, or lost events); settle the new ones."""
        found = await asyncio.to_thread(scan, folder)
        if self.folders.get(str(folder.path)) is not folder:
            return
        try:
            known = self._committer.journal.known_versions(str(folder.path))
        except JournalUnavailable as exc:
            log(logging.WARNING, f"rescan of {folder.path} postponed: {exc}", event="journal_outage")
            return
        for relpath, version in found:  # new, or other bytes under the same stat (only the change time moved)
            seen = (version_print(relpath, *version.key, ctime) in known for ctime in (version.st_ctime_ns, None))
            if not any(seen):
                self.completeness.touch(folder, relpath, version)

    def _on_settled(self, folder: FolderSettings, relpath: str, version: FileVersion) -> None:
        if version.st_size == 0:
            return  # a placeholder, not a file: it is picked up again once written
        self._spawn(self._admit(folder, relpath, version))

    async def _admit(self, folder: FolderSettings, relpath: str, version: FileVersion) -> None:
        """One admission at a time: two links of one file settling together make one job. A
        journal that cannot be written (ConfigError) ends this task, and so the daemon; the
        file stays for next time."""
        async with self._admitting:
            try:
                job = await admit(self._committer, folder, relpath, version,
                                  look_again=self.completeness.look_again)
            except JournalUnavailable as exc:  # the PostgreSQL journal is down: the next rescan finds the file
                log(logging.WARNING, f"{relpath} not journalled yet: {exc}", event="journal_outage")
                return
            except FileNotFoundError:  # gone since it settled (another host archived it, or a user)
                return
        if job is not None:
            self._wake()

    def close(self) -> None:
        """Stop every watcher and settle timer (the daemon's teardown)."""
        for watch in self._watches.values():
            watch.stop()
        self._overflow.remove()
        self.completeness.close()
