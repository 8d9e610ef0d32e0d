"""The harmonic sketch (midisynth.model.sketch): where the notes' partials land in the mel bins, how loud, for how long,
and how a sketch model's decoder adds it to its data estimate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from midisynth.audio import hz_to_mel
from midisynth.constants import MAX_LOG_MEL, MEL_FMAX, MIN_LOG_MEL, N_MELS, ROLL_DIMS, WINDOW_FRAMES
from midisynth.model.config import load_config
from midisynth.model.networks import SpectrogramDiffusion
from midisynth.model.noise_schedule import alpha_sigma, logsnr_schedule
from midisynth.model.note_inputs import note_roll, song_note_inputs, velocity_gain
from midisynth.model.sketch import NOTE_LEVEL, _window_kernel, harmonic_sketch, note_levels, pitch_hz, pitch_templates
from midisynth.score.midi import Note, Song
from midisynth.training.diffusion import initial_weights
from tests.conftest import ROOT


def _note(start: float, end: float, pitch: int = 69, velocity: int = 90, program: int = 0,
          is_drum: bool = False) -> Note:
    return Note(start=start, end=end, pitch=pitch, velocity=velocity, program=program, is_drum=is_drum)


def _mel_bin(hz: float) -> int:
    """The mel bin whose triangle peaks closest to `hz`."""
    centres = np.linspace(0.0, hz_to_mel(MEL_FMAX), N_MELS + 2)[1:-1]
    return int(np.argmin(np.abs(centres - hz_to_mel(hz))))


def _sketch_model(seed: int = 0, **changes) -> SpectrogramDiffusion:
    torch.manual_seed(seed)
    cfg = replace(load_config(ROOT / "configs" / "tiny.toml").model, dropout_rate=0.0, prediction="v", **changes)
    return SpectrogramDiffusion(cfg).eval()


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


def test_note_levels_follow_velocity_and_each_familys_decay():
    song = Song(notes=[_note(1.0, 2.0, pitch=60, program=0),  # piano: decays with 1.5 s
                       _note(1.0, 2.0, pitch=62, velocity=45, program=16),  # organ: sustains, (45 / 90)^2
                       _note(1.0, 2.0, pitch=38, is_drum=True),  # drums have no pitch to place
                       _note(5.0, 6.0, pitch=64, program=48)], duration=7.0)  # strings, crossing into window 1
    levels = note_levels(song, 0)
    assert levels.shape == (WINDOW_FRAMES, 128) and levels.dtype == np.float32
    ages = np.arange(50) / 50.0
    np.testing.assert_allclose(levels[50:100, 60], np.exp(-ages / 1.5), rtol=1e-6)
    np.testing.assert_array_equal(levels[50:100, 62], np.full(50, 0.25, np.float32))
    assert not levels[:50].any() and not levels[100:250].any() and not levels[:, 38].any()
    np.testing.assert_array_equal(levels[250:, 64], np.ones(6, np.float32))  # 5.00-5.10 s
    np.testing.assert_array_equal(note_levels(song, 1)[:44, 64], np.ones(44, np.float32))  # 5.12-6.00 s
    assert not note_levels(song, 1)[44:].any()


def test_the_sketch_is_the_log_mel_of_the_levels_above_silence():
    song = Song(notes=[_note(0.0, 1.0, program=16), _note(0.5, 1.0, pitch=76, velocity=127, program=16)],
                duration=2.0)
    sketch = harmonic_sketch(song, 0)
    assert sketch.shape == (WINDOW_FRAMES, N_MELS) and sketch.dtype == np.float32
    assert not sketch[50:].any()  # silence after the notes is 0
    expected = np.log(np.maximum(NOTE_LEVEL * pitch_templates()[69], 1e-5))
    np.testing.assert_allclose(sketch[10], 2 * (np.clip(expected, MIN_LOG_MEL, MAX_LOG_MEL) - MIN_LOG_MEL)
                               / (MAX_LOG_MEL - MIN_LOG_MEL), rtol=1e-5, atol=1e-6)
    assert sketch[30, _mel_bin(pitch_hz(76))] > sketch[20, _mel_bin(pitch_hz(76))] + 0.1  # the second note enters

    gain = velocity_gain(song, 1)[0]  # a velocity-normalised model's sketch: the frame's gain taken off
    normalised = harmonic_sketch(song, 0, gain)
    sounding = sketch[30] > 0.5
    np.testing.assert_allclose(normalised[30, sounding], sketch[30, sounding] - 2 * gain[30] / (MAX_LOG_MEL - MIN_LOG_MEL),
                               rtol=1e-5)
    assert not normalised[50:].any()


def test_a_sketch_model_takes_the_sketch_after_the_roll_in_its_cue():
    cfg = replace(load_config(ROOT / "configs" / "tiny.toml").model, prediction="v", velocity_gain=True,
                  note_roll=True, harmonic_sketch=True)
    assert cfg.cue_dims == ROLL_DIMS + N_MELS
    song = Song(notes=[_note(0.0, 3.0, velocity=60), _note(4.0, 7.0, pitch=72, velocity=110, program=40)],
                duration=8.0)
    inputs = song_note_inputs(song, 2, cfg)
    cue = inputs.cue(1)
    np.testing.assert_array_equal(cue[:, :ROLL_DIMS], note_roll(song, 1))
    np.testing.assert_array_equal(cue[:, ROLL_DIMS:], harmonic_sketch(song, 1, velocity_gain(song, 2)[1]))
    with pytest.raises(ValueError, match="harmonic_sketch needs prediction"):
        replace(cfg, prediction="epsilon")
    with pytest.raises(ValueError, match="harmonic_sketch must be true or false"):
        replace(cfg, harmonic_sketch=1)


def test_the_decoder_adds_the_gained_sketch_to_its_data_estimate():
    """x0 = alpha x_t - sigma v: a sketch gain g moves the conditioned rows' x0 estimate by sigma² * g * sketch, and
    leaves the unconditional rows (guidance) alone."""
    model = _sketch_model(note_roll=True, harmonic_sketch=True)
    tokens = torch.randint(3, 100, (2, 20))
    context, mask = torch.zeros(2, WINDOW_FRAMES, N_MELS), torch.tensor([False, False])
    cue = torch.rand(2, WINDOW_FRAMES, model.cfg.cue_dims)
    x, t = torch.randn(3, WINDOW_FRAMES, N_MELS), torch.tensor([0.3, 0.8, 0.8])
    with torch.no_grad():
        cache = model.encode(tokens, context, mask, cue)
        before = model.decoder(x, t, cache)
        model.decoder.sketch_gain.copy_(torch.linspace(0.5, 1.5, N_MELS))
        after = model.decoder(x, t, cache)
    alpha, sigma = alpha_sigma(logsnr_schedule(t))
    x0_shift = -sigma[:, None, None] * (after - before)  # x0 = alpha x_t - sigma v
    expected = sigma[:2, None, None] ** 2 * model.decoder.sketch_gain.detach() * cue[:, :, -N_MELS:]
    np.testing.assert_allclose(x0_shift[:2].numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(after[2].numpy(), before[2].numpy())


def test_a_sketch_model_starts_from_a_roll_models_weights_as_that_model():
    """The cue projection grows by the sketch's columns (starting at zero) and the sketch gain starts at zero, so the
    fine-tune starts from its source's output."""
    source = _sketch_model(seed=1, note_roll=True)
    with torch.no_grad():
        source.decoder.cue_proj.weight.normal_()
    target = _sketch_model(seed=2, note_roll=True, harmonic_sketch=True)
    target.load_state_dict(initial_weights(source, target))
    weight = target.decoder.cue_proj.weight
    torch.testing.assert_close(weight[:, :ROLL_DIMS], source.decoder.cue_proj.weight)
    assert not weight[:, ROLL_DIMS:].any() and not target.decoder.sketch_gain.any()
    tokens, context = torch.randint(3, 100, (1, 20)), torch.randn(1, WINDOW_FRAMES, N_MELS).clamp(-1, 1)
    roll, sketch = torch.rand(1, WINDOW_FRAMES, ROLL_DIMS), torch.rand(1, WINDOW_FRAMES, N_MELS)
    x, t, mask = torch.randn(1, WINDOW_FRAMES, N_MELS), torch.tensor([0.6]), torch.tensor([True])
    with torch.no_grad():
        theirs = source(x, t, tokens, context, mask, note_cue=roll)
        ours = target(x, t, tokens, context, mask, note_cue=torch.cat([roll, sketch], dim=-1))
    torch.testing.assert_close(ours, theirs)
    with pytest.raises(ValueError, match="cannot start"):
        initial_weights(target, source)
