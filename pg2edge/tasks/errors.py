"""Typed one-line errors of the task suite (the CLI prints them and exits 2)."""

from pg2edge.errors import Pg2EdgeError


class DataError(Pg2EdgeError, ValueError):
    """A suite option, file or line is unusable; the message names it (file and line number for a line)."""
