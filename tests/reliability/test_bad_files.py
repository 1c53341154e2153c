"""Bad files in the drop folder: none crashes the daemon or blocks the others; each gets its outcome.

Outcomes (also in the README's Reliability section):
- zero bytes: not queued until it has content;
- FIFO, device node, symlink out of the folder: never queued, never opened;
- unreadable: retried (permissions may be fixed), then `failed` into failed_dir with the reason;
- vanished after it was queued: `failed`, "file vanished", nothing to move;
- replaced or growing during upload: the vault ends up with the final content only;
- growing forever: never queued while it grows;
- odd names (spaces, quotes, newline, non-UTF-8 bytes, 255 bytes): uploaded and archived like any other.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from pathlib import Path

from vaultdrop.job import JobState

from ..integration.harness import DaemonRunner, wait_for
from ..integration.test_daemon import write

LONG_NAME = b"L" * 251 + b".mov"
ODD_NAMES = [b"with space.mov", b"quo\"te's.mov", b"new\nline.mov", b"tab\tand\\back.mov", b"latin1-\xe9t\xe9.mov",
             b"bad-\xff\xfe.mov", "ünïcødé-動画.mov".encode(), LONG_NAME]


def named(folder: Path, raw: bytes) -> Path:
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + raw))


def test_odd_names_upload_once_and_archive_under_their_own_name(runner: DaemonRunner) -> None:
    runner.start()
    digests = {raw: write(named(runner.drop, raw), 10_000 + i) for i, raw in enumerate(ODD_NAMES)}
    for raw in ODD_NAMES:
        runner.wait_state(os.fsdecode(raw), JobState.DONE)
    assert sorted(v["sha256"] for v in runner.sandbox.videos()) == sorted(digests.values())
    assert sorted(os.listdir(os.fsencode(runner.archive))) == sorted(ODD_NAMES)
    again = write(named(runner.drop, LONG_NAME), 20_000)  # same 255-byte name: archived beside the first
    wait_for(lambda: len([j for j in runner.jobs() if j.state is JobState.DONE]) == len(ODD_NAMES) + 1,
             what="second long-named file done")
    archived = [n for n in os.listdir(os.fsencode(runner.archive)) if n.startswith(b"LLLL")]
    assert len(archived) == 2 and all(len(n) <= 255 for n in archived)
    assert again in {v["sha256"] for v in runner.sandbox.videos()}
    assert runner.process is not None and runner.process.poll() is None


def test_special_files_are_never_queued(runner: DaemonRunner) -> None:
    outside = runner.base / "outside.mov"
    write(outside, 1000)
    runner.daemon["rescan_interval"] = 0.5  # every rescan meets the escaping symlink again
    runner.start()
    empty = runner.drop / "empty.mov"
    empty.touch()
    os.mkfifo(runner.drop / "pipe.mov")
    if os.geteuid() == 0:
        os.mknod(runner.drop / "device.mov", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    (runner.drop / "escape.mov").symlink_to(outside)
    write(runner.drop / "normal.mov", 5000)
    runner.wait_state("normal.mov", JobState.DONE)
    time.sleep(1.0)
    assert set(runner.job_states()) == {"normal.mov"}
    assert runner.output().count("symlink out of the folder") == 1, "said once, not on every rescan"
    digest = write(empty, 3000)
    runner.wait_state("empty.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("empty.mov")] == [digest]
    assert len(runner.sandbox.videos()) == 2 and outside.exists()


def test_unreadable_file_fails_with_the_reason_and_others_pass(runner: DaemonRunner) -> None:
    if os.geteuid() == 0:  # root reads anything: take away the permission override
        runner.command_prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    runner.start()
    locked = runner.drop / "locked.mov"
    write(locked, 5000)
    locked.chmod(0)
    digest = write(runner.drop / "fine.mov", 5000)
    job = runner.wait_state("locked.mov", JobState.FAILED)
    runner.wait_state("fine.mov", JobState.DONE)
    assert "Permission denied" in (job.last_error or "")
    assert (runner.failed / "locked.mov").exists() and (runner.failed / "locked.mov.error.json").exists()
    assert [v["filename"] for v in runner.sandbox.videos()] == ["fine.mov"]
    assert [v["sha256"] for v in runner.uploads_of("fine.mov")] == [digest]


def test_file_vanishing_before_upload_fails_cleanly(runner: DaemonRunner) -> None:
    runner.daemon.update(concurrency=1, small_file_size=1000, bandwidth_limit=1_000_000)
    runner.start()
    write(runner.drop / "blocker.mov", 3_000_000)
    runner.wait_state("blocker.mov", JobState.UPLOADING)
    gone = runner.drop / "gone.mov"
    write(gone, 10_000)
    runner.wait_state("gone.mov", JobState.QUEUED)
    gone.unlink()
    brief = runner.drop / "brief.mov"  # vanishes while settling: never queued
    write(brief, 10_000)
    brief.unlink()
    job = runner.wait_state("gone.mov", JobState.FAILED)
    runner.wait_state("blocker.mov", JobState.DONE)
    assert "vanished" in (job.last_error or "")
    assert "brief.mov" not in runner.job_states()
    assert [v["filename"] for v in runner.sandbox.videos()] == ["blocker.mov"]


def test_file_replaced_during_upload_ends_with_the_new_content_only(runner: DaemonRunner) -> None:
    runner.daemon["bandwidth_limit"] = 1_000_000
    runner.start()
    target = runner.drop / "swap.mov"
    write(target, 2_000_000)
    wait_for(lambda: any(r["endpoint"] == "upload" for r in runner.sandbox.log()), what="upload start")
    replacement = runner.base / "swap.new"
    final = write(replacement, 1_500_000)
    os.replace(replacement, target)
    runner.wait_state("swap.mov", JobState.DONE, timeout=60)
    assert [v["sha256"] for v in runner.uploads_of("swap.mov")] == [final]
    assert hashlib.sha256((runner.archive / "swap.mov").read_bytes()).hexdigest() == final


def test_file_growing_forever_is_never_queued_and_blocks_nothing(runner: DaemonRunner) -> None:
    runner.start()
    growing = runner.drop / "grow.mov"
    stop = threading.Event()

    def grow() -> None:
        with growing.open("ab") as handle:
            while not stop.is_set():
                handle.write(os.urandom(1000))
                handle.flush()
                time.sleep(0.1)

    writer = threading.Thread(target=grow, daemon=True)
    writer.start()
    try:
        write(runner.drop / "other.mov", 5000)
        runner.wait_state("other.mov", JobState.DONE)
        time.sleep(2.0)
        assert "grow.mov" not in runner.job_states()
    finally:
        stop.set()
        writer.join()
    runner.wait_state("grow.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("grow.mov")] == [
        hashlib.sha256((runner.archive / "grow.mov").read_bytes()).hexdigest()]

