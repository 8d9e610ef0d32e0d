"""Loading and saving model weights: the diffusers/hub directory layout and midisynth's single-file format.

Diffusers layout (as `google/music-spectrogram-diffusion` on the Hugging Face hub)::

    notes_encoder/{config.json, diffusion_pytorch_model.safetensors | .bin}
    continuous_encoder/{...}
    decoder/{...}
    scheduler/scheduler_config.json
    melgan/model.onnx                      (optional spectrogram inverter)

midisynth layout: one safetensors file whose metadata holds the model config; tensor names are midisynth's own.
Pickle-based `.bin` weights load only when explicitly allowed, and then only through
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode

from midisynth.constants import DIFFUSERS_MODULES
from midisynth.files import OutputError, atomic_path, make_output_directory
from midisynth.model.config import ModelConfig
from midisynth.model.networks import SpectrogramDiffusion, tensor_shapes
from midisynth.model.samplers import DIFFUSERS_SAMPLING, SamplingDefaults, default_sampling

FORMAT_TAG = "midisynth.spectrogram-diffusion/1"
_OUR_PREFIX = {"notes_encoder": "notes_encoder.", "continuous_encoder": "context_encoder.", "decoder": "decoder."}

_ENCODERS = ("notes_encoder", "continuous_encoder")  # the two encoders share one layout
_DECODER = ("decoder",)
# (modules, midisynth name pattern, diffusers name), applied to names with the module prefix removed.
_NAME_RULES = [
    (_ENCODERS, r"token_embedding\.weight", r"token_embedder.weight"),
    (_ENCODERS, r"input_proj\.weight", r"input_proj.weight"),
    (_ENCODERS, r"position_table", r"position_encoding.weight"),
    (_ENCODERS, r"encoder\.blocks\.(\d+)\.attn_norm\.weight", r"encoders.\1.layer.0.layer_norm.weight"),
    (_ENCODERS, r"encoder\.blocks\.(\d+)\.attn\.([qkvo])\.weight", r"encoders.\1.layer.0.SelfAttention.\2.weight"),
    (_ENCODERS, r"encoder\.blocks\.(\d+)\.ff_norm\.weight", r"encoders.\1.layer.1.layer_norm.weight"),
    (_ENCODERS, r"encoder\.blocks\.(\d+)\.ff\.(wi_0|wi_1|wo)\.weight", r"encoders.\1.layer.1.DenseReluDense.\2.weight"),
    (_ENCODERS, r"encoder\.final_norm\.weight", r"layer_norm.weight"),
    (_DECODER, r"time_mlp\.([02])\.weight", r"conditioning_emb.\1.weight"),
    (_DECODER, r"input_proj\.weight", r"continuous_inputs_projection.weight"),
    (_DECODER, r"position_table", r"position_encoding.weight"),
    (_DECODER, r"blocks\.(\d+)\.self_norm\.weight", r"decoders.\1.layer.0.layer_norm.weight"),
    (_DECODER, r"blocks\.(\d+)\.self_film\.scale_shift\.weight", r"decoders.\1.layer.0.FiLMLayer.scale_bias.weight"),
    (_DECODER, r"blocks\.(\d+)\.self_attn\.([qkv])\.weight", r"decoders.\1.layer.0.attention.to_\2.weight"),
    (_DECODER, r"blocks\.(\d+)\.self_attn\.o\.weight", r"decoders.\1.layer.0.attention.to_out.0.weight"),
    (_DECODER, r"blocks\.(\d+)\.cross_norm\.weight", r"decoders.\1.layer.1.layer_norm.weight"),
    (_DECODER, r"blocks\.(\d+)\.cross_attn\.([qkv])\.weight", r"decoders.\1.layer.1.attention.to_\2.weight"),
    (_DECODER, r"blocks\.(\d+)\.cross_attn\.o\.weight", r"decoders.\1.layer.1.attention.to_out.0.weight"),
    (_DECODER, r"blocks\.(\d+)\.ff_norm\.weight", r"decoders.\1.layer.2.layer_norm.weight"),
    (_DECODER, r"blocks\.(\d+)\.ff_film\.scale_shift\.weight", r"decoders.\1.layer.2.film.scale_bias.weight"),
    (_DECODER, r"blocks\.(\d+)\.ff\.(wi_0|wi_1|wo)\.weight", r"decoders.\1.layer.2.DenseReluDense.\2.weight"),
    (_DECODER, r"final_norm\.weight", r"decoder_norm.weight"),
    (_DECODER, r"output_proj\.weight", r"spec_out.weight"),
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


@dataclass
class Checkpoint:
    """A loaded model plus what came with it."""

    model: SpectrogramDiffusion
    source: Path
    sampling: SamplingDefaults  # how the model is meant to be sampled
    vocoder_path: Path | None = None  # an ONNX or bundled vocoder found beside the weights
    partials_path: Path | None = None  # the fitted partials model (midisynth.model.partials) found beside the weights
    refiner_path: Path | None = None  # the refiner (midisynth.model.refiner) found beside the weights
    metadata: dict[str, str] = field(default_factory=dict)


def diffusers_name(module: str, name: str) -> str:
    """Translate a midisynth parameter name (without module prefix) to its diffusers name."""
    for modules, pattern, replacement in _NAME_RULES:
        if module in modules and re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    raise KeyError(f"no diffusers name for {module}/{name}")


def _config_from_diffusers(root: Path) -> ModelConfig:
    configs = {}
    for module in DIFFUSERS_MODULES:
        path = root / module / "config.json"
        try:
            configs[module] = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(
                f"{root}: not a Spectrogram Diffusion checkpoint (missing {module}/config.json)"
            ) from None
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path}: invalid JSON ({err})") from None
    notes, ctx, dec = (configs[m] for m in DIFFUSERS_MODULES)
    for key in ("d_model", "num_heads", "d_kv", "d_ff"):
        values = {m: configs[m].get(key) for m in DIFFUSERS_MODULES}
        if len(set(values.values())) != 1:
            raise CheckpointError(f"{root}: modules disagree on {key}: {values}")
    for module, key in (("notes_encoder", "feed_forward_proj"), ("continuous_encoder", "feed_forward_proj")):
        if configs[module].get(key, "gated-gelu") != "gated-gelu":
            raise CheckpointError(
                f"{root}/{module}: feed_forward_proj {configs[module][key]!r} unsupported (gated-gelu)"
            )
    try:
        return ModelConfig(
            vocab_size=notes["vocab_size"],
            max_tokens=notes["max_length"],
            input_dims=dec.get("input_dims", 128),
            targets_length=dec.get("targets_length", 256),
            d_model=dec["d_model"],
            num_heads=dec["num_heads"],
            d_kv=dec["d_kv"],
            d_ff=dec["d_ff"],
            num_notes_layers=notes["num_layers"],
            num_context_layers=ctx["num_layers"],
            num_decoder_layers=dec["num_layers"],
            dropout_rate=dec.get("dropout_rate", 0.1),
            max_decoder_noise_time=dec.get("max_decoder_noise_time", 2000.0),
        )
    except KeyError as err:
        raise CheckpointError(f"{root}: config.json lacks {err}") from None
    except ValueError as err:
        raise CheckpointError(f"{root}: {err}") from None


def _check_scheduler(root: Path) -> None:
    path = root / "scheduler" / "scheduler_config.json"
    if not path.exists():
        return
    cfg = json.loads(path.read_text())
    expected = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "epsilon"}
    for key, value in expected.items():
        if cfg.get(key, value) != value:
            raise CheckpointError(f"{path}: {key}={cfg[key]!r} unsupported; midisynth's ddpm sampler needs {value!r}")


def _read_module_weights(folder: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    safetensors_path = folder / "diffusion_pytorch_model.safetensors"
    bin_path = folder / "diffusion_pytorch_model.bin"
    if safetensors_path.exists():
        try:
            return load_file(str(safetensors_path))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{safetensors_path}: unreadable safetensors file ({err})") from None
    if bin_path.exists():
        if not allow_pickle:
            raise CheckpointError(
                f"{bin_path}: pickle-based weights are not loaded by default; convert them to safetensors or pass "
                "--allow-pickle (loads with torch.load(weights_only=True))"
            )
        try:
            weights = torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for bad pickles
            raise CheckpointError(f"{bin_path}: unreadable weights ({err})") from None
        if not isinstance(weights, dict):
            raise CheckpointError(f"{bin_path}: expected a state dict, got {type(weights).__name__}")
        return weights
    raise CheckpointError(f"{folder}: no diffusion_pytorch_model.safetensors (or .bin) weights")


_MAX_TENSOR_BYTES = 2**63 - 1  # torch counts a tensor's bytes in a signed 64-bit integer


def _network_shapes(cfg: ModelConfig, tensors: int, source: str) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor of `cfg`'s networks (`networks.tensor_shapes`: worked out, not allocated).
    `tensors`: how many the weights hold; a config of more layers (each has tensors) is refused before listing them,
    as is one asking for a tensor of more bytes than a 64-bit size counts."""
    layers = cfg.num_notes_layers + cfg.num_context_layers + cfg.num_decoder_layers
    if layers > tensors:
        raise CheckpointError(
            f"{source}: weights do not match the config: it asks for {layers} layers, and the "
            f"weights hold {tensors} tensors in all"
        )
    shapes = tensor_shapes(cfg)
    largest = max(shapes, key=lambda name: math.prod(shapes[name]))
    if math.prod(shapes[largest]) * 4 > _MAX_TENSOR_BYTES:  # float32, 4 bytes an element, as loading makes them
        raise CheckpointError(
            f"{source}: the model config asks for tensors too large to hold ({largest}: {shapes[largest]})"
        )
    return shapes


def _check_state(state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """CheckpointError naming `source` unless `state` holds exactly the tensors of `shapes`, each of its shape,
    floating point and finite."""
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != shapes[name]:
            raise CheckpointError(f"{source}: {name} has shape {tuple(tensor.shape)}, the config needs {shapes[name]}")
        if not tensor.is_floating_point():
            raise CheckpointError(f"{source}: {name} has dtype {tensor.dtype}, expected floating point")
        if tensor.numel() and not torch.isfinite(tensor.abs().amax()):  # amax: 50x faster than isfinite().all()
            raise CheckpointError(f"{source}: {name} holds NaN or infinite values")


def _load_state(cfg: ModelConfig, state: dict[str, torch.Tensor], source: str) -> SpectrogramDiffusion:
    """`cfg`'s networks holding `state`, which is checked first (`_check_state`) against the shapes the config asks
    for: a config that asks for more than the weights hold is refused before anything is allocated. The networks
    are made without drawing random weights (`_SkipInitialisers`) and take `state`'s tensors as their own."""
    _check_state(state, _network_shapes(cfg, len(state), source), source)
    with _SkipInitialisers():
        model = SpectrogramDiffusion(cfg)
    model.load_state_dict({k: v.float().contiguous() for k, v in state.items()}, assign=True)
    return model


class _SkipInitialisers(TorchFunctionMode):
    """While active, in this thread only, torch.nn.init's functions leave their tensor as it is: for networks whose
    every tensor is replaced next. (The meta device would skip the memory too, but its reference kernels import
    torch's compiler, which costs more than the initialisers.)"""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def load_diffusers(root: str | Path, allow_pickle: bool = False) -> Checkpoint:
    """Load a diffusers-layout Spectrogram Diffusion directory (e.g. the official hub checkpoint)."""
    root = Path(root)
    cfg = _config_from_diffusers(root)
    _check_scheduler(root)
    weights = {module: _read_module_weights(root / module, allow_pickle) for module in DIFFUSERS_MODULES}
    names = _network_shapes(cfg, sum(map(len, weights.values())), str(root))
    state: dict[str, torch.Tensor] = {}
    for module, theirs in weights.items():
        prefix = _OUR_PREFIX[module]
        for ours in names:
            if ours.startswith(prefix):
                their_name = diffusers_name(module, ours[len(prefix) :])
                if their_name not in theirs:
                    raise CheckpointError(f"{root / module}: missing tensor {their_name}")
                state[ours] = theirs[their_name]
    model = _load_state(cfg, state, str(root))
    melgan = root / "melgan" / "model.onnx"
    return Checkpoint(
        model=model.eval(), source=root, vocoder_path=melgan if melgan.exists() else None, sampling=DIFFUSERS_SAMPLING
    )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(
    model: SpectrogramDiffusion,
    path: str | Path,
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype = torch.float32,
    replace: bool = True,
) -> str:
    """Write midisynth's single-file format atomically (weights in `dtype`); returns the file's sha256.

    The metadata holds the model config and its sampling defaults (`metadata["sampling"]`, a
    `SamplingDefaults.to_json()`; when not given, those of the model's prediction type). Raises OutputError (one
    line naming `path`) when it cannot be written, and without `replace` when a file is there by the time it is
    complete."""
    path = Path(path)
    meta = {
        "format": FORMAT_TAG,
        "model_config": json.dumps(model.cfg.to_dict()),
        "sampling": default_sampling(model.cfg.prediction).to_json(),
        **(metadata or {}),
    }
    state = {k: v.detach().to(dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    make_output_directory(path.parent, path)
    try:
        with atomic_path(path, replace) as tmp:
            save_file(state, str(tmp), metadata=meta)
    except OutputError:
        raise
    except (OSError, SafetensorError) as err:
        raise OutputError(f"{path}: write failed ({getattr(err, 'strerror', None) or err})") from None
    return file_sha256(path)


def load_model_file(path: str | Path, expected_sha256: str | None = None) -> Checkpoint:
    """Load midisynth's single-file format, verifying its hash first when one is given."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such model file")
    if not path.is_file():  # a device such as /dev/zero would be read without end
        raise CheckpointError(f"{path}: not a model file (a device, pipe or socket, not a regular file)")
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise CheckpointError(f"{path}: sha256 mismatch (file corrupted or replaced); expected {expected_sha256}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors model ({err})") from None
    if meta.get("format") != FORMAT_TAG:
        raise CheckpointError(
            f"{path}: not a midisynth model (format tag {meta.get('format')!r}, expected {FORMAT_TAG!r})"
        )
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["model_config"]))
    except (KeyError, json.JSONDecodeError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: invalid model config in metadata ({err})") from None
    try:  # older files state none: those of the model's prediction type
        sampling = (
            SamplingDefaults.from_json(meta["sampling"]) if "sampling" in meta else default_sampling(cfg.prediction)
        )
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    model = _load_state(cfg, state, str(path))
    return Checkpoint(model=model.eval(), source=path, metadata=meta, sampling=sampling)


def load_checkpoint(path: str | Path, allow_pickle: bool = False) -> Checkpoint:
    """Load either layout: a diffusers directory or a midisynth `.safetensors` file."""
    path = Path(path)
    if path.is_dir():
        return load_diffusers(path, allow_pickle=allow_pickle)
    return load_model_file(path)
