"""The state_dir's mark of the journal it was used with: a journal that went missing,
empty or was replaced must never pass for a fresh start (that would upload every kept file
again). Both backends check it where they open the journal."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from ..errors import ConfigError
from ..files import fsync_path
from .contract import JournalMissing

USED_MARK = "journal-used"  # in state_dir: a journal was set up here (which, since when)


def journal_was_used(state_dir: Path) -> str | None:
    """What the state_dir says about an earlier journal ("<journal id> <location> since
    <date>"), or None on a first start."""
    try:
        return (state_dir / USED_MARK).read_text(encoding="utf-8").strip() or "an earlier run"
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {state_dir / USED_MARK}: {exc}") from None


def mark_used(state_dir: Path, journal_id: str, location: str, now: float) -> None:
    """Record, durably, that state_dir has this journal from now on (see JournalMissing)."""
    when = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(now))
    temporary = state_dir / f".{USED_MARK}.tmp"
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(f"{journal_id} {location} since {when}\n")
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(state_dir / USED_MARK)
    fsync_path(state_dir)


def check_identity(location: str, journal_id: str, used: str) -> None:
    """The journal must be the one the state_dir's mark names (its id comes first there)."""
    expected = used.split(" ", 1)[0]
    if re.fullmatch(r"[0-9a-f]{32}", expected) and journal_id not in (expected, "unknown"):
        raise refuse_missing(location, f"another journal than this state_dir used (id {journal_id}, "
                             f"not {expected}): emptied and set up again, or another one restored", used)


def refuse_missing(location: str, what: str, used: str) -> JournalMissing:
    return JournalMissing(
        f"the journal {location} is {what}, but this state_dir was used with a journal ({used}): "
        "starting with an empty journal would upload every kept file again. Restore the journal "
        "from a backup, or start over on purpose with `vaultdrop journal reset`")
