"""Heavy journal traffic for the power-loss tests: `python journal_load.py DB SEED`, killed with SIGKILL.

Each job walks queued → uploading → (many progress updates) → confirming → finishing → done,
with names that are not UTF-8, as fast as SQLite commits them.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

from vaultdrop.job import FileIdentity, JobState
from vaultdrop.journal import Journal


def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    journal = Journal(Path(path))
    run = f"w{seed}-{os.getpid()}"
    for n in range(1, 1_000_000):
        job = journal.enqueue(FileIdentity("/drop", f"{run}/clip-{n}-\udcff.mov", rng.randrange(1, 10**9), n, n))
        assert job is not None
        job = journal.transition(job, JobState.UPLOADING, f"upload key {run}-{n}", upload_key=f"{run}-{n}")
        for sent in range(rng.randrange(1, 20)):
            job = journal.update(job, bytes_sent=sent, last_error=f"progress {sent} on \udcfe")
        job = journal.transition(job, JobState.CONFIRMING, "upload sent", sha256="0" * 64)
        job = journal.transition(job, JobState.FINISHING, "confirmed", video_id=job.upload_key)
        journal.transition(job, JobState.DONE, "archived", last_error=None)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
