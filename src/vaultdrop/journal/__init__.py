"""The journal: every job's durable state, and the one committer that changes it.

contract.py says what the rest of vaultdrop may ask of a journal; rules.py decides, once,
without SQL; statements.py holds the SQL both engines run and sql.py runs it; sqlite.py and
postgres.py are the engines (connections, transactions, migrations, leases); memory.py
keeps the same contract in dicts for unit tests; marks.py is the state_dir's memory of the
journal it used; committer.py is the one place a job changes.
"""

from .contract import (JOB_COLUMNS, MAX_SIZE, IllegalTransition, JournalMissing, JournalStore, JournalUnavailable,
                       JournalUnwritable, LeaseLost)
from .marks import USED_MARK, journal_was_used, mark_used
from .sqlite import Journal

__all__ = ["JOB_COLUMNS", "MAX_SIZE", "USED_MARK", "IllegalTransition", "Journal", "JournalMissing", "JournalStore",
           "JournalUnavailable", "JournalUnwritable", "LeaseLost", "journal_was_used", "mark_used"]
