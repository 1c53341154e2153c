"""Small JSON state files under ROOT, so a restarted sandbox remembers what it held.

A real vault does not forget completed uploads when it restarts; a daemon under test
must be able to restart the sandbox on the same root and still confirm its uploads.
Written to a temp file and renamed, so a crash never leaves half a state file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def load_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def load_json_lines(path: Path) -> list[Any]:
    """Every complete line of an append-only log; a torn last line is ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    changes = [json.loads(line) for line in lines[:-1] if line]
    if lines[-1]:
        try:
            changes.append(json.loads(lines[-1]))
        except json.JSONDecodeError:
            pass
    return changes


def append_json_line(path: Path, value: Any) -> None:
    """One write per line, so a killed process never leaves half a record."""
    with path.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(value, ensure_ascii=False) + "\n")


def save_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)
