"""The main job end to end: files dropped into a folder reach the vault exactly once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from vaultdrop.job import JobState

from .harness import DaemonRunner, wait_for


def write(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_slow_writer_is_uploaded_once_and_complete(runner: DaemonRunner) -> None:
    runner.folder["settle"] = 0.5
    runner.start()
    target = runner.drop / "slow.mov"
    digest = hashlib.sha256()
    with target.open("wb") as handle:
        for _ in range(8):  # 8 writes over ~2.4 s, with settle = 0.5 s between each write's events
            chunk = os.urandom(256 * 1024)
            digest.update(chunk)
            handle.write(chunk)
            handle.flush()
            time.sleep(0.3)
    job = runner.wait_state("slow.mov", JobState.DONE)
    videos = runner.uploads_of("slow.mov")
    assert len(videos) == 1 and videos[0]["sha256"] == digest.hexdigest() == job.sha256
    assert (runner.archive / "slow.mov").exists() and not target.exists()


def test_rename_into_folder_and_temp_names(runner: DaemonRunner) -> None:
    runner.run_args = ["-v"]  # says when it ignores a path
    runner.start()
    outside = runner.base / "outside.mov"
    digest = write(outside, 100_000)
    os.rename(outside, runner.drop / "moved.mov")
    partial = runner.drop / "clip.mov.part"
    part_digest = write(partial, 50_000)
    runner.wait_state("moved.mov", JobState.DONE)
    wait_for(lambda: runner.saw(f"ignored {partial}: temporary name"), what="the .part file seen and ignored")
    assert "clip.mov.part" not in runner.job_states()
    os.rename(partial, runner.drop / "clip.mov")
    runner.wait_state("clip.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("moved.mov")] == [digest]
    assert [v["sha256"] for v in runner.uploads_of("clip.mov")] == [part_digest]


def test_marker_mode_waits_for_the_marker(runner: DaemonRunner) -> None:
    runner.folder["ready_marker"] = ".done"
    runner.start()
    write(runner.drop / "a.mov", 10_000)
    write(runner.drop / "b.mov", 10_000)  # settled after a.mov: once its job is done, a.mov was looked at
    (runner.drop / "b.mov.done").touch()
    runner.wait_state("b.mov", JobState.DONE)
    assert [j.relpath for j in runner.jobs()] == ["b.mov"]
    (runner.drop / "a.mov.done").touch()
    runner.wait_state("a.mov", JobState.DONE)
    assert (runner.archive / "a.mov.done").exists(), "the marker follows its file"
    assert len(runner.uploads_of("a.mov")) == 1


def test_startup_scan_finds_files_that_arrived_while_down(runner: DaemonRunner) -> None:
    digests = {f"day1/c{i}.mp4": write(runner.drop / "day1" / f"c{i}.mp4", 20_000 + i) for i in range(3)}
    runner.start()
    for name in digests:
        runner.wait_state(name, JobState.DONE)
    assert sorted(v["sha256"] for v in runner.sandbox.videos()) == sorted(digests.values())
    assert (runner.archive / "day1" / "c0.mp4").exists()


def test_keep_leaves_the_file_and_never_uploads_it_again(runner: DaemonRunner) -> None:
    runner.folder.update(after_upload="keep")
    runner.folder.pop("archive_dir")
    runner.start()
    write(runner.drop / "k.mov", 5000)
    runner.wait_state("k.mov", JobState.DONE)
    assert runner.stop() == 0
    runner.start()  # the startup scan sees the kept file again
    write(runner.drop / "later.mov", 5000)  # settled after k.mov: once its job is done, k.mov was looked at
    runner.wait_state("later.mov", JobState.DONE)
    assert (runner.drop / "k.mov").exists()
    assert len(runner.uploads_of("k.mov")) == 1 and sorted(j.relpath for j in runner.jobs()) == ["k.mov", "later.mov"]


def test_delete_removes_the_local_file_after_confirmation(runner: DaemonRunner) -> None:
    runner.folder.update(after_upload="delete")
    runner.folder.pop("archive_dir")
    runner.start()
    write(runner.drop / "d.mov", 5000)
    (runner.drop / "d.mov.json").write_text("{}")
    runner.wait_state("d.mov", JobState.DONE)
    assert not (runner.drop / "d.mov").exists() and not (runner.drop / "d.mov.json").exists()
    assert len(runner.uploads_of("d.mov")) == 1


def test_retries_after_5xx_and_dropped_connections(runner: DaemonRunner) -> None:
    runner.sandbox.add_fault(endpoint="upload", action="status", status=503, code="server_error", count=2)
    runner.sandbox.add_fault(endpoint="upload", action="drop_after", bytes=20_000)
    runner.start()
    digest = write(runner.drop / "r.mov", 300_000)
    job = runner.wait_state("r.mov", JobState.DONE)
    assert job.attempts == 0, "a confirmed video starts the next stage with fresh attempts"
    assert [v["sha256"] for v in runner.uploads_of("r.mov")] == [digest]
    posts = [r for r in runner.sandbox.log() if r["endpoint"] == "upload"]
    assert [r["status"] for r in posts][:2] == [503, 503] and len(posts) == 4
    assert len({r["upload_key"] for r in posts}) == 1, "retries reuse the committed key"


def test_permanent_failure_goes_to_failed_dir_and_does_not_block_others(runner: DaemonRunner) -> None:
    runner.sandbox.add_fault(endpoint="upload", action="status", status=413, code="too_large")
    runner.daemon["concurrency"] = 1
    runner.start()
    write(runner.drop / "big.mov", 10_000)
    job = runner.wait_state("big.mov", JobState.FAILED)
    write(runner.drop / "next.mov", 10_000)
    runner.wait_state("next.mov", JobState.DONE)
    report = json.loads((runner.failed / "big.mov.error.json").read_text())
    assert "too_large" in report["error"] and report["job_id"] == job.id
    assert (report["state"], report["failed_while"], report["attempts"]) == ("failed", "uploading", 1), \
        "the report names the state the job ended in, and the stage it failed at"
    assert (runner.failed / "big.mov").exists() and not (runner.drop / "big.mov").exists()


def test_file_modified_during_upload_is_not_trusted(runner: DaemonRunner) -> None:
    runner.daemon["bandwidth_limit"] = 1_000_000
    runner.start()
    target = runner.drop / "m.mov"
    write(target, 2_000_000)
    wait_for(lambda: any(r["endpoint"] == "upload" for r in runner.sandbox.log()), what="upload start")
    time.sleep(0.5)
    with target.open("ab") as handle:
        handle.write(b"more footage")
    final = hashlib.sha256(target.read_bytes()).hexdigest()
    runner.wait_state("m.mov", JobState.DONE, timeout=60)
    videos = runner.uploads_of("m.mov")
    assert [v["sha256"] for v in videos] == [final], "only the final content stays in the vault"
    log = runner.sandbox.log()
    assert [r["status"] for r in log if r["endpoint"] == "delete"] == [200], "the stale video was deleted"
    assert len({r["upload_key"] for r in log if r["endpoint"] == "upload"}) == 2, "then sent again on a new key"


def test_kill9_mid_upload_then_restart_uploads_once(runner: DaemonRunner) -> None:
    runner.daemon["bandwidth_limit"] = 1_000_000
    runner.start()
    digest = write(runner.drop / "k9.mov", 3_000_000)
    wait_for(lambda: any(j.bytes_sent > 0 for j in runner.jobs()), what="journalled progress")
    runner.kill9()
    assert runner.jobs()[0].state is JobState.UPLOADING
    runner.daemon["bandwidth_limit"] = 0
    runner.start()
    runner.wait_state("k9.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("k9.mov")] == [digest]
    keys = {r["upload_key"] for r in runner.sandbox.log() if r["endpoint"] == "upload"}
    assert len(keys) == 1, "the resumed job reuses its committed key"


def test_kill9_after_upload_before_confirmation_does_not_upload_again(runner: DaemonRunner) -> None:
    runner.sandbox.add_fault(endpoint="upload", action="late_video_id", seconds=3)
    runner.start()
    digest = write(runner.drop / "late.mov", 200_000)
    runner.wait_state("late.mov", JobState.CONFIRMING)
    runner.kill9()
    runner.start()
    runner.wait_state("late.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("late.mov")] == [digest]
    assert len([r for r in runner.sandbox.log() if r["endpoint"] == "upload"]) == 1


def test_small_files_pass_a_long_upload(runner: DaemonRunner) -> None:
    runner.daemon.update(concurrency=1, bandwidth_limit=2_000_000, small_file_size=100_000)
    runner.start()
    write(runner.drop / "long.mov", 8_000_000)
    runner.wait_state("long.mov", JobState.UPLOADING)
    write(runner.drop / "small.mov", 10_000)
    runner.wait_state("small.mov", JobState.DONE, timeout=3)
    assert runner.job_states()["long.mov"] is JobState.UPLOADING


def test_graceful_stop_leaves_unfinished_work_resumable(runner: DaemonRunner) -> None:
    runner.daemon.update(bandwidth_limit=1_000_000, drain_timeout=0.5)
    runner.start()
    digest = write(runner.drop / "drain.mov", 4_000_000)
    runner.wait_state("drain.mov", JobState.UPLOADING)
    assert runner.stop() == 0
    assert runner.saw("drain timeout")
    assert (runner.drop / "drain.mov").exists()
    runner.daemon["bandwidth_limit"] = 0
    runner.start()
    runner.wait_state("drain.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("drain.mov")] == [digest]


def test_bad_config_exits_78_naming_the_key(runner: DaemonRunner) -> None:
    runner.vault["colour"] = "blue"
    runner.start(wait_ready=False)
    assert runner.wait_exit() == 78
    assert "vault.colour" in runner.output()


def test_rejected_credentials_stop_the_daemon_with_78(runner: DaemonRunner) -> None:
    runner.vault["password"] = "wrong-password"
    write(runner.drop / "x.mov", 1000)
    runner.start(wait_ready=False)
    assert runner.wait_exit() == 78 and not runner.saw("ready:"), "refused at start, before READY=1"
    assert "vault.password" in runner.output() and "wrong-password" not in runner.output()
    assert (runner.drop / "x.mov").exists()


def test_a_whole_upload_the_vault_names_late_waits_without_sending_again_or_failing(runner: DaemonRunner) -> None:
    """The vault holds every byte but shows the video id only after confirm_timeout, several
    times over: sending again would meet 409 and failing would leave the video behind."""
    runner.vault.update(confirm_timeout=0.5, max_attempts=2)
    runner.sandbox.add_fault(endpoint="upload", action="late_video_id", seconds=3)
    runner.start()
    write(runner.drop / "late.mov", 5000)
    job = runner.wait_state("late.mov", JobState.DONE)
    posts = [r for r in runner.sandbox.log() if r["endpoint"] == "upload"]
    assert len(posts) == 1 and posts[0]["upload_key"] == job.upload_key and job.attempts <= 1
    assert runner.saw("names no video yet")


def test_unusable_failed_dir_leaves_the_file_in_place_instead_of_spinning(runner: DaemonRunner) -> None:
    blocker = runner.base / "not-a-dir"
    blocker.write_text("")
    runner.folder["failed_dir"] = str(blocker / "failed")
    runner.sandbox.add_fault(endpoint="upload", action="status", status=413, code="too_large")
    runner.start()
    write(runner.drop / "stuck.mov", 5000)
    runner.wait_state("stuck.mov", JobState.FAILED)
    assert (runner.drop / "stuck.mov").exists()
    assert runner.saw(f"left in place: cannot move {runner.drop / 'stuck.mov'} to failed_dir")
    assert len([r for r in runner.sandbox.log() if r["endpoint"] == "upload"]) == 1


def test_a_foreign_404_never_makes_the_job_drop_its_key(runner: DaemonRunner) -> None:
    runner.sandbox.add_fault(endpoint="progress", action="body", status=404, body="<html>Not Found</html>",
                             content_type="text/html", count=2)
    runner.sandbox.add_fault(endpoint="upload", action="late_video_id", seconds=1)
    runner.start()
    digest = write(runner.drop / "proxy.mov", 20_000)
    runner.wait_state("proxy.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("proxy.mov")] == [digest]
    assert len([r for r in runner.sandbox.log() if r["endpoint"] == "new_key"]) == 2, "the start-up check's, one"


def test_an_outage_longer_than_max_attempts_fails_no_file(runner: DaemonRunner) -> None:
    runner.vault["max_attempts"] = 2
    runner.sandbox.add_fault(endpoint="new_key", action="status", status=503, code="server_error", count=6)
    runner.start()
    digest = write(runner.drop / "outage.mov", 5000)
    job = runner.wait_state("outage.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("outage.mov")] == [digest]
    assert len([r for r in runner.sandbox.log() if r["endpoint"] == "new_key"]) == 7 and job.attempts == 0


def test_a_deleted_and_recreated_folder_is_watched_again(runner: DaemonRunner) -> None:
    runner.start()
    shutil.rmtree(runner.drop)
    runner.drop.mkdir()  # at once: the new folder often reuses the old inode
    wait_for(lambda: runner.saw("the folder is back"), timeout=10, what="watched again")
    first = write(runner.drop / "first.mov", 5000)
    runner.wait_state("first.mov", JobState.DONE, timeout=10)
    shutil.rmtree(runner.drop)
    wait_for(lambda: runner.saw("disappeared"), timeout=10, what="disappearance logged")
    runner.drop.mkdir()
    wait_for(lambda: runner.output().count("the folder is back") == 2, timeout=10, what="watched again")
    second = write(runner.drop / "second.mov", 6000)
    runner.wait_state("second.mov", JobState.DONE, timeout=10)
    assert [v["sha256"] for v in runner.sandbox.videos()] == [first, second]
    assert runner.output().count("disappeared") == 1


def test_a_blocked_archive_folder_is_retried_in_one_line_and_archives_once_unblocked(runner: DaemonRunner) -> None:
    blocker = runner.base / "blocked"
    blocker.write_text("")
    runner.folder["archive_dir"] = str(blocker / "archive")
    runner.vault["max_attempts"] = 1  # waiting on the archive folder spends no attempt
    runner.start()
    digest = write(runner.drop / "held.mov", 5000)
    wait_for(lambda: runner.saw(f"cannot archive {runner.drop / 'held.mov'}: Not a directory"), what="retry line")
    time.sleep(1.5)  # several tries at backoff_max = 0.5 s
    assert runner.job_states()["held.mov"] is JobState.FINISHING and not list(runner.failed.iterdir())
    blocker.unlink()
    blocker.mkdir()
    runner.wait_state("held.mov", JobState.DONE)
    assert (blocker / "archive" / "held.mov").exists() and not (runner.drop / "held.mov").exists()
    assert [v["sha256"] for v in runner.uploads_of("held.mov")] == [digest]
    assert "Traceback" not in runner.output() and "unexpected" not in runner.output()
