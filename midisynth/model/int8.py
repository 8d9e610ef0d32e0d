"""int8 Linear layers for rendering on CPUs (`--precision int8`, and what `auto` picks on x86 CPUs without native bf16).

Each chosen nn.Linear becomes an `Int8Linear`: its weight quantized once, symmetrically per output channel; its input
quantized per call (one scale per tensor), multiplied in int8 with int32 sums and dequantized, by the quantized
engine's kernels (fbgemm on x86, which runs on AVX2; qnnpack on ARM). On the bundled model's networks that is three
times as fast as fp32 per layer on an AVX2 CPU.

Some layers stay fp32 (`KEEP_FP32`): the decoder's feed-forward output, whose input (a gated product) has outlier
channels that one scale per tensor cannot hold, and the small layers that bring the noise time and the spectrogram
in and out. Quantized too, they would move the spectrogram three times as far from fp32 for a few per cent of the
time (docs/cpu_paths.md).
"""

from __future__ import annotations

import itertools
import warnings
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from fnmatch import fnmatch
from typing import TypeVar

import torch
from torch import nn

# Module-name patterns of the Linear layers that stay fp32 (see the module docstring).
KEEP_FP32 = (
    "decoder.blocks.*.ff.wo",
    "decoder.input_proj",
    "decoder.output_proj",
    "decoder.cue_proj",
    "decoder.time_mlp.*",
    "decoder.blocks.*_film.*",
)
ModuleT = TypeVar("ModuleT", bound=nn.Module)
_QMAX = 127.5  # half the int8 range: the symmetric scale that maps a channel's largest |weight| onto it


class Int8Linear(nn.Module):
    """`linear` (no gradients) as y = dequant(quant(x) @ W_int8^T) + bias: W per output channel, x per call.
    `packed`: `packed_int8(linear)`, if already made."""

    def __init__(self, linear: nn.Linear, packed: torch.ScriptObject | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if packed is None:
            with warnings.catch_warnings():  # torch warns (once) that its quantized tensors will go: precision.py
                warnings.simplefilter("ignore")
                packed = packed_int8(linear)
        self._packed = packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # reduce_range: 7-bit inputs, so that fbgemm's AVX2 int8 pair products cannot overflow int16
        return torch.ops.quantized.linear_dynamic.default(x, self._packed, True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


def packed_int8(linear: nn.Linear) -> torch.ScriptObject:
    """`linear`'s weight quantized symmetrically per output channel, and its bias, in the quantized engine's own
    layout."""
    weight = linear.weight.detach().float()  # [out, in]
    scale = (weight.abs().amax(dim=1) / _QMAX).clamp(min=torch.finfo(torch.float32).eps).double()
    zero_point = torch.zeros(linear.out_features, dtype=torch.long)
    quantized = torch.quantize_per_channel(weight, scale, zero_point, 0, torch.qint8)
    bias = None if linear.bias is None else linear.bias.detach().float()
    return torch.ops.quantized.linear_prepack(quantized, bias)


def int8_linear(model: ModuleT, keep_fp32: tuple[str, ...] = KEEP_FP32) -> ModuleT:
    """A copy of `model` whose nn.Linear layers, except those named by `keep_fp32` (fnmatch patterns), are
    `Int8Linear`s; it shares every other tensor with `model`, which stays as it is."""
    copy = deepcopy(model, {id(t): t for t in itertools.chain(model.parameters(), model.buffers())})
    chosen = [
        (name, module)
        for name, module in copy.named_modules()
        if isinstance(module, nn.Linear) and not any(fnmatch(name, kept) for kept in keep_fp32)
    ]
    # On as many threads as torch computes on (its quantizing kernels release the GIL); torch's one warning is silenced
    # here, in the calling thread, for all of them (warnings' filters are the process's).
    with warnings.catch_warnings(), ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        warnings.simplefilter("ignore")
        packed = list(pool.map(packed_int8, [module for _, module in chosen]))
    for (name, module), weights in zip(chosen, packed, strict=True):
        parent, _, attribute = name.rpartition(".")
        setattr(copy.get_submodule(parent), attribute, Int8Linear(module, weights))
    return copy
