"""Per-frame note inputs (velocity gain, note roll): the decoder input they feed, and their path through data,
training and rendering."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from midisynth.constants import ROLL_DIMS, ROLL_GROUPS, ROLL_PITCHES, WINDOW_FRAMES
from midisynth.model.checkpoints import load_model_file, save_model
from midisynth.model.config import ModelConfig, load_config
from midisynth.model.networks import SpectrogramDiffusion
from midisynth.model.note_inputs import apply_gain, note_roll, velocity_gain, velocity_mix
from midisynth.render.pipeline import RenderOptions, Synthesizer
from midisynth.score.midi import Note, Song, read_midi
from midisynth.score.tokens import tokenize
from midisynth.vocoders.vocoder import load_vocoder
from tests.conftest import ROOT, write_midi


def _note(start: float, end: float, velocity: int, pitch: int = 60, is_drum: bool = False, program: int = 0) -> Note:
    return Note(start=start, end=end, pitch=pitch, velocity=velocity, program=program, is_drum=is_drum)


def _model(roll: bool, seed: int = 0) -> SpectrogramDiffusion:
    torch.manual_seed(seed)
    cfg = replace(load_config(ROOT / "configs" / "tiny.toml").model, dropout_rate=0.0, note_roll=roll)
    return SpectrogramDiffusion(cfg).eval()


def _velocities(*pairs: tuple[int, float]) -> list[float]:
    """A row of `velocity_mix`: the fraction of the sounding notes at each velocity 1..127."""
    row = [0.0] * 127
    for velocity, fraction in pairs:
        row[velocity - 1] = fraction
    return row


def test_velocity_mix_is_the_velocities_of_the_sounding_notes():
    """Frame f (f / 50 s) counts notes with start <= f / 50 < end; the drum hit lasts at least 0.25 s."""
    song = Song(
        notes=[
            _note(0.0, 0.1, 20),
            _note(0.04, 0.1, 120, pitch=64),
            _note(5.2, 5.3, 127),
            _note(0.5, 0.5, 70, pitch=38, is_drum=True),
        ],
        duration=6.0,
    )
    frames = velocity_mix(song, windows=2)
    assert frames.shape == (2 * WINDOW_FRAMES, 127) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames[0:2], [_velocities((20, 1.0))] * 2)  # 0.00-0.02 s: velocity 20 alone
    np.testing.assert_array_equal(frames[2:5], [_velocities((20, 0.5), (120, 0.5))] * 3)  # both notes until 0.1 s
    np.testing.assert_array_equal(frames[5:25], np.zeros((20, 127)))  # silence
    np.testing.assert_array_equal(frames[25:38], [_velocities((70, 1.0))] * 13)  # the drum, 0.5 s to 0.75 s
    assert not frames[38:260].any()
    np.testing.assert_array_equal(frames[260:265], [_velocities((127, 1.0))] * 5)  # second window, 5.2 s to 5.3 s
    assert not frames[265:].any()


def test_velocity_mix_clips_notes_past_the_last_window():
    song = Song(notes=[_note(4.0, 9.0, 64)], duration=5.0)
    frames = velocity_mix(song, windows=1)
    assert frames[200:].tolist() == [_velocities((64, 1.0))] * 56 and not frames[:200].any()


def test_the_cue_projection_starts_at_zero_and_conditioned_rows_only_see_it():
    model = _model(roll=True)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 1391, (2, 40), generator=g)
    context = torch.zeros(2, WINDOW_FRAMES, 128)
    has_context = torch.tensor([False, False])
    x = torch.randn(3, WINDOW_FRAMES, 128, generator=g)  # rows 0-1 conditioned, row 2 unconditional
    t = torch.tensor([0.2, 0.5, 0.9])
    soft = torch.zeros(2, WINDOW_FRAMES, ROLL_DIMS)
    soft[..., 0] = 1
    loud = torch.zeros(2, WINDOW_FRAMES, ROLL_DIMS)
    loud[..., 3] = 1
    with torch.no_grad():
        assert torch.equal(
            model.decoder(x, t, model.encode(tokens, context, has_context, soft)),
            model.decoder(x, t, model.encode(tokens, context, has_context, loud)),
        )  # zero at start
        model.decoder.cue_proj.weight.normal_()
        a = model.decoder(x, t, model.encode(tokens, context, has_context, soft))
        b = model.decoder(x, t, model.encode(tokens, context, has_context, loud))
    assert not torch.allclose(a[:2], b[:2])
    assert torch.equal(a[2], b[2])  # the unconditional branch gets no note cue, like no encodings
    with pytest.raises(ValueError, match="needs a per-frame note cue"):
        model.encode(tokens, context, has_context)
    with pytest.raises(ValueError, match="takes no per-frame note cue"):
        _model(roll=False).encode(tokens, context, has_context, soft)


def test_a_note_roll_model_from_plain_weights_renders_what_they_render(short_midi):
    """`initial_weights` keeps the zero projection, so fine-tuning starts from the source model's output."""
    from midisynth.training.diffusion import initial_weights

    plain = _model(roll=False)
    widened = _model(roll=True, seed=1)
    widened.load_state_dict(initial_weights(plain, widened))
    assert not widened.decoder.cue_proj.weight.any()
    song = read_midi(short_midi)
    vocoder = load_vocoder("griffin-lim", torch.device("cpu"))
    options = RenderOptions(sampler="ddim", steps=2, guidance=2.0, precision="fp32")
    ours, theirs = (
        np.concatenate(list(next(iter(Synthesizer(m, vocoder, "cpu", options).spectrogram_songs([song])))[1]))
        for m in (widened, plain)
    )
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow  # renders two songs alone, batched and whole
def test_renders_follow_the_note_roll_and_batches_match_single_songs(tmp_path):
    """With a non-zero projection a soft and a loud copy of the same notes (same tokens, onsets of other heights in
    the roll) render differently, alone or batched (each song with its own roll); the projection survives a save and
    load."""
    model = _model(roll=True)
    with torch.no_grad():
        model.decoder.cue_proj.weight.normal_()
    save_model(model, tmp_path / "m.safetensors")
    loaded = load_model_file(tmp_path / "m.safetensors").model
    assert loaded.cfg.note_roll
    assert torch.equal(loaded.decoder.cue_proj.weight, model.decoder.cue_proj.weight)
    synth = Synthesizer(
        loaded,
        load_vocoder("griffin-lim", torch.device("cpu")),
        "cpu",
        RenderOptions(sampler="ddim", steps=2, guidance=1.0, precision="fp32"),
    )
    notes = [(60, 0.0, 1.0), (64, 0.5, 6.0)]
    soft = read_midi(write_midi(tmp_path / "soft.mid", [(p, s, e, 20) for p, s, e in notes]))
    loud = read_midi(write_midi(tmp_path / "loud.mid", [(p, s, e, 120) for p, s, e in notes]))
    assert tokenize(soft) == tokenize(loud)  # the one-bin tokens cannot tell them apart
    onset = ROLL_GROUPS * ROLL_PITCHES + 60  # the onset column of the first note's pitch
    assert synth.note_inputs(soft).cue(0)[0, onset] == pytest.approx(20 / 127)
    assert synth.note_inputs(loud).cue(0)[0, onset] == pytest.approx(120 / 127)
    assert synth.note_inputs(soft).gain is None  # this model does not take velocity as a level
    alone = [
        np.concatenate(list(synth.spectrogram_windows(tokenize(s), note_inputs=synth.note_inputs(s))))
        for s in (soft, loud)
    ]
    assert np.abs(alone[0] - alone[1]).mean() > 0.01
    together = {index: list(parts) for index, parts in synth.spectrogram_songs([soft, loud])}
    for i, expected in enumerate(alone):
        diff = np.abs(np.concatenate(together[i]) - expected[: sum(p.shape[0] for p in together[i])])
        assert (diff > 1e-3).mean() < 1e-3 and diff.max() < 0.5  # float rounding only (see test_pipeline)
    assert synth.render(loud).shape == synth.render(soft).shape


def test_training_feeds_the_stored_midis_note_roll(tmp_path):
    """The data set serves each window's note roll from its MIDI, and a note-roll model trains on it."""
    from midisynth.data.store import WindowDataset, load_records
    from midisynth.training.diffusion import Trainer
    from tests.test_train import _fake_dataset

    data = tmp_path / "ds"
    _fake_dataset(data)
    (data / "midi").mkdir()
    for k, record in enumerate(load_records(data, "train") + load_records(data, "heldout")):
        write_midi(data / "midi" / f"{record.piece_id}.mid", [(60, 0.5, 3.0, 10 + 15 * k), (67, 2.0, 8.5, 120)])
    dataset = WindowDataset(data, "train", model=ModelConfig(note_roll=True))
    record, window = dataset.index[0]
    song = read_midi(data / "midi" / f"{record.piece_id}.mid")
    np.testing.assert_array_equal(dataset[0]["note_cue"].numpy(), note_roll(song, window))
    assert "note_cue" not in WindowDataset(data, "train")[0]

    config = load_config(ROOT / "configs" / "tiny.toml")
    config = replace(
        config,
        model=replace(config.model, note_roll=True),
        train=replace(config.train, max_steps=2, checkpoint_every=1, eval_every=2, eval_batches=1, cue_lr_scale=10.0),
    )
    trainer = Trainer(config, data, tmp_path / "run")
    trainer.train()
    assert trainer.model.decoder.cue_proj.weight.abs().sum() > 0  # it learns from zero
    rest, cue = trainer.optimizer.param_groups  # the projection learns at cue_lr_scale x the rate
    assert cue["params"] == [trainer.model.decoder.cue_proj.weight]
    assert len(rest["params"]) == len(list(trainer.model.parameters())) - 1
    assert cue["lr"] == pytest.approx(10 * rest["lr"]) and rest["lr"] > 0
    assert load_model_file(tmp_path / "run" / "model.safetensors").model.cfg.note_roll


def test_note_input_settings_are_validated():
    config = load_config(ROOT / "configs" / "tiny.toml")
    with pytest.raises(ValueError, match="cue_lr_scale must be a finite number > 0"):
        replace(config.train, cue_lr_scale=0.0)


def test_model_files_from_before_the_retired_options_still_load():
    """Files written while the velocity-bin and velocity-cue options existed carry them at their neutral values
    (the bundled model does); a file that used them is refused by name."""
    assert ModelConfig.from_dict({"velocity_bins": 1, "dynamics_bins": 0, "note_roll": True}) == ModelConfig(
        note_roll=True
    )
    for key, value in (("velocity_bins", 32), ("dynamics_bins", 8)):
        with pytest.raises(ValueError, match=f"{key} is no longer supported"):
            ModelConfig.from_dict({key: value})


def test_velocity_gain_is_the_sf2_level_of_the_sounding_notes_held_through_gaps():
    """ln(mean (v / 90)^2) over the notes sounding; silence keeps the last value; 0 before the first note."""
    song = Song(
        notes=[_note(0.125, 0.375, 90), _note(0.1875, 0.375, 45, pitch=64), _note(0.5, 0.625, 127)], duration=5.3
    )
    gain = velocity_gain(song, windows=2)
    assert gain.shape == (2, WINDOW_FRAMES) and gain.dtype == np.float32
    frames = gain.reshape(-1)
    np.testing.assert_array_equal(frames[:7], 0.0)  # before the first note (frame 7 is the first at >= 0.125 s)
    np.testing.assert_allclose(frames[7:10], 0.0, atol=1e-7)  # velocity 90 alone: the reference level
    np.testing.assert_allclose(frames[10:25], np.log((1 + 0.25) / 2), rtol=1e-6)  # with velocity 45, then held
    np.testing.assert_allclose(frames[25:], 2 * np.log(127 / 90), rtol=1e-6)  # velocity 127, held to the end


def test_apply_gain_shifts_sound_clips_and_leaves_silence():
    from midisynth.constants import MAX_LOG_MEL, MIN_LOG_MEL

    features = torch.tensor([[[MIN_LOG_MEL, -3.0, 3.5]], [[MIN_LOG_MEL, -3.0, -11.0]]])  # [2, 1 frame, 3 bins]
    shifted = apply_gain(features, torch.tensor([[1.0], [-2.0]]))
    torch.testing.assert_close(
        shifted, torch.tensor([[[MIN_LOG_MEL, -2.0, MAX_LOG_MEL]], [[MIN_LOG_MEL, -5.0, MIN_LOG_MEL]]])
    )


def test_a_velocity_gain_model_renders_its_normalised_output_plus_the_gain(tmp_path):
    """The same weights with and without `velocity_gain`: the gain model's windows are the plain model's with each
    frame's gain added (its contexts are its own normalised output, so the networks see the same inputs)."""
    plain = _model(roll=False)
    gained = SpectrogramDiffusion(replace(plain.cfg, velocity_gain=True)).eval()
    gained.load_state_dict(plain.state_dict())
    vocoder = load_vocoder("griffin-lim", torch.device("cpu"))
    options = RenderOptions(sampler="ddim", steps=2, guidance=1.0, precision="fp32")
    song = read_midi(write_midi(tmp_path / "soft.mid", [(60, 0.0, 1.0, 30), (64, 0.5, 6.0, 120)]))
    synth = Synthesizer(gained, vocoder, "cpu", options)
    gain = synth.note_inputs(song).gain  # [2, 256]
    assert synth.note_inputs(song).cue(0) is None and gain.min() < -2 and gain.max() > 0.5
    expected = [
        apply_gain(torch.from_numpy(w), torch.from_numpy(g)).numpy()
        for w, g in zip(
            Synthesizer(plain, vocoder, "cpu", options).spectrogram_windows(tokenize(song)), gain, strict=True
        )
    ]
    got = list(synth.spectrogram_windows(tokenize(song), note_inputs=synth.note_inputs(song)))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="takes per-frame note inputs"):
        list(synth.spectrogram_windows(tokenize(song)))
    with pytest.raises(ValueError, match="velocity_gain must be true or false"):
        replace(plain.cfg, velocity_gain=1)


def test_the_data_set_normalises_targets_and_contexts_by_the_velocity_gain(tmp_path):
    from midisynth.data.store import WindowDataset, load_records
    from tests.test_train import _fake_dataset

    data = tmp_path / "ds"
    _fake_dataset(data, pieces=2)
    (data / "midi").mkdir()
    for record in load_records(data):
        write_midi(data / "midi" / f"{record.piece_id}.mid", [(60, 0.5, 3.0, 20), (67, 2.0, 8.5, 127)])
    raw = WindowDataset(data, "train")
    normalised = WindowDataset(data, "train", model=ModelConfig(velocity_gain=True))
    for i, (record, window) in enumerate(raw.index):
        gain = torch.from_numpy(velocity_gain(read_midi(data / "midi" / f"{record.piece_id}.mid"), record.windows))
        torch.testing.assert_close(normalised[i]["targets"], apply_gain(raw[i]["targets"], -gain[window]))
        if window > 0:
            torch.testing.assert_close(normalised[i]["context"], apply_gain(raw[i]["context"], -gain[window - 1]))
        else:
            assert not normalised[i]["context"].any()
        assert not torch.equal(normalised[i]["targets"], raw[i]["targets"])


def test_note_roll_has_the_sounding_notes_by_group_and_pitch_and_their_onsets():
    """Column group * 128 + pitch: 1 while sounding (start <= f / 50 < end); last 128 columns: velocity / 127 at the
    onset frame, decaying with a 0.1 s (5-frame) time constant, and the larger where onsets of one pitch overlap."""
    trumpet, drum = 56, 16  # GM family 7 (brass) has programs 56-63; drums are group 16
    song = Song(
        notes=[
            _note(0.1, 0.2, 127, pitch=60, program=trumpet),
            _note(0.125, 0.5, 64, pitch=60),
            _note(5.0, 5.3, 100, pitch=72, program=trumpet),
            _note(1.0, 1.0, 90, pitch=38, is_drum=True),
        ],
        duration=5.3,
    )
    roll = note_roll(song, 0)
    assert roll.shape == (WINDOW_FRAMES, ROLL_DIMS) and roll.dtype == np.float32
    sounding = roll[:, :-ROLL_PITCHES].reshape(WINDOW_FRAMES, -1, ROLL_PITCHES)  # [frames, groups, pitches]
    onsets = roll[:, -ROLL_PITCHES:]  # [frames, pitches]
    np.testing.assert_array_equal(np.nonzero(sounding[:, 7, 60])[0], np.arange(5, 10))  # trumpet, 0.1-0.2 s
    np.testing.assert_array_equal(np.nonzero(sounding[:, 0, 60])[0], np.arange(7, 25))  # piano, 0.125-0.5 s
    np.testing.assert_array_equal(np.nonzero(sounding[:, drum, 38])[0], np.arange(50, 63))  # a 0.25 s drum hit
    np.testing.assert_array_equal(np.nonzero(sounding[:, 7, 72])[0], np.arange(250, 256))  # 5.0 s on, cut
    assert sounding.sum() == 5 + 18 + 13 + 6
    assert not onsets[:5, 60].any() and onsets[5, 60] == 1.0
    np.testing.assert_allclose(onsets[6, 60], np.exp(-1 / 5), rtol=1e-6)
    np.testing.assert_allclose(
        onsets[7:10, 60], np.maximum(np.exp(-np.arange(2, 5) / 5), 64 / 127 * np.exp(-np.arange(3) / 5)), rtol=1e-6
    )  # the piano's onset at frame 7 is softer than the trumpet's decay
    assert onsets[50, 38] == pytest.approx(90 / 127) and onsets[250, 72] == pytest.approx(100 / 127)
    later = note_roll(song, 1)  # 5.12 s on: the trumpet's last 0.18 s, onset 6 frames ago
    np.testing.assert_array_equal(np.nonzero(later[:, 7 * ROLL_PITCHES + 72])[0], np.arange(0, 9))
    np.testing.assert_allclose(later[0, -ROLL_PITCHES + 72], 100 / 127 * np.exp(-6 / 5), rtol=1e-6)
    assert later[:, :-ROLL_PITCHES].sum() == 9


def test_a_note_roll_model_takes_the_roll_in_rendering_and_training(tmp_path):
    """The roll reaches the decoder through the zero-initialised cue projection, in the pipeline and in the data
    set."""
    from midisynth.data.store import WindowDataset, load_records
    from tests.test_train import _fake_dataset

    cfg = replace(load_config(ROOT / "configs" / "tiny.toml").model, dropout_rate=0.0, note_roll=True)
    assert cfg.cue_dims == ROLL_DIMS
    model = SpectrogramDiffusion(cfg).eval()
    with torch.no_grad():
        model.decoder.cue_proj.weight.normal_()
    song = read_midi(write_midi(tmp_path / "a.mid", [(60, 0.0, 1.0, 30), (64, 0.5, 6.0, 120)]))
    synth = Synthesizer(
        model,
        load_vocoder("griffin-lim", torch.device("cpu")),
        "cpu",
        RenderOptions(sampler="ddim", steps=2, guidance=1.0, precision="fp32"),
    )
    cue = synth.note_inputs(song).cue(1)
    np.testing.assert_array_equal(cue, note_roll(song, 1))
    moved = read_midi(write_midi(tmp_path / "b.mid", [(60, 0.0, 1.0, 30), (65, 0.5, 6.0, 120)]))
    a, b = (
        np.concatenate(list(synth.spectrogram_windows(tokenize(s), note_inputs=synth.note_inputs(s))))
        for s in (song, moved)
    )
    assert a.shape == b.shape == (2 * WINDOW_FRAMES, 128) and np.abs(a - b).mean() > 1e-3

    data = tmp_path / "ds"
    _fake_dataset(data)
    (data / "midi").mkdir()
    for record in load_records(data, "train") + load_records(data, "heldout"):
        write_midi(data / "midi" / f"{record.piece_id}.mid", [(60, 0.5, 3.0, 100), (67, 2.0, 8.5, 120)])
    dataset = WindowDataset(data, "train", model=cfg)
    record, window = dataset.index[-1]
    song = read_midi(data / "midi" / f"{record.piece_id}.mid")
    np.testing.assert_array_equal(dataset[len(dataset) - 1]["note_cue"].numpy(), note_roll(song, window))
    with pytest.raises(ValueError, match="note_roll must be true or false"):
        replace(cfg, note_roll="yes")
