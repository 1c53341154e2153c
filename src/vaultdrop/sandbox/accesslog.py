"""The per-request access log: what the daemon really sent, for tests to assert on.

Kept in memory (served at /_sandbox/log) and appended as JSON lines to ROOT/access.log
so a human can read what happened after the fact. Records never hold credentials: only
the query (whose `_sig` is a one-way digest), the endpoint and the outcome.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def new_record(method: str, path: str, query: dict[str, str], endpoint: str | None) -> dict[str, Any]:
    return {
        "time": time.time(),
        "method": method,
        "path": path,
        "query": query,
        "endpoint": endpoint,
        "status": None,
        "code": None,
        "bytes_in": 0,
        "upload_key": query.get("upload_key"),
        "command": None,
        "request_id": None,
        "fault": None,
    }


class AccessLog:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._records: list[dict[str, Any]] = []

    def open(self, record: dict[str, Any]) -> None:
        """Reserve the record's place in arrival order; it is filled in as the call runs."""
        self._records.append(record)

    def close(self, record: dict[str, Any]) -> None:
        """The call is over: persist the finished record."""
        with self._path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")

    def records(self) -> list[dict[str, Any]]:
        return list(self._records)
