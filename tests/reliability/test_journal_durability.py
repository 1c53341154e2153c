"""The journal under power loss, a full disk and a read-only disk, and with names that are not UTF-8."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultdrop.job import FileIdentity, JobState, version_print
from vaultdrop.journal import Journal

from ..integration.harness import DaemonRunner, wait_for
from ..integration.test_daemon import write

LOAD_SCRIPT = Path(__file__).with_name("journal_load.py")
FAST_KILLS = 8


def test_names_that_are_not_utf8_round_trip(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    identity = FileIdentity("/drop/\udce9t\udce9", "sub/bad-\udcff\udcfe.mov", 10, 1, 2)
    job = journal.enqueue(identity)
    assert job is not None and job.identity == identity
    assert journal.enqueue(identity) is None, "the same file is recognised, not queued twice"
    job = journal.transition(job, JobState.UPLOADING, "key for bad-\udcff", upload_key="k",
                             last_error="cannot open bad-\udcff")
    assert journal.known_versions(identity.folder) == {version_print(identity.relpath, 10, 1, 2, None)}
    # free text quoting a name keeps its stray bytes escaped, as PostgreSQL's TEXT must
    assert journal.history(job.id)[-1]["detail"] == "key for bad-\\xff"
    assert journal.get(job.id).last_error == "cannot open bad-\\xff"
    journal.close()
    reader = Journal(tmp_path / "j.db", readonly=True)
    assert [j.relpath for j in reader.jobs()] == [identity.relpath]
    assert os.fsencode(reader.jobs()[0].path).endswith(b"bad-\xff\xfe.mov")
    reader.close()


def check_journal(path: Path) -> dict[int, JobState]:
    """integrity_check passes and every job's state is its last history entry (atomic changes)."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute(
            "SELECT j.id, j.state, (SELECT to_state FROM history h WHERE h.job_id = j.id ORDER BY h.id DESC LIMIT 1)"
            " FROM jobs j").fetchall()
    finally:
        db.close()
    assert all(state == last for _, state, last in rows), "a state change without its history (or back)"
    return {job_id: JobState(state) for job_id, state, _ in rows}


def kill9_under_load(path: Path, rounds: int, rng: random.Random) -> int:
    """Two writers at full speed, both killed at a random moment, `rounds` times; returns jobs done."""
    done: set[int] = set()
    for round_number in range(rounds):
        writers = [subprocess.Popen([sys.executable, str(LOAD_SCRIPT), str(path), str(round_number * 2 + i)],
                                    stderr=subprocess.PIPE) for i in range(2)]
        time.sleep(rng.uniform(0.3, 1.2))
        for writer in writers:
            writer.kill()
            _, error = writer.communicate()
            assert writer.returncode == -9, error.decode()
        states = check_journal(path)
        assert done <= {job_id for job_id, state in states.items() if state is JobState.DONE}, "a done job was lost"
        done = {job_id for job_id, state in states.items() if state is JobState.DONE}
    return len(done)


def test_kill9_during_heavy_journal_traffic_keeps_it_intact(tmp_path: Path) -> None:
    path = tmp_path / "vaultdrop.db"
    assert kill9_under_load(path, FAST_KILLS, random.Random(7)) > 0
    Journal(path).close()  # and the daemon can open it again


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs for the state directory."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "state"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:  # unbuffered: nothing left over for close() to flush
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def test_full_disk_stops_the_daemon_clearly_and_loses_nothing(runner: DaemonRunner, small_disk: Path) -> None:
    runner.start()
    digests = {f"before-{i}.mov": write(runner.drop / f"before-{i}.mov", 20_000) for i in range(3)}
    for name in digests:
        runner.wait_state(name, JobState.DONE)
    filler = fill(small_disk)
    for i in range(30):
        digests[f"full-{i}.mov"] = write(runner.drop / f"full-{i}.mov", 20_000)
        time.sleep(0.5)
        if runner.process is not None and runner.process.poll() is not None:
            break
    assert runner.wait_exit() == 75, runner.output()
    assert "cannot be written" in runner.output() and "disk is full" in runner.output()
    assert "Traceback" not in runner.output()
    filler.unlink()
    runner.start()
    for name in digests:
        runner.wait_state(name, JobState.DONE)
    assert sorted(v["sha256"] for v in runner.sandbox.videos()) == sorted(digests.values())
    runner.stop()
    check_journal(runner.state / "vaultdrop.db")


def test_read_only_disk_refuses_to_start_with_a_clear_error(runner: DaemonRunner, small_disk: Path) -> None:
    runner.start()
    write(runner.drop / "a.mov", 5000)
    runner.wait_state("a.mov", JobState.DONE)
    assert runner.stop() == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    digest = write(runner.drop / "b.mov", 5000)
    runner.start(wait_ready=False)
    assert runner.wait_exit() == 78
    assert "Read-only file system" in runner.output() and "Traceback" not in runner.output()
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    runner.start()
    runner.wait_state("b.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("b.mov")] == [digest]
    wait_for(lambda: len(runner.sandbox.videos()) == 2, what="two videos")
