"""The feature front end shared by training, evaluation and every vocoder.

Log-mel features as magenta's MelGAN codec computes them (`music_spectrogram_diffusion/audio_codecs.py`,
classes `MelGAN` and `Audio2Mel`, TensorFlow):

- `tf.signal.stft(audio, frame_length=640, frame_step=320, fft_length=1024, window_fn=tf.signal.hann_window,
  pad_end=True)`: frame k covers samples [320k, 320k + 640) (not centred), the end is zero-padded so there are
  ceil(samples / 320) frames, each frame is weighted by a periodic Hann window and zero-padded to 1024 points;
- magnitude (`tf.abs`, not power) of the 513 bins;
- times `tf.signal.linear_to_mel_weight_matrix(128, 513, 16000, 0.0, 8000)`: HTK mel (1127 ln(1 + f / 700)),
  triangles peaking at 1 without area normalisation, the DC bin excluded (its row is zero);
- `tf.clip_by_value(1e-5, 1e8)`, natural log.

The "16 extra frames": `MelGAN.additional_frames_for_encoding = 16` ("needed to avoid numerical errors during
the mel bin matmul ... enough to produce audible pops when decoded by MelGAN"). The data pipeline
(`preprocessors.py`: `select_random_chunk`, `split_full_song`, `encode_audio`) cuts each training segment's
audio with up to 16 frames (16 x 320 samples) of the *following* audio, encodes that, then keeps only the
segment's own frames. So a segment's last frames see the real continuation of the song instead of `pad_end`'s
zeros. Frame k depends only on samples [320k, 320k + 640), so encoding a whole song once and slicing windows
from the features (what midisynth does) gives exactly those values; only the song's own end is zero-padded.

Scaling to the networks' range is magenta's `scale_features` / `scale_to_features` with min ln(1e-5), max 4.0.
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

MEL_CLIP = (1e-5, 1e8)  # mel magnitude range before the log
NUM_BINS = FFT_SIZE // 2 + 1  # 513 STFT bins, 0 Hz to 8000 Hz in steps of 15.625 Hz
# Smallest squared-window sum `istft` divides by, reached in the first 122 samples (7.6 ms) only, where the analysis
# window is below 0.32: those samples barely shape frame 0, so Griffin-Lim leaves them unconstrained and a smaller
# floor (1e-3) let them spike to 6x the signal's peak at the start of a song; 0.1 costs nothing in re-analysis L1.
OLA_FLOOR = 0.1


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 1127 ln(1 + f / 700), f in Hz."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


@functools.cache
def mel_filterbank() -> np.ndarray:
    """Mel weights [513, 128] float32, as tf.signal.linear_to_mel_weight_matrix(128, 513, 16000, 0, 8000).

    Row 0 (the DC bin) is zero; each column is a triangle on the HTK mel scale that peaks at 1.
    """
    bin_mel = hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, NUM_BINS)[1:])[:, None]  # [512, 1], DC excluded
    edges = np.linspace(hz_to_mel(MEL_FMIN), hz_to_mel(MEL_FMAX), N_MELS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # [128] each
    rising = (bin_mel - lower) / (center - lower)
    falling = (upper - bin_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))  # [512, 128]
    return np.concatenate([np.zeros((1, N_MELS)), weights]).astype(np.float32)


def num_frames(num_samples: int) -> int:
    """Feature frames for a signal of `num_samples` samples: ceil(samples / 320)."""
    return math.ceil(num_samples / HOP_LENGTH)


def _tensor_cache(maxsize: int | None = None):
    """`functools.lru_cache` for functions that build constant tensors, building them outside inference mode: a
    tensor first made during a render (`torch.inference_mode`) could not take part in training's autograd later."""

    def decorate(build):
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(build)
        def cached(*args):
            with torch.inference_mode(False):
                return build(*args)

        return cached

    return decorate


@_tensor_cache()
def hann_window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Periodic Hann window [640]: 0.5 - 0.5 cos(2 pi n / 640), as tf.signal.hann_window."""
    return torch.hann_window(WIN_LENGTH, periodic=True, dtype=dtype, device=device)


@_tensor_cache()
def mel_matrix(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`mel_filterbank()` as a tensor [513, 128] on `device`."""
    return torch.from_numpy(mel_filterbank()).to(device=device, dtype=dtype)


def _real_dtype(audio: torch.Tensor) -> torch.dtype:
    return torch.float64 if audio.dtype == torch.float64 else torch.float32


def stft(audio: torch.Tensor, hop: int = HOP_LENGTH) -> torch.Tensor:
    """Complex STFT [..., frames, 513] of audio [..., samples] with TensorFlow's pad_end framing.

    Frame k is the Hann-weighted slice [hop k, hop k + 640), zero-padded to 1024 points; there are
    ceil(samples / hop) frames (the features' hop is 320; the evaluation's attack measure uses a finer one).
    float64 input is kept in float64, anything else is computed in float32.
    """
    audio = audio.to(_real_dtype(audio))
    samples = audio.shape[-1]
    frames = math.ceil(samples / hop)
    padded = F.pad(audio, (0, (frames - 1) * hop + WIN_LENGTH - samples))
    window = hann_window(audio.device, audio.dtype)
    framed = padded.unfold(-1, WIN_LENGTH, hop) * window  # [..., frames, 640]
    return torch.fft.rfft(framed, n=FFT_SIZE)


def istft(spectrum: torch.Tensor, hop: int = HOP_LENGTH) -> torch.Tensor:
    """Least-squares inverse of `stft` at `hop`: complex [..., frames, 513] -> audio [..., frames * hop].

    Each frame's inverse FFT is cut to the 640 windowed samples, weighted by the window again, overlap-added
    and divided by the sum of squared windows (floored at OLA_FLOOR, which only the first samples reach, where the
    analysis window is small and the first samples come back attenuated, not amplified). For a spectrum that `stft`
    produced at the same hop, this returns the signal.
    """
    frames = spectrum.shape[-2]
    window = hann_window(spectrum.device, spectrum.real.dtype)
    pieces = torch.fft.irfft(spectrum, n=FFT_SIZE)[..., :WIN_LENGTH] * window  # [..., frames, 640]
    columns = pieces.reshape(-1, frames, WIN_LENGTH).transpose(1, 2)  # [batch, 640, frames]
    audio = _overlap_add(columns, hop).reshape(*pieces.shape[:-2], -1)  # [..., (frames - 1) * hop + 640]
    norm = _squared_window_sum(frames, hop, spectrum.device, spectrum.real.dtype)
    return (audio / norm)[..., : frames * hop]


def reproject(spectrum: torch.Tensor, hop: int = HOP_LENGTH) -> torch.Tensor:
    """`stft(istft(spectrum, hop), hop)`, the nearest consistent STFT (Griffin-Lim's projection), without building
    the signal.

    `hop` divides the 640-sample window into `parts` = 640 / hop blocks: signal block k (samples [hop k, hop (k + 1)))
    is the overlap of part r of frame k - r for r < parts, and frame k re-analyses blocks k to k + parts - 1. Working
    on blocks avoids the fold / pad / unfold copies (faster per Griffin-Lim iteration); equal to 2e-7.
    """
    if WIN_LENGTH % hop:
        raise ValueError(f"hop {hop} does not divide the {WIN_LENGTH}-sample window")
    parts, frames = WIN_LENGTH // hop, spectrum.shape[-2]
    real = spectrum.real.dtype
    window = hann_window(spectrum.device, real)
    pieces = torch.fft.irfft(spectrum, n=FFT_SIZE)[..., :WIN_LENGTH] * window  # [..., frames, 640]
    pieces = pieces.unflatten(-1, (parts, hop))  # [..., frames, parts, hop]
    blocks = pieces[..., 0, :].clone()  # [..., frames, hop]
    for r in range(1, min(parts, frames)):
        blocks[..., r:, :] += pieces[..., :-r, r, :]
    blocks = blocks * _inverse_block_norm(frames, hop, spectrum.device, real)
    following = F.pad(blocks, (0, 0, 0, parts - 1))  # past the signal's end, zeros (pad_end)
    framed = torch.cat([following[..., r : r + frames, :] for r in range(parts)], dim=-1) * window  # [..., frames, 640]
    return torch.fft.rfft(framed, n=FFT_SIZE)


@_tensor_cache(maxsize=8)
def _inverse_block_norm(frames: int, hop: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """1 / `_squared_window_sum` over the signal's frames * hop samples, as blocks [frames, hop]."""
    return (1.0 / _squared_window_sum(frames, hop, device, dtype)[: frames * hop]).view(frames, hop)


def _overlap_add(columns: torch.Tensor, hop: int) -> torch.Tensor:
    """Frames [batch, 640, frames] overlap-added at `hop` -> [batch, 1, 1, (frames - 1) * hop + 640]."""
    length = (columns.shape[-1] - 1) * hop + WIN_LENGTH
    return F.fold(columns, output_size=(1, length), kernel_size=(1, WIN_LENGTH), stride=(1, hop))


@_tensor_cache(maxsize=8)
def _squared_window_sum(frames: int, hop: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Overlap-added squared windows [(frames - 1) * hop + 640], floored at OLA_FLOOR."""
    squared = (hann_window(device, dtype) ** 2)[None, :, None].expand(1, WIN_LENGTH, frames)
    return _overlap_add(squared, hop).reshape(-1).clamp(min=OLA_FLOOR)


def magnitude_to_log_mel(magnitude: torch.Tensor) -> torch.Tensor:
    """|STFT| [..., frames, 513] -> natural-log mel [..., frames, 128] (mel clipped to [1e-5, 1e8])."""
    mel = magnitude @ mel_matrix(magnitude.device, magnitude.dtype)
    return torch.log(torch.clamp(mel, *MEL_CLIP))


def log_mel(audio: torch.Tensor) -> torch.Tensor:
    """Audio [..., samples] at 16 kHz -> natural-log mel features [..., ceil(samples / 320), 128].

    Batched, on the audio's device; float32 (float64 for float64 input).
    """
    if audio.shape[-1] == 0:
        return audio.new_zeros(*audio.shape[:-1], 0, N_MELS, dtype=_real_dtype(audio))
    return magnitude_to_log_mel(stft(audio).abs())


def to_network_range(features: torch.Tensor) -> torch.Tensor:
    """Log-mel features clipped to [MIN_LOG_MEL, MAX_LOG_MEL] and mapped linearly to [-1, 1]."""
    clipped = features.clamp(MIN_LOG_MEL, MAX_LOG_MEL)
    return (clipped - MIN_LOG_MEL) / (MAX_LOG_MEL - MIN_LOG_MEL) * 2.0 - 1.0


def from_network_range(x: torch.Tensor) -> torch.Tensor:
    """Network outputs in [-1, 1] mapped back to log-mel features (unclipped, as the reference pipeline)."""
    return (x + 1.0) / 2.0 * (MAX_LOG_MEL - MIN_LOG_MEL) + MIN_LOG_MEL


class NonFiniteError(ValueError):
    """Features or audio holding NaN or infinity, which are never vocoded or written; the message names which."""


def check_finite(values: np.ndarray, what: str) -> np.ndarray:
    """`values` unchanged; NonFiniteError naming `what` ("the spectrogram", "the audio") if any value is NaN or
    infinite (a model, partials model or guidance weight that overflows)."""
    if np.isfinite(values).all():
        return values
    kind = "NaN" if np.isnan(values).any() else "infinite"
    raise NonFiniteError(
        f"{what} holds {kind} values (the model's weights or its guidance weight overflow); no audio is made from it"
    )
