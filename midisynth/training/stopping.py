"""Graceful stops for long jobs: while active, every terminating signal (SIGINT, SIGTERM, SIGHUP, ...) only records
itself for the job to poll between steps, so a training run stopped with Ctrl-C, `kill` or a closed terminal
finishes its step and writes its checkpoint; then `stop_if_requested` ends it with the signal's exit status."""

from __future__ import annotations

import signal

from midisynth.signals import TERMINATING_SIGNALS, Handler, Terminated


class StopSignals:
    """`with StopSignals() as stop: ... if stop.requested: break` (the previous handlers come back on exit).
    Signals ignored when it starts (nohup's SIGHUP) stay ignored."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received
        self._previous: dict[int, Handler] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _request(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> StopSignals:
        self._previous = {
            s: signal.signal(s, self._request) for s in TERMINATING_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN
        }
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def stop_if_requested(self) -> None:
        """Raise `Terminated` (exit status 128 + the signal's number) if a signal was received."""
        if self.signum is not None:
            raise Terminated(self.signum)
