"""The feature front end shared by training, evaluation and every vocoder.

Log-mel as magenta's MelGAN codec computes it with TensorFlow (see the design spec §1):
`tf.signal.stft(frame_length=640, frame_step=320, fft_length=1024, pad_end=True)` with a periodic Hann window
(frames start at sample 0, the end is zero-padded, so frames = ceil(samples / 320)), magnitude, a 128-band mel
matrix as `tf.signal.linear_to_mel_weight_matrix(128, 513, 16000, 0, 8000)` (HTK mel, triangles without area
normalisation, DC bin excluded), clipped to [1e-5, 1e8], natural log.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from midisynth.constants import (
    FFT_SIZE,
    HOP_LENGTH,
    MAX_LOG_MEL,
    MEL_FMAX,
    MEL_FMIN,
    MIN_LOG_MEL,
    N_MELS,
    SAMPLE_RATE,
    WIN_LENGTH,
)

MEL_CLIP = (1e-5, 1e8)  # magnitude range before the log
NUM_BINS = FFT_SIZE // 2 + 1  # 513


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """HTK mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


@functools.cache
def mel_filterbank() -> np.ndarray:
    """Mel weight matrix [513, 128] (float32): row 0 (DC) is zero, triangles peak at 1."""
    linear_hz = np.linspace(0.0, SAMPLE_RATE / 2, NUM_BINS)[1:]  # DC excluded
    bins_mel = hz_to_mel(linear_hz)[:, None]
    edges = np.linspace(hz_to_mel(MEL_FMIN), hz_to_mel(MEL_FMAX), N_MELS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.concatenate([np.zeros((1, N_MELS)), weights]).astype(np.float32)


def num_frames(num_samples: int) -> int:
    """Frames of `log_mel` for a signal of `num_samples` samples: ceil(samples / 320)."""
    return math.ceil(num_samples / HOP_LENGTH)


@functools.cache
def _constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    window = torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float32, device=device)
    return window, torch.from_numpy(mel_filterbank()).to(device)


def stft_magnitude(audio: torch.Tensor) -> torch.Tensor:
    """|STFT| [..., frames, 513] with TensorFlow's pad_end framing (float32)."""
    audio = audio.float()
    samples = audio.shape[-1]
    frames = num_frames(samples)
    padded = F.pad(audio, (0, (frames - 1) * HOP_LENGTH + WIN_LENGTH - samples))
    window, _ = _constants(audio.device)
    framed = padded.unfold(-1, WIN_LENGTH, HOP_LENGTH) * window  # [..., frames, 640]
    return torch.fft.rfft(framed, n=FFT_SIZE).abs()


def linear_to_log_mel(magnitude: torch.Tensor) -> torch.Tensor:
    """|STFT| [..., frames, 513] -> natural-log mel [..., frames, 128]."""
    _, mel = _constants(magnitude.device)
    return torch.log(torch.clamp(magnitude @ mel, *MEL_CLIP))


def log_mel(audio: torch.Tensor) -> torch.Tensor:
    """Audio [..., samples] at 16 kHz -> natural-log mel features [..., ceil(samples / 320), 128]."""
    if audio.shape[-1] == 0:
        return audio.new_zeros(*audio.shape[:-1], 0, N_MELS)
    return linear_to_log_mel(stft_magnitude(audio))


def to_network_range(features: torch.Tensor) -> torch.Tensor:
    """Log-mel features clipped to [MIN_LOG_MEL, MAX_LOG_MEL] and mapped linearly to [-1, 1]."""
    clipped = features.clamp(MIN_LOG_MEL, MAX_LOG_MEL)
    return (clipped - MIN_LOG_MEL) / (MAX_LOG_MEL - MIN_LOG_MEL) * 2.0 - 1.0


def from_network_range(x: torch.Tensor) -> torch.Tensor:
    """Network outputs in [-1, 1] mapped back to log-mel features (no clipping, as the reference pipeline)."""
    return (x + 1.0) / 2.0 * (MAX_LOG_MEL - MIN_LOG_MEL) + MIN_LOG_MEL
