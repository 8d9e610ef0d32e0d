"""Vocoders: Griffin-Lim inversion of the front end, streaming, ONNX and the neural vocoder's file format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from midisynth.audio import log_mel
from midisynth.constants import HOP_LENGTH, SAMPLE_RATE
from midisynth.train_vocoder import save_vocoder
from midisynth.vocoders import GriffinLim, NeuralVocoder, OnnxVocoder, load_vocoder
from midisynth.vocos import Vocos, VocosConfig


def _tone(seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    harmonics = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 6))
    return (0.2 * harmonics * np.exp(-0.5 * t)).astype(np.float32)


def test_griffin_lim_inverts_the_front_end():
    features = log_mel(torch.from_numpy(_tone())).numpy()
    audio = GriffinLim(iterations=32)(features)
    assert audio.shape == (features.shape[0] * HOP_LENGTH,)
    assert np.abs(audio).max() > 0.05
    error = np.abs(log_mel(torch.from_numpy(audio)).numpy() - features).mean()
    assert error < 0.6  # measured 0.34 on this signal; random phase gives about 1.5


def test_streaming_matches_length_and_whole_signal():
    features = log_mel(torch.from_numpy(_tone(6.0))).numpy()
    vocoder = GriffinLim(iterations=16)
    whole = vocoder(features)
    chunks = [features[i : i + 70] for i in range(0, features.shape[0], 70)]
    streamed = np.concatenate(list(vocoder.stream(chunks)))
    assert streamed.shape == whole.shape
    error = np.abs(log_mel(torch.from_numpy(streamed)).numpy() - features).mean()
    assert error < 0.7


def test_neural_vocoder_round_trip_and_streaming(tmp_path):
    torch.manual_seed(0)
    model = Vocos(VocosConfig(dim=32, intermediate_dim=64, num_layers=2)).eval()
    save_vocoder(model, tmp_path / "v.safetensors")
    vocoder = load_vocoder(str(tmp_path / "v.safetensors"))
    assert isinstance(vocoder, NeuralVocoder)
    features = log_mel(torch.from_numpy(_tone(4.0))).numpy()
    with torch.no_grad():
        expected = model(torch.from_numpy(features)[None])[0].numpy()
    whole = vocoder(features)
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    # Blocks carry enough context for this receptive field: away from the seams' cross-fades the stream equals
    # the whole-signal output.
    streamed = np.concatenate(list(vocoder.stream([features[i : i + 80] for i in range(0, len(features), 80)])))
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed[: 40 * HOP_LENGTH], whole[: 40 * HOP_LENGTH], atol=1e-5)


def test_onnx_vocoder_with_melgan_signature(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX vocoders need onnxruntime (pip install 'midisynth[onnx]')")
    pytest.importorskip("onnx", reason="exporting the test model needs onnx")

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(128, HOP_LENGTH)

        def forward(self, input_features):  # [batch, frames, 128] -> [batch, frames * 320]
            return torch.tanh(self.proj(input_features / 10)).flatten(1)

    torch.manual_seed(0)
    toy = Toy().eval()
    path = tmp_path / "melgan.onnx"
    example = torch.randn(1, 50, 128)
    torch.onnx.export(toy, (example,), str(path), input_names=["input_features"], output_names=["audio"],
                      dynamic_axes={"input_features": {0: "batch", 1: "frames"}, "audio": {0: "batch", 1: "samples"}},
                      dynamo=False)
    vocoder = load_vocoder(str(path))
    assert isinstance(vocoder, OnnxVocoder)
    features = np.random.default_rng(0).normal(-5, 2, size=(77, 128)).astype(np.float32)
    with torch.no_grad():
        expected = toy(torch.from_numpy(features)[None])[0].numpy()
    np.testing.assert_allclose(vocoder(features), expected, atol=1e-5)


def test_vocoder_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown vocoder"):
        load_vocoder("wavenet")
    with pytest.raises(FileNotFoundError):
        load_vocoder(str(tmp_path / "missing.onnx"))
    with pytest.raises(FileNotFoundError):
        load_vocoder(str(tmp_path / "missing.safetensors"))
