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
from typing import Any

from .config import FolderSettings
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


def _finish(folder: FolderSettings, relpath: str, tag: str) -> str:
    path = folder.path / relpath
    if folder.after_upload == "keep" or not path.exists():
        return folder.after_upload
    if folder.after_upload == "delete":
        for item in (path, *companions(folder, path)):
            item.unlink(missing_ok=True)
        return "deleted"
    assert folder.archive_dir is not None  # guaranteed by config validation
    return f"archived to {_relocate(folder, relpath, folder.archive_dir, tag)}"


def _fail(folder: FolderSettings, relpath: str, tag: str, report: dict[str, Any]) -> str:
    path = folder.path / relpath
    if folder.failed_dir is None or not path.exists():
        return "left in place"
    target = _relocate(folder, relpath, folder.failed_dir, tag)
    error_file = target.with_name(_fit(target.name, ERROR_SUFFIX))
    tmp = target.with_name(f".{tag}{ERROR_SUFFIX}.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(tmp, error_file)
    return f"moved to {target}"


async def finish(folder: FolderSettings, relpath: str, job_id: int) -> str:
    """Apply the folder's after_upload action; a cross-device move runs off the loop."""
    return await asyncio.to_thread(_finish, folder, relpath, str(job_id))


async def fail(folder: FolderSettings, relpath: str, job_id: int, report: dict[str, Any]) -> str:
    """Move a failed file (and companions) to failed_dir with NAME.error.json beside it."""
    report = {"failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **report}
    return await asyncio.to_thread(_fail, folder, relpath, str(job_id), report)
