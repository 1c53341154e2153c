"""Completeness with the real watcher (inotify): open for writing is not complete, a whole
container closed after writing is admitted at once, an incomplete one waits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from vaultdrop.config import FolderSettings
from vaultdrop.files import open_for_writing
from vaultdrop.intake.completeness import Completeness
from vaultdrop.intake.watch import FolderWatch

MEDIA = Path(__file__).parents[1] / "media"


class Intake:
    """A watched folder feeding a Completeness, with what it found ready and when."""

    def __init__(self, folder: FolderSettings) -> None:
        self.folder = folder
        self.ready: list[tuple[str, float]] = []
        loop = asyncio.get_running_loop()
        self.completeness = Completeness(loop, lambda _, relpath, __: self.ready.append((relpath, time.monotonic())),
                                         {str(folder.path): folder})
        self.watch = FolderWatch.start(folder, loop, self.completeness.event, lambda folder: None)

    def names(self) -> list[str]:
        return [name for name, _ in self.ready]

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"still waiting; ready: {self.ready}"
            await asyncio.sleep(0.01)


@pytest.fixture
async def make_intake(tmp_path: Path) -> AsyncIterator[Callable[..., Intake]]:
    made: list[Intake] = []

    def make(**settings: object) -> Intake:
        intake = Intake(FolderSettings(path=tmp_path, **settings))
        made.append(intake)
        return intake

    yield make
    for intake in made:
        intake.watch.stop()
        intake.completeness.close()


async def test_a_file_open_for_writing_is_not_complete_however_long_it_pauses(make_intake: Callable[..., Intake],
                                                                             tmp_path: Path) -> None:
    intake = make_intake(settle=0.2)
    with (tmp_path / "take.bin").open("wb", buffering=0) as writer:
        writer.write(b"x" * 1000)
        await asyncio.sleep(1.0)  # five settle times, the writer still holds it
        assert intake.names() == []
        assert intake.completeness.waiting()["open"] == 1
        assert intake.completeness.writing(tmp_path / "take.bin")
        assert intake.completeness.waiting_reason(tmp_path / "take.bin") == "open for writing"
        writer.write(b"y" * 1000)
    await intake.until(lambda: intake.names() == ["take.bin"])
    assert intake.completeness.waiting_reason(tmp_path / "take.bin") is None


async def test_readers_do_not_hold_a_file_back(make_intake: Callable[..., Intake], tmp_path: Path) -> None:
    (tmp_path / "take.bin").write_bytes(b"x" * 1000)
    intake = make_intake(settle=0.2)
    intake.completeness.touch(intake.folder, "take.bin")
    with (tmp_path / "take.bin").open("rb") as reader:
        reader.read()
        assert not intake.completeness.writing(tmp_path / "take.bin"), "a reader is no writer"
        await intake.until(lambda: intake.names() == ["take.bin"])  # admitted while the reader holds it
        assert intake.completeness.waiting_reason(tmp_path / "take.bin") is None


async def test_a_whole_container_closed_after_writing_needs_no_settle_time(make_intake: Callable[..., Intake],
                                                                          tmp_path: Path) -> None:
    intake = make_intake(settle=30)
    started = time.monotonic()
    (tmp_path / "clip.mp4").write_bytes((MEDIA / "moov_end.mp4").read_bytes())
    await intake.until(lambda: intake.names() == ["clip.mp4"])
    assert intake.ready[0][1] - started < 1.0


async def test_settle_mode_never_looks_inside(make_intake: Callable[..., Intake], tmp_path: Path) -> None:
    intake = make_intake(settle=0.3, complete="settle")
    media = (MEDIA / "moov_end.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(media[: len(media) // 2])
    await asyncio.sleep(0.1)
    assert intake.names() == []  # no fast path either
    await intake.until(lambda: intake.names() == ["half.mp4"])


async def test_an_incomplete_container_waits_then_goes_on_to_fail_by_its_reason(
        make_intake: Callable[..., Intake], tmp_path: Path) -> None:
    intake = make_intake(settle=0.1, incomplete_timeout=1.0)
    media = (MEDIA / "moov_end.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(media[: len(media) // 2])
    await asyncio.sleep(0.5)
    assert intake.names() == []
    assert intake.completeness.waiting()["incomplete"] == 1
    assert intake.completeness.waiting_reason(tmp_path / "half.mp4") == "incomplete container"
    await intake.until(lambda: intake.names() == ["half.mp4"])  # unchanged past the timeout: its job says why


async def test_an_appended_second_part_completes_the_container(make_intake: Callable[..., Intake],
                                                               tmp_path: Path) -> None:
    intake = make_intake(settle=0.1)
    media = (MEDIA / "moov_end.mp4").read_bytes()
    with (tmp_path / "clip.mp4").open("ab") as part:
        part.write(media[:1000])
    await asyncio.sleep(0.6)
    assert intake.names() == []
    with (tmp_path / "clip.mp4").open("ab") as part:
        part.write(media[1000:])
    await intake.until(lambda: intake.names() == ["clip.mp4"])
    assert (tmp_path / "clip.mp4").stat().st_size == len(media)


async def test_a_version_not_seen_complete_is_settled_when_the_runner_asks(make_intake: Callable[..., Intake],
                                                                          tmp_path: Path) -> None:
    (tmp_path / "take.bin").write_bytes(b"x" * 10)
    intake = make_intake(settle=0.2)  # started after the write: no event was seen
    assert intake.completeness.waiting_reason(tmp_path / "take.bin") == "settling"
    await intake.until(lambda: intake.names() == ["take.bin"])
    assert intake.completeness.waiting_reason(tmp_path / "take.bin") is None
    os.utime(tmp_path / "take.bin")  # a new change time: another version until it settles
    await asyncio.sleep(0.05)
    assert intake.completeness.waiting_reason(tmp_path / "take.bin") == "settling"


def test_the_kernel_says_whether_anyone_writes_a_file(tmp_path: Path) -> None:
    path = tmp_path / "take.bin"
    path.write_bytes(b"x")
    assert open_for_writing(path) is False
    with path.open("ab"):
        assert open_for_writing(path) is True
    with path.open("rb"):
        assert open_for_writing(path) is False  # a reader is no writer
    assert open_for_writing(tmp_path / "missing.bin") is None


def test_writers_opening_while_the_kernel_is_asked_are_not_held_up_and_kill_nothing(tmp_path: Path) -> None:
    """The probe's read lease lasts microseconds; a writer (another process) opening then
    breaks it: SIGIO, which would end this process were it not ignored, and the opener must
    not wait for the lease (the kernel would hold it up to lease-break-time, 45 s)."""
    path = tmp_path / "take.bin"
    path.write_bytes(b"x")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    answers = set()
    while writer.poll() is None:
        answers.add(open_for_writing(path))
    slowest = float(writer.communicate()[0])
    assert answers == {True, False}
    assert slowest < 1.0


WRITER = """
import sys, time
slowest = 0.0
deadline = time.monotonic() + 1.5
while time.monotonic() < deadline:
    started = time.monotonic()
    with open(sys.argv[1], "ab"):
        pass
    slowest = max(slowest, time.monotonic() - started)
print(slowest)
"""


async def test_files_deleted_or_moved_away_leave_nothing_behind(make_intake: Callable[..., Intake],
                                                                tmp_path: Path) -> None:
    intake = make_intake(settle=0.2)
    outside = tmp_path.parent / f"{tmp_path.name}-away"
    outside.mkdir()
    for number in range(100):
        path = tmp_path / f"take-{number}.bin"
        path.write_bytes(b"x" * 100)
        if number % 2:
            path.unlink()
        else:
            path.rename(outside / path.name)
    await asyncio.sleep(0.5)
    assert intake.names() == []
    assert intake.completeness._tracks == {}  # noqa: SLF001 - the leak this test is about


async def test_where_the_kernel_does_not_say_inotify_opens_and_closes_tell_a_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user's file without CAP_LEASE: a file changed while open is being written
    until it is closed after writing; a reader coming and going changes nothing."""
    monkeypatch.setattr("vaultdrop.intake.completeness.open_for_writing", lambda path: None)
    folder = FolderSettings(path=tmp_path, settle=0.1)
    ready: list[str] = []
    completeness = Completeness(asyncio.get_running_loop(), lambda _, relpath, __: ready.append(relpath),
                                {str(tmp_path): folder})
    (tmp_path / "take.bin").write_bytes(b"x" * 10)
    for kind in ("opened", "modified", "opened", "closed_no_write"):  # the writer, then a reader
        completeness.event(folder, "take.bin", kind)
    await asyncio.sleep(0.4)
    assert ready == [] and completeness.writing(tmp_path / "take.bin")
    completeness.event(folder, "take.bin", "closed")
    await asyncio.sleep(0.3)
    assert ready == ["take.bin"]
    completeness.close()
