"""What the reliability tests check after the fact, shared by the fast tests and the campaign."""

from __future__ import annotations

from pathlib import Path

from ..integration.harness import DaemonRunner
from ..integration.test_cli import vaultdrop

OPERATOR_COMMANDS = (("status",), ("status", "--json"), ("jobs", "list", "--limit", "100000"),
                     ("jobs", "list", "--json", "--limit", "100000"), ("jobs", "show", "1"))


def secret_leaks(runner: DaemonRunner, secrets: list[str]) -> list[str]:
    """Every place an operator could look at where a secret shows up (empty: none)."""
    places: dict[str, bytes] = {"daemon output": runner.output().encode()}
    for command in OPERATOR_COMMANDS:
        answer = vaultdrop(runner, *command)
        places["vaultdrop " + " ".join(command)] = (answer.stdout + answer.stderr).encode()
    files = [*runner.state.glob("vaultdrop.db*"), *runner.failed.rglob("*.error.json"),
             *(runner.sandbox.root / name for name in ("access.log", "sandbox.out"))]
    places.update({str(path): path.read_bytes() for path in files if Path(path).is_file()})
    return [f"{secret!r} in {place}" for place, text in places.items() for secret in secrets
            if secret.encode() in text]
