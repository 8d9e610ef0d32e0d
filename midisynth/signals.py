"""Ending a command cleanly on any terminating signal.

Under `exit_on_signals`, every signal whose default action ends the process (SIGTERM, SIGHUP, SIGINT, ...) raises
`Terminated`, so the code being run unwinds and deletes its temporary files, as for Ctrl-C; uncaught, it exits with
the shell's status for a signal, 128 + its number. A signal that arrived while C code runs a Python callback (the
audio writer's libsndfile does) would raise inside that callback, where the exception is lost: such calls run
under `signals_deferred`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

# Signals whose default action ends the process and that a program may catch. SIGPIPE is left alone (Python ignores
# it: a closed pipe is a write error), as is SIGXFSZ (ignored by Python: a file size limit is a write error).
TERMINATING_SIGNALS = tuple(
    getattr(signal, name)
    for name in (
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGTERM",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGVTALRM",
        "SIGPROF",
        "SIGXCPU",
        "SIGPWR",
    )
    if hasattr(signal, name)
)
# What signal.signal takes and returns: a function, SIG_DFL or SIG_IGN, or None (a handler not set from Python).
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


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
def signals_deferred() -> Iterator[None]:
    """Hold terminating signals back for the block (C code calling back into Python); they arrive after it."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATING_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


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
