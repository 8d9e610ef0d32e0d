"""MIDI reading: sustain semantics, clear errors, and robustness to malformed bytes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midisynth.constants import EOS_ID
from midisynth.midi import MidiError, Note, apply_sustain, read_midi
from midisynth.tokens import tokenize

DATA = Path(__file__).parent / "data" / "midi"
VALID = sorted(DATA.glob("*.mid"))


def test_sustain_extends_until_release_or_restrike():
    a = Note(0.0, 0.5, 60, 90, 0, False)
    b = Note(1.0, 1.2, 60, 90, 0, False)  # same pitch struck again under the pedal
    c = Note(0.2, 0.3, 64, 90, 0, False)
    drum = Note(0.0, 0.1, 36, 90, 0, True)
    notes, held_until = apply_sustain([a, b, c, drum], [(0.1, 0, True), (2.0, 0, False)])
    assert (a.end, b.end, c.end, drum.end) == (1.0, 2.0, 2.0, 0.1)
    assert held_until is None and len(notes) == 4


def test_sustain_never_released_holds_to_last_event():
    a = Note(0.0, 0.5, 60, 90, 0, False)
    b = Note(0.0, 3.0, 40, 90, 1, False)  # another instrument, no pedal
    _, held_until = apply_sustain([a, b], [(0.1, 0, True)])
    assert a.end == 3.0 and held_until == 3.0


@pytest.mark.parametrize("data, message", [
    (b"", "empty input"),
    (b"RIFF....WAVEfmt ", "not a MIDI file"),
    (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x01\x00\x90\x3c", "malformed MIDI"),
])
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
    tried = 0
    for path in VALID:
        data = path.read_bytes()
        for cut in sorted({1, 4, 13, 14, 22, len(data) // 2, len(data) - 1}):
            _read_or_midi_error(data[:cut])
            tried += 1
        for _ in range(20):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            _read_or_midi_error(bytes(mutated))
            tried += 1
    assert tried > 300


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_a_header(tail):
    _read_or_midi_error(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x00\x60" + tail)


def test_excerpt_cuts_and_retimes():
    from midisynth.midi import Song

    song = Song(notes=[Note(0.0, 2.0, 60, 90, 0, False), Note(3.0, 9.0, 62, 90, 0, False),
                       Note(10.0, 11.0, 64, 90, 0, False)], duration=11.0)
    part = song.excerpt(1.0, 8.0)
    assert [(n.start, n.end, n.pitch) for n in part.notes] == [(0.0, 1.0, 60), (2.0, 7.0, 62)]
    assert part.duration == 7.0
    assert song.excerpt(10.5).duration == 0.5
    with pytest.raises(ValueError, match="start < end"):
        song.excerpt(5.0, 4.0)
