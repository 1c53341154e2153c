"""Intake: notice a file, decide when it is completely written, admit it to the journal."""
