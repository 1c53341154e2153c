"""Admission: a file is known by its inode, size and mtime, and told apart by sha256 when
an inode comes back. Real files and a real journal; stat results are real too, except
where a test must show an inode the kernel happened to reuse."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from vaultdrop.config import FolderSettings
from vaultdrop.files import sha256_of
from vaultdrop.intake.admission import admit
from vaultdrop.job import FileVersion, Job, JobState, StatLike
from vaultdrop.journal.committer import Committer
from vaultdrop.journal.memory import MemoryJournal


@pytest.fixture
def journal() -> MemoryJournal:
    return MemoryJournal()


@pytest.fixture
def folder(tmp_path: Path) -> FolderSettings:
    (tmp_path / "drop").mkdir()
    return FolderSettings(path=tmp_path / "drop", settle=0)


def settle(journal: MemoryJournal, folder: FolderSettings, relpath: str, info: StatLike | None = None) -> Job | None:
    return asyncio.run(admit(Committer(journal), folder, relpath, info or os.stat(folder.path / relpath)))


def finish(journal: MemoryJournal, job_id: int, released: bool, sha256: str) -> None:
    job = journal.get(job_id)
    job = journal.transition(job, JobState.UPLOADING, upload_key="K")
    job = journal.transition(journal.transition(job, JobState.CONFIRMING), JobState.FINISHING, video_id="K",
                             sha256=sha256)
    journal.transition(job, JobState.DONE, "done", released=int(released))


def test_a_rename_is_followed_by_the_same_job(journal: MemoryJournal, folder: FolderSettings) -> None:
    (folder.path / "a.mov").write_bytes(b"x" * 10)
    job = settle(journal, folder, "a.mov")
    os.rename(folder.path / "a.mov", folder.path / "b.mov")
    assert settle(journal, folder, "b.mov") is None
    assert [j.relpath for j in journal.jobs()] == ["b.mov"] and journal.get(job.id).relpath == "b.mov"


def test_a_hard_link_and_a_symlink_are_the_same_file(journal: MemoryJournal, folder: FolderSettings) -> None:
    (folder.path / "a.mov").write_bytes(b"x" * 10)
    os.link(folder.path / "a.mov", folder.path / "hard.mov")
    (folder.path / "sym.mov").symlink_to("a.mov")
    assert settle(journal, folder, "a.mov") is not None
    assert settle(journal, folder, "hard.mov") is None
    assert settle(journal, folder, "sym.mov") is None
    assert [j.relpath for j in journal.jobs()] == ["a.mov"]


def test_an_inode_reused_after_a_delete_is_new_content(journal: MemoryJournal, folder: FolderSettings) -> None:
    path = folder.path / "take.mov"
    path.write_bytes(b"first take")
    old = os.stat(path)
    job = settle(journal, folder, "take.mov")
    finish(journal, job.id, released=True, sha256=sha256_of(path))
    path.write_bytes(b"other take")  # same size; cp -p gives it the old mtime, the kernel the old inode
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    reused = FileVersion(os.stat(path).st_size, old.st_mtime_ns, old.st_ino, os.stat(path).st_ctime_ns)
    again = settle(journal, folder, "take.mov", reused)
    assert again is not None and again.id != job.id


def test_the_same_content_dropped_again_is_not_uploaded_again(journal: MemoryJournal, folder: FolderSettings,
                                                              tmp_path: Path) -> None:
    path = folder.path / "clip.mov"
    path.write_bytes(b"archived")
    job = settle(journal, folder, "clip.mov")
    finish(journal, job.id, released=True, sha256=sha256_of(path))
    os.rename(path, tmp_path / "clip.mov")  # archived ...
    os.rename(tmp_path / "clip.mov", folder.path / "clip.mov")  # ... and moved back in
    assert settle(journal, folder, "clip.mov") is None
    assert len(journal.jobs()) == 1


def test_a_failed_file_moved_back_resumes_its_job(journal: MemoryJournal, folder: FolderSettings, tmp_path: Path) -> None:
    path = folder.path / "f.mov"
    path.write_bytes(b"failed once")
    job = settle(journal, folder, "f.mov")
    job = journal.transition(journal.transition(job, JobState.UPLOADING, upload_key="K"), JobState.FAILED,
                             "gave up", released=1, moved_to=str(tmp_path / "f.mov"))
    os.rename(path, tmp_path / "f.mov")
    os.rename(tmp_path / "f.mov", path)
    resumed = settle(journal, folder, "f.mov")
    assert resumed is not None and resumed.id == job.id
    assert resumed.state is JobState.UPLOADING and resumed.upload_key == "K", "resumes on its committed key"


def test_a_hard_link_settled_after_its_file_changed_is_still_one_job(journal: MemoryJournal,
                                                                    folder: FolderSettings) -> None:
    """Found by the state-machine exploration: the link's new size no longer matched."""
    (folder.path / "a.mov").write_bytes(b"take one")
    job = settle(journal, folder, "a.mov")
    os.link(folder.path / "a.mov", folder.path / "b.mov")
    with (folder.path / "b.mov").open("ab") as handle:
        handle.write(b" and more")
    assert settle(journal, folder, "b.mov") is None
    assert settle(journal, folder, "a.mov") is not None  # the job takes the new content at its own name
    assert [(j.id, j.relpath, j.size) for j in journal.jobs()] == [(job.id, "a.mov", 17)]
