"""Playing audio as it renders, as FluidSynth and TiMidity play a MIDI file.

The render runs in the calling thread and puts its chunks in a buffer; the output (a sound card, `jobs.sound_card`)
takes blocks from the buffer in a thread of its own, at its own pace. Playback starts as soon as PREROLL_SECONDS
are buffered (the bundled model's first chunk is 4.5 s of audio), and the render waits while AHEAD_SECONDS are,
so a long song holds a bounded amount of audio. Should the render fall behind, the output plays silence for what
is missing: the song goes on after a gap, which is counted (an underrun) rather than fatal. Ctrl-C (or any
exception) stops the output at once; nothing is left running.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from midisynth.audio import check_finite
from midisynth.jobs.output import resample_stream

if TYPE_CHECKING:
    from midisynth.render.pipeline import RenderOptions, Synthesizer
    from midisynth.score.midi import Song

PREROLL_SECONDS = 0.5  # audio buffered before playback starts
AHEAD_SECONDS = 30.0  # the most audio the render gets ahead of playback
POLL_SECONDS = 0.1  # waits end this often, so a signal is handled even if it reached another thread


class AudioOutput(Protocol):
    """Where the audio goes. Once started, the output calls `fill(block)` from a thread of its own for every block
    it is about to play: `fill` writes the next len(block) samples (float32, mono, at `sample_rate` Hz) into it."""

    sample_rate: int  # Hz

    @property
    def active(self) -> bool:
        """Whether it is (still) calling `fill`."""

    def start(self, fill: Callable[[np.ndarray], None]) -> None:
        """Start playing, taking the audio from `fill`."""

    def stop(self, drain: bool) -> None:
        """Stop calling `fill`: with `drain`, once the blocks it has filled have played; else at once."""


class PlaybackError(RuntimeError):
    """The output stopped playing before the song ended."""


@dataclass(frozen=True)
class PlaybackReport:
    sample_rate: int  # Hz
    samples: int  # of the song played
    start_seconds: float  # from the call until playback started
    underruns: int  # times playback caught up with the render before the song ended
    silence_seconds: float  # played in the song's place while the render was behind
    min_headroom_seconds: float | None  # least audio buffered ahead of playback while the render went on (None:
    # the render had finished before playback began)

    @property
    def warning(self) -> str | None:
        """What was heard that is not the song, if anything: the gaps where the render fell behind."""
        if not self.underruns:
            return None
        return (
            f"playback ran out of rendered audio {self.underruns} time{'s' * (self.underruns != 1)} "
            f"({self.silence_seconds:.1f} s of silence in all): rendering is slower than real time here; "
            "fewer --steps, another --precision, or `midisynth render` to a file plays without gaps"
        )


class _Buffer:
    """The audio between the render and the output, and the account of how far the render is ahead."""

    def __init__(self):
        self.changed = threading.Condition()
        self._blocks: deque[np.ndarray] = deque()
        self._offset = 0  # samples of _blocks[0] already played
        self.buffered = 0  # samples
        self.total = 0  # samples put
        self.finished = False  # the render has put its last chunk
        self.underruns = 0
        self.silence = 0  # samples
        self.min_headroom: int | None = None  # samples
        self._dry = False  # the last block came short

    def put(self, chunk: np.ndarray) -> None:
        with self.changed:
            self._blocks.append(np.asarray(chunk, np.float32))
            self.buffered += len(chunk)
            self.total += len(chunk)

    def finish(self) -> None:
        with self.changed:
            self.finished = True

    def fill(self, block: np.ndarray) -> None:
        """The output's call: the next len(block) samples, silence where there are none yet."""
        with self.changed:
            written = 0
            while written < len(block) and self._blocks:
                head = self._blocks[0]
                n = min(len(block) - written, len(head) - self._offset)
                block[written : written + n] = head[self._offset : self._offset + n]
                written, self._offset = written + n, self._offset + n
                if self._offset == len(head):
                    self._blocks.popleft()
                    self._offset = 0
            block[written:] = 0.0
            self.buffered -= written
            if not self.finished:
                short = len(block) - written
                if short and not self._dry:
                    self.underruns += 1
                self.silence += short
                self._dry = short > 0
                if self.min_headroom is None or self.buffered < self.min_headroom:
                    self.min_headroom = self.buffered
            self.changed.notify_all()

    def wait(self, until: Callable[[], bool], output: AudioOutput) -> None:
        """Wait for the output to take audio until `until()` holds; PlaybackError if the output stops first."""
        with self.changed:
            while not self.changed.wait_for(until, POLL_SECONDS):
                if not output.active:
                    raise PlaybackError("the audio output stopped before the song ended")


def play(
    chunks: Iterable[np.ndarray],
    output: AudioOutput,
    preroll_seconds: float = PREROLL_SECONDS,
    ahead_seconds: float = AHEAD_SECONDS,
) -> PlaybackReport:
    """Play `chunks` (float32 mono at `output.sample_rate` Hz) through `output` as they come; returns once the
    output has played them, and stops it at once on an exception (KeyboardInterrupt included). Playback starts
    when `preroll_seconds` are buffered or the chunks have ended; the chunks are taken while less than
    `ahead_seconds` are (at least the pre-roll)."""
    began = time.perf_counter()
    rate = output.sample_rate
    preroll, ahead = round(preroll_seconds * rate), round(max(ahead_seconds, preroll_seconds) * rate)
    buffer = _Buffer()
    started: float | None = None  # time.perf_counter() when playback started
    played = False

    def start() -> float:
        output.start(buffer.fill)
        return time.perf_counter()

    try:
        for chunk in chunks:
            if started is not None:
                buffer.wait(lambda: buffer.buffered < ahead, output)
            buffer.put(chunk)
            if started is None and buffer.buffered >= preroll:
                started = start()
        buffer.finish()
        if started is None:
            started = start()
        buffer.wait(lambda: buffer.buffered == 0, output)
        played = True
    finally:
        output.stop(drain=played)
    return PlaybackReport(
        rate,
        buffer.total,
        started - began,
        buffer.underruns,
        buffer.silence / rate,
        None if buffer.min_headroom is None else buffer.min_headroom / rate,
    )


def play_song(
    synth: Synthesizer,
    song: Song,
    output: AudioOutput,
    options: RenderOptions | None = None,
    preroll_seconds: float = PREROLL_SECONDS,
) -> PlaybackReport:
    """Render `song` with `synth` (and `options`, default the synthesizer's) and play it through `output` as it
    renders (see `play`), resampled to the output's rate. Audio holding NaN or infinity raises NonFiniteError
    (midisynth.audio) and stops the output before it is played."""
    chunks = (check_finite(chunk, "the rendered audio") for chunk in synth.stream(song, options))
    return play(resample_stream(chunks, output.sample_rate), output, preroll_seconds)
