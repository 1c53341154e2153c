"""The operator's commands, run as the real CLI against a real sandbox and journal."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from vaultdrop.job import JobState

from .harness import DaemonRunner
from .test_daemon import write


def vaultdrop(runner: DaemonRunner, *args: str) -> subprocess.CompletedProcess[str]:
    runner.write_config()
    return subprocess.run([sys.executable, "-m", "vaultdrop.cli", *args, "--config", str(runner.config_path)],
                          capture_output=True, text=True, timeout=60)


def test_check_config_accepts_good_and_names_the_bad_key(runner: DaemonRunner) -> None:
    ok = vaultdrop(runner, "check-config")
    assert ok.returncode == 0 and "OK" in ok.stdout
    runner.folder["after_upload"] = "shred"
    bad = vaultdrop(runner, "check-config")
    assert bad.returncode == 78 and "folders[0].after_upload" in bad.stderr


def test_status_and_jobs_show_what_happened(runner: DaemonRunner) -> None:
    runner.start()
    write(runner.drop / "s.mov", 4000)
    job = runner.wait_state("s.mov", JobState.DONE)
    status = json.loads(vaultdrop(runner, "status", "--json").stdout)
    assert status["counts"]["done"] == 1 and status["in_flight"] == [] and status["daemon"]["running"]
    shown = json.loads(vaultdrop(runner, "jobs", "show", str(job.id), "--json").stdout)
    assert shown["video_id"] == job.video_id
    assert [h["to_state"] for h in shown["history"]] == ["queued", "uploading", "confirming", "finishing", "done"]
    assert "s.mov" in vaultdrop(runner, "jobs", "list").stdout


def test_retry_brings_a_failed_file_back_and_status_shows_the_error(runner: DaemonRunner) -> None:
    runner.folder.pop("failed_dir")
    runner.vault["max_attempts"] = 1
    runner.sandbox.add_fault(endpoint="upload", action="status", status=500, code="server_error")
    runner.start()
    write(runner.drop / "f.mov", 4000)
    job = runner.wait_state("f.mov", JobState.FAILED)
    assert (runner.drop / "f.mov").exists(), "without failed_dir the file stays in place"
    status = vaultdrop(runner, "status")
    assert re.search(r"daemon: running since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d.* \(pid \d+\)", status.stdout), status
    assert "last error:" in status.stdout and "server_error" in status.stdout, "status says the daemon's last error"
    assert vaultdrop(runner, "jobs", "retry", str(job.id)).returncode == 0
    runner.wait_state("f.mov", JobState.DONE)
    assert len(runner.uploads_of("f.mov")) == 1
    assert "last error:" not in vaultdrop(runner, "status").stdout, "the retry that went through resolved it"


def test_one_shot_upload_and_delete(runner: DaemonRunner) -> None:
    elsewhere = runner.base / "elsewhere"
    digest = write(elsewhere / "one.mov", 50_000)
    result = vaultdrop(runner, "upload", str(elsewhere / "one.mov"))
    assert result.returncode == 0, result.stderr
    [video] = runner.uploads_of("one.mov")
    assert video["sha256"] == digest and video["video_id"] in result.stdout
    assert (elsewhere / "one.mov").exists(), "a one-shot upload keeps the file"
    again = vaultdrop(runner, "upload", str(elsewhere / "one.mov"))
    assert "already uploaded" in again.stdout and len(runner.uploads_of("one.mov")) == 1
    assert vaultdrop(runner, "delete", video["video_id"]).returncode == 0
    assert runner.uploads_of("one.mov") == []
    assert vaultdrop(runner, "delete", video["video_id"]).returncode == 1


def test_sha256_dedupe_skips_identical_content(runner: DaemonRunner) -> None:
    runner.daemon["dedupe"] = "sha256"
    runner.start()
    data = b"same footage" * 1000
    (runner.drop / "a.mov").write_bytes(data)
    runner.wait_state("a.mov", JobState.DONE)
    (runner.drop / "copy-of-a.mov").write_bytes(data)
    skipped = runner.wait_state("copy-of-a.mov", JobState.SKIPPED)
    assert len(runner.sandbox.videos()) == 1 and skipped.video_id == runner.sandbox.videos()[0]["video_id"]


def test_polling_watcher_for_network_filesystems(runner: DaemonRunner) -> None:
    runner.folder.update(watcher="polling", poll_interval=0.2)
    runner.start()
    digest = write(runner.drop / "nfs.mov", 8000)
    runner.wait_state("nfs.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("nfs.mov")] == [digest]


def test_status_reads_a_journal_without_the_config_or_its_secrets(runner: DaemonRunner) -> None:
    runner.start()
    write(runner.drop / "n.mov", 1000)
    runner.wait_state("n.mov", JobState.DONE)
    result = subprocess.run([sys.executable, "-m", "vaultdrop.cli", "status", "--state-dir", str(runner.state)],
                            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and "done 1" in result.stdout and "daemon: running since" in result.stdout
    runner.stop()
    stopped = subprocess.run([sys.executable, "-m", "vaultdrop.cli", "status", "--state-dir", str(runner.state)],
                             capture_output=True, text=True, timeout=60)
    assert "daemon: not running" in stopped.stdout
