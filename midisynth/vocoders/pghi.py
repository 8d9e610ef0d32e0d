"""Phase from STFT magnitude by Phase Gradient Heuristic Integration (PGHI; Průša, Balazs & Søndergaard 2017).

For a Gaussian window exp(-pi t^2 / lambda) (t in samples), the STFT's log-magnitude s and phase phi are tied:
with the phase measured from the window's centre (x: centre in samples, w: cycles per sample),

    d phi / dx = 2 pi w + (d s / dw) / lambda,        d phi / dw = -lambda (d s / dx).

A Hann window of length L behaves like a Gaussian with lambda = 0.25645 L^2. On midisynth's grid (hop 320
samples, FFT 1024 points: frame n is at x = 320 n, bin m at w = m / 1024) that gives, per frame and per bin,

    phase step along time  = 2 pi m 320 / 1024 + (1024 * 320 / lambda) (s[n, m + 1] - s[n, m - 1]) / 2,
    phase step along freq  = -(lambda / (1024 * 320)) (s[n + 1, m] - s[n - 1, m]) / 2.

The phase is integrated (trapezoidal rule) frame by frame, as in the real-time variant (Průša & Holighaus 2017):
each loud bin takes its phase either along time, from the same bin of the previous frame, or along frequency, from
a neighbour in its own frame, whichever reaches it first when integration always continues from the loudest bin
whose phase is known (the original's max-heap). Within a frame that order joins each bin to the loud bin of the
previous frame whose path to it has the loudest quietest bin (a widest path); a doubling scan finds these paths
for all frames at once, and only the final sums go frame by frame. A run of loud bins with nothing loud before it
(an onset out of silence) starts from its loudest bin, with a random phase, and is integrated across frequency
from there, which lines up the partials of the onset. Bins more than `TOLERANCE` below the block's loudest keep
a random phase. Frames whose phase is given (a streamed block's frames shared with the previous block) are kept
and integrated from. Finally the phase is moved from the window's centre to the frame's start, where
`audio.stft` measures it (frame k starts 320 samples before its window's centre).
"""

from __future__ import annotations

import numpy as np
import torch

from midisynth.constants import FFT_SIZE, HOP_LENGTH, WIN_LENGTH

HANN_GAUSSIAN_RATIO = 0.25645  # lambda / L^2 of the Gaussian that best matches a Hann window of length L
TOLERANCE = 1e-5  # bins below this fraction of the loudest bin's magnitude get random phases
_LAMBDA = HANN_GAUSSIAN_RATIO * WIN_LENGTH**2  # samples^2


def _phase_steps(magnitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude [frames, bins] -> phase steps (radians) from each frame to the next and each bin to the next,
    [frames, bins] each, at each bin (centre-referenced phase)."""
    # Floored at the tolerance: next to silence the slope of the log-magnitude says nothing about the phase.
    log_magnitude = np.log(np.maximum(magnitude, TOLERANCE * magnitude.max() + 1e-30))
    bins = np.arange(magnitude.shape[1])
    d_bin = np.gradient(log_magnitude, axis=1) if magnitude.shape[1] > 1 else np.zeros_like(log_magnitude)
    d_frame = np.gradient(log_magnitude, axis=0) if magnitude.shape[0] > 1 else np.zeros_like(log_magnitude)
    time_step = 2 * np.pi * HOP_LENGTH * bins / FFT_SIZE + (FFT_SIZE * HOP_LENGTH / _LAMBDA) * d_bin
    frequency_step = -(_LAMBDA / (FFT_SIZE * HOP_LENGTH)) * d_frame
    return time_step, frequency_step


def _clamp(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.maximum(lo, np.minimum(x, hi))


def _widest_from_left(source: np.ndarray, level: np.ndarray) -> np.ndarray:
    """W[n, m] = max(source[n, m], min(W[n, m - 1], level[n, m - 1])), W[n, -1] = -1, for all frames at once.

    Each step is the clamp x -> clamp(x, lo, hi) with lo = source[m], hi = max(source[m], level[m - 1]); clamps
    compose into clamps, so the scan takes log2(bins) doubling steps (Hillis-Steele).
    """
    lo = source.copy()
    hi = np.maximum(source, np.pad(level[:, :-1], ((0, 0), (1, 0)), constant_values=-1.0))
    shift = 1
    while shift < source.shape[1]:
        # compose: first the clamp `shift` bins to the left (prefix so far), then this one
        lo_first, hi_first = lo[:, :-shift], hi[:, :-shift]
        lo[:, shift:], hi[:, shift:] = (_clamp(lo_first, lo[:, shift:], hi[:, shift:]),
                                        _clamp(hi_first, lo[:, shift:], hi[:, shift:]))
        shift *= 2
    return _clamp(np.full_like(lo, -1.0), lo, hi)


def pghi_phase(magnitude: torch.Tensor, generator: torch.Generator, known: torch.Tensor | None = None) -> torch.Tensor:
    """Unit phasors [frames, 513] for the STFT magnitude [frames, 513] (phase measured as `audio.stft` does).

    `known` [k, 513], k <= frames: unit phasors of the first k frames, kept and integrated from. Deterministic
    given the generator's state, which draws the phases of the quiet bins and of the runs' starting bins.
    """
    frames, bins = magnitude.shape
    device = magnitude.device
    random_angle = (2 * torch.pi * torch.rand(frames, bins, generator=generator, dtype=torch.float64)).numpy()
    if frames == 0:
        return torch.ones(0, bins, dtype=torch.complex64, device=device)
    shift = 2 * np.pi * HOP_LENGTH * np.arange(bins) / FFT_SIZE  # frame start vs window centre, per bin
    mag = magnitude.double().cpu().numpy()
    time_step, frequency_step = _phase_steps(mag)
    loud = mag >= TOLERANCE * mag.max()
    first = 0 if known is None else known.shape[0]  # frames whose phase is given
    level = np.where(loud, mag, -1.0)  # what a bin passes on along frequency; quiet bins pass nothing on
    # A loud bin may take its phase along time if the same bin of the previous frame is loud: at that level.
    previous_level = np.concatenate([np.full((1, bins), -1.0), level[:-1]])
    source = np.where(loud & (previous_level > 0), previous_level, -1.0)
    # A run of loud bins without such a source starts from its loudest bin (the first, if several).
    starts = (loud & ~np.pad(loud[:, :-1], ((0, 0), (1, 0)))).reshape(-1)
    run_of = np.cumsum(starts) - 1  # [frames * bins] index of the run of loud bins each bin is in or after
    root = np.zeros(frames * bins, bool)
    if starts.any():
        flat_starts = np.flatnonzero(starts)
        run_max = np.maximum.reduceat(level.reshape(-1), flat_starts)[run_of]
        run_sourced = (np.maximum.reduceat(source.reshape(-1), flat_starts) > 0)[run_of]
        candidates = np.flatnonzero(loud.reshape(-1) & (level.reshape(-1) == run_max) & ~run_sourced)
        _, first_of_run = np.unique(run_of[candidates], return_index=True)
        root[candidates[first_of_run]] = True
    root = root.reshape(frames, bins)
    source = np.where(root, np.inf, source)
    from_left = np.pad(np.minimum(_widest_from_left(source, level), level)[:, :-1], ((0, 0), (1, 0)),
                       constant_values=-1.0)
    from_right = np.pad(np.minimum(_widest_from_left(source[:, ::-1], level[:, ::-1]), level[:, ::-1])[:, :-1],
                        ((0, 0), (1, 0)), constant_values=-1.0)[:, ::-1]
    by_time = loud & (source >= from_left) & (source >= from_right)
    by_left = loud & ~by_time & (from_left >= from_right)
    by_right = loud & ~by_time & ~by_left
    # Offsets along frequency from each bin's anchor (the bin its chain starts from), all frames at once.
    columns = np.broadcast_to(np.arange(bins), (frames, bins))
    step_up = np.pad(0.5 * (frequency_step[:, 1:] + frequency_step[:, :-1]), ((0, 0), (1, 0)))  # m-1 -> m
    rising = np.cumsum(np.where(by_left, step_up, 0.0), axis=1)
    left_anchor = np.maximum.accumulate(np.where(by_left, 0, columns), axis=1)
    step_down = np.pad(0.5 * (frequency_step[:, 1:] + frequency_step[:, :-1]), ((0, 0), (0, 1)))  # m+1 -> m
    falling = np.cumsum(np.where(by_right, step_down, 0.0)[:, ::-1], axis=1)[:, ::-1]
    right_anchor = np.minimum.accumulate(np.where(by_right, bins - 1, columns)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(frames)[:, None]
    anchor = np.where(by_left, left_anchor, np.where(by_right, right_anchor, columns))
    offset = np.where(by_left, rising - rising[rows, left_anchor],
                      np.where(by_right, -(falling - falling[rows, right_anchor]), 0.0))
    time_average = 0.5 * (time_step + np.concatenate([time_step[:1], time_step[:-1]]))  # frame n-1 -> n
    phase = random_angle  # [frames, bins] centre-referenced, filled frame by frame
    if first:
        phase[:first] = torch.angle(known).double().cpu().numpy() + shift
    previous = phase[max(first - 1, 0)]
    for n in range(first, frames):
        base = np.where(by_time[n] & ~root[n], previous + time_average[n], random_angle[n])
        phase[n] = np.where(loud[n], base[anchor[n]] + offset[n], random_angle[n])
        previous = phase[n]
    angle = torch.from_numpy(phase - shift)
    phasors = torch.polar(torch.ones_like(angle), angle).to(device=device, dtype=torch.complex64)
    if first:
        phasors[:first] = known
    return phasors
