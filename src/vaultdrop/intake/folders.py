"""The watched folders: watch → settle → admit, for every configured folder.

One object holds what intake does while the daemon runs: a watcher per folder (started,
replaced or stopped to match the configuration at start-up and on reload, and started
again when a deleted folder comes back), the scans that find files no event announced
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
        self._watches: dict[str, FolderWatch] = {}
        self._missing: set[str] = set()  # watched folders that disappeared (logged once)
        self._rescan_interval = 0.0
        self._admitting = asyncio.Lock()
        self.completeness = Completeness(self._loop, self._on_settled, self.folders)
        self._overflow = OverflowHook(self._loop, self._rescan_all)

    def folder_for(self, job: Job) -> FolderSettings | None:
        return self.folders.get(job.folder)

    def apply(self, settings: Settings) -> None:
        """Start, replace or stop watchers so they match the configuration (start-up and reload)."""
        self._overflow.install()  # before the first watcher; logging adds a handler only once
        self._rescan_interval = settings.daemon.rescan_interval
        wanted = {str(f.path): f for f in settings.folders}
        for key in list(self._watches):
            if key not in wanted or wanted[key] != self.folders[key]:
                self._watches.pop(key).stop()
                self._missing.discard(key)
                self.completeness.forget_folder(self.folders.pop(key))
                log(logging.INFO, f"stopped watching {key}", folder=key)
        for key, folder in wanted.items():
            if key not in self._watches:
                self.folders[key] = folder
                self._watches[key] = self._watch(folder)
                self._rescan(folder)
                self._on_watching(key)
                log(logging.INFO, f"watching {key} ({folder.watcher}, settle {folder.settle:g} s, "
                    f"after upload: {folder.after_upload})", folder=key)

    def _watch(self, folder: FolderSettings) -> FolderWatch:
        return FolderWatch.start(folder, self._loop, self.completeness.event, self._rescan)

    async def keep_watching(self) -> None:
        """A watch dies with its directory: a folder deleted or moved away and created again
        is watched again (and rescanned) within WATCH_CHECK_INTERVAL."""
        while True:
            await asyncio.sleep(WATCH_CHECK_INTERVAL)
            for key, watch in list(self._watches.items()):
                if self._watches.get(key) is not watch or watch.is_live():
                    continue  # replaced by a reload meanwhile, or fine
                if not FolderWatch.folder_exists(watch.folder):
                    if key not in self._missing:
                        self._missing.add(key)
                        log(logging.WARNING, f"folder {key} disappeared: watching it again once it is back",
                            folder=key)
                    continue
                try:
                    self._watches[key] = self._watch(watch.folder)
                except OSError:
                    continue  # gone again before the watch started: the next check sees it
                self._missing.discard(key)
                self._rescan(watch.folder)
                log(logging.INFO, f"watching {key} again: the folder is back", folder=key)
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
