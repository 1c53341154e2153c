"""The runner and its stages on the in-memory journal: one file from `queued` to `done`
through the real Pipeline, stages and vault client, against the model's fake services
(tests/model/fakes.py) over httpx's MockTransport. No SQLite, no PostgreSQL, no sockets."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.model.fakes import FakeClock, Services
from tests.model.world import make_settings
from vaultdrop.job import FileIdentity, Job, JobState
from vaultdrop.journal.memory import MemoryJournal
from vaultdrop.runner.pipeline import Pipeline
from vaultdrop.wiring import build_pipeline


class Runner:
    def __init__(self, root: Path, *, s3: bool = False, dedupe: str = "sha256") -> None:
        (root / "drop").mkdir()
        (root / "other").mkdir()
        self.root = root
        self.clock = FakeClock()
        self.services = Services(self.clock)
        self.settings = make_settings(root, after_upload="keep", s3=s3, dedupe=dedupe)
        self.journal = MemoryJournal(clock=self.clock)
        folders = {str(folder.path): folder for folder in self.settings.folders}
        self.pipeline: Pipeline = build_pipeline(
            self.settings, self.journal, lambda job: folders.get(job.folder), clock=self.clock,
            sleep=self.clock.sleep, transport=self.services.transport(lambda request: None))

    def drop(self, name: str, content: bytes) -> Job:
        path = self.root / "drop" / name
        path.write_bytes(content)
        info = os.stat(path)
        job = self.journal.enqueue(FileIdentity(str(self.root / "drop"), name, info.st_size, info.st_mtime_ns,
                                                info.st_ino, info.st_ctime_ns))
        assert job is not None
        return job

    async def run_until_settled(self, job: Job, rounds: int = 20) -> Job:
        """Run the job whenever it is due (the scheduler's part), until it ends."""
        for _ in range(rounds):
            job = self.journal.get(job.id)
            assert job is not None
            if job.state in (JobState.DONE, JobState.FAILED, JobState.SKIPPED):
                return job
            self.clock.advance(max(0.0, job.not_before - self.clock()))
            claimed = self.journal.claim(job)
            assert claimed is not None
            await self.pipeline.run(claimed)
        raise AssertionError(f"job {job.id} did not end in {rounds} rounds: {self.journal.get(job.id)}")


@pytest.fixture
async def runner(tmp_path: Path):
    runner = Runner(tmp_path)
    yield runner
    await runner.pipeline.aclose()


async def test_a_file_goes_from_queued_to_done_with_its_video_stored_once(runner: Runner) -> None:
    content = os.urandom(300)
    job = await runner.run_until_settled(runner.drop("a.mp4", content))
    assert job.state is JobState.DONE
    [stored] = runner.services.live()
    assert (stored.video_id, stored.sha256, stored.size) == (job.video_id, hashlib.sha256(content).hexdigest(), 300)
    assert [line["to_state"] for line in runner.journal.history(job.id)][-1] == "done"


async def test_a_server_error_costs_one_attempt_and_the_job_still_ends_done(runner: Runner) -> None:
    runner.services.script("upload", "500")
    job = runner.drop("a.mp4", os.urandom(200))
    await runner.pipeline.run(runner.journal.claim(job))
    waiting = runner.journal.get(job.id)
    assert waiting.attempts == 1 and "HTTP 500" in waiting.last_error and waiting.not_before > runner.clock()
    job = await runner.run_until_settled(job)
    assert job.state is JobState.DONE and len(runner.services.live()) == 1


async def test_the_same_content_twice_is_stored_once_and_the_twin_skipped(runner: Runner) -> None:
    content = os.urandom(256)
    first = await runner.run_until_settled(runner.drop("a.mp4", content))
    second = await runner.run_until_settled(runner.drop("b.mp4", content))
    assert (first.state, second.state) == (JobState.DONE, JobState.SKIPPED)
    assert second.video_id == first.video_id and len(runner.services.live()) == 1


async def test_the_s3_copy_is_requested_once_and_followed_to_its_end(tmp_path: Path) -> None:
    runner = Runner(tmp_path, s3=True)
    try:
        job = await runner.run_until_settled(runner.drop("a.mp4", os.urandom(200)), rounds=60)
    finally:
        await runner.pipeline.aclose()
    assert job.state is JobState.DONE and job.s3_status == "complete"
    assert len(runner.services.s3_requests) == 1
