"""What the reliability tests check after the fact, shared by the fast tests and the campaign."""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass
class Tally:
    """The campaign's figures, summed over its tests and printed at the end of the run."""

    kills: int = 0
    files: int = 0
    lost: int = 0
    duplicated: int = 0
    retries: int = 0
    hostile: int = 0
    failures: int = 0
    secret_leaks: int = 0
    rss: tuple[int, int, int] | None = None  # min, max, growth (late median - early median)
    phases: dict[str, float] = field(default_factory=dict)  # seconds

    def table(self, seconds: float) -> list[str]:
        head = ("kills", "files", "lost", "duplicated", "retries", "hostile inputs tried", "failures")
        row = (self.kills, self.files, self.lost, self.duplicated, self.retries, self.hostile, self.failures)
        widths = [max(len(h), len(str(v))) for h, v in zip(head, row)]
        lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
                 "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                 "| " + " | ".join(str(v).rjust(w) for v, w in zip(row, widths)) + " |"]
        extra = f"duration {seconds / 60:.1f} min, secret leaks {self.secret_leaks}"
        if self.rss is not None:
            low, high, growth = self.rss
            extra += f", daemon RSS {low / 2**20:.1f}-{high / 2**20:.1f} MiB (growth {growth / 2**20:+.1f} MiB)"
        phases = ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in self.phases.items())
        return [*lines, extra, f"phases: {phases}"]


TALLY = Tally()
