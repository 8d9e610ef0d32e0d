"""Training Spectrogram Diffusion (paper §4): ε- or v-prediction, L1 loss, conditioning dropout.

Resumable like every trainer (`midisynth.training.loop`): `RUN_DIR/last.pt` holds model, EMA, optimiser, step and
RNG states; `RUN_DIR/model.safetensors` holds the EMA weights in midisynth's format, the artefact to ship. Trains
alone or as one of torchrun's processes (`midisynth.training.ddp`), each on its rows of the global batch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, WeightedRandomSampler

from midisynth.audio import to_network_range
from midisynth.data.store import WindowDataset, collate_windows, load_records, piece_source
from midisynth.files import save_text_atomic
from midisynth.model.checkpoints import load_model_file, save_model
from midisynth.model.config import Config
from midisynth.model.networks import SpectrogramDiffusion
from midisynth.model.noise_schedule import q_sample, v_target
from midisynth.model.note_inputs import apply_gain
from midisynth.precision import hardware, training_precision
from midisynth.training.ddp import RankBatches, Ranks, RowSlice, whole_batch
from midisynth.training.loop import TrainingLoop, check_batches, endless, weights_mismatch

CUDA_LOADER_WORKERS = 4  # data loader processes per training process on CUDA, unless the config says


def _move(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def diffusion_loss(
    model: SpectrogramDiffusion,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator,
    cond_dropout: float,
    loss_type: str,
    rows: RowSlice | None = None,
    network: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """One training objective evaluation on a batch of windows.

    batch: tokens [B, L] int, targets [B, 256, 128] log-mel, context [B, 256, 128] log-mel, context_mask [B] bool,
    and for a model with a frame cue (cue_dims), note_cue [B, 256, cue_dims].
    Rows whose conditioning is dropped are moved to the end of the batch, where the decoder skips cross-attention
    (the same unconditional branch the guided samplers use). `rows`: which rows of the global batch these are
    (default: all); the dropout mask, times and noise are drawn for the global batch and these rows taken.
    `network`: what to call, `model` as DistributedDataParallel or compiled (default: `model`).
    """
    device = batch["targets"].device
    x0 = to_network_range(batch["targets"])
    rows = rows or whole_batch(x0.shape[0])
    keep = rows.rand(generator) >= cond_dropout
    order = torch.argsort(~keep, stable=True).to(device)  # kept rows first
    num_conditioned = int(keep.sum())
    t = rows.rand(generator).to(device)
    eps = rows.randn(generator, *x0.shape[1:]).to(device)
    z_t = q_sample(x0, eps, t)
    note_cue = batch["note_cue"][order] if "note_cue" in batch else None
    pred = (model if network is None else network)(
        z_t[order],
        t[order],
        batch["tokens"][order],
        to_network_range(batch["context"])[order],
        batch["context_mask"][order],
        num_conditioned=num_conditioned,
        note_cue=note_cue,
    )
    target = v_target(x0, eps, t) if model.cfg.prediction == "v" else eps
    error = pred.float() - target[order]
    return error.abs().mean() if loss_type == "l1" else error.pow(2).mean()


def jitter_context_level(
    context: torch.Tensor, std: float, generator: torch.Generator, rows: RowSlice | None = None
) -> torch.Tensor:
    """Each row's context [B, 256, 128] log-mel made louder or softer by one random gain, N(0, std) log units; bins
    at the floor (silence) stay there. `rows`: which rows of the global batch these are (default: all); the gains
    are drawn for the global batch.

    A model trained on true contexts learns to copy their level, so at inference a window rendered slightly too soft
    makes the next one softer, and the level drifts from window to window. Trained on contexts whose level is off,
    a model must take the level from the notes instead.
    """
    gain = (rows or whole_batch(context.shape[0])).randn(generator).to(context.device) * std  # [B]
    return apply_gain(context, gain[:, None].expand(context.shape[:2]))


def initial_weights(
    source: SpectrogramDiffusion, target: SpectrogramDiffusion, origin: Path | str = "--init-from"
) -> dict[str, torch.Tensor]:
    """`source`'s weights for `target`'s configuration. Modules that only `target` has (the decoder's cue
    projection) keep `target`'s initial values, zeros, so that its output starts as `source`'s. ValueError naming
    `origin` (where `source` came from) for weights of another size."""
    mismatch = weights_mismatch(source.state_dict(), target, all_entries=False)
    if mismatch is not None:
        raise ValueError(
            f"{origin}: weights of another model size than the config's ({mismatch}); start from "
            "weights of the same size, or give the config they were trained with"
        )
    return {**target.state_dict(), **source.state_dict()}


def loader_workers(num_workers: int | None, device: torch.device) -> int:
    """Data loader processes per training process: the config's `num_workers`, by default 0 on CPU (workers would
    take the threads that compute) and CUDA_LOADER_WORKERS on CUDA (they prepare batches while the GPU computes)."""
    if num_workers is not None:
        return num_workers
    return CUDA_LOADER_WORKERS if device.type == "cuda" else 0


class Trainer(TrainingLoop[SpectrogramDiffusion]):
    """Trains a SpectrogramDiffusion model on a data set's windows (resumable; see `TrainingLoop`), alone or as one
    of torchrun's processes (`ranks`), each on its rows of the global batch of `batch_size` windows."""

    def __init__(
        self,
        config: Config,
        data_dir: Path,
        run_dir: Path,
        device: str = "cpu",
        init_from: Path | None = None,
        ranks: Ranks | None = None,
    ):
        self.cfg = config
        self.tc = config.train
        super().__init__(
            run_dir, device, self.tc.seed, self.tc.max_steps, self.tc.checkpoint_every, self.tc.ema_decay, ranks
        )
        self.rows = self.ranks.rows(self.tc.batch_size)
        self.precision = training_precision(self.tc.precision, hardware(self.device.type, self.device.index))
        model = SpectrogramDiffusion(config.model).to(self.device)
        if init_from is not None:
            model.load_state_dict(initial_weights(load_model_file(init_from).model, model, init_from))
        decoder = model.decoder
        new = [] if decoder.cue_proj is None else list(decoder.cue_proj.parameters())
        groups = [{"params": [p for p in model.parameters() if all(p is not q for q in new)], "lr_scale": 1.0}]
        if new:
            groups.append({"params": new, "lr_scale": self.tc.cue_lr_scale})
        optimizer = torch.optim.AdamW(
            groups, lr=self.tc.learning_rate, betas=(0.9, 0.99), weight_decay=self.tc.weight_decay
        )
        self.generator = torch.Generator().manual_seed(self.tc.seed)
        train_set = WindowDataset(data_dir, split="train", model=config.model)
        # a data set may hold nothing out (`midisynth.data.holdout`): then there is no held-out loss
        self.heldout = (
            WindowDataset(data_dir, split="heldout", model=config.model) if load_records(data_dir, "heldout") else None
        )
        self._collate = partial(collate_windows, max_tokens=config.model.max_tokens)
        self.loader = self._loader(train_set)
        check_batches(self.loader, data_dir, self.tc.batch_size)
        self._batches: Iterator[dict[str, torch.Tensor]] | None = None
        self.start(model, optimizer)
        if self.tc.compile:
            self.network = torch.compile(self.network)

    def _loader(self, train_set: WindowDataset) -> DataLoader:
        """This process's rows of the global batches: shuffled epochs, or with `source_weights` weighted draws."""
        loader_gen = torch.Generator().manual_seed(self.tc.seed + 1)
        sampler: Sampler[int]
        if self.tc.source_weights:
            weights = [self.tc.source_weights.get(piece_source(record.piece_id), 1.0) for record, _ in train_set.index]
            sampler = WeightedRandomSampler(weights, len(train_set), replacement=True, generator=loader_gen)
        else:
            sampler = RandomSampler(train_set, generator=loader_gen)
        batches = RankBatches(BatchSampler(sampler, self.tc.batch_size, drop_last=True), self.rows)
        workers = loader_workers(self.tc.num_workers, self.device)
        return DataLoader(
            train_set,
            batch_sampler=batches,
            collate_fn=self._collate,
            num_workers=workers,
            generator=loader_gen,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )

    # -- checkpoints: the loop's, plus the noise generator and torch's RNG, and the EMA weights as the artefact ------
    def extra_state(self) -> dict:
        return {"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}

    def load_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

    def export(self) -> None:
        save_model(self.ema_weights, self.run_dir / "model.safetensors", {"step": str(self.step)})
        save_text_atomic(self.run_dir / "history.json", json.dumps(self.history, indent=1))

    # -- steps -------------------------------------------------------------------------------------------------------
    def _lr(self) -> float:
        """Learning rate of the coming step: linear warm-up, then constant or cosine decay to `min_lr_ratio`."""
        warm = min(1.0, (self.step + 1) / max(1, self.tc.warmup_steps))
        if self.tc.lr_schedule == "constant":
            return self.tc.learning_rate * warm
        progress = min(1.0, self.step / max(1, self.tc.max_steps))
        floor = self.tc.min_lr_ratio
        return self.tc.learning_rate * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    def _autocast(self):
        enabled = self.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @torch.no_grad()
    def heldout_loss(self) -> float:
        """Mean loss of the EMA model on fixed held-out batches with fixed noise (comparable across evaluations); only
        for a data set that holds something out."""
        assert self.heldout is not None
        gen = torch.Generator().manual_seed(1234)
        loader = DataLoader(self.heldout, batch_size=self.tc.batch_size, shuffle=False, collate_fn=self._collate)
        losses = []
        for i, batch in enumerate(loader):
            if i >= self.tc.eval_batches:
                break
            with self._autocast():
                losses.append(
                    float(diffusion_loss(self.ema_weights, _move(batch, self.device), gen, 0.0, self.tc.loss))
                )
        return sum(losses) / max(1, len(losses))

    def train_step(self) -> float:
        if self._batches is None:
            self._batches = endless(self.loader)
        batch = _move(next(self._batches), self.device)
        if self.tc.context_level_jitter > 0:
            batch["context"] = jitter_context_level(
                batch["context"], self.tc.context_level_jitter, self.generator, self.rows
            )
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr() * group["lr_scale"]
        with self._autocast():
            loss = diffusion_loss(
                self.model, batch, self.generator, self.tc.cond_dropout, self.tc.loss, self.rows, self.network
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # several processes: DistributedDataParallel averages the gradients over them
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
        if not math.isfinite(float(grad_norm)):
            raise FloatingPointError(f"non-finite gradient norm at step {self.step}")
        self.optimizer.step()
        return float(loss.detach())

    def after_step(self, loss: float) -> None:
        record = {"step": self.step, "loss": loss, "time": time.time()}
        if self.step % self.tc.eval_every == 0 and self.heldout is not None:
            record["heldout_loss"] = self.heldout_loss()
        if self.step % self.tc.log_every == 0 or "heldout_loss" in record:
            self.history.append(record)
