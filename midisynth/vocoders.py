"""Spectrogram inverters: log-mel features [frames, 128] -> 16 kHz audio [frames * 320].

- `GriffinLim`: needs no weights; inverts midisynth's exact front end (mel pseudo-inverse, fast Griffin-Lim).
- `OnnxVocoder`: an ONNX model with the official MelGAN signature (`input_features` [batch, frames, 128]).
- `NeuralVocoder`: midisynth's bundled Vocos-style vocoder (safetensors).

Every vocoder streams: `stream(chunks)` turns successive spectrogram chunks into audio chunks with bounded memory,
vocoding each block with some surrounding frames of context and cross-fading block edges.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from midisynth.audio import FFT_SIZE, mel_filterbank
from midisynth.constants import HOP_LENGTH, N_MELS, WIN_LENGTH

CONTEXT_FRAMES = 32  # frames of context vocoded on each side of a streamed block
CROSSFADE_FRAMES = 4  # frames over which consecutive blocks are blended


class Vocoder(Protocol):
    def __call__(self, features: np.ndarray) -> np.ndarray: ...

    def stream(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]: ...


class StreamingMixin:
    """`stream()` for any whole-signal vocoder `__call__`: blocks with context and a cross-fade at the seams."""

    def __call__(self, features: np.ndarray) -> np.ndarray:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def stream(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Audio for the concatenation of `chunks`, emitted block by block; total samples = total frames * 320."""
        fade = CROSSFADE_FRAMES * HOP_LENGTH
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)
        buffer = np.zeros((0, N_MELS), np.float32)  # features of frames [offset, offset + len)
        offset = 0  # song frame index of buffer[0]
        emitted = 0  # frames whose audio has been yielded
        pending_tail: np.ndarray | None = None  # audio of the next `fade` samples from the previous block

        def block(end: int, final: bool) -> np.ndarray:
            nonlocal pending_tail
            audio = self(buffer)  # [len(buffer) * 320]
            start = (emitted - offset) * HOP_LENGTH
            stop = (end - offset) * HOP_LENGTH
            out = audio[start:stop].copy()
            if pending_tail is not None:
                n = min(fade, out.shape[0])
                out[:n] = pending_tail[:n] * (1.0 - ramp[:n]) + out[:n] * ramp[:n]
            pending_tail = None if final else audio[stop : stop + fade]
            return out

        for chunk in chunks:
            buffer = np.concatenate([buffer, np.asarray(chunk, np.float32)])
            available = offset + buffer.shape[0]
            ready = available - CONTEXT_FRAMES  # frames with enough right context
            if ready - emitted >= CONTEXT_FRAMES:
                yield block(ready, final=False)
                emitted = ready
                keep_from = max(0, emitted - CONTEXT_FRAMES - offset)
                buffer, offset = buffer[keep_from:], offset + keep_from
        end = offset + buffer.shape[0]
        if end > emitted:
            yield block(end, final=True)


class GriffinLim(StreamingMixin):
    """Fast Griffin-Lim (momentum 0.99) on the pseudo-inverted mel magnitudes of midisynth's front end."""

    def __init__(self, iterations: int = 32, momentum: float = 0.99, device: torch.device | str = "cpu", seed: int = 0):
        self.iterations = iterations
        self.momentum = momentum
        self.device = torch.device(device)
        self.seed = seed
        self._mel_pinv = torch.from_numpy(np.linalg.pinv(mel_filterbank())).to(self.device)  # [128, 513]
        self._window = torch.hann_window(WIN_LENGTH, periodic=True, device=self.device)

    def _stft(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.stft(audio, FFT_SIZE, HOP_LENGTH, WIN_LENGTH, self._window, center=True, return_complex=True)

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(spec, FFT_SIZE, HOP_LENGTH, WIN_LENGTH, self._window, center=True, length=length)

    @torch.inference_mode()
    def __call__(self, features: np.ndarray) -> np.ndarray:
        frames = features.shape[0]
        length = frames * HOP_LENGTH
        mel = torch.exp(torch.as_tensor(features, dtype=torch.float32, device=self.device))  # [frames, 128]
        magnitude = torch.clamp(mel @ self._mel_pinv, min=0.0).T  # [513, frames]
        # The front end's frame k is centred on sample 320k + 320; the centred STFT here puts it on 320k,
        # so this works on the signal advanced by one hop and shifts back at the end.
        g = torch.Generator().manual_seed(self.seed)
        angles = torch.polar(torch.ones_like(magnitude), 2 * torch.pi * torch.rand(magnitude.shape, generator=g))
        previous = torch.zeros_like(angles)
        for _ in range(self.iterations):
            rebuilt = self._stft(self._istft(magnitude * angles, length))[:, :frames]
            angles = rebuilt - (self.momentum / (1 + self.momentum)) * previous
            angles = angles / (angles.abs() + 1e-16)
            previous = rebuilt
        audio = self._istft(magnitude * angles, length)
        return torch.nn.functional.pad(audio, (HOP_LENGTH, 0))[:length].cpu().numpy().astype(np.float32)


class OnnxVocoder(StreamingMixin):
    """An ONNX spectrogram inverter with the official MelGAN I/O: `input_features` [batch, frames, 128] -> audio."""

    INPUT_NAME = "input_features"

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        try:
            import onnxruntime
        except ImportError:
            raise ImportError("ONNX vocoders need onnxruntime: pip install 'midisynth[onnx]'") from None
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX vocoder file")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if torch.device(device).type == "cuda" else [
            "CPUExecutionProvider"]
        available = set(onnxruntime.get_available_providers())
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=[p for p in providers if p in available])
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise ValueError(f"{path}: not a loadable ONNX model ({err})") from None
        names = [i.name for i in self.session.get_inputs()]
        if self.INPUT_NAME not in names:
            raise ValueError(f"{path}: ONNX vocoder must take input '{self.INPUT_NAME}' [batch, frames, 128]; it takes {names}")

    def __call__(self, features: np.ndarray) -> np.ndarray:
        frames = features.shape[0]
        (audio,) = self.session.run(None, {self.INPUT_NAME: features[None].astype(np.float32)})[:1]
        audio = np.asarray(audio, np.float32).reshape(-1)
        out = np.zeros(frames * HOP_LENGTH, np.float32)
        n = min(out.shape[0], audio.shape[0])
        out[:n] = audio[:n]
        return out


class NeuralVocoder(StreamingMixin):
    """midisynth's Vocos-style vocoder from a safetensors file whose metadata holds its config."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        from safetensors import safe_open
        from safetensors.torch import load_file

        from midisynth.vocos import Vocos, VocosConfig

        path = Path(path)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != VOCOS_FORMAT_TAG:
            raise ValueError(f"{path}: not a midisynth vocoder (format tag {meta.get('format')!r})")
        self.device = torch.device(device)
        self.model = Vocos(VocosConfig(**json.loads(meta["config"]))).to(self.device).eval()
        self.model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})

    @torch.inference_mode()
    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(features, dtype=torch.float32, device=self.device)[None]
        return self.model(x)[0].cpu().numpy().astype(np.float32)


VOCOS_FORMAT_TAG = "midisynth.vocos/1"


def load_vocoder(spec: str, device: torch.device | str = "cpu") -> Vocoder:
    """'griffin-lim', a path to an `.onnx` model, or a path to a midisynth vocoder `.safetensors` file."""
    if spec == "griffin-lim":
        return GriffinLim(device=device)
    if spec.endswith(".onnx"):
        return OnnxVocoder(spec, device)
    if spec.endswith(".safetensors"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"{spec}: no such vocoder file")
        return NeuralVocoder(spec, device)
    raise ValueError(f"unknown vocoder {spec!r}: use griffin-lim, a .onnx file or a midisynth vocoder .safetensors")
