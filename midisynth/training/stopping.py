"""Stopping on signals.

- `StopSignals`, for long jobs: while active, SIGINT and SIGTERM only set a flag that the job polls between steps,
  so a training run killed with Ctrl-C or `kill` finishes its step and writes its checkpoint before it exits.
- `exit_on_signals`, for commands that write outputs: every terminating signal (SIGTERM, SIGHUP, ...) raises
  `Terminated`, so the code being run unwinds, and temporary files are deleted, as for Ctrl-C; the process then
  exits with the shell's status for a signal, 128 + its number.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Signals whose default action ends the process and that a program may catch. SIGPIPE is left alone (Python ignores
# it: a closed pipe is a write error), as is SIGXFSZ (ignored by Python: a file size limit is a write error).
TERMINATING_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM",
                                       "SIGVTALRM", "SIGPROF", "SIGXCPU", "SIGPWR") if hasattr(signal, name))


class StopSignals:
    """`with StopSignals() as stop: ... if stop.requested: break` (the previous handlers come back on exit)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _request(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> StopSignals:
        self._previous = {s: signal.signal(s, self._request) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class Terminated(SystemExit):
    """Raised by a terminating signal under `exit_on_signals`; exits with status 128 + the signal's number when
    nothing catches it."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


@contextmanager
def exit_on_signals() -> Iterator[None]:
    """While active, every terminating signal raises `Terminated` in the main thread (the previous handlers come
    back on exit). Signals ignored when the block starts (nohup's SIGHUP) stay ignored."""
    previous = {}
    for s in TERMINATING_SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            previous[s] = signal.signal(s, _raise_terminated)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
