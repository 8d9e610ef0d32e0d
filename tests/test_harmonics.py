"""Harmonic templates (midisynth.model.harmonics): where a pitch's partials land in the mel bins."""

from __future__ import annotations

import numpy as np
import pytest

from midisynth.audio import hz_to_mel
from midisynth.constants import MEL_FMAX, N_MELS
from midisynth.model.harmonics import _window_kernel, pitch_hz, pitch_templates


def _mel_bin(hz: float) -> int:
    """The mel bin whose triangle peaks closest to `hz`."""
    centres = np.linspace(0.0, hz_to_mel(MEL_FMAX), N_MELS + 2)[1:-1]
    return int(np.argmin(np.abs(centres - hz_to_mel(hz))))


def test_a_partial_peaks_at_half_the_window_sum():
    """A unit sinusoid through the periodic Hann window of 640 samples (sum 320): |STFT| 160 at its own frequency,
    symmetric around it."""
    _, kernel = _window_kernel()
    assert kernel[kernel.size // 2] == pytest.approx(160.0, rel=1e-9)
    np.testing.assert_allclose(kernel, kernel[::-1], rtol=1e-9)
    assert kernel.argmax() == kernel.size // 2


def test_templates_put_the_partials_of_a_pitch_in_their_mel_bins():
    templates = pitch_templates()
    assert templates.shape == (128, N_MELS) and templates.dtype == np.float32
    a4 = templates[69]
    assert a4.argmax() == _mel_bin(440.0)  # the fundamental, the strongest partial
    for k in (2, 3, 4):  # each harmonic is a local peak, weaker than the one below it
        b = _mel_bin(k * 440.0)
        assert a4[b] >= a4[b - 1] and a4[b] >= a4[b + 1]
    assert a4[_mel_bin(880.0)] < a4[_mel_bin(440.0)]
    assert a4[: _mel_bin(440.0) - 3].max() < 1e-2 * a4.max()  # nothing below the fundamental
    assert pitch_hz(69) == 440.0 and pitch_hz(57) == 220.0


def test_a_fundamental_template_is_the_first_partial_alone():
    full, fundamental = pitch_templates()[69], pitch_templates(True)[69]
    below = _mel_bin(660.0)  # halfway to the second partial
    np.testing.assert_allclose(fundamental[:below], full[:below], rtol=1e-3, atol=1e-6 * full.max())
    assert fundamental[_mel_bin(880.0) :].max() < 1e-3 * fundamental.max() < full[_mel_bin(880.0)]
