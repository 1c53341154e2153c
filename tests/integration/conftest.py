from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultdrop.sandbox.launcher import SandboxProcess

from .harness import DaemonRunner


@pytest.fixture
def runner(tmp_path: Path, sandbox: SandboxProcess) -> Iterator[DaemonRunner]:
    daemon = DaemonRunner(tmp_path, sandbox)
    yield daemon
    print(daemon.output())  # shown by pytest when the test fails
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.process.kill()
        daemon.process.wait()
