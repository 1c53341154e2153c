"""Post-actions touch only the exact content a job accounts for, and never overwrite a file."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from vaultdrop.config import FolderSettings
from vaultdrop.errors import LocalFileError, RetryLater
from vaultdrop.files import sha256_of
from vaultdrop.job import Job, JobState
from vaultdrop.stages import postaction


def job_for(folder: FolderSettings, relpath: str, job_id: int = 7) -> Job:
    info = os.stat(folder.path / relpath)
    return Job(id=job_id, folder=str(folder.path), relpath=relpath, size=info.st_size, mtime_ns=info.st_mtime_ns,
               inode=info.st_ino, state=JobState.FINISHING, attempts=0, not_before=0.0, last_error=None,
               upload_key="k", video_id="v1", bytes_sent=info.st_size, sha256=sha256_of(folder.path / relpath),
               s3_request_id=None, s3_status=None, s3_since=None, created_at=0.0, updated_at=0.0, waiting_for=None,
               released=0, moved_to=None, key_unknown=0, upload_seconds=None, ctime_ns=info.st_ctime_ns)


def replace_with(path: Path, data: bytes) -> None:
    """A re-export: written under a temporary name, renamed over the old file."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def visible(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    for name in ("drop", "archive", "failed"):
        (tmp_path / name).mkdir()
    return tmp_path / "drop"


def settings(drop: Path, **changes: Any) -> FolderSettings:
    base = drop.parent
    values: dict[str, Any] = {"path": drop, "after_upload": "archive", "archive_dir": base / "archive",
                              "failed_dir": base / "failed", "ready_marker": ".done"}
    return FolderSettings(**{**values, **changes})


async def test_archive_moves_the_file_with_its_sidecar_and_marker(drop: Path) -> None:
    folder = settings(drop)
    (drop / "day1").mkdir()
    for name, data in (("clip.mov", b"video"), ("clip.mov.json", b"{}"), ("clip.mov.done", b"")):
        (drop / "day1" / name).write_bytes(data)
    outcome = await postaction.finish(folder, job_for(folder, "day1/clip.mov"))
    archive = drop.parent / "archive"
    target = archive / "day1" / "clip.mov"
    assert outcome == postaction.Outcome(f"archived to {target}", released=True, moved_to=str(target))
    assert visible(archive) == {"day1/clip.mov": b"video", "day1/clip.mov.json": b"{}", "day1/clip.mov.done": b""}
    assert visible(drop) == {}


async def test_a_failed_job_never_moves_a_newer_re_export(drop: Path) -> None:
    folder = settings(drop)
    (drop / "clip.mov").write_bytes(b"take 1")
    (drop / "clip.mov.json").write_text("{}")
    job = job_for(folder, "clip.mov")
    replace_with(drop / "clip.mov", b"take 2, not uploaded yet")
    outcome = await postaction.fail(folder, job, {"error": "S3 timeout"})
    # the job no longer owns the path; the new content there is admitted anew
    assert outcome == postaction.Outcome(postaction.OTHER_CONTENT, released=True, displaced=drop / "clip.mov")
    assert visible(drop) == {"clip.mov": b"take 2, not uploaded yet", "clip.mov.json": b"{}"}
    assert visible(drop.parent / "failed") == {}


@pytest.mark.parametrize("action", ["delete", "archive"])
async def test_finish_leaves_other_content_at_the_path(drop: Path, action: str) -> None:
    folder = settings(drop, after_upload=action)
    (drop / "clip.mov").write_bytes(b"take 1")
    job = job_for(folder, "clip.mov")
    replace_with(drop / "clip.mov", b"take 2")
    assert (await postaction.finish(folder, job)).text == postaction.OTHER_CONTENT
    assert visible(drop) == {"clip.mov": b"take 2"} and visible(drop.parent / "archive") == {}


async def test_finish_with_nothing_at_the_path_says_so(drop: Path) -> None:
    folder = settings(drop, after_upload="delete")
    (drop / "gone.mov").write_bytes(b"x")
    job = job_for(folder, "gone.mov")
    (drop / "gone.mov").unlink()
    assert (await postaction.finish(folder, job)).text == postaction.NOTHING_THERE


def no_renameat2(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system without RENAME_NOREPLACE (the link + unlink fallback)."""
    def renameat2(*_: object) -> int:
        ctypes.set_errno(errno.EINVAL)
        return -1
    monkeypatch.setattr(postaction, "_renameat2", renameat2)


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "link-unlink"])
async def test_archive_name_collisions_never_overwrite(drop: Path, renameat2: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if not renameat2:
        no_renameat2(monkeypatch)
    folder = settings(drop)
    archive = drop.parent / "archive"
    (archive / "clip.mov").write_bytes(b"archived monday")
    (archive / "clip~1.mov").write_bytes(b"archived tuesday")
    (drop / "clip.mov").write_bytes(b"wednesday")
    (drop / "clip.mov.json").write_text('{"day": 3}')
    outcome = await postaction.finish(folder, job_for(folder, "clip.mov"))
    assert outcome.text == f"archived to {archive / 'clip~2.mov'}"
    assert visible(archive) == {"clip.mov": b"archived monday", "clip~1.mov": b"archived tuesday",
                                "clip~2.mov": b"wednesday", "clip~2.mov.json": b'{"day": 3}'}


async def test_failed_dir_collision_keeps_both_files_and_reports(drop: Path) -> None:
    folder = settings(drop)
    failed = drop.parent / "failed"
    (failed / "bad.mov").write_bytes(b"first")
    (drop / "bad.mov").write_bytes(b"second")
    outcome = await postaction.fail(folder, job_for(folder, "bad.mov"), {"error": "too_large"})
    assert outcome.text == f"moved to {failed / 'bad~1.mov'}"
    assert (failed / "bad.mov").read_bytes() == b"first" and (failed / "bad~1.mov").read_bytes() == b"second"
    assert json.loads((failed / "bad~1.mov.error.json").read_text())["error"] == "too_large"


async def test_archive_across_devices_is_complete_and_never_overwrites(drop: Path) -> None:
    if os.stat("/dev/shm").st_dev == os.stat(drop).st_dev:
        pytest.skip("/dev/shm is on the same file system as the test folder")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        archive = Path(other)
        folder = settings(drop, archive_dir=archive)
        (archive / "clip.mov").write_bytes(b"older")
        data = os.urandom(3 * 1024 * 1024)
        (drop / "clip.mov").write_bytes(data)
        (drop / "clip.mov.done").touch()
        outcome = await postaction.finish(folder, job_for(folder, "clip.mov"))
        assert outcome.text == f"archived to {archive / 'clip~1.mov'}"
        assert visible(archive) == {"clip.mov": b"older", "clip~1.mov": data, "clip~1.mov.done": b""}
        assert os.listdir(drop) == []


async def test_a_crash_after_the_private_rename_loses_nothing(drop: Path) -> None:
    """The next run's finish (or fail) finds the file at its private name."""
    folder = settings(drop)
    (drop / "clip.mov").write_bytes(b"take 1")
    (drop / "clip.mov.done").touch()
    job = job_for(folder, "clip.mov")
    os.rename(drop / "clip.mov", postaction.private_path(job))  # the crashed run got this far
    assert (await postaction.finish(folder, job)).text == f"archived to {drop.parent / 'archive' / 'clip.mov'}"
    assert visible(drop.parent / "archive") == {"clip.mov": b"take 1", "clip.mov.done": b""}
    assert os.listdir(drop) == []


async def test_an_interrupted_link_and_unlink_is_completed_not_archived_twice(drop: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    no_renameat2(monkeypatch)
    folder = settings(drop)
    archive = drop.parent / "archive"
    (drop / "clip.mov").write_bytes(b"take 1")
    job = job_for(folder, "clip.mov")
    os.rename(drop / "clip.mov", postaction.private_path(job))
    os.link(postaction.private_path(job), archive / "clip.mov")  # killed between link and unlink
    assert (await postaction.finish(folder, job)).text == f"archived to {archive / 'clip.mov'}"
    assert visible(archive) == {"clip.mov": b"take 1"} and os.listdir(drop) == []


async def test_keep_after_an_interrupted_action_puts_the_file_back_but_never_over_new_content(drop: Path) -> None:
    folder = settings(drop, after_upload="keep")
    (drop / "a.mov").write_bytes(b"a")
    (drop / "b.mov").write_bytes(b"b, take 1")
    job_a, job_b = job_for(folder, "a.mov", 1), job_for(folder, "b.mov", 2)
    for job in (job_a, job_b):  # a delete claimed both, then the daemon was killed
        os.rename(job.path, postaction.private_path(job))
    (drop / "b.mov").write_bytes(b"b, take 2")
    assert (await postaction.finish(folder, job_a)).text == "kept"
    assert (await postaction.finish(folder, job_b)).text == (
        f"kept (its content stays as {postaction.private_path(job_b).name}: the path now holds other content)")
    assert visible(drop) == {"a.mov": b"a", "b.mov": b"b, take 2", postaction.private_path(job_b).name: b"b, take 1"}


async def test_other_content_found_at_the_private_name_goes_back_beside_a_newer_file(drop: Path) -> None:
    folder = settings(drop)
    (drop / "clip.mov").write_bytes(b"take 1")
    job = job_for(folder, "clip.mov")
    replace_with(drop / "clip.mov", b"take 2")
    os.rename(drop / "clip.mov", postaction.private_path(job))  # claimed take 2, then crashed
    (drop / "clip.mov").write_bytes(b"take 3")
    outcome = await postaction.finish(folder, job)
    assert outcome.text == f"{postaction.OTHER_CONTENT} (it was put back as clip~1.mov)"
    assert visible(drop) == {"clip.mov": b"take 3", "clip~1.mov": b"take 2"}


async def test_a_blocked_archive_folder_is_a_retry_naming_the_path_and_the_file_stays(drop: Path) -> None:
    blocker = drop.parent / "not-a-dir"
    blocker.write_text("")
    folder = settings(drop, archive_dir=blocker / "archive")
    (drop / "clip.mov").write_bytes(b"video")
    (drop / "clip.mov.done").touch()
    with pytest.raises(LocalFileError) as caught:
        await postaction.finish(folder, job_for(folder, "clip.mov"))
    assert isinstance(caught.value, RetryLater)
    assert str(caught.value) == (f"cannot archive {drop / 'clip.mov'}: Not a directory "
                                 f"({blocker / 'archive' / 'clip.mov'})")
    assert visible(drop) == {"clip.mov": b"video", "clip.mov.done": b""}


async def test_an_unwritable_failed_dir_is_a_retry_and_the_file_stays(drop: Path) -> None:
    blocker = drop.parent / "not-a-dir"
    blocker.write_text("")
    folder = settings(drop, failed_dir=blocker)
    (drop / "bad.mov").write_bytes(b"video")
    with pytest.raises(LocalFileError, match=f"cannot move {drop / 'bad.mov'} to failed_dir {blocker}: "):
        await postaction.fail(folder, job_for(folder, "bad.mov"), {"error": "x"})
    assert visible(drop) == {"bad.mov": b"video"}


async def test_retry_brings_a_failed_file_back_but_never_over_a_new_one(drop: Path) -> None:
    folder = settings(drop)
    failed = drop.parent / "failed"
    for name in ("a.mov", "b.mov"):
        (drop / name).write_bytes(name.encode())
    moved = {}
    for job_id, name in enumerate(("a.mov", "b.mov")):
        job = job_for(folder, name, job_id)
        outcome = await postaction.fail(folder, job, {"error": "x"})
        moved[name] = dataclasses.replace(job, state=JobState.FAILED, released=1, moved_to=outcome.moved_to)
    (drop / "b.mov").write_bytes(b"a new b")
    assert postaction.restore(moved["a.mov"]) == f"{failed / 'a.mov'} moved back to {drop / 'a.mov'}"
    with pytest.raises(LocalFileError, match=f"{drop / 'b.mov'} exists now: {failed / 'b.mov'} stays in failed_dir"):
        postaction.restore(moved["b.mov"])
    assert visible(drop) == {"a.mov": b"a.mov", "b.mov": b"a new b"}
    assert visible(failed) == {"b.mov": b"b.mov", "b.mov.error.json": (failed / "b.mov.error.json").read_bytes()}


async def test_a_rewrite_that_keeps_size_mtime_and_inode_is_left_alone_and_looked_at_again(drop: Path) -> None:
    """cp -p over the file after its upload: only the bytes (and the ctime) tell."""
    folder = settings(drop, after_upload="delete")
    path = drop / "a.mov"
    path.write_bytes(b"take one")
    job = job_for(folder, "a.mov")
    before = os.stat(path)
    time.sleep(0.01)
    with path.open("r+b") as handle:
        handle.write(b"take two")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    outcome = await postaction.finish(folder, job)
    assert outcome.text == postaction.OTHER_CONTENT and outcome.released and outcome.displaced == path
    assert path.read_bytes() == b"take two"


@pytest.mark.parametrize("after_upload", ["archive", "delete"])
async def test_a_file_a_writer_still_holds_open_is_put_back_not_archived_or_deleted(drop: Path,
                                                                                   after_upload: str) -> None:
    """The writer opened it before the claim, so its next write would land in the moved
    (or deleted) inode: the file goes back to its path and the post-action waits."""
    folder = settings(drop, after_upload=after_upload)
    (drop / "a.mov").write_bytes(b"take")
    job = job_for(folder, "a.mov")
    with (drop / "a.mov").open("r+b"):
        with pytest.raises(LocalFileError, match="open for writing"):
            await postaction.finish(folder, job)
    assert visible(drop) == {"a.mov": b"take"} and visible(drop.parent / "archive") == {}
    assert (await postaction.finish(folder, job)).released  # closed: it goes


async def test_a_directory_that_took_the_name_is_never_moved(drop: Path) -> None:
    folder = settings(drop)
    (drop / "a.mov").write_bytes(b"take")
    job = job_for(folder, "a.mov")
    (drop / "a.mov").unlink()
    (drop / "a.mov").mkdir()
    (drop / "a.mov" / "inner.mov").write_bytes(b"being written")
    outcome = await postaction.fail(folder, job, {"error": "x"})
    assert outcome.text == postaction.NOT_A_FILE and outcome.released
    assert visible(drop) == {"a.mov/inner.mov": b"being written"} and visible(drop.parent / "failed") == {}
