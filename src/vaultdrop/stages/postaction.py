"""What happens to the local file once its job ends: keep, delete, archive, or failed_dir.

Only the exact content a job accounts for is ever touched. The file is first renamed to a
private hidden name beside it (the watcher ignores dot names), then checked (size, mtime,
inode), then acted on; other content found there is put back without replacing anything.
Every step is idempotent: a crash at any point leaves the file at its path, at its private
name (which the next finish or fail looks at first) or at its destination. Nothing
is ever overwritten: destinations take the first free `name~N`. OSError is translated
once, here, into LocalFileError.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import filecmp
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from .. import files
from ..config import FolderSettings
from ..errors import LocalFileError
from ..files import fsync_path, holds, open_for_writing, sha256_of
from ..job import Job
from ..names import companion_names

NAME_MAX = 255  # bytes in one file name on every Linux file system vaultdrop runs on
ERROR_SUFFIX = ".error.json"
PRIVATE_PREFIX = ".vaultdrop-"
OTHER_CONTENT = "left alone: the path now holds other content"
NOTHING_THERE = "left alone: nothing at the path any more"
NOT_A_FILE = "left alone: the path now holds something that is not a regular file"

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_NO_RENAMEAT2 = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc >= 2.28


class Outcome(NamedTuple):
    """What a post-action did: its journal line, whether the path still holds the job's
    file, where it went, and where other content it found now sits (to be looked at anew)."""

    text: str
    released: bool = False
    moved_to: str | None = None
    displaced: Path | None = None


def companions(folder: FolderSettings, path: Path) -> list[Path]:
    """The metadata sidecar and ready marker that belong to `path`, where present."""
    names = companion_names(path.name, folder.ready_marker)
    return [p for p in (path.with_name(n) for n in names) if _fits(p.name) and os.path.lexists(p)]


def private_path(job: Job) -> Path:
    """Where the job's file sits while a post-action works on it (one name per job)."""
    return job.path.with_name(_fit(f"{PRIVATE_PREFIX}{job.id}-{job.path.name}", ""))


def _fits(name: str) -> bool:
    return len(os.fsencode(name)) <= NAME_MAX


def _fit(stem: str, rest: str) -> str:
    """stem + rest, the stem shortened so that a 255-byte name can still take a suffix."""
    while stem and not _fits(stem + rest):
        stem = stem[:-1]
    return stem + rest


def _free_names(wanted: Path) -> Iterator[Path]:
    """wanted, then wanted~1, wanted~2, ... (the counter before the extension)."""
    yield wanted
    counter = 1
    while True:
        yield wanted.with_name(_fit(wanted.stem, f"~{counter}{wanted.suffix}"))
        counter += 1


def _rename_noreplace(source: Path, target: Path) -> None:
    """rename(2) that raises FileExistsError instead of replacing `target`.

    renameat2(RENAME_NOREPLACE) is atomic; where the C library or the file system lacks
    it, link + unlink gives the same answer (a crash in between leaves a second name of the
    same file, which the next attempt finds: see _destination).
    """
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in _NO_RENAMEAT2:
            raise OSError(code, os.strerror(code), str(source), None, str(target))
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        if not os.path.samestat(os.lstat(source), os.lstat(target)):
            raise
    os.unlink(source)


def _move(source: Path, target: Path) -> None:
    """Move without replacing (FileExistsError). Across devices the copy is staged under a
    hidden name in the target folder and fsynced before it takes its name and the source goes."""
    try:
        _rename_noreplace(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    staged = target.with_name(_fit(f"{PRIVATE_PREFIX}copy-{source.name}", ""))
    staged.unlink(missing_ok=True)  # an earlier attempt's partial copy
    shutil.copy2(source, staged, follow_symlinks=False)
    if not staged.is_symlink():
        fsync_path(staged)
    try:
        _rename_noreplace(staged, target)
    except FileExistsError:
        staged.unlink()
        raise
    source.unlink()


def _destination(source: Path, wanted: Path) -> Path:
    """The first of wanted, wanted~1, ... that is free, or that already is `source` (an
    interrupted link + unlink)."""
    return next(target for target in _free_names(wanted) if _free_or_same(target, source))


def _free_or_same(target: Path, source: Path) -> bool:
    """Free, or `source` already: the same inode (an interrupted link + unlink), or a whole
    copy of it (a cross-device move stopped between its copy taking the name and the
    source going: copy2 kept the mtime, and the bytes must match too; an identical file
    archived before is as good, and never a second copy)."""
    try:
        there, here = os.lstat(target), os.lstat(source)
    except FileNotFoundError:
        return True
    if os.path.samestat(there, here):
        return True
    return (stat.S_ISREG(there.st_mode) and stat.S_ISREG(here.st_mode)
            and (there.st_size, there.st_mtime_ns) == (here.st_size, here.st_mtime_ns)
            and filecmp.cmp(target, source, shallow=False))


def _place(source: Path, wanted: Path) -> Path:
    """Move `source` to `wanted` or its first free `~N` name; never replaces a file."""
    wanted.parent.mkdir(parents=True, exist_ok=True)
    while True:
        target = _destination(source, wanted)
        if os.path.lexists(target):
            os.unlink(source)
        else:
            try:
                _move(source, target)
            except FileExistsError:
                continue  # taken since we looked
        fsync_path(target.parent)
        return target


def _claim(job: Job) -> Path | Outcome:
    """The private name holding exactly the job's content, or why there is nothing to do."""
    private = private_path(job)
    try:
        if os.path.lexists(private):  # claimed before a crash: our own rename moved its ctime
            same = holds(job, private, os.stat(private))
        else:
            info = os.lstat(job.path)  # before the rename, which moves the ctime that `holds` reads
            if not stat.S_ISREG(info.st_mode):  # a directory, link or FIFO took the name: never ours to move
                return Outcome(NOT_A_FILE, released=True)
            if not files.holds(job, job.path, info):  # never hide other content: a crash while it sat at
                return Outcome(OTHER_CONTENT, released=True, displaced=job.path)  # the private name loses it
            os.rename(job.path, private)
            moved = os.lstat(private)  # what the rename took: another file may have taken the name since
            same = (stat.S_ISREG(moved.st_mode) and (moved.st_dev, moved.st_ino) == (info.st_dev, info.st_ino)
                    and holds(job, private, info))
    except FileNotFoundError:  # nothing there
        if not os.path.lexists(private):
            return Outcome(NOTHING_THERE, released=True)
        same = False
    if same:
        return private
    kept = _place(private, job.path)  # beside the path if new content took it: never lost or hidden
    return Outcome(OTHER_CONTENT if kept == job.path else f"{OTHER_CONTENT} (it was put back as {kept.name})",
                   released=True, displaced=kept)


def _unclaim(job: Job) -> str:
    """Return the job's claimed file (if any) to its path, unless new content took the path:
    then it stays at its private name, where the next finish/fail finds it (beside the
    path, under a new name, it would be uploaded a second time)."""
    private = private_path(job)
    try:
        _rename_noreplace(private, job.path)
    except FileNotFoundError:
        return ""
    except FileExistsError:
        return f" (its content stays as {private.name}: the path now holds other content)"
    return ""


def _on_claimed(job: Job, act: Callable[[Path], Outcome]) -> Outcome:
    """Claim the job's file, act on it; on an error the file goes back to its path."""
    claimed = _claim(job)
    if isinstance(claimed, Outcome):
        return claimed
    if open_for_writing(claimed):  # a writer that opened it before the claim still writes into it
        _unclaim(job)
        raise OSError(errno.ETXTBSY, "open for writing: acted on once its writer closes it", str(job.path))
    try:
        return act(claimed)
    except OSError:
        with contextlib.suppress(OSError):  # if even that fails, the next attempt finds it
            _unclaim(job)
        raise


def _relocate(folder: FolderSettings, job: Job, private: Path, base: Path,
              before: Callable[[Path], None] = lambda target: None) -> Path:
    """Companions first, the file last: a crash in between leaves the file claimed, and
    the retry finds the same free name for it."""
    wanted = base / job.relpath
    target = _destination(private, wanted)
    for extra in companions(folder, job.path):
        _place(extra, target.with_name(_fit(target.name, extra.name[len(job.path.name):])))
    before(target)
    return _place(private, target)


def _finish(folder: FolderSettings, job: Job) -> Outcome:
    if folder.after_upload == "keep":  # _unclaim: after a crash mid-way through another action
        return Outcome("kept" + _unclaim(job))
    if folder.after_upload == "delete":
        def delete(private: Path) -> Outcome:
            for extra in companions(folder, job.path):
                extra.unlink(missing_ok=True)
            private.unlink()
            return Outcome("deleted", released=True)
        return _on_claimed(job, delete)
    archive_dir = folder.archive_dir
    assert archive_dir is not None  # guaranteed by config validation
    outcome = _on_claimed(job, lambda private: _moved("archived to", _relocate(folder, job, private, archive_dir)))
    placed = _already_placed(job, archive_dir) if outcome.text == NOTHING_THERE else None
    return outcome if placed is None else _moved("archived to", placed)


def _fail(folder: FolderSettings, job: Job, report: dict[str, Any]) -> Outcome:
    failed_dir = folder.failed_dir
    if failed_dir is None:
        return Outcome("left in place" + _unclaim(job))

    def write_report(target: Path) -> None:
        tmp = target.with_name(_fit(f"{PRIVATE_PREFIX}{job.id}{ERROR_SUFFIX}", ".tmp"))
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        os.replace(tmp, _error_file(target))

    outcome = _on_claimed(job, lambda private: _moved("moved to", _relocate(folder, job, private, failed_dir,
                                                                             write_report)))
    placed = _already_placed(job, failed_dir) if outcome.text == NOTHING_THERE else None
    if placed is None:
        return outcome
    if not _error_file(placed).exists():
        write_report(placed)
    return _moved("moved to", placed)


def _already_placed(job: Job, base: Path) -> Path | None:
    """Where an earlier attempt put the job's file, when a crash came between its move and
    the journal hearing of it: under the first names the move would take, the job's own
    inode, or (a cross-device copy) its size, mtime and sha256."""
    for name in _free_names(base / job.relpath):
        try:
            info = os.lstat(name)
        except FileNotFoundError:
            return None
        if stat.S_ISREG(info.st_mode) and (info.st_size, info.st_mtime_ns) == (job.size, job.mtime_ns) and (
                info.st_ino == job.inode or (job.sha256 is not None and sha256_of(name) == job.sha256)):
            return name
    return None


def _moved(what: str, target: Path) -> Outcome:
    return Outcome(f"{what} {target}", released=True, moved_to=str(target))


def _error_file(target: Path) -> Path:
    return target.with_name(_fit(target.name, ERROR_SUFFIX))


def _trouble(doing: str, exc: OSError) -> LocalFileError:
    names = [str(n) for n in (exc.filename, exc.filename2) if n]
    where = f" ({' -> '.join(names)})" if names else ""
    return LocalFileError(f"{doing}: {exc.strerror or exc}{where}")


async def finish(folder: FolderSettings, job: Job) -> Outcome:
    """Apply the folder's after_upload action to the job's exact content; returns the outcome
    for the journal. Raises LocalFileError (retry later) when the file system refuses."""
    try:
        return await asyncio.to_thread(_finish, folder, job)
    except OSError as exc:
        raise _trouble(f"cannot {folder.after_upload} {job.path}", exc) from None


async def fail(folder: FolderSettings, job: Job, report: dict[str, Any]) -> Outcome:
    """Move the job's exact content (and companions) to failed_dir with NAME.error.json
    beside it. Raises LocalFileError when the file system refuses; the file stays."""
    report = {"failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **report}
    try:
        return await asyncio.to_thread(_fail, folder, job, report)
    except OSError as exc:
        raise _trouble(f"cannot move {job.path} to failed_dir {folder.failed_dir}", exc) from None


def restore(job: Job) -> str | None:
    """Bring a failed job's file back from failed_dir to its path, never over another file
    (LocalFileError: then the job must not be retried). None when there is nothing to bring
    back; otherwise what happened, in words."""
    if job.moved_to is None:
        return None
    source = Path(job.moved_to)
    if not os.path.lexists(source):
        return f"{source} is gone; the job resumes from what the vault has"
    try:
        _move(source, job.path)
        _error_file(source).unlink(missing_ok=True)
    except FileExistsError:  # the job must not resume on what took its path
        raise LocalFileError(f"{job.path} exists now: {source} stays in failed_dir and the job stays failed; move "
                             "that file away first, or move the failed file into the folder under another "
                             "name (the daemon picks it up again)") from None
    except OSError as exc:
        raise _trouble(f"cannot move {source} back to {job.path}", exc) from None
    return f"{source} moved back to {job.path}"
