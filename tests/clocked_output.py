"""A stand-in for a sound card (`midisynth.jobs.play.AudioOutput`) for tests and benchmarks: it plays nowhere, at
real-time pace or `speed` times faster, and records every block it is given with the time it asked for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from midisynth.constants import SAMPLE_RATE


class ClockedOutput:
    def __init__(self, sample_rate: int = SAMPLE_RATE, block_size: int = 1024, speed: float = 1.0):
        """`block_size`: samples per block, asked for every block_size / sample_rate / speed seconds."""
        self.sample_rate, self.block_size, self.speed = sample_rate, block_size, speed
        # (time.monotonic() when filled, the same clock in every process; block)
        self.blocks: list[tuple[float, np.ndarray]] = []
        self.drained: bool | None = None  # how it was stopped; None: not yet
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def audio(self) -> np.ndarray:
        """Everything played, silence after the song's end included."""
        return np.concatenate([block for _, block in self.blocks]) if self.blocks else np.zeros(0, np.float32)

    def start(self, fill: Callable[[np.ndarray], None]) -> None:
        self._thread = threading.Thread(target=self._run, args=(fill,), name="clocked-output")
        self._thread.start()

    def _run(self, fill: Callable[[np.ndarray], None]) -> None:
        period = self.block_size / self.sample_rate / self.speed  # seconds
        due = time.monotonic()
        while not self._stopping.is_set():
            block = np.full(self.block_size, np.nan, np.float32)  # fill must write every sample
            fill(block)
            self.blocks.append((time.monotonic(), block))
            due += period
            self._stopping.wait(max(0.0, due - time.monotonic()))

    def stop(self, drain: bool) -> None:
        self.drained = drain
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()


class StandInCard(ClockedOutput):
    """A ClockedOutput in place of `midisynth.jobs.sound_card.SoundCard`, as the `play` command opens one (patch
    `sound_card.SoundCard` with it); each one opened is kept in `opened`."""

    name = "a stand-in"
    speed = 1.0  # of the cards opened
    opened: list[StandInCard] = []

    def __init__(self, device: str | None = None):
        super().__init__(speed=StandInCard.speed)
        StandInCard.opened.append(self)

    def __enter__(self) -> StandInCard:
        return self

    def __exit__(self, *exc) -> None:
        pass
