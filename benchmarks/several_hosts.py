"""Several hosts on one PostgreSQL journal: what the database sustains and what N daemons do.

Prints four figures (make bench-hosts):
- claims per second (runnable + claim, the scheduler's path) with 1 and 3 claiming hosts;
- lease renewals per second (one heartbeat renewing 8 jobs, in a loop);
- files per second with 1, 2 and 3 daemons on one polled folder against the sandbox;
- takeover time: from kill -9 of the host holding an upload to another host adopting it,
  with the default 30 s lease and with a 5 s lease.

Everything is local (loopback PostgreSQL, sandbox, daemons on this machine), so the
figures bound the journal's overhead, not a real network's.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.tools import MIB, sandbox_at, write_random_file  # noqa: E402
from tests.integration.harness import DaemonRunner, wait_for  # noqa: E402
from tests.pgcluster import Cluster, running_cluster  # noqa: E402
from vaultdrop.job import FileIdentity, JobState  # noqa: E402
from vaultdrop.journal.postgres import PgJournal  # noqa: E402

FOLDER = "/bench"


@contextmanager
def database(cluster: Cluster, name: str) -> Iterator[tuple[str, Path]]:
    with cluster.database(name) as url, tempfile.TemporaryDirectory() as tmp:
        password_file = Path(tmp) / "pw"
        password_file.write_text(cluster.password)
        yield url, password_file


def claims_per_second(cluster: Cluster, hosts: int, jobs: int = 3000) -> float:
    with database(cluster, f"claims{hosts}") as (url, password_file):
        seed = PgJournal(url, cluster.password)
        for n in range(jobs):
            seed.enqueue(FileIdentity(FOLDER, f"f{n}", 1, 1, n + 1))
        seed.close()
        claimed = [0] * hosts

        def host(index: int) -> None:
            journal = PgJournal(url, cluster.password, host_id=f"h{index}")
            mine: set[int] = set()  # the daemon's running tasks: not offered again
            while batch := journal.runnable(time.time(), mine, 4, [FOLDER]):
                won = [job.id for job in batch if journal.claim(job) is not None]
                mine.update(won)
                claimed[index] += len(won)
            journal.close()

        threads = [threading.Thread(target=host, args=(i,)) for i in range(hosts)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        assert sum(claimed) == jobs, claimed
        return jobs / elapsed


def renewals_per_second(cluster: Cluster, held: int = 8, seconds: float = 3.0) -> float:
    with database(cluster, "renewals") as (url, _):
        journal = PgJournal(url, cluster.password, host_id="h")
        ids = []
        for n in range(held):
            job = journal.enqueue(FileIdentity(FOLDER, f"f{n}", 1, 1, n + 1))
            assert job is not None
            ids.append(job.id)
            journal.claim(job)
        calls, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            journal.renew(ids)
            calls += 1
        journal.close()
        return calls / seconds


def hosts_on(stack: ExitStack, base: Path, cluster: Cluster, count: int, lease: float = 30.0) -> list[DaemonRunner]:
    sandbox = stack.enter_context(sandbox_at(base / "sandbox"))
    url, password_file = stack.enter_context(database(cluster, f"d{os.getpid()}_{base.name}"))
    runners = []
    for n in range(count):
        (base / f"host{n}").mkdir(parents=True)
        runner = DaemonRunner(base / f"host{n}", sandbox)
        runner.drop, runner.archive, runner.failed = base / "drop", base / "archive", base / "failed"
        for folder in (runner.drop, runner.archive, runner.failed):
            folder.mkdir(exist_ok=True)
        runner.folder.update(path=str(runner.drop), archive_dir=str(runner.archive),
                             failed_dir=str(runner.failed), watcher="polling", poll_interval=0.5)
        runner.journal = {"url": url, "password_file": str(password_file), "host_id": f"host{n}", "lease": lease}
        stack.callback(runner.stop)
        runners.append(runner)
    return runners


def files_per_second(cluster: Cluster, daemons: int, files: int = 60, size: int = MIB) -> float:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        runners = hosts_on(stack, Path(tmp) / f"n{daemons}", cluster, daemons)
        for runner in runners:
            runner.start()
        started = time.monotonic()
        for n in range(files):
            write_random_file(runners[0].drop / f"clip{n:03}.mov", size, seed=n)
        wait_for(lambda: sum(j.state is JobState.DONE for j in runners[0].jobs()) == files, timeout=600,
                 interval=0.2, what="all files done")
        return files / (time.monotonic() - started)


def takeover_seconds(cluster: Cluster, lease: float) -> float:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        first, second = hosts_on(stack, Path(tmp) / f"lease{lease:g}", cluster, 2, lease=lease)
        first.daemon.update(bandwidth_limit="1MiB")
        first.start()
        write_random_file(first.drop / "long.mov", 64 * MIB)
        wait_for(lambda: any(j.bytes_sent > 0 for j in first.jobs()), timeout=60, what="upload under way")
        second.start()
        first.kill9()
        killed = time.time()
        with first.shared_journal() as journal:
            job = journal.jobs()[0]
            wait_for(lambda: getattr(journal.get(job.id), "owner", None) == "host1", timeout=lease + 60,
                     interval=0.1, what="takeover")
            adopted = next(h["at"] for h in journal.history(job.id) if "adopted" in (h["detail"] or ""))
        return adopted - killed


def main() -> int:
    with running_cluster() as cluster:
        print(f"claims/s, 1 host:   {claims_per_second(cluster, 1):8.0f}", flush=True)
        print(f"claims/s, 3 hosts:  {claims_per_second(cluster, 3):8.0f}", flush=True)
        print(f"renew calls/s (8 jobs each): {renewals_per_second(cluster):8.0f}", flush=True)
        for daemons in (1, 2, 3):
            print(f"files/s, {daemons} daemon(s), 60 x 1 MiB: {files_per_second(cluster, daemons):6.2f}", flush=True)
        for lease in (30.0, 5.0):
            print(f"takeover after kill -9, lease {lease:g} s: {takeover_seconds(cluster, lease):5.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
