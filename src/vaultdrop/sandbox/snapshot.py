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


def save_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)
