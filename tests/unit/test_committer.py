"""Every job write goes through the committer (journal/committer.py): the runner, admission, the
upload's progress, the crash handler and the operator's commands alike."""

import re
from pathlib import Path

import vaultdrop
from vaultdrop.job import FileIdentity, Job, JobState, Transition
from vaultdrop.journal.committer import Committer
from vaultdrop.journal.memory import MemoryJournal

JOB_WRITES = re.compile(r"journal\.(enqueue|relocate|transition|update|discard_video|retry|forget|video_deleted)\(")
SOURCE = Path(vaultdrop.__file__).parent


def test_no_module_but_the_committer_writes_a_job() -> None:
    writers = sorted(str(path.relative_to(SOURCE)) for path in SOURCE.rglob("*.py")
                     if path.parent.name != "journal"
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
    committer = Committer(MemoryJournal(), events)  # type: ignore[arg-type]
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


def test_a_discard_of_a_video_another_job_sent_keeps_it_and_says_so(tmp_path: Path) -> None:
    committer = Committer(MemoryJournal())
    journal = committer.journal
    owner = journal.enqueue(FileIdentity(str(tmp_path), "a.mov", 1, 1, 1))
    owner = journal.transition(journal.transition(owner, JobState.UPLOADING, upload_key="V"), JobState.CONFIRMING)
    owner = journal.transition(journal.transition(owner, JobState.FINISHING, video_id="V"), JobState.DONE)
    other = journal.enqueue(FileIdentity(str(tmp_path), "b.mov", 2, 1, 2))
    other = journal.transition(journal.transition(other, JobState.UPLOADING, upload_key="V"), JobState.CONFIRMING)
    committer.commit(other, Transition(JobState.QUEUED, "sizes differ: starting over", {"upload_key": None},
                                       discard="V"))
    assert journal.stale_videos(now=9e9) == []
    assert journal.history(other.id)[-1]["detail"] == (f"sizes differ: starting over; video V is job {owner.id}'s"
                                                       " (a.mov): kept")
    journal.forget(owner.id)  # forgotten, its video is still not another job's to delete
    again = journal.enqueue(FileIdentity(str(tmp_path), "c.mov", 3, 1, 3))
    again = journal.transition(journal.transition(again, JobState.UPLOADING, upload_key="V"), JobState.CONFIRMING)
    committer.commit(again, Transition(JobState.QUEUED, "sizes differ: starting over", {"upload_key": None},
                                       discard="V"))
    assert journal.stale_videos(now=9e9) == []
    assert journal.history(again.id)[-1]["detail"].endswith(f"video V is job {owner.id}'s (forgotten since): kept")
    journal.close()
