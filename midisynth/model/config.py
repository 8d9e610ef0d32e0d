"""Plain dataclasses for model and training configuration, loaded from TOML files in `configs/`."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midisynth.constants import ROLL_DIMS
from midisynth.score.tokens import VOCAB_SIZE


def _is_number(value: Any) -> bool:
    """Whether `value` is an int or a float (TOML's and JSON's numbers), not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_whole(label: str, name: str, value: Any, least: int) -> None:
    """ValueError ("`label` config: `name` must be ...") unless `value` is a whole number (an int) >= `least`."""
    if type(value) is not int or value < least:
        raise ValueError(f"{label} config: {name} must be a whole number >= {least}, got {value!r}")


def check_number(
    label: str,
    name: str,
    value: Any,
    low: float = 0.0,
    high: float = math.inf,
    above_low: bool = False,
    up_to_high: bool = False,
) -> None:
    """ValueError unless `value` is a number from `low` (excluded with `above_low`) to `high` (included with
    `up_to_high`); so by default a finite number >= 0."""
    if (
        _is_number(value)
        and (low < value if above_low else low <= value)
        and (value <= high if up_to_high else value < high)
    ):
        return
    if high == math.inf and not up_to_high:
        bound = f"a finite number {'>' if above_low else '>='} {low:g}"
    else:
        bound = f"a number in {'(' if above_low else '['}{low:g}, {high:g}{']' if up_to_high else ')'}"
    raise ValueError(f"{label} config: {name} must be {bound}, got {value!r}")


def check_choice(label: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """ValueError unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{label} config: {name} must be one of {choices}, got {value!r}")


def _from_dict(cls, values: dict[str, Any], label: str):
    """Build a config dataclass, rejecting unknown keys by name."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{label} config: unknown keys {unknown}; known keys are {sorted(known)}")
    return cls(**values)


PREDICTIONS = ("epsilon", "v")
BOOLEAN_OPTIONS = ("velocity_gain", "note_roll")
MODEL_SIZES = (
    "vocab_size",
    "max_tokens",
    "input_dims",
    "targets_length",
    "d_model",
    "num_heads",
    "d_kv",
    "d_ff",
    "num_notes_layers",
    "num_context_layers",
    "num_decoder_layers",
)  # whole numbers >= 1
# Model options of unshipped experiments, removed (docs/experiments.md), with the value that meant "off".
RETIRED_MODEL_KEYS = {"velocity_bins": 1, "dynamics_bins": 0, "harmonic_sketch": False}
LR_SCHEDULES = ("constant", "cosine")
LOSSES = ("l1", "l2")
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")  # fp16 would need loss scaling, which training does not do


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the three Spectrogram Diffusion networks.

    Defaults are the official `base_with_context` checkpoint (see configs/base.toml for the citation).
    """

    vocab_size: int = 1536  # rows of the notes-encoder embedding table (>= 1391 used ids)
    max_tokens: int = 2048  # notes-encoder positions
    input_dims: int = 128  # mel bins
    targets_length: int = 256  # frames per window (decoder and context-encoder positions)
    d_model: int = 768
    num_heads: int = 12
    d_kv: int = 64  # width of one attention head
    d_ff: int = 2048  # gated-GELU hidden width
    num_notes_layers: int = 12
    num_context_layers: int = 12
    num_decoder_layers: int = 12
    dropout_rate: float = 0.1
    max_decoder_noise_time: float = 2000.0
    prediction: str = "epsilon"  # what the decoder predicts: "epsilon" (the paper, official weights) or "v"
    velocity_gain: bool = False  # velocity as a level: the model renders velocity-normalised spectrograms, and the
    #                              notes' gain (midisynth.model.note_inputs.velocity_gain) is added to each window
    note_roll: bool = False  # the decoder also sees the notes frame by frame (midisynth.model.note_inputs.note_roll)

    def __post_init__(self) -> None:
        check_choice("model", "prediction", self.prediction, PREDICTIONS)
        for name in MODEL_SIZES:
            check_whole("model", name, getattr(self, name), 1)
        for name in BOOLEAN_OPTIONS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"model config: {name} must be true or false, got {getattr(self, name)!r}")
        if self.vocab_size < VOCAB_SIZE:
            raise ValueError(
                f"model config: vocab_size must be at least {VOCAB_SIZE} (the event vocabulary), got {self.vocab_size}"
            )
        check_number("model", "dropout_rate", self.dropout_rate, 0.0, 1.0)
        check_number("model", "max_decoder_noise_time", self.max_decoder_noise_time, above_low=True)

    @property
    def takes_note_inputs(self) -> bool:
        """Whether the model takes per-frame note inputs besides the tokens (see midisynth.model.note_inputs)."""
        return bool(self.velocity_gain or self.note_roll)

    @property
    def cue_dims(self) -> int:
        """Width of the decoder's per-frame note cue, the note roll (0: none, the paper's)."""
        return ROLL_DIMS if self.note_roll else 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """The config from a dict; also reads files written while the options in RETIRED_MODEL_KEYS existed, as long
        as they hold those options' neutral values."""
        values = dict(values)
        for key, neutral in RETIRED_MODEL_KEYS.items():
            if key in values and values.pop(key) != neutral:
                raise ValueError(f"model config: {key} is no longer supported (an experiment, see docs/experiments.md)")
        return _from_dict(cls, values, "model")


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe (paper §4: L1 loss, conditioning dropout for guidance; the target follows the model's
    `prediction`: ε as in the paper, or v)."""

    batch_size: int = 8
    learning_rate: float = 1e-3  # peak, after warm-up
    warmup_steps: int = 500
    max_steps: int = 20_000
    lr_schedule: str = "constant"  # "constant" after warm-up, or "cosine": down to min_lr_ratio × peak at max_steps
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    cond_dropout: float = 0.1  # probability of dropping all conditioning (classifier-free guidance)
    context_level_jitter: float = 0.0  # std (log units) of a random gain on each context (jitter_context_level)
    # Sampling weight of a training window by its piece's source (the id's prefix: "m21", "gen", "survey", "user",
    # and for recordings "pair", "slakh", "maestro");
    # sources not named weigh 1. Empty: every window equally often (shuffled epochs).
    source_weights: dict[str, float] = field(default_factory=dict)
    # Learning-rate multiplier of the decoder's cue projection (models with a note roll). It starts at
    # zero and must grow to the size of the decoder's other inputs (norm ~11) while the rest of the model fine-tunes.
    cue_lr_scale: float = 1.0
    loss: str = "l1"  # "l1" (paper) or "l2"
    # "auto" (bf16 autocast where the hardware computes bf16 natively, else fp32; see midisynth.precision), "bf16"
    # or "fp32". Emulated bf16 trains up to 20x slower than fp32, so a config asks for "auto", not "bf16".
    precision: str = "auto"
    checkpoint_every: int = 200  # steps
    eval_every: int = 500  # steps
    eval_batches: int = 8
    log_every: int = 10
    seed: int = 0
    num_workers: int | None = None  # data loader processes per training process (default: 0 on CPU, 4 on CUDA)
    compile: bool = False  # run the training steps through torch.compile (pays off in long runs on a GPU)

    def __post_init__(self) -> None:
        for name in ("batch_size", "checkpoint_every", "eval_every", "eval_batches", "log_every"):
            check_whole("train", name, getattr(self, name), 1)
        for name in ("warmup_steps", "max_steps", "seed"):
            check_whole("train", name, getattr(self, name), 0)
        if self.num_workers is not None:
            check_whole("train", "num_workers", self.num_workers, 0)
        for name in ("learning_rate", "cue_lr_scale"):
            check_number("train", name, getattr(self, name), above_low=True)
        check_number("train", "grad_clip", self.grad_clip, above_low=True, up_to_high=True)  # inf: no clipping
        for name in ("weight_decay", "context_level_jitter"):
            check_number("train", name, getattr(self, name))
        for name in ("min_lr_ratio", "cond_dropout"):
            check_number("train", name, getattr(self, name), 0.0, 1.0, up_to_high=True)
        check_number("train", "ema_decay", self.ema_decay, 0.0, 1.0)
        check_choice("train", "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("train", "loss", self.loss, LOSSES)
        check_choice("train", "precision", self.precision, TRAIN_PRECISIONS)
        weights = self.source_weights
        if not isinstance(weights, dict) or not all(_is_number(v) and 0 <= v < math.inf for v in weights.values()):
            raise ValueError(
                f"train config: source_weights must be non-negative numbers (a table: source = weight), got {weights!r}"
            )
        if not isinstance(self.compile, bool):
            raise ValueError(f"train config: compile must be true or false, got {self.compile!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, values, "train")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def read_toml(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """A config file's contents; FileNotFoundError, or ValueError naming the file when it is not valid TOML or has a
    top-level key (a table, or `base`) other than `keys`."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ValueError(f"{path}: unknown tables {unknown}; expected {', '.join(keys)}")
    return data


def _read_tables(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, dict[str, Any]]:
    """The `[model]` and `[train]` tables of a config file, over those of the file its `base` key names (a path
    relative to the file): each key the file sets replaces the base's."""
    data = read_toml(path, ("base", "model", "train"))
    tables: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    if "base" in data:
        base = (path.parent / data["base"]).resolve()
        if base in seen:
            raise ValueError(f"{path}: base {data['base']!r} builds on this file again (a cycle)")
        tables = _read_tables(base, (*seen, base))
    for table in ("model", "train"):
        tables[table] = {**tables[table], **data.get(table, {})}
    return tables


def load_config(path: str | Path) -> Config:
    """Read a TOML file with optional `[model]` and `[train]` tables and an optional `base = "FILE.toml"`: the config
    it builds on, whose values the file's own replace key by key (so a file states only what differs). A value of
    the wrong type or out of its range is a ValueError naming the file and the key."""
    path = Path(path)
    tables = _read_tables(path, (path.resolve(),))
    try:
        return Config(model=ModelConfig.from_dict(tables["model"]), train=TrainConfig.from_dict(tables["train"]))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
