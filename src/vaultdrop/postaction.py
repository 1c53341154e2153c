"""What happens to the local file once its job ends: keep, delete, archive, or failed_dir.

Every action is idempotent (a crash between the action and the journal commit simply
runs it again) and moves the file's companions (ready marker, metadata sidecar) with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

from .config import FolderSettings
from .model import Job
from .watch import SIDECAR_SUFFIX

NAME_MAX = 255  # bytes in one file name on every Linux file system vaultdrop runs on
ERROR_SUFFIX = ".error.json"


def companions(folder: FolderSettings, path: Path) -> list[Path]:
    """The ready marker and metadata sidecar that belong to `path`, where present."""
    names = [path.name + SIDECAR_SUFFIX]
    if folder.ready_marker:
        names.append(path.name + folder.ready_marker)
    return [p for p in (path.with_name(n) for n in names) if _fits(p.name) and p.exists()]


def _fits(name: str) -> bool:
    return len(os.fsencode(name)) <= NAME_MAX


def _fit(stem: str, rest: str) -> str:
    """stem + rest, the stem shortened so that a 255-byte name can still take a suffix."""
    while stem and not _fits(stem + rest):
        stem = stem[:-1]
    return stem + rest


def _free_destination(destination: Path, tag: str) -> Path:
    """Never overwrite an earlier archived file of the same name."""
    if not destination.exists():
        return destination
    return destination.with_name(_fit(destination.stem, f"~{tag}{destination.suffix}"))


def _move(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, destination)


def _relocate(folder: FolderSettings, relpath: str, base: Path, tag: str) -> Path:
    """Move the file to base/relpath (free name), its companions beside it."""
    path = folder.path / relpath
    extras = companions(folder, path)
    target = _free_destination(base / relpath, tag)
    _move(path, target)
    for extra in extras:
        _move(extra, target.with_name(target.name + extra.name[len(path.name):]))
    return target


class Outcome(NamedTuple):
    """What a post-action did: its journal line, and whether the path still holds the file."""

    text: str
    released: bool = False
    moved_to: str | None = None


def _owned(job: Job) -> bool:
    """Whether the path still holds the exact content the job accounts for."""
    try:
        return job.is_file(os.stat(job.path))
    except OSError:
        return False


def _finish(folder: FolderSettings, job: Job) -> Outcome:
    if folder.after_upload == "keep":
        return Outcome("kept")
    if not _owned(job):
        return Outcome("left alone: the path now holds other content or nothing")
    if folder.after_upload == "delete":
        for item in (job.path, *companions(folder, job.path)):
            item.unlink(missing_ok=True)
        return Outcome("deleted", released=True)
    assert folder.archive_dir is not None  # guaranteed by config validation
    target = _relocate(folder, job.relpath, folder.archive_dir, str(job.id))
    return Outcome(f"archived to {target}", released=True, moved_to=str(target))


def _fail(folder: FolderSettings, job: Job, report: dict[str, Any]) -> Outcome:
    if folder.failed_dir is None:
        return Outcome("left in place")
    if not _owned(job):
        return Outcome("left alone: the path now holds other content or nothing")
    target = _relocate(folder, job.relpath, folder.failed_dir, str(job.id))
    error_file = target.with_name(_fit(target.name, ERROR_SUFFIX))
    tmp = target.with_name(f".{job.id}{ERROR_SUFFIX}.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(tmp, error_file)
    return Outcome(f"moved to {target}", released=True, moved_to=str(target))


async def finish(folder: FolderSettings, job: Job) -> Outcome:
    """Apply the folder's after_upload action; a cross-device move runs off the loop."""
    return await asyncio.to_thread(_finish, folder, job)


async def fail(folder: FolderSettings, job: Job, report: dict[str, Any]) -> Outcome:
    """Move a failed file (and companions) to failed_dir with NAME.error.json beside it."""
    report = {"failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **report}
    return await asyncio.to_thread(_fail, folder, job, report)


def restore(job: Job) -> str | None:
    """Bring a failed job's file back from failed_dir to its path, never over another file.
    None when there is nothing to bring back; otherwise what happened, in words."""
    if job.moved_to is None:
        return None
    source = Path(job.moved_to)
    if not source.exists():
        return f"{source} is gone; the job resumes from what the vault has"
    try:
        os.link(source, job.path)  # fails if the path is taken: nothing is overwritten
    except FileExistsError:
        return f"{job.path} exists: {source} stays in failed_dir; move it back yourself"
    source.unlink()
    error_file = source.with_name(_fit(source.name, ERROR_SUFFIX))
    error_file.unlink(missing_ok=True)
    return f"{source} moved back to {job.path}"
