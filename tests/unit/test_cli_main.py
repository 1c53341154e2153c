"""How `vaultdrop` ends: expected conditions in one line, a bug said to be one."""

import argparse

import pytest

from vaultdrop import cli
from vaultdrop.errors import OperatorError


def ending(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> int:
    def command(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(cli, "cmd_version", command)  # main() builds its parser after this
    return cli.main(["version"])


def test_a_bug_prints_a_traceback_under_a_line_saying_so(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert ending(monkeypatch, ZeroDivisionError("oops")) == 70
    err = capsys.readouterr().err
    assert err.startswith("vaultdrop: internal error, please report") and "Traceback" in err and "oops" in err


def test_an_expected_condition_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert ending(monkeypatch, OperatorError("no job 99")) == 1
    assert capsys.readouterr().err == "vaultdrop: no job 99\n"
