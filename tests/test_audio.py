"""The feature front end against a direct numpy transcription of TensorFlow's formulas, and the metrics."""

from __future__ import annotations

import math

import numpy as np
import torch

from midisynth.audio import from_network_range, log_mel, mel_filterbank, num_frames, to_network_range
from midisynth.constants import MAX_LOG_MEL, MIN_LOG_MEL, SAMPLE_RATE
from midisynth.metrics import log_mel_l1, mr_stft_distance, scale_to_rms


def tf_mel_matrix(num_mel=128, num_bins=513, rate=16000, lower=0.0, upper=8000.0) -> np.ndarray:
    """tf.signal.linear_to_mel_weight_matrix, transcribed (HTK mel, DC bin dropped then zero-padded back)."""
    def to_mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    freqs = np.linspace(0.0, rate / 2.0, num_bins)[1:]
    mel = to_mel(freqs)[:, None]
    edges = np.linspace(to_mel(lower), to_mel(upper), num_mel + 2)
    frames = np.stack([edges[i : i + 3] for i in range(num_mel)])  # tf.signal.frame(edges, 3, 1)
    lo, center, hi = frames[:, 0], frames[:, 1], frames[:, 2]
    weights = np.maximum(0.0, np.minimum((mel - lo) / (center - lo), (hi - mel) / (hi - center)))
    return np.pad(weights, [[1, 0], [0, 0]])


def tf_log_mel(audio: np.ndarray) -> np.ndarray:
    """tf.signal.stft(640, 320, 1024, periodic hann, pad_end=True) magnitude -> mel -> clip -> log."""
    n_frames = -(-len(audio) // 320)
    padded = np.pad(audio.astype(np.float64), (0, (n_frames - 1) * 320 + 640 - len(audio)))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(640) / 640)
    frames = np.stack([padded[i * 320 : i * 320 + 640] * window for i in range(n_frames)])
    magnitude = np.abs(np.fft.rfft(frames, n=1024))
    return np.log(np.clip(magnitude @ tf_mel_matrix(), 1e-5, 1e8))


def test_mel_matrix_matches_tf_transcription():
    np.testing.assert_allclose(mel_filterbank(), tf_mel_matrix(), atol=1e-6)
    assert np.all(mel_filterbank()[0] == 0)


def test_log_mel_matches_tf_transcription():
    rng = np.random.default_rng(0)
    t = np.arange(12_345) / SAMPLE_RATE
    for signal in (0.3 * rng.standard_normal(12_345), 0.5 * np.sin(2 * np.pi * 1000 * t), np.zeros(700)):
        ours = log_mel(torch.from_numpy(signal.astype(np.float32))).numpy()
        reference = tf_log_mel(signal)
        assert ours.shape == reference.shape == (num_frames(len(signal)), 128)
        error = np.abs(ours - reference)
        # float32 vs float64: exact where there is energy; bins of pure leakage near the 1e-5 floor are noisier.
        assert error[reference > -7.0].max(initial=0.0) < 2e-3 and error.mean() < 0.02


def test_frame_count_and_sine_peak():
    assert [num_frames(n) for n in (1, 320, 321, 81_920)] == [1, 1, 2, 256]
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    features = log_mel(torch.from_numpy((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)))
    peak_bin = int(features[10].argmax())
    mel_1k = 1127 * math.log1p(1000 / 700)
    centers = np.linspace(0, 1127 * math.log1p(8000 / 700), 130)[1:-1]
    assert abs(peak_bin - int(np.abs(centers - mel_1k).argmin())) <= 1


def test_network_range_round_trip_and_clipping():
    features = torch.tensor([MIN_LOG_MEL - 3, MIN_LOG_MEL, 0.0, MAX_LOG_MEL, MAX_LOG_MEL + 2])
    x = to_network_range(features)
    assert torch.allclose(x[[0, 1, 3, 4]], torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    assert torch.allclose(from_network_range(x)[1:4], features[1:4], atol=1e-5)


def test_metrics():
    rng = np.random.default_rng(1)
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noise = (0.3 * rng.standard_normal(tone.shape)).astype(np.float32)
    assert float(mr_stft_distance(tone, tone)) < 1e-4 and log_mel_l1(tone, tone) == 0.0
    assert float(mr_stft_distance(noise, tone)) > 1.0 and log_mel_l1(noise, tone) > 1.0
    scaled = scale_to_rms(noise, tone)
    assert np.isclose(np.sqrt(np.mean(scaled**2)), np.sqrt(np.mean(tone**2)), rtol=1e-4)
