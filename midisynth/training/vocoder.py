"""Training the Vocos-style vocoder on the data set's reference audio and features.

Objective: multi-resolution STFT distance plus log-mel L1 between the vocoded and the reference audio (no
adversarial loss: it keeps training cheap on a CPU and optimises the very distance the evaluation reports).
Resumable like the diffusion trainer; `RUN_DIR/vocoder.safetensors` holds the EMA weights.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from midisynth.audio import log_mel
from midisynth.data.store import AudioSegmentDataset
from midisynth.evaluation.metrics import mr_stft_distance
from midisynth.files import atomic_path
from midisynth.training.stopping import StopSignals
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


class VocoderTrainer:
    def __init__(self, data_dir: Path, run_dir: Path, config: VocoderTrainConfig | None = None,
                 model_config: VocosConfig | None = None, device: str = "cpu"):
        config = config or VocoderTrainConfig()
        model_config = model_config or VocosConfig()
        self.tc = config
        self.run_dir = run_dir
        self.device = torch.device(device)
        run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        self.model = Vocos(model_config).to(self.device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate, betas=(0.8, 0.99))
        data = AudioSegmentDataset(data_dir, "train", frames=config.segment_frames)
        self.loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                 generator=torch.Generator().manual_seed(config.seed))
        self.step = 0
        self.history: list[dict[str, float]] = []
        path = run_dir / "vocoder_last.pt"
        if path.exists():
            state = torch.load(path, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            self.history = json.loads(state["history"])

    def save(self) -> None:
        state = {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "step": self.step, "history": json.dumps(self.history)}
        with atomic_path(self.run_dir / "vocoder_last.pt") as tmp:
            torch.save(state, tmp)
        save_vocoder(self.ema, self.run_dir / "vocoder.safetensors", {"step": str(self.step)})

    def train(self, max_minutes: float | None = None, on_step: Callable[[int, float], None] | None = None) -> None:
        start = time.monotonic()
        self.model.train()
        with StopSignals() as stop:
            try:
                self._steps(start, max_minutes, stop, on_step)
            finally:
                self.save()

    def _steps(self, start: float, max_minutes: float | None, stop: StopSignals,
               on_step: Callable[[int, float], None] | None) -> None:
        while self.step < self.tc.max_steps:
            for batch in self.loader:
                if self.step >= self.tc.max_steps or stop.requested or (
                        max_minutes is not None and time.monotonic() - start > 60 * max_minutes):
                    return
                batch = {k: v.to(self.device) for k, v in batch.items()}
                loss = vocoder_loss(self.model, batch, self.tc.mel_weight)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optimizer.step()
                decay = min(self.tc.ema_decay, (1 + self.step) / (10 + self.step))
                for ema_p, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                    ema_p.lerp_(p.detach(), 1 - decay)
                self.step += 1
                self.history.append({"step": self.step, "loss": float(loss.detach())})
                if on_step is not None:
                    on_step(self.step, float(loss.detach()))
                if self.step % self.tc.checkpoint_every == 0:
                    self.save()
