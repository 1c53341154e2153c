"""The long campaign (`make campaign`): seeded kill -9s (one host, then two hosts sharing a
folder and a PostgreSQL journal) and a server-fault storm with an outage.

Every file must reach the vault exactly once (by sha256 in the sandbox's storage), end
`done`, and no local file may be archived before the vault holds its content. The table
of figures is printed at the end of the run (see conftest.py).

Knobs (environment): VAULTDROP_CAMPAIGN_SEED (default 2024), VAULTDROP_CAMPAIGN_KILLS (50),
VAULTDROP_CAMPAIGN_HOST_KILLS (12), VAULTDROP_CAMPAIGN_OUTAGE seconds (180).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from vaultdrop.job import JobState
from vaultdrop.sandbox.launcher import SandboxProcess, spawn_sandbox
from vaultdrop.stages.postaction import PRIVATE_PREFIX

from ..integration.harness import DaemonRunner, wait_for
from ..integration.test_daemon import write
from ..integration.test_s3 import enable_s3
from ..integration.test_several_hosts import LEASE, hosts  # noqa: F401 - daemons sharing a PostgreSQL journal
from .checks import TALLY, secret_leaks
from .hostile import Tripwire, json_corpus, progress_corpus, xml_corpus
from .test_journal_durability import check_journal

pytestmark = [pytest.mark.campaign, pytest.mark.timeout(3600)]

SEED = int(os.environ.get("VAULTDROP_CAMPAIGN_SEED", "2024"))
KILLS = int(os.environ.get("VAULTDROP_CAMPAIGN_KILLS", "50"))
HOST_KILLS = int(os.environ.get("VAULTDROP_CAMPAIGN_HOST_KILLS", "12"))
OUTAGE = float(os.environ.get("VAULTDROP_CAMPAIGN_OUTAGE", "180"))
FILES_PER_KILL = 6
CLAIMED = re.compile(rf"^{re.escape(PRIVATE_PREFIX)}\d+-")  # a job's private name while it is moved
HOSTILE_PER_BURST = 6
RSS_GROWTH_LIMIT = 40 * 1024 * 1024
RETRY_LINE = "retry in "  # the daemon's log line for every scheduled retry


def file_size(rng: random.Random) -> int:
    """Mostly small, some medium, a few large: the mix a camera folder sees."""
    roll = rng.random()
    if roll < 0.6:
        return rng.randint(1, 64 * 1024)
    if roll < 0.9:
        return rng.randint(64 * 1024, 2 * 1024 * 1024)
    return rng.randint(4 * 1024 * 1024, 16 * 1024 * 1024)


def drop_file(runner: DaemonRunner, rng: random.Random, name: str) -> str:
    """Write in place or write-then-rename, as real writers do; returns the content's sha256."""
    if rng.random() < 0.5:
        return write(runner.drop / name, file_size(rng))
    staging = runner.base / "staging" / name
    digest = write(staging, file_size(rng))
    os.replace(staging, runner.drop / name)
    return digest


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_nothing_archived_early(runner: DaemonRunner, digests: dict[str, str]) -> None:
    """Every file is in exactly one place, and an archived file's content is already in the vault.

    A kill between the two renames of an archive move leaves the file claimed under its
    job's private name in the drop folder (postaction.private_path); the restarted daemon
    finishes the move, which settle_accounts checks."""
    stored = {v["sha256"] for v in runner.sandbox.videos()}
    archived = {p.name for p in runner.archive.iterdir()}
    waiting = {CLAIMED.sub("", p.name) for p in runner.drop.iterdir()}
    assert archived.isdisjoint(waiting) and archived | waiting == set(digests), "a local file went missing"
    early = [name for name in archived if digests[name] not in stored]
    assert not early, f"archived before the vault held them: {early}"
    states = {j.relpath: j.state for j in runner.jobs()}
    assert all(states.get(name) in (JobState.FINISHING, JobState.DONE) for name in archived)


def settle_accounts(runner: DaemonRunner, digests: dict[str, str], timeout: float) -> None:
    """Wait for every file to be done, then count what the vault holds against what was dropped."""
    wait_for(lambda: {j.relpath: j.state for j in runner.jobs()} == dict.fromkeys(digests, JobState.DONE),
             timeout=timeout, interval=1.0, what="every file done")
    stored = Counter(v["sha256"] for v in runner.sandbox.videos())
    TALLY.files += len(digests)
    TALLY.lost += sum(1 for digest in digests.values() if digest not in stored)
    TALLY.duplicated += sum(count - 1 for count in stored.values())
    TALLY.failures += sum(1 for job in runner.jobs() if job.state is JobState.FAILED)
    assert TALLY.lost == TALLY.duplicated == 0
    assert {p.name for p in runner.archive.iterdir()} == set(digests) and not list(runner.drop.iterdir())
    assert all(sha256_file(runner.archive / name) == digest for name, digest in digests.items())


def quick_retries(runner: DaemonRunner) -> None:
    """Short backoff and many attempts: a kill campaign spends its time on kills, not waits."""
    runner.daemon.update(concurrency=2, bandwidth_limit=40_000_000)
    runner.vault.update(max_attempts=20, backoff_base=0.2, backoff_max=2.0)


def drop_then_kill9(runner: DaemonRunner, rng: random.Random, digests: dict[str, str], prefix: str) -> None:
    """FILES_PER_KILL files into the folder, then kill -9 while they are in flight."""
    for i in range(FILES_PER_KILL):
        name = f"{prefix}-{i}.mov"
        digests[name] = drop_file(runner, rng, name)
        time.sleep(rng.uniform(0, 0.2))
    time.sleep(rng.uniform(0.0, 2.5))
    runner.kill9()
    TALLY.kills += 1
    TALLY.retries += runner.output().count(RETRY_LINE)


def test_kill9_campaign(runner: DaemonRunner) -> None:
    rng = random.Random(SEED)
    quick_retries(runner)
    digests: dict[str, str] = {}
    started = time.monotonic()
    for kill in range(KILLS):
        runner.start()
        drop_then_kill9(runner, rng, digests, f"k{kill:02d}")
        check_journal(runner.state / "vaultdrop.db")
        check_nothing_archived_early(runner, digests)
    runner.start()
    settle_accounts(runner, digests, timeout=600)
    runner.stop()
    TALLY.retries += runner.output().count(RETRY_LINE)
    TALLY.phases["kill -9 loop"] = time.monotonic() - started
    check_journal(runner.state / "vaultdrop.db")
    TALLY.secret_leaks += len(secret_leaks(runner, [runner.sandbox.password]))
    assert TALLY.secret_leaks == 0


def test_two_hosts_kill9_campaign(hosts: list[DaemonRunner]) -> None:
    """Two daemons on one folder and one PostgreSQL journal, one of them killed -9 again and
    again while files flow; down for half to three times the lease, so its jobs are sometimes
    resumed by itself and sometimes adopted by the other host."""
    rng = random.Random(SEED + 2)
    pair = hosts[:2]
    for runner in pair:
        quick_retries(runner)
        runner.daemon.update(bandwidth_limit="4MiB")  # slow enough that a kill finds uploads in flight
        runner.start()
    digests: dict[str, str] = {}
    started = time.monotonic()
    for kill in range(HOST_KILLS):
        victim = rng.choice(pair)
        drop_then_kill9(victim, rng, digests, f"h{kill:02d}")
        survivor = pair[1 - pair.index(victim)]
        assert survivor.process is not None
        os.kill(survivor.process.pid, signal.SIGSTOP)  # files must hold still while they are counted
        try:
            check_nothing_archived_early(victim, digests)
        finally:
            os.kill(survivor.process.pid, signal.SIGCONT)
        time.sleep(rng.uniform(LEASE / 2, 3 * LEASE))
        victim.start()
    settle_accounts(pair[0], digests, timeout=600)
    with pair[0].shared_journal() as journal:
        adopted = sum("adopted by" in (h["detail"] or "") for job in journal.jobs(limit=100_000)
                      for h in journal.history(job.id))
    assert adopted, "no job was ever taken over: the phase tested restarts only"
    password = Path(pair[0].journal["password_file"]).read_text().strip()  # type: ignore[index]
    for runner in pair:
        runner.stop()
        TALLY.retries += runner.output().count(RETRY_LINE)
        TALLY.secret_leaks += len(secret_leaks(runner, [runner.sandbox.password, password]))
    TALLY.phases["two hosts, kill -9"] = time.monotonic() - started
    assert TALLY.secret_leaks == 0


class RssSampler:
    """The daemon's resident memory, sampled once a second from outside."""

    def __init__(self, pid: int) -> None:
        self.samples: list[int] = []
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.samples.append(self._process.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def fault_menu(rng: random.Random, timeout: float) -> list[dict[str, object]]:
    """One burst of server trouble, drawn from everything the sandbox can do wrong."""
    menu: list[Callable[[], dict[str, object]]] = [
        lambda: {"endpoint": rng.choice(["upload", "new_key", "progress"]), "action": "status",
                 "status": rng.choice([500, 502, 503]), "code": "server_error", "count": rng.randint(1, 4)},
        lambda: {"endpoint": "upload", "action": "drop_after", "bytes": rng.randint(0, 300_000),
                 "count": rng.randint(1, 3)},
        lambda: {"endpoint": rng.choice(["new_key", "progress"]), "action": "stall", "seconds": timeout + 2},
        lambda: {"endpoint": "upload", "action": "late_video_id", "seconds": rng.uniform(1, 4),
                 "count": rng.randint(1, 3)},
        lambda: {"endpoint": rng.choice(["aws.upload", "aws.status"]), "action": "vendor_code",
                 "code": rng.choice(["1000", "0004"]), "count": rng.randint(1, 3)},
        lambda: {"endpoint": "control", "action": "status", "status": 503, "code": "server_error"},
    ]
    return [rng.choice(menu)() for _ in range(rng.randint(2, 5))]


def hostile_faults(rng: random.Random, secret_file: Path, port: int, count: int) -> list[dict[str, object]]:
    xml = [("new_key", case) for case in xml_corpus(secret_file, port)]
    xml += [("progress", case) for case in progress_corpus()]
    cases = xml + [(command, case) for command, case in json_corpus() if len(case.body) < 500_000]
    return [{"endpoint": endpoint, "action": "body", "body": case.body, "content_type": case.content_type}
            for endpoint, case in rng.sample(cases, count)]


OUTAGE_ANSWERS = (502, 503, 504)


def check_retries_bounded_and_spaced(sandbox: SandboxProcess, max_attempts: int, backoff_base: float) -> None:
    """From the access log (both sandbox lives): no key is hammered, no retry comes without a pause.

    A POST answered like an outage (502/503/504) spends no attempt and is sent again as
    soon as the vault answers any call (issue 12), so only the other answers are held to
    max_attempts and to a backoff pause before the next POST on the key."""
    records = [json.loads(line) for line in (sandbox.root / "access.log").read_text().splitlines()]
    posts: dict[str, list[tuple[float, int | None]]] = {}
    for record in records:
        if record["endpoint"] == "upload" and record["upload_key"]:
            posts.setdefault(record["upload_key"], []).append((record["time"], record.get("status")))
    spent = [sum(status not in OUTAGE_ANSWERS for _, status in sends) for sends in posts.values()]
    assert max(spent) <= max_attempts
    gaps = [b[0] - a[0] for sends in posts.values() for a, b in zip(sorted(sends), sorted(sends)[1:])
            if a[1] not in OUTAGE_ANSWERS]
    assert not gaps or min(gaps) >= backoff_base / 2 * 0.9, "an upload was retried without a backoff pause"


def test_server_fault_campaign(runner: DaemonRunner, tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    enable_s3(runner)
    timeout = 3.0
    runner.scaleengine.update(timeout=timeout, status_poll_interval=0.5)  # type: ignore[union-attr]
    runner.vault.update(timeout=timeout, max_attempts=10, backoff_base=0.5, backoff_max=15, confirm_timeout=20)
    secret_file = tmp_path / "local-secret.txt"
    secret_file.write_text("never read")
    digests: dict[str, str] = {}
    port = urlsplit(runner.sandbox.url).port
    assert port is not None
    runner.start()
    assert runner.process is not None
    sampler = RssSampler(runner.process.pid)
    with Tripwire() as tripwire:
        try:
            started = time.monotonic()
            for burst in range(6):  # bursts overlap: faults meet jobs in every stage
                hostile = hostile_faults(rng, secret_file, tripwire.port, HOSTILE_PER_BURST)
                for fault in fault_menu(rng, timeout) + hostile:
                    runner.sandbox.add_fault(**fault)
                TALLY.hostile += HOSTILE_PER_BURST
                for i in range(15):
                    digests[f"f{burst}-{i}.mov"] = drop_file(runner, rng, f"f{burst}-{i}.mov")
                    time.sleep(rng.uniform(0, 0.5))
            wait_for(lambda: set(runner.job_states().values()) == {JobState.DONE}, timeout=600, interval=1.0,
                     what="every burst done")
            TALLY.phases["server faults"] = time.monotonic() - started
            runner.sandbox.clear_faults()
            started = time.monotonic()
            for i in range(10):
                digests[f"o-before-{i}.mov"] = drop_file(runner, rng, f"o-before-{i}.mov")
            time.sleep(1.0)
            runner.sandbox.stop()  # the outage: files keep arriving, the daemon keeps trying
            outage_end = time.monotonic() + OUTAGE
            for i in range(20):
                digests[f"o-during-{i}.mov"] = drop_file(runner, rng, f"o-during-{i}.mov")
                time.sleep(OUTAGE / 40)
            time.sleep(max(0.0, outage_end - time.monotonic()))
            assert runner.process.poll() is None, "the daemon died during the outage"
            runner.sandbox = spawn_sandbox(runner.sandbox.root, port=port)
            TALLY.phases["outage"] = time.monotonic() - started
            started = time.monotonic()
            settle_accounts(runner, digests, timeout=600)
            TALLY.phases["recovery"] = time.monotonic() - started
        finally:
            sampler.stop()
            runner.stop()
            TALLY.retries += runner.output().count(RETRY_LINE)
        assert tripwire.contacts == 0
    try:
        s3_copies = Counter(obj["sha256"] for obj in runner.sandbox.s3_objects())
        assert set(s3_copies) == set(digests.values()) and set(s3_copies.values()) == {1}
        check_retries_bounded_and_spaced(runner.sandbox, 40, 0.5)
        TALLY.secret_leaks += len(secret_leaks(runner, [runner.sandbox.password, runner.sandbox.api_secret]))
    finally:
        runner.sandbox.stop()
    assert TALLY.secret_leaks == 0
    quarter = max(1, len(sampler.samples) // 4)
    early, late = statistics.median(sampler.samples[:quarter]), statistics.median(sampler.samples[-quarter:])
    TALLY.rss = (min(sampler.samples), max(sampler.samples), int(late - early))
    assert late - early < RSS_GROWTH_LIMIT, f"daemon memory grew {late - early:,} bytes"
