"""Graceful stops for long jobs: while active, SIGINT and SIGTERM only set a flag that the job polls between steps,
so a training run killed with Ctrl-C or `kill` finishes its step and writes its checkpoint before it exits."""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
