"""Admission: what a settled file means for the journal.

A file is known by its inode, size and mtime, not only by its path: a rename inside the
tree is followed, a hard link or a symlink to a file in the folder is one upload, a
failed file the operator moves back is picked up again, and an inode that a deleted
file left behind (`cp -p` of the next take) is new content, told apart by its sha256.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from ..config import FolderSettings
from ..errors import LocalFileError
from ..files import sha256_of
from ..job import FileIdentity, Job, JobState, StatLike, Transition
from ..journal import JournalStore
from ..journal.committer import Committer
from ..logs import job_fields, log


def canonical(folder: FolderSettings, relpath: str) -> str:
    """A symlink to a file in the folder stands for that file (watch refuses the others)."""
    real = (folder.path / relpath).resolve()
    try:
        return real.relative_to(folder.path.resolve()).as_posix()
    except ValueError:
        return relpath


def _holds_inode(job: Job, inode: int) -> bool:
    """Whether the job's own path is still this inode (a hard link's other name). A
    symlink put there holds nothing: it stands for its target, admitted on its own."""
    try:
        return os.lstat(job.path).st_ino == inode
    except OSError:
        return False


async def _replaced(committer: Committer, job: Job, identity: FileIdentity) -> bool:
    """Whether a finished job's file was replaced by other bytes that kept its size, mtime
    and inode (`cp -p` of the next take over a kept file): only the change time says so,
    and then the sha256 decides. A job still at work checks its file itself (stages)."""
    if job.state not in (JobState.DONE, JobState.SKIPPED) or job.sha256 is None:
        return False
    if identity.ctime_ns is None or job.ctime_ns is None or identity.ctime_ns == job.ctime_ns:
        return False
    try:
        digest = await asyncio.to_thread(sha256_of, identity.path)
    except LocalFileError as exc:  # gone or unreadable: it is looked at again if it settles again
        log(logging.WARNING, f"{identity.relpath}: {exc}")
        return False
    if digest == job.sha256:  # same bytes (a chmod, a link): hash it once
        committer.commit(job, Transition(None, "same bytes, new change time", {"ctime_ns": identity.ctime_ns},
                                         quiet=True))
        return False
    committer.commit(job, Transition(  # the path no longer holds job's file
        None, f"replaced by other content of the same size and time: a new version (job {job.id} keeps video "
        f"{job.video_id})", {"released": 1}))
    return True


Match = Literal["journalled", "link", "failed", "renamed", "dropped_again"]


def match(journal: JournalStore, identity: FileIdentity) -> tuple[Match, Job] | None:
    """Which journalled file a settled one is, by the identity rules alone (read-only: the
    journal's `same_inode`, the disk's lstat); None: new to the journal, for `enqueue`.

    `journalled`: this very file at its path (unless its bytes were replaced, which
    admission checks by content); `link`: another name of a job's file; `failed`: a failed
    job's file, moved back; `renamed`: a job's file at a new path; `dropped_again`: a
    finished job's file dropped again (content decides whether it is the same)."""
    for other in journal.same_inode(identity):
        unchanged = (other.size, other.mtime_ns) == (identity.size, identity.mtime_ns)
        if other.path == identity.path and not other.released:
            if not unchanged:
                continue  # changed in place: enqueue decides
            return "journalled", other
        if not other.released and _holds_inode(other, identity.inode):
            return "link", other  # changed or not, the job at the first name sees its content
        if not unchanged:
            continue
        if other.state is JobState.FAILED:  # moved back by the operator, or renamed after it failed
            return "failed", other
        if not other.released:
            return "renamed", other
        if other.sha256 and other.state in (JobState.DONE, JobState.SKIPPED):
            return "dropped_again", other
    return None


async def admit(committer: Committer, folder: FolderSettings, relpath: str, info: StatLike, *,
                look_again: Callable[[Path], None] = lambda path: None) -> Job | None:
    """Journal a settled file; the job when there is new work, None when there is none.

    `look_again(path)`: intake settles that path again (Completeness.look_again). A job
    followed away from its path leaves the path to what is there now, which the journal
    turned away while that job still held the path (journal.enqueue: it was uploading)."""
    identity = FileIdentity.of(str(folder.path), canonical(folder, relpath), info)
    found = match(committer.journal, identity)
    if found is None:
        return committer.enqueue(identity)
    kind, other = found
    if kind == "journalled":
        return committer.enqueue(identity) if await _replaced(committer, other, identity) else None
    if kind == "link":
        log(logging.INFO, f"{identity.relpath} is the same file as {other.relpath}: "
            f"job {other.id} uploads it once", **job_fields(other))
        return None
    if kind == "failed":
        return committer.retry(other.id, identity)[0]
    if kind == "renamed":
        committer.relocate(other, identity, f"renamed from {other.relpath}",
                           f"renamed: {other.relpath} -> {identity.relpath}: job {other.id} follows it")
        if other.path != identity.path:
            look_again(other.path)
        return None
    try:
        digest = await asyncio.to_thread(sha256_of, Path(identity.path))
    except LocalFileError as exc:  # gone or unreadable: it is looked at again if it settles again
        log(logging.WARNING, f"{identity.relpath}: {exc}")
        return None
    if digest != other.sha256:  # same inode, other bytes: a new file that reuses a deleted file's inode
        return committer.enqueue(identity)
    committer.relocate(other, identity, f"dropped again as {identity.relpath}",
                       f"{identity.relpath} is already in the vault as video {other.video_id}; left in "
                       f"place (`vaultdrop jobs forget {other.id}` uploads it again)")
    return None
