"""journald: every line of a job carries the fields an operator filters on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vaultdrop.job import JobState
from vaultdrop.logs import MESSAGE_IDS
from vaultdrop.sandbox.launcher import SandboxProcess

from ..integration.harness import DaemonRunner, wait_for
from ..integration.test_daemon import write
from ..integration.test_s3 import enable_s3
from .journald import JOURNALD, Journald, journal_json, require_root_and


@pytest.fixture
def journald() -> Iterator[Journald]:
    require_root_and(str(JOURNALD), "journalctl", "unshare", "nsenter")
    server = Journald()
    yield server
    server.stop()


class JournaldRunner(DaemonRunner):
    """`vaultdrop run` with a journal stream as stdout and stderr, as systemd starts it."""

    def __init__(self, tmp_path: Path, sandbox: SandboxProcess, journald: Journald) -> None:
        super().__init__(tmp_path, sandbox)
        self.journald = journald
        self.stream, self.journal_stream = journald.stream("vaultdrop")

    def start(self, wait_ready: bool = False) -> None:
        self.write_config()
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"} | {"JOURNAL_STREAM": self.journal_stream}
        self.process = subprocess.Popen(
            [*self.journald.enter(), sys.executable, "-m", "vaultdrop.cli", "run", "--config", str(self.config_path)],
            stdout=self.stream.fileno(), stderr=self.stream.fileno(), env=env)


@pytest.fixture
def runner(tmp_path: Path, sandbox: SandboxProcess, journald: Journald) -> Iterator[JournaldRunner]:
    daemon = JournaldRunner(tmp_path, sandbox, journald)
    yield daemon
    daemon.stream.close()
    assert daemon.stop() == 0


def job_lines(journald: Journald, job_id: int, until_message_id: str) -> list[dict[str, Any]]:
    def complete() -> list[dict[str, Any]]:
        lines = journal_json(journald.directory, f"JOB_ID={job_id}")
        return lines if any(e.get("MESSAGE_ID") == until_message_id for e in lines) else []

    return wait_for(complete, what=f"job {job_id}'s journal lines")


def test_job_lines_carry_structured_fields(runner: DaemonRunner, journald: Journald) -> None:
    enable_s3(runner)
    runner.start()
    digest = write(runner.drop / "day1" / "clip.mov", 300_000)
    job = runner.wait_state("day1/clip.mov", JobState.DONE)
    lines = job_lines(journald, job.id, MESSAGE_IDS["job_done"])
    assert [v["sha256"] for v in runner.uploads_of("clip.mov")] == [digest]

    assert [e["STAGE"] for e in lines] == ["queued", "uploading", "confirming", "s3_queueing", "s3_waiting",
                                           "finishing", "done"], "one line per state change"
    for entry in lines:
        assert entry["SYSLOG_IDENTIFIER"] == "vaultdrop" and entry["PRIORITY"] == "6"
        assert entry["FOLDER"] == str(runner.drop) and entry["FILE"] == "day1/clip.mov"
        assert entry["ATTEMPT"] == "1" and entry["BYTES"] == "300000" and int(entry["DURATION_MS"]) >= 0
    by_stage = {e["STAGE"]: e for e in lines}
    assert by_stage["confirming"]["UPLOAD_KEY"] == job.upload_key
    assert by_stage["finishing"]["VIDEO_ID"] == job.video_id
    assert by_stage["s3_waiting"]["S3_REQUEST_ID"] == str(job.s3_request_id)
    summary = by_stage["done"]["MESSAGE"]
    assert "300.0 kB in" in summary and "MB/s" in summary, "summary: size, time, throughput"

    ready = journal_json(journald.directory, f"MESSAGE_ID={MESSAGE_IDS['daemon_ready']}")
    assert len(ready) == 1 and ready[0]["PRIORITY"] == "6"


def test_a_failed_job_is_an_error_with_its_message_id(runner: DaemonRunner, journald: Journald) -> None:
    runner.vault["max_attempts"] = 2
    runner.sandbox.add_fault(endpoint="upload", action="status", status=500, code="server_error", count=2)
    runner.start()
    write(runner.drop / "broken.mov", 20_000)
    job = runner.wait_state("broken.mov", JobState.FAILED)
    lines = job_lines(journald, job.id, MESSAGE_IDS["job_failed"])
    assert [(e["STAGE"], e["PRIORITY"]) for e in lines] == [
        ("queued", "6"), ("uploading", "6"), ("uploading", "4"), ("failed", "3")
    ], "a retry is a warning, giving up is an error"
    assert [e["ATTEMPT"] for e in lines if e["PRIORITY"] == "4"] == ["1"]
    errors = journal_json(journald.directory, "-p", "err", f"MESSAGE_ID={MESSAGE_IDS['job_failed']}")
    assert [e["FILE"] for e in errors] == ["broken.mov"]
