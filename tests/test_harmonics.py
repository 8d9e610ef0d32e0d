"""Harmonic templates (midisynth.model.harmonics): where a pitch's partials land in the mel bins."""

from __future__ import annotations

import numpy as np
import pytest

from midisynth.audio import hz_to_mel
from midisynth.constants import MEL_FMAX, N_MELS
from midisynth.model.harmonics import (
    HARMONIC,
    PIANO,
    PIANO_B_MAX,
    PLUCKED,
    STRING_KINDS,
    _window_kernel,
    inharmonicity,
    pitch_hz,
    pitch_templates,
    string_kind,
    voice_templates,
)


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


def test_a_pianos_upper_partials_are_stretched():
    """Partial k of a stiff string lies at k f0 sqrt((1 + B k²) / (1 + B)): on a piano's C6 (pitch 84, B about 2e-3)
    the 7th partial is 5 % sharp, in a higher mel bin than 7 f0, while its fundamental stays at f0."""
    f0, b = pitch_hz(84), inharmonicity(PIANO, 84)
    assert 1.5e-3 < b < 3e-3
    stretched_hz = 7 * f0 * np.sqrt((1 + 49 * b) / (1 + b))
    assert _mel_bin(stretched_hz) > _mel_bin(7 * f0) + 1
    piano, harmonic = pitch_templates(kind=PIANO)[84], pitch_templates()[84]
    for template, hz in ((piano, stretched_hz), (harmonic, 7 * f0)):
        peak = _mel_bin(hz)
        assert template[peak] > template[peak - 1] and template[peak] > template[peak + 1]
    assert piano[_mel_bin(7 * f0)] < 0.5 * harmonic[_mel_bin(7 * f0)]
    np.testing.assert_allclose(pitch_templates(True, PIANO), pitch_templates(True), rtol=1e-6)
    # low strings are nearly harmonic: pitch 36's 10th partial moves by at most one mel bin
    low = 10 * pitch_hz(36)
    assert _mel_bin(low * np.sqrt(1 + 100 * inharmonicity(PIANO, 36))) - _mel_bin(low) <= 1


def test_kinds_of_string_by_program():
    assert [string_kind(p) for p in (0, 3, 4, 6, 24, 33, 40, 45, 46, 56, 80)] == [
        PIANO,
        PIANO,
        HARMONIC,  # electric piano
        PLUCKED,  # harpsichord
        PLUCKED,
        PLUCKED,
        HARMONIC,  # violin
        PLUCKED,
        PLUCKED,
        HARMONIC,
        HARMONIC,
    ]
    assert inharmonicity(HARMONIC, 100) == 0.0 and inharmonicity(PLUCKED, 40) == inharmonicity(PLUCKED, 80) > 0
    piano = [inharmonicity(PIANO, p) for p in range(128)]
    assert all(a <= b for a, b in zip(piano, piano[1:], strict=False)) and max(piano) == PIANO_B_MAX
    voices = voice_templates()
    assert voices.shape == (STRING_KINDS * 128, N_MELS)
    for kind in range(STRING_KINDS):
        np.testing.assert_array_equal(voices[kind * 128 : (kind + 1) * 128], pitch_templates(kind=kind))
    assert not np.array_equal(voices[128 + 84], voices[84])  # a piano's C6 is not an organ's
