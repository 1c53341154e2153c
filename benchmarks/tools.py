"""Measuring instruments shared by the benchmark cases: process meters, the curl client,
file makers, and the daemon/sandbox pair (the integration tests' own harness).
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.harness import DaemonRunner, wait_for  # noqa: E402
from tests.receiver import free_port  # noqa: E402,F401 - for cases.py
from vaultdrop.clients.signing import vault_signature  # noqa: E402
from vaultdrop.job import Job, JobState  # noqa: E402
from vaultdrop.journal import Journal  # noqa: E402
from vaultdrop.sandbox.launcher import (  # noqa: E402
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    DEFAULT_CDN,
    DEFAULT_PASSWORD,
    DEFAULT_STORAGE,
    DEFAULT_USER,
    SandboxProcess,
    spawn_sandbox,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
UPLOAD_PATH = "/upload/new/file"


def peak_rss(pid: int) -> int:
    """VmHWM: the process's peak resident set since it started, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): p99 of 200 samples is the 198th value."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def wait_idle(pid: int, quiet: float = 2.0, threshold: float = 0.15, timeout: float = 600.0) -> float:
    """Wait until the process has used under `threshold` of a core for `quiet` seconds.

    Returns how long it kept busy: seconds from the call to its last busy 0.1 s sample.
    """
    started = last_busy = time.monotonic()
    before = cpu_seconds(pid)
    while time.monotonic() - last_busy < quiet:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"process {pid} still busy after {timeout} s")
        time.sleep(0.1)
        now, used = time.monotonic(), cpu_seconds(pid)
        if used - before > threshold * 0.1:
            last_busy = now
        before = used
    return last_busy - started


def sha256_run(path: Path) -> tuple[float, float]:
    """The hash the daemon must do anyway, alone: (wall seconds, CPU seconds) of one
    in-process SHA-256 pass over `path` in 1 MiB reads."""
    started, cpu = time.monotonic(), time.thread_time()
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as source:
        while chunk := source.read(MIB):
            digest.update(chunk)
    return time.monotonic() - started, time.thread_time() - cpu


# -- files ----------------------------------------------------------------------------


def write_random_file(path: Path, size: int, seed: int = 1) -> None:
    """Incompressible content on disk without holding it in memory: one random MiB repeated
    with a per-MiB counter, so no two blocks are equal."""
    block = random.Random(seed).randbytes(MIB)
    with path.open("wb") as out:
        written = 0
        while written < size:
            count = min(MIB, size - written)
            out.write((written // MIB).to_bytes(8, "little") + block[8:count])
            written += count


def sparse_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        out.truncate(size)


# -- the daemon and its sandbox --------------------------------------------------------


@contextmanager
def sandbox_at(root: Path) -> Iterator[SandboxProcess]:
    with spawn_sandbox(root / "sandbox") as sandbox:
        yield sandbox


@contextmanager
def sink_at(root: Path) -> Iterator[SandboxProcess]:
    """benchmarks/sink.py as a child process, behind the sandbox's handle (url, credentials,
    stop); it has no admin endpoints, so nothing can be asked of it but the vault API."""
    root.mkdir(parents=True, exist_ok=True)
    ready = root / "sink-url"
    process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("sink.py")), "--ready-file", str(ready)])
    with SandboxProcess(url="", root=root, user=DEFAULT_USER, password=DEFAULT_PASSWORD, api_key=DEFAULT_API_KEY,
                        api_secret=DEFAULT_API_SECRET, cdn=DEFAULT_CDN, storage=DEFAULT_STORAGE,
                        process=process) as sink:
        wait_for(lambda: ready.exists() or process.poll() is not None, timeout=15, what="sink listening")
        if process.poll() is not None:
            raise RuntimeError(f"sink exited {process.returncode}")
        sink.url = ready.read_text()
        yield sink


def daemon_runner(base: Path, sandbox: SandboxProcess, *, concurrency: int, settle: float,
                  rescan_interval: float = 0) -> DaemonRunner:
    """The integration harness's runner, set up as an operator would for throughput:
    files kept in place, no archive copy to muddle the figures."""
    base.mkdir(parents=True, exist_ok=True)
    runner = DaemonRunner(base, sandbox)
    runner.daemon.update(concurrency=concurrency, rescan_interval=rescan_interval, drain_timeout=5)
    runner.vault.update(timeout=60, confirm_timeout=60)
    runner.folder = {"path": str(runner.drop), "settle": settle, "after_upload": "keep"}
    return runner


def journal_counts(runner: DaemonRunner) -> dict[JobState, int]:
    path = runner.state / "vaultdrop.db"
    if not path.exists():
        return {state: 0 for state in JobState}
    journal = Journal(path, readonly=True)
    try:
        return journal.counts()
    finally:
        journal.close()


def wait_done(runner: DaemonRunner, count: int, timeout: float) -> None:
    """Until `count` jobs are done; fails fast when one fails."""

    def finished() -> bool:
        counts = journal_counts(runner)
        if counts[JobState.FAILED]:
            raise AssertionError(f"{counts[JobState.FAILED]} job(s) failed\n{runner.output()[-3000:]}")
        return counts[JobState.DONE] >= count

    wait_for(finished, timeout, interval=0.2, what=f"{count} jobs done")


def done_jobs(runner: DaemonRunner) -> list[Job]:
    return [job for job in runner.jobs() if job.state is JobState.DONE]


def prefill_journal(runner: DaemonRunner, files: list[Path]) -> None:
    """Journal `files` as already uploaded, through the journal's own API, as a daemon that
    had sent them would have left it (every transition and its history row)."""
    from vaultdrop.job import FileIdentity

    journal = Journal(runner.state / "vaultdrop.db")
    journal._db.execute("PRAGMA synchronous = OFF")  # a fixture: durability is not under test here
    try:
        folder = str(runner.drop)
        for number, path in enumerate(files):
            info = path.stat()
            job = journal.enqueue(FileIdentity(folder, str(path.relative_to(runner.drop)), info.st_size,
                                               info.st_mtime_ns, info.st_ino))
            assert job is not None
            job = journal.transition(job, JobState.UPLOADING, "prefilled", upload_key=f"prefilled-{number}")
            for state in (JobState.CONFIRMING, JobState.FINISHING, JobState.DONE):
                job = journal.transition(job, state, "prefilled")
    finally:
        journal.close()


def timed_get(url: str) -> float:
    """Seconds for one GET of `url`, body read in full."""
    started = time.perf_counter()
    httpx.get(url, timeout=30).raise_for_status()
    return time.perf_counter() - started


# -- curl, by hand ---------------------------------------------------------------------


@dataclass
class CurlRun:
    seconds: float
    cpu: float
    output: str


class Curl:
    """The calls an operator makes by hand, one curl process each.

    Signatures are over path and time only, so they are computed once per benchmark
    (the server accepts them for 900 s) and cost the curl side nothing.
    """

    def __init__(self, sandbox: SandboxProcess) -> None:
        self.url = sandbox.url
        self.date = f"{time.time():.1f}"

        def sign(path: str) -> str:
            return vault_signature(sandbox.user, sandbox.password, self.date, path)

        self.key_sig = sign("/upload/new_upload_key.xml")
        self.progress_sig = sign("/upload/progress.xml")
        self.upload_sig = quote(sign(UPLOAD_PATH), safe="")

    def _run(self, *args: str) -> CurlRun:
        started = time.monotonic()
        process = subprocess.Popen(["curl", "-sS", "--fail-with-body", *args], stdout=subprocess.PIPE)
        assert process.stdout is not None
        output = process.stdout.read().decode()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        if process.returncode != 0:
            raise RuntimeError(f"curl {' '.join(args)} exited {process.returncode}: {output}")
        return CurlRun(seconds, usage.ru_utime + usage.ru_stime, output)

    def _signed(self, signature: str) -> list[str]:
        return ["-H", f"Authorization: {signature}", "-H", f"x-sesame-date: {self.date}"]

    def upload(self, path: Path) -> CurlRun:
        """New key, the multipart POST, the progress check: three processes, summed."""
        key_run = self._run(*self._signed(self.key_sig), f"{self.url}/upload/new_upload_key.xml")
        key = key_run.output.split("<upload_key>")[1].split("</upload_key>")[0]
        post = self._run("-o", "/dev/null", "-F", f"upload_file=@{path}",
                         f"{self.url}{UPLOAD_PATH}?upload_key={key}&_sig={self.upload_sig}&_date={self.date}")
        check = self._run(*self._signed(self.progress_sig), f"{self.url}/upload/progress.xml?upload_key={key}")
        if f"<video_id>{key}</video_id>" not in check.output:
            raise RuntimeError(f"curl upload of {path} not confirmed: {check.output}")
        runs = (key_run, post, check)
        return CurlRun(sum(r.seconds for r in runs), sum(r.cpu for r in runs), key)

    def shell_loop(self, folder: Path) -> tuple[float, float]:
        """`for f in folder/*`: the same three calls per file from a bash loop.

        Returns (wall seconds, CPU seconds of bash and every curl it ran).
        """
        script = r'''
set -eu
for f in "$DIR"/*; do
  key=$(curl -sS --fail-with-body -H "Authorization: $KEY_SIG" -H "x-sesame-date: $DATE" \
        "$URL/upload/new_upload_key.xml" | sed -n 's:.*<upload_key>\(.*\)</upload_key>.*:\1:p')
  curl -sS --fail-with-body -o /dev/null -F "upload_file=@$f" \
       "$URL/upload/new/file?upload_key=$key&_sig=$UPLOAD_SIG&_date=$DATE"
  curl -sS --fail-with-body -o /dev/null -H "Authorization: $PROGRESS_SIG" -H "x-sesame-date: $DATE" \
       "$URL/upload/progress.xml?upload_key=$key"
done
'''
        env = {**os.environ, "DIR": str(folder), "URL": self.url, "DATE": self.date, "KEY_SIG": self.key_sig,
               "UPLOAD_SIG": self.upload_sig, "PROGRESS_SIG": self.progress_sig}
        started = time.monotonic()
        process = subprocess.Popen(["bash", "-c", script], env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"curl shell loop exited {process.returncode}")
        return time.monotonic() - started, usage.ru_utime + usage.ru_stime
