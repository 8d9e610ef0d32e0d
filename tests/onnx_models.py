"""Tiny ONNX vocoders with the official MelGAN I/O, exported by the tests that need one."""

from __future__ import annotations

import pytest
import torch

from midisynth.constants import HOP_LENGTH, N_MELS

NEEDS_ONNXRUNTIME = "ONNX vocoders need onnxruntime (pip install 'midisynth[onnx]')"


class ToyMelGan(torch.nn.Module):
    """[batch, frames, 128] -> [batch, frames * 320] (or [batch, 1, frames * 320])."""

    def __init__(self, channel_axis: bool = False):
        super().__init__()
        self.channel_axis = channel_axis
        self.proj = torch.nn.Linear(N_MELS, HOP_LENGTH)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        audio = torch.tanh(self.proj(features / 10)).flatten(1)
        return audio[:, None] if self.channel_axis else audio


def export_onnx(model: torch.nn.Module, path, input_name: str = "input_features", bins: int = N_MELS):
    """Export `model` ([batch, frames, bins] -> audio) to ONNX at `path` with dynamic batch and frames; skips the
    test when onnx is not installed."""
    pytest.importorskip("onnx", reason="exporting the test model needs onnx (pip install -e '.[test]')")
    axes = {input_name: {0: "batch", 1: "frames"}}
    torch.onnx.export(
        model.eval(),
        (torch.randn(1, 50, bins),),
        str(path),
        input_names=[input_name],
        output_names=["audio"],
        dynamic_axes=axes,
        dynamo=False,
    )
    return path
