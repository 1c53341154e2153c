"""What intake would do with each file of a watched folder right now, and why (`vaultdrop scan`).

The daemon's own rules, asked without acting on the answer: the filter at the door
(watch.ignore_reason, regular_file_stat), completeness's checks (a writer, the settle time,
the ready marker, the container) and admission's identity rules (admission.match, over the
journal's read methods). Nothing is uploaded, settled or written: an operator can ask
while the daemon runs, on a read-only journal.

Without the daemon's memory of events, "settled" is read from the clock: a file whose
mtime or change time is younger than `settle` still waits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from ..config import FolderSettings
from ..files import open_for_writing
from ..job import FileIdentity, Job, JobState
from ..journal import JournalStore
from ..names import marker_owner
from .admission import Match, canonical, match
from .completeness import container_verdict, marker_missing
from .watch import ignore_reason, regular_file_stat, walk

Action = Literal["upload", "wait", "ignore", "known"]


@dataclass(frozen=True)
class FilePlan:
    """One file and what the daemon would do with it: `action` for scripts, `reason` in words."""

    folder: str
    file: str
    action: Action
    reason: str
    size: int | None = None
    job_id: int | None = None


def preview(folder: FolderSettings, journal: JournalStore | None, now: float | None = None) -> list[FilePlan]:
    """Every file a scan of `folder` meets (blocking); `journal` None: none was set up yet."""
    at = time.time() if now is None else now
    return [_plan(folder, relpath, journal, at) for relpath in walk(folder)]


def _plan(folder: FolderSettings, relpath: str, journal: JournalStore | None, now: float) -> FilePlan:
    def plan(action: Action, reason: str, job: Job | None = None) -> FilePlan:
        return FilePlan(str(folder.path), relpath, action, reason, size, job.id if job else None)

    size = None
    target, ignored = ignore_reason(folder, relpath)
    if ignored is not None:
        return plan("ignore", ignored)
    if target != relpath:
        what = "ready marker" if marker_owner(PurePosixPath(relpath).name, folder.ready_marker) else "metadata sidecar"
        return plan("ignore", f"{what} of {target}: travels with it")
    info = regular_file_stat(folder, relpath)
    if info is None:
        return plan("ignore", "not a regular file (or a symlink out of the folder)")
    size = info.st_size
    identity = FileIdentity.of(str(folder.path), canonical(folder, relpath), info)
    found = match(journal, identity) if journal is not None else None
    if found is not None and found[0] == "journalled":  # a rescan skips it: it is not settled again
        return plan("known", _journalled(found[1]), found[1])
    waiting = _waiting(folder, relpath, size, now - max(info.st_mtime, info.st_ctime))
    if waiting is not None:
        return plan("wait", waiting)
    if found is not None:
        return plan("upload" if found[0] == "failed" else "known", _matched(*found), found[1])
    verdict = container_verdict(folder, relpath)
    if verdict.state == "incomplete":  # admitted after incomplete_timeout unchanged; its job then fails
        return plan("upload", f"would upload, but its {verdict.format} is incomplete ({verdict.reason}): "
                    "its job will fail")
    return plan("upload", "would upload")


def _waiting(folder: FolderSettings, relpath: str, size: int, age: float) -> str | None:
    """Why completeness would not admit the file yet, in its order; None: it is complete."""
    if size == 0:
        return "empty: a placeholder, picked up once written"
    if open_for_writing(folder.path / relpath):
        return "open for writing"
    if age < folder.settle:
        return f"waiting to settle: changed {age:.0f} s ago (settle {folder.settle:g} s)"
    if marker_missing(folder, relpath):
        return f"waiting for its ready marker {PurePosixPath(relpath).name}{folder.ready_marker}"
    verdict = container_verdict(folder, relpath)
    if verdict.state == "incomplete" and age < folder.incomplete_timeout:
        return f"incomplete {verdict.format}: {verdict.reason}"
    return None


def _journalled(job: Job) -> str:
    """This very file, journalled: where its job stands."""
    if job.state is JobState.DONE:
        return f"already uploaded as job {job.id} (video {job.video_id})"
    if job.state is JobState.SKIPPED:
        return f"already in the vault as job {job.id} (same content as video {job.video_id})"
    if job.state is JobState.FAILED:
        return f"failed as job {job.id}: {job.last_error} (`vaultdrop jobs retry {job.id}`)"
    return f"job {job.id} is {job.state.value}"


def _matched(kind: Match, job: Job) -> str:
    """A journalled file under another name or path (admission.match), in words."""
    if kind == "link":
        return f"the same file as {job.relpath}: job {job.id} uploads it once"
    if kind == "failed":
        return f"failed as job {job.id} ({job.last_error}): moved back, would be retried"
    if kind == "renamed":
        return f"renamed from {job.relpath}: job {job.id} follows it"
    return (f"dropped again: the size, time and inode of job {job.id}'s file (video {job.video_id}); "
            "left in place if its content is the same")
