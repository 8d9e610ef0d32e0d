"""int8 Linear layers (`--precision int8`, `auto` on CPUs without native bf16): error within the quantization bound,
the chosen layers only, and the bundled model's spectrogram close to fp32."""

from __future__ import annotations

from fnmatch import fnmatch

import numpy as np
import pytest
import torch

from midisynth.model.int8 import KEEP_FP32, Int8Linear
from midisynth.precision import hardware
from midisynth.render.pipeline import RenderOptions, Synthesizer
from midisynth.score.midi import read_midi
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not hardware("cpu").quantized_engine, reason="this torch has no quantized engine")


@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_error_is_within_its_quantization_bound(bias):
    """Each output is off by at most what rounding the weights (per output channel, step |w|max / 127.5) and the
    input (per tensor, 7-bit: step range / 127) can cause: a scale on the wrong axis or a lost bias breaks it."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=bias)
    with torch.no_grad():
        linear.weight[5] *= 40.0  # a channel far louder than the others: per-tensor weight scales would fail
    x = torch.randn(3, 10, 64) * 2 + 0.3  # [batch, length, in]
    with torch.inference_mode():
        quantized, exact = Int8Linear(linear)(x), linear(x)
    weight = linear.weight.detach()
    weight_step = weight.abs().amax(dim=1) / 127.5  # [out]
    input_step = (max(x.max().item(), 0.0) - min(x.min().item(), 0.0)) / 127
    bound = (
        input_step / 2 * weight.abs().sum(dim=1)
        + weight_step / 2 * x.abs().sum(dim=-1, keepdim=True)
        + input_step * weight_step / 4 * 64
    )  # [3, 10, 48]
    assert quantized.shape == exact.shape == (3, 10, 48)
    assert ((quantized - exact).abs() <= bound).all()
    assert (quantized - exact).abs().max() > 0  # it is quantized


@pytest.mark.slow  # the bundled model's networks in fp32 and int8
def test_int8_network_quantizes_all_but_the_kept_layers_and_stays_close_to_fp32():
    """The bundled model as `--precision int8` computes it: every Linear layer is an Int8Linear except those KEEP_FP32
    names, which share the model's own weights; the model stays fp32; two windows differ from fp32 by mean |Δ| < 0.05
    and 99th percentile < 0.2 log-mel units (measured 0.029 and 0.098; bf16 0.012 and 0.041; with every layer
    quantized, 0.094 and 0.30)."""
    synth = Synthesizer.from_pretrained(device="cpu")
    int8 = synth._network("int8")
    layers = {name: module for name, module in int8.named_modules() if isinstance(module, torch.nn.Linear | Int8Linear)}
    kept = {name for name, module in layers.items() if isinstance(module, torch.nn.Linear)}
    assert kept == {name for name in layers if any(fnmatch(name, pattern) for pattern in KEEP_FP32)}
    assert {"decoder.blocks.0.ff.wo", "decoder.output_proj", "decoder.blocks.3.self_film.scale_shift"} <= kept
    assert len(layers) - len(kept) == 97
    assert all(layers[name].weight is synth.model.get_submodule(name).weight for name in kept)
    assert all(type(module) is torch.nn.Linear for name, module in synth.model.named_modules() if name in layers)
    song = read_midi(ROOT / "tests" / "data" / "midi" / "dense_30s.mid")
    windows, note_inputs = synth.tokenize(song)[:2], synth.note_inputs(song)
    fp32, quantized = (
        np.concatenate(list(synth.spectrogram_windows(windows, RenderOptions(precision=p), note_inputs=note_inputs)))
        for p in ("fp32", "int8")
    )
    diff = np.abs(quantized - fp32)
    assert 0 < diff.mean() < 0.05 and np.quantile(diff, 0.99) < 0.2
