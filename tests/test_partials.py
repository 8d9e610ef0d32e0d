"""The partials model (midisynth.model.partials, midisynth.training.partials): its columns, its fit, its files, and
how renders mix it in."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from midisynth.cli import app
from midisynth.constants import FRAME_RATE, MAX_LOG_MEL, MIN_LOG_MEL, N_MELS, WINDOW_FRAMES, WINDOW_SAMPLES
from midisynth.data.store import PieceRecord, save_piece, split_of
from midisynth.model import partials as P
from midisynth.model.checkpoints import CheckpointError
from midisynth.model.directory import PARTIALS_FILE
from midisynth.model.harmonics import NOTE_LEVEL, PIANO, pitch_templates
from midisynth.model.resolve import resolve_model
from midisynth.render.pipeline import RenderOptions, Synthesizer
from midisynth.score.frames import DRUM_SECONDS
from midisynth.score.midi import Note, Song, read_midi
from midisynth.training.partials import (
    broadband_columns,
    capped_to_seen_bins,
    fit_partials,
    log_pass_gains,
    nonnegative_least_squares,
    normal_equations,
    seen_bins,
    solve_gains,
)
from tests.conftest import FAST, write_midi


def _note(
    start: float, end: float, pitch: int = 60, velocity: int = 90, program: int = 0, is_drum: bool = False
) -> Note:
    return Note(start=start, end=end, pitch=pitch, velocity=velocity, program=program, is_drum=is_drum)


def _song(notes: list[Note]) -> Song:
    return Song(notes=notes, duration=max(n.end for n in notes))


def _random_partials(seed: int = 0, mix: float = P.DEFAULT_MIX) -> P.Partials:
    return P.Partials(np.random.default_rng(seed).uniform(0.1, 2.0, (N_MELS, P.COLUMNS)).astype(np.float32), mix)


def test_a_held_note_decays_by_its_family_then_releases():
    """A piano note (family decay 1.5 s) at velocity 90 from 0 to 1 s: held level exp(-age / 1.5) on its pitch for
    frames 0-49 (age at each window's centre), then each of the family's releases from the level reached."""
    note = _note(0.0, 1.0)
    columns = P.note_columns(_song([note]), 0, 300)
    on = P.voice(note)  # pitch 60 on a piano's strings
    assert on == 128 + 60 and columns.voices.tolist() == [on]
    held = columns.levels(P.held_column(note), on)
    ages = np.arange(50) / FRAME_RATE + P.WINDOW_CENTRE_SECONDS
    np.testing.assert_allclose(held[:50], np.exp(-ages / 1.5), rtol=1e-5)
    assert not held[50:].any() and not columns.levels(P.held_column(note), 60).any()
    reached = math.exp(-(1.0 + P.WINDOW_CENTRE_SECONDS) / 1.5)
    for index, seconds in enumerate(P.RELEASE_SECONDS):
        release = columns.levels(P.RELEASE_COLUMN + index * P.FAMILIES, on)
        after = np.arange(P.RELEASE_FRAMES) / FRAME_RATE
        np.testing.assert_allclose(release[50 : 50 + P.RELEASE_FRAMES], reached * np.exp(-after / seconds), rtol=1e-5)
        assert not release[:50].any()


def test_the_stages_of_a_note_have_their_own_columns():
    """Attack (ATTACK_SECONDS) and fade (FADE_SECONDS) decay from the onset, the swell rises, the hard attack weighs
    the attack by (velocity / 127)², the onset noise and the body (at the held level) are broadband."""
    note = _note(0.0, 2.0, velocity=127, program=8)  # chromatic percussion: family 1, decay 1.0 s; register 2 (60-71)
    columns = P.note_columns(_song([note]), 0, 100)
    ages = np.arange(100) / FRAME_RATE + P.WINDOW_CENTRE_SECONDS
    level = (127 / 90) ** 2
    expected = {
        P.ATTACK_COLUMN + P.held_column(note): np.exp(-ages / P.ATTACK_SECONDS),
        P.FADE_COLUMN + 4 + 2: np.exp(-ages / P.FADE_SECONDS),
        P.SWELL_COLUMN + 4 + 2: np.exp(-ages / 1.0) * -np.expm1(-ages / P.SWELL_SECONDS),
        P.HARD_COLUMN + 1: np.exp(-ages / P.ATTACK_SECONDS),
    }
    for column, envelope in expected.items():
        np.testing.assert_allclose(columns.levels(column, 60), level * envelope, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(
        columns.broadband[P.NOISE_COLUMN + 1], level * np.exp(-ages / P.NOISE_SECONDS), rtol=1e-5, atol=1e-9
    )
    body = columns.broadband[P.BODY_COLUMN + 4 + 2]  # family 1, register 2
    np.testing.assert_allclose(body, level * np.exp(-ages / 1.0), rtol=1e-5, atol=1e-9)
    assert set(columns.broadband) == {P.NOISE_COLUMN + 1, P.BODY_COLUMN + 4 + 2}


def test_an_onset_lands_where_the_front_end_sees_it():
    """A note from 0.205 s: frames 9 and 10 (windows from 0.18 and 0.20 s) hold its start part way, by the share of
    the Hann window's weight after it; frame 8 none, frame 11 all (an organ: held without decay)."""
    note = _note(0.205, 1.0, program=16)
    envelope = P.note_columns(_song([note]), 0, 12).levels(P.held_column(note), 60)[8:12]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(640) / 640)
    after = [window[int(np.ceil(0.205 * 16000 - f * 320)) :].sum() / window.sum() for f in (9, 10)]
    np.testing.assert_allclose(envelope, [0.0, *after, 1.0], rtol=1e-6)
    assert P.onset_frame(0.205) == 9 and P.onset_frame(0.0) == 0


def test_around_an_onset_the_estimate_takes_the_whole_share():
    """A note from 0.205 s (onset frame 9): shares of 1 in frames 8 and 9 (centred at 0.18 and 0.20 s), then
    exp(-age / 10 ms) at the centres of frames 10 and 11 (0.22, 0.24 s); a drum hit in the next window counts too,
    and the mix is raised toward 1 by them, but stays 0 for the network alone."""
    song = _song([_note(0.205, 1.0), _note(5.5, 5.6, pitch=38, is_drum=True)])
    shares = P.onset_shares(song, 0)
    np.testing.assert_allclose(shares[7:12], [0.0, 1.0, 1.0, math.exp(-1.5), math.exp(-3.5)], rtol=1e-5)
    assert shares[12:].max() < 0.01 and shares[:7].max() == 0.0
    later = P.onset_shares(song, 1)
    assert later[273 - WINDOW_FRAMES] == 1.0 and later[: 273 - WINDOW_FRAMES].max() == 0.0  # onset frame 274
    np.testing.assert_array_equal(P.onset_shares(song, 1, P.NoteReach(song)), later)
    mixed = P.mix_shares(song, 0, 0.85)
    assert mixed.shape == (WINDOW_FRAMES, 1) and mixed[0, 0] == pytest.approx(0.85) and mixed[8, 0] == 1.0
    assert not P.mix_shares(song, 0, 0.0).any()


def test_registers_have_columns_of_their_own():
    pitches = (0, 47, 48, 59, 60, 71, 72, 127)  # each register's edges: REGISTER_SPLITS (48, 60, 72)
    notes = [_note(0.0, 1.0, pitch=pitch, program=5) for pitch in pitches]
    assert [P.held_column(note) for note in notes] == [20, 20, 21, 21, 22, 22, 23, 23]  # 4 x program 5 + register
    columns = set(P.note_columns(_song(notes), 0, 60).pitched)
    assert {20, 21, 22, 23, P.ATTACK_COLUMN + 20, P.ATTACK_COLUMN + 23, P.FADE_COLUMN + 3} <= columns
    assert P.held_column(_note(0.0, 1.0, pitch=127, program=127)) == P.HELD_COLUMNS - 1


def test_velocity_sets_the_level_and_sustaining_families_hold_it():
    """Level (velocity / 90)²; an organ (family 2) does not decay while held."""
    note = _note(0.0, 1.0, velocity=45, program=16)
    columns = P.note_columns(_song([note]), 0, 60)
    np.testing.assert_allclose(columns.levels(P.held_column(note), 60)[:50], 0.25, rtol=1e-6)


def test_a_harp_decays_though_its_family_sustains():
    """The harp (46) and the violin (40) share a family (strings); the harp's held level decays over its own 1 s."""
    harp, violin = _note(0.0, 1.0, program=46), _note(0.0, 1.0, program=40)
    ages = np.arange(50) / FRAME_RATE + P.WINDOW_CENTRE_SECONDS
    harp_held = P.note_columns(_song([harp]), 0, 60).levels(P.held_column(harp), P.voice(harp))
    np.testing.assert_allclose(harp_held[:50], np.exp(-ages / 1.0), rtol=1e-5)
    violin_held = P.note_columns(_song([violin]), 0, 60).levels(P.held_column(violin), 60)
    np.testing.assert_allclose(violin_held[:50], 1.0)


def test_drums_go_to_their_key_with_the_decay_of_their_kind():
    columns = P.note_columns(
        _song(
            [_note(0.2, 0.3, pitch=36, velocity=90, is_drum=True), _note(0.0, 0.1, pitch=49, velocity=90, is_drum=True)]
        ),
        0,
        100,
    )
    kick, cymbal = P.drum_column(36), P.drum_column(49)
    assert (kick, cymbal) == (1, 14) and P.drum_column(27) == P.drum_column(90) == P.DRUM_KEYS - 1
    assert not columns.pitched and set(columns.broadband) == {
        P.DRUM_COLUMN + kick,
        P.STICK_COLUMN + kick,
        P.DRUM_COLUMN + cymbal,
        P.STICK_COLUMN + cymbal,
    }
    body, stick = columns.broadband[P.DRUM_COLUMN + kick], columns.broadband[P.STICK_COLUMN + kick]
    ages = np.arange(10, 48) / FRAME_RATE + P.WINDOW_CENTRE_SECONDS - 0.2
    np.testing.assert_allclose(body[10:48], np.exp(-ages / 0.15), rtol=1e-5)
    np.testing.assert_allclose(stick[10:48], np.exp(-ages / P.DRUM_ATTACK_SECONDS), rtol=1e-5, atol=1e-9)
    assert body[:9].sum() == 0 and 0 < body[9] < 1 and body[48:].sum() == 0  # over after 5 time constants
    assert columns.broadband[P.DRUM_COLUMN + cymbal][1:].all()  # 0.6 s: still ringing


def test_reverb_follows_the_held_notes_and_decays():
    columns = P.note_columns(_song([_note(0.0, 0.5, program=16)]), 0, 200)
    tail = columns.reverb.sum(axis=1)  # [frames]
    assert tail[0] == 0 and (np.diff(tail[:25]) > 0).all()  # builds up while the note sounds
    assert (np.diff(tail[26:]) < 0).all()  # and dies away after
    np.testing.assert_allclose(tail[60] / tail[59], math.exp(-1 / (FRAME_RATE * P.REVERB_SECONDS)), rtol=1e-5)


def test_a_window_sees_what_the_whole_song_sees():
    """Columns of window 1 alone equal the whole song's at those frames (the reverb from LEAD_FRAMES of history)."""
    song = _song(
        [_note(4.0, 6.5, pitch=64), _note(5.0, 5.5, pitch=67, program=40), _note(5.2, 5.3, pitch=38, is_drum=True)]
    )
    whole = P.note_columns(song, 0, 2 * WINDOW_FRAMES)
    window = P.note_columns(song, WINDOW_FRAMES, 2 * WINDOW_FRAMES)
    assert set(window.pitched) == set(whole.pitched) and {2, 162} <= set(window.pitched)  # register 60-71
    for column in window.pitched:
        np.testing.assert_array_equal(window.pitched[column], whole.pitched[column][WINDOW_FRAMES:])
    for column in window.broadband:
        np.testing.assert_array_equal(window.broadband[column], whole.broadband[column][WINDOW_FRAMES:])
    np.testing.assert_allclose(window.reverb, whole.reverb[WINDOW_FRAMES:], rtol=1e-5, atol=1e-9)


def test_note_reach_visits_only_a_windows_notes_and_changes_nothing():
    """With the song's notes indexed by frame, the windows of a 40-window song (its first two, then every fifth) get
    the same magnitude as when every note is looked at, and visit only the notes that reach them: held across
    windows, released or reverberating into the next, a drum decaying past a window's end, none left out."""
    rng = np.random.default_rng(0)
    notes = [
        _note(t, t + d, pitch=int(p), program=int(g), is_drum=bool(k))
        for t, d, p, g, k in zip(
            rng.uniform(0, 200, 300),
            rng.uniform(0.05, 12.0, 300),
            rng.integers(30, 90, 300),
            rng.integers(0, 128, 300),
            rng.random(300) < 0.2,
            strict=True,
        )
    ]
    notes += [_note(5.0, 5.119, pitch=62), _note(5.1, 5.2, pitch=49, is_drum=True)]  # releasing / decaying past 5.12 s
    song, partials = _song(sorted(notes, key=lambda n: n.start)), _random_partials()
    reach = P.NoteReach(song)
    for window in [0, 1, *range(5, 40, 5)]:
        np.testing.assert_array_equal(partials.magnitude(song, window, reach), partials.magnitude(song, window))
    first, stop = WINDOW_FRAMES - P.LEAD_FRAMES, 2 * WINDOW_FRAMES
    assert 0 < len(reach.within(first, stop)) < len(notes) // 10
    assert {(n.pitch, n.is_drum) for n in reach.within(WINDOW_FRAMES, WINDOW_FRAMES + 1)} >= {(62, False), (49, True)}


def test_a_rest_begins_rest_guard_seconds_after_the_last_note_stops():
    """A note over 0.5-1.0 s (frames 25-49 sound), a drum hit at 3.0 s (sounding DRUM_SECONDS), in window 0, and
    a note that started in window 0 and sounds into window 1."""
    guard = round(P.REST_GUARD_SECONDS * FRAME_RATE)  # 10 frames
    song = _song([_note(0.5, 1.0, pitch=60), _note(3.0, 3.01, pitch=38, is_drum=True), _note(4.5, 5.5, pitch=62)])
    rest = P.rest_frames(song, 0)
    expected = np.ones(WINDOW_FRAMES, bool)
    expected[25 : 50 + guard] = False
    expected[150 : math.ceil((3.0 + DRUM_SECONDS) * FRAME_RATE) + guard] = False
    expected[225:] = False
    np.testing.assert_array_equal(rest, expected)
    later = P.rest_frames(song, 1, P.NoteReach(song))
    assert not later[: 275 + guard - WINDOW_FRAMES].any() and later[275 + guard - WINDOW_FRAMES :].all()


@pytest.mark.parametrize("key", [35, 38, 42, 45, 49, 81, 27])  # each kind of drum, and a key outside the map
def test_a_songs_note_reach_holds_every_note_a_rest_waits_for(key):
    """`rest_frames` looks only at the notes NoteReach gives a window: a drum hit's reach (its drawn decay) must last
    past its sounding end and the rest guard, or the next window's rest would start early."""
    onset = 4.675  # sounds over frames 234-246 (to 4.925 s), then the 10-frame guard: up to window 1's first frame
    song = _song([_note(onset, onset + 0.01, pitch=key, is_drum=True)])
    by_reach = P.rest_frames(song, 1, P.NoteReach(song))
    np.testing.assert_array_equal(by_reach, P.rest_frames(song, 1))
    assert not by_reach[0] and by_reach[1:].all()


def test_magnitude_is_the_design_times_the_gains():
    song = _song(
        [_note(0.0, 2.0, pitch=48), _note(1.0, 3.0, pitch=72, program=56), _note(0.5, 0.6, pitch=42, is_drum=True)]
    )
    partials = _random_partials()
    design, columns = P.note_columns(song, 0, WINDOW_FRAMES).design()  # [256, 128, n]
    expected = np.einsum("fbn,bn->fb", design, partials.gains[:, columns])
    np.testing.assert_allclose(partials.magnitude(song, 0), expected, rtol=1e-4)
    piano, brass = _note(0.0, 2.0, pitch=48), _note(1.0, 3.0, pitch=72, program=56)
    assert (P.held_column(piano), P.held_column(brass)) == (1, 227)  # registers 48-59 and 72 up
    assert {
        1,
        227,
        P.ATTACK_COLUMN + 1,
        P.FADE_COLUMN + 1,
        P.RELEASE_COLUMN + 7,
        P.REVERB_COLUMN,
        P.DRUM_COLUMN + P.drum_column(42),
        P.STICK_COLUMN + P.drum_column(42),
        P.FLOOR_COLUMN,
    } <= set(columns)
    ages = 10 / FRAME_RATE + P.WINDOW_CENTRE_SECONDS
    np.testing.assert_allclose(
        design[..., columns.index(1)][10],
        NOTE_LEVEL * np.exp(-ages / 1.5) * pitch_templates(kind=PIANO)[48],
        rtol=1e-5,
    )
    # The piano's fundamental column: the held level on the fundamental's template alone.
    fundamental = columns.index(P.FUNDAMENTAL_COLUMN + 1)
    assert P.is_fundamental(P.FUNDAMENTAL_COLUMN + 1) and not P.is_fundamental(1)
    np.testing.assert_allclose(
        design[..., fundamental][10], NOTE_LEVEL * np.exp(-ages / 1.5) * pitch_templates(True)[48], rtol=1e-5
    )


def test_mix_is_linear_in_magnitude_and_stays_in_the_feature_range():
    log_mel = np.array([[0.0, MIN_LOG_MEL, 3.9]], np.float32)
    magnitude = np.array([[math.e, 0.0, 1e3]])
    np.testing.assert_allclose(P.mix_log_mel(log_mel, magnitude, 0.0), log_mel, atol=1e-6)
    np.testing.assert_allclose(P.mix_log_mel(log_mel, magnitude, 0.5)[0, 0], math.log((1 + math.e) / 2), rtol=1e-6)
    mixed = P.mix_log_mel(log_mel, magnitude, 1.0)
    assert mixed[0, 1] == pytest.approx(MIN_LOG_MEL) and mixed[0, 2] == pytest.approx(MAX_LOG_MEL)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        P.check_mix(1.5)


def test_nonnegative_least_squares():
    """The unconstrained optimum where it is non-negative; the constrained one where it is not."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 20, 6))
    gram = a.transpose(0, 2, 1) @ a  # [3, 6, 6]
    truth = rng.uniform(0.5, 2.0, (3, 6))
    np.testing.assert_allclose(nonnegative_least_squares(gram, np.einsum("bij,bj->bi", gram, truth)), truth, rtol=1e-6)
    solution = nonnegative_least_squares(np.eye(2)[None], np.array([[1.0, -1.0]]))
    np.testing.assert_allclose(solution, [[1.0, 0.0]])


def _dataset_from(root: Path, songs: list[Song], gains: np.ndarray) -> None:
    """A data set whose training features are exactly the partials model with `gains` (training split only)."""
    (root / "pieces").mkdir(parents=True)
    (root / "midi").mkdir()
    truth = P.Partials(gains)
    k = 0
    for song in songs:
        while split_of(f"fit-{k}") != "train":
            k += 1
        piece_id = f"fit-{k}"
        k += 1
        pm_path = root / "midi" / f"{piece_id}.mid"
        by_program: dict[tuple[int, bool], list] = {}
        for n in song.notes:
            by_program.setdefault((n.program, n.is_drum), []).append((n.pitch, n.start, n.end, n.velocity))
        _write_multi(pm_path, by_program)
        stored = read_midi(pm_path)  # as the fit reads it (overlapping notes of one pitch cut each other short)
        windows = math.ceil(song.duration * FRAME_RATE / WINDOW_FRAMES)
        features = np.log(np.concatenate([truth.magnitude(stored, w) for w in range(windows)]))
        save_piece(
            root,
            PieceRecord(piece_id, "train", song.duration, windows, [0] * (windows + 1)),
            features.astype(np.float16),
            np.zeros(windows * WINDOW_SAMPLES, np.float16),
            np.zeros(0, np.int16),
        )


def _write_multi(path: Path, tracks: dict[tuple[int, bool], list]) -> None:
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    for (program, is_drum), notes in tracks.items():
        inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
        inst.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for p, s, e, v in notes]
        pm.instruments.append(inst)
    pm.write(str(path))


@pytest.mark.slow  # solves the whole fit, every column
def test_the_fit_recovers_the_envelopes_that_made_the_data(tmp_path):
    """Features made by known held envelopes give those gains back where the data pins them, and (nearly) nothing to
    the stages that did not make them; a program without data takes its family's."""
    rng = np.random.default_rng(1)
    gains = np.zeros((N_MELS, P.COLUMNS))
    piano, violin = range(P.REGISTERS), range(40 * P.REGISTERS, 41 * P.REGISTERS)  # program 0's and 40's columns
    gains[:, piano] = np.linspace(2.0, 0.2, N_MELS)[:, None]  # a darker piano, every register
    gains[:, violin] = np.linspace(0.3, 1.5, N_MELS)[:, None]  # a brighter violin
    gains[:, P.FLOOR_COLUMN] = 0.05
    songs = []
    for _ in range(4):
        notes = [
            _note(t, t + d, pitch=int(p), velocity=int(v), program=program)
            for program in (0, 40)
            for t, d, p, v in zip(
                rng.uniform(0, 8, 24),
                rng.uniform(0.2, 1.5, 24),
                rng.integers(36, 96, 24),
                rng.integers(50, 120, 24),
                strict=True,
            )
        ]
        songs.append(_song(notes))
    _dataset_from(tmp_path / "ds", songs, gains.astype(np.float32))
    fitted = fit_partials(tmp_path / "ds", mix=0.4)
    assert fitted.mix == 0.4
    # each register's columns, in the bins its notes' partials reach (from its lowest pitch's fundamental up to the
    # bins below MEL_FMAX that a piano's stretched partials leave thinly covered)
    for register, lowest in enumerate((36, *P.REGISTER_SPLITS)):
        template = pitch_templates()[lowest]
        reached = slice(int(np.argmax(template > 0.1 * template.max())), 116)
        for column in (piano[register], violin[register]):
            np.testing.assert_allclose(fitted.gains[reached, column], gains[reached, column], rtol=0.12)
        # program 1 (no data): its family's, which only program 0's data made
        np.testing.assert_allclose(fitted.gains[reached, P.REGISTERS + register], gains[reached, 0], rtol=0.12)
    reached = slice(8, 120)
    for unused in (P.ATTACK_COLUMN, P.FADE_COLUMN, P.SWELL_COLUMN, P.RELEASE_COLUMN):
        assert fitted.gains[reached, unused].max() < 0.05 * gains[reached, 0].max()
    with pytest.raises(FileNotFoundError, match="no 'heldout' pieces"):
        fit_partials(tmp_path / "ds", split="heldout")


def _log_pass_data(root: Path, gains: np.ndarray) -> None:
    """Two short songs (a piano and a violin line) whose features are the partials model with `gains`."""
    songs = [
        _song([_note(0.2 + 0.5 * k, 0.6 + 0.5 * k, pitch=48 + 3 * k, program=program) for k in range(8)])
        for program in (0, 40)
    ]
    _dataset_from(root, songs, gains)


def test_a_log_pass_moves_the_estimate_by_its_log_error(tmp_path):
    """Around the gains that made the data a log pass's equations are solved by those gains; around half of them, by
    half of them times 1 + log 2 (the Gauss-Newton step of log(2x) - log(x), for levels far above the floor): the
    estimate moves by its log error, not by its relative one."""
    rng = np.random.default_rng(3)
    truth = rng.uniform(0.5, 2.0, (N_MELS, P.COLUMNS)).astype(np.float32)
    _log_pass_data(tmp_path / "ds", truth)
    for around, step in ((truth, 1.0), (truth / 2, (1.0 + math.log(2.0)) / 2)):
        gram, target = normal_equations(tmp_path / "ds", gains=around)
        used = np.einsum("bii->bi", gram) > 0  # the columns the notes reach, per bin
        solved_by = np.einsum("bij,bj->bi", gram, step * truth.astype(np.float64))
        # float16 features: the data's own log magnitude is rounded to about 1e-3 of its value
        np.testing.assert_allclose(target[used], solved_by[used], rtol=2e-2)


def test_the_broadband_columns_keep_their_gains_in_a_log_pass():
    """The onset noise, reverb, drums, sticks and floor are kept; every pitched stage of a note is refitted."""
    broadband = broadband_columns()
    assert broadband[P.NOISE_COLUMN : P.RELEASE_COLUMN].all() and broadband[P.REVERB_COLUMN :].all()
    assert not broadband[: P.NOISE_COLUMN].any() and not broadband[P.RELEASE_COLUMN : P.REVERB_COLUMN].any()


@pytest.mark.slow  # solves the whole fit twice
def test_log_passes_lift_the_relative_fits_low_estimate(tmp_path):
    """Features that scatter about the estimate (log-normal, 0.5 log units) pull a relative-error fit below them; a
    log pass brings the estimate's mean log error back near 0, and leaves the broadband columns as they were."""
    rng = np.random.default_rng(4)
    truth = np.zeros((N_MELS, P.COLUMNS), np.float32)
    truth[:, [0, 1, 80, 81]] = 1.0
    truth[:, P.FLOOR_COLUMN] = 0.05
    _log_pass_data(tmp_path / "ds", truth)
    for path in (tmp_path / "ds" / "pieces").glob("*.features.npy"):  # scattered about the truth
        features = np.load(path).astype(np.float32)
        np.save(path, (features + rng.normal(0.0, 0.5, features.shape)).astype(np.float16))
    gram, target = normal_equations(tmp_path / "ds")
    seen = seen_bins(np.einsum("bii->bi", gram))
    relative = solve_gains(gram, target, seen)
    logged = log_pass_gains(*normal_equations(tmp_path / "ds", gains=relative), relative, seen)

    def log_error(gains: np.ndarray) -> float:
        """Mean log ratio of the estimate with `gains` to the noise-free data, where that stands above the floor."""
        errors = []
        for midi in (tmp_path / "ds" / "midi").glob("*.mid"):
            song = read_midi(midi)
            for window in range(math.ceil(song.duration * FRAME_RATE / WINDOW_FRAMES)):
                clean = P.Partials(truth).magnitude(song, window)
                loud = clean > 100 * NOTE_LEVEL * truth[0, P.FLOOR_COLUMN]
                errors.append(np.log(P.Partials(gains).magnitude(song, window)[loud] / clean[loud]))
        return float(np.concatenate(errors).mean())

    assert log_error(relative) < -0.1  # pulled below the data
    assert abs(log_error(logged)) < 0.5 * abs(log_error(relative))
    kept = broadband_columns()
    np.testing.assert_array_equal(logged[:, kept], relative[:, kept])


def test_gains_in_bins_a_columns_data_do_not_reach_are_capped():
    """Column 5's notes reach bins 0-9 only through leakage (a Gram diagonal far below the bins' median): its gains
    there are capped at its largest gain in the bins they reach. The bins they reach, a broadband column and a
    column without data keep their gains."""
    diagonal = np.ones((N_MELS, P.COLUMNS))
    gains = np.full((N_MELS, P.COLUMNS), 2.0)
    diagonal[:10, 5] = 1e-4
    gains[:10, 5], gains[20, 5], gains[3, 5] = 30.0, 3.0, 1.0
    diagonal[:10, P.REVERB_COLUMN], gains[:10, P.REVERB_COLUMN] = 1e-4, 30.0
    diagonal[:, 7], gains[:10, 7] = 0.0, 30.0
    expected = gains.copy()
    expected[:10, 5] = [3.0, 3.0, 3.0, 1.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    seen = seen_bins(diagonal)
    assert seen[:10, P.REVERB_COLUMN].all() and not seen[:10, 5].any() and seen[10:, 5].all()
    np.testing.assert_array_equal(capped_to_seen_bins(gains, seen), expected)


def test_files_round_trip_and_bad_files_are_named(tmp_path):
    partials = _random_partials(mix=0.3)
    path = tmp_path / "p.safetensors"
    P.save_partials(partials, path)
    loaded = P.load_partials(path)
    np.testing.assert_array_equal(loaded.gains, partials.gains)
    assert loaded.mix == 0.3
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors: not a readable partials file"):
        P.load_partials(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="shape"):
        P.Partials(np.zeros((N_MELS, 3), np.float32))


def test_renders_mix_it_in_and_zero_leaves_the_network_alone(tiny_model_path, short_midi):
    base = Synthesizer.from_pretrained(
        tiny_model_path, device="cpu", options=RenderOptions(sampler="ddim", steps=2, precision="fp32")
    )
    assert base.partials is None and base.partials_mix() == 0.0
    with pytest.raises(ValueError, match="no partials model"):
        base.with_options(partials_mix=0.5)
    partials = _random_partials()
    synth = Synthesizer(base.model, base.vocoder, "cpu", base.requested, base.sampling, partials)
    assert synth.partials_mix() == P.DEFAULT_MIX
    song = read_midi(short_midi)
    alone = base.render(song)
    np.testing.assert_array_equal(synth.with_options(partials_mix=0.0).render(song), alone)
    network, mixed = [], []
    list(base.stream(song, mel_sink=network.append))
    list(synth.stream(song, mel_sink=mixed.append))
    frames = network[0].shape[0]
    shares = P.mix_shares(song, 0, P.DEFAULT_MIX)[:frames]
    assert shares.min() == pytest.approx(P.DEFAULT_MIX) and shares.max() == 1.0  # raised at the song's onsets
    expected = P.mix_log_mel(network[0], partials.magnitude(song, 0)[:frames], shares)
    np.testing.assert_allclose(mixed[0], expected, atol=1e-5)
    audio = synth.render(song)
    assert audio.shape == alone.shape and np.abs(audio).max() > 1e-3
    batched = {index: list(parts) for index, parts in synth.spectrogram_songs([song, song])}
    np.testing.assert_allclose(np.concatenate(batched[1]), mixed[0], atol=1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        RenderOptions(partials_mix=-0.1)


def test_a_partials_file_beside_a_model_file_is_used(tmp_path, tiny_model_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(tiny_model_path.read_bytes())
    assert resolve_model(model).partials_path is None
    P.save_partials(_random_partials(), tmp_path / PARTIALS_FILE)
    assert resolve_model(model).partials_path == tmp_path / PARTIALS_FILE
    assert Synthesizer.from_pretrained(model, device="cpu").partials_mix() == P.DEFAULT_MIX


@pytest.mark.slow  # loads and renders with the bundled model
def test_the_bundled_model_ships_a_verified_partials_model(monkeypatch, tmp_path):
    checkpoint = resolve_model(None)
    assert checkpoint.partials_path is not None and checkpoint.partials_path.name == PARTIALS_FILE
    assert P.load_partials(checkpoint.partials_path).mix == P.DEFAULT_MIX
    from midisynth.model import resolve

    bundled = tmp_path / "default"
    bundled.mkdir()
    for f in resolve.BUNDLED_DIR.iterdir():
        (bundled / f.name).symlink_to(f)
    (bundled / PARTIALS_FILE).unlink()
    (bundled / PARTIALS_FILE).write_bytes(b"tampered")
    monkeypatch.setattr(resolve, "BUNDLED_DIR", bundled)
    with pytest.raises(
        CheckpointError, match=r"partials missing or corrupted \(sha256 mismatch\); reinstall midisynth"
    ):
        resolve_model(None)


def test_models_lists_the_bundled_partials_and_their_share():
    result = CliRunner().invoke(app, ["models"])
    lines = result.output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("partials: "))
    assert result.exit_code == 0 and PARTIALS_FILE in lines[at]
    assert lines[at + 1] == f"  share in renders: {P.DEFAULT_MIX:g} (--partials)"


@pytest.mark.slow  # runs a whole fit through the CLI
def test_cli_fits_and_renders_with_it(tmp_path, tiny_model_path):
    songs = [_song([_note(0.0, 1.0, pitch=60), _note(0.5, 2.0, pitch=67, program=24)])]
    _dataset_from(tmp_path / "ds", songs, np.full((N_MELS, P.COLUMNS), 0.5, np.float32))
    runner = CliRunner()
    out = tmp_path / "run" / PARTIALS_FILE
    result = runner.invoke(app, ["fit-partials", "--data", str(tmp_path / "ds"), "--out", str(out), "--mix", "0.3"])
    assert result.exit_code == 0, result.output
    assert P.load_partials(out).mix == 0.3
    (tmp_path / "run" / "model.safetensors").write_bytes(tiny_model_path.read_bytes())
    midi = write_midi(tmp_path / "a.mid", [(60, 0.0, 1.0, 100)])
    for share in ("0", "1"):
        result = runner.invoke(
            app,
            [
                "render",
                str(midi),
                "-o",
                str(tmp_path / f"a{share}.wav"),
                "--model",
                str(tmp_path / "run" / "model.safetensors"),
                "--partials",
                share,
                *FAST,
            ],
        )
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a0.wav").read_bytes() != (tmp_path / "a1.wav").read_bytes()
    result = runner.invoke(
        app,
        [
            "render",
            str(midi),
            "-o",
            str(tmp_path / "b.wav"),
            "--model",
            str(tiny_model_path),
            "--partials",
            "0.5",
            *FAST,
        ],
    )
    assert result.exit_code == 2 and "no partials model" in result.output
    result = runner.invoke(app, ["fit-partials", "--data", str(tmp_path / "nothing"), "--out", str(out)])
    assert result.exit_code == 2 and "no 'train' pieces" in result.output


def test_a_piano_and_an_organ_on_one_pitch_are_two_voices():
    """Each note's levels go to its voice (its pitch on its program's kind of string), which picks its template: a
    piano's partials are stretched, an organ's are not; a window holds only its own notes' voices."""
    piano, organ = _note(0.0, 1.0, pitch=84), _note(0.0, 1.0, pitch=84, program=16)
    later = _note(8.0, 9.0, pitch=40, program=33)
    song = _song([piano, organ, later])
    columns = P.note_columns(song, 0, 100, P.NoteReach(song))
    assert columns.voices.tolist() == [84, 128 + 84] == sorted([P.voice(organ), P.voice(piano)])
    assert not columns.levels(P.held_column(piano), P.voice(organ)).any()
    np.testing.assert_allclose(columns.levels(P.held_column(organ), P.voice(organ))[:50], 1.0)  # an organ holds
    design, names = columns.design()
    gains = np.zeros((N_MELS, P.COLUMNS), np.float32)
    gains[:, P.held_column(piano)] = 1.0
    alone = np.einsum("fbn,bn->fb", design, gains[:, names])[10]
    template = pitch_templates(kind=PIANO)[84]
    np.testing.assert_allclose(alone / alone.max(), template / template.max(), rtol=1e-4, atol=1e-6)
