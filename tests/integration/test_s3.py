"""S3 queueing through the control API, followed to the end and crash-safe."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

from vaultdrop.job import JobState

from .harness import DaemonRunner, wait_for
from .test_daemon import write


def enable_s3(runner: DaemonRunner, **s3: object) -> None:
    sandbox = runner.sandbox
    runner.scaleengine = {"api_url": f"{sandbox.url}/stable/", "api_key": sandbox.api_key,
                          "api_secret": sandbox.api_secret, "cdn": sandbox.cdn, "status_poll_interval": 0.2,
                          "timeout": 10}
    runner.s3 = {"bucket": "archive-bucket", "destination": "{date}/{stem}-{video_id}.{ext}",
                 "metadata": {"team": "news", "source": "cam/1"}, **s3}


def aws_uploads(runner: DaemonRunner) -> list[dict[str, object]]:
    return [r for r in runner.sandbox.log() if r["command"] == "aws.upload"]


def test_dropped_file_lands_in_the_bucket_with_metadata(runner: DaemonRunner) -> None:
    enable_s3(runner)
    runner.start()
    digest = write(runner.drop / "news" / "clip.mov", 150_000)
    (runner.drop / "news" / "clip.mov.json").write_text(json.dumps({"title": "Été 🎬", "source": "cam/2"}))
    job = runner.wait_state("news/clip.mov", JobState.DONE)
    assert job.s3_request_id and job.s3_status == "complete"
    [obj] = runner.sandbox.s3_objects()
    assert obj["bucket"] == "archive-bucket" and obj["sha256"] == digest
    assert obj["destination_path"].endswith(f"/clip-{job.video_id}.mov")
    assert obj["metadata"] == {"team": "news", "source": "cam/2", "title": "Été 🎬"}
    assert (runner.archive / "news" / "clip.mov.json").exists(), "the sidecar follows its file"
    assert [j.relpath for j in runner.jobs()] == ["news/clip.mov"], "a sidecar is never a job"


def test_overload_and_unexpected_codes_are_retried(runner: DaemonRunner) -> None:
    enable_s3(runner)
    runner.sandbox.add_fault(endpoint="aws.upload", action="vendor_code", code="1000")
    runner.sandbox.add_fault(endpoint="aws.upload", action="vendor_code", code="0004")
    runner.start()
    write(runner.drop / "busy.mov", 10_000)
    runner.wait_state("busy.mov", JobState.DONE)
    assert [r["code"] for r in aws_uploads(runner)] == ["1000", "0004", None]
    assert len(runner.sandbox.s3_objects()) == 1


def test_bad_signature_stops_with_a_config_error_naming_the_key(runner: DaemonRunner) -> None:
    enable_s3(runner)
    runner.scaleengine["api_secret"] = "not-the-secret"
    write(runner.drop / "sig.mov", 10_000)
    runner.start(wait_ready=False)
    assert runner.wait_exit() == 78 and not runner.saw("ready:"), "refused at start, before READY=1"
    assert "scaleengine.api_secret" in runner.output() and "not-the-secret" not in runner.output()
    assert (runner.drop / "sig.mov").exists(), "the file stays"


def test_kill9_between_queue_and_status_does_not_queue_twice(runner: DaemonRunner) -> None:
    enable_s3(runner)
    runner.sandbox.add_fault(endpoint="aws.status", action="stall", seconds=5)
    runner.start()
    write(runner.drop / "k.mov", 10_000)
    runner.wait_state("k.mov", JobState.S3_WAITING)
    runner.kill9()
    runner.start()
    job = runner.wait_state("k.mov", JobState.DONE)
    assert len(aws_uploads(runner)) == 1
    day = time.strftime("%Y-%m-%d", time.gmtime(job.created_at))
    assert [o["destination_path"] for o in runner.sandbox.s3_objects()] == [f"{day}/k-{job.video_id}.mov"]


def test_retrying_a_job_that_failed_after_the_vault_confirmed_does_not_upload_again(runner: DaemonRunner) -> None:
    enable_s3(runner)
    runner.folder.pop("failed_dir")
    runner.sandbox.add_fault(endpoint="aws.upload", action="vendor_code", code="0006")
    runner.start()
    write(runner.drop / "again.mov", 10_000)
    job = runner.wait_state("again.mov", JobState.FAILED)
    assert job.video_id and len(runner.sandbox.videos()) == 1
    subprocess.run([sys.executable, "-m", "vaultdrop.cli", "jobs", "retry", str(job.id), "--config",
                    str(runner.config_path)], check=True, capture_output=True, timeout=60)
    runner.wait_state("again.mov", JobState.DONE)
    assert len(runner.sandbox.videos()) == 1 and len(runner.sandbox.s3_objects()) == 1


def test_file_replaced_while_its_s3_copy_runs_is_not_deleted_unuploaded(runner: DaemonRunner) -> None:
    enable_s3(runner)
    runner.folder.update(after_upload="delete")
    runner.folder.pop("archive_dir")
    runner.sandbox.add_fault(endpoint="aws.status", action="stall", seconds=3)
    runner.start()
    write(runner.drop / "cam.mov", 10_000)
    first = runner.wait_state("cam.mov", JobState.S3_WAITING)
    newer = write(runner.drop / "cam.mov", 20_000)
    wait_for(lambda: newer in {v["sha256"] for v in runner.sandbox.videos()}, timeout=30,
             what="the newer content uploaded")
    wait_for(lambda: all(j.state is JobState.DONE for j in runner.jobs()) and len(runner.jobs()) == 2,
             timeout=30, what="both jobs done")
    assert first.video_id in {v["video_id"] for v in runner.sandbox.videos()}
    assert not (runner.drop / "cam.mov").exists(), "deleted only by the job that uploaded that content"


def test_a_re_export_over_a_file_whose_s3_step_fails_is_uploaded_not_moved_to_failed_dir(
        runner: DaemonRunner) -> None:
    enable_s3(runner)
    runner.folder["settle"] = 2.5  # the re-export settles after the old job has failed
    runner.start()  # the faults after the start-up credential check, for the file's own calls
    runner.sandbox.add_fault(endpoint="files.getstorage", action="stall", seconds=1.5)
    runner.sandbox.add_fault(endpoint="aws.upload", action="vendor_code", code="0006")
    write(runner.drop / "take.mov", 10_000)
    old = runner.wait_state("take.mov", JobState.S3_QUEUEING)
    newer = write(runner.base / "take.mov.part", 20_000)
    os.replace(runner.base / "take.mov.part", runner.drop / "take.mov")  # the re-export, renamed over it
    failed = runner.wait_state("take.mov", JobState.FAILED)
    assert failed.id == old.id and list(runner.failed.iterdir()) == []
    assert runner.saw("left alone: the path now holds other content")
    wait_for(lambda: any(j.state is JobState.DONE for j in runner.jobs()), timeout=30, what="the re-export done")
    assert newer in {v["sha256"] for v in runner.sandbox.videos()}
    assert hashlib.sha256((runner.archive / "take.mov").read_bytes()).hexdigest() == newer
