"""Typed errors: each carries one line that names the file/key/shape at fault.

The CLI prints `error: <message>` and exits 2 for any `Pg2EdgeError`; API users
catch the specific subclass.
"""


class Pg2EdgeError(Exception):
    """Base of every error pg2edge reports to a user as one line."""


class CheckpointError(Pg2EdgeError):
    """A checkpoint file is missing, corrupt, pickled, or does not match the config."""


class TokenizerError(Pg2EdgeError):
    """A tokenizer model is missing or lacks the PaliGemma special-token layout."""


class ImageError(Pg2EdgeError):
    """An image cannot be read, is truncated, or is a decompression bomb."""
