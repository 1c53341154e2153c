from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultdrop.sandbox.launcher import SandboxProcess

from .harness import DaemonRunner

# The files these tests drop are written whole at once, so settle only delays each job:
# 0.2 s instead of the harness's 0.5 s. A test about settling sets its own; the campaign
# keeps 0.5 s, the setting its published figures were measured with.
SETTLE = 0.2


@pytest.fixture
def runner(request: pytest.FixtureRequest, tmp_path: Path, sandbox: SandboxProcess) -> Iterator[DaemonRunner]:
    daemon = DaemonRunner(tmp_path, sandbox)
    if request.node.get_closest_marker("campaign") is None:
        daemon.folder["settle"] = SETTLE
    yield daemon
    print(daemon.output())  # shown by pytest when the test fails
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.process.kill()
        daemon.process.wait()
