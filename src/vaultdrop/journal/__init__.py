"""The journal: every job's durable state, and the one committer that changes it."""
