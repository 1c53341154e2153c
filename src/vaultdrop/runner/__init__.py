"""The runner: which job starts when, and driving it through the stages."""
