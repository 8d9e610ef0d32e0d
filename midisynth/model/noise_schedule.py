"""The diffusion process's noise schedule: the continuous cosine log-SNR schedule over noise time t in [0, 1], and
the quantities that training, the decoder and the samplers define on it.

x0 is clean data and z_t = alpha_t x0 + sigma_t eps the noised data at time t (alpha² + sigma² = 1); the decoder
predicts eps or v = alpha_t eps - sigma_t x0 (`ModelConfig.prediction`). Tensors are in network range, [batch, ...]
with one time per batch row.
"""

from __future__ import annotations

import math

import torch

LOGSNR_MIN, LOGSNR_MAX = -20.0, 20.0
_B = math.atan(math.exp(-0.5 * LOGSNR_MAX))
_A = math.atan(math.exp(-0.5 * LOGSNR_MIN)) - _B


def logsnr_schedule(t: torch.Tensor) -> torch.Tensor:
    """logSNR(t) = -2 ln tan(a t + b): +20 at t = 0, -20 at t = 1 (clipped there against float rounding)."""
    return (-2.0 * torch.log(torch.tan(_A * t + _B))).clamp(LOGSNR_MIN, LOGSNR_MAX)


def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise scales: alpha² = sigmoid(logSNR), sigma² = sigmoid(-logSNR)."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def _per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def q_sample(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t = alpha_t x0 + sigma_t eps for per-row times t [batch]."""
    alpha, sigma = alpha_sigma(logsnr_schedule(t.float()))
    return _per_row(alpha, x0) * x0 + _per_row(sigma, x0) * eps


def v_target(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v = alpha_t eps - sigma_t x0 (Salimans & Ho 2022) for per-row times t [batch]."""
    alpha, sigma = alpha_sigma(logsnr_schedule(t.float()))
    return _per_row(alpha, x0) * eps - _per_row(sigma, x0) * x0


def eps_from_v(z: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ε = sigma_t z + alpha_t v: turns a v-predicting decoder into the ε-denoiser the samplers expect."""
    alpha, sigma = alpha_sigma(logsnr_schedule(t.float()))
    return _per_row(sigma, z) * z + _per_row(alpha, z) * v
