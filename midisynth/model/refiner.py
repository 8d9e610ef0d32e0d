"""The refiner: a small convolutional network that turns a window's two spectrogram estimates into one.

A render has two estimates of each window's log-mel spectrogram: the diffusion network's, which has the
instruments' texture but smears partials and attacks, and the partials model's (`midisynth.model.partials`), which
places every note's partials and onsets from the score but knows each instrument only as a few fitted envelopes.
`mix_log_mel` averages them with a fixed share per frame. The refiner starts from that average and adds a correction
it predicts from both estimates and the shares, frame by frame, seeing `RefinerShape.reach_frames` frames either way:
where to trust which estimate, in which mel bins, and the level of the whole. The frames of each onset keep the
partials model's attack: the correction is weighted by 1 minus the onset share
(`midisynth.model.partials.onset_shares`); a correction fitted by L1 there smears the attack over the frames the
onset might fall in, and brings back the pre-echo of the network before it. In a rest (`partials.rest_frames`: no
note sounds, none stopped within the last `partials.REST_GUARD_SECONDS`) the correction may only lower the mix:
fitted to the training pieces, whose releases ring on under the next notes, it lifts some instruments' releases well
above the reference's into the silence after them (docs/experiments.md).

It is fitted (`midisynth.training.refiner`) to the log-mel of FluidSynth renders of the model's training pieces, from
the network's own samples of them.

The network's own spectrogram stays the next window's context; the refiner changes only what is rendered.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from midisynth.constants import MAX_LOG_MEL, MIN_LOG_MEL, N_MELS

FORMAT_TAG = "midisynth.refiner/1"
INPUT_CENTRE, INPUT_SCALE = -5.0, 3.0  # log-mel values are fed as (value - centre) / scale, about -2 to 3


@dataclass(frozen=True)
class RefinerShape:
    """The refiner's size: `hidden` channels, an input convolution `kernel` frames wide, then one residual block per
    entry of `dilations` (a 3-frame convolution at that dilation and a 1-frame one)."""

    hidden: int = 256
    kernel: int = 5
    dilations: tuple[int, ...] = (1, 2, 4)

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.kernel < 1 or self.kernel % 2 == 0 or any(d < 1 for d in self.dilations):
            raise ValueError(f"refiner shape: hidden >= 1, an odd kernel and dilations >= 1 expected, got {self}")

    @property
    def reach_frames(self) -> int:
        """Frames either way that one output frame sees."""
        return self.kernel // 2 + sum(self.dilations)


class Refiner(nn.Module):
    """log-mel [B, frames, 128] from the network's log-mel, the partials model's mel magnitude, its shares and the
    onset shares."""

    def __init__(self, shape: RefinerShape | None = None):
        super().__init__()
        self.shape = shape or RefinerShape()
        hidden = self.shape.hidden
        self.inputs = nn.Conv1d(3 * N_MELS + 1, hidden, self.shape.kernel, padding=self.shape.kernel // 2)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.GELU(), nn.Conv1d(hidden, hidden, 3, padding=d, dilation=d), nn.GELU(), nn.Conv1d(hidden, hidden, 1)
            )
            for d in self.shape.dilations
        )
        self.correction = nn.Conv1d(hidden, N_MELS, 1)
        nn.init.zeros_(self.correction.weight)  # an unfitted refiner returns the mix itself
        nn.init.zeros_(self.correction.get_parameter("bias"))

    def forward(
        self,
        network: torch.Tensor,
        magnitude: torch.Tensor,
        shares: torch.Tensor,
        onsets: torch.Tensor,
        rests: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`network` log-mel [B, frames, 128], `magnitude` the partials model's mel magnitude [B, frames, 128],
        `shares` its share per frame [B, frames, 1] (`mix_shares`), `onsets` the onset shares [B, frames, 1]
        (`onset_shares`) -> refined log-mel [B, frames, 128] in the features' range. In the frames `rests` [B, frames,
        1] bool (`rest_frames`; None: none) the correction may lower the mix but not raise it. Runs in float32
        whatever it is given."""
        network, magnitude, shares = network.float(), magnitude.float(), shares.float()
        floor = math.exp(MIN_LOG_MEL)
        mix = torch.log(((1.0 - shares) * network.exp() + shares * magnitude).clamp(min=floor))
        partials = torch.log(magnitude.clamp(min=floor))
        levels = (torch.cat([network, partials, mix], dim=-1) - INPUT_CENTRE) / INPUT_SCALE
        hidden = self.inputs(torch.cat([levels, shares], dim=-1).transpose(1, 2))
        for block in self.blocks:
            hidden = hidden + block(hidden)
        correction = self.correction(F.gelu(hidden)).transpose(1, 2)
        if rests is not None:
            correction = torch.where(rests, correction.clamp(max=0.0), correction)
        return (mix + (1.0 - onsets.float()) * correction).clamp(MIN_LOG_MEL, MAX_LOG_MEL)


# -- files --------------------------------------------------------------------------------------------------------------
def save_refiner(refiner: Refiner, path: str | Path) -> None:
    """Write the weights as float16 safetensors (atomically), the shape in the metadata."""
    from safetensors.torch import save_file

    from midisynth.files import atomic_path

    shape = asdict(refiner.shape)
    metadata = {"format": FORMAT_TAG, **{key: repr(value) for key, value in shape.items()}}
    weights = {name: tensor.detach().to(torch.float16).contiguous() for name, tensor in refiner.state_dict().items()}
    with atomic_path(Path(path), True) as tmp:
        save_file(weights, str(tmp), metadata=metadata)


def load_refiner(path: str | Path) -> Refiner:
    """Read `save_refiner`'s file as a float32 Refiner for inference (eval mode, no gradients); ValueError naming the
    file when it is not one."""
    import ast

    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT_TAG:
                raise ValueError(f"{path}: not a midisynth refiner file (format {meta.get('format')!r})")
            weights = {name: f.get_tensor(name).float() for name in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable refiner file ({err})") from None
    try:
        shape = RefinerShape(
            hidden=int(meta["hidden"]), kernel=int(meta["kernel"]), dilations=tuple(ast.literal_eval(meta["dilations"]))
        )
        refiner = Refiner(shape)
        refiner.load_state_dict(weights)
    except (KeyError, ValueError, SyntaxError, TypeError, RuntimeError) as err:
        raise ValueError(f"{path}: a refiner file that does not match its own shape ({err})") from None
    if not all(bool(torch.isfinite(tensor).all()) for tensor in weights.values()):
        raise ValueError(f"{path}: refiner weights hold NaN or infinite values")
    return refiner.eval().requires_grad_(False)
