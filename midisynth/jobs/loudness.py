"""Loudness normalisation to a target integrated loudness (ITU-R BS.1770-4, the measure behind EBU R 128 and the
loudness targets of streaming services, in LUFS).

Integrated loudness needs the whole song, and audio is generated window by window, so normalising takes two
passes: while rendering, `LoudnessMeter` measures the stream (its memory is one number per 100 ms of audio); then
the rendered audio is copied with one gain through a look-ahead peak limiter (`limited_blocks`) that keeps every
sample within `PEAK_CEILING_DBFS` instead of clipping. What the limiter takes off (loud spikes carry much of the
measured loudness) is made up by `normalization`, which measures the limited audio in read-only rounds and
corrects the gain; where the limiter cannot reach the target, `Normalization.warning` says what was reached.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midisynth.extras import import_extra

BLOCK_HOPS = 4  # a 400 ms gating block is 4 hops of 100 ms (75 % overlap)
HOP_SECONDS = 0.1
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
LOUDNESS_OFFSET_DB = -0.691  # BS.1770: loudness = -0.691 + 10 log10(mean square of K-weighted audio)
PEAK_CEILING_DBFS = -1.0  # normalised audio's sample peak stays at or below this
LIMITER_WINDOW_SECONDS = 0.01  # the limiter's gain dips over 1.5 windows before and after a peak
TOLERANCE_LU = 0.5  # a result this close to the target needs no warning
CORRECTION_LU = 0.1  # `normalization` corrects the gain until the limited result is this close...
CORRECTION_ROUNDS = 4  # ...or this many measurements of the limited audio have been made


class LoudnessMeter:
    """Integrated loudness (LUFS) of mono audio fed in chunks, as pyloudnorm measures the whole."""

    def __init__(self, sample_rate: int):
        pyloudnorm = import_extra("pyloudnorm", "loudness", "--loudness")
        from scipy.signal import lfilter  # a dependency of pyloudnorm

        self._lfilter = lfilter
        # K-weighting: a +4 dB high shelf at 1.5 kHz, then a 38 Hz high pass (pyloudnorm's design of BS.1770-4's).
        stages = [
            pyloudnorm.IIRfilter(4.0, 1 / math.sqrt(2), 1500.0, sample_rate, "high_shelf"),
            pyloudnorm.IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass"),
        ]
        self._filters = [(stage.b, stage.a) for stage in stages]
        self._states = [np.zeros(len(a) - 1) for _, a in self._filters]
        self._hop_samples = round(HOP_SECONDS * sample_rate)
        self._pending = np.zeros(0)  # squared K-weighted samples of the unfinished hop
        self._hop_energies: list[float] = []  # sum of squared K-weighted samples per 100 ms hop

    def add(self, chunk: np.ndarray) -> None:
        """Measure the next chunk of samples."""
        weighted = np.asarray(chunk, np.float64)
        for stage, (b, a) in enumerate(self._filters):
            weighted, self._states[stage] = self._lfilter(b, a, weighted, zi=self._states[stage])
        squares = np.concatenate([self._pending, weighted * weighted])
        whole = len(squares) // self._hop_samples * self._hop_samples
        self._hop_energies.extend(squares[:whole].reshape(-1, self._hop_samples).sum(axis=1).tolist())
        self._pending = squares[whole:]

    def metered(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The same chunks, each measured as it passes."""
        for chunk in chunks:
            self.add(chunk)
            yield chunk

    def integrated_lufs(self) -> float:
        """Gated integrated loudness so far in LUFS; -inf for silence or under 400 ms of audio."""
        hops = np.asarray(self._hop_energies)
        if len(hops) < BLOCK_HOPS:
            return -math.inf
        mean_squares = np.convolve(hops, np.ones(BLOCK_HOPS), "valid") / (BLOCK_HOPS * self._hop_samples)
        with np.errstate(divide="ignore"):
            block_lufs = LOUDNESS_OFFSET_DB + 10 * np.log10(mean_squares)
        audible = block_lufs >= ABSOLUTE_GATE_LUFS
        if not audible.any():
            return -math.inf
        relative_gate = LOUDNESS_OFFSET_DB + 10 * math.log10(mean_squares[audible].mean()) + RELATIVE_GATE_LU
        gated = mean_squares[audible & (block_lufs > relative_gate)]
        return LOUDNESS_OFFSET_DB + 10 * math.log10(gated.mean())


@dataclass(frozen=True)
class Normalization:
    """The gain that takes audio to a target loudness through the peak limiter, and the loudness reached."""

    target_lufs: float
    measured_lufs: float  # before any gain; -inf: silent, left at its level
    gain_db: float
    reached_lufs: float  # of the limited audio at `gain_db`

    @property
    def gain(self) -> float:
        """Linear amplitude factor."""
        return 10 ** (self.gain_db / 20)

    @property
    def warning(self) -> str | None:
        """Why the result misses the target, if it does."""
        if math.isinf(self.measured_lufs):
            return "too quiet to measure loudness (silent or under 0.4 s); left at its level"
        if abs(self.reached_lufs - self.target_lufs) > TOLERANCE_LU:
            return (
                f"reached {self.reached_lufs:.1f} LUFS, not {self.target_lufs:g}: the peak limiter (ceiling "
                f"{PEAK_CEILING_DBFS:g} dBFS) allows no more"
            )
        return None


def normalization(path: Path, measured_lufs: float, target_lufs: float) -> Normalization:
    """The gain for the audio in `path` (measured at `measured_lufs`) to reach `target_lufs` through the limiter:
    target minus measured, corrected by what the limiter takes off, measured on the limited audio (read only)."""
    if math.isinf(measured_lufs):
        return Normalization(target_lufs, measured_lufs, 0.0, measured_lufs)
    import soundfile as sf

    sample_rate = sf.info(path).samplerate
    gain_db = target_lufs - measured_lufs
    for _ in range(CORRECTION_ROUNDS):
        meter = LoudnessMeter(sample_rate)
        for block in limited_blocks(path, 10 ** (gain_db / 20)):
            meter.add(block)
        reached_lufs = meter.integrated_lufs()
        if abs(reached_lufs - target_lufs) <= CORRECTION_LU:
            break
        gain_db += target_lufs - reached_lufs
    return Normalization(target_lufs, measured_lufs, gain_db, reached_lufs)


def limited_blocks(path: Path, gain: float, block_samples: int = 1 << 16) -> Iterator[np.ndarray]:
    """The audio of a sound file (float32 blocks) times `gain`, with no sample above PEAK_CEILING_DBFS.

    The limiter's gain at each sample is the least gain any sample within one window needs, averaged over one
    window: it starts to fall a window ahead of a peak, never jumps, and is 1 away from peaks. Each
    block is read with two windows of context on each side, so the result does not depend on the block size.
    """
    import soundfile as sf
    from scipy.ndimage import minimum_filter1d, uniform_filter1d  # a dependency of pyloudnorm

    ceiling = 10 ** (PEAK_CEILING_DBFS / 20)
    with sf.SoundFile(path) as f:
        window = round(LIMITER_WINDOW_SECONDS * f.samplerate)
        for start in range(0, f.frames, block_samples):
            first, last = max(0, start - 2 * window), min(f.frames, start + block_samples + 2 * window)
            f.seek(first)
            audio = f.read(last - first, dtype="float32") * np.float32(gain)
            needed = np.minimum(1.0, ceiling / np.maximum(np.abs(audio), 1e-30))
            smooth = uniform_filter1d(
                minimum_filter1d(needed, 2 * window + 1, mode="nearest"), window + 1, mode="nearest"
            )
            yield (audio * smooth)[start - first : start - first + min(block_samples, f.frames - start)]
