"""The skeleton both trainers share: a model with an EMA copy, an optimiser and a step count; a checkpoint that
resumes a run exactly where it stopped; and a loop that stops cleanly.

A run stops with a checkpoint at `max_steps`, when `max_minutes` have passed, or on a terminating signal (SIGINT,
SIGTERM, SIGHUP, ...: after the current step, and then `train` raises `midisynth.signals.Terminated`, which exits with
128 + the signal's number unless caught). `RUN_DIR/<checkpoint_name>` holds model, EMA, optimiser, step, history and whatever the trainer adds
(`extra_state`), loaded with weights_only=True; `export` writes the artefact to ship (the EMA weights).

A run may be one of several processes (`ranks`, see `midisynth.training.ddp`): each steps the same model, through
`self.network` (the model as DistributedDataParallel); the main process alone keeps the EMA weights, records the
history and writes the checkpoints, and all processes stop after the same step. Nothing in a checkpoint depends on
the number of processes, so a run resumes with any number.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Iterator, Sized
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from midisynth.files import atomic_path, check_output_directory
from midisynth.training.ddp import Ranks, wrap
from midisynth.training.stopping import StopSignals

# Seeds of torch's global generator (model dropout) in the processes after the main one, whose own generator is the
# checkpointed one: seed + stride * (rank + world * step), a stream of its own for each process and resumption.
PROCESS_SEED_STRIDE = 1_000_003


def endless(loader: DataLoader) -> Iterator:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def check_batches(loader: DataLoader, data_dir: Path, batch_size: int) -> None:
    """ValueError (one line) when an epoch of `loader` has no whole batch of `batch_size` (fewer training examples
    than that): `endless` would wait for a batch for ever."""
    if len(loader) == 0:
        examples = len(loader.dataset) if isinstance(loader.dataset, Sized) else 0
        raise ValueError(
            f"{data_dir}: {examples} training window{'s' * (examples != 1)}, fewer than one batch of "
            f"{batch_size}; add pieces or lower batch_size"
        )


def weights_mismatch(weights: dict[str, torch.Tensor], model: nn.Module, all_entries: bool = True) -> str | None:
    """How `weights` do not fit `model`, naming the first entry whose shape differs or that `model` lacks (or, with
    `all_entries`, that `weights` lack); None when they fit."""
    own = model.state_dict()
    for name, tensor in weights.items():
        if name not in own:
            return f"{name} is not in this model"
        if tensor.shape != own[name].shape:
            return f"{name} is {list(tensor.shape)} there, {list(own[name].shape)} in this model"
    missing = [name for name in own if name not in weights]
    return f"{missing[0]} is missing" if all_entries and missing else None


ModelT = TypeVar("ModelT", bound=nn.Module)


class TrainingLoop(Generic[ModelT]):
    """Subclasses call `start` once their model and optimiser exist, and implement `train_step` and `export`."""

    checkpoint_name = "last.pt"

    @classmethod
    def check_run(cls, device: str, run_dir: Path) -> None:
        """What a run needs, checked before any data loads: ValueError for a device training cannot run on,
        OutputError for a run directory it cannot write its checkpoint in."""
        if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
            raise ValueError(f"--device {device!r}: training runs on cpu or cuda[:N]")
        if device != "cpu" and not torch.cuda.is_available():
            raise ValueError(f"--device {device} was asked for, but no CUDA GPU is available to torch")
        check_output_directory(run_dir, cls.checkpoint_name)

    def __init__(
        self,
        run_dir: Path,
        device: str,
        seed: int,
        max_steps: int,
        checkpoint_every: int,
        ema_decay: float,
        ranks: Ranks | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.ranks = ranks or Ranks()
        self.seed = seed
        self.max_steps = max_steps
        self.checkpoint_every = checkpoint_every
        self.ema_decay = ema_decay
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        self.step = 0
        self.history: list[dict[str, float]] = []

    def start(self, model: ModelT, optimizer: torch.optim.Optimizer) -> None:
        """Take the model (its EMA copy starts equal to it) and optimiser, then resume from the checkpoint if any;
        ValueError if the checkpoint is of another model or the processes resumed at different steps."""
        self.model: ModelT = model
        self.ema: ModelT | None = copy.deepcopy(model).eval().requires_grad_(False) if self.ranks.is_main else None
        self.optimizer = optimizer
        if self.checkpoint_path.exists():
            state = self._read_checkpoint()
            mismatch = weights_mismatch(state["model"], model)
            if mismatch is not None:
                raise ValueError(
                    f"{self.checkpoint_path}: a checkpoint of another model ({mismatch}); resume it "
                    "with the config it was trained with, or train in another run directory"
                )
            self.load_state(state)
        self.ranks.check_same_step(self.step)
        if not self.ranks.is_main:
            torch.manual_seed(self.seed + PROCESS_SEED_STRIDE * (self.ranks.rank + self.ranks.world * self.step))
        self.network: Callable[..., Any] = wrap(model, self.ranks, self.device)  # what the steps call

    @property
    def ema_weights(self) -> ModelT:
        """The EMA copy of the model, which the main process alone keeps (RuntimeError in the others)."""
        if self.ema is None:
            raise RuntimeError("only the main process keeps the EMA weights")
        return self.ema

    # -- to implement ------------------------------------------------------------------------------------------------
    def train_step(self) -> float:
        """One optimisation step of `self.model`, called through `self.network` (the EMA, the step count and
        checkpoints are the loop's); this process's loss."""
        raise NotImplementedError

    def after_step(self, loss: float) -> None:
        """Bookkeeping once `self.step` has advanced, in the main process; `loss` is the mean over the processes
        (default: the loss into the history)."""
        self.history.append({"step": self.step, "loss": loss})

    def export(self) -> None:
        """Write the weights to ship (called with every checkpoint)."""
        raise NotImplementedError

    def extra_state(self) -> dict:
        """More checkpoint entries (tensors, numbers, strings) that resuming needs."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # -- checkpoints -------------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / self.checkpoint_name

    def _read_checkpoint(self) -> dict:
        """The checkpoint's state; ValueError naming the file when it is truncated, not a checkpoint or lacks an
        entry."""
        try:
            state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        except Exception as err:  # torch.load raises many types for a damaged file
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(
                f"{self.checkpoint_path}: unreadable checkpoint ({reason}); restore it, or delete it to "
                "train from the start"
            ) from None
        missing = [
            key
            for key in ("model", "ema", "optimizer", "step", "history")
            if not isinstance(state, dict) or key not in state
        ]
        if missing:
            raise ValueError(
                f"{self.checkpoint_path}: not a complete checkpoint (no {', '.join(missing)}); restore "
                "it, or delete it to train from the start"
            )
        return state

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.history = json.loads(state["history"])
        self.load_extra_state(state)

    def save(self) -> None:
        """Write the checkpoint and the exported weights, atomically (the main process; the others do nothing)."""
        if not self.ranks.is_main:
            return
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema_weights.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "history": json.dumps(self.history),
            **self.extra_state(),
        }
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)
        self.export()

    # -- loop --------------------------------------------------------------------------------------------------------
    def ema_update(self) -> None:
        """Move the EMA weights towards the model's; the decay ramps up over the first steps, to `ema_decay`."""
        decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))
        for ema_p, p in zip(self.ema_weights.parameters(), self.model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - decay)

    def train(self, max_minutes: float | None = None, on_step: Callable[[int, float], None] | None = None) -> None:
        """Train until `max_steps`, `max_minutes` or a stop signal to any process; always ends with a checkpoint.
        Every process stops after the same step, and returns once the checkpoint is written; a process that received
        a terminating signal raises `Terminated` then instead. `on_step(step, mean loss)` is called in the main
        process."""
        start = time.monotonic()
        self.model.train()
        with StopSignals() as stop:

            def should_stop() -> bool:
                return stop.requested or (max_minutes is not None and time.monotonic() - start > 60 * max_minutes)

            try:
                while self.step < self.max_steps and not self.ranks.any(should_stop()):
                    loss = self.ranks.mean(self.train_step())
                    if self.ema is not None:
                        self.ema_update()
                    self.step += 1
                    if not self.ranks.is_main:
                        continue
                    self.after_step(loss)
                    if on_step is not None:
                        on_step(self.step, loss)
                    if self.step % self.checkpoint_every == 0:
                        self.save()
            finally:
                self.save()
        self.ranks.barrier()  # what comes next (a recipe's next stage) may read the checkpoint
        stop.stop_if_requested()
