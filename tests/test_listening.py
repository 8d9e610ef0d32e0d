"""What a listener hears beyond spectral distance: attacks (onset-strength correlation), the level in the
reference's silences, the gate that keeps rests silent, and the held-out songs unlike the training data."""

from __future__ import annotations

import numpy as np
import pytest

from midisynth.constants import SAMPLE_RATE
from midisynth.evaluation.evaluate import format_table, summarise
from midisynth.evaluation.metrics import ONSET_HOP, onset_correlation, onset_strength, silence_level
from midisynth.evaluation.user_songs import USER_SONGS, write_user_songs
from midisynth.render import silence
from midisynth.score.midi import Note, Song, read_midi


def _clicks(times: list[float], seconds: float = 3.0, delay: float = 0.0) -> np.ndarray:
    """Decaying 440 Hz tones starting at `times` (+ `delay`) seconds."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = np.zeros_like(t)
    for start in times:
        age = t - start - delay
        audio += np.where(age >= 0, np.sin(2 * np.pi * 440 * t) * np.exp(-np.maximum(age, 0) / 0.1), 0.0)
    return audio.astype(np.float32)


def test_onset_strength_rises_at_attacks_only():
    strength = onset_strength(_clicks([0.5, 1.5]))  # [frames - 1]: frame k + 1's rise over frame k
    near = np.zeros(strength.shape[0], bool)
    for onset in (0.5, 1.5):
        frame = int(onset * SAMPLE_RATE / ONSET_HOP)
        near[frame - 5 : frame + 2] = True  # the windows (40 ms) that reach the onset
    assert strength[near].sum() > 0.95 * strength.sum()
    assert strength[70:140].max() < 0.05 * strength.max()  # nothing rises while the first tone decays


def test_onset_correlation_finds_the_lag_and_tells_matching_attacks_from_others():
    reference = _clicks([0.3, 0.9, 1.4, 2.2])
    same, lag = onset_correlation(reference, reference)
    assert same == pytest.approx(1.0) and lag == 0
    late, lag = onset_correlation(_clicks([0.3, 0.9, 1.4, 2.2], delay=0.01), reference)
    assert late > 0.9 and lag == 1  # one 10 ms frame late
    elsewhere, _ = onset_correlation(_clicks([0.6, 1.1, 1.8, 2.6]), reference)
    assert elsewhere < 0.3
    assert np.isnan(onset_correlation(np.zeros(16000, np.float32), reference)[0])


def test_silence_level_is_the_renders_level_where_the_reference_is_silent():
    reference = _clicks([1.0], seconds=2.0)
    reference[:SAMPLE_RATE] = 0.0  # silent first second
    hiss = reference + 1e-3 * np.random.default_rng(0).standard_normal(reference.shape[0]).astype(np.float32)
    peak_db = 10 * np.log10(
        np.max(np.mean(hiss[: hiss.shape[0] // ONSET_HOP * ONSET_HOP].reshape(-1, ONSET_HOP) ** 2, 1))
    )
    assert silence_level(hiss, reference) == pytest.approx(10 * np.log10(1e-6) - peak_db, abs=0.5)
    assert silence_level(reference, reference) < -60  # by definition of the silent frames
    assert silence_level(hiss, hiss) is None  # no silent frames in this reference


def _song(notes: list[tuple[float, float, bool]]) -> Song:
    return Song(
        notes=[Note(start=s, end=e, pitch=60, velocity=90, program=0, is_drum=d) for s, e, d in notes],
        duration=max(e for _, e, _ in notes),
    )


def test_the_gate_mutes_before_onsets_and_after_the_tail():
    gate = silence.SilenceGate(_song([(1.0, 1.5, False), (4.0, 4.1, True)]))
    gain = gate.gain(0, 6 * SAMPLE_RATE)
    at = lambda seconds: gain[int(seconds * SAMPLE_RATE)]  # noqa: E731
    assert not gain[:SAMPLE_RATE].any()  # before the first onset
    assert 0 < at(1.0 + silence.RAMP_SECONDS / 2) < 1 and at(1.0 + silence.RAMP_SECONDS) == pytest.approx(1.0, abs=1e-3)
    assert at(1.5 + silence.TAIL_SECONDS - silence.FADE_SECONDS - 0.01) == 1.0  # the tail: releases pass
    assert 0 < at(1.5 + silence.TAIL_SECONDS - 0.01) < 0.01  # fading out
    assert not gain[int((1.5 + silence.TAIL_SECONDS) * SAMPLE_RATE) : 4 * SAMPLE_RATE].any()  # the rest is silent
    end_of_drum = 4.0 + 0.25 + silence.TAIL_SECONDS  # a drum hit sounds frames.DRUM_SECONDS
    assert at(end_of_drum - silence.FADE_SECONDS - 0.01) == 1.0 and not gain[int(end_of_drum * SAMPLE_RATE) :].any()
    for first in (SAMPLE_RATE, int(1.1 * SAMPLE_RATE)):  # streamed: a chunk with a ramp, one in a span's steady part
        np.testing.assert_array_equal(gate.gain(first, 1000), gain[first : first + 1000])


def test_a_note_after_a_fading_tail_starts_from_the_fades_gain():
    """The second note's onset lies in the first one's fade: the gain before it follows the fade down (its attack is
    not drawn early), and from its onset it rises to 1."""
    second = 0.5 + silence.TAIL_SECONDS - 0.05
    gain = silence.SilenceGate(_song([(0.0, 0.5, False), (second, second + 0.5, False)])).gain(0, 3 * SAMPLE_RATE)
    before = gain[int((second - 0.005) * SAMPLE_RATE)]
    assert before < 0.1 and gain[int((second + 0.01) * SAMPLE_RATE)] == 1.0


def test_the_gates_last_span_fades_out_by_the_end_of_the_audio():
    """A render cut before its last note's tail is over ends faded out, not cut off mid-sound."""
    song = _song([(1.0, 2.0, False)])
    end = 2.0 + silence.TAIL_SECONDS / 2
    capped = silence.SilenceGate(song, end).gain(0, 4 * SAMPLE_RATE)
    uncapped = silence.SilenceGate(song).gain(0, 4 * SAMPLE_RATE)
    at = int((end - silence.FADE_SECONDS) * SAMPLE_RATE)
    np.testing.assert_array_equal(capped[:at], uncapped[:at])  # unchanged until its fade
    assert capped[at] == 1.0 and 0 < capped[int((end - 0.01) * SAMPLE_RATE)] < 0.01
    assert not capped[int(end * SAMPLE_RATE) :].any() and uncapped[int(end * SAMPLE_RATE)] == 1.0


def _pre_echo_song() -> tuple[Song, np.ndarray, int]:
    """A quiet held tone, then a note at 0.5 s whose audio (a loud tone) starts 20 ms early, as a vocoder draws it:
    the song, its audio and the onset's sample."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    onset = SAMPLE_RATE // 2
    audio = 0.01 * np.sin(2 * np.pi * 220 * t)
    early = onset - int(0.02 * SAMPLE_RATE)
    audio[early:] += 0.5 * np.sin(2 * np.pi * 440 * t[early:])
    return _song([(0.0, 1.0, False), (0.5, 1.0, False)]), audio.astype(np.float32), onset


def test_the_pre_echo_before_an_onset_is_held_to_the_level_before_it():
    song, audio, onset = _pre_echo_song()
    guarded = silence.silence(song, audio)
    assert guarded.shape == audio.shape
    gated = silence.SilenceGate(song, 1.0).apply(audio)
    pre = silence.PRE_ECHO_BLOCKS * silence.ENVELOPE_SAMPLES
    np.testing.assert_array_equal(guarded[: onset - pre], gated[: onset - pre])
    rise = round(silence.RAMP_SECONDS * SAMPLE_RATE)
    np.testing.assert_array_equal(guarded[onset + rise :], gated[onset + rise :])  # the attack passes after 5 ms
    early = guarded[onset - int(0.02 * SAMPLE_RATE) : onset]
    assert np.sqrt(np.mean(early**2)) < 0.02 < np.sqrt(np.mean(audio[onset - 320 : onset] ** 2))  # was ~0.35
    sounding = np.abs(gated[onset : onset + rise]) > 1e-3
    gain = guarded[onset : onset + rise][sounding] / gated[onset : onset + rise][sounding]
    assert gain[0] < 0.1 and np.all(np.diff(gain) > -1e-6) and gain[-1] > 0.95  # rises from the held level to 1


def test_an_onset_in_the_last_samples_is_guarded_too():
    song, audio, onset = _pre_echo_song()
    cut = audio[: onset + 30]  # the audio ends 30 samples into the onset's rise
    guarded = silence.silence(song, cut)
    assert guarded.shape == cut.shape
    assert np.sqrt(np.mean(guarded[onset - 320 : onset] ** 2)) < 0.02


def test_the_guard_streams_the_same_audio_in_any_chunks():
    song, audio, _ = _pre_echo_song()
    whole = silence.silence(song, audio)
    for size in (1, 97, 4000, audio.shape[0]):
        chunks = [audio[i : i + size] for i in range(0, audio.shape[0], size)]
        streamed = list(silence.silence_stream(song, chunks, audio.shape[0]))
        np.testing.assert_array_equal(np.concatenate(streamed), whole)


def test_onsets_that_follow_another_closely_are_not_guarded():
    """A strummed chord: the rise before its second note is the first one's attack."""
    song, audio, onset = _pre_echo_song()
    strum = Song(
        notes=[*song.notes, Note(start=0.52, end=1.0, pitch=64, velocity=90, program=0, is_drum=False)], duration=1.0
    )
    guard = silence.PreEchoGuard(strum)
    assert guard.onsets.tolist() == [onset]  # (the first, at 0 s, has no audio before it)


def test_user_songs_are_the_kinds_the_training_generator_does_not_make(tmp_path):
    paths = write_user_songs(tmp_path)
    assert [p.stem for p in paths] == list(USER_SONGS)
    songs = {p.stem: read_midi(p) for p in paths}
    assert all(15.0 <= song.duration <= 36.0 for song in songs.values())
    assert min(n.start for n in songs["pop_band"].notes) == pytest.approx(3.0)  # opens with 3 s of silence
    assert {n.is_drum for n in songs["drum_kits"].notes} == {True}
    assert (
        min(n.pitch for n in songs["registers"].notes) <= 24 and max(n.pitch for n in songs["registers"].notes) >= 100
    )
    runs = sorted(n.start for n in songs["runs"].notes if n.program == 0)
    assert np.median(np.diff(runs)) < 0.1  # thirty-second notes
    pedal = songs["pedal_ballad"].notes
    assert np.median([n.end - n.start for n in pedal]) > 1.0  # 0.15 s notes held by the sustain pedal
    assert write_user_songs(tmp_path)[0].read_bytes() == paths[0].read_bytes()  # deterministic


def test_the_summary_keeps_the_loudest_silence_and_the_table_shows_it():
    def result(silence_db):
        scores = {"log_mel_l1": 1.0, "onset_corr": 0.5}
        if silence_db is not None:
            scores["silence_db"] = silence_db
        return {"seconds": 1.0, "render_seconds": 1.0, "scores": {"midisynth": scores}}

    drums_only = {"seconds": 1.0, "render_seconds": 1.0, "scores": {"lowpass": {"silence_db": -60.0}}}  # no sine
    summary = summarise([result(-70.0), result(-40.0), result(None), drums_only])
    assert summary["worst_silence_db"] == {"midisynth": -40.0, "lowpass": -60.0}
    assert summary["mean"]["midisynth"]["silence_db"] == pytest.approx(-55.0)
    lines = format_table(summary).splitlines()
    assert "onset r" in lines[0] and "silence dB" in lines[0]
    row = next(line for line in lines if line.startswith("midisynth")).split()
    assert row[1:5] == ["1.000", "-", "0.500", "-40.000"]
