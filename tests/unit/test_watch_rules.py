"""Which paths become jobs: temp names, globs, markers and sidecars."""

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vaultdrop.config import FolderSettings
from vaultdrop.intake import completeness, watch
from vaultdrop.intake.completeness import Completeness
from vaultdrop.intake.watch import candidate_for, scan
from vaultdrop.job import FileVersion


@pytest.fixture(autouse=True)
def propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    """caplog listens at the root: undo a logs.setup() of an earlier test (propagate=False)."""
    monkeypatch.setattr(logging.getLogger("vaultdrop"), "propagate", True)


@pytest.fixture
def folder(tmp_path: Path) -> FolderSettings:
    return FolderSettings(path=tmp_path, include=["*.mov", "*.mp4"], exclude=["proxy/*"])


@pytest.mark.parametrize("name", [".hidden.mov", "clip.mov.part", "clip.mp4.tmp", "x.mov.crdownload",
                                  "y.mov.filepart", "~lock.mov", "a.mov.partial", "a.mov.3f2a91c4.partial",
                                  ".a.mov.Xy12Ab", "a.mov.aspx", "A.MOV.PART", "clip.mov.json", "notes.txt", "proxy/a.mov",
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


@pytest.mark.parametrize("name", ["C0001.MP4", "day1/Clip.Mov"])
def test_globs_ignore_case_by_default(folder: FolderSettings, name: str) -> None:
    assert candidate_for(folder, name) == name
    assert candidate_for(folder, "PROXY/a.MOV") is None, "exclude ignores case too"


def test_case_sensitive_globs_on_request(tmp_path: Path) -> None:
    folder = FolderSettings(path=tmp_path, include=["*.mp4"], case_sensitive_globs=True)
    assert candidate_for(folder, "C0001.MP4") is None
    assert candidate_for(folder, "c0001.mp4") == "c0001.mp4"


def test_json_is_a_sidecar_only_beside_its_file(tmp_path: Path) -> None:
    folder = FolderSettings(path=tmp_path)
    (tmp_path / "clip.mov.json").write_text("{}")
    assert candidate_for(folder, "clip.mov.json") == "clip.mov.json", "alone, it is an ordinary file"
    assert [relpath for relpath, _ in scan(folder)] == ["clip.mov.json"]
    (tmp_path / "clip.mov").write_bytes(b"video")
    assert candidate_for(folder, "clip.mov.json") == "clip.mov", "a sidecar stands for its file"
    assert [relpath for relpath, _ in scan(folder)] == ["clip.mov"]


async def test_a_json_whose_file_appears_while_it_settles_is_not_a_job(tmp_path: Path) -> None:
    folder = FolderSettings(path=tmp_path, settle=0.05)
    ready: list[str] = []
    settler = Completeness(asyncio.get_running_loop(), lambda _, relpath, __: ready.append(relpath), {})
    (tmp_path / "clip.mov.json").write_text("{}")
    (tmp_path / "notes.txt.json").write_text("{}")
    settler.touch(folder, "clip.mov.json")
    settler.touch(folder, "notes.txt.json")
    (tmp_path / "clip.mov.part").write_bytes(b"video")
    (tmp_path / "clip.mov.part").rename(tmp_path / "clip.mov")
    await asyncio.sleep(0.3)
    assert ready == ["notes.txt.json"]


def test_temp_suffixes_can_be_changed(tmp_path: Path) -> None:
    folder = FolderSettings(path=tmp_path, temp_suffixes=[".uploading"])
    assert candidate_for(folder, "a.mov.uploading") is None
    assert candidate_for(folder, "a.mov.partial") == "a.mov.partial"


@pytest.mark.parametrize(("name", "reason"), [("a.mov.partial", "temporary name"), ("proxy/a.mov", "exclude glob"),
                                              ("a.mov.json", "no include glob"), ("notes.txt", "no include glob")])
def test_debug_line_says_why_a_path_is_ignored(folder: FolderSettings, caplog: pytest.LogCaptureFixture,
                                               name: str, reason: str) -> None:
    with caplog.at_level(logging.DEBUG, logger="vaultdrop.watch"):
        candidate_for(folder, name)
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"ignored {folder.path / name}: ") and reason in line


def test_symlink_out_of_the_folder_is_reported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outside = tmp_path / "outside.mov"
    outside.write_bytes(b"x")
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "link.mov").symlink_to(outside)
    os.mkfifo(drop / "pipe.mov")
    folder = FolderSettings(path=drop)
    with caplog.at_level(logging.DEBUG, logger="vaultdrop.watch"):
        assert scan(folder) == [] and scan(folder) == []
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if "link.mov" in line and "symlink out of the folder" in line]) == 1
    assert len([line for line in lines if "pipe.mov" in line and "not a regular file" in line]) == 1


def test_a_marker_of_a_marker_stands_for_nothing(tmp_path: Path) -> None:
    folder = FolderSettings(path=tmp_path, ready_marker=".done")
    assert candidate_for(folder, "clip.mov.done.done") is None


async def test_a_scanned_file_is_filtered_once_and_stat_once_before_its_settle_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan filters and stats; settling reuses both, and its check stats once more (the
    file must have held still for `settle`): that stat is what admission gets."""
    calls: Counter[str] = Counter()

    def counting(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            calls[name] += 1
            return function(*args)
        return counted

    monkeypatch.setattr(watch, "ignore_reason", counting("filter", watch.ignore_reason))
    for module in (watch, completeness):
        monkeypatch.setattr(module, "regular_file_stat", counting("stat", module.regular_file_stat))
    folder = FolderSettings(path=tmp_path, settle=0.05)
    (tmp_path / "clip.mov").write_bytes(b"video")
    ready: list[FileVersion] = []
    settler = Completeness(asyncio.get_running_loop(), lambda _, __, version: ready.append(version), {})
    [(relpath, version)] = scan(folder)
    assert calls == {"filter": 1, "stat": 1}
    settler.touch(folder, relpath, version)
    await asyncio.sleep(0.3)
    assert ready == [version] and calls == {"filter": 1, "stat": 2}
