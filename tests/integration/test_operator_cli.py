"""The operator's day with the real console script: versions, usage mistakes, filters, the
daemon's status, early credential checks, one-shot uploads and deletes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from vaultdrop.job import FileIdentity, JobState
from vaultdrop.journal import Journal

from .harness import DaemonRunner, read_until, wait_for
from .test_cli import vaultdrop
from .test_daemon import write

SCRIPT = Path(sys.executable).with_name("vaultdrop")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def journal_with(state: Path, count: int, failed: int = 0) -> None:
    """A real journal of `count` jobs in two folders, the first `failed` of them failed."""
    journal = Journal(state / "vaultdrop.db")
    for n in range(count):
        job = journal.enqueue(FileIdentity(f"/srv/{'news' if n % 2 else 'sport'}", f"clip{n}.mov", 52_400_000, n, n))
        assert job is not None
        if n < failed:
            journal.transition(job, JobState.FAILED, "test", last_error="vault said no")
    journal.close()


def test_version_names_vaultdrop_and_its_dependencies() -> None:
    assert re.fullmatch(r"vaultdrop \d+\.\d+\.\d+\n", cli("--version").stdout)
    listed = cli("version").stdout
    assert "pydantic-settings " in listed and "httpx " in listed and "python 3." in listed


def test_usage_mistakes_exit_2_with_usage_and_no_config_error(tmp_path: Path) -> None:
    journal_with(tmp_path, 1)
    for args in (["jobs", "show"], ["jobs", "retry"], ["jobs", "--since", "yesterday-ish"], ["jobs", "--bogus"]):
        result = cli(*args, "--state-dir", str(tmp_path))
        assert result.returncode == 2 and "usage: vaultdrop" in result.stderr, result
        assert "configuration error" not in result.stderr


def test_jobs_says_what_it_left_out_and_filters(tmp_path: Path) -> None:
    journal_with(tmp_path, 65, failed=3)
    listing = cli("jobs", "--state-dir", str(tmp_path))
    assert len(listing.stdout.splitlines()) == 50 and "50 of 65 shown, --limit" in listing.stderr
    first = listing.stdout.splitlines()[0]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", first) and "52.4 MB" in first and "sport/clip64.mov" in first
    assert len(cli("jobs", "--state-dir", str(tmp_path), "--limit", "100").stdout.splitlines()) == 65
    failed = cli("jobs", "--state-dir", str(tmp_path), "--state", "failed").stdout
    assert len(failed.splitlines()) == 3 and "vault said no" in failed
    assert len(cli("jobs", "--state-dir", str(tmp_path), "--folder", "news", "--limit", "100").stdout.splitlines()) == 32
    assert len(cli("jobs", "--state-dir", str(tmp_path), "--folder", "/srv/news", "--limit", "100")
               .stdout.splitlines()) == 32
    assert cli("jobs", "--state-dir", str(tmp_path), "--since", "1h").stdout.count("\n") == 50
    future = cli("jobs", "--state-dir", str(tmp_path), "--since", "2999-01-01")
    assert future.stdout == "" and "no jobs match" in future.stderr


def test_jobs_show_retry_and_forget_speak_in_words(tmp_path: Path) -> None:
    journal_with(tmp_path, 4, failed=2)
    shown = json.loads(cli("jobs", "show", "1", "--json", "--state-dir", str(tmp_path)).stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", shown["created_at"])
    assert all(re.match(r"\d{4}-", h["at"]) for h in shown["history"])
    missing = cli("jobs", "show", "99", "--state-dir", str(tmp_path))
    assert missing.returncode == 1 and "no job 99" in missing.stderr and "'" not in missing.stderr
    no_traceback(missing)
    queued = cli("jobs", "retry", "4", "--state-dir", str(tmp_path))
    assert queued.returncode == 1 and "job 4 is queued: only a failed job can be retried" in queued.stderr
    every = cli("jobs", "retry", "--all-failed", "--state-dir", str(tmp_path))
    assert every.returncode == 0 and "job 1 queued again" in every.stdout and "job 2 queued again" in every.stdout
    assert "failed" not in cli("jobs", "--state-dir", str(tmp_path)).stdout
    assert "no failed jobs" in cli("jobs", "retry", "--all-failed", "--state-dir", str(tmp_path)).stdout
    forget = cli("jobs", "forget", "3", "--state-dir", str(tmp_path))
    assert forget.returncode == 1 and "only a finished job can be forgotten" in forget.stderr


def test_jobs_show_reads_as_words_and_json_keeps_the_raw_record(runner: DaemonRunner) -> None:
    """Issue 23: `jobs show` was a dump of internal columns, with `attempts: 0` for a job the
    log had called attempt=1; the record as stored is there with --json."""
    runner.sandbox.add_fault(endpoint="upload", action="status", status=500, code="server_error", count=1)
    runner.start()
    write(runner.drop / "w.mov", 5000)
    job = runner.wait_state("w.mov", JobState.DONE)
    shown = vaultdrop(runner, "jobs", "show", str(job.id))
    assert shown.returncode == 0, shown.stderr
    for internal in ("lease_epoch", "key_unknown", "released", "attempts: 0", "{", "null"):
        assert internal not in shown.stdout, (internal, shown.stdout)
    assert re.search(r"state: +done since \d{4}-\d\d-\d\dT", shown.stdout), shown.stdout
    assert f"video:       {job.video_id}" in shown.stdout and "w.mov in " in shown.stdout
    assert "uploading -> confirming" in shown.stdout, "the history"
    raw = json.loads(vaultdrop(runner, "jobs", "show", str(job.id), "--json").stdout)
    assert raw["lease_epoch"] == job.lease_epoch and raw["key_unknown"] == 0 and raw["history"]


def test_status_tells_the_truth_through_an_upload_a_drain_and_a_restart(runner: DaemonRunner) -> None:
    """Issue 23: an upload in flight has a rate and an ETA; a stopping daemon says it is
    draining; after the stop nothing is "in flight" and the job the drain left part way
    says it resumes at the next start, which says "resuming" for it."""
    runner.daemon.update(bandwidth_limit=300_000, drain_timeout=3)
    runner.start()
    write(runner.drop / "long.mov", 4_000_000)

    def rate_and_eta() -> str | None:
        out = vaultdrop(runner, "status").stdout
        return out if re.search(r"#1 uploading .*long\.mov  \d+\.\d kB/s, ETA 0:\d\d\n", out) else None

    wait_for(rate_and_eta, timeout=20, what="rate and ETA in the status")
    [flying] = json.loads(vaultdrop(runner, "status", "--json").stdout)["in_flight"]
    assert 100_000 < flying["rate"] < 600_000 and flying["eta_seconds"] > 0, flying
    assert runner.process is not None
    runner.process.send_signal(signal.SIGTERM)
    draining = vaultdrop(runner, "status").stdout
    assert re.search(r"daemon: draining since .*: nothing new starts; uploads in flight have until", draining), \
        draining
    assert runner.wait_exit() == 0
    stopped = vaultdrop(runner, "status")
    assert "daemon: not running (stopped " in stopped.stdout, stopped.stdout
    assert "long.mov  left part way: resumes when the daemon starts" in stopped.stdout, stopped.stdout
    stopped_json = json.loads(vaultdrop(runner, "status", "--json").stdout)
    assert stopped_json["in_flight"] == [] and [j["relpath"] for j in stopped_json["left"]] == ["long.mov"]
    runner.daemon["bandwidth_limit"] = 0
    runner.start()
    wait_for(lambda: runner.saw("resuming: long.mov (uploading, "), what="the restart says it resumes the job")
    runner.wait_state("long.mov", JobState.DONE)
    assert "left part way" not in vaultdrop(runner, "status").stdout


def test_jobs_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    journal_with(tmp_path, 1500)
    result = subprocess.run(f"'{SCRIPT}' jobs --json --limit 1500 --state-dir '{tmp_path}' | head -c 10",
                            shell=True, capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("[") and result.stderr == ""


def test_check_config_refuses_directories_it_cannot_write(runner: DaemonRunner) -> None:
    runner.folder["failed_dir"] = "/proc/vaultdrop-failed"
    result = vaultdrop(runner, "check-config")
    assert result.returncode == 78 and "folders[0].failed_dir" in result.stderr and "/proc/vaultdrop-failed" in result.stderr
    no_traceback(result)


def test_check_online_refuses_wrong_credentials(runner: DaemonRunner) -> None:
    good = vaultdrop(runner, "check-config", "--online")
    assert good.returncode == 0 and "credentials accepted" in good.stdout, good.stderr
    assert good.stdout.splitlines()[-1].endswith(f"{runner.config_path}: OK (1 folder(s), vault {runner.sandbox.url})")
    runner.vault["password"] = "wrong"
    bad = vaultdrop(runner, "check-config", "--online")
    assert bad.returncode == 78 and "check vault.user and vault.password" in bad.stderr
    assert "OK" not in bad.stdout, "OK only once every check passed"
    no_traceback(bad)


def test_check_online_with_the_vault_down_is_one_line(runner: DaemonRunner) -> None:
    runner.vault["base_url"] = "http://127.0.0.1:9"
    result = vaultdrop(runner, "check-config", "--online")
    assert result.returncode == 1 and "not reachable" in result.stderr and "OK" not in result.stdout
    runner.start()  # a vault that is down at start is waited out, not a reason to refuse
    assert runner.saw("start-up check failed, files wait in the journal")


def test_a_config_that_is_not_utf8_is_one_line_naming_the_file(runner: DaemonRunner) -> None:
    runner.write_config()
    runner.config_path.write_bytes(runner.config_path.read_bytes() + "# caf\xe9 in Latin-1\n".encode("latin-1"))
    result = cli("check-config", "--config", str(runner.config_path))
    assert result.returncode == 78 and f"{runner.config_path}: line " in result.stderr and "not UTF-8" in result.stderr
    no_traceback(result)


def test_a_password_in_a_config_others_can_read_draws_the_secret_file_warning(runner: DaemonRunner) -> None:
    runner.write_config().chmod(0o644)
    loose = cli("check-config", "--config", str(runner.config_path))
    assert loose.returncode == 0 and "holds vault.password and is readable by group or others" in loose.stderr
    assert runner.sandbox.password not in loose.stderr
    assert "readable by" not in vaultdrop(runner, "check-config").stderr  # 0600


def test_environment_override_errors_name_the_variable(runner: DaemonRunner) -> None:
    runner.write_config()
    result = cli("check-config", "--config", str(runner.config_path),
                 env={"VAULTDROP_VAULT__USR": "x", "VAULTDROP_VAULT__TIMEOUT": "soon"})
    assert result.returncode == 78
    assert "environment variable VAULTDROP_VAULT__USR: vault.usr: unknown key" in result.stderr
    assert "environment variable VAULTDROP_VAULT__TIMEOUT: vault.timeout" in result.stderr
    assert str(runner.config_path) not in result.stderr


def test_upload_refuses_bad_input_at_once_in_one_line(runner: DaemonRunner) -> None:
    (runner.base / "empty.mov").touch()
    (runner.base / "adir").mkdir()
    write(runner.drop / "watched.mov", 100)
    for name, words in (("missing.mov", "No such file"), ("adir", "is a directory"), ("empty.mov", "is empty"),
                        ("drop/watched.mov", "is in the watched folder")):
        started = time.monotonic()
        result = vaultdrop(runner, "upload", str(runner.base / name))
        assert result.returncode == 1 and words in result.stderr and time.monotonic() - started < 10, result
        no_traceback(result)
    assert runner.sandbox.videos() == []


def test_upload_shares_the_journal_resumes_after_failure_and_force_uploads_again(runner: DaemonRunner) -> None:
    elsewhere = runner.base / "elsewhere"
    write(elsewhere / "two.mov", 30_000)
    runner.vault["max_attempts"] = 1
    runner.sandbox.add_fault(endpoint="upload", action="status", status=500, code="server_error")
    first = vaultdrop(runner, "upload", str(elsewhere / "two.mov"))
    assert first.returncode == 1 and "failed" in first.stdout and runner.uploads_of("two.mov") == []
    again = vaultdrop(runner, "upload", str(elsewhere / "two.mov"))
    assert again.returncode == 0 and "had failed" in again.stderr and "done, video" in again.stdout, again
    assert "elsewhere/two.mov" in vaultdrop(runner, "jobs").stdout, "the daemon's journal holds it"
    done = vaultdrop(runner, "upload", str(elsewhere / "two.mov"))
    assert "already uploaded (video" in done.stdout and len(runner.uploads_of("two.mov")) == 1
    retry_done = vaultdrop(runner, "jobs", "retry", "1")
    assert retry_done.returncode == 1 and "job 1 is done, video" in retry_done.stderr and "--force" in retry_done.stderr
    forced = vaultdrop(runner, "upload", "--force", str(elsewhere / "two.mov"))
    assert forced.returncode == 0 and len(runner.uploads_of("two.mov")) == 2
    quiet = vaultdrop(runner, "upload", "-q", "--force", str(elsewhere / "two.mov"))
    assert quiet.returncode == 0 and quiet.stderr == "", "-q wins over log_level: no INFO lines"


def test_upload_progress_bar_keeps_clear_of_log_lines(runner: DaemonRunner) -> None:
    write(runner.base / "bar.mov", 3_000_000)
    runner.daemon["bandwidth_limit"] = "1MB"
    result = vaultdrop(runner, "upload", "--progress", "-v", str(runner.base / "bar.mov"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.endswith("\n")
    screen = [line.split("\r")[-1] for line in result.stderr.splitlines()]
    bars = [line for line in screen if line.startswith("[")]
    assert bars and "100.0%" in bars[-1] and "3.0 MB of 3.0 MB" in bars[-1]
    assert re.search(r"MB/s ETA 0:0\d", result.stderr), "a rate and an ETA while it runs"
    logged = [line for line in screen if re.match(r"\d{4}-\d\d-\d\d", line)]
    assert logged and all("[#" not in line and "[." not in line for line in logged)


def test_delete_unknown_id_and_outage_are_one_line(runner: DaemonRunner) -> None:
    unknown = vaultdrop(runner, "delete", "no-such-id")
    assert unknown.returncode == 1 and "no such video: no-such-id" in unknown.stderr
    no_traceback(unknown)
    odd = vaultdrop(runner, "delete", "a b/c")
    assert odd.returncode == 1 and "no such video" in odd.stderr and "vault.password" not in odd.stderr
    runner.vault["base_url"] = "http://127.0.0.1:9"
    down = vaultdrop(runner, "delete", "x")
    assert down.returncode == 1 and "could not delete video x" in down.stderr
    no_traceback(down)


def test_run_verbose_says_why_a_file_was_ignored(runner: DaemonRunner) -> None:
    runner.write_config()
    run = subprocess.Popen([str(SCRIPT), "run", "-v", "--config", str(runner.config_path)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        read_until(run, "ready:")
        write(runner.drop / "clip.mov.partial", 100)
        ignored = read_until(run, "ignored")[-1]
    finally:
        run.terminate()
        run.communicate(timeout=30)
    assert "DEBUG" in ignored and "clip.mov.partial: temporary name (temp_suffixes)" in ignored


RAW_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # any control character but the newline ending a line


def test_a_file_name_with_escapes_and_a_newline_is_data(runner: DaemonRunner) -> None:
    """A name that would clear the screen and break the line, with a byte that is not
    UTF-8: uploaded once (its name safely encoded), and printed escaped, one line per job."""
    name = os.fsdecode(b"evil\x1b[2J\x1b[31m\nline\xff.mov")
    runner.start()
    digest = write(runner.drop / name, 5000)
    job = runner.wait_state(name, JobState.DONE)
    assert [video["sha256"] for video in runner.sandbox.videos()] == [digest] and job.attempts == 0, "once, first try"
    listing = vaultdrop(runner, "jobs")
    assert listing.returncode == 0 and not RAW_CONTROL.search(listing.stdout), listing.stdout
    assert len(listing.stdout.splitlines()) == 1 and "drop/evil\\x1b[2J\\x1b[31m\\nline\\xff.mov" in listing.stdout
    assert json.loads(vaultdrop(runner, "jobs", "--json").stdout)[0]["relpath"] == name
    elsewhere = runner.base / "elsewhere"
    write(elsewhere / name, 3000)
    once = vaultdrop(runner, "upload", "--progress", str(elsewhere / name))
    assert once.returncode == 0, once.stderr
    assert not RAW_CONTROL.search(once.stdout) and len(once.stdout.splitlines()) == 1 and "done, video" in once.stdout
    assert "line\\xff.mov" in once.stderr.split("\r")[-1], "the progress bar names it escaped too"
    missing = vaultdrop(runner, "upload", str(elsewhere / (name + ".gone")))
    assert missing.returncode == 1 and not RAW_CONTROL.search(missing.stderr)
    no_traceback(missing)


def test_verbosity_goes_before_the_command_too_and_on_sandbox_and_journal(runner: DaemonRunner) -> None:
    write(runner.base / "loud.mov", 2000)
    runner.write_config()
    before = cli("-vv", "upload", "--config", str(runner.config_path), str(runner.base / "loud.mov"))
    assert before.returncode == 0 and "HTTP Request:" in before.stderr, "-vv before the command: httpx's lines"
    quiet = cli("-q", "upload", "--force", "--config", str(runner.config_path), str(runner.base / "loud.mov"))
    assert quiet.returncode == 0 and quiet.stderr == "", "-q before the command wins over log_level too"
    assert cli("-v", "status", "--state-dir", str(runner.state)).returncode == 0
    for place in (["-q", "sandbox"], ["sandbox", "-q"]):
        ready = runner.base / f"ready-{len(place[0])}"
        serving = subprocess.Popen([str(SCRIPT), *place, "--port", "0", "--root", str(runner.base / "sb"),
                                    "--ready-file", str(ready)], stderr=subprocess.PIPE, text=True)
        wait_for(ready.exists, what="sandbox ready")
        serving.terminate()
        _, errors = serving.communicate(timeout=30)
        assert " INFO " not in errors, errors
    for place in (["-q", "journal", "copy"], ["journal", "copy", "-q"], ["journal", "reset", "-v"]):
        answer = cli(*place, "--to", "postgresql://nowhere.invalid/db", "--state-dir", str(runner.base / "none")) \
            if "copy" in place else cli(*place, "--state-dir", str(runner.base / "none"))
        assert answer.returncode != 2 and "usage:" not in answer.stderr, answer.stderr


def test_labels_tell_the_truth(runner: DaemonRunner) -> None:
    """A bad flag is a usage mistake naming the flag; a second daemon and a journal database
    that is down are "try again later" (75), not configuration errors (78)."""
    flag = vaultdrop(runner, "run", "--metrics-addr", "nowhere")
    assert flag.returncode == 2 and "--metrics-addr: expected host:port" in flag.stderr
    assert "environment variable" not in flag.stderr
    runner.start()
    second = vaultdrop(runner, "run")
    assert second.returncode == 75 and f"another vaultdrop is already running on {runner.state}" in second.stderr
    assert "configuration error" not in second.stderr
    no_traceback(second)
    runner.stop()
    runner.journal = {"url": "postgresql://vaultdrop@127.0.0.1:9/vaultdrop"}
    down = vaultdrop(runner, "jobs")
    assert down.returncode == 75 and "is unreachable" in down.stderr and "configuration error" not in down.stderr
    no_traceback(down)


def test_the_exit_status_table_in_help_is_the_readme_s() -> None:
    """`--help` ends with the exit statuses main() returns, and the README lists the same."""
    shown = cli("--help")
    assert shown.returncode == 0 and "exit statuses:" in shown.stdout
    in_help = [int(code) for code in re.findall(r"^  (\d+) ", shown.stdout.split("exit statuses:")[1], re.M)]
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    in_readme = [int(code) for code in re.findall(r"^\| (\d+) \| ", readme.split("Exit statuses")[1].split("\n\n")[1], re.M)]
    assert in_help == in_readme == [0, 1, 2, 70, 75, 78, 130, 141]


def test_reading_the_journal_needs_no_vault_secret(runner: DaemonRunner) -> None:
    """The unit keeps the vault password as a systemd credential, so an operator's plain
    `status` and `jobs` read a config without it; commands that talk to the vault still
    ask for it."""
    journal_with(runner.state, 2, failed=1)
    del runner.vault["password"]
    config = str(runner.write_config())
    status = cli("status", "--config", config)
    assert status.returncode == 0 and "jobs: queued 1  failed 1" in status.stdout, status.stderr
    assert json.loads(cli("status", "--json", "--config", config).stdout)["counts"]["failed"] == 1
    listing = cli("jobs", "--config", config)
    assert listing.returncode == 0 and "sport/clip0.mov" in listing.stdout and "news/clip1.mov" in listing.stdout
    assert json.loads(cli("jobs", "show", "2", "--json", "--config", config).stdout)["relpath"] == "clip1.mov"
    for args in (["run"], ["upload", config], ["check-config"]):
        refused = cli(*args, "--config", config)
        assert refused.returncode == 78 and "vault.password: missing" in refused.stderr, (args, refused.stderr)
        no_traceback(refused)
