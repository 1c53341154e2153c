"""The pipeline stages that carry one job from `queued` to `done` (or `failed`).

Each stage commits the state it reaches before the side effect that depends on it, so a
job picked up after a crash resumes from the journal alone. Errors decide what happens
next: RetryLater schedules the job again (attempts + not_before, persisted), JobFailed
ends it in failed_dir, ConfigError propagates and stops the daemon.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from . import postaction
from .config import FolderSettings, Settings
from .errors import ClockSkew, ConfigError, JobFailed, RetryLater, Unavailable
from .journal import IllegalTransition, Journal
from .model import TERMINAL, Job, JobState
from .logs import job_fields, log, log_change, log_done
from .throttle import Throttle
from .vault import FileChanged, KeyUsed, Progress, UnknownKey, VaultClient

PROGRESS_WRITE_INTERVAL = 1.0
CRASH_PAUSE = 60.0


class S3Stage(Protocol):
    """The optional S3 queueing stages (see s3.py)."""

    async def queue(self, job: Job, folder: FolderSettings) -> Job: ...

    async def follow(self, job: Job, folder: FolderSettings) -> Job: ...

    async def aclose(self) -> None: ...


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: spreads retries after an outage."""
    return rng.uniform(base / 2, min(cap, base * 2 ** max(0, attempt - 1)))


def sha256_of(path: Path) -> str:
    """Blocking: run in a worker thread."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class Pipeline:
    def __init__(
        self,
        journal: Journal,
        vault: VaultClient,
        settings: Settings,
        folder_for: Callable[[Job], FolderSettings | None],
        *,
        throttle: Throttle | None = None,
        s3: S3Stage | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.journal = journal
        self.vault = vault
        self.settings = settings
        self._folder_for = folder_for
        self._throttle = throttle
        self._s3 = s3
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._outage_streak = 0

    async def aclose(self) -> None:
        await self.vault.aclose()
        if self._s3 is not None:
            await self._s3.aclose()

    async def run(self, job: Job) -> Job:
        """Drive one job until it ends or waits for a retry; only ConfigError escapes.

        If even the failure handling breaks (journal or filesystem trouble, a bug), the
        job rests for CRASH_PAUSE instead of being picked up again at once.
        """
        try:
            return await self._drive(job)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - one job's trouble must not spin or stop the daemon
            log(logging.ERROR, f"job {job.id} ({job.relpath}) set aside for {CRASH_PAUSE:g} s: {exc!r}",
                exc_info=True, **job_fields(job))
            current = self.journal.get(job.id) or job
            return self.journal.update(current, not_before=self._clock() + CRASH_PAUSE, last_error=repr(exc))

    async def _drive(self, job: Job) -> Job:
        resumed = job.state is not JobState.QUEUED
        while job.state not in TERMINAL:
            folder = self._folder_for(job)
            try:
                job = await self._step(job, folder, resumed)
            except RetryLater as exc:
                return await self._retry(job, folder, exc)
            except JobFailed as exc:
                return await self._fail(job, folder, str(exc))
            except (ConfigError, IllegalTransition):
                raise
            except Exception as exc:  # noqa: BLE001 - a bug must cost one job an attempt, not the daemon
                log(logging.ERROR, f"unexpected error on {job.relpath}: {exc!r}", exc_info=True, **job_fields(job))
                return await self._retry(job, folder, RetryLater(f"unexpected error: {exc!r}"))
            self._outage_streak = 0
            if job.not_before > self._clock():
                return job  # a stage asked to be looked at again later (S3 status polling)
            resumed = False
        if job.state is JobState.DONE:
            log_done(self.journal, job)
        elif job.state is JobState.SKIPPED:
            log_change(self.journal, job, logging.INFO,
                       f"skipped: {job.relpath}: its content is already video {job.video_id}")
        return job

    async def _step(self, job: Job, folder: FolderSettings | None, resumed: bool) -> Job:
        if job.state is JobState.QUEUED:
            return await self._start(job)
        if job.state is JobState.UPLOADING:
            return await self._upload(job, check_first=resumed)
        if job.state is JobState.CONFIRMING:
            return await self._confirm(job, folder)
        if job.state in (JobState.S3_QUEUEING, JobState.S3_WAITING):
            if self._s3 is None or folder is None or folder.s3 is None:
                raise JobFailed("job needs the S3 step but its folder has no [folders.s3] any more")
            if job.state is JobState.S3_QUEUEING:
                return await self._s3.queue(job, folder)
            return await self._s3.follow(job, folder)
        return await self._finish(job, folder)

    # -- stages ----------------------------------------------------------------------

    async def _start(self, job: Job) -> Job:
        job = self._refresh_identity(job)
        if job.size == 0:
            raise RetryLater("the file is empty now")
        if self.settings.daemon.dedupe == "sha256":
            digest = await asyncio.to_thread(sha256_of, job.path)
            if self._refresh_identity(job) != job:
                raise RetryLater("file changed while its checksum was computed")
            twin = self.journal.find_done_by_sha256(digest, job.id)
            if twin is not None:  # FINISHING without an upload key ends as SKIPPED
                return self._changed(job, JobState.FINISHING, logging.INFO, f"same content as job {twin.id}",
                                     sha256=digest, video_id=twin.video_id)
        key = await self.vault.new_upload_key()
        job = self.journal.transition(job, JobState.UPLOADING, f"upload key {key}", upload_key=key, bytes_sent=0)
        log_change(self.journal, job, logging.INFO, f"uploading: {job.relpath}")
        return await self._upload(job, check_first=False)

    async def _upload(self, job: Job, *, check_first: bool) -> Job:
        key = job.upload_key
        assert key is not None
        if check_first:
            job, progress = await self._progress(job)
            if progress is None:
                return job
            if progress.video_id:
                return self._changed(job, JobState.CONFIRMING, logging.INFO, "vault already has the video")
            job = self._refresh_identity(job)
        last_write = time.monotonic()
        latest = 0

        def on_progress(sent: int) -> None:
            nonlocal job, last_write, latest
            latest = sent
            if time.monotonic() - last_write >= PROGRESS_WRITE_INTERVAL:
                last_write = time.monotonic()
                job = self.journal.update(job, bytes_sent=sent)

        try:
            digest = await self.vault.upload(
                key, job.path, size=job.size, on_progress=on_progress, throttle=self._throttle
            )
        except KeyUsed:
            return self._changed(job, JobState.CONFIRMING, logging.INFO, "key already used: confirming")
        except FileChanged as exc:
            self.journal.update(job, bytes_sent=latest)
            raise RetryLater(str(exc)) from None
        return self._changed(job, JobState.CONFIRMING, logging.INFO, "upload sent", sha256=digest, bytes_sent=job.size)

    async def _confirm(self, job: Job, folder: FolderSettings | None) -> Job:
        """Poll progress until the vault names the video and holds every byte."""
        deadline = self._clock() + self.settings.vault.confirm_timeout
        while True:
            job, progress = await self._progress(job)
            if progress is None:
                return job
            if progress.video_id:
                break
            if self._clock() >= deadline:
                self._changed(job, JobState.UPLOADING, logging.WARNING,
                              "no video id after the upload: sending again on the same key")
                raise RetryLater(f"no video id {self.settings.vault.confirm_timeout:g} s after the upload")
            await self._sleep(self.settings.vault.poll_interval)
        if progress.size != job.size or progress.received != job.size:
            return await self._discard(job, progress.video_id,
                                       f"vault holds {progress.size} bytes, the file has {job.size}")
        info = self._stat_or_none(job)
        if info is not None and not job.is_file(info):
            return await self._discard(job, progress.video_id, "file changed during upload")
        sha256 = job.sha256
        if sha256 is None and info is not None:
            sha256 = await asyncio.to_thread(sha256_of, job.path)
        next_state = JobState.S3_QUEUEING if folder is not None and folder.s3 is not None else JobState.FINISHING
        job = self.journal.transition(job, next_state, f"video {progress.video_id} confirmed",
                                      video_id=progress.video_id, sha256=sha256, s3_since=self._clock(),
                                      attempts=0)
        log_change(self.journal, job, logging.INFO, f"confirmed: {job.relpath} is video {job.video_id}")
        return job

    async def _progress(self, job: Job) -> tuple[Job, Progress | None]:
        """progress.xml for the job's key; a key the vault does not know sends the job back to QUEUED."""
        assert job.upload_key is not None
        try:
            return job, await self.vault.progress(job.upload_key)
        except UnknownKey:
            job = self._changed(job, JobState.QUEUED, logging.WARNING,
                                "the vault does not know the upload key: new key", upload_key=None, bytes_sent=0)
            return job, None

    def _refresh_identity(self, job: Job) -> Job:
        """Upload what the file is now: a change before sending is not a reason to fail."""
        info = self._stat(job)
        if job.is_file(info):
            return job
        return self.journal.update(job, size=info.st_size, mtime_ns=info.st_mtime_ns, inode=info.st_ino)

    async def _discard(self, job: Job, video_id: str, reason: str) -> Job:
        """The vault's copy is not this file: delete it (idempotent), then start over."""
        await self.vault.delete(video_id)
        job = self.journal.transition(job, JobState.QUEUED, reason, upload_key=None, video_id=None,
                                      bytes_sent=0, sha256=None)
        log_change(self.journal, job, logging.WARNING,
                   f"{job.relpath}: {reason}; deleted video {video_id}, starting over", video_id=video_id)
        raise RetryLater(reason)

    async def _finish(self, job: Job, folder: FolderSettings | None) -> Job:
        """Keep, delete or archive the file: only if it is still the file that was uploaded."""
        info = self._stat_or_none(job)
        if folder is None:
            outcome = "kept: its folder is no longer configured"
        elif info is None or not job.is_file(info):
            outcome = "left alone: the path now holds other content or nothing"
        else:
            outcome = await postaction.finish(folder, job.relpath, job.id)
        final = JobState.DONE if job.upload_key else JobState.SKIPPED
        return self.journal.transition(job, final, outcome, last_error=None)

    # -- outcomes --------------------------------------------------------------------

    async def _retry(self, job: Job, folder: FolderSettings | None, exc: RetryLater) -> Job:
        """Persist attempts + not_before so the backoff survives a restart.

        An outage (Unavailable) spends no attempt: its backoff grows with the number of
        outage answers in a row, across all jobs, and resets at the first success.
        """
        current = self.journal.get(job.id) or job
        if isinstance(exc, Unavailable):
            self._outage_streak += 1
            delay = backoff(self._outage_streak, self.settings.vault.backoff_base,
                            self.settings.vault.backoff_max, self._rng)
            log(logging.WARNING, f"service unavailable, retry in {delay:.1f} s: {current.relpath}: {exc}",
                **job_fields(current))
            return self.journal.update(current, not_before=self._clock() + delay, last_error=str(exc))
        attempts = current.attempts + 1
        if attempts >= self.settings.vault.max_attempts:
            current = self.journal.update(current, attempts=attempts)
            return await self._fail(current, folder, f"gave up after {attempts} attempts: {exc}")
        delay = backoff(attempts, self.settings.vault.backoff_base, self.settings.vault.backoff_max, self._rng)
        if isinstance(exc, ClockSkew):
            log(logging.WARNING, f"server refused our clock: {exc}; check NTP on this machine", **job_fields(current))
        log(logging.WARNING, f"retry in {delay:.1f} s: {current.relpath}: {exc}",
            **{**job_fields(current), "attempt": attempts})
        return self.journal.update(current, attempts=attempts, not_before=self._clock() + delay, last_error=str(exc))

    async def _fail(self, job: Job, folder: FolderSettings | None, error: str) -> Job:
        current = self.journal.get(job.id) or job
        try:
            outcome = "no folder" if folder is None else await postaction.fail(
                folder, current.relpath, current.id,
                {"job_id": current.id, "file": current.relpath, "error": error, "attempts": current.attempts,
                 "upload_key": current.upload_key, "video_id": current.video_id, "state": current.state.value},
            )
        except OSError as exc:
            outcome = f"left in place: cannot move it to failed_dir: {exc}"
        job = self.journal.transition(current, JobState.FAILED, f"{error} ({outcome})", last_error=error)
        log_change(self.journal, job, logging.ERROR, f"failed: {job.relpath}: {error} ({outcome})",
                   event="job_failed")
        return job

    def _changed(self, job: Job, state: JobState, level: int, detail: str, **changes: object) -> Job:
        """A state change whose journal detail is also its log line."""
        job = self.journal.transition(job, state, detail, **changes)
        log_change(self.journal, job, level, f"{state.value}: {job.relpath}: {detail}")
        return job

    def _stat(self, job: Job) -> os.stat_result:
        info = self._stat_or_none(job)
        if info is None:
            raise JobFailed("file vanished before it could be uploaded")
        return info

    @staticmethod
    def _stat_or_none(job: Job) -> os.stat_result | None:
        try:
            return os.stat(job.path)
        except OSError:
            return None
