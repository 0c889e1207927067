"""Typed one-line errors of the task suite (the CLI prints them and exits 2)."""

from pg2edge.errors import Pg2EdgeError


class DataError(Pg2EdgeError, ValueError):
    """A task-suite file or one of its lines is unusable; the message names the file (and line)."""
