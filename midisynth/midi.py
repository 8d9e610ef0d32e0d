"""Reading MIDI files into notes, with the sustain pedal applied.

Parsing follows note_seq's `midi_to_note_sequence` (through pretty_midi, as the reference does) and
`apply_sustain_control_changes`, so that the notes, and therefore the tokens, match the reference
implementation: notes come per instrument in file order; drums are notes of drum instruments (channel 10); the song
length is the latest note end after sustain.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pretty_midi

SUSTAIN_CONTROL = 64  # MIDI CC number of the sustain pedal; values >= 64 mean "on"

# Event kinds in the order the sustain pass processes simultaneous events (note_seq's order).
_SUSTAIN_ON, _SUSTAIN_OFF, _NOTE_ON, _NOTE_OFF = range(4)


class MidiError(ValueError):
    """A MIDI file that cannot be read; the message says what is wrong."""


@dataclass(eq=False)
class Note:
    """One note: times in seconds, MIDI pitch and velocity (1-127), GM program (0-127), drum flag.

    Compared by identity: two notes with equal fields are still two notes.
    """

    start: float
    end: float
    pitch: int
    velocity: int
    program: int
    is_drum: bool
    instrument: int = 0  # index of the instrument (track/channel part) in the file


@dataclass
class Song:
    """Notes of a MIDI file after the sustain pedal, and its length in seconds (latest note end)."""

    notes: list[Note] = field(default_factory=list)
    duration: float = 0.0

    def excerpt(self, start: float = 0.0, end: float | None = None) -> Song:
        """The part of the song from `start` to `end` seconds, re-timed to begin at 0; notes crossing the edges
        are cut at them."""
        end = self.duration if end is None else min(end, self.duration)
        if start < 0 or end <= start:
            raise ValueError(f"excerpt needs 0 <= start < end <= song length ({self.duration:.2f} s); "
                             f"got start {start:g}, end {end:g}")
        notes = [
            Note(max(n.start, start) - start, min(n.end, end) - start, n.pitch, n.velocity, n.program, n.is_drum,
                 n.instrument)
            for n in self.notes if n.end > start and n.start < end
        ]
        return Song(notes=notes, duration=end - start)

    def instrument_note_counts(self) -> dict[str, int]:
        """Note counts per instrument, named by General MIDI program ("Drums" for drum notes)."""
        counts = Counter(
            "Drums" if n.is_drum else pretty_midi.program_to_instrument_name(n.program) for n in self.notes
        )
        return dict(counts.most_common())


def _parse(source: str | os.PathLike | bytes) -> pretty_midi.PrettyMIDI:
    if isinstance(source, bytes | bytearray):
        if not source:
            raise MidiError("empty input (no bytes)")
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise MidiError("no such file") from None
        except IsADirectoryError:
            raise MidiError("is a directory, not a MIDI file") from None
        except OSError as err:
            raise MidiError(f"cannot read file ({err.strerror})") from None
        if not data:
            raise MidiError("empty file (0 bytes)")
    if data[:4] != b"MThd":
        raise MidiError("not a MIDI file (no 'MThd' header)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as err:  # mido and pretty_midi raise many exception types for malformed files
        reason = str(err) or type(err).__name__
        if isinstance(err, EOFError):
            reason = "truncated file (unexpected end of data)"
        raise MidiError(f"malformed MIDI ({reason})") from None


def apply_sustain(notes: list[Note], pedal_events: list[tuple[float, int, bool]]) -> tuple[list[Note], float | None]:
    """Extend notes held by the sustain pedal, as note_seq's `apply_sustain_control_changes`.

    pedal_events: (time s, instrument, pedal down). Each note under the pedal lasts until the pedal is released
    or the same pitch is struck again on that instrument, whichever is first; drums are unchanged. Returns the
    surviving notes and, if notes were still held when events ran out, the time of the last event (which then
    becomes the song length), else None.
    """
    events: list[tuple[float, int, object]] = []
    events += [(n.start, _NOTE_ON, n) for n in notes if not n.is_drum]
    events += [(n.end, _NOTE_OFF, n) for n in notes if not n.is_drum]
    events += [(t, _SUSTAIN_ON if down else _SUSTAIN_OFF, inst) for t, inst, down in pedal_events]
    events.sort(key=lambda e: (e[0], e[1]))
    active: dict[int, list[Note]] = defaultdict(list)
    pedal_down: dict[int, bool] = defaultdict(bool)
    removed: set[int] = set()
    time = 0.0
    for time, kind, item in events:
        if kind == _SUSTAIN_ON:
            pedal_down[item] = True
        elif kind == _SUSTAIN_OFF:
            pedal_down[item] = False
            still_held = []
            for note in active[item]:
                if note.end < time:  # released earlier, kept sounding by the pedal
                    note.end = time
                else:
                    still_held.append(note)
            active[item] = still_held
        elif kind == _NOTE_ON:
            note = item
            if pedal_down[note.instrument]:
                kept = []
                for other in active[note.instrument]:
                    if other.pitch == note.pitch:
                        other.end = time
                        if other.start == other.end:
                            removed.add(id(other))
                    else:
                        kept.append(other)
                active[note.instrument] = kept
            active[note.instrument].append(note)
        elif not pedal_down[item.instrument] and item in active[item.instrument]:
            active[item.instrument].remove(item)
    held_at_end = False
    for held in active.values():
        for note in held:
            note.end = time
            held_at_end = True
    return [n for n in notes if id(n) not in removed], (time if held_at_end else None)


def read_midi(source: str | os.PathLike | bytes) -> Song:
    """Read a MIDI file (path or raw bytes) into a `Song`; raises `MidiError` for anything unreadable."""
    pm = _parse(source)
    notes: list[Note] = []
    pedal: list[tuple[float, int, bool]] = []
    for index, inst in enumerate(pm.instruments):
        for n in inst.notes:
            notes.append(Note(float(n.start), float(n.end), int(n.pitch), int(n.velocity), int(inst.program),
                              bool(inst.is_drum), index))
        pedal += [(float(cc.time), index, cc.value >= 64) for cc in inst.control_changes if cc.number == SUSTAIN_CONTROL]
    duration = max((n.end for n in notes), default=0.0)
    notes, held_until = apply_sustain(notes, pedal)
    if held_until is not None:
        duration = held_until
    else:
        duration = max([duration] + [n.end for n in notes])
    return Song(notes=notes, duration=duration)
