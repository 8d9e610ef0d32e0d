"""Audio distances used by evaluation and vocoder training (16 kHz mono float tensors or arrays).

- `log_mel_l1`: mean absolute difference of midisynth's log-mel features (natural log, floor 1e-5).
- `mr_stft_distance`: multi-resolution STFT distance, averaged over three resolutions of
  (spectral convergence + L1 of log magnitudes), the common form of the loss in Parallel WaveGAN and auraloss
  (FFT sizes 1024/2048/512, hops 120/240/50, Hann windows 600/1200/240 samples).
- `onset_correlation`: how well a render's attacks follow the reference's (onset strength on a 10 ms grid).
- `silence_level`: how loud a render is where the reference is silent (dB below the render's loudest frame).
"""

from __future__ import annotations

import numpy as np
import torch

from midisynth.audio import log_mel, mel_matrix, stft

STFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))  # (fft size, hop, window) samples
MAGNITUDE_FLOOR = 1e-8  # power floor before sqrt/log


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))


def _match_length(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = min(a.shape[-1], b.shape[-1])
    return a[..., :n], b[..., :n]


def stft_magnitude(audio: torch.Tensor, fft_size: int, hop: int, window: int) -> torch.Tensor:
    """Magnitude [..., fft_size // 2 + 1, frames] of a centred STFT with a Hann window."""
    spec = torch.stft(audio, fft_size, hop, window, torch.hann_window(window, device=audio.device), return_complex=True)
    return torch.sqrt(torch.clamp(spec.real.square() + spec.imag.square(), min=MAGNITUDE_FLOOR))


def mr_stft_distance(candidate: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT distance (differentiable; 0 for identical signals)."""
    cand, ref = _match_length(_tensor(candidate), _tensor(reference))
    total = cand.new_zeros(())
    for fft_size, hop, window in STFT_RESOLUTIONS:
        cand_mag = stft_magnitude(cand, fft_size, hop, window)
        ref_mag = stft_magnitude(ref, fft_size, hop, window)
        convergence = torch.linalg.norm(ref_mag - cand_mag) / torch.linalg.norm(ref_mag)
        log_l1 = (torch.log(ref_mag) - torch.log(cand_mag)).abs().mean()
        total = total + convergence + log_l1
    return total / len(STFT_RESOLUTIONS)


def log_mel_l1(candidate: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    """Mean |log-mel(candidate) - log-mel(reference)| over frames and bins."""
    cand, ref = _match_length(_tensor(candidate), _tensor(reference))
    return float((log_mel(cand) - log_mel(ref)).abs().mean())


def scale_to_rms(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Candidate scaled to the reference's RMS level (silence stays silence)."""
    cand_rms = float(np.sqrt(np.mean(np.square(candidate, dtype=np.float64))))
    ref_rms = float(np.sqrt(np.mean(np.square(reference, dtype=np.float64))))
    return candidate if cand_rms == 0.0 else (candidate * (ref_rms / cand_rms)).astype(np.float32)


# -- attacks and silence ---------------------------------------------------------------------------------------------------
ONSET_HOP = 160  # samples: the 10 ms grid of the attack and silence measures
ONSET_RANGE = (
    8.0  # natural-log units kept below each signal's peak log-mel (about 70 dB): the noise floor adds no onsets
)
ONSET_MAX_LAG = 2  # frames of the 10 ms grid either way (a render on the 50 frames/s grid may land 20 ms off)
SILENT_BELOW_DB = 60.0  # a reference frame is silent this far below its loudest frame
MIN_SILENT_FRAMES = 10  # fewer silent reference frames than this: no silence score


def fine_log_mel(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Natural-log mel magnitude [frames, 128] on the 10 ms grid: the front end's window (Hann, 640 samples, FFT 1024,
    mel filters) at a hop of ONSET_HOP samples, frames from sample 0, the end zero-padded; clipped to the
    ONSET_RANGE below the signal's peak."""
    x = _tensor(audio).double()
    mel = stft(x, hop=ONSET_HOP).abs() @ mel_matrix(x.device, x.dtype)
    logged = torch.log(mel.clamp(min=1e-12))
    return logged.clamp(min=float(logged.max()) - ONSET_RANGE)


def onset_strength(audio: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per 10 ms frame [frames - 1]: the half-wave-rectified rise of `fine_log_mel` from the frame before, summed
    over the mel bins."""
    rise = fine_log_mel(audio).diff(dim=0).clamp(min=0.0)
    return rise.sum(dim=1).numpy()


def onset_correlation(candidate: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """(Pearson correlation of the two signals' onset strengths, lag in 10 ms frames): the best over lags of
    -ONSET_MAX_LAG..+ONSET_MAX_LAG, a positive lag meaning the candidate's onsets come late. NaN (lag 0) where
    either signal has no onsets."""
    cand, ref = onset_strength(candidate), onset_strength(reference)
    n = min(cand.shape[0], ref.shape[0])
    cand, ref = cand[:n], ref[:n]
    best, best_lag = -np.inf, 0
    for lag in range(-ONSET_MAX_LAG, ONSET_MAX_LAG + 1):
        a = cand[max(lag, 0) : n + min(lag, 0)]
        b = ref[max(-lag, 0) : n - max(lag, 0)]
        if a.std() == 0.0 or b.std() == 0.0:
            continue
        value = float(np.corrcoef(a, b)[0, 1])
        if value > best:
            best, best_lag = value, lag
    return (best, best_lag) if np.isfinite(best) else (float("nan"), 0)


def frame_energy_db(audio: np.ndarray) -> np.ndarray:
    """Energy (mean square) of each 10 ms block of samples [blocks], in dB; digital silence is -200 dB."""
    x = np.asarray(audio, dtype=np.float64)
    blocks = x[: x.shape[0] // ONSET_HOP * ONSET_HOP].reshape(-1, ONSET_HOP)
    return 10.0 * np.log10(np.maximum(np.mean(blocks**2, axis=1), 1e-20))


def silence_level(candidate: np.ndarray, reference: np.ndarray) -> float | None:
    """The candidate's mean energy over the reference's silent 10 ms frames (more than SILENT_BELOW_DB below the
    reference's loudest), in dB relative to the candidate's own loudest frame; None where the reference has fewer
    than MIN_SILENT_FRAMES silent frames."""
    ref_db, cand_db = frame_energy_db(reference), frame_energy_db(candidate)
    n = min(ref_db.shape[0], cand_db.shape[0])
    silent = ref_db[:n] < ref_db.max() - SILENT_BELOW_DB
    if silent.sum() < MIN_SILENT_FRAMES:
        return None
    mean_energy = np.mean(10.0 ** (cand_db[:n][silent] / 10.0))
    return float(10.0 * np.log10(max(mean_energy, 1e-20)) - cand_db.max())
