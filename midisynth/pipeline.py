"""MIDI → tokens → windows of spectrogram (diffusion, each window conditioned on the previous) → audio.

The library entry point is `Synthesizer`:

    synth = Synthesizer.from_pretrained()            # bundled default model, CPU or CUDA
    audio = synth.render("song.mid")                  # float32 [samples] at 16 kHz
    for chunk in synth.stream(song): ...              # bounded memory, one window at a time
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from midisynth import samplers
from midisynth.audio import from_network_range, to_network_range
from midisynth.checkpoints import Checkpoint
from midisynth.constants import FRAME_RATE, HOP_LENGTH, MIN_LOG_MEL, N_MELS, WINDOW_FRAMES
from midisynth.midi import Song, read_midi
from midisynth.models import resolve_model
from midisynth.networks import SpectrogramDiffusion
from midisynth.tokens import fit_window, pad_tokens, tokenize
from midisynth.vocoders import Vocoder, load_vocoder

RELEASE_TAIL_SECONDS = 1.0  # audio kept after the last note end, for the release of the final notes
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class RenderOptions:
    """How each window is sampled. `steps=None` takes the sampler's recommended count."""

    sampler: str = "dpmpp"
    steps: int | None = None
    guidance: float = 5.0  # classifier-free guidance weight; 1 disables it
    seed: int = 0
    precision: str = "fp32"  # network arithmetic: fp32, bf16 or fp16 (autocast; sampler state stays fp32)

    def __post_init__(self) -> None:
        if self.sampler not in samplers.SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose from {', '.join(samplers.SAMPLERS)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.guidance < 1.0:
            raise ValueError(f"guidance must be >= 1 (1 disables it), got {self.guidance}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")

    @property
    def num_steps(self) -> int:
        return self.steps if self.steps is not None else samplers.SAMPLERS[self.sampler].default_steps


def pick_device(device: str = "auto") -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cuda' without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is available to torch")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def song_frames(song: Song, num_windows: int) -> int:
    """Frames to keep: the song's length plus a release tail, within the generated windows."""
    wanted = math.ceil((song.duration + RELEASE_TAIL_SECONDS) * FRAME_RATE)
    return min(wanted, num_windows * WINDOW_FRAMES)


class Synthesizer:
    """Renders MIDI with a Spectrogram Diffusion model and a vocoder."""

    def __init__(
        self,
        model: SpectrogramDiffusion,
        vocoder: Vocoder,
        device: torch.device | str = "cpu",
        options: RenderOptions | None = None,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocoder = vocoder
        self.options = options or RenderOptions()

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        device: str = "auto",
        vocoder: str | None = None,
        options: RenderOptions | None = None,
        allow_pickle: bool = False,
    ) -> Synthesizer:
        """Load a model (None: the bundled default; a directory: diffusers layout; a file: midisynth format).

        The vocoder defaults to the one shipped with the model, else Griffin-Lim.
        """
        dev = pick_device(device)
        checkpoint: Checkpoint = resolve_model(model, allow_pickle=allow_pickle)
        spec = vocoder or (str(checkpoint.vocoder_path) if checkpoint.vocoder_path else "griffin-lim")
        return cls(checkpoint.model, load_vocoder(spec, dev), dev, options)

    # -- spectrogram ------------------------------------------------------------------------------------------------
    def _denoiser(self, cache, guidance: float) -> samplers.Denoiser:
        decoder = self.model.decoder
        if guidance == 1.0:
            return lambda x, t: decoder(x, t, cache)

        def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            eps = decoder(torch.cat([x, x]), torch.cat([t, t]), cache)  # rows past the cache: unconditional
            cond, uncond = eps.chunk(2)
            return guidance * cond - (guidance - 1.0) * uncond

        return guided

    @torch.inference_mode()
    def spectrogram_windows(
        self,
        windows: list[list[int]],
        options: RenderOptions | None = None,
        on_window: Callable[[int, int], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Generate each window's log-mel features [256, 128] in order, each conditioned on the previous one."""
        opts = options or self.options
        generator = torch.Generator().manual_seed(opts.seed)
        context = torch.zeros(1, WINDOW_FRAMES, N_MELS, device=self.device)  # network range
        half = PRECISIONS[opts.precision]
        for index, window in enumerate(windows):
            window = fit_window(window, self.model.cfg.max_tokens)
            tokens = torch.from_numpy(pad_tokens([window], length=len(window))).to(self.device)
            has_context = torch.tensor([index > 0], device=self.device)
            with torch.autocast(self.device.type, dtype=half, enabled=half is not None):
                cache = self.model.encode(tokens, context, has_context)
                denoise = self._denoiser(cache, opts.guidance)
                x = samplers.sample(opts.sampler, lambda z, t: denoise(z, t).float(), (1, WINDOW_FRAMES, N_MELS),
                                    opts.num_steps, generator, self.device)
            features = from_network_range(x)  # [1, 256, 128] log-mel
            context = to_network_range(features)
            if on_window is not None:
                on_window(index + 1, len(windows))
            yield features[0].float().cpu().numpy()

    # -- audio -------------------------------------------------------------------------------------------------------
    def stream(
        self,
        song: Song,
        options: RenderOptions | None = None,
        on_window: Callable[[int, int], None] | None = None,
        mel_sink: Callable[[np.ndarray], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Audio chunks (float32, 16 kHz) of a song, one window at a time; total = `num_samples(song)`."""
        windows = tokenize(song)
        keep = song_frames(song, len(windows))

        def trimmed() -> Iterator[np.ndarray]:
            remaining = keep
            source = (
                self.spectrogram_windows(windows, options, on_window)
                if song.notes
                else _silent_windows(len(windows), on_window)
            )
            for features in source:
                part = features[: min(remaining, WINDOW_FRAMES)]
                remaining -= part.shape[0]
                if mel_sink is not None:
                    mel_sink(part)
                yield part
                if remaining <= 0:
                    break

        yield from self.vocoder.stream(trimmed())

    def num_samples(self, song: Song) -> int:
        """Length in samples of `stream(song)`'s output."""
        return song_frames(song, len(tokenize(song))) * HOP_LENGTH

    def render(self, midi: str | Path | bytes | Song, options: RenderOptions | None = None) -> np.ndarray:
        """Render a whole song to float32 audio [samples] at 16 kHz (in memory; use `stream` for long songs)."""
        song = midi if isinstance(midi, Song) else read_midi(midi)
        chunks = list(self.stream(song, options))
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def with_options(self, **changes) -> Synthesizer:
        return Synthesizer(self.model, self.vocoder, self.device, replace(self.options, **changes))


def _silent_windows(count: int, on_window: Callable[[int, int], None] | None) -> Iterator[np.ndarray]:
    """Floor-level features for a song without notes: renders silence without running the model."""
    for index in range(count):
        if on_window is not None:
            on_window(index + 1, count)
        yield np.full((WINDOW_FRAMES, N_MELS), MIN_LOG_MEL, dtype=np.float32)
