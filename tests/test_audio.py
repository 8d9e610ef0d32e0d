"""The feature front end against a direct numpy transcription of TensorFlow's formulas, and the metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from midisynth.audio import (
    from_network_range,
    istft,
    log_mel,
    mel_filterbank,
    num_frames,
    reproject,
    stft,
    to_network_range,
)
from midisynth.constants import MAX_LOG_MEL, MIN_LOG_MEL, SAMPLE_RATE
from midisynth.evaluation.metrics import log_mel_l1, mr_stft_distance, scale_to_rms

# --- TensorFlow's formulas transcribed to numpy (tensorflow/python/ops/signal/{mel,window,shape}_ops.py) ---


def tf_hertz_to_mel(hz, dtype=np.float64):
    return dtype(1127.0) * np.log(dtype(1.0) + hz / dtype(700.0))


def tf_linear_to_mel_weight_matrix(
    num_mel_bins=128,
    num_spectrogram_bins=513,
    sample_rate=16000,
    lower_edge_hertz=0.0,
    upper_edge_hertz=8000.0,
    dtype=np.float64,
):
    bands_to_zero = 1  # HTK excludes the spectrogram DC bin
    nyquist = dtype(sample_rate) / dtype(2.0)
    linear = np.linspace(dtype(0.0), nyquist, num_spectrogram_bins, dtype=dtype)[bands_to_zero:]
    spectrogram_bins_mel = tf_hertz_to_mel(linear, dtype)[:, None]
    lower_mel = tf_hertz_to_mel(dtype(lower_edge_hertz), dtype)
    upper_mel = tf_hertz_to_mel(dtype(upper_edge_hertz), dtype)
    edges = np.linspace(lower_mel, upper_mel, num_mel_bins + 2, dtype=dtype)
    band_edges = np.stack([edges[i : i + 3] for i in range(num_mel_bins)])  # tf.signal.frame(edges, 3, 1)
    lower, center, upper = band_edges[:, 0], band_edges[:, 1], band_edges[:, 2]
    lower_slopes = (spectrogram_bins_mel - lower) / (center - lower)
    upper_slopes = (upper - spectrogram_bins_mel) / (upper - center)
    weights = np.maximum(dtype(0.0), np.minimum(lower_slopes, upper_slopes))
    return np.pad(weights, [[bands_to_zero, 0], [0, 0]])


def tf_hann_window(window_length, periodic=True):
    even = 1 - window_length % 2
    n = window_length + int(periodic) * even - 1
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window_length) / n)


def tf_frame_pad_end(signal, frame_length, frame_step):
    frames = -(-len(signal) // frame_step)
    padded = np.pad(signal, (0, max(0, (frames - 1) * frame_step + frame_length - len(signal))))
    return np.stack([padded[i * frame_step : i * frame_step + frame_length] for i in range(frames)])


def magenta_melgan_encode(audio: np.ndarray) -> np.ndarray:
    """audio_codecs.MelGAN.encode in float64: stft(640, 320, 1024, hann, pad_end), |.|, mel, clip, log."""
    frames = tf_frame_pad_end(audio.astype(np.float64), 640, 320) * tf_hann_window(640)
    magnitude = np.abs(np.fft.rfft(frames, n=1024))
    mel = magnitude @ tf_linear_to_mel_weight_matrix()
    return np.log(np.clip(mel, 1e-5, 1e8))


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(12_345) / SAMPLE_RATE
    return {
        "noise": 0.3 * rng.standard_normal(12_345),
        "sine": 0.5 * np.sin(2 * np.pi * 1000 * t),
        "quiet": 1e-4 * rng.standard_normal(5_000),
        "silence": np.zeros(700),
    }


# --- tests ---


def test_mel_matrix_matches_tensorflow():
    ours = mel_filterbank()
    assert ours.shape == (513, 128) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, tf_linear_to_mel_weight_matrix(), atol=1e-7)
    # TensorFlow evaluates in float32: measured max difference 1.7e-5.
    np.testing.assert_allclose(ours, tf_linear_to_mel_weight_matrix(dtype=np.float32), atol=5e-5)
    assert np.all(ours[0] == 0)  # DC dropped
    # Every band catches a bin; the lowest are narrower than the 15.6 Hz bin spacing (measured min 0.57).
    assert ours.max(axis=0).min() > 0.5


@pytest.mark.parametrize("name", list(_signals()))
def test_log_mel_matches_magenta_formulas(name):
    signal = _signals()[name]
    reference = magenta_melgan_encode(signal)
    assert reference.shape == (num_frames(len(signal)), 128)
    # float64 input runs in float64: measured max difference 4.3e-8 (the float32 mel matrix).
    ours64 = log_mel(torch.from_numpy(signal)).numpy()
    assert ours64.dtype == np.float64
    np.testing.assert_allclose(ours64, reference, atol=1e-6, rtol=0)
    # float32: measured max 1.4e-6 on noise; on the pure sine, float32 FFT round-off near the 1e-5 floor
    # (leakage bins) reaches 0.38, so compare where the reference mel is above e^-8 (measured 1.6e-3 there on an AMD
    # Zen 4; between e^-9 and e^-8 the round-off depends on the CPU's FFT kernels: 8.8e-3 on a Xeon, 0.032 on Zen 4).
    ours32 = log_mel(torch.from_numpy(signal.astype(np.float32))).numpy()
    assert ours32.dtype == np.float32
    error = np.abs(ours32 - reference)
    assert error[reference > -8.0].max(initial=0.0) < 0.02 and error.mean() < 0.02


def test_frame_count_and_batching():
    assert [num_frames(n) for n in (1, 319, 320, 321, 640, 81_920)] == [1, 1, 1, 2, 2, 256]
    rng = np.random.default_rng(1)
    batch = torch.from_numpy(rng.standard_normal((2, 3, 1_000)).astype(np.float32))
    features = log_mel(batch)
    assert features.shape == (2, 3, 4, 128)
    torch.testing.assert_close(features[1, 2], log_mel(batch[1, 2]))
    assert log_mel(torch.zeros(5, 0)).shape == (5, 0, 128)


def test_frames_start_at_sample_zero_and_pad_the_end_only():
    rng = np.random.default_rng(2)
    song = torch.from_numpy(rng.standard_normal(3 * 320 * 256).astype(np.float32))
    whole = log_mel(song)
    # Magenta encodes a window with extra frames of the following audio (16; one is enough: frame k only sees
    # samples [320k, 320k + 640)), then keeps the window's frames: the same as slicing whole-song features.
    start, stop = 256, 512
    extended = log_mel(song[start * 320 : stop * 320 + 320])[: stop - start]
    torch.testing.assert_close(extended, whole[start:stop], atol=1e-5, rtol=0)
    alone = log_mel(song[start * 320 : stop * 320])  # pad_end zeros: only the last frame differs
    torch.testing.assert_close(alone[:-1], whole[start : stop - 1], atol=1e-5, rtol=0)
    assert (alone[-1] - whole[stop - 1]).abs().mean() > 0.1


def test_sine_peaks_in_its_mel_band():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    for hz in (250.0, 1000.0, 4000.0):
        features = log_mel(torch.from_numpy((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)))
        centers = np.linspace(0.0, tf_hertz_to_mel(8000.0), 130)[1:-1]
        expected = int(np.abs(centers - tf_hertz_to_mel(hz)).argmin())  # 1 kHz: band 44
        assert abs(int(features[25].argmax()) - expected) <= 1, hz


@pytest.mark.parametrize("hop, frames, unsure", [(320, 16, 122), (160, 32, 122), (80, 63, 122)])
def test_istft_inverts_stft(hop, frames, unsure):
    rng = np.random.default_rng(3)
    audio = torch.from_numpy(rng.standard_normal((2, 5_000)).astype(np.float32))
    spectrum = stft(audio, hop)
    assert spectrum.shape == (2, frames, 513)
    rebuilt = istft(spectrum, hop)
    assert rebuilt.shape == (2, frames * hop)
    # Exact but for the first samples, where only frame 0's window reaches, it is small and the overlap-add is
    # floored: `unsure` samples.
    torch.testing.assert_close(rebuilt[:, unsure:5_000], audio[:, unsure:], atol=1e-5, rtol=0)
    assert (rebuilt[:, :unsure].abs() <= audio[:, :unsure].abs() + 1e-5).all()  # attenuated there, never amplified
    assert rebuilt[:, 5_000:].abs().max() < 1e-5  # the zero padding comes back as zeros


@pytest.mark.parametrize("hop", [320, 160, 80])
@pytest.mark.parametrize("shape", [(1, 513), (7, 513), (2, 40, 513)])
def test_reproject_is_stft_of_istft(shape, hop):
    """Griffin-Lim's block-wise projection equals the explicit signal round trip on inconsistent spectra."""
    g = torch.Generator().manual_seed(5)
    spectrum = torch.polar(torch.rand(shape, generator=g), 2 * torch.pi * torch.rand(shape, generator=g))
    expected = stft(istft(spectrum, hop), hop)
    assert not torch.allclose(expected, spectrum, atol=1e-2)  # random phases are not consistent: a real test
    torch.testing.assert_close(reproject(spectrum, hop), expected, atol=2e-6, rtol=0)


def test_reproject_needs_a_hop_that_divides_the_window():
    with pytest.raises(ValueError, match="hop 300 does not divide the 640-sample window"):
        reproject(torch.ones(3, 513, dtype=torch.complex64), 300)


def test_network_range_round_trip_and_clipping():
    features = torch.tensor([MIN_LOG_MEL - 3, MIN_LOG_MEL, -3.0, 0.0, MAX_LOG_MEL, MAX_LOG_MEL + 2])
    x = to_network_range(features)
    inside = [2 * (v - MIN_LOG_MEL) / (MAX_LOG_MEL - MIN_LOG_MEL) - 1 for v in (-3.0, 0.0)]
    torch.testing.assert_close(x, torch.tensor([-1.0, -1.0, *inside, 1.0, 1.0]))
    torch.testing.assert_close(from_network_range(x)[1:5], features[1:5])
    ends = from_network_range(torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(ends, torch.tensor([MIN_LOG_MEL, MAX_LOG_MEL]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_log_mel_on_cuda_matches_cpu():
    audio = torch.from_numpy(np.random.default_rng(4).standard_normal((2, 9_000)).astype(np.float32))
    torch.testing.assert_close(log_mel(audio.cuda()).cpu(), log_mel(audio), atol=1e-4, rtol=0)


def test_metrics():
    rng = np.random.default_rng(1)
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noise = (0.3 * rng.standard_normal(tone.shape)).astype(np.float32)
    assert float(mr_stft_distance(tone, tone)) < 1e-4 and log_mel_l1(tone, tone) == 0.0
    assert float(mr_stft_distance(noise, tone)) > 1.0 and log_mel_l1(noise, tone) > 1.0
    scaled = scale_to_rms(noise, tone)
    assert np.isclose(np.sqrt(np.mean(scaled**2)), np.sqrt(np.mean(tone**2)), rtol=1e-4)


def test_feature_constants_made_during_a_render_still_serve_training():
    """The cached window and mel matrix are built outside inference mode, so training can use them after a render."""
    from midisynth import audio

    for cached in (audio.hann_window, audio.mel_matrix, audio._inverse_block_norm, audio._squared_window_sum):
        cached.cache_clear()
    signal = torch.randn(3200)
    with torch.inference_mode():
        rendered = audio.log_mel(signal)
    trained = signal.clone().requires_grad_()
    features = audio.log_mel(trained)
    features.sum().backward()
    assert torch.equal(features.detach(), rendered) and trained.grad is not None and trained.grad.abs().sum() > 0
