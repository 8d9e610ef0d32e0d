"""The network as it computes in a precision (`midisynth.precision`): its own weights for fp32, else a copy.

bf16 and fp16 run under autocast, which casts every Linear's fp32 weight on every call (in inference mode it keeps no
cast cache); a copy whose Linear weights are already in that dtype gives the same numbers for less work. int8 is a
copy with quantized Linear layers (`midisynth.model.int8`).
"""

from __future__ import annotations

from copy import deepcopy

import torch

from midisynth.model.int8 import int8_linear
from midisynth.model.networks import SpectrogramDiffusion

# The autocast dtype of each resolved precision; None: no autocast (fp32, and int8, whose layers compute their own way).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": None,
}


def linear_weights_as(model: SpectrogramDiffusion, dtype: torch.dtype) -> SpectrogramDiffusion:
    """A copy of `model` whose nn.Linear weights are `dtype` (what autocast would cast them to); the rest (norms,
    embeddings, tables) stays float32."""
    cast = deepcopy(model).requires_grad_(False)
    for module in cast.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(dtype)
    return cast


def network_in(model: SpectrogramDiffusion, precision: str) -> SpectrogramDiffusion:
    """`model` as it computes in a resolved `precision` (fp32, bf16, fp16 or int8): itself for fp32, else a copy."""
    if precision == "int8":
        return int8_linear(model)
    dtype = AUTOCAST_DTYPES[precision]
    return model if dtype is None else linear_weights_as(model, dtype)
