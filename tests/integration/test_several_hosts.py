"""Several daemons, one drop folder, one PostgreSQL journal: every file stored and archived
exactly once, whatever happens to a host or to the database.

Real daemons as subprocesses (each its own host_id and state_dir), a real sandbox, a real
PostgreSQL cluster; the folder is watched by polling, as on a network filesystem.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pgcluster
from tests.pgcluster import Cluster
from vaultdrop.job import JobState
from vaultdrop.sandbox.launcher import SandboxProcess

from .harness import DaemonRunner, wait_for
from .test_operator_cli import cli, journal_with, no_traceback

LEASE = 2.0  # short, so a takeover happens within the test's patience


@pytest.fixture
def hosts(tmp_path: Path, sandbox: SandboxProcess, pg_database: tuple[str, Path]) -> Iterator[list[DaemonRunner]]:
    """Three daemon configs on one folder, archive and journal; started by the test."""
    url, password_file = pg_database
    runners = []
    for n in range(3):
        (tmp_path / f"host{n}").mkdir()
        runner = DaemonRunner(tmp_path / f"host{n}", sandbox)
        runner.drop, runner.archive, runner.failed = (tmp_path / "drop", tmp_path / "archive", tmp_path / "failed")
        for folder in (runner.drop, runner.archive, runner.failed):
            folder.mkdir(exist_ok=True)
        runner.folder.update(path=str(runner.drop), archive_dir=str(runner.archive), failed_dir=str(runner.failed),
                             watcher="polling", poll_interval=0.3)
        runner.daemon.update(rescan_interval=2, bandwidth_limit="4MiB")
        runner.journal = {"url": url, "password_file": str(password_file), "host_id": f"host{n}", "lease": LEASE}
        runners.append(runner)
    yield runners
    for runner in runners:
        print(f"--- host {runner.journal and runner.journal['host_id']}\n{runner.output()}")
        if runner.process is not None and runner.process.poll() is None:
            os.kill(runner.process.pid, signal.SIGCONT)
            runner.process.kill()
            runner.process.wait()


def drop_files(folder: Path, count: int, seed: int = 15) -> dict[str, int]:
    """Mixed sizes: mostly small, some of a few MiB (long enough to be caught mid-upload)."""
    rng = random.Random(seed)
    sizes = {}
    for n in range(count):
        size = rng.choice([rng.randint(1_000, 200_000), rng.randint(200_000, 1_000_000), rng.randint(2, 5) * 2**20])
        (folder / f"clip{n:03}.mov").write_bytes(rng.randbytes(size))
        sizes[f"clip{n:03}.mov"] = size
    return sizes


def assert_each_stored_and_archived_once(runner: DaemonRunner, sizes: dict[str, int]) -> None:
    stored = Counter(video["filename"] for video in runner.sandbox.videos())
    assert stored == Counter(list(sizes)), "each file stored exactly once"
    assert sorted(p.name for p in runner.archive.iterdir()) == sorted(sizes)
    assert list(runner.drop.iterdir()) == []
    assert {runner.archive / name: size for name, size in sizes.items()} == {
        p: p.stat().st_size for p in runner.archive.iterdir()}


def all_done(runner: DaemonRunner, count: int) -> bool:
    jobs = runner.jobs()
    return len(jobs) == count and all(job.state is JobState.DONE for job in jobs)


def test_three_hosts_share_the_work_and_a_killed_one_is_taken_over(hosts: list[DaemonRunner]) -> None:
    for runner in hosts:
        runner.start()
    sizes = drop_files(hosts[0].drop, 60)

    def uploading_on_host0() -> bool:
        return any(j.owner == "host0" and j.state is JobState.UPLOADING and j.bytes_sent > 0
                   for j in hosts[0].jobs())

    wait_for(uploading_on_host0, timeout=60, interval=0.1, what="host0 mid-upload")
    hosts[0].kill9()
    wait_for(lambda: all_done(hosts[1], 60), timeout=120, interval=0.5, what="all 60 done")
    assert_each_stored_and_archived_once(hosts[1], sizes)
    with hosts[1].shared_journal() as journal:
        adopted = [h["detail"] for job in journal.jobs(limit=100) for h in journal.history(job.id)
                   if "adopted" in (h["detail"] or "")]
    assert adopted and all("from host0" in note for note in adopted)
    for survivor in hosts[1:]:
        assert survivor.process is not None and survivor.process.poll() is None


def test_a_paused_host_commits_nothing_after_losing_its_lease(hosts: list[DaemonRunner]) -> None:
    first, second = hosts[:2]
    first.daemon.update(bandwidth_limit="1MiB")
    first.start()
    name, sizes = "long.mov", {"long.mov": 6 * 2**20}
    (first.drop / name).write_bytes(os.urandom(sizes[name]))
    job = wait_for(lambda: next((j for j in first.jobs() if j.bytes_sent > 0), None), timeout=30,
                   what="upload under way")
    assert first.process is not None
    os.kill(first.process.pid, signal.SIGSTOP)
    second.start()
    done = second.wait_state(name, JobState.DONE, timeout=60)
    assert done.id == job.id and done.lease_epoch > job.lease_epoch
    os.kill(first.process.pid, signal.SIGCONT)
    wait_for(lambda: first.saw("lease lost") or first.saw("took it over"), timeout=LEASE * 3,
             what="the paused host noticing its lease is gone")
    time.sleep(LEASE)
    assert second.jobs() == [done], "nothing committed by the host that lost its lease"
    assert_each_stored_and_archived_once(second, sizes)


def test_hosts_wait_out_a_database_restart(hosts: list[DaemonRunner], pg_cluster: Cluster) -> None:
    for runner in hosts[:2]:
        runner.start()
    sizes = drop_files(hosts[0].drop, 20, seed=7)
    wait_for(lambda: any(j.state is JobState.DONE for j in hosts[0].jobs()), timeout=60, what="first file done")
    pg_cluster.stop()
    wait_for(lambda: all(runner.saw("is unreachable") for runner in hosts[:2]), timeout=30,
             what="both hosts meeting the database down")
    pg_cluster.start()
    wait_for(lambda: all_done(hosts[0], 20), timeout=120, interval=0.5, what="all 20 done after the restart")
    assert_each_stored_and_archived_once(hosts[0], sizes)
    for runner in hosts[:2]:
        assert runner.process is not None and runner.process.poll() is None
    assert not any(runner.saw("Traceback") for runner in hosts[:2])



def test_the_journal_over_tls_verifies_the_server(tmp_path: Path) -> None:
    """libpq's TLS settings ride in [journal] url: verify-full against the CA file works
    (the cluster takes TCP only over TLS, so it was encrypted), a server the CA did not
    sign is refused in one line, and so is an unencrypted connection."""
    if not pgcluster.available():
        pytest.skip("PostgreSQL 15 is not installed (make test installs it)")
    journal_with(tmp_path / "single", 2)
    password_file = tmp_path / "journal-password"
    other_ca = pgcluster._make_certificates(Path(tempfile.mkdtemp(dir=tmp_path)))
    with pgcluster.running_cluster(tls=True) as cluster:
        password_file.write_text(cluster.password + "\n")
        password_file.chmod(0o600)
        url = f"{cluster.url()}?sslmode=verify-full&sslrootcert={cluster.ca_file}"
        copied = cli("journal", "copy", "--to", url, "--password-file", str(password_file),
                     "--state-dir", str(tmp_path / "single"))
        assert copied.returncode == 0 and "copied 2 job(s)" in copied.stdout, copied.stderr

        def status(url: str) -> subprocess.CompletedProcess[str]:
            config = tmp_path / "vaultdrop.toml"
            config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
                              f'[journal]\nurl = "{url}"\npassword_file = "{password_file}"\n')
            return cli("status", "--config", str(config))

        verified = status(url)
        assert verified.returncode == 0 and "jobs: queued 2" in verified.stdout, verified.stderr
        for bad, reason in ((url.replace(str(cluster.ca_file), str(other_ca)), "certificate verify failed"),
                            (f"{cluster.url()}?sslmode=disable", "no encryption")):
            refused = status(bad)
            assert refused.returncode != 0 and reason in refused.stderr, refused.stderr
            no_traceback(refused)
