import logging
import re

import pytest

from vaultdrop import logs


def test_a_crafted_file_name_cannot_forge_console_lines(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("info", ["s3cret"], force_journal=False)
    try:
        logs.log(logging.INFO, "queued: evil\n12:00:00 INFO    done: forged s3cret", file="a\rb")
    finally:
        logging.getLogger("vaultdrop").handlers.clear()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "evil\\n12:00:00" in lines[0] and "file=a\\rb" in lines[0] and "s3cret" not in lines[0]


def test_console_lines_are_short_and_say_each_value_once(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("info", [], force_journal=False)
    try:
        logs.log(logging.INFO, f"done: day1/clip.mov ({logs.human_size(52_400_000)} in 3.0 s) video K1",
                 job_id=7, folder="/srv/vaultdrop/drop", file="day1/clip.mov", upload_key="K1", video_id="K1",
                 stage="done", bytes=52_400_000, duration_ms=3000)
        logs.log(logging.WARNING, "retrying", job_id=8, folder="/srv/news/", file="a.mov", upload_key="K2",
                 video_id="K2", attempt=3)
    finally:
        logging.getLogger("vaultdrop").handlers.clear()
    done, retry = capsys.readouterr().err.splitlines()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d INFO ", done)
    assert done.endswith("video K1 job_id=7 folder=drop") and "52.4 MB" in done, done
    assert retry.endswith("retrying job_id=8 folder=news file=a.mov upload_key=K2 attempt=3"), retry


@pytest.mark.parametrize(("size", "text"), [(0, "0 B"), (999, "999 B"), (52_400_000, "52.4 MB"),
                                            (1_500_000_000_000, "1.5 TB"), (3 * 10**18, "3000000.0 TB")])
def test_one_spelling_of_sizes(size: int, text: str) -> None:
    assert logs.human_size(size) == text
