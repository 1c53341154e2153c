"""The vault stages: start (dedupe, upload key), upload (the POST) and confirm (progress).

A stage looks at the job and the world (the file, the vault) and returns a Transition:
it never commits a state change or logs one; the runner (runner/pipeline.py) does both. Errors
say what to do next (errors.py); `resumed` tells a stage that this is the first look at
the job since it was picked up, so any outcome before now is unknown and asked first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from .. import containers
from ..clients.throttle import Throttle
from ..clients.upload_body import FileChanged
from ..clients.vault import KeyUsed, Progress, UnknownKey, VaultClient
from ..config import FolderSettings, Settings
from ..errors import JobFailed, RetryLater, VaultdropError, Waiting
from ..events import Fanout, JobEvents
from ..files import holds, same_version, sha256_of, stat_or_none
from ..job import CONFIRMED, UNCONFIRMED, FileIdentity, FileVersion, Job, JobState, Transition
from ..journal import IllegalTransition
from ..journal.committer import Committer

PROGRESS_WRITE_INTERVAL = 1.0
UNKNOWN_KEY_CONFIRMATIONS = 3  # "unknown key" answers in a row before a POSTed key is given up


class Readiness(Protocol):
    """Intake's word on a path (intake/completeness.py): the runner never sends a version of a file
    that intake has not found complete, nor moves a file that is being written."""

    def waiting_reason(self, path: Path) -> str | None:
        """None when the file at `path` is complete as it is now; else why it waits."""

    def writing(self, path: Path) -> bool:
        """Whether someone has the file open for writing (read-write counts)."""


class Unwatched:
    """The Readiness of files no watcher sees (the one-shot upload): the caller vouches."""

    def waiting_reason(self, path: Path) -> str | None:
        return None

    def writing(self, path: Path) -> bool:
        return False


def recheck_delay(folder: FolderSettings) -> float:
    return max(folder.settle, 1.0)


def after_confirmation(folder: FolderSettings) -> JobState:
    return JobState.S3_QUEUEING if folder.s3 is not None else JobState.FINISHING


UNNAMED_PAUSE = 60.0  # seconds between looks at an upload the vault holds but has not named
UNNAMED = "waiting: the vault holds the whole upload but names no video yet"


def _sent(sent: int) -> Transition:
    """The upload's progress, recorded so `status` and a resumed upload can show it."""
    return Transition(None, f"{sent} bytes sent", {"bytes_sent": sent}, quiet=True)


class VaultStages:
    def __init__(self, committer: Committer, vault: VaultClient, settings: Settings, *,
                 clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]],
                 throttle: Throttle | None = None, events: JobEvents | None = None,
                 readiness: Readiness | None = None) -> None:
        self._committer = committer
        self._journal = committer.journal  # for reading; every write goes through the committer
        self.readiness = readiness if readiness is not None else Unwatched()
        self._events = events or Fanout()
        self.vault = vault
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._throttle = throttle
        # Keys this process has POSTed on (until a POST succeeds): a 409 on a key nobody
        # here POSTed is not an earlier POST of ours completing. A pickup (a restart, a
        # retry) cannot know, and trusts it; confirm still checks whose video it is.
        self._posted: set[str] = set()

    async def start(self, job: Job, folder: FolderSettings) -> Transition:
        """Upload what the file is now (a change before sending is no reason to fail), once."""
        info = stat_or_none(job.path)
        if info is None:
            raise JobFailed("file vanished before it could be uploaded")
        if not stat.S_ISREG(info.st_mode):
            raise JobFailed("file vanished before it could be uploaded: its name now holds something that is not "
                            "a file (left alone)")
        if not same_version(job, info):
            return self._new_version(job, folder, info, "taking the new content")
        if info.st_size == 0:
            raise RetryLater("the file is empty now")
        self._check_container(job, folder, info)
        if self._settings.daemon.dedupe == "sha256":
            if job.sha256 is None:
                digest = await asyncio.to_thread(sha256_of, job.path)
                return Transition(None, "checksum computed", {"sha256": digest}, quiet=True)
            twin = self._twin(job)
            if twin is not None:
                return Transition(after_confirmation(folder), f"same content as job {twin.id}: video {twin.video_id}",
                                  {"video_id": twin.video_id, "s3_since": self._clock()})
        key = await self.vault.new_upload_key()
        if self._settings.daemon.dedupe == "sha256" and self._twin(job) is not None:
            return Transition(None, "a twin was confirmed while the key was fetched", quiet=True)
        return Transition(JobState.UPLOADING, f"upload key {key}", {"upload_key": key, "bytes_sent": 0,
                                                                     "key_unknown": 0, "ctime_ns": info.st_ctime_ns})

    def _new_version(self, job: Job, folder: FolderSettings, info: os.stat_result, how: str) -> Transition:
        """The file changed after it was admitted: nothing is sent until intake finds the
        new version complete (a writer may still be at it), then that version is taken."""
        reason = self.readiness.waiting_reason(job.path)
        if reason is not None:
            raise Waiting(f"the file changed: {reason}", recheck_delay(folder))
        self._check_container(job, folder, info)  # intake passes on an incomplete one in the end: it fails here
        return self._take_new_content(job, info, how)

    def _check_container(self, job: Job, folder: FolderSettings, info: os.stat_result) -> None:
        """An incomplete container is never sent: it waits, and fails once it stayed
        unchanged for incomplete_timeout (by its change time, so a restart does not reset it)."""
        if folder.complete != "auto":
            return
        try:
            verdict = containers.judge(job.path)
        except OSError:
            return  # the upload itself says what is wrong with reading it
        if verdict.state != "incomplete":
            return
        age = self._clock() - info.st_ctime_ns / 1e9
        if age >= folder.incomplete_timeout:
            raise JobFailed(f"{verdict.reason} (unchanged for {age:.0f} s; for a writer that never completes its "
                            "headers, set complete = \"settle\" for this folder)")
        raise Waiting(verdict.reason, min(folder.incomplete_timeout - age, recheck_delay(folder)))

    def _take_new_content(self, job: Job, info: os.stat_result, how: str) -> Transition:
        """The path holds other content than journalled, before anything was sent: upload that,
        unless another job already accounts for it (a link, a symlink, a file renamed over
        ours): then our own content is gone."""
        if os.path.islink(job.path):  # a symlink stands for its target, which intake admits on its own
            raise JobFailed(f"file vanished before it could be uploaded; its path is now a symlink to "
                            f"{os.readlink(job.path)}, uploaded as that file")
        identity = FileIdentity.of(job.folder, job.relpath, info)
        owner = next((other for other in self._journal.same_inode(identity)
                      if other.id != job.id and not other.released and other.state is not JobState.FAILED
                      and (other.size, other.mtime_ns) == (identity.size, identity.mtime_ns)), None)
        if owner is not None:
            raise JobFailed(f"file vanished before it could be uploaded; what is at its path now is "
                            f"job {owner.id}'s ({owner.relpath})")
        return Transition(None, f"file changed before its upload: {how}",
                          FileVersion.of(info).columns() | {"sha256": None, "ctime_ns": info.st_ctime_ns}, quiet=True)

    def _twin(self, job: Job) -> Job | None:
        """A job that holds (or is about to hold) this content: skip after it, or wait for it.

        A twin with a key is uploading: wait. Of two that have none yet, the older goes
        first. Asked again after the key is fetched, with no await before the commit, so
        two twins hashed at once never both upload."""
        assert job.sha256 is not None
        for twin in self._journal.twins(job.sha256, job.id):
            if twin.state in CONFIRMED and twin.video_id:
                return twin
            if twin.state in UNCONFIRMED and (twin.upload_key is not None or twin.id < job.id):
                raise Waiting(f"job {twin.id} is uploading the same content", self._settings.vault.poll_interval)
        return None

    async def upload(self, job: Job, folder: FolderSettings, resumed: bool) -> Transition:
        key = job.upload_key
        assert key is not None
        if resumed:  # a POST may have completed before the crash or the error: ask first
            progress = await self._progress(job)
            if isinstance(progress, Transition):
                return progress
            if progress.video_id:
                return Transition(JobState.CONFIRMING, "vault already has the video", {"key_unknown": 0})
            info = stat_or_none(job.path)
            if info is None and progress.received > 0:  # the vault may still finish what it received
                return Transition(JobState.CONFIRMING, "the file is gone: waiting for the vault to confirm what it "
                                  "received", {"key_unknown": 0})
            if info is not None and not same_version(job, info):
                if progress.received > 0:  # the vault may yet finish the earlier version on this key
                    return self._discard(job, key, "the file changed after the vault received part of it")
                return self._new_version(job, folder, info, "sending the new content on the same key")
        last_write = time.monotonic()
        latest = 0

        def on_progress(sent: int) -> None:
            nonlocal job, last_write, latest
            self._events.uploaded(job, sent - latest)
            latest = sent
            if time.monotonic() - last_write >= PROGRESS_WRITE_INTERVAL:
                last_write = time.monotonic()
                # Best effort, from a loop callback: a lost lease or an unwritable journal is met
                # again, and handled, by the runner's next commit.
                with contextlib.suppress(IllegalTransition, VaultdropError):
                    job = self._committer.commit(job, _sent(sent))

        before = stat_or_none(job.path)  # its ctime tells a rewrite that keeps size and mtime
        if before is not None and not same_version(job, before):  # since the key was taken: the new version settles first
            return self._new_version(job, folder, before, "sending the new content on the same key")
        started = time.monotonic()
        posted_before = key in self._posted
        self._posted.add(key)
        try:
            digest = await self.vault.upload(key, job.path, size=job.size, on_progress=on_progress,
                                             throttle=self._throttle)
        except KeyUsed as exc:
            if posted_before or resumed:  # an earlier POST of ours may have completed it: confirm
                return Transition(JobState.CONFIRMING, "key already used: confirming")
            self._posted.discard(key)
            return self._not_ours(key, "it was used before this job sent anything on it", exc)
        except FileChanged as exc:
            self._committer.commit(job, _sent(latest))
            raise RetryLater(str(exc)) from None
        self._posted.discard(key)
        return Transition(JobState.CONFIRMING, "upload sent", {
            "sha256": digest, "bytes_sent": job.size, "key_unknown": 0,
            "upload_seconds": time.monotonic() - started, "ctime_ns": before.st_ctime_ns if before else None})

    async def confirm(self, job: Job, folder: FolderSettings) -> Transition:
        """Poll progress until the vault names the video and holds every byte."""
        deadline = self._clock() + self._settings.vault.confirm_timeout
        while True:
            progress = await self._progress(job)
            if isinstance(progress, Transition):
                return progress
            if progress.video_id:
                break
            whole = progress.received == progress.size == job.size
            if whole and job.last_error == UNNAMED:  # parked before: one look, and the slot is free again
                return self._unnamed(job, self._settings.vault.confirm_timeout)
            if self._clock() >= deadline:
                timeout = self._settings.vault.confirm_timeout
                if whole:
                    return self._unnamed(job, timeout)
                return Transition(JobState.UPLOADING, "no video id after the upload: sending again on the same key",
                                  level=logging.WARNING, retry=RetryLater(f"no video id {timeout:g} s after the upload"))
            await self._sleep(self._settings.vault.poll_interval)
        whose = self._journal.whose(progress.video_id, job.id)
        if whose is not None:  # the vault handed out a key that had completed for another job
            return self._not_ours(job.upload_key or "", f"its video {progress.video_id} is {whose}",
                                  RetryLater("the vault handed out a used upload key"))
        if progress.size != job.size or progress.received != job.size:
            return self._discard(job, progress.video_id, f"vault holds {progress.size} bytes, the file has {job.size}")
        info = stat_or_none(job.path)
        if info is not None and not await asyncio.to_thread(holds, job, job.path, info):
            return self._discard(job, progress.video_id, "file changed during upload")
        sha256 = job.sha256
        if sha256 is None and info is not None:
            sha256 = await asyncio.to_thread(sha256_of, job.path)
        return Transition(after_confirmation(folder), f"video {progress.video_id} confirmed", {
            "video_id": progress.video_id, "sha256": sha256, "s3_since": self._clock(), "attempts": 0,
            "key_unknown": 0, "ctime_ns": info.st_ctime_ns if info is not None else job.ctime_ns})

    def _unnamed(self, job: Job, timeout: float) -> Transition:
        """The vault holds every byte on the key but names no video yet (processing, a busy
        storage tier). Sending again would only meet 409 and failing would leave the video
        behind: the job waits, spending no attempt and no slot, and says so once."""
        return Transition(None, f"{UNNAMED}; asking again in {min(timeout, UNNAMED_PAUSE):g} s", {
            "not_before": self._clock() + min(timeout, UNNAMED_PAUSE), "last_error": UNNAMED},
            level=logging.WARNING, quiet=job.last_error == UNNAMED)

    async def progress_or_none(self, job: Job) -> Progress | None:
        """A last look before giving up: a POST answered 500 may have been stored after all."""
        assert job.upload_key is not None
        try:
            return await self.vault.progress(job.upload_key)
        except RetryLater:
            return None

    async def _progress(self, job: Job) -> Progress | Transition:
        """progress.xml for the job's key. An unknown key is given up only after several
        answers in a row, and then deleted as a video on its own: a flapping answer never
        leaves two videos of one file."""
        assert job.upload_key is not None
        try:
            return await self.vault.progress(job.upload_key)
        except UnknownKey as exc:
            count = job.key_unknown + 1
            if count < UNKNOWN_KEY_CONFIRMATIONS:
                return Transition(None, f"the vault does not know upload key {job.upload_key} "
                                  f"({count} of {UNKNOWN_KEY_CONFIRMATIONS} answers): asking again",
                                  {"key_unknown": count}, level=logging.WARNING, retry=exc)
            return Transition(JobState.QUEUED, "the vault does not know the upload key: new key",
                              {"upload_key": None, "bytes_sent": 0, "key_unknown": 0, "sha256": None},
                              level=logging.WARNING, discard=job.upload_key, retry=exc)

    @staticmethod
    def _not_ours(key: str, why: str, error: RetryLater) -> Transition:
        """The vault handed out an upload key another upload completed (a caching proxy, a
        vault bug): what it holds is not this file and not ours to delete. New key."""
        return Transition(JobState.QUEUED, f"upload key {key} is not ours: {why}; getting a new key",
                          {"upload_key": None, "video_id": None, "bytes_sent": 0, "key_unknown": 0},
                          level=logging.WARNING, retry=error)

    def _discard(self, job: Job, video_id: str, reason: str) -> Transition:
        """The vault's copy is not this file: start over; the copy is deleted on its own."""
        return Transition(JobState.QUEUED, f"{reason}: starting over",
                          {"upload_key": None, "video_id": None, "bytes_sent": 0, "sha256": None, "key_unknown": 0},
                          level=logging.WARNING, discard=video_id, retry=RetryLater(reason))
