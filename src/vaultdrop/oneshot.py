"""`vaultdrop upload FILE...`: upload now, in this process, journalled with the daemon's jobs.

The one-shot shares the daemon's journal, so a rerun after Ctrl-C or a failure resumes
the job's committed upload key, and `jobs`/`status` show these uploads too. A file in a
watched folder belongs to the daemon and is refused: two processes must never work the
same job at once, and the daemon (running now or started later) would pick it up.
Files elsewhere live under their own directory as folder, which no daemon runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
import time
from pathlib import Path
from typing import TextIO

from .config import FolderSettings, Settings
from .errors import OperatorError
from .job import TERMINAL, FileIdentity, Job, JobState
from .journal import Journal
from .journal.committer import Committer
from .logs import human_clock, human_size, logger, printable
from .stages import postaction
from .wiring import build_pipeline, open_journal

BAR_WIDTH = 24
BAR_INTERVAL = 0.25


def checked_files(paths: list[Path], settings: Settings) -> list[tuple[Path, os.stat_result]]:
    """Every named file, resolved and stat()ed, or one line about the first that cannot be
    uploaded: before any upload starts, so a typo costs nothing."""
    checked = []
    for given in paths:
        path = given.resolve()
        try:
            info = path.stat()
        except OSError as exc:
            raise OperatorError(f"{given}: {exc.strerror}") from None
        if stat.S_ISDIR(info.st_mode):
            raise OperatorError(f"{given}: is a directory (name the files in it)")
        if not stat.S_ISREG(info.st_mode):
            raise OperatorError(f"{given}: not a regular file")
        if info.st_size == 0:
            raise OperatorError(f"{given}: is empty: nothing to upload")
        watched = next((f.path for f in settings.folders if path.is_relative_to(f.path)), None)
        if watched is not None:
            raise OperatorError(f"{given}: is in the watched folder {watched}, which the daemon uploads "
                                f"(`vaultdrop jobs --folder {watched.name}` follows it)")
        checked.append((path, info))
    return checked


async def upload_files(settings: Settings, files: list[tuple[Path, os.stat_result]], *, force: bool,
                       progress: bool) -> int:
    """Upload each file to the end (done, skipped or failed); 1 if any failed."""
    journal = open_journal(settings)
    folders: dict[str, FolderSettings] = {}
    pipeline = build_pipeline(settings, journal, lambda job: folders.get(job.folder))
    failures = 0
    try:
        for path, info in files:
            folder = folders.setdefault(str(path.parent), FolderSettings(path=path.parent, settle=0))
            job = _job_for(pipeline.committer, FileIdentity.of(str(folder.path), path.name, info), force)
            if job.state in (JobState.DONE, JobState.SKIPPED):
                print(printable(f"{path}: already uploaded ({_outcome(job)}, job {job.id}); --force uploads it again"))
                continue
            bar = ProgressBar(journal, job, sys.stderr) if progress else None
            try:
                while job.state not in TERMINAL:
                    job = await pipeline.run(job)
                    if job.state not in TERMINAL:
                        await asyncio.sleep(max(0.0, job.not_before - time.time()))
            finally:
                if bar is not None:
                    bar.close()
            failures += job.state is JobState.FAILED
            print(printable(f"{path}: {job.state.value}, {_outcome(job)}"))
    finally:
        await pipeline.aclose()
        journal.close()
    return 1 if failures else 0


def _outcome(job: Job) -> str:
    return f"video {job.video_id}" if job.video_id else job.last_error or "identical content uploaded before"


def _job_for(committer: Committer, identity: FileIdentity, force: bool) -> Job:
    """This file's job: new, resumed where an earlier run stopped, or retried after a failure."""
    job = committer.journal.find(identity)
    if job is not None and force and job.state in TERMINAL:
        committer.forget(job.id)
        job = None
    if job is None:
        job = committer.enqueue(identity)
        if job is None:
            raise OperatorError(f"{identity.path}: an earlier upload of this path is still under way "
                                "(see `vaultdrop jobs`)")
        return job
    if job.state is JobState.FAILED:
        print(printable(f"{identity.path}: job {job.id} had failed ({job.last_error}): trying again"), file=sys.stderr)
        return committer.retry(job.id, bring_back=postaction.restore)[0]
    if job.state not in TERMINAL:
        print(printable(f"{identity.path}: resuming job {job.id} ({job.state.value})"), file=sys.stderr)
    return job


class ProgressBar(logging.Filter):
    """One redrawn line on stderr: bytes, rate and ETA of this run's upload.

    As a filter on the vaultdrop logger it erases itself before every log line, so a line
    never lands in the middle of the bar; the next tick redraws it below. It ends with a
    newline, so the shell prompt (or the result line) starts clean.
    """

    def __init__(self, journal: Journal, job: Job, out: TextIO) -> None:
        super().__init__()
        self._journal = journal
        self._job = job
        self._out = out
        self._shown = False
        self._started = time.monotonic()
        self._start_bytes = job.bytes_sent
        logger.addFilter(self)
        self._task = asyncio.create_task(self._tick())

    def filter(self, record: logging.LogRecord) -> bool:
        if self._shown:
            self._out.write("\r\x1b[K")
            self._shown = False
        return True

    async def _tick(self) -> None:
        while True:
            self._job = self._journal.get(self._job.id) or self._job
            self._draw()
            await asyncio.sleep(BAR_INTERVAL)

    def _draw(self) -> None:
        job = self._job
        sent = job.size if job.state not in (JobState.QUEUED, JobState.UPLOADING) else job.bytes_sent
        fraction = sent / job.size if job.size else 1.0
        rate = max(sent - self._start_bytes, 0) / max(time.monotonic() - self._started, 1e-3)
        eta = f"ETA {human_clock((job.size - sent) / rate)}" if rate > 0 and sent < job.size else ""
        filled = int(BAR_WIDTH * fraction)
        self._out.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:6.1%} "
                        f"{human_size(sent)} of {human_size(job.size)}  {human_size(rate)}/s {eta}  "
                        f"{printable(job.relpath)}\x1b[K")
        self._out.flush()
        self._shown = True

    def close(self) -> None:
        self._task.cancel()
        logger.removeFilter(self)
        self._job = self._journal.get(self._job.id) or self._job
        self._draw()
        self._out.write("\n")
        self._out.flush()
