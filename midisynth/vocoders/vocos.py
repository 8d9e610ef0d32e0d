"""A small Vocos-style neural vocoder: ConvNeXt backbone at frame rate, inverse-STFT head.

All heavy compute runs at 50 frames/s; the head predicts a log magnitude and a phase per STFT bin, and an
inverse STFT (hop 320 samples) makes the 16 kHz waveform. Input is midisynth's log-mel features.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from midisynth.constants import HOP_LENGTH, MAX_LOG_MEL, MIN_LOG_MEL, N_MELS


@dataclass(frozen=True)
class VocosConfig:
    dim: int = 256  # backbone channels
    intermediate_dim: int = 768  # ConvNeXt MLP width
    num_layers: int = 8
    kernel_size: int = 7  # frames
    fft_size: int = 1280  # samples (4 hops)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def receptive_field(self) -> int:
        """Frames of context each output frame sees on either side."""
        return (self.num_layers + 1) * (self.kernel_size // 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [batch, dim, frames]
        h = self.dwconv(x).transpose(1, 2)  # [batch, frames, dim]
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class Vocos(nn.Module):
    """log-mel [batch, frames, 128] -> audio [batch, frames * 320] at 16 kHz."""

    window: torch.Tensor  # [fft_size] Hann window of the inverse STFT (a buffer)

    def __init__(self, cfg: VocosConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Conv1d(N_MELS, cfg.dim, cfg.kernel_size, padding=cfg.kernel_size // 2)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        scale = 1.0 / cfg.num_layers
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.intermediate_dim, cfg.kernel_size, scale) for _ in range(cfg.num_layers)
        )
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.fft_size + 2)  # log-magnitude and phase per bin
        self.register_buffer("window", torch.hann_window(cfg.fft_size), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        frames = features.shape[1]
        x = (features.clamp(MIN_LOG_MEL, MAX_LOG_MEL) - MIN_LOG_MEL) / (MAX_LOG_MEL - MIN_LOG_MEL)  # [0, 1]
        x = self.embed(x.transpose(1, 2))  # [batch, dim, frames]
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        h = self.head(self.final_norm(x.transpose(1, 2))).float()  # [batch, frames, fft_size + 2]
        log_mag, phase = h.transpose(1, 2).chunk(2, dim=1)  # [batch, bins, frames] each
        spec = torch.polar(torch.exp(log_mag.clamp(max=7.0)), phase)
        audio = torch.istft(
            spec, self.cfg.fft_size, HOP_LENGTH, self.cfg.fft_size, self.window, center=True, length=frames * HOP_LENGTH
        )
        # Feature frame k covers samples [320k, 320k + 640), centred at 320k + 320; the centred inverse STFT
        # puts frame k at 320k: shift by half a window of the analysis (one hop).
        return F.pad(audio, (HOP_LENGTH, 0))[..., : frames * HOP_LENGTH]
