"""Logging, in both processes: journald with structured fields or stderr lines (journal.py), and the
access log, built without ``logging`` and written in batches (access.py)."""
