"""A training recipe: configs trained one after another, each stage starting from the weights of the one before.

Stage k trains in `RUN/<config name>/` and starts from stage k-1's EMA weights (`model.safetensors`); the first stage
starts from `init_from`, or from random weights. A recipe of one config is one run, in `RUN` itself. Every stage resumes from its own checkpoint, and a stage whose
weights have reached its `max_steps` is skipped, so re-running a recipe continues it where it stopped. A stage that
stops early (Ctrl-C, SIGTERM, the time limit) ends the recipe: the next one must not start from half-trained weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from midisynth.model.config import ModelConfig, load_config

if TYPE_CHECKING:
    from midisynth.training.ddp import Ranks

WEIGHTS = "model.safetensors"  # a stage's EMA weights, what the next stage starts from


@dataclass(frozen=True)
class Stage:
    config: Path
    run_dir: Path


def recipe_stages(configs: list[Path], run_root: Path) -> list[Stage]:
    """Each config's stage, in `run_root/<config file name without .toml>` (names must differ); one config's in
    `run_root` itself."""
    if len(configs) == 1:
        return [Stage(Path(configs[0]), Path(run_root))]
    stages = [Stage(Path(config), Path(run_root) / Path(config).stem) for config in configs]
    names = [stage.run_dir.name for stage in stages]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"recipe: configs {repeated} appear twice; each stage needs its own run directory")
    return stages


def trained_steps(run_dir: Path, model: ModelConfig | None = None) -> int:
    """The step at which a run last saved its weights (0 if it has none, or with `model`, none of that model)."""
    from safetensors import safe_open

    weights = Path(run_dir) / WEIGHTS
    if not weights.is_file():
        return 0
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata() or {}
    if model is not None and json.loads(metadata.get("model_config", "null")) != json.loads(
        json.dumps(model.to_dict())
    ):
        return 0
    return int(metadata.get("step", 0))


def train_recipe(
    configs: list[Path],
    data_dir: Path,
    run_root: Path,
    device: str = "cpu",
    init_from: Path | None = None,
    max_minutes: float | None = None,
    on_stage: Callable[[Stage, int, int], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    ranks: Ranks | None = None,
) -> Path | None:
    """Train the recipe's stages in order; returns the last stage's weights, or None if a stage stopped at the time
    limit (a terminating signal raises `midisynth.signals.Terminated` once the stage's checkpoint is written).

    `on_stage(stage, done_steps, max_steps)` is called as each stage starts (also for one that is skipped);
    `max_minutes` bounds the whole call. `ranks`: this process's place among torchrun's (`midisynth.training.ddp`);
    every process runs the recipe, and each stage's weights are written before any process starts the next.
    """
    from midisynth.training.diffusion import Trainer

    start = time.monotonic()
    previous = init_from
    for stage in recipe_stages(configs, run_root):
        config = load_config(stage.config)
        done = trained_steps(stage.run_dir, config.model)  # weights of another model: its run says why not
        if done < config.train.max_steps:
            left = None if max_minutes is None else max_minutes - (time.monotonic() - start) / 60
            if left is not None and left <= 0:
                return None
            trainer = Trainer(config, data_dir, stage.run_dir, device=device, init_from=previous, ranks=ranks)
            if on_stage is not None:
                on_stage(stage, trainer.step, config.train.max_steps)
            trainer.train(max_minutes=left, on_step=on_step)
            if trainer.step < config.train.max_steps:
                return None
        elif on_stage is not None:
            on_stage(stage, done, config.train.max_steps)
        previous = stage.run_dir / WEIGHTS
    return previous
