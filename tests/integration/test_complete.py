"""Only a *completely written* file reaches the vault: six writer patterns that must never
leave a partial video behind. Each test is one case of the issue, end to end: the real
`vaultdrop run` CLI, real inotify and journal, the sandbox over loopback HTTP.

Each test checks what an operator would: what the vault holds (the stored bytes, read
from the sandbox's storage), that no partial version was ever confirmed as a job's video,
and where the local file ended up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vaultdrop.errors import ConfigError
from vaultdrop.job import TERMINAL, Job, JobState
from vaultdrop.journal import Journal

from .harness import DaemonRunner, wait_for
from .test_exactly_once import cli

MEDIA = Path(__file__).resolve().parents[1] / "media"
SETTLE = 1.0


# -- what the vault holds ---------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe(data: bytes, final: bytes, labels: dict[str, str] | None = None) -> str:
    if labels and sha(data) in labels:
        return f"{len(data):,} bytes: {labels[sha(data)]}"
    if data == final:
        return f"{len(data):,} bytes: the final file"
    if len(data) < len(final) and final.startswith(data):
        return f"{len(data):,} bytes: a proper prefix of the {len(final):,}-byte final file"
    if data and final.startswith(data[: len(data) // 2]):
        return f"{len(data):,} bytes: starts like the final file but differs (a partial version)"
    return f"{len(data):,} bytes: other content than the {len(final):,}-byte final file"


def vault_bytes(runner: DaemonRunner) -> list[bytes]:
    """The bytes of every video the vault holds now, in the order they were stored."""
    return [Path(v["path"]).read_bytes() for v in runner.sandbox.videos()]


def vault_hashes(runner: DaemonRunner) -> list[str]:
    return [sha(data) for data in vault_bytes(runner)]


def local_report(runner: DaemonRunner, writer: Writer | None = None) -> str:
    """Where the local files are: the folder, archive_dir and failed_dir, with sizes."""
    lines = [f"{folder.name}: " + ", ".join(f"{p.relative_to(folder)} ({p.stat().st_size:,} B)"
                                            for p in sorted(folder.rglob("*")) if p.is_file())
             for folder in (runner.drop, runner.archive, runner.failed)]
    if writer is not None:
        lines.append(f"the path was no longer the writer's file: {writer.taken or 'never'}")
    return "\n".join(lines)


def vault_report(runner: DaemonRunner, final: bytes, labels: dict[str, str] | None = None) -> str:
    held = vault_bytes(runner)
    lines = [f"vault holds {len(held)} video(s):"] + [f"  - {describe(data, final, labels)}" for data in held]
    ever = videos_ever(runner)
    lines.append(f"vault ever stored {len(ever)} video(s): " + ", ".join(
        f"{v['size']:,} B{' (final)' if v['sha256'] == sha(final) else ''}" for v in ever.values()))
    lines += [f"job {j.id} {j.relpath}: {j.state.value}, {j.size:,} B, last_error={j.last_error!r}"
              for j in runner.jobs()]
    return "\n".join(lines)


def videos_ever(runner: DaemonRunner) -> dict[str, dict[str, Any]]:
    """Every video the vault ever stored (deleted ones too), by id, from its state log."""
    path = runner.sandbox.root / "vault-state.jsonl"
    if not path.exists():
        return {}
    videos: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        change = json.loads(line) if line.strip() else {}
        if "video" in change:
            videos[change["video"]["video_id"]] = change["video"]
    return videos


def history(runner: DaemonRunner) -> dict[int, list[dict[str, Any]]]:
    path = runner.state / "vaultdrop.db"
    try:
        journal = Journal(path, readonly=True)
    except ConfigError:
        return {}
    try:
        return {job.id: journal.history(job.id) for job in journal.jobs(limit=100_000)}
    finally:
        journal.close()


def confirmed_videos(runner: DaemonRunner) -> list[dict[str, Any]]:
    """Every video any job ever confirmed as its own ("video X confirmed" in its history),
    plus the video of every done job, with what the vault stored under that id."""
    ever = videos_ever(runner)
    ids: list[str] = []
    for entries in history(runner).values():
        for entry in entries:
            match = re.search(r"video (\S+) confirmed", entry.get("detail") or "")
            if match and match.group(1) not in ids:
                ids.append(match.group(1))
    ids += [j.video_id for j in runner.jobs() if j.state is JobState.DONE and j.video_id and j.video_id not in ids]
    return [ever.get(video_id, {"video_id": video_id, "sha256": None, "size": -1}) for video_id in ids]


def assert_only_final_confirmed(runner: DaemonRunner, final: bytes, report: str) -> None:
    partial = [v for v in confirmed_videos(runner) if v["sha256"] != sha(final)]
    assert not partial, (f"a partial version was confirmed as a job's video: "
                         f"{[(v['video_id'], v['size']) for v in partial]}\n{report}")
    done = [j for j in runner.jobs() if j.state is JobState.DONE]
    assert all(j.sha256 == sha(final) for j in done), f"a done job is not the final content\n{report}"


# -- waiting ----------------------------------------------------------------------------


def eventually(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """The predicate's value once truthy, or its last (falsy) value after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_quiet(runner: DaemonRunner, timeout: float = 12.0, quiet: float = 2 * SETTLE + 0.5) -> list[Job]:
    """Wait until there are jobs and all of them ended, unchanged for `quiet` seconds (long
    enough for a late settle to show up as a new job)."""
    deadline = time.monotonic() + timeout
    stable_since, last = None, None
    while time.monotonic() < deadline:
        jobs = runner.jobs()
        snapshot = sorted((j.id, j.state, j.size) for j in jobs)
        if jobs and all(j.state in TERMINAL for j in jobs):
            if snapshot != last:
                stable_since, last = time.monotonic(), snapshot
            elif time.monotonic() - (stable_since or 0) >= quiet:
                return jobs
        else:
            stable_since, last = None, None
        time.sleep(0.1)
    return runner.jobs()


# -- writers ----------------------------------------------------------------------------


class Writer:
    """A writer holding `path` open; after each step it checks that the path still is its
    file (a daemon that archives or moves a file mid-write takes it from under the writer)."""

    def __init__(self, path: Path, mode: str = "wb") -> None:
        self.path = path
        self.handle = path.open(mode)
        self.taken: list[str] = []
        self.started = time.monotonic()

    def check(self, step: str) -> None:
        try:
            held = os.stat(self.path).st_ino == os.fstat(self.handle.fileno()).st_ino
        except FileNotFoundError:
            held = False
        if not held:
            self.taken.append(f"{step} at {time.monotonic() - self.started:.1f} s")

    def write(self, data: bytes, step: str = "write") -> None:
        self.handle.write(data)
        self.handle.flush()
        self.check(step)

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)
        self.check(f"after a {seconds:g} s pause")

    def close(self) -> None:
        self.check("before close")
        self.handle.close()


def chunks(data: bytes, count: int) -> list[bytes]:
    size = -(-len(data) // count)
    return [data[i:i + size] for i in range(0, len(data), size)]


# -- media ------------------------------------------------------------------------------


def top_boxes(data: bytes) -> list[tuple[bytes, int, int, int]]:
    """(type, offset, header size, box size) of each top-level ISO BMFF box."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[offset + 8:offset + 16])[0], 16
        elif size == 0:
            size = len(data) - offset
        boxes.append((kind, offset, header, size))
        offset += size
    return boxes


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def synthetic_mp4(payload_size: int = 600_000) -> bytes:
    """A minimal valid ISO BMFF file: ftyp, mdat, then moov (with an mvhd)."""
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = struct.pack(">IIIIIIH", 0, 0, 0, 1000, 1000, 0x10000, 0x100) + bytes(10) + matrix + bytes(24) \
        + struct.pack(">I", 1)
    return (_box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2mp41")
            + _box(b"mdat", os.urandom(payload_size)) + _box(b"moov", _box(b"mvhd", mvhd)))


def mp4_moov_at_end() -> bytes:
    """The real tests/media/moov_end.mp4 (ftyp, free, mdat, moov), else a synthetic one."""
    path = MEDIA / "moov_end.mp4"
    if path.exists():
        data = path.read_bytes()
        kinds = [kind for kind, *_ in top_boxes(data)]
        if kinds and kinds[-1] == b"moov" and b"mdat" in kinds:
            return data
    return synthetic_mp4()


def use_settle(runner: DaemonRunner, **folder: Any) -> None:
    runner.folder.update(settle=SETTLE, **folder)


# -- 1. a writer that pauses longer than settle, holding the file open -------------------


def test_a_writer_pausing_longer_than_settle_with_the_file_open_uploads_the_whole_file(runner: DaemonRunner) -> None:
    use_settle(runner)
    runner.start()
    final = os.urandom(1_000_000)
    writer = Writer(runner.drop / "pause.mov")
    writer.write(final[:500_000], "first half")
    writer.pause(2.5)
    writer.write(final[500_000:], "second half")
    writer.close()

    assert_one_final_upload(runner, writer, final, "pause.mov")
    assert sorted(p.name for p in runner.archive.iterdir()) == ["pause.mov"]


def assert_one_final_upload(runner: DaemonRunner, writer: Writer, final: bytes, name: str) -> None:
    """One job, done; the vault holds the final content only and never confirmed another;
    the file was archived after its writer closed it, whole."""
    jobs = wait_quiet(runner)
    report = vault_report(runner, final) + "\n" + local_report(runner, writer)
    print(report)
    assert vault_hashes(runner) == [sha(final)], f"the vault must hold exactly the final file\n{report}"
    assert_only_final_confirmed(runner, final, report)
    assert [j.state for j in jobs] == [JobState.DONE], f"one job, done\n{report}"
    assert not writer.taken, f"the file was moved away while its writer still had it open: {writer.taken}\n{report}"
    assert (runner.archive / name).read_bytes() == final and not (runner.drop / name).exists()


# -- 2. an encoder: bursts with pauses, then a seek back to patch the header -------------


def test_an_encoder_writing_in_bursts_then_patching_its_header_uploads_the_final_file(runner: DaemonRunner) -> None:
    use_settle(runner)
    runner.start()
    final = mp4_moov_at_end()
    boxes = top_boxes(final)
    _, mdat_at, mdat_header, mdat_size = next(b for b in boxes if b[0] == b"mdat")
    payload_end = mdat_at + mdat_size
    writer = Writer(runner.drop / "encoded.mp4")
    writer.write(final[:mdat_at] + bytes(4) + final[mdat_at + 4:mdat_at + mdat_header], "header, mdat size 0")
    for number, burst in enumerate(chunks(final[mdat_at + mdat_header:payload_end], 4)):
        writer.pause(1.5)  # longer than settle: an encoder waiting for frames
        writer.write(burst, f"burst {number + 1}")
    writer.write(final[payload_end:], "moov")
    writer.pause(1.5)
    writer.handle.seek(mdat_at)
    writer.write(final[mdat_at:mdat_at + 4], "mdat size patched")
    writer.close()

    assert_one_final_upload(runner, writer, final, "encoded.mp4")


# -- 3. an MP4 that arrives in two appends, each opened and closed -----------------------


def test_an_mp4_arriving_in_two_appends_is_one_video_of_the_whole_file(runner: DaemonRunner) -> None:
    use_settle(runner)
    runner.start()
    final = mp4_moov_at_end()
    target = runner.drop / "appended.mp4"
    half = len(final) // 2
    with target.open("ab") as handle:
        handle.write(final[:half])
    time.sleep(3.5)
    with target.open("ab") as handle:
        handle.write(final[half:])

    wait_quiet(runner)
    report = vault_report(runner, final) + "\n" + local_report(runner)
    print(report)
    assert vault_hashes(runner) == [sha(final)], f"exactly one video, the whole file\n{report}"
    assert sha(final[:half]) not in {v["sha256"] for v in videos_ever(runner).values()}, \
        f"the first part alone must never be a video\n{report}"
    assert_only_final_confirmed(runner, final, report)
    archived = sorted(runner.archive.iterdir())
    assert [p.name for p in archived] == ["appended.mp4"], f"archived once: {[p.name for p in archived]}\n{report}"
    assert archived[0].read_bytes() == final and not target.exists()


# -- 4. a queued or uploading file truncated and rewritten in place, slowly --------------


def test_a_file_rewritten_in_place_while_uploading_ends_as_its_final_content(runner: DaemonRunner) -> None:
    use_settle(runner)
    runner.sandbox.add_fault(endpoint="upload", action="stall", seconds=2)  # keeps the first upload in flight
    runner.start()
    target = runner.drop / "rewritten.mov"
    target.write_bytes(os.urandom(400_000))
    runner.wait_state("rewritten.mov", JobState.UPLOADING, timeout=10)
    final = os.urandom(600_000)
    writer = Writer(target, "r+b")
    writer.handle.truncate(0)
    writer.check("truncate")
    for number, chunk in enumerate(chunks(final, 4)):
        writer.write(chunk, f"chunk {number + 1}")
        if number < 3:
            writer.pause(1.5)
    writer.close()

    wait_quiet(runner)
    # a discarded copy's delete may lag behind the done job (retried every 5 s)
    eventually(lambda: not (sha(final) in (held := vault_hashes(runner)) and len(held) > 1), timeout=6)
    report = vault_report(runner, final) + "\n" + local_report(runner, writer)
    print(report)
    assert vault_hashes(runner) == [sha(final)], f"the vault must end with exactly the final content\n{report}"
    assert_only_final_confirmed(runner, final, report)
    done = [j for j in runner.jobs() if j.state is JobState.DONE]
    assert [j.sha256 for j in done] == [sha(final)], f"one done job, of the final content\n{report}"
    assert not [j for j in runner.jobs() if j.state is JobState.FAILED] and not list(runner.failed.iterdir()), report
    assert not writer.taken, f"archived (or moved) before the rewrite finished: {writer.taken}\n{report}"
    assert (runner.archive / "rewritten.mov").read_bytes() == final and not target.exists()


# -- 5. keep: the next take copied over the kept file with `cp -p` semantics --------------


def copy_preserving(path: Path, data: bytes) -> None:
    """`cp -p new path` over an existing file: the same inode, the content overwritten in
    place, then atime/mtime restored. Size, mtime and inode stay; only the ctime moves."""
    before = os.stat(path)
    assert len(data) == before.st_size
    with path.open("r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert after.st_ctime_ns != before.st_ctime_ns


def keep(runner: DaemonRunner) -> None:
    use_settle(runner, after_upload="keep")
    runner.folder.pop("archive_dir")


@pytest.mark.parametrize("stopped", [False, True], ids=["while running", "while stopped"])
def test_keep_a_next_take_copied_over_with_cp_p_is_uploaded_as_a_second_video(runner: DaemonRunner,
                                                                              stopped: bool) -> None:
    """Found by its events while the daemon runs, by the start-up scan after a restart."""
    keep(runner)
    runner.start()
    target = runner.drop / "take.mov"
    first, second = os.urandom(300_000), os.urandom(300_000)
    target.write_bytes(first)
    runner.wait_state("take.mov", JobState.DONE, timeout=10)
    if stopped:
        assert runner.stop() == 0
    else:
        time.sleep(0.5)
    copy_preserving(target, second)
    if stopped:
        runner.start()

    eventually(lambda: len([j for j in runner.jobs() if j.state is JobState.DONE]) >= 2, timeout=8)
    report = vault_report(runner, second, {sha(first): "the first take", sha(second): "the second take"})
    print(report)
    held = sorted(sha(data) for data in vault_bytes(runner))
    assert held == sorted([sha(first), sha(second)]), f"both takes must be in the vault\n{report}"
    assert sorted(j.sha256 for j in runner.jobs() if j.state is JobState.DONE) == sorted([sha(first), sha(second)]), \
        f"two done jobs, one per take\n{report}"
    assert target.read_bytes() == second, "keep leaves the new take in place"


# -- 6. a queued file replaced by a directory of the same name ---------------------------


def test_a_queued_file_replaced_by_a_directory_never_moves_the_directory(runner: DaemonRunner) -> None:
    use_settle(runner)
    runner.vault.update(max_attempts=4, backoff_base=1, backoff_max=1.5)
    runner.start()  # the faults after the start-up credential check, for the file's own keys
    runner.sandbox.add_fault(endpoint="new_key", action="status", status=500, code="server_error", count=2)
    target = runner.drop / "a.mov"
    target.write_bytes(os.urandom(50_000))
    wait_for(lambda: any(j.relpath == "a.mov" and j.attempts >= 1 for j in runner.jobs()), timeout=10,
             what=f"a.mov queued and retrying\n{runner.output()}")

    target.unlink()
    target.mkdir()
    directory_inode = os.stat(target).st_ino
    inner = target / "inner.mov"
    written = bytearray()
    stop = threading.Event()
    moved: list[str] = []

    def keep_writing() -> None:  # every 0.2 s: never settles while the test looks
        with inner.open("wb") as handle:
            while not stop.is_set():
                chunk = os.urandom(10_000)
                handle.write(chunk)
                handle.flush()
                written.extend(chunk)
                time.sleep(0.2)

    def watch_directory() -> None:
        while not stop.is_set():
            try:
                same = os.stat(target).st_ino == directory_inode
            except FileNotFoundError:
                same = False
            if not same and not moved:
                moved.append(f"{target} was moved away or replaced")
            time.sleep(0.01)

    threads = [threading.Thread(target=keep_writing), threading.Thread(target=watch_directory)]
    for thread in threads:
        thread.start()
    try:
        ended = eventually(lambda: next((j for j in runner.jobs() if j.relpath == "a.mov" and j.state in TERMINAL),
                                        None), timeout=10)
        time.sleep(0.5)
        job = next(j for j in runner.jobs() if j.relpath == "a.mov")
        failed = sorted(p.name for p in runner.failed.rglob("*"))
        leftovers = sorted(p.name for p in runner.drop.iterdir() if p.name.startswith(".vaultdrop-"))
        alive = runner.process is not None and runner.process.poll() is None
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    report = (f"job {job.id}: {job.state.value} (ended: {ended is not None}), last_error={job.last_error!r}; "
              f"failed_dir: {failed}; private names in the folder: {leftovers}; watcher saw: {moved}")
    print(report)
    assert not moved and target.is_dir() and os.stat(target).st_ino == directory_inode, \
        f"the directory must never be moved\n{report}"
    assert inner.read_bytes() == bytes(written), f"the file inside must be untouched\n{report}"
    assert not [name for name in failed if not name.endswith(".error.json")] and not leftovers, \
        f"nothing of the directory in failed_dir (an error report may be there) or hidden\n{report}"
    assert job.state is not JobState.DONE and job.last_error, f"not done, with a reason\n{report}"
    assert alive, f"the daemon must keep running\n{runner.output()}"
    assert not [v for v in runner.sandbox.videos() if v["filename"] == "a.mov"], report
    (runner.drop / "after.mov").write_bytes(os.urandom(20_000))
    runner.wait_state("after.mov", JobState.DONE, timeout=10)


# -- an incomplete container that stays so: failed with the reason, then retried -----------


def test_an_mp4_that_stays_incomplete_fails_with_its_reason_and_a_retry_sends_the_fixed_file(
        runner: DaemonRunner) -> None:
    use_settle(runner, incomplete_timeout=2)
    runner.start()
    whole = mp4_moov_at_end()
    (runner.drop / "cut.mp4").write_bytes(whole[: len(whole) // 2])  # moov never came
    (runner.drop / "noise.mov").write_bytes(os.urandom(20_000))  # not a container: settle alone, at once
    runner.wait_state("noise.mov", JobState.DONE, timeout=10)
    failed = runner.wait_state("cut.mp4", JobState.FAILED, timeout=20)
    assert failed.last_error is not None and failed.last_error.startswith("incomplete MP4: "), failed.last_error
    assert "unchanged for" in failed.last_error
    report = json.loads((runner.failed / "cut.mp4.error.json").read_text())
    assert report["error"] == failed.last_error
    assert not any(v["size"] == len(whole) // 2 for v in runner.sandbox.videos()), "nothing of it was sent"

    (runner.failed / "cut.mp4").write_bytes(whole)  # the operator puts the whole file in its place
    assert cli(runner, "jobs", "retry", str(failed.id)).returncode == 0
    done = runner.wait_state("cut.mp4", JobState.DONE, timeout=20)
    assert done.id == failed.id and done.sha256 == sha(whole)
    assert sorted(vault_hashes(runner)) == sorted([sha(whole), sha((runner.archive / "noise.mov").read_bytes())])
