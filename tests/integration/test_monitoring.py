"""Monitoring end to end: scrape the running daemon's /metrics over real HTTP after uploads,
a failure and an outage, and receive its notifications on real loopback receivers."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import sqlite3
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vaultdrop.job import JobState

from ..receiver import closed_port_url, free_port, receiver
from .harness import DaemonRunner, wait_for
from .test_cli import vaultdrop
from .test_daemon import write

SECRET = "hook-secret"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def outbox(runner: DaemonRunner) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{runner.state / 'vaultdrop.db'}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM outbox ORDER BY id")]


def assert_job_gauges_match_the_journal(runner: DaemonRunner, samples: dict[Any, float]) -> None:
    folder = str(runner.drop)
    jobs = runner.jobs()
    for state in JobState:
        expected = sum(1 for job in jobs if job.state is state)
        assert sample(samples, "vaultdrop_jobs", folder=folder, state=state.value) == expected, state


def test_metrics_and_notifications_follow_uploads_a_failure_and_an_outage(runner: DaemonRunner) -> None:
    port = free_port()
    started = time.time()
    runner.run_args = ["--metrics-addr", f"127.0.0.1:{port}"]
    with receiver([500]) as failed_hook:
        runner.tables["notify"] = {"on_failed": failed_hook.url, "on_done": closed_port_url(), "secret": SECRET,
                                   "backoff_base": 0.2, "backoff_max": 0.4, "max_attempts": 3}
        runner.sandbox.add_fault(endpoint="upload", action="status", status=413, code="too_large", count=1)
        runner.start()
        write(runner.drop / "bad.mov", 20_000)
        failed = runner.wait_state("bad.mov", JobState.FAILED)
        sizes = [30_000, 40_000]
        for i, size in enumerate(sizes):
            write(runner.drop / f"ok{i}.mov", size)
        for i in range(len(sizes)):
            runner.wait_state(f"ok{i}.mov", JobState.DONE)

        runner.sandbox.add_fault(endpoint="new_key", action="status", status=503, code="server_error", count=10_000)
        write(runner.drop / "late.mov", 10_000)
        def outage_seen() -> dict[Any, float] | None:
            samples = scrape(port)
            return samples if sample(samples, "vaultdrop_vault_up") == 0 else None

        during = wait_for(outage_seen, what="vault_up 0 during the outage")
        assert sample(during, "vaultdrop_retries_total", reason="outage") >= 1
        assert sample(during, "vaultdrop_jobs", folder=str(runner.drop), state="queued") == 1
        assert sample(during, "vaultdrop_oldest_pending_seconds", folder=str(runner.drop)) > 0
        runner.sandbox.clear_faults()
        runner.wait_state("late.mov", JobState.DONE)

        wait_for(lambda: failed_hook.delivered(), what="the failed notification")
        wait_for(lambda: all(row["next_at"] is None for row in outbox(runner)), what="every event settled")
        samples = scrape(port)
        first_run = runner.output()
        runner.stop()

        runner.run_args = ["--metrics-addr", f"127.0.0.1:{port}"]
        runner.start()
        after_restart = scrape(port)
        time.sleep(1.0)  # a pass of the restarted sender over the outbox
        runner.stop()

    folder = str(runner.drop)
    assert_job_gauges_match_the_journal(runner, samples)
    assert_job_gauges_match_the_journal(runner, after_restart)
    assert sample(samples, "vaultdrop_files_total", folder=folder, outcome="done") == 3
    assert sample(samples, "vaultdrop_files_total", folder=folder, outcome="failed") == 1
    assert sample(after_restart, "vaultdrop_files_total", folder=folder, outcome="done") == 0, "counters restart"
    assert sample(samples, "vaultdrop_ingest_seconds_count", folder=folder) == 3
    assert sample(samples, "vaultdrop_upload_bytes_total", folder=folder) >= sum(sizes) + 10_000
    assert sample(samples, "vaultdrop_oldest_pending_seconds", folder=folder) == 0
    assert sample(samples, "vaultdrop_vault_up") == 1, "the vault answered again"
    assert sample(samples, "vaultdrop_last_success_timestamp_seconds") > started
    assert sample(after_restart, "vaultdrop_last_success_timestamp_seconds") == pytest.approx(
        sample(samples, "vaultdrop_last_success_timestamp_seconds"), abs=0.5), "the last success survives a restart"
    assert sample(samples, "vaultdrop_notifications_sent_total") == 1
    assert sample(samples, "vaultdrop_notifications_failed_total") == 1 + 3 * 3, "the 500, then 3 tries of 3 events"
    assert sample(samples, "vaultdrop_notifications_given_up_total") == 3
    assert sample(samples, "vaultdrop_notifications_pending") == 0
    assert sample(samples, "vaultdrop_notifications_oldest_pending_seconds") == 0
    assert sample(samples, "vaultdrop_build_info", version="0.1.0") == 1

    assert [p.status for p in failed_hook.posts] == [500, 200], "retried once, then never sent again"
    first, second = failed_hook.posts
    assert first.body == second.body, "the same event, the same bytes"
    event = second.json
    assert (event["event"], event["job_id"], event["file"], event["folder"]) == ("failed", failed.id, "bad.mov", folder)
    assert "too_large" in event["error"] and event["size"] == 20_000
    signature = "sha256=" + hmac.new(SECRET.encode(), second.body, hashlib.sha256).hexdigest()
    assert second.headers["x-vaultdrop-signature"] == signature, "the first signature still works"
    assert event["host"] == socket.gethostname()
    # The README's verification, as a receiver runs it: the timestamp is signed, and fresh.
    timestamp = second.headers["x-vaultdrop-timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + second.body,
                                    hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, second.headers["x-vaultdrop-signature-v2"])
    assert abs(time.time() - int(timestamp)) < 300
    assert first.headers["x-vaultdrop-timestamp"] <= timestamp
    assert f"notification {event['event_id']} (failed: bad.mov) delivered to http://127.0.0.1:" in first_run, \
        "a late delivery is logged"
    done_events = [row for row in outbox(runner) if row["event"] == "done"]
    assert len(done_events) == 3 and all(row["attempts"] == 3 and row["delivered_at"] is None
                                         for row in done_events), "a receiver that is down: bounded retries"
    assert SECRET not in runner.output()


def test_one_shot_uploads_share_one_folder_series(runner: DaemonRunner) -> None:
    """Issue 23: every directory a `vaultdrop upload` ran on became a metric series of its
    own; jobs outside the watched folders now count under folder="(other)"."""
    port = free_port()
    runner.run_args = ["--metrics-addr", f"127.0.0.1:{port}"]
    runner.start()
    for place in ("a", "b"):
        write(runner.base / place / "one.mov", 3000 + len(place))
        uploaded = vaultdrop(runner, "upload", str(runner.base / place / "one.mov"))
        assert uploaded.returncode == 0, uploaded.stderr
    samples = scrape(port)
    runner.stop()
    folders = {dict(labels).get("folder") for (name, labels) in samples if name == "vaultdrop_jobs"}
    assert folders == {"(other)"}, folders
    assert sample(samples, "vaultdrop_jobs", folder="(other)", state="done") == 2


def test_a_folder_missing_at_start_is_a_warning_and_watched_once_it_exists(runner: DaemonRunner) -> None:
    """A late mount (NFS/SMB after the service) must not stop the daemon (exit 78 would
    end it for good under systemd): it says so once, in status and as a metric, and
    uploads the folder's files once it is there."""
    port = free_port()
    runner.run_args = ["--metrics-addr", f"127.0.0.1:{port}"]
    late = runner.base / "mnt" / "ingest"
    runner.folder["path"] = str(late)
    checked = vaultdrop(runner, "check-config")
    assert checked.returncode == 0 and f"folders[0].path: {late} does not exist yet" in checked.stderr
    runner.start()
    assert runner.output().count(f"folder {late} does not exist") == 1
    status = wait_for(lambda: (lambda out: "folder missing" in out and out)(vaultdrop(runner, "status").stdout),
                      what="status names the missing folder")
    assert f"folder missing: {late} (watched once it exists" in status
    assert json.loads(vaultdrop(runner, "status", "--json").stdout)["daemon"]["missing_folders"] == [str(late)]
    assert sample(scrape(port), "vaultdrop_folder_missing", folder=str(late)) == 1

    late.mkdir(parents=True)
    digest = write(late / "clip.mov", 20_000)
    runner.wait_state("clip.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("clip.mov")] == [digest]
    assert (runner.archive / "clip.mov").exists()
    assert runner.saw(f"watching {late}: the folder is there now")
    wait_for(lambda: sample(scrape(port), "vaultdrop_folder_missing", folder=str(late)) == 0, what="metric cleared")
    assert "folder missing" not in vaultdrop(runner, "status").stdout
    assert runner.output().count("does not exist") == 1, "said once"
    assert runner.stop() == 0


def test_a_folder_path_that_is_a_file_is_still_a_configuration_error(runner: DaemonRunner) -> None:
    runner.folder["path"] = str(runner.base / "vaultdrop.toml")
    result = vaultdrop(runner, "check-config")
    assert result.returncode == 78 and "folders[0].path: not a directory" in result.stderr
