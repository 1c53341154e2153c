"""The last stage: the local file once the job's remote work is done (finish: keep,
delete or archive) or once the job fails (fail: to failed_dir).

Like the vault and S3 stages it looks at the job and the world and returns a Transition;
the runner commits it. The file operations are postaction.py's, idempotent at every
step: the commit that records where the file went comes after the move, and a crash in
between finds the file where the move left it. The commits before (a retry time, the
claim) are made durable first, and the lease is checked (journal.hold) before the file is
touched: on a shared folder only the host that holds the job acts on its file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import FolderSettings
from ..errors import LocalFileError, Waiting
from ..job import Job, JobState, Transition
from ..journal import JournalStore
from ..retry import Policy
from . import postaction
from .upload import Readiness, recheck_delay

LOCAL_FILE_PAUSE = 30.0


class PostActions:
    def __init__(self, journal: JournalStore, readiness: Readiness, policy: Policy, *,
                 clock: Callable[[], float], on_displaced: Callable[[Path], None] = lambda path: None) -> None:
        self._journal = journal  # for durable() and hold(); the runner commits
        self._readiness = readiness
        self._policy = policy
        self._clock = clock
        self._on_displaced = on_displaced

    async def finish(self, job: Job, folder: FolderSettings) -> Transition:
        """Keep, delete or archive the file: only the exact content that was uploaded.

        The upload is done: a blocked archive folder is the operator's to fix, so the job
        waits for it (said at each try) and never spends its way into failed_dir."""
        if folder.after_upload != "keep" and self._readiness.writing(job.path):
            raise Waiting(f"{job.relpath} is open for writing: it is {folder.after_upload}d once it is closed "
                          "(a new version is uploaded first)", recheck_delay(folder))
        self._journal.hold(job)
        try:
            outcome = await postaction.finish(folder, job)
        except LocalFileError as exc:
            delay = min(self._policy.backoff_max, LOCAL_FILE_PAUSE)
            return Transition(None, f"waiting: {exc}; trying again in {delay:g} s",
                              {"not_before": self._clock() + delay, "last_error": str(exc)}, level=logging.WARNING)
        self._look_again(outcome)
        final = JobState.DONE if job.upload_key else JobState.SKIPPED
        return Transition(final, outcome.text, {"last_error": None, "released": int(outcome.released),
                                                "moved_to": outcome.moved_to})

    async def fail(self, job: Job, folder: FolderSettings, error: str,
                   changes: dict[str, Any] | None = None) -> Transition:
        """The job ends FAILED for `error`; its file goes to failed_dir where it can. A file
        that cannot be moved stays in place: the failure is the news, not the move."""
        changes = changes or {}
        # The state the job ends in and the stage it failed at ("uploading" alone read as if
        # the upload were still going on); attempts counted as its last log line counts them.
        report = {"job_id": job.id, "file": job.relpath, "error": error, "state": JobState.FAILED.value,
                  "failed_while": job.state.value, "attempts": max(changes.get("attempts", job.attempts), 1),
                  "upload_key": job.upload_key, "video_id": job.video_id}
        await self._journal.durable()
        self._journal.hold(job)
        try:
            if self._readiness.writing(job.path):  # its next version, once closed, is a job of its own
                outcome = postaction.Outcome("left in place: it is open for writing")
            else:
                outcome = await postaction.fail(folder, job, report)
        except LocalFileError as exc:
            outcome = postaction.Outcome(f"left in place: {exc}")
        self._look_again(outcome)
        return Transition(JobState.FAILED, f"{error} ({outcome.text})", {
            **changes, "last_error": error, "released": int(outcome.released), "moved_to": outcome.moved_to},
            level=logging.ERROR)

    def _look_again(self, outcome: postaction.Outcome) -> None:
        """Content found where the job's file was is new: admission looks at it at once,
        rather than at the next rescan."""
        if outcome.displaced is not None:
            self._on_displaced(outcome.displaced)
