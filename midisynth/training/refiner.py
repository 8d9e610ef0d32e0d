"""Fitting the refiner (`midisynth.model.refiner`) to a model's own renders of its training pieces.

Two parts, both resumable in a run directory:

1. `make_examples`: each training piece of the data sets is rendered with the model as `midisynth render` renders it
   (seeded by the piece's id), and its training windows (all but those `hold_out` keeps for evaluation) are stored in
   RUN_DIR/examples/PIECE.npz: the network's log-mel, the partials model's log magnitude, its shares, the onset
   shares and the reference's log-mel, with the weight of each frame (1 while the song and its release tail last).
2. `RefinerTrainer` fits the refiner to them: L1 of the log-mel against the reference's, plus `flux_weight` times
   the L1 of their frame-to-frame differences, so that a correction keeps the reference's onsets rather than
   smoothing them into the L1-optimal blur. Crops of `crop_frames` frames (from any frame of a window) teach it the
   window's edges too.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from midisynth.constants import MIN_LOG_MEL, N_MELS, WINDOW_FRAMES
from midisynth.data.store import DataSetError, load_records
from midisynth.model.config import _from_dict, check_number, check_whole, read_toml
from midisynth.model.directory import REFINER_FILE
from midisynth.model.partials import NoteReach, onset_shares, shares_at
from midisynth.model.refiner import Refiner, RefinerShape, save_refiner
from midisynth.training.loop import TrainingLoop

EXAMPLES_DIR = "examples"


@dataclass(frozen=True)
class RefinerTrainConfig:
    """What `configs/refiner.toml` sets: the refiner's `shape` and how it is fitted."""

    shape: RefinerShape = field(default_factory=RefinerShape)
    batch_size: int = 16  # crops per step
    crop_frames: int = 128
    learning_rate: float = 1e-3  # peak of a one-cycle schedule (5 % warm-up, cosine down)
    max_steps: int = 6000
    flux_weight: float = 1.0
    weight_decay: float = 1e-4
    ema_decay: float = 0.99
    checkpoint_every: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "crop_frames", "max_steps", "checkpoint_every"):
            check_whole("refiner", name, getattr(self, name), 1)
        check_whole("refiner", "seed", self.seed, 0)
        if self.crop_frames > WINDOW_FRAMES:
            raise ValueError(f"refiner config: crop_frames must be at most {WINDOW_FRAMES}, got {self.crop_frames}")
        check_number("refiner", "learning_rate", self.learning_rate, above_low=True)
        for name in ("flux_weight", "weight_decay"):
            check_number("refiner", name, getattr(self, name))
        check_number("refiner", "ema_decay", self.ema_decay, 0.0, 1.0)

    @classmethod
    def from_file(cls, path: str | Path) -> RefinerTrainConfig:
        """Read a TOML file's `[refiner]` (hidden, kernel, dilations) and `[train]` tables; ValueError naming the file
        for an unknown key or a bad value."""
        data = read_toml(Path(path), ("refiner", "train"))
        try:
            shape_values: dict[str, Any] = dict(data.get("refiner", {}))
            if "dilations" in shape_values:
                shape_values["dilations"] = tuple(shape_values["dilations"])
            shape = _from_dict(RefinerShape, shape_values, "refiner")
            return _from_dict(cls, {**data.get("train", {}), "shape": shape}, "refiner train")
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: {err}") from None


# -- examples -----------------------------------------------------------------------------------------------------------
def piece_seed(piece_id: str) -> int:
    """The sampling seed of a piece's render: its id's hash, so that pieces differ and a rerun is the same."""
    return int(hashlib.sha1(piece_id.encode()).hexdigest()[:8], 16)


def make_examples(
    synth, data_dirs: list[Path], run_dir: Path, on_piece: Callable[[int, int], None] | None = None
) -> list[Path]:
    """Render each training piece of `data_dirs` with `synth` (a `Synthesizer` with a partials model) and store its
    training windows in RUN_DIR/examples (see the module's docstring); pieces stored before are kept. Returns the
    example files; DataSetError if the data sets have no training piece."""
    from midisynth.files import write_atomic
    from midisynth.render.pipeline import RenderOptions, song_frames
    from midisynth.score.midi import read_midi

    if synth.partials is None:
        raise ValueError("the refiner is fitted to a model with a partials model (partials.safetensors beside it)")
    folder = Path(run_dir) / EXAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    pieces = [(root, record) for root in data_dirs for record in load_records(Path(root), "train")]
    pieces = list({record.piece_id: (root, record) for root, record in pieces}.values())  # first of a repeated id
    if not pieces:
        raise DataSetError(f"{', '.join(map(str, data_dirs))}: no training pieces")
    partials, files = synth.partials, []
    for done, (root, record) in enumerate(pieces, 1):
        path = folder / f"{record.piece_id}.npz"
        if not path.exists():
            song = read_midi(record.midi_path(Path(root)))
            options = RenderOptions(seed=piece_seed(record.piece_id), precision=synth.options.precision)
            windows = synth.tokenize(song)
            network = np.stack(list(synth.spectrogram_windows(windows, options, None, synth.note_inputs(song))))
            reach = NoteReach(song)
            magnitude = np.stack([partials.magnitude(song, i, reach) for i in range(len(network))])
            onsets = np.stack([onset_shares(song, i, reach) for i in range(len(network))])  # [windows, 256]
            shares = np.stack([shares_at(window, partials.mix)[:, 0] for window in onsets])  # [windows, 256]
            reference = np.load(record.path(Path(root), "features"))
            lasting = min(song_frames(song, len(network)), len(reference))  # frames of the song and its release tail
            weights = (np.arange(len(network) * WINDOW_FRAMES) < lasting).reshape(len(network), WINDOW_FRAMES)
            weights[[w not in record.split_windows("train") for w in range(len(network))]] = False
            arrays = {
                "network": network.astype(np.float16),  # [windows, 256, 128] log-mel
                "partials": np.log(np.maximum(magnitude, np.exp(MIN_LOG_MEL))).astype(np.float16),  # log magnitude
                "shares": shares.astype(np.float16),  # [windows, 256]
                "onsets": onsets.astype(np.float16),  # [windows, 256]
                "reference": reference.astype(np.float16),  # [frames, 128] log-mel
                "weights": weights.astype(np.float16),  # [windows, 256]: 1 in the frames the fit scores
            }

            def write(f, arrays=arrays):
                buffer = io.BytesIO()
                np.savez(buffer, **arrays)
                f.write(buffer.getvalue())

            write_atomic(path, write)
        files.append(path)
        if on_piece is not None:
            on_piece(done, len(pieces))
    return files


def load_examples(files: list[Path]) -> dict[str, torch.Tensor]:
    """The stored windows of example `files`, stacked: network, partials, reference [windows, 256, 128] float16,
    shares, onsets and frame weights [windows, 256]; DataSetError naming a file that cannot be read."""
    names = ("network", "partials", "reference", "shares", "onsets", "weights")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for path in files:
        try:
            with np.load(path) as stored:
                network = stored["network"]
                reference = np.full((network.shape[0] * WINDOW_FRAMES, N_MELS), MIN_LOG_MEL, np.float16)
                reference[: min(len(reference), len(stored["reference"]))] = stored["reference"][: len(reference)]
                for name in ("network", "partials", "shares", "onsets", "weights"):
                    parts[name].append(stored[name])
                parts["reference"].append(reference.reshape(network.shape))
        except (OSError, KeyError, ValueError) as err:
            raise DataSetError(
                f"{path}: not a readable refiner example ({err}); delete it to render it again"
            ) from None
    return {name: torch.from_numpy(np.concatenate(arrays)) for name, arrays in parts.items()}


def refiner_loss(refined: torch.Tensor, reference: torch.Tensor, weights: torch.Tensor, flux_weight: float):
    """Weighted L1 of log-mel [B, frames, 128] against the reference's, plus `flux_weight` times the L1 of their
    frame-to-frame differences (in frames both weighted)."""
    level = ((refined - reference).abs().mean(-1) * weights).sum() / weights.sum().clamp(min=1.0)
    if not flux_weight:
        return level
    pairs = weights[:, 1:] * weights[:, :-1]
    flux = (refined.diff(dim=1) - reference.diff(dim=1)).abs().mean(-1)
    return level + flux_weight * (flux * pairs).sum() / pairs.sum().clamp(min=1.0)


def refiner_inputs(examples: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The refiner's arguments from stored examples (`load_examples`, or a batch of them)."""
    return (
        examples["network"],
        examples["partials"].exp(),
        examples["shares"][..., None],
        examples["onsets"][..., None],
    )


class RefinerTrainer(TrainingLoop[Refiner]):
    """Fits a refiner to stored examples (resumable; see `TrainingLoop`); RUN_DIR/refiner.safetensors holds the
    weights to ship."""

    checkpoint_name = "refiner_last.pt"

    def __init__(self, files: list[Path], run_dir: Path, config: RefinerTrainConfig | None = None, device: str = "cpu"):
        self.tc = config or RefinerTrainConfig()
        super().__init__(run_dir, device, self.tc.seed, self.tc.max_steps, self.tc.checkpoint_every, self.tc.ema_decay)
        self.examples = load_examples(files)
        self.windows = self.examples["network"].shape[0]
        self.draws = torch.Generator().manual_seed(self.tc.seed)
        model = Refiner(self.tc.shape).to(self.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.tc.learning_rate, weight_decay=self.tc.weight_decay)
        self.start(model, optimizer)

    def learning_rate(self) -> float:
        """One cycle: from a 25th of the peak up to it over the first 5 % of the steps, then down a cosine to ~0."""
        warm = max(1, self.max_steps // 20)
        if self.step < warm:
            return self.tc.learning_rate * (0.04 + 0.96 * self.step / warm)
        progress = (self.step - warm) / max(1, self.max_steps - warm)
        return self.tc.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    def batch(self) -> dict[str, torch.Tensor]:
        """`batch_size` crops of `crop_frames` frames, all from the same frame of their windows."""
        rows = torch.randint(self.windows, (self.tc.batch_size,), generator=self.draws)
        first = int(torch.randint(WINDOW_FRAMES - self.tc.crop_frames + 1, (), generator=self.draws))
        frames = slice(first, first + self.tc.crop_frames)
        return {name: value[rows, frames].float().to(self.device) for name, value in self.examples.items()}

    def train_step(self) -> float:
        batch = self.batch()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        refined = self.network(*refiner_inputs(batch))
        loss = refiner_loss(refined, batch["reference"], batch["weights"], self.tc.flux_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def export(self) -> None:
        save_refiner(self.ema_weights, self.run_dir / REFINER_FILE)

    def extra_state(self) -> dict:
        return {"draws": self.draws.get_state()}

    def load_extra_state(self, state: dict) -> None:
        self.draws.set_state(state["draws"].cpu())
