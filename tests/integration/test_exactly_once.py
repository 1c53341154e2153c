"""Exactly once under what a drop folder meets: odd vault answers, operator actions, links
and renames, outages. Each test is one case of issue 11 or 12, end to end: the real CLI,
real inotify and journal, the sandbox over loopback HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from vaultdrop.job import Job, JobState
from vaultdrop.sandbox.launcher import spawn_sandbox

from .harness import DaemonRunner, wait_for
from .test_daemon import write
from .test_s3 import aws_uploads, enable_s3

SERVER_ERROR = "<error><code>server_error</code><message>stored, then failed</message></error>"


def posts(runner: DaemonRunner) -> list[dict[str, object]]:
    return [r for r in runner.sandbox.log() if r["endpoint"] == "upload"]


def cli(runner: DaemonRunner, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vaultdrop.cli", *args, "--config", str(runner.config_path)],
                          capture_output=True, text=True, timeout=60)


def test_unknown_key_answers_after_a_post_never_make_a_second_video(runner: DaemonRunner) -> None:
    runner.sandbox.add_fault(endpoint="progress", action="status", status=404, code="unknown_key", count=2)
    runner.start()
    digest = write(runner.drop / "flap.mov", 200_000)
    runner.wait_state("flap.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.sandbox.videos()] == [digest]
    assert len(posts(runner)) == 1, "the key the vault stored was kept, never replaced"


def test_a_key_the_vault_keeps_denying_is_replaced_and_its_copy_deleted(runner: DaemonRunner) -> None:
    runner.vault["max_attempts"] = 10
    runner.sandbox.add_fault(endpoint="progress", action="status", status=404, code="unknown_key", count=3)
    runner.start()
    digest = write(runner.drop / "lost.mov", 200_000)
    runner.wait_state("lost.mov", JobState.DONE)
    wait_for(lambda: len(runner.sandbox.videos()) == 1, timeout=20, what="the abandoned key's copy deleted")
    assert [v["sha256"] for v in runner.sandbox.videos()] == [digest]
    assert len(posts(runner)) == 2, "one new key after three denials in a row"


def test_a_500_after_the_vault_stored_the_upload_is_confirmed_not_failed(runner: DaemonRunner) -> None:
    runner.vault["max_attempts"] = 1
    runner.sandbox.add_fault(endpoint="upload", action="body", status=500, body=SERVER_ERROR)
    runner.start()
    digest = write(runner.drop / "stored.mov", 100_000)
    job = runner.wait_state("stored.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.sandbox.videos()] == [digest] and job.video_id
    assert (runner.archive / "stored.mov").exists()


def test_identical_files_dropped_together_are_one_video_and_each_gets_its_s3_copy(runner: DaemonRunner) -> None:
    enable_s3(runner, destination="{relative_path}")
    runner.daemon["dedupe"] = "sha256"
    runner.start()
    data = os.urandom(300_000)
    for name in ("a.mov", "b.mov", "c.mov"):
        (runner.drop / name).write_bytes(data)
    wait_for(lambda: sorted(j.state for j in runner.jobs()) == [JobState.DONE, JobState.SKIPPED, JobState.SKIPPED],
             timeout=30, what="one upload, two skipped twins")
    assert len(runner.sandbox.videos()) == 1 and len(posts(runner)) == 1
    assert sorted(o["destination_path"] for o in runner.sandbox.s3_objects()) == ["a.mov", "b.mov", "c.mov"]


def test_a_rename_during_the_upload_is_followed_not_uploaded_again(runner: DaemonRunner) -> None:
    runner.sandbox.add_fault(endpoint="upload", action="stall", seconds=2)
    runner.start()
    digest = write(runner.drop / "take1.mov", 500_000)
    runner.wait_state("take1.mov", JobState.UPLOADING)
    os.rename(runner.drop / "take1.mov", runner.drop / "final.mov")
    job = runner.wait_state("final.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.sandbox.videos()] == [digest] and len(runner.jobs()) == 1
    assert (runner.archive / "final.mov").exists() and job.relpath == "final.mov"


def test_hard_link_and_symlink_inside_the_folder_are_one_upload(runner: DaemonRunner) -> None:
    runner.folder.update(after_upload="keep")
    runner.folder.pop("archive_dir")
    runner.start()
    digest = write(runner.base / "clip.mov", 100_000)
    os.rename(runner.base / "clip.mov", runner.drop / "clip.mov")
    os.link(runner.drop / "clip.mov", runner.drop / "clip-link.mov")
    (runner.drop / "clip-sym.mov").symlink_to("clip.mov")
    later = write(runner.drop / "later.mov", 5000)  # settled after every path above
    runner.wait_state("clip.mov", JobState.DONE)
    runner.wait_state("later.mov", JobState.DONE)
    assert sorted(v["sha256"] for v in runner.sandbox.videos()) == sorted([digest, later])
    assert sorted(j.relpath for j in runner.jobs()) == ["clip.mov", "later.mov"]


def test_new_content_is_uploaded_while_the_stale_copy_delete_keeps_failing(runner: DaemonRunner) -> None:
    runner.sandbox.add_fault(endpoint="upload", action="stall", seconds=1.5)
    runner.sandbox.add_fault(endpoint="delete", action="status", status=500, code="server_error", count=2)
    runner.sandbox.add_fault(endpoint="delete", action="body",
                             body="<video><id>x</id><deleted>false</deleted></video>")
    runner.start()
    write(runner.drop / "m.mov", 300_000)
    runner.wait_state("m.mov", JobState.UPLOADING)
    time.sleep(0.3)
    newer = write(runner.drop / "m.mov", 300_001)
    runner.wait_state("m.mov", JobState.DONE)
    assert newer in {v["sha256"] for v in runner.sandbox.videos()}, "the new content did not wait for the delete"
    wait_for(lambda: runner.saw("was already gone"), timeout=40, what="the stale copy's delete settled")
    assert [v["sha256"] for v in runner.sandbox.videos()] == [newer]
    deletes = [r for r in runner.sandbox.log() if r["endpoint"] == "delete"]
    assert len(deletes) == 4, "deleted=false was not taken for success"


def fail_one(runner: DaemonRunner, name: str) -> tuple[str, Job]:
    """A file whose job fails at once (its upload key refused, max_attempts = 1)."""
    runner.vault["max_attempts"] = 1
    runner.start()  # the fault after the start-up credential check, for the file's own key
    runner.sandbox.add_fault(endpoint="new_key", action="status", status=500, code="server_error")
    digest = write(runner.drop / name, 50_000)
    return digest, runner.wait_state(name, JobState.FAILED)


def test_retry_brings_a_failed_file_back_and_only_failed_jobs_are_retried(runner: DaemonRunner) -> None:
    digest, failed = fail_one(runner, "f.mov")
    assert (runner.failed / "f.mov").exists() and not (runner.drop / "f.mov").exists()
    done_result = cli(runner, "jobs", "retry", str(failed.id))
    assert done_result.returncode == 0, done_result.stderr
    runner.wait_state("f.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.sandbox.videos()] == [digest]
    assert not (runner.failed / "f.mov").exists() and (runner.archive / "f.mov").exists()
    again = cli(runner, "jobs", "retry", str(failed.id))
    assert again.returncode == 1 and "only a failed job can be retried" in again.stderr


def test_a_failed_file_moved_back_by_the_operator_is_picked_up_again(runner: DaemonRunner) -> None:
    digest, failed = fail_one(runner, "back.mov")
    os.rename(runner.failed / "back.mov", runner.drop / "back.mov")
    job = runner.wait_state("back.mov", JobState.DONE)
    assert job.id == failed.id and runner.saw("picked up again")
    assert [v["sha256"] for v in runner.sandbox.videos()] == [digest]


def test_unknown_s3_outcome_is_looked_up_and_adopted_without_spending_attempts(runner: DaemonRunner) -> None:
    enable_s3(runner)
    runner.scaleengine["timeout"] = 1
    runner.vault.update(max_attempts=2, backoff_max=0.5)
    runner.sandbox.add_fault(endpoint="aws.upload", action="stall", seconds=2)  # queued after we gave up waiting
    runner.start()
    write(runner.drop / "s.mov", 10_000)
    job = runner.wait_state("s.mov", JobState.DONE, timeout=60)
    assert len(runner.sandbox.s3_objects()) == 1 and job.s3_status == "complete"
    assert len(aws_uploads(runner)) == 1


def test_a_confirmed_job_whose_folder_is_removed_by_reload_waits_and_keeps_its_s3_step(
        runner: DaemonRunner, tmp_path: Path) -> None:
    enable_s3(runner)
    runner.sandbox.add_fault(endpoint="aws.status", action="stall", seconds=2, count=2)
    runner.start()
    write(runner.drop / "r.mov", 10_000)
    runner.wait_state("r.mov", JobState.S3_WAITING)
    folder, s3 = dict(runner.folder), runner.s3
    other = tmp_path / "other"
    other.mkdir()
    runner.folder, runner.s3 = {"path": str(other)}, None
    runner.write_config()
    runner.process.send_signal(1)  # SIGHUP: reload without the folder
    wait_for(lambda: runner.saw("configuration reloaded"), what="reload")
    time.sleep(5)
    waiting = runner.job_states()["r.mov"]  # an S3 poll in flight at the reload may still complete
    assert waiting in (JobState.S3_WAITING, JobState.FINISHING) and (runner.drop / "r.mov").exists()
    runner.folder, runner.s3 = folder, s3
    runner.write_config()
    runner.process.send_signal(1)
    job = runner.wait_state("r.mov", JobState.DONE)
    assert job.s3_status == "complete" and len(runner.sandbox.s3_objects()) == 1
    assert (runner.archive / "r.mov").exists()


# Long enough for the jobs' own retry delays (a safety net from backoff_base 5 s, doubled
# with each failed probe: drawn up to 40 s by the outage's end) to pass RECOVERY, so only
# the outage probe (clients/outage.py, every 5 s at most) brings all six back within it.
OUTAGE = 12.0
RECOVERY = 10.0


def test_queued_files_resume_within_seconds_after_an_outage(runner: DaemonRunner) -> None:
    runner.vault.update(backoff_base=5, backoff_max=600)
    port = urlsplit(runner.sandbox.url).port
    runner.start()
    runner.sandbox.stop()
    names = [f"o{i}.mov" for i in range(6)]
    for name in names:
        write(runner.drop / name, 50_000)
    wait_for(lambda: len(runner.jobs()) == 6, what="six files queued during the outage")
    time.sleep(OUTAGE)
    with spawn_sandbox(runner.sandbox.root, port=port) as runner.sandbox:
        back = time.monotonic()
        for name in names:
            runner.wait_state(name, JobState.DONE, timeout=30)
        recovery = time.monotonic() - back
    print(f"all six done {recovery:.1f} s after a {OUTAGE:g} s outage ended")
    assert recovery <= RECOVERY
    assert len([line for line in runner.lines if "is not answering" in line]) == 1
    assert len([line for line in runner.lines if "answering again" in line]) == 1


def test_the_gave_up_line_names_the_attempts_made(runner: DaemonRunner) -> None:
    runner.vault["max_attempts"] = 3
    runner.start()  # the faults after the start-up credential check, for the file's own keys
    runner.sandbox.add_fault(endpoint="new_key", action="status", status=500, code="server_error", count=3)
    write(runner.drop / "g.mov", 10_000)
    runner.wait_state("g.mov", JobState.FAILED)
    [line] = [line for line in runner.lines if "gave up" in line]
    assert "gave up after 3 attempts" in line and re.search(r" attempt=3\b", line)
    retries = [line for line in runner.lines if "retry in" in line]
    assert [bool(re.search(r" attempt=1\b", retries[0])), bool(re.search(r" attempt=2\b", retries[1]))] == [True, True]


def test_an_empty_or_missing_journal_in_a_used_state_dir_is_refused_until_the_operator_resets(
    runner: DaemonRunner,
) -> None:
    """Issue 21, case 1: a 0-byte journal (a restore gone wrong) or none at all (deleted
    while the daemon ran) must not be a fresh start: every kept file would go up again."""
    runner.folder.update(after_upload="keep")
    runner.folder.pop("archive_dir")
    write(runner.drop / "kept.mov", 50_000)
    runner.start()
    runner.wait_state("kept.mov", JobState.DONE)
    assert runner.stop() == 0
    journal = runner.state / "vaultdrop.db"
    for damage in ("empty", "missing"):
        for leftover in (journal, journal.with_name("vaultdrop.db-wal"), journal.with_name("vaultdrop.db-shm")):
            leftover.unlink(missing_ok=True)
        if damage == "empty":
            journal.write_bytes(b"")
        runner.start(wait_ready=False)
        assert runner.wait_exit() == 78, runner.output()
        assert f"is {damage}" in runner.output() and "vaultdrop journal reset" in runner.output()
        assert "Traceback" not in runner.output()
    assert len(runner.sandbox.videos()) == 1
    reset = cli(runner, "journal", "reset")
    assert reset.returncode == 0, reset.stderr
    runner.start()  # the operator chose to start over: the kept file is uploaded again
    wait_for(lambda: len(runner.sandbox.videos()) == 2, what="the upload the operator asked for")


def test_journal_reset_never_throws_away_a_journal_that_holds_jobs(runner: DaemonRunner) -> None:
    write(runner.drop / "a.mov", 10_000)
    runner.start()
    runner.wait_state("a.mov", JobState.DONE)
    assert runner.stop() == 0
    reset = cli(runner, "journal", "reset")
    assert reset.returncode == 1 and "holds 1 job(s)" in reset.stderr, reset.stderr
    runner.start()
    assert [j.relpath for j in runner.jobs()] == ["a.mov"]


@pytest.mark.parametrize("size", [100_000, 150_000], ids=["same size", "other size"])
def test_a_used_key_handed_out_by_the_vault_is_not_ours(runner: DaemonRunner, size: int) -> None:
    """Issue 21, case 2: new_key hands out the key of a completed upload (a caching proxy).
    The 409 on a key this job never POSTed means "not ours": a new key, the file's own bytes
    sent, and the other file's video left alone, whatever the sizes."""
    runner.folder.update(after_upload="keep")
    runner.folder.pop("archive_dir")
    runner.start()
    first = write(runner.drop / "first.mov", 100_000)
    done = runner.wait_state("first.mov", JobState.DONE)
    runner.sandbox.add_fault(endpoint="new_key", action="used_key")
    second = write(runner.drop / "second.mov", size)
    again = runner.wait_state("second.mov", JobState.DONE)
    time.sleep(1)  # a wrongly recorded stale video would be deleted by now
    assert sorted(v["sha256"] for v in runner.sandbox.videos()) == sorted([first, second])
    assert again.video_id != done.video_id
    assert {j.relpath: j.video_id for j in runner.jobs()}["first.mov"] == done.video_id
    assert runner.saw("is not ours"), runner.output()


def test_deleting_a_video_a_job_accounts_for_is_recorded_and_it_can_be_uploaded_again(
    runner: DaemonRunner,
) -> None:
    """Issue 21, case 5: `vaultdrop delete` of a job's video. The job shows the video as
    deleted, `upload` no longer answers "already uploaded", and a retry uploads it again."""
    runner.folder.update(after_upload="keep")
    runner.folder.pop("archive_dir")
    runner.start()
    digest = write(runner.drop / "take.mov", 60_000)
    job = runner.wait_state("take.mov", JobState.DONE)
    assert runner.stop() == 0
    deleted = cli(runner, "delete", str(job.video_id))
    assert deleted.returncode == 0, deleted.stderr
    assert f"job {job.id}" in deleted.stdout
    assert runner.sandbox.videos() == []
    shown = cli(runner, "jobs", "show", str(job.id), "--json")
    assert '"state": "failed"' in shown.stdout and f"video {job.video_id} deleted" in shown.stdout
    retried = cli(runner, "jobs", "retry", str(job.id))
    assert retried.returncode == 0, retried.stderr
    runner.start()
    again = runner.wait_state("take.mov", JobState.DONE)
    assert again.id == job.id and again.video_id != job.video_id
    assert [v["sha256"] for v in runner.sandbox.videos()] == [digest]


def test_a_journal_deleted_while_the_daemon_runs_stops_it_and_is_never_replaced_by_an_empty_one(
    runner: DaemonRunner,
) -> None:
    """SQLite refuses to write a journal unlinked under it: exit 75, and systemd's restart
    must then not begin a fresh journal (the kept file would go up again)."""
    runner.folder.update(after_upload="keep")
    runner.folder.pop("archive_dir")
    write(runner.drop / "kept.mov", 20_000)
    runner.start()
    runner.wait_state("kept.mov", JobState.DONE)
    for leftover in runner.state.glob("vaultdrop.db*"):
        leftover.unlink()
    write(runner.drop / "next.mov", 20_000)  # its admission is the next write
    assert runner.wait_exit() == 75, runner.output()
    runner.start(wait_ready=False)
    assert runner.wait_exit() == 78 and "is missing" in runner.output()
    assert len(runner.sandbox.videos()) == 1
