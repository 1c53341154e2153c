import logging

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
