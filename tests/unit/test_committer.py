"""Every job write goes through the committer (committer.py): the runner, admission, the
upload's progress, the crash handler and the operator's commands alike."""

import re
from pathlib import Path

import vaultdrop
from vaultdrop.committer import Committer
from vaultdrop.journal import Journal
from vaultdrop.model import FileIdentity, Job, JobState

JOB_WRITES = re.compile(r"journal\.(enqueue|follow|transition|update|discard_video|retry|forget|video_deleted)\(")
SOURCE = Path(vaultdrop.__file__).parent


def test_no_module_but_the_committer_writes_a_job() -> None:
    writers = sorted(str(path.relative_to(SOURCE)) for path in SOURCE.rglob("*.py")
                     if path.name not in ("committer.py", "journal.py", "journal_pg.py")
                     and JOB_WRITES.search(path.read_text(encoding="utf-8")))
    assert writers == []


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[int, JobState | None, JobState, str]] = []

    def changed(self, job: Job, previous: JobState | None, detail: str) -> None:
        self.changes.append((job.id, previous, job.state, detail))

    def __getattr__(self, name: str):  # the other JobEvents: not recorded here
        return lambda *args, **kwargs: None


def test_an_operators_retry_and_a_deleted_video_are_announced_like_the_runners_changes(tmp_path: Path) -> None:
    events = Recorder()
    committer = Committer(Journal(tmp_path / "vaultdrop.db"), events)  # type: ignore[arg-type]
    (tmp_path / "a.mov").write_bytes(b"x")
    job = committer.enqueue(FileIdentity(str(tmp_path), "a.mov", 1, 1, 1))
    assert job is not None
    journal = committer.journal
    job = journal.transition(journal.transition(job, JobState.FINISHING, video_id="V"), JobState.DONE)
    [deleted] = committer.video_deleted("V", "video V deleted from the vault by the operator")
    retried, restored = committer.retry(deleted.id)
    assert retried.state is JobState.QUEUED and restored is None
    assert [(p, s) for _, p, s, _ in events.changes] == [
        (None, JobState.QUEUED), (JobState.DONE, JobState.FAILED), (JobState.FAILED, JobState.QUEUED)]
    assert [h["to_state"] for h in journal.history(job.id)][-2:] == ["failed", "queued"]
    journal.close()
