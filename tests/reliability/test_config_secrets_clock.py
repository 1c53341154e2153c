"""Operator-facing safety: invalid configs exit 78 naming the key, secrets never leak, a skewed
clock is re-signed and warned about instead of spun on, and a few kill -9s lose nothing."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from vaultdrop.job import JobState

from ..integration.harness import DaemonRunner, wait_for
from ..integration.test_cli import vaultdrop
from ..integration.test_daemon import write
from ..integration.test_s3 import enable_s3
from .checks import secret_leaks

CLOCK_WARNING = "check NTP on this machine"


def set_keys(runner: DaemonRunner, changes: dict[str, object]) -> None:
    """Keys are "section.name" (daemon, vault, folder, s3, scaleengine); None removes one."""
    for key, value in changes.items():
        section, name = key.split(".")
        table = getattr(runner, section)
        if table is None:
            setattr(runner, section, table := {})
        if value is None:
            table.pop(name, None)
        else:
            table[name] = value


INVALID = [
    ("vault.colour", "blue", "vault.colour"),
    ("vault.user", None, "vault.user"),
    ("vault.password", None, "vault.password"),
    ("vault.password_file", {"vault.password": None, "vault.password_file": "/nonexistent/secret"},
     "vault.password_file"),
    ("vault.base_url", "ftp://vault.example", "vault.base_url"),
    ("vault.backoff_max", 0.01, "vault.backoff_max"),
    ("vault.max_attempts", 0, "vault.max_attempts"),
    ("daemon.concurrency", 0, "daemon.concurrency"),
    ("daemon.bandwidth_limit", "fast", "daemon.bandwidth_limit"),
    ("daemon.dedupe", "md5", "daemon.dedupe"),
    ("folder.settle", "soon", "folders[0].settle"),
    ("folder.path", "/dev/null", "folders[0].path"),  # not a directory (a missing one is a late mount)
    ("folder.after_upload", "shred", "folders[0].after_upload"),
    ("folder.archive_dir", None, "folders[0].archive_dir"),
    ("folder.ready_marker", "a/b", "folders[0].ready_marker"),
    ("s3.bucket", "b", "folders[0].s3"),
    ("scaleengine.cdn", 0, "scaleengine"),
]


@pytest.mark.parametrize(("key", "value", "named"), INVALID, ids=[case[0] for case in INVALID])
def test_every_invalid_config_exits_78_naming_the_key(runner: DaemonRunner, key: str, value: object,
                                                      named: str) -> None:
    set_keys(runner, value if isinstance(value, dict) else {key: value})
    answer = vaultdrop(runner, "check-config")
    assert answer.returncode == 78 and named in answer.stderr, answer.stderr
    assert runner.sandbox.password not in answer.stderr + answer.stdout


def test_nested_folders_and_state_dir_are_refused_by_the_daemon(runner: DaemonRunner) -> None:
    runner.folder["archive_dir"] = str(runner.drop / "archive")
    runner.daemon["state_dir"] = str(runner.drop / "state")
    runner.start(wait_ready=False)
    assert runner.wait_exit() == 78
    assert "folders[0].archive_dir" in runner.output() and "daemon.state_dir" in runner.output()


def test_secret_file_readable_by_others_draws_a_warning(runner: DaemonRunner, tmp_path: Path) -> None:
    secret = tmp_path / "vault-password"
    secret.write_text(runner.sandbox.password + "\n")
    runner.vault.pop("password")
    runner.vault["password_file"] = str(secret)
    secret.chmod(0o644)
    loose = vaultdrop(runner, "check-config")
    assert loose.returncode == 0 and "readable by group or others" in loose.stderr
    assert runner.sandbox.password not in loose.stderr
    secret.chmod(0o600)
    assert "readable by" not in vaultdrop(runner, "check-config").stderr


def test_expired_signature_is_resigned_with_a_clock_warning(runner: DaemonRunner) -> None:
    runner.sandbox.add_fault(endpoint="upload", action="status", status=401, code="expired", count=2)
    runner.start()
    digest = write(runner.drop / "skew.mov", 30_000)
    runner.wait_state("skew.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("skew.mov")] == [digest]
    assert runner.output().count("retry in ") == 2
    assert runner.output().count(CLOCK_WARNING) == 2
    posts = [r for r in runner.sandbox.log() if r["endpoint"] == "upload"]
    assert [r["status"] for r in posts] == [401, 401, 200]
    dates = [float(r["query"]["_date"]) for r in posts]
    assert dates == sorted(dates) and len(set(dates)) == 3, "every retry carries a fresh signature"
    gaps = [b["time"] - a["time"] for a, b in zip(posts, posts[1:])]
    assert min(gaps) >= runner.vault["backoff_base"] / 2 * 0.9, "retries are spaced by the backoff"


def test_a_clock_that_stays_wrong_ends_in_failed_not_a_spin(runner: DaemonRunner) -> None:
    runner.sandbox.add_fault(endpoint="new_key", action="status", status=401, code="expired", count=1000)
    runner.vault["max_attempts"] = 4
    runner.start()
    write(runner.drop / "never.mov", 5000)
    job = runner.wait_state("never.mov", JobState.FAILED)
    time.sleep(1.0)
    assert "expired" in (job.last_error or "") and runner.output().count(CLOCK_WARNING) == 3
    assert len([r for r in runner.sandbox.log() if r["endpoint"] == "new_key"]) == 1 + 4, "start-up check + attempts"


def test_control_api_timestamp_refusal_is_resigned_with_a_warning(runner: DaemonRunner) -> None:
    enable_s3(runner)
    runner.sandbox.add_fault(endpoint="aws.upload", action="vendor_code", code="0002", count=2)
    runner.start()
    write(runner.drop / "s3skew.mov", 20_000)
    job = runner.wait_state("s3skew.mov", JobState.DONE)
    assert job.s3_status == "complete" and runner.output().count(CLOCK_WARNING) == 2
    calls = [r for r in runner.sandbox.log() if r["command"] == "aws.upload"]
    assert [r["code"] for r in calls] == ["0002", "0002", None]
    assert len(runner.sandbox.s3_objects()) == 1


def test_secrets_never_reach_logs_status_or_journal(runner: DaemonRunner) -> None:
    enable_s3(runner)
    runner.sandbox.add_fault(endpoint="upload", action="status", status=401, code="expired")
    runner.sandbox.add_fault(endpoint="aws.upload", action="vendor_code", code="0004")
    runner.daemon["log_level"] = "debug"
    runner.start()
    write(runner.drop / "a.mov", 20_000)
    runner.wait_state("a.mov", JobState.DONE)
    runner.sandbox.add_fault(endpoint="upload", action="status", status=413, code="too_large")
    write(runner.drop / "b.mov", 20_000)
    runner.wait_state("b.mov", JobState.FAILED)
    runner.stop()
    assert (runner.failed / "b.mov.error.json").exists()
    assert secret_leaks(runner, [runner.sandbox.password, runner.sandbox.api_secret]) == []


def test_a_few_kill9s_at_random_moments_lose_and_duplicate_nothing(runner: DaemonRunner) -> None:
    rng = random.Random(5)
    runner.daemon["bandwidth_limit"] = 4_000_000
    digests: dict[str, str] = {}
    for kill in range(5):
        runner.start()
        for i in range(4):
            name = f"k{kill}-{i}.mov"
            digests[name] = write(runner.drop / name, rng.choice([2_000, 300_000, 2_000_000]))
        time.sleep(rng.uniform(0.3, 2.0))
        runner.kill9()
    runner.start()
    wait_for(lambda: {j.relpath: j.state for j in runner.jobs()} == dict.fromkeys(digests, JobState.DONE),
             timeout=90, what="every file done")
    assert sorted(v["sha256"] for v in runner.sandbox.videos()) == sorted(digests.values())
    assert sorted(p.name for p in runner.archive.iterdir()) == sorted(digests)
