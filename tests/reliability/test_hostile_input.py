"""Hostile answers from the servers: refused with a reason, no file read, no fetch, bounded memory."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from vaultdrop.clients.control import ControlClient
from vaultdrop.clients.vault import VaultClient
from vaultdrop.errors import ProtocolError, RetryLater
from vaultdrop.job import JobState
from vaultdrop.sandbox.launcher import SandboxProcess

from ..integration.harness import DaemonRunner
from ..integration.test_daemon import write
from .hostile import SECRET_MARKER, RawServer, Tripwire, http_head, json_corpus, progress_corpus, xml_corpus

MEMORY_SLACK = 50 * 1024 * 1024


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    with Tripwire() as wire:
        yield wire


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "local-secret.txt"
    path.write_text(SECRET_MARKER)
    return path


def vault_client(url: str, sandbox: SandboxProcess) -> VaultClient:
    return VaultClient(url, sandbox.user, sandbox.password, timeout=5)


def control_client(url: str, sandbox: SandboxProcess) -> ControlClient:
    return ControlClient(url, sandbox.api_key, sandbox.api_secret, sandbox.cdn, timeout=5)


async def test_vault_client_refuses_hostile_xml(sandbox: SandboxProcess, tripwire: Tripwire, secret_file: Path) -> None:
    client = vault_client(sandbox.url, sandbox)
    rss = psutil.Process().memory_info().rss
    try:
        for case in xml_corpus(secret_file, tripwire.port):
            sandbox.add_fault(endpoint="new_key", action="body", body=case.body, content_type=case.content_type)
            with pytest.raises(ProtocolError) as refused:
                await client.new_upload_key()
            assert SECRET_MARKER not in str(refused.value), case.name
        for case in progress_corpus():
            sandbox.add_fault(endpoint="progress", action="body", body=case.body)
            with pytest.raises(ProtocolError):
                await client.progress("some-key")
    finally:
        await client.aclose()
    assert tripwire.contacts == 0, "a hostile document made the client fetch a URL"
    assert psutil.Process().memory_info().rss - rss < MEMORY_SLACK


async def test_error_documents_with_entities_are_still_just_errors(sandbox: SandboxProcess, tripwire: Tripwire,
                                                                   secret_file: Path) -> None:
    """A 5xx whose body is hostile still means "retry": the body is never trusted."""
    client = vault_client(sandbox.url, sandbox)
    try:
        for case in xml_corpus(secret_file, tripwire.port)[:4]:
            sandbox.add_fault(endpoint="new_key", action="body", body=case.body, status=503)
            with pytest.raises(RetryLater) as refused:
                await client.new_upload_key()
            assert "HTTP 503" in str(refused.value) and SECRET_MARKER not in str(refused.value)
    finally:
        await client.aclose()
    assert tripwire.contacts == 0


@pytest.mark.parametrize("length", [50_000_000, None], ids=["declared 50 MB", "endless"])
async def test_huge_and_endless_bodies_are_cut_off(sandbox: SandboxProcess, length: int | None) -> None:
    chunk = b"<results>" + b"x" * 65536
    with RawServer(http_head("application/xml", length), chunk, 0) as server:
        vault = vault_client(f"http://127.0.0.1:{server.port}", sandbox)
        control = control_client(f"http://127.0.0.1:{server.port}/stable/", sandbox)
        rss = psutil.Process().memory_info().rss
        started = time.monotonic()
        try:
            with pytest.raises(ProtocolError, match="refused"):
                await vault.new_upload_key()
            with pytest.raises(ProtocolError, match="refused"):
                await control.get_storage()
        finally:
            await vault.aclose()
            await control.aclose()
        assert time.monotonic() - started < 10
        assert psutil.Process().memory_info().rss - rss < MEMORY_SLACK


async def test_control_client_refuses_hostile_json(sandbox: SandboxProcess) -> None:
    client = control_client(sandbox.url + "/stable/", sandbox)
    calls = {
        "aws.upload": lambda: client.aws_upload(path="p", destination_path="d", metadata={}, acl="private",
                                                bucket="b", callback=""),
        "aws.status": lambda: client.aws_status(10, 0),
        "files.getstorage": client.get_storage,
    }
    try:
        for command, case in json_corpus():
            sandbox.add_fault(endpoint=command, action="body", body=case.body, content_type=case.content_type)
            with pytest.raises(ProtocolError) as refused:
                await calls[command]()
            assert len(str(refused.value)) < 500, f"{case.name}: the reason quotes the whole body"
    finally:
        await client.aclose()


def test_daemon_logs_the_reason_and_still_delivers(tmp_path: Path, sandbox: SandboxProcess, tripwire: Tripwire,
                                                  secret_file: Path) -> None:
    corpus = {case.name: case for case in xml_corpus(secret_file, tripwire.port)}
    runner = DaemonRunner(tmp_path, sandbox)
    runner.vault["max_attempts"] = 10
    runner.start()  # the faults after the start-up credential check: they are the file's
    for name in ("xxe file URL", "xxe http URL", "billion laughs", "wrong root"):
        sandbox.add_fault(endpoint="new_key", action="body", body=corpus[name].body)
    sandbox.add_fault(endpoint="progress", action="body", body=progress_corpus()[0].body)
    try:
        digest = write(runner.drop / "target.mov", 50_000)
        runner.wait_state("target.mov", JobState.DONE)
    finally:
        runner.stop()
    assert [v["sha256"] for v in runner.uploads_of("target.mov")] == [digest]
    assert runner.output().count("retry in ") == 5
    output = runner.output()
    assert output.count("XML with a DOCTYPE or entity declaration refused") == 3
    assert "XML root <html> refused" in output and "without numeric status" in output
    assert SECRET_MARKER not in output and tripwire.contacts == 0
    assert os.path.exists(secret_file)
