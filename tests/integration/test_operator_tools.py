"""The tools an operator reaches for, as they run them: `vaultdrop scan`, the daemon's periodic
stats line, `--log-format json`, shell completion and the man page."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import fields
from pathlib import Path

import httpx
import pytest

from vaultdrop.cli import demo_settings
from vaultdrop.job import FileIdentity, JobState
from vaultdrop.journal import Journal
from vaultdrop.sandbox.faults import ACTIONS, CONTROL_ENDPOINTS, VAULT_ENDPOINTS, Fault
from vaultdrop.sandbox.launcher import (DEFAULT_API_KEY, DEFAULT_API_SECRET, DEFAULT_PASSWORD, DEFAULT_STORAGE,
                                        DEFAULT_USER, SandboxProcess)

from .harness import DaemonRunner, wait_for
from .test_cli import vaultdrop
from .test_daemon import write
from .test_operator_cli import cli


def test_scan_says_what_the_daemon_would_do_with_each_file_and_writes_nothing(runner: DaemonRunner) -> None:
    runner.folder["after_upload"] = "keep"
    runner.start()
    write(runner.drop / "sent.mov", 2000)
    done = runner.wait_state("sent.mov", JobState.DONE)
    assert runner.stop() == 0
    write(runner.drop / "lost.mov", 3000)
    journal = Journal(runner.state / "vaultdrop.db")  # a job that failed, its file left in place
    failed = journal.enqueue(FileIdentity.of(str(runner.drop), "lost.mov", os.stat(runner.drop / "lost.mov")))
    assert failed is not None
    journal.transition(failed, JobState.FAILED, "test", last_error="vault said no")
    journal.close()
    write(runner.drop / "ready.mov", 1000)
    (runner.drop / "ready.mov.json").write_text("{}")
    write(runner.drop / "copy.mov.part", 10)
    runner.folder["settle"] = 3
    time.sleep(3.1)  # past settle for what is there so far
    write(runner.drop / "sub" / "fresh.mov", 10)
    write(runner.drop / "odd\x1b[2J\nname.mov", 10)
    db = (runner.state / "vaultdrop.db").read_bytes()

    with (runner.drop / "rec.mxf").open("wb") as recording:  # a recorder still writing
        recording.write(b"x")
        recording.flush()
        listing = vaultdrop(runner, "scan")
    assert listing.returncode == 0, listing.stderr
    lines = {line.split(" (")[0].split(":")[0].split(None, 1)[1]: line for line in listing.stdout.splitlines()}
    assert lines["drop/sent.mov"].startswith("known") and f"already uploaded as job {done.id}" in lines["drop/sent.mov"]
    assert lines["drop/lost.mov"].startswith("known") and f"failed as job {failed.id}: vault said no" \
        in lines["drop/lost.mov"]
    assert lines["drop/ready.mov"].startswith("upload") and "would upload" in lines["drop/ready.mov"]
    assert lines["drop/ready.mov.json"].startswith("ignore") and "sidecar of ready.mov" in lines["drop/ready.mov.json"]
    assert "temporary name" in lines["drop/copy.mov.part"]
    assert lines["drop/sub/fresh.mov"].startswith("wait") and "waiting to settle" in lines["drop/sub/fresh.mov"]
    assert "drop/odd\\x1b[2J\\nname.mov (10 B): waiting to settle" in listing.stdout  # a name is data, escaped
    assert lines["drop/rec.mxf"].startswith("wait") and "open for writing" in lines["drop/rec.mxf"]
    assert "\x1b" not in listing.stdout and len(listing.stdout.splitlines()) == 8
    assert "8 file(s): 1 to upload, 3 waiting, 2 known to the journal, 2 ignored" in listing.stderr

    plans = {plan["file"]: plan for plan in json.loads(vaultdrop(runner, "scan", "--json").stdout)}
    assert plans["sent.mov"]["action"] == "known" and plans["sent.mov"]["job_id"] == done.id
    assert plans["ready.mov"] == {"folder": str(runner.drop), "file": "ready.mov", "action": "upload",
                                  "reason": "would upload", "size": 1000, "job_id": None}
    assert plans["odd\x1b[2J\nname.mov"]["action"] == "wait"
    assert (runner.state / "vaultdrop.db").read_bytes() == db  # nothing written, nothing sent
    assert [v["filename"] for v in runner.sandbox.videos()] == ["sent.mov"]


def test_the_daemon_logs_a_stats_line_every_stats_interval_and_none_with_0(runner: DaemonRunner) -> None:
    runner.daemon["stats_interval"] = "1s"
    runner.start()
    write(runner.drop / "a.mov", 3_000_000)
    runner.wait_state("a.mov", JobState.DONE)
    line = wait_for(lambda: next((x for x in runner.lines if "stats: 1 file(s) done (3.0 MB)" in x), None),
                    what="a stats line with the upload")
    assert "queue 0 (0 uploading)" in line and "/s;" in line and "files_done" not in line  # numbers once, in words
    wait_for(lambda: runner.saw("stats: 0 file(s) done (0 B) in the last 1 s, sent 0 B/s; queue 0"),
             what="the next line, counted anew")
    runner.daemon["stats_interval"] = 0
    runner.write_config()
    runner.process.send_signal(signal.SIGHUP)
    wait_for(lambda: runner.saw("configuration reloaded"), what="reload")
    time.sleep(1.2)  # the line the old interval had in flight
    count = sum("stats:" in x for x in runner.lines)
    time.sleep(2.5)
    assert sum("stats:" in x for x in runner.lines) == count
    assert runner.stop() == 0


def test_log_format_json_writes_journalds_fields_one_object_per_line_across_a_reload(runner: DaemonRunner) -> None:
    runner.run_args = ["--log-format", "json"]
    runner.start()
    write(runner.drop / "odd\nname.mov", 1000)
    runner.wait_state("odd\nname.mov", JobState.DONE)
    runner.process.send_signal(signal.SIGHUP)
    wait_for(lambda: runner.saw("configuration reloaded"), what="reload")
    write(runner.drop / "b.mov", 1000)
    runner.wait_state("b.mov", JobState.DONE)
    assert runner.stop() == 0
    records = [json.loads(line) for line in runner.lines]  # every line, the sandbox's none
    done = next(r for r in records if r.get("STAGE") == "done" and r["FILE"] == "odd\nname.mov")
    assert done["MESSAGE"].startswith("done: odd\nname.mov (1.0 kB") and done["PRIORITY"] == 6
    assert done["JOB_ID"] == "1" and done["FOLDER"] == str(runner.drop) and done["SYSLOG_IDENTIFIER"] == "vaultdrop"
    assert done["MESSAGE_ID"] and done["CODE_FUNC"] and re.match(r"\d{4}-\d\d-\d\dT", done["TIMESTAMP"])
    assert any(r.get("FILE") == "b.mov" and r.get("STAGE") == "done" for r in records)  # still JSON after the reload
    assert all("\n" not in line.rstrip("\n") for line in runner.lines)


def complete(script: Path, cwd: Path, *words: str) -> list[str]:
    """What bash offers after `vaultdrop WORDS` (the last word is the one being completed)."""
    line = " ".join(f"'{w}'" for w in ("vaultdrop", *words))
    probe = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words)}; _vaultdrop; "
             'printf "%s\\n" "${COMPREPLY[@]}"')
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, cwd=cwd, timeout=30)
    assert result.returncode == 0 and not result.stderr, result
    return sorted(result.stdout.split())  # bash shows them sorted


def test_bash_completion_is_generated_from_the_parser(tmp_path: Path) -> None:
    script = tmp_path / "vaultdrop.bash"
    generated = cli("completion", "bash")
    assert generated.returncode == 0 and "complete -o filenames -F _vaultdrop vaultdrop" in generated.stdout
    script.write_text(generated.stdout)
    (tmp_path / "clip.mov").write_bytes(b"x")
    assert complete(script, tmp_path, "s") == ["sandbox", "scan", "status"]
    assert complete(script, tmp_path, "jobs", "s") == ["show"]
    assert complete(script, tmp_path, "jobs", "--config", "x.toml", "--st") == ["--state", "--state-dir"]
    assert complete(script, tmp_path, "jobs", "--state", "f") == ["failed", "finishing"]
    assert complete(script, tmp_path, "journal", "c") == ["copy"]
    assert complete(script, tmp_path, "journal", "copy", "--p") == ["--password-file"]
    assert complete(script, tmp_path, "upload", "cl") == ["clip.mov"]  # its files
    assert complete(script, tmp_path, "scan", "--log-format", "") == ["auto", "json", "text"]
    assert complete(script, tmp_path, "run", "--port", "") == []  # a number only the operator knows
    assert cli("completion", "zsh").stdout.startswith("autoload -U +X bashcompinit && bashcompinit\n")


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_the_man_page_is_generated_from_the_parser_and_renders_cleanly(tmp_path: Path) -> None:
    page = cli("manpage")
    assert page.returncode == 0 and page.stdout.startswith(".TH VAULTDROP 1 ")
    for command in ("run", "status", "jobs", "scan", "upload", "delete", "journal copy", "journal reset",
                    "check-config", "completion", "sandbox"):
        assert f'.SS "vaultdrop {command}"' in page.stdout
    (tmp_path / "vaultdrop.1").write_text(page.stdout)
    rendered = subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(tmp_path / "vaultdrop.1")],
                              capture_output=True, text=True, timeout=30)
    assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr
    text = re.sub(r".\x08", "", rendered.stdout)  # no overstrike bold
    assert "--log-format {auto,text,json}" in text and "default /etc/vaultdrop/vaultdrop.toml" in text


FAULT_FIELDS = [field.name for field in fields(Fault)]
README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_documents_the_demo_credentials_and_the_fault_json(sandbox: SandboxProcess, tmp_path: Path) -> None:
    text = README.read_text()
    section = text[text.index("## The sandbox"):text.index("## Tests")]
    for value in (DEFAULT_USER, DEFAULT_PASSWORD, DEFAULT_API_KEY, DEFAULT_API_SECRET, DEFAULT_STORAGE):
        assert f"`{value}`" in section, value
    settings = demo_settings(tmp_path, sandbox.url)  # what `make run`'s daemon logs in with
    assert (settings.vault.user, settings.vault.password.get_secret_value()) == (DEFAULT_USER, DEFAULT_PASSWORD)
    for name in sorted(ACTIONS | VAULT_ENDPOINTS | CONTROL_ENDPOINTS | set(FAULT_FIELDS)):
        assert f"`{name}`" in section, name
    example = json.loads(re.search(r"-d '(\{.*?\})'", section)[1])  # the README's own example works
    sandbox.add_fault(**example)
    answer = httpx.get(f"{sandbox.url}/_sandbox/faults").json()
    assert answer == [{**example, "bytes": 0, "seconds": 0.0, "body": "", "content_type": "application/xml"}]
