"""Which paths become jobs: temp names, globs, markers and sidecars."""

from pathlib import Path

import pytest

from vaultdrop.config import FolderSettings
from vaultdrop.watch import candidate_for


@pytest.fixture
def folder(tmp_path: Path) -> FolderSettings:
    return FolderSettings(path=tmp_path, include=["*.mov", "*.mp4"], exclude=["proxy/*"])


@pytest.mark.parametrize("name", [".hidden.mov", "clip.mov.part", "clip.mp4.tmp", "x.mov.crdownload",
                                  "y.mov.filepart", "~lock.mov", "clip.mov.json", "notes.txt", "proxy/a.mov",
                                  ".cache/b.mov"])
def test_ignored(folder: FolderSettings, name: str) -> None:
    assert candidate_for(folder, name) is None


@pytest.mark.parametrize("name", ["clip.mov", "day1/clip.mp4", "with space 'quoted'.mov"])
def test_accepted(folder: FolderSettings, name: str) -> None:
    assert candidate_for(folder, name) == name


def test_marker_stands_for_its_file(tmp_path: Path) -> None:
    folder = FolderSettings(path=tmp_path, ready_marker=".done")
    assert candidate_for(folder, "a/clip.mov.done") == "a/clip.mov"


def test_not_recursive_ignores_subfolders(tmp_path: Path) -> None:
    folder = FolderSettings(path=tmp_path, recursive=False)
    assert candidate_for(folder, "sub/clip.mov") is None
    assert candidate_for(folder, "clip.mov") == "clip.mov"
