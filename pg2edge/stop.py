"""SIGTERM as a stop request that cannot be lost.

A Python signal handler that raises runs its exception wherever the interpreter
happens to be; inside a garbage-collector callback or a `__del__` the exception
is printed and swallowed (seen in CI: jax's `_xla_gc_callback` ate it and the
killed convert finished with exit 0). So the handler also records the request,
and every commit point (`bundle.staging_dir` before its rename) asks
`raise_if_stopped()`: a stopped run can lose its exception but never commits.
"""

from __future__ import annotations

import signal
import threading

_requested = threading.Event()  # process-wide by nature, like the signal disposition itself


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C (finally blocks run) and be remembered by `raise_if_stopped`."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, _frame) -> None:
    _requested.set()
    raise SystemExit(128 + signum)


def raise_if_stopped() -> None:
    """Raise the SIGTERM exit now if a stop was requested and its first exception was swallowed."""
    if _requested.is_set():
        raise SystemExit(128 + signal.SIGTERM)
