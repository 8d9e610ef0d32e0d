"""Phase from STFT magnitude by Phase Gradient Heuristic Integration (PGHI; Průša, Balazs & Søndergaard 2017).

For a Gaussian window exp(-pi t^2 / lambda) (t in samples), the STFT's log-magnitude s and phase phi are tied:
with the phase measured from the window's centre (x: centre in samples, w: cycles per sample),

    d phi / dx = 2 pi w + (d s / dw) / lambda,        d phi / dw = -lambda (d s / dx).

A Hann window of length L behaves like a Gaussian with lambda = 0.25645 L^2. On a grid of hop a samples and
1024-point FFTs (frame n is at x = a n, bin m at w = m / 1024) that gives, per frame and per bin,

    phase step along time  = 2 pi m a / 1024 + (1024 a / lambda) (s[n, m + 1] - s[n, m - 1]) / 2,
    phase step along freq  = -(lambda / (1024 a)) (s[n + 1, m] - s[n - 1, m]) / 2.

At the features' hop (a = 320: each 640-sample window overlaps only its two neighbours) the heuristic lines up the
partials poorly; the Griffin-Lim vocoder integrates on a finer grid (see `vocoders.vocoder.GriffinLim`).

The phase is integrated (trapezoidal rule) frame by frame, as in the real-time variant (Průša & Holighaus 2017):
each loud bin takes its phase either along time, from the same bin of the previous frame, or along frequency, from
a neighbour in its own frame, whichever reaches it first when integration always continues from the loudest bin
whose phase is known (the original's max-heap). Within a frame that order joins each bin to the loud bin of the
previous frame whose path to it has the loudest quietest bin (a widest path); a scan along the bins finds these
paths for all frames at once, and only the final sums go frame by frame. A run of loud bins with nothing loud before it
(an onset out of silence) starts from its loudest bin, with a random phase, and is integrated across frequency
from there, which lines up the partials of the onset. Bins more than `TOLERANCE` below the block's loudest keep
a random phase. Frames whose phase is given (a streamed block's frames shared with the previous block) are kept
and integrated from. Finally the phase is moved from the window's centre to the frame's start, where
`audio.stft` measures it (a frame starts 320 samples, half its window, before its centre).
"""

from __future__ import annotations

import numpy as np
import torch

from midisynth.constants import FFT_SIZE, HOP_LENGTH, WIN_LENGTH

HANN_GAUSSIAN_RATIO = 0.25645  # lambda / L^2 of the Gaussian that best matches a Hann window of length L
TOLERANCE = 1e-5  # bins below this fraction of the loudest bin's magnitude get random phases
_LAMBDA = HANN_GAUSSIAN_RATIO * WIN_LENGTH**2  # samples^2


def _phase_steps(magnitude: np.ndarray, peak: float, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude [frames, bins] at `hop` samples per frame (`peak`: the block's largest) -> phase steps (radians)
    from each frame to the next and each bin to the next, [frames, bins] each, at each bin (centre-referenced
    phase), in the magnitude's dtype."""
    # Floored at the tolerance: next to silence the slope of the log-magnitude says nothing about the phase.
    log_magnitude = np.log(np.maximum(magnitude, TOLERANCE * peak + 1e-30))
    bins = np.arange(magnitude.shape[1], dtype=magnitude.dtype)
    d_bin = np.gradient(log_magnitude, axis=1) if magnitude.shape[1] > 1 else np.zeros_like(log_magnitude)
    d_frame = np.gradient(log_magnitude, axis=0) if magnitude.shape[0] > 1 else np.zeros_like(log_magnitude)
    time_step = 2 * np.pi * hop * bins / FFT_SIZE + (FFT_SIZE * hop / _LAMBDA) * d_bin
    frequency_step = -(_LAMBDA / (FFT_SIZE * hop)) * d_frame
    return time_step, frequency_step


def _arriving_from_left(source: np.ndarray, level: np.ndarray) -> np.ndarray:
    """A[n, m] = min(W[n, m - 1], level[n, m - 1]), A[n, 0] = -1, where W[n, m] = max(source[n, m], A[n, m]): the
    level of the widest path that reaches bin m of frame n from the bins below it, for all frames at once.

    A scan along the bins, each step one vectorised max / min over the frames (bins as rows, so each step reads
    contiguous memory).
    """
    source_rows, level_rows = np.ascontiguousarray(source.T), np.ascontiguousarray(level.T)  # [bins, frames]
    arriving = np.empty_like(source_rows)
    arriving[0] = -1.0
    widest = np.empty(source_rows.shape[1], dtype=source_rows.dtype)  # W[m - 1]
    for m in range(1, source_rows.shape[0]):
        np.maximum(source_rows[m - 1], arriving[m - 1], out=widest)
        np.minimum(widest, level_rows[m - 1], out=arriving[m])
    return arriving.T


def _starting_bins(loud: np.ndarray, level: np.ndarray, source: np.ndarray) -> np.ndarray:
    """[frames, bins] bool: in each run of loud bins of a frame with no source (no loud bin before it in time),
    the loudest bin (the first, if several)."""
    frames, bins = loud.shape
    starts = (loud & ~np.pad(loud[:, :-1], ((0, 0), (1, 0)))).reshape(-1)
    start = np.zeros(frames * bins, bool)
    if starts.any():
        run_of = np.cumsum(starts) - 1  # [frames * bins] the run each bin is in (or follows, if quiet)
        run_starts = np.flatnonzero(starts)
        run_max = np.maximum.reduceat(level.reshape(-1), run_starts)[run_of]
        run_sourced = (np.maximum.reduceat(source.reshape(-1), run_starts) > 0)[run_of]
        candidates = np.flatnonzero(loud.reshape(-1) & (level.reshape(-1) == run_max) & ~run_sourced)
        _, first_of_run = np.unique(run_of[candidates], return_index=True)
        start[candidates[first_of_run]] = True
    return start.reshape(frames, bins)


def _frequency_chains(
    source: np.ndarray, level: np.ndarray, loud: np.ndarray, frequency_step: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How each bin of each frame gets its phase: (by_time [frames, bins] bool: from the previous frame; anchor
    [frames, bins] int64: the bin of the same frame whose phase it continues along frequency (itself if by time);
    offset [frames, bins]: the phase added from the anchor to it, radians). Whole-array steps run in torch, on its
    threads (several times numpy's speed at this size)."""
    frames, bins = loud.shape
    source_t, loud_t, step_t = torch.from_numpy(source), torch.from_numpy(loud), torch.from_numpy(frequency_step)
    from_below = torch.from_numpy(_arriving_from_left(source, level))
    from_above = torch.from_numpy(_arriving_from_left(source[:, ::-1], level[:, ::-1])).flip(1)
    by_time = loud_t & (source_t >= from_below) & (source_t >= from_above)
    by_below = loud_t & ~by_time & (from_below >= from_above)
    by_above = loud_t & ~by_time & ~by_below
    columns = torch.arange(bins).expand(frames, bins)
    zero = step_t.new_zeros(frames, 1)
    step = 0.5 * (step_t[:, 1:] + step_t[:, :-1])  # [frames, bins - 1] bin m -> m + 1
    rising = torch.cumsum(torch.where(by_below, torch.cat([zero, step], dim=1), 0.0), dim=1)
    below_anchor = torch.cummax(torch.where(by_below, 0, columns), dim=1).values
    falling = torch.cumsum(torch.where(by_above, torch.cat([step, zero], dim=1), 0.0).flip(1), dim=1).flip(1)
    above_anchor = torch.cummin(torch.where(by_above, bins - 1, columns).flip(1), dim=1).values.flip(1)
    anchor = torch.where(by_below, below_anchor, torch.where(by_above, above_anchor, columns))
    offset = torch.where(
        by_below,
        rising - rising.gather(1, below_anchor),
        torch.where(by_above, falling.gather(1, above_anchor) - falling, 0.0),
    )
    return by_time, anchor, offset


def pghi_phase(
    magnitude: torch.Tensor, generator: torch.Generator, known: torch.Tensor | None = None, hop: int = HOP_LENGTH
) -> torch.Tensor:
    """Unit phasors [frames, 513] for the STFT magnitude [frames, 513] at `hop` samples per frame (phase measured
    as `audio.stft` does).

    `known` [k, 513], k <= frames: unit phasors of the first k frames, kept and integrated from. Deterministic
    given the generator's state, which draws the phases of the quiet bins and of the runs' starting bins.
    """
    frames, bins = magnitude.shape
    device = magnitude.device
    random_angle = (2 * torch.pi * torch.rand(frames, bins, generator=generator)).numpy()
    if frames == 0:
        return torch.ones(0, bins, dtype=torch.complex64, device=device)
    first = 0 if known is None else known.shape[0]  # frames whose phase is given
    lead = max(first - 1, 0)  # the given frames before it take no part; it is integrated from
    shift = 2 * np.pi * (WIN_LENGTH // 2) * np.arange(bins) / FFT_SIZE  # frame start vs window centre, per bin
    whole = magnitude.float().cpu().numpy()  # float32: the steps' rounding (3e-5 rad) is far below what matters
    peak = whole.max()
    mag, random_angle = whole[lead:], random_angle[lead:]  # [rows, bins]: frames lead, lead + 1, ...
    time_step, frequency_step = _phase_steps(mag, peak, hop)
    loud = mag >= TOLERANCE * peak
    level = np.where(loud, mag, -1.0)  # what a bin passes on along frequency; quiet bins pass nothing on
    # A loud bin may take its phase along time if the same bin of the previous frame is loud: at that level. All in
    # the magnitude's dtype: the widest-path scans over mixed dtypes cast on every step.
    previous_level = np.concatenate([np.full((1, bins), -1.0, level.dtype), level[:-1]])
    source = np.where(loud & (previous_level > 0), previous_level, -1.0)
    start = _starting_bins(loud, level, source)
    by_time, anchor, offset = _frequency_chains(np.where(start, np.inf, source), level, loud, frequency_step)
    from_previous = by_time & ~torch.from_numpy(start)
    time_average = 0.5 * (time_step + np.concatenate([time_step[:1], time_step[:-1]]))  # frame n-1 -> n
    # Frame n's phase, gathered: phase[n] = (phase[n - 1, chained] + step) + offset, where a bin that does not
    # continue the previous frame gathers column `bins`, always 0 (so a quiet bin gets its random phase, a run
    # continued along frequency from a bin without a previous frame its anchor's random phase plus the offset).
    loud_t, random_t = torch.from_numpy(loud), torch.from_numpy(random_angle)
    continues = loud_t & from_previous.gather(1, anchor)
    chained = torch.where(continues, anchor, bins).numpy()  # [rows, bins]
    step = torch.where(
        continues,
        torch.from_numpy(time_average).gather(1, anchor),
        torch.where(loud_t, random_t.gather(1, anchor), random_t),
    ).numpy()
    anchors = anchor.numpy()
    offsets = torch.where(loud_t, offset, 0.0).numpy()
    phase = np.zeros((mag.shape[0], bins + 1))  # centre-referenced, filled frame by frame; the last column stays 0
    given = first - lead  # 1 if the first row's phase is given, else 0
    if known is not None and given:
        phase[0, :bins] = torch.angle(known[-1]).double().cpu().numpy() + shift
    else:  # frame 0 has no previous frame: each run of loud bins from its starting bin
        phase[0, :bins] = np.where(loud[0], random_angle[0][anchors[0]] + offsets[0], random_angle[0])
    step, offsets = step.astype(np.float64), offsets.astype(np.float64)  # the loop's operands all of one dtype
    for n in range(1, mag.shape[0]):
        np.add(phase[n - 1].take(chained[n]) + step[n], offsets[n], out=phase[n, :bins])
    # Wrapped in float64 first: the integrated phases grow to 1e5 radians, beyond float32's resolution.
    angle = torch.remainder(torch.from_numpy(phase[given:, :bins] - shift), 2 * torch.pi).float()
    phasors = torch.empty(frames, bins, dtype=torch.complex64, device=device)
    phasors[first:] = torch.polar(torch.ones_like(angle), angle).to(device)
    if known is not None:
        phasors[:first] = known
    return phasors
