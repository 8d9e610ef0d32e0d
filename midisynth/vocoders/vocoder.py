"""Spectrogram inverters: log-mel features [frames, 128] -> 16 kHz float32 audio [frames * 320].

- `GriffinLim`: needs no weights; inverts midisynth's exact front end (`audio.stft` framing): mel -> linear
  magnitude by Itakura-Saito multiplicative updates, then fast Griffin-Lim with momentum.
- `OnnxVocoder`: an ONNX model with the official MelGAN I/O (`input_features` [batch, frames, 128] -> audio).
- `NeuralVocoder`: midisynth's Vocos-style vocoder (safetensors, trained by `midisynth train-vocoder`).

Every vocoder streams: `stream(chunks)` vocodes blocks of at most BLOCK_FRAMES frames, each with context
frames on both sides, and cross-fades consecutive blocks, so memory stays bounded however long the song is.
`load_vocoder` maps a spec string to a vocoder; new kinds register in `NAMED_VOCODERS` or
`VOCODER_FILE_TYPES`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from midisynth.audio import check_finite, istft, mel_matrix, reproject
from midisynth.constants import HOP_LENGTH, N_MELS
from midisynth.vocoders.pghi import pghi_phase

CONTEXT_FRAMES = 32  # frames vocoded on each side of a streamed block (0.64 s)
CROSSFADE_FRAMES = 4  # frames over which consecutive streamed blocks are blended (80 ms)
BLOCK_FRAMES = 256  # most frames a streamed block emits

INITIAL_PHASES = ("pghi", "random")  # GriffinLim's starting phase: see GriffinLim
GRIFFIN_LIM_ITERATIONS = 3  # from the PGHI start; see GriffinLim
SYNTHESIS_HOP = 160  # samples between GriffinLim's STFT frames: twice the features' frame rate; see GriffinLim
MEL_INVERSION_ITERATIONS = 6  # multiplicative updates of the mel -> linear magnitude fit (10 or 15 score alike)
VOCOS_FORMAT_TAG = "midisynth.vocos/1"

# (features [n, 128], song frame of features[0], song frame where the block's output begins) -> [n * 320]
BlockVocoder = Callable[[np.ndarray, int, int], np.ndarray]


class Vocoder(Protocol):
    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Log-mel [frames, 128] -> float32 audio [frames * 320] at 16 kHz."""
        ...

    def stream(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Successive log-mel chunks [frames_i, 128] -> audio chunks; total samples = total frames * 320."""
        ...


class BlockStreaming:
    """Gives a whole-signal vocoder `stream()`: blocks with context on both sides, cross-faded at seams."""

    context_frames = CONTEXT_FRAMES  # frames vocoded after a block's last, and by default before its first
    left_context_frames: int | None = None  # frames vocoded before a block's first; None: context_frames

    def __call__(self, features: np.ndarray) -> np.ndarray:  # pragma: no cover - subclasses implement it
        raise NotImplementedError

    def block_vocoder(self) -> BlockVocoder:
        """A fresh block function for one stream; vocoders with state across blocks override this."""
        return lambda features, start, output_start: self(features)

    def stream(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Audio for the concatenation of `chunks`, block by block; total samples = total frames * 320.

        Holds at most 3 x context_frames + the largest chunk's frames of features at a time. A chunk holding NaN
        or infinity raises NonFiniteError (midisynth.audio) before it is vocoded.
        """
        vocode = self.block_vocoder()
        context, fade = self.context_frames, CROSSFADE_FRAMES * HOP_LENGTH
        left = context if self.left_context_frames is None else min(self.left_context_frames, context)
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)
        buffer = np.zeros((0, N_MELS), np.float32)  # features of song frames [offset, offset + len(buffer))
        offset = emitted = 0  # song frame of buffer[0]; frames whose audio has been yielded
        tail = np.zeros(0, np.float32)  # previous block's audio for the `fade` samples after its end

        def block(end: int) -> np.ndarray:
            """Audio of song frames [emitted, end), cross-faded into the previous block's tail."""
            nonlocal tail
            start = max(offset, emitted - left)
            features = buffer[start - offset : end + context - offset]
            audio = vocode(features, start, emitted)  # [len(features) * 320]
            lo, hi = (emitted - start) * HOP_LENGTH, (end - start) * HOP_LENGTH
            out = audio[lo:hi].copy()
            n = min(tail.shape[0], out.shape[0])
            out[:n] = tail[:n] * (1.0 - ramp[:n]) + out[:n] * ramp[:n]
            tail = audio[hi : hi + fade]
            return out

        for chunk in chunks:
            chunk = check_finite(np.asarray(chunk, np.float32).reshape(-1, N_MELS), "the rendered spectrogram")
            buffer = np.concatenate([buffer, chunk])
            while offset + buffer.shape[0] - context - emitted >= context:  # enough frames with right context
                end = min(offset + buffer.shape[0] - context, emitted + BLOCK_FRAMES)
                yield block(end)
                emitted = end
                keep = max(0, emitted - context - offset)
                buffer, offset = buffer[keep:], offset + keep
        total = offset + buffer.shape[0]
        while emitted < total:
            end = min(total, emitted + BLOCK_FRAMES)
            yield block(end)
            emitted = end


class GriffinLim(BlockStreaming):
    """Inverts midisynth's front end without weights: mel -> linear magnitude, then fast Griffin-Lim.

    The linear magnitude [frames, 513] is the non-negative fit of mel = magnitude @ mel_filterbank() under the
    Itakura-Saito divergence (multiplicative updates, Fevotte & Idier 2011, from the clipped pseudo-inverse),
    which weighs errors relatively, like the log features. Phases come from fast Griffin-Lim (Perraudin et al.
    2013: alternate projections on the magnitude and on consistent STFTs, extrapolated with `momentum`). It starts
    from the phase that phase gradient heuristic integration derives from the magnitude (`initial_phase="pghi"`,
    `midisynth.vocoders.pghi`), which lines up the partials of an onset across frequency; `initial_phase="random"`:
    seeded random phases (quiet bins start from those either way).

    Both work on an STFT grid of `hop` samples (640-sample Hann window, 1024-point FFT, `audio.stft`'s framing):
    at the features' own hop (320) each window overlaps only its two neighbours, too little redundancy for the phase
    heuristic and the projections to agree across frames, and onsets come out smeared. At SYNTHESIS_HOP (160) the
    magnitude of each frame between two feature frames is their mean (linear interpolation in time); the
    feature frames themselves are kept. From the PGHI start a few iterations make the spectrum consistent enough:
    more fit the log-mel magnitudes a little better but wash out the onsets that the PGHI phase lines up (fewer
    transcribed notes; measurements: docs/experiments.md, "Griffin-Lim on a finer grid"), so the default is
    GRIFFIN_LIM_ITERATIONS. Each iteration's projection is `audio.reproject` (block-wise, without building the
    signal).
    """

    # Context of a streamed block: PGHI integrates forward in time and each iteration carries consistency one frame
    # further, so frames more than a few past the block no longer change it; before it, the block keeps the spectrum
    # the previous block settled (`block_vocoder`), and only the frames its windows overlap shape it.
    context_frames = 2 * CROSSFADE_FRAMES
    left_context_frames = CROSSFADE_FRAMES

    def __init__(
        self,
        iterations: int = GRIFFIN_LIM_ITERATIONS,
        momentum: float = 0.99,
        device: torch.device | str = "cpu",
        seed: int = 0,
        initial_phase: str = "pghi",
        hop: int = SYNTHESIS_HOP,
    ):
        if initial_phase not in INITIAL_PHASES:
            raise ValueError(f"unknown initial phase {initial_phase!r}: use {' or '.join(INITIAL_PHASES)}")
        if hop <= 0 or HOP_LENGTH % hop:  # (so it divides the 640-sample window too)
            raise ValueError(f"Griffin-Lim's hop must divide {HOP_LENGTH} samples, not {hop}")
        self.iterations = iterations
        self.momentum = momentum
        self.device = torch.device(device)
        self.seed = seed
        self.initial_phase = initial_phase
        self.hop = hop
        self.upsampling = HOP_LENGTH // hop  # synthesis frames per feature frame
        mel = mel_matrix(self.device)  # [513, 128]
        # The filterbank is 1.5 % non-zero (each linear bin feeds at most two mel bands): as sparse CSR matrices its
        # products cost a quarter of dense ones.
        with warnings.catch_warnings():  # torch calls its sparse CSR support beta
            warnings.simplefilter("ignore")
            self._to_mel = mel.T.contiguous().to_sparse_csr()  # [128, 513]
            self._from_mel = mel.contiguous().to_sparse_csr()  # [513, 128]
        self._pinv = torch.linalg.pinv(mel).T.contiguous()  # [513, 128]

    def magnitude(self, features: torch.Tensor) -> torch.Tensor:
        """Log-mel [frames, 128] -> non-negative linear STFT magnitude [frames, 513] (the features' grid)."""
        mel = torch.exp(features).T  # [128, frames]: bins along rows, for the sparse products
        frames = mel.shape[1]
        magnitude = (self._pinv @ mel).clamp(min=1e-8)  # [513, frames]
        for _ in range(MEL_INVERSION_ITERATIONS):
            fitted = self._to_mel @ magnitude + 1e-12  # [128, frames]
            sums = self._from_mel @ torch.cat([mel / fitted**2, 1.0 / fitted], dim=1)  # [513, 2 * frames]
            magnitude = magnitude * (sums[:, :frames] / (sums[:, frames:] + 1e-12)).sqrt()
        return magnitude.T

    def synthesis_magnitude(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Magnitude [frames, 513] on the features' grid -> [frames * upsampling, 513] on the synthesis grid: each
        feature frame, then the linear interpolation towards the next (the last frame is held)."""
        if self.upsampling == 1:
            return magnitude
        following = torch.cat([magnitude[1:], magnitude[-1:]])  # [frames, 513]
        steps = torch.arange(self.upsampling, device=magnitude.device, dtype=magnitude.dtype) / self.upsampling
        fine = torch.lerp(magnitude[:, None], following[:, None], steps[None, :, None])  # [frames, upsampling, 513]
        return fine.flatten(0, 1)

    def invert(self, magnitude: torch.Tensor, phase: torch.Tensor, fixed: torch.Tensor | None = None) -> torch.Tensor:
        """Linear magnitude and initial unit phasors [frames, 513] (synthesis grid) -> complex STFT [frames, 513].

        `fixed` [k, 513]: complex STFT values that the first k frames keep (settled by a previous block).
        """

        def settle(spectrum: torch.Tensor) -> torch.Tensor:
            if fixed is not None:
                spectrum[: fixed.shape[0]] = fixed
            return spectrum

        spectrum = settle(magnitude * phase)
        previous = None
        for _ in range(self.iterations):
            rebuilt = reproject(spectrum, self.hop)  # nearest consistent spectrum
            target = rebuilt if previous is None else torch.lerp(previous, rebuilt, 1.0 + self.momentum)
            previous = rebuilt
            spectrum = settle(magnitude * torch.sgn(target))
        return spectrum

    def start_phase(
        self, magnitude: torch.Tensor, generator: torch.Generator, known: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Initial unit phasors [frames, 513] for the magnitude [frames, 513] (synthesis grid); `known` [k, 513]:
        the first k frames' phasors, kept (and, for PGHI, integrated from)."""
        if self.initial_phase == "pghi":
            return pghi_phase(magnitude, generator, known, self.hop)
        angle = 2 * torch.pi * torch.rand(magnitude.shape, generator=generator)
        phase = torch.polar(torch.ones_like(angle), angle).to(self.device)
        if known is not None:
            phase[: known.shape[0]] = known
        return phase

    def _magnitude(self, features: np.ndarray) -> torch.Tensor:
        """Log-mel [frames, 128] -> magnitude [frames * upsampling, 513] on the synthesis grid."""
        logged = torch.as_tensor(np.asarray(features, np.float32), device=self.device)  # [frames, 128]
        return self.synthesis_magnitude(self.magnitude(logged))

    @torch.inference_mode()
    def __call__(self, features: np.ndarray) -> np.ndarray:
        if features.shape[0] == 0:
            return np.zeros(0, np.float32)
        magnitude = self._magnitude(features)
        phase = self.start_phase(magnitude, torch.Generator().manual_seed(self.seed))
        return istft(self.invert(magnitude, phase), self.hop).cpu().numpy()

    def block_vocoder(self) -> BlockVocoder:
        """Each block starts from the previous block's phases on shared frames and keeps its spectrum on the
        frames already output plus the cross-fade, so consecutive blocks agree where they meet."""
        generator = torch.Generator().manual_seed(self.seed)
        previous: tuple[int, torch.Tensor] | None = None  # (its first song frame, STFT [synthesis frames, 513])
        up = self.upsampling

        @torch.inference_mode()
        def vocode(features: np.ndarray, start: int, output_start: int) -> np.ndarray:
            nonlocal previous
            magnitude = self._magnitude(features)
            known = fixed = None
            if previous is not None:
                prev_start, prev_spectrum = previous
                shared = prev_spectrum[(start - prev_start) * up :][: magnitude.shape[0]]
                known = torch.sgn(shared)
                fixed = shared[: (output_start + CROSSFADE_FRAMES - start) * up]
            spectrum = self.invert(magnitude, self.start_phase(magnitude, generator, known), fixed)
            previous = (start, spectrum)
            return istft(spectrum, self.hop).cpu().numpy()

        return vocode


class OnnxVocoder(BlockStreaming):
    """An ONNX spectrogram inverter with the official MelGAN I/O.

    `input_features` [batch, frames, 128] float32 -> audio [batch, samples] or [batch, 1, samples] at 16 kHz,
    cut or zero-padded to frames * 320 samples.
    """

    INPUT_NAME = "input_features"

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        try:
            import onnxruntime
        except ImportError:
            raise ImportError("ONNX vocoders need onnxruntime: pip install 'midisynth[onnx]'") from None
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX vocoder file")
        wanted = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            wanted.insert(0, "CUDAExecutionProvider")
        providers = [p for p in wanted if p in onnxruntime.get_available_providers()]
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable models
            raise ValueError(f"{path}: not a loadable ONNX model ({err})") from None
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if self.INPUT_NAME not in inputs:
            raise ValueError(
                f"{path}: an ONNX vocoder must take '{self.INPUT_NAME}' [batch, frames, 128]; "
                f"this model takes {sorted(inputs)}"
            )
        shape = inputs[self.INPUT_NAME]
        if len(shape) != 3 or isinstance(shape[2], int) and shape[2] != N_MELS:
            raise ValueError(f"{path}: '{self.INPUT_NAME}' must be [batch, frames, {N_MELS}], not {shape}")

    def __call__(self, features: np.ndarray) -> np.ndarray:
        frames = features.shape[0]
        (audio, *_) = self.session.run(None, {self.INPUT_NAME: np.asarray(features, np.float32)[None]})
        audio = np.asarray(audio, np.float32)
        audio = audio[0, 0] if audio.ndim == 3 else audio[0]  # [samples]
        out = np.zeros(frames * HOP_LENGTH, np.float32)
        n = min(out.shape[0], audio.shape[0])
        out[:n] = audio[:n]
        return out


class NeuralVocoder(BlockStreaming):
    """midisynth's Vocos-style vocoder from a safetensors file whose metadata holds its config."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        from midisynth.vocoders.vocos import Vocos, VocosConfig

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such vocoder file")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path}: not a readable safetensors vocoder ({err})") from None
        if meta.get("format") != VOCOS_FORMAT_TAG:
            raise ValueError(f"{path}: not a midisynth vocoder (format tag {meta.get('format')!r})")
        self.device = torch.device(device)
        try:
            self.model = Vocos(VocosConfig(**json.loads(meta["config"]))).to(self.device).eval()
            self.model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
        except (SafetensorError, OSError, KeyError, TypeError, ValueError, RuntimeError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{path}: not a usable midisynth vocoder ({reason})") from None
        cfg = self.model.cfg
        self.context_frames = max(CONTEXT_FRAMES, cfg.receptive_field + cfg.fft_size // HOP_LENGTH)

    @torch.inference_mode()
    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(features, np.float32), device=self.device)[None]  # [1, frames, 128]
        return self.model(x)[0].cpu().numpy().astype(np.float32)


NAMED_VOCODERS: dict[str, Callable[[torch.device], Vocoder]] = {
    "griffin-lim": lambda device: GriffinLim(device=device),
}
VOCODER_FILE_TYPES: dict[str, Callable[[Path, torch.device], Vocoder]] = {
    ".onnx": OnnxVocoder,
    ".safetensors": NeuralVocoder,
}


def load_vocoder(spec: str, device: torch.device | str = "cpu") -> Vocoder:
    """A vocoder by name ('griffin-lim') or file: a MelGAN-style `.onnx` or a midisynth `.safetensors`."""
    device = torch.device(device)
    if spec in NAMED_VOCODERS:
        return NAMED_VOCODERS[spec](device)
    path = Path(spec)
    if path.suffix.lower() in VOCODER_FILE_TYPES:
        return VOCODER_FILE_TYPES[path.suffix.lower()](path, device)
    raise ValueError(
        f"unknown vocoder {spec!r}: use {', '.join(NAMED_VOCODERS)}, or a path to a "
        f"{' or '.join(VOCODER_FILE_TYPES)} file"
    )
