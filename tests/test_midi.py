"""MIDI reading: note_seq's parsing and sustain semantics, clear errors, robustness to malformed bytes."""

from __future__ import annotations

import io
import json
import random
import resource
import struct
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import mido
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from midisynth.cli import app
from midisynth.constants import EOS_ID
from midisynth.score.midi import NO_LIMITS, MidiError, Note, Song, SongLimits, apply_sustain, read_midi
from midisynth.score.tokens import tokenize
from tests.malformed import C4_ONE_BEAT, END_OF_TRACK, REFUSED, RENDERS, VALID, meta, mutations, smf

DATA = Path(__file__).parent / "data"
HEADER = b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0"  # format 1, one track, 480 ticks per beat


def note(start: float, end: float, pitch: int = 60, is_drum: bool = False) -> Note:
    return Note(start, end, pitch, 90, 0, is_drum)


def one_track(*messages: mido.Message | mido.MetaMessage) -> bytes:
    """A one-track file at 120 bpm, 480 ticks per beat (a beat is 0.5 s)."""
    mid = mido.MidiFile(ticks_per_beat=480)
    mid.tracks.append(mido.MidiTrack(messages))
    out = io.BytesIO()
    mid.save(file=out)
    return out.getvalue()


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_duration_matches_note_seq_total_time(path):
    assert read_midi(path).duration == json.loads((DATA / "tokens" / f"{path.stem}.json").read_text())["duration"]


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_notes_match_note_seq_live(path):
    note_seq = pytest.importorskip("note_seq", reason="note parity needs note-seq 0.0.5 (installed by make test)")
    ns = note_seq.apply_sustain_control_changes(note_seq.midi_file_to_note_sequence(str(path)))
    expected = sorted((n.start_time, n.end_time, n.pitch, n.velocity, n.program, n.is_drum) for n in ns.notes)
    song = read_midi(path)
    assert sorted((n.start, n.end, n.pitch, n.velocity, n.program, n.is_drum) for n in song.notes) == expected


def test_sustain_extends_until_release_or_restrike():
    notes = [note(0.0, 0.5), note(1.0, 1.2), note(0.2, 0.3, 64), note(0.0, 0.1, 36, is_drum=True)]
    song = apply_sustain(notes, [0, 0, 0, 0], [(0.1, 0, True), (2.0, 0, False)])
    # C4 is cut by its re-strike at 1.0 s; the others ring until the pedal goes up; the drum is untouched
    assert [(n.start, n.end) for n in song.notes] == [(0.0, 1.0), (1.0, 2.0), (0.2, 2.0), (0.0, 0.1)]
    assert song.duration == 2.0


def test_sustain_is_per_instrument_and_pedal_value_64_is_down():
    notes = [note(0.0, 0.5), note(0.0, 0.5, 62)]
    song = apply_sustain(notes, [0, 1], [(0.1, 0, True), (3.0, 0, False)])
    assert [n.end for n in song.notes] == [3.0, 0.5]
    data = one_track(
        mido.Message("control_change", control=64, value=64),
        mido.Message("note_on", note=60, velocity=90),
        mido.Message("note_off", note=60, time=240),
        mido.Message("control_change", control=64, value=63, time=720),
    )
    assert [(n.start, n.end) for n in read_midi(data).notes] == [(0.0, 1.0)]


def test_restrike_at_the_same_time_keeps_one_note():
    song = apply_sustain([note(1.0, 1.5), note(1.0, 2.0)], [0, 0], [(0.5, 0, True), (4.0, 0, False)])
    assert [(n.start, n.end) for n in song.notes] == [(1.0, 4.0)]


def test_pedal_never_released_holds_to_the_last_event_even_before_a_later_drum():
    notes = [note(0.0, 0.5), note(0.0, 3.0, 40), note(0.0, 9.0, 36, is_drum=True)]
    song = apply_sustain(notes, [0, 1, 2], [(0.1, 0, True)])
    assert [n.end for n in song.notes] == [3.0, 3.0, 9.0]
    assert song.duration == 3.0  # note_seq's total_time: the last pitched/pedal event, not the drum's end


def test_velocity_zero_note_on_ends_a_note_and_program_changes_split_instruments():
    data = one_track(
        mido.Message("program_change", program=5),
        mido.Message("note_on", note=60, velocity=90),
        mido.Message("note_on", note=60, velocity=0, time=480),
        mido.Message("program_change", program=33),
        mido.Message("note_on", note=40, velocity=70),
        mido.Message("note_off", note=40, time=960),
    )
    song = read_midi(data)
    assert sorted((n.start, n.end, n.pitch, n.program) for n in song.notes) == [(0.0, 0.5, 60, 5), (0.5, 1.5, 40, 33)]
    assert song.instrument_note_counts() == {"Electric Piano 2": 1, "Electric Bass (finger)": 1}


def test_drums_are_named_and_notes_are_immutable():
    song = read_midi(DATA / "midi" / "drums_and_bass.mid")
    assert song.instrument_note_counts() == {"Drums": 16, "Electric Bass (pick)": 16}
    with pytest.raises(FrozenInstanceError):
        song.notes[0].end = 99.0


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty input"),
        (b"RIFF....WAVEfmt ", r"not a MIDI file \(bad header\)"),
        (b"MThd\x00\x00\x00\x06\x00", "truncated header"),
        (b"MThd\x00\x00\x00\x02\x00\x01\x00\x01\x01\xe0", "bad header length"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x00\x01\xe0", "no tracks"),
        (HEADER, r"track 1 of 1 is missing"),
        (HEADER + b"MTrx\x00\x00\x00\x00", "no 'MTrk'"),
        (HEADER + b"MTrk\x00\x00\x01\x00\x00\x90\x3c", r"truncated track \(1 of 1: 256 bytes declared, 3 present\)"),
        (HEADER + b"MTrk\x00\x00\x00\x03\x00\x90\x3c", r"malformed MIDI \(data ends inside a message\)"),
        (HEADER + b"MTrk\x00\x00\x00\x02\x00\x3c", r"malformed MIDI \(running status"),
        (REFUSED["smpte_timing"], r"SMPTE time division \(frames per second\) is not supported"),
        (REFUSED["zero_ticks_per_beat"], r"bad header \(0 ticks per beat\)"),
        (REFUSED["zero_tempo"], r"malformed MIDI \(a tempo of 0 microseconds per beat\)"),
        (smf(meta(0x51, b"") + END_OF_TRACK), r"malformed MIDI \(an event is shorter than its type requires\)"),
    ],
)
def test_bad_bytes_give_midi_error(data, message):
    with pytest.raises(MidiError, match=message):
        read_midi(data)


def test_bad_paths_give_midi_error(tmp_path):
    with pytest.raises(MidiError, match="no such file"):
        read_midi(tmp_path / "missing.mid")
    with pytest.raises(MidiError, match="directory"):
        read_midi(tmp_path)
    (tmp_path / "empty.mid").write_bytes(b"")
    with pytest.raises(MidiError, match="empty file"):
        read_midi(tmp_path / "empty.mid")


def _read_or_midi_error(data: bytes) -> None:
    """Malformed input may parse (leniently) or raise MidiError; any other exception is a bug."""
    try:
        song = read_midi(data)
    except MidiError as err:
        assert str(err)
        return
    for window in tokenize(song):
        assert window[-1] == EOS_ID


def test_truncations_and_mutations_of_valid_files():
    rng = random.Random(0)
    for path in VALID:
        data = path.read_bytes()
        for cut in sorted({1, 4, 13, 14, 22, len(data) // 2, len(data) - 1}):
            with pytest.raises(MidiError):  # every cut loses part of the header or of a track
                read_midi(data[:cut])
        for mutated in mutations(data, rng, 20):
            _read_or_midi_error(mutated)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_a_header(tail):
    _read_or_midi_error(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x00\x60" + tail)


def test_empty_tracks_are_read():
    """A track chunk of 0 bytes (no End of Track event) is tolerated, as in other readers."""
    song = read_midi(RENDERS["empty_tracks"])
    assert [(n.start, n.end, n.pitch) for n in song.notes] == [(0.0, 0.5, 60)]
    assert read_midi(smf(b"", C4_ONE_BEAT + END_OF_TRACK, b"")).notes == song.notes


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_event_limit_counts_events_exactly(path):
    events = sum(len(track) for track in mido.MidiFile(path).tracks)
    read_midi(path, SongLimits(max_events=events))
    with pytest.raises(MidiError, match=f"over {events - 1:,} MIDI events, the limit .*--max-events"):
        read_midi(path, SongLimits(max_events=events - 1))


@pytest.mark.slow
def test_fuzz_target_runs_briefly(tmp_path):
    """tests/fuzz_midi.py under libFuzzer for 10 000 inputs, from the fixtures and the hand-made edge cases."""
    pytest.importorskip("atheris", reason="coverage-guided fuzzing needs atheris (the test extra)")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for name, data in {**RENDERS, **REFUSED}.items():
        (seeds / name).write_bytes(data)
    (tmp_path / "corpus").mkdir()
    # libFuzzer's memory limit is on its process's peak RSS, which Linux carries over from the process that started
    # it (this pytest run, its peak so far): the limit is 2 GB above that.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # kB on Linux
    result = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "fuzz_midi.py"),
            str(tmp_path / "corpus"),
            str(seeds),
            str(DATA / "midi"),
            "-runs=10000",
            "-max_total_time=20",
            "-seed=1",
            f"-rss_limit_mb={inherited_mb + 2048}",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done" in result.stderr and "runs in" in result.stderr


def test_excerpt_cuts_and_retimes():
    song = Song(notes=[note(0.0, 2.0, 60), note(3.0, 9.0, 62), note(10.0, 11.0, 64)], duration=11.0)
    part = song.excerpt(1.0, 8.0)
    assert [(n.start, n.end, n.pitch) for n in part.notes] == [(0.0, 1.0, 60), (2.0, 7.0, 62)]
    assert part.duration == 7.0
    assert song.excerpt(10.5).duration == 0.5
    with pytest.raises(ValueError, match="start < end"):
        song.excerpt(5.0, 4.0)
    with pytest.raises(ValueError, match="the excerpt starts at 12 s, but the song ends at 11.00 s"):
        song.excerpt(12.0, 20.0)


def _high_resolution_song() -> bytes:
    """10 080 ticks per beat (as music21 writes), tempo changes, and notes up to 10 minutes: 12.6 million ticks,
    past pretty_midi's own 10^7 limit."""
    beat = 10_080
    mid = mido.MidiFile(ticks_per_beat=beat)
    conductor = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=500_000, time=0),
            mido.MetaMessage("set_tempo", tempo=437_500, time=7 * beat),
            mido.MetaMessage("set_tempo", tempo=600_001, time=13 * beat + 17),
        ]
    )
    notes = mido.MidiTrack([mido.Message("program_change", program=40, time=0)])
    for k in range(1, 9):  # the note-on of note k, then its note-off, further and further apart
        notes += [
            mido.Message("note_on", note=60 + k, velocity=80, time=k * 997 * k),
            mido.Message("note_off", note=60 + k, time=beat // (k + 1)),
        ]
    notes += [
        mido.Message("note_on", note=72, velocity=80, time=1_250 * beat - 50_000),
        mido.Message("note_off", note=72, time=beat),
    ]
    mid.tracks += [conductor, notes]
    out = io.BytesIO()
    mid.save(file=out)
    return out.getvalue()


@pytest.mark.slow
def test_high_resolution_files_read_as_the_reference_reads_them(monkeypatch):
    import pretty_midi

    note_seq = pytest.importorskip("note_seq", reason="parity needs note-seq 0.0.5 (installed by make test)")
    midi_utils = pytest.importorskip(
        "diffusers.pipelines.deprecated.spectrogram_diffusion.midi_utils", reason="needs diffusers==0.35.2"
    )
    data = _high_resolution_song()
    ns = note_seq.apply_sustain_control_changes(note_seq.midi_to_note_sequence(data))
    expected = sorted((n.start_time, n.end_time, n.pitch, n.velocity, n.program) for n in ns.notes)
    reference_tokens = [[int(t) for t in w if t] for w in midi_utils.MidiProcessor()(data)]
    monkeypatch.setattr(pretty_midi.pretty_midi, "MAX_TICK", 1e7)  # pretty_midi's own, without note_seq's import
    song = read_midi(data)
    assert song.duration > 600 and len(expected) == 9
    assert sorted((n.start, n.end, n.pitch, n.velocity, n.program) for n in song.notes) == expected  # exact times
    assert tokenize(song) == reference_tokens
    assert pretty_midi.pretty_midi.MAX_TICK == 1e7  # left as it was


def test_song_length_not_the_tick_count_protects_memory():
    """A note at tick 9 * 10^9 (under note_seq's 10^10) would need a 72 GB tick table in pretty_midi: the file
    is read at once and refused for its length; past 10^10 it is refused as the reference refuses it."""
    wait = [mido.MetaMessage("text", text="", time=250_000_000) for _ in range(36)]  # 9 * 10^9 ticks
    far = one_track(*wait, mido.Message("note_on", note=60, velocity=80), mido.Message("note_off", note=60, time=480))
    with pytest.raises(MidiError, match=r"song is 2604.17 h long, over the 4.00 h limit \(raise it with --max-dur"):
        read_midi(far)
    (only,) = read_midi(far, NO_LIMITS).notes  # 960 ticks a second
    assert (only.start, only.end, only.pitch) == (
        pytest.approx(9 * 10**9 / 960),
        pytest.approx((9 * 10**9 + 480) / 960),
        60,
    )
    too_far = one_track(*wait, *wait[:4], mido.Message("note_on", note=60, velocity=80, time=1))
    with pytest.raises(MidiError, match="largest tick of 10000000002, it is likely corrupt"):
        read_midi(too_far, NO_LIMITS)


def test_notes_never_released_are_counted():
    on, off = (
        lambda pitch, time=0: mido.Message("note_on", note=pitch, velocity=80, time=time),
        lambda pitch, time=0: mido.Message("note_off", note=pitch, time=time),
    )
    data = one_track(
        on(60),
        on(60, 10),
        off(60, 10),  # one note-off closes both: nothing left open
        on(62),
        off(62, 10),
        on(62),  # released, then a new one never released: 1
        on(64, 10),
        off(64),
        on(64),  # empty (on and off at one tick, dropped as empty), then never released: 1
        on(65, 10),
        on(65, 10),
        off(65),  # the off closes the earlier one; the one begun at its tick stays: 1
        on(67),
        mido.Message("note_on", note=67, velocity=0, time=10),  # velocity 0 releases it
        mido.Message("note_on", note=69, velocity=80, channel=1),
        off(69),  # another channel's off: 1
    )
    song = read_midi(data)
    assert song.unreleased == 4
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    assert len(song.notes) == sum(len(inst.notes) for inst in pm.instruments) == 5


def rmid(smf_bytes: bytes, *chunks_before: tuple[bytes, bytes]) -> bytes:
    """`smf_bytes` wrapped in a RIFF file of form RMID: the given (id, payload) chunks first, then its 'data' chunk."""
    chunks = b"".join(
        name + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2)
        for name, payload in [*chunks_before, (b"data", smf_bytes)]
    )
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"RMID" + chunks


def test_an_rmid_file_is_read_as_the_midi_file_it_wraps(tmp_path):
    wrapped = smf(C4_ONE_BEAT + END_OF_TRACK)
    expected = read_midi(wrapped)
    assert read_midi(rmid(wrapped)) == expected
    path = tmp_path / "song.rmi"
    path.write_bytes(rmid(wrapped, (b"LIST", b"INFOINAM\x03\x00\x00\x00ab\x00"), (b"DISP", b"odd")))
    assert read_midi(path) == expected
    assert read_midi(io.BytesIO(rmid(wrapped))) == expected


@pytest.mark.parametrize(
    "data, message",
    [
        (b"RIFF\x04\x00\x00\x00RMID", "RMID file without a 'data' chunk"),
        (rmid(b"not midi"), r"not a MIDI file \(bad header\)"),
        (rmid(smf(C4_ONE_BEAT + END_OF_TRACK))[:-4], "truncated track"),
    ],
)
def test_a_broken_rmid_file_is_one_midi_error(data, message):
    with pytest.raises(MidiError, match=message):
        read_midi(data)


def test_a_type2_file_says_its_patterns_play_together(tmp_path, tiny_model_path):
    data = smf(C4_ONE_BEAT + END_OF_TRACK, C4_ONE_BEAT + END_OF_TRACK, fmt=2)
    song = read_midi(data)
    assert song.together_patterns == 2 and len(song.notes) == 2 and song.duration == 0.5  # together, as note_seq
    assert song.excerpt(0.0, 0.25).together_patterns == 2
    assert read_midi(smf(C4_ONE_BEAT + END_OF_TRACK, C4_ONE_BEAT + END_OF_TRACK, fmt=1)).together_patterns == 0
    (tmp_path / "type2.mid").write_bytes(data)
    result = CliRunner().invoke(app, ["info", str(tmp_path / "type2.mid")])
    assert result.exit_code == 0
    notice = (
        "MIDI type 2: its 2 patterns play together, as the reference tokenizer reads them, not one after "
        "another as the file means"
    )
    assert notice in result.output.splitlines()
    from midisynth.render.pipeline import Synthesizer

    assert notice in Synthesizer.from_pretrained(str(tiny_model_path), device="cpu", vocoder="griffin-lim").notices(
        song
    )
