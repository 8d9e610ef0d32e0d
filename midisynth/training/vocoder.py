"""Training the Vocos-style vocoder on the data set's reference audio and features.

Objective: multi-resolution STFT distance plus log-mel L1 between the vocoded and the reference audio (no
adversarial loss: it keeps training cheap on a CPU and optimises the very distance the evaluation reports).
Resumable like every trainer (`midisynth.training.loop`); `RUN_DIR/vocoder.safetensors` holds the EMA weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from midisynth.audio import log_mel
from midisynth.data.store import AudioSegmentDataset
from midisynth.evaluation.metrics import mr_stft_distance
from midisynth.files import atomic_path
from midisynth.model.config import check_number, check_whole
from midisynth.training.loop import TrainingLoop, check_batches, endless
from midisynth.vocoders.vocoder import VOCOS_FORMAT_TAG
from midisynth.vocoders.vocos import Vocos, VocosConfig


@dataclass(frozen=True)
class VocoderTrainConfig:
    batch_size: int = 8
    segment_frames: int = 64  # 1.28 s segments
    learning_rate: float = 1e-3
    max_steps: int = 20_000
    ema_decay: float = 0.999
    mel_weight: float = 0.5
    checkpoint_every: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        for name, least in (
            ("batch_size", 1),
            ("segment_frames", 1),
            ("checkpoint_every", 1),
            ("max_steps", 0),
            ("seed", 0),
        ):
            check_whole("vocoder train", name, getattr(self, name), least)
        check_number("vocoder train", "learning_rate", self.learning_rate, above_low=True)
        check_number("vocoder train", "mel_weight", self.mel_weight)
        check_number("vocoder train", "ema_decay", self.ema_decay, 0.0, 1.0)


def vocoder_loss(model: Vocos, batch: dict[str, torch.Tensor], mel_weight: float) -> torch.Tensor:
    audio = model(batch["features"])  # [batch, samples]
    mel = log_mel(audio).clamp(min=-11.5129)
    return mr_stft_distance(audio, batch["audio"]) + mel_weight * (mel - batch["features"]).abs().mean()


def save_vocoder(model: Vocos, path: Path, metadata: dict[str, str] | None = None, half: bool = False) -> None:
    """Write a vocoder in the format `vocoders.NeuralVocoder` loads (atomically)."""
    meta = {"format": VOCOS_FORMAT_TAG, "config": json.dumps(model.cfg.to_dict()), **(metadata or {})}
    dtype = torch.float16 if half else torch.float32
    state = {k: v.detach().to(dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


class VocoderTrainer(TrainingLoop[Vocos]):
    """Trains the Vocos-style vocoder (resumable; see `TrainingLoop`); `RUN_DIR/vocoder.safetensors` holds the EMA
    weights."""

    checkpoint_name = "vocoder_last.pt"

    def __init__(
        self,
        data_dir: Path,
        run_dir: Path,
        config: VocoderTrainConfig | None = None,
        model_config: VocosConfig | None = None,
        device: str = "cpu",
    ):
        config = config or VocoderTrainConfig()
        self.tc = config
        super().__init__(run_dir, device, config.seed, config.max_steps, config.checkpoint_every, config.ema_decay)
        model = Vocos(model_config or VocosConfig()).to(self.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(0.8, 0.99))
        data = AudioSegmentDataset(data_dir, "train", frames=config.segment_frames)
        self.loader = DataLoader(
            data,
            batch_size=config.batch_size,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(config.seed),
        )
        check_batches(self.loader, data_dir, config.batch_size)
        self._batches: Iterator[dict[str, torch.Tensor]] | None = None
        self.start(model, optimizer)

    def export(self) -> None:
        save_vocoder(self.ema_weights, self.run_dir / "vocoder.safetensors", {"step": str(self.step)})

    def train_step(self) -> float:
        if self._batches is None:
            self._batches = endless(self.loader)
        batch = {k: v.to(self.device) for k, v in next(self._batches).items()}
        loss = vocoder_loss(self.model, batch, self.tc.mel_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return float(loss.detach())
