"""Vocoders: Griffin-Lim inversion of the front end, block streaming, ONNX models, the neural vocoder file."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from midisynth.audio import log_mel, mel_matrix, reproject, stft
from midisynth.constants import HOP_LENGTH, MIN_LOG_MEL, N_MELS, SAMPLE_RATE
from midisynth.training.vocoder import save_vocoder
from midisynth.vocoders.pghi import pghi_phase
from midisynth.vocoders.vocoder import (
    BLOCK_FRAMES,
    CONTEXT_FRAMES,
    BlockStreaming,
    GriffinLim,
    NeuralVocoder,
    OnnxVocoder,
    load_vocoder,
)
from midisynth.vocoders.vocos import Vocos, VocosConfig
from tests.onnx_models import NEEDS_ONNXRUNTIME, ToyMelGan, export_onnx


@pytest.fixture(autouse=True)
def one_thread():
    """Griffin-Lim is many small FFTs: on a busy 2-core machine a second torch thread slows it 10x or more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tone(seconds: float = 3.0) -> np.ndarray:
    """A decaying 220 Hz tone with 5 harmonics."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    harmonics = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 6))
    return (0.2 * harmonics * np.exp(-0.5 * t)).astype(np.float32)


def _chirp(seconds: float = 3.0) -> np.ndarray:
    """A linear sweep from 100 Hz to 3 kHz."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * (100 * t + 0.5 * 2900 / seconds * t**2))).astype(np.float32)


def _features(audio: np.ndarray) -> np.ndarray:
    return log_mel(torch.from_numpy(audio)).numpy()  # [frames, 128]


def _l1(audio: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Per-frame mean |log-mel(audio) - features|."""
    return np.abs(_features(audio) - features).mean(axis=1)


# --- Griffin-Lim ---


def test_mel_to_linear_fit_is_nonnegative_and_reproduces_the_mel():
    features = _features(_chirp())
    magnitude = GriffinLim().magnitude(torch.from_numpy(features))
    assert magnitude.shape == (features.shape[0], 513) and bool((magnitude >= 0).all())
    refit = torch.log((magnitude @ mel_matrix(torch.device("cpu"))).clamp(min=1e-5)).numpy()
    loud = features > -9.0
    # Measured: mean 3.5e-4, max 0.019; the clipped pseudo-inverse alone gives a mean of 0.095.
    assert np.abs(refit - features)[loud].mean() < 0.01


@pytest.mark.parametrize(("make", "bound"), [(_tone, 0.40), (_chirp, 0.36)])
def test_griffin_lim_inverts_the_front_end(make, bound):
    features = _features(make())
    audio = GriffinLim()(features)
    assert audio.shape == (features.shape[0] * HOP_LENGTH,) and audio.dtype == np.float32
    assert np.abs(audio).max() > 0.1
    error = _l1(audio, features).mean()
    random_phase = _l1(GriffinLim(iterations=0, initial_phase="random")(features), features).mean()
    # Measured (the default 4 iterations from the PGHI start): tone 0.29 vs 0.67 with random phases and no
    # iterations; chirp 0.26 vs 0.45.
    assert error < bound and error < 0.7 * random_phase


def test_griffin_lim_does_not_spike_where_a_song_starts_loud():
    tone = _tone(1.0)  # full level from sample 0, where the analysis window of frame 0 is near zero
    audio = GriffinLim()(_features(tone))
    # Measured: peak ratio 0.64 over the first 10 ms, 1.29 overall (it was 2-6x with the istft floor at 1e-3).
    assert np.abs(audio[:160]).max() < 1.2 * np.abs(tone).max()
    assert np.abs(audio).max() < 1.5 * np.abs(tone).max()


def test_griffin_lim_is_seeded():
    features = _features(_tone(1.0))
    first, again, other = GriffinLim(8)(features), GriffinLim(8)(features), GriffinLim(8, seed=1)(features)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3
    assert GriffinLim()(np.zeros((0, N_MELS), np.float32)).shape == (0,)


def _spectral_convergence(audio: np.ndarray, magnitude: torch.Tensor) -> float:
    """|| |stft(audio)| - magnitude || / || magnitude || (Frobenius norms)."""
    rebuilt = stft(torch.from_numpy(np.asarray(audio))).abs()
    return float(torch.linalg.norm(rebuilt - magnitude) / torch.linalg.norm(magnitude))


def test_pghi_start_converges_faster_than_random_phases():
    features = _features(_tone())
    magnitude = GriffinLim().magnitude(torch.from_numpy(features))
    pghi = {n: _spectral_convergence(GriffinLim(n)(features), magnitude) for n in (0, 16)}
    random = {n: _spectral_convergence(GriffinLim(n, initial_phase="random")(features), magnitude) for n in (0, 16)}
    # Measured: PGHI 0.042 before any iteration, 0.038 after 16; random phases 0.60, then 0.106.
    assert pghi[0] < 0.08 and pghi[16] < 0.5 * random[16] and pghi[0] < random[16]


@pytest.mark.parametrize("hop", [320, 160])
@pytest.mark.parametrize("make", [_tone, _chirp])
def test_pghi_phase_fits_a_true_stft_magnitude_and_continues_known_frames(make, hop):
    spectrum = stft(torch.from_numpy(make()), hop)  # [48000 / hop, 513]
    magnitude = spectrum.abs()

    def convergence(phase: torch.Tensor) -> float:
        rebuilt = reproject(magnitude * phase, hop)  # nearest consistent STFT to magnitude and phase
        return float(torch.linalg.norm(rebuilt.abs() - magnitude) / torch.linalg.norm(magnitude))

    phase = pghi_phase(magnitude, torch.Generator().manual_seed(0), hop=hop)
    again = pghi_phase(magnitude, torch.Generator().manual_seed(0), hop=hop)
    assert phase.shape == magnitude.shape and torch.equal(phase, again)
    random_angle = 2 * torch.pi * torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(0))
    # Measured: tone 0.026, chirp 0.034 at hop 320; random phases 0.60, 0.62.
    assert convergence(phase) < 0.05 < 0.5 < convergence(torch.polar(torch.ones_like(magnitude), random_angle))
    known = torch.sgn(spectrum[:40])  # the true phases of the first 40 frames
    continued = pghi_phase(magnitude, torch.Generator().manual_seed(1), known, hop)
    torch.testing.assert_close(continued[:40], known)
    assert convergence(continued) < 0.05


def test_griffin_lim_synthesis_grid_keeps_the_feature_frames_and_interpolates_between():
    magnitude = torch.rand(5, 513, generator=torch.Generator().manual_seed(2))
    fine = GriffinLim(hop=160).synthesis_magnitude(magnitude)
    assert fine.shape == (10, 513)
    torch.testing.assert_close(fine[0::2], magnitude)
    torch.testing.assert_close(fine[1:-1:2], 0.5 * (magnitude[:-1] + magnitude[1:]))
    torch.testing.assert_close(fine[-1], magnitude[-1])  # past the last frame: held
    assert GriffinLim(hop=80).synthesis_magnitude(magnitude).shape == (20, 513)
    assert GriffinLim(hop=320).synthesis_magnitude(magnitude) is magnitude
    features = _features(_tone(1.0))
    for hop in (320, 160, 80):
        assert GriffinLim(hop=hop)(features).shape == (features.shape[0] * HOP_LENGTH,)
    with pytest.raises(ValueError, match="Griffin-Lim's hop must divide 320 samples, not 128"):
        GriffinLim(hop=128)


def test_griffin_lim_rejects_an_unknown_initial_phase():
    with pytest.raises(ValueError, match="unknown initial phase 'zero': use pghi or random"):
        GriffinLim(initial_phase="zero")


def test_griffin_lim_streaming_matches_whole_signal():
    features = _features(_tone(4.0))  # 200 frames
    vocoder = GriffinLim()
    whole = vocoder(features)
    chunks = list(vocoder.stream(features[i : i + 70] for i in range(0, features.shape[0], 70)))
    streamed = np.concatenate(chunks)
    assert streamed.shape == whole.shape
    whole_error, stream_error = _l1(whole, features), _l1(streamed, features)
    # Measured: whole 0.218, streamed 0.220.
    assert stream_error.mean() < whole_error.mean() + 0.05
    # Each block keeps the spectrum the previous one settled and integrates its starting phase from it, so the
    # frames around a seam are as good as in the whole-signal inversion (measured 0.221, 0.171, 0.140 vs 0.221,
    # 0.172, 0.146; with 64 iterations from random phases on the features' grid, independent blocks: 0.64, 0.51,
    # 0.45; a warm start alone: 0.55, 0.51, 0.46).
    seams = np.cumsum([c.shape[0] // HOP_LENGTH for c in chunks])[:-1]
    assert seams.tolist() == [62, 132, 192]  # each chunk's end less the 8 frames of right context
    for seam in seams:
        near = slice(seam - 3, seam + 5)
        assert stream_error[near].mean() < whole_error[near].mean() + 0.1, seam


# --- block streaming, exactly checked with a deterministic vocoder ---


class LocalVocoder(BlockStreaming):
    """Each frame's audio depends on features within 5 frames of it; records the block sizes it is given."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.projection = (rng.standard_normal((N_MELS, HOP_LENGTH)) / 100).astype(np.float32)
        self.block_sizes: list[int] = []

    def __call__(self, features: np.ndarray) -> np.ndarray:
        self.block_sizes.append(features.shape[0])
        padded = np.pad(features, [(5, 5), (0, 0)], constant_values=MIN_LOG_MEL)
        smoothed = sum(padded[i : i + features.shape[0]] for i in range(11)) / 11  # [frames, 128]
        return np.tanh(smoothed @ self.projection).reshape(-1)


@pytest.mark.parametrize(
    "sizes",
    [[700], [256, 256, 188], [1] * 60 + [640], [0, 37, 0, 300, 1, 362], [33, 33, 33], [5]],
    ids=["one chunk", "windows", "tiny then big", "uneven, empties", "short song", "shorter than context"],
)
def test_block_streaming_is_exact_with_enough_context(sizes):
    rng = np.random.default_rng(1)
    features = rng.uniform(-11, 2, size=(sum(sizes), N_MELS)).astype(np.float32)
    vocoder = LocalVocoder()
    whole = vocoder(features)
    vocoder.block_sizes.clear()
    bounds = np.cumsum([0, *sizes])
    parts = list(vocoder.stream(features[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)))
    streamed = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    assert streamed.shape == (features.shape[0] * HOP_LENGTH,)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)
    assert max(vocoder.block_sizes, default=0) <= BLOCK_FRAMES + 2 * CONTEXT_FRAMES  # bounded memory


# --- ONNX ---


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript-based exporter
@pytest.mark.parametrize("channel_axis", [False, True], ids=["[batch, samples]", "[batch, 1, samples]"])
def test_onnx_vocoder_with_melgan_signature(tmp_path, channel_axis):
    pytest.importorskip("onnxruntime", reason=NEEDS_ONNXRUNTIME)
    torch.manual_seed(0)
    toy = ToyMelGan(channel_axis)
    vocoder = load_vocoder(str(export_onnx(toy, tmp_path / "melgan.onnx")))
    assert isinstance(vocoder, OnnxVocoder)
    features = np.random.default_rng(0).normal(-5, 2, size=(77, N_MELS)).astype(np.float32)
    with torch.no_grad():
        expected = toy(torch.from_numpy(features)[None]).reshape(-1).numpy()
    audio = vocoder(features)
    assert audio.shape == (77 * HOP_LENGTH,) and audio.dtype == np.float32
    np.testing.assert_allclose(audio, expected, atol=1e-5)
    streamed = np.concatenate(list(vocoder.stream([features[:40], features[40:]])))
    np.testing.assert_allclose(streamed, expected, atol=1e-5)  # frame-local model: streaming is exact


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_vocoder_errors(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason=NEEDS_ONNXRUNTIME)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load_vocoder(str(tmp_path / "missing.onnx"))
    with pytest.raises(ValueError, match="must take 'input_features'.*'mel'"):
        OnnxVocoder(export_onnx(ToyMelGan(), tmp_path / "named.onnx", input_name="mel"))
    with pytest.raises(ValueError, match=r"must be \[batch, frames, 128\]"):
        toy80 = torch.nn.Sequential(torch.nn.Linear(80, HOP_LENGTH), torch.nn.Flatten(1))
        OnnxVocoder(export_onnx(toy80, tmp_path / "bins.onnx", bins=80))
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxVocoder(tmp_path / "garbage.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'midisynth\[onnx\]'"):
        OnnxVocoder(tmp_path / "named.onnx")


# --- the bundled neural vocoder's file format and the factory ---


def test_neural_vocoder_round_trip_and_streaming(tmp_path):
    torch.manual_seed(0)
    model = Vocos(VocosConfig(dim=32, intermediate_dim=64, num_layers=2)).eval()
    save_vocoder(model, tmp_path / "v.safetensors")
    vocoder = load_vocoder(str(tmp_path / "v.safetensors"))
    assert isinstance(vocoder, NeuralVocoder)
    features = _features(_tone(4.0))
    with torch.no_grad():
        expected = model(torch.from_numpy(features)[None])[0].numpy()
    whole = vocoder(features)
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    # Blocks carry more context than the receptive field, seams blend equal signals: streaming is exact.
    chunks = [features[i : i + 80] for i in range(0, len(features), 80)]
    streamed = np.concatenate(list(vocoder.stream(chunks)))
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_load_vocoder(tmp_path):
    assert isinstance(load_vocoder("griffin-lim"), GriffinLim)
    with pytest.raises(ValueError, match="unknown vocoder 'wavenet'"):
        load_vocoder("wavenet")
    with pytest.raises(ValueError, match="unknown vocoder"):
        load_vocoder(str(tmp_path / "model.pt"))
    with pytest.raises(FileNotFoundError):
        load_vocoder(str(tmp_path / "missing.safetensors"))
