"""Audio distances used by evaluation and vocoder training (16 kHz mono float tensors or arrays).

- `log_mel_l1`: mean absolute difference of midisynth's log-mel features (natural log, floor 1e-5).
- `mr_stft_distance`: multi-resolution STFT distance, averaged over three resolutions of
  (spectral convergence + L1 of log magnitudes), the common form of the loss in Parallel WaveGAN and auraloss
  (FFT sizes 1024/2048/512, hops 120/240/50, Hann windows 600/1200/240 samples).
"""

from __future__ import annotations

import numpy as np
import torch

from midisynth.audio import log_mel

STFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))  # (fft size, hop, window) samples
MAGNITUDE_FLOOR = 1e-8  # power floor before sqrt/log


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))


def _match_length(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = min(a.shape[-1], b.shape[-1])
    return a[..., :n], b[..., :n]


def stft_magnitude(audio: torch.Tensor, fft_size: int, hop: int, window: int) -> torch.Tensor:
    """Magnitude [..., fft_size // 2 + 1, frames] of a centred STFT with a Hann window."""
    spec = torch.stft(audio, fft_size, hop, window, torch.hann_window(window, device=audio.device),
                      return_complex=True)
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
