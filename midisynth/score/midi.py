"""Reading MIDI files into notes (seconds), with the sustain pedal applied as note_seq applies it.

The reference tokenizer reads MIDI with note_seq, which parses through pretty_midi; midisynth parses through
pretty_midi too, so note pairing (a note-off, or a velocity-0 note-on, closes every open note of its pitch on
its channel), program changes (a new instrument per track, channel and program) and tempo maps are the same.
What note_seq adds on top is reproduced here:

- notes are listed instrument by instrument, in pretty_midi's order (this order breaks ties later on);
- the song length is the latest note end, drums included;
- `apply_sustain` follows `apply_sustain_control_changes` (see there), which may change that length;
- note_seq raises pretty_midi's largest accepted tick from 10^7 to 10^10 (files with many ticks per beat), and
  so does midisynth. pretty_midi would then hold a table of 8 bytes per tick (80 GB at 10^10); midisynth computes
  each tick's time when asked instead, with the same arithmetic, so the times are the same. What protects
  memory and time is `SongLimits`: events are counted before parsing, and the song's length is checked.
"""

from __future__ import annotations

import bisect
import io
import os
import struct
import threading
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import BinaryIO

import mido
import pretty_midi

from midisynth.constants import MAX_SONG_EVENTS, MAX_SONG_SECONDS

SUSTAIN_CONTROL = 64  # MIDI CC number of the sustain pedal; values >= 64 mean "down"
_END_OF_TRACK = b"\x00\xff\x2f\x00"  # delta time 0, meta event End of Track
# Parser exceptions whose own text says little, and what they mean in a MIDI file.
_PARSER_ERRORS = {EOFError: "data ends inside a message", IndexError: "an event is shorter than its type requires"}

# Kinds of sustain-pass events, in the order note_seq processes events at the same time.
_PEDAL_DOWN, _PEDAL_UP, _NOTE_ON, _NOTE_OFF = range(4)
REFERENCE_MAX_TICK = 1e10  # the largest tick note_seq lets pretty_midi read (pretty_midi's own: 10^7)
_MAX_TICK_LOCK = threading.Lock()  # pretty_midi reads its limit from a module global


MAX_BYTES_PER_EVENT = 64  # bytes a file may take per event allowed (events take 2 to 4 bytes; text and sysex more)
_HEADER_BYTES = 14  # "MThd", its length (6), format, track count, time division
_RIFF_HEADER_BYTES = 12  # an RMID file's "RIFF", its size (little-endian), its form type "RMID"; then its chunks


@dataclass(frozen=True)
class SongLimits:
    """What `read_midi` refuses, so that a hostile or broken file cannot exhaust memory or time; 0 disables one."""

    max_duration: float = MAX_SONG_SECONDS  # seconds of song (after cutting an excerpt)
    max_events: int = MAX_SONG_EVENTS  # MIDI events, counted before parsing (parsing takes about 0.4 kB an event)

    @property
    def max_bytes(self) -> int:
        """The longest file read (0: any): `MAX_BYTES_PER_EVENT` for each event allowed; a longer one is refused
        after its header, before the rest is read."""
        return self.max_events * MAX_BYTES_PER_EVENT


DEFAULT_LIMITS = SongLimits()
NO_LIMITS = SongLimits(max_duration=0.0, max_events=0)


def duration_text(seconds: float) -> str:
    """A length in the unit that suits it: '15.0 s', '12.5 min', '2.00 h'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def distinct_durations(first: float, second: float) -> tuple[str, str]:
    """Two lengths (seconds) as `duration_text` puts them, each followed by its seconds, to as many decimals as
    tell them apart, when those texts read the same (14 401 s and 14 400 s are both '4.00 h')."""
    texts = duration_text(first), duration_text(second)
    if texts[0] != texts[1]:
        return texts
    for digits in range(7):
        exact = f"{first:,.{digits}f} s", f"{second:,.{digits}f} s"
        if exact[0] != exact[1]:
            break
    return f"{texts[0]} ({exact[0]})", f"{texts[1]} ({exact[1]})"


class MidiError(ValueError):
    """A MIDI file that cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class Note:
    """One note: start and end in seconds, MIDI pitch and velocity (1-127), GM program (0-127), drum flag."""

    start: float
    end: float
    pitch: int
    velocity: int
    program: int
    is_drum: bool

    @property
    def instrument_name(self) -> str:
        """General MIDI instrument name of the program, or "Drums"."""
        return "Drums" if self.is_drum else pretty_midi.program_to_instrument_name(self.program)


@dataclass
class Song:
    """Notes of a MIDI file after the sustain pedal, and its length in seconds (as note_seq's `total_time`).

    `unreleased` counts the note-ons the file never released (no note-off of their channel and pitch followed in
    their track): like the reference, the song leaves them out. `together_patterns` counts the patterns of a MIDI
    type-2 file (0 for types 0 and 1): meant to play one after another, they play together, as the reference
    tokenizer (note_seq, through pretty_midi) plays them."""

    notes: list[Note] = field(default_factory=list)
    duration: float = 0.0
    unreleased: int = 0
    together_patterns: int = 0  # a type-2 file's patterns (tracks), played together as the reference plays them

    def excerpt(self, start: float = 0.0, end: float | None = None) -> Song:
        """The part from `start` to `end` seconds (None: the song's end), re-timed to begin at 0; notes crossing
        the edges are cut."""
        if start < 0 or end is not None and end <= start:
            raise ValueError(f"an excerpt needs 0 <= start < end; got start {start:g} s, end {end:g} s")
        if start >= self.duration:
            raise ValueError(f"the excerpt starts at {start:g} s, but the song ends at {self.duration:.2f} s")
        end = self.duration if end is None else min(end, self.duration)
        notes = [
            replace(n, start=max(n.start, start) - start, end=min(n.end, end) - start)
            for n in self.notes
            if n.end > start and n.start < end
        ]
        return replace(self, notes=notes, duration=end - start)

    def instrument_note_counts(self) -> dict[str, int]:
        """Note counts per instrument name (General MIDI, or "Drums"), most notes first."""
        return dict(Counter(n.instrument_name for n in self.notes).most_common())


def _track_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of each track's events; raises MidiError naming the first structural defect of
    the header or the track chunks."""
    if data[:4] != b"MThd":
        raise MidiError("not a MIDI file (bad header)")
    if len(data) < 14:
        raise MidiError("truncated header")
    header_length, _format, tracks, division = struct.unpack(">IHHH", data[4:14])
    if header_length < 6:
        raise MidiError(f"bad header length ({header_length} bytes, at least 6 expected)")
    if tracks == 0:
        raise MidiError("no tracks")
    if division & 0x8000:
        raise MidiError("SMPTE time division (frames per second) is not supported, only ticks per beat")
    if division == 0:
        raise MidiError("bad header (0 ticks per beat)")
    spans = []
    offset = 8 + header_length
    for track in range(1, tracks + 1):
        if offset + 8 > len(data):
            raise MidiError(f"truncated file (track {track} of {tracks} is missing)")
        if data[offset : offset + 4] != b"MTrk":
            raise MidiError(f"bad chunk where track {track} of {tracks} should start (no 'MTrk')")
        length = struct.unpack(">I", data[offset + 4 : offset + 8])[0]
        if offset + 8 + length > len(data):
            raise MidiError(
                f"truncated track ({track} of {tracks}: {length} bytes declared, {len(data) - offset - 8} present)"
            )
        spans.append((offset + 8, offset + 8 + length))
        offset += 8 + length
    return spans


def _varlen(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the variable-length quantity at `pos`."""
    value = 0
    while pos < end:
        value = (value << 7) | (data[pos] & 0x7F)
        pos += 1
        if not data[pos - 1] & 0x80:
            break
    return value, pos


def _count_events(data: bytes, spans: Sequence[tuple[int, int]], stop_after: int) -> int:
    """Events (channel, meta and sysex messages) in the tracks, counted without building any of them; counting
    stops once past `stop_after`. A malformed track is counted approximately (the parser reports it later)."""
    count = 0
    for start, end in spans:
        pos, status = start, 0
        while pos < end and count <= stop_after:
            pos = _varlen(data, pos, end)[1]  # delta time
            if pos >= end:
                break
            kind = data[pos]
            if kind in (0xFF, 0xF0, 0xF7):  # meta (type byte, then length) or sysex (length): skip the payload
                length, pos = _varlen(data, pos + (2 if kind == 0xFF else 1), end)
                pos += length
            else:  # channel message, with running status when the status byte is left out
                if kind & 0x80:
                    status, pos = kind, pos + 1
                pos += 1 if 0xC0 <= status < 0xE0 else 2  # program change and channel pressure: 1 data byte
            count += 1
    return count


def _repair_empty_tracks(data: bytes, spans: Sequence[tuple[int, int]]) -> bytes:
    """The file with an End of Track event in every track of 0 bytes (pretty_midi fails on event-less tracks)."""
    parts, done = [], 0
    for start, end in spans:
        if start == end:
            parts += [data[done : start - 4], struct.pack(">I", len(_END_OF_TRACK)), _END_OF_TRACK]
            done = start
    return b"".join([*parts, data[done:]]) if parts else data


# What `read_midi` reads, as its TypeError for anything else says.
MIDI_SOURCES = (
    "a MIDI file's path (str or os.PathLike), its bytes, a binary file object (read from where it stands), "
    "a pretty_midi.PrettyMIDI or a mido.MidiFile"
)


def _read_bytes(
    source: str | os.PathLike | bytes | BinaryIO | pretty_midi.PrettyMIDI | mido.MidiFile, max_bytes: int
) -> bytes:
    """The bytes of the MIDI file `source` (one of MIDI_SOURCES; TypeError for anything else, such as a file
    descriptor number, which would be opened and then closed): the header first, MidiError unless it is a MIDI
    file's, then the rest, MidiError past `max_bytes` (0: no limit) without reading further."""
    if isinstance(source, bytes | bytearray | memoryview):
        return _capped(io.BytesIO(source), max_bytes)
    if isinstance(source, pretty_midi.PrettyMIDI | mido.MidiFile):
        buffer = io.BytesIO()
        if isinstance(source, pretty_midi.PrettyMIDI):
            source.write(buffer)
        else:
            source.save(file=buffer)
        return _capped(io.BytesIO(buffer.getvalue()), max_bytes)
    if isinstance(source, str | os.PathLike):
        return _read_file(source, max_bytes)
    if callable(getattr(source, "read", None)):
        return _capped(source, max_bytes)
    raise TypeError(f"read_midi takes {MIDI_SOURCES}; got {type(source).__name__}")


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes of `stream` (fewer only at its end), however few each read returns."""
    parts, left = [], size
    while left > 0:
        part = stream.read(left)
        if not isinstance(part, bytes | bytearray):
            raise TypeError(f"read_midi: the file object gave {type(part).__name__}, not bytes; open it in binary mode")
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _capped(stream: BinaryIO, max_bytes: int, nothing: str = "empty input (no bytes)") -> bytes:
    """`stream`'s bytes from where it stands: its header, checked first, then at most `max_bytes` in all (0: no
    limit; MidiError past it). `nothing`: the MidiError's text when there are none."""
    data = _read_up_to(stream, _HEADER_BYTES)
    if not data:
        raise MidiError(nothing)
    if not _starts_as_midi(data):
        raise MidiError("not a MIDI file (bad header)")
    data += _read_up_to(stream, max_bytes + 1 - len(data)) if max_bytes else stream.read()
    if max_bytes and len(data) > max_bytes:
        raise MidiError(
            f"over {max_bytes:,} bytes, the limit ({MAX_BYTES_PER_EVENT} for each of the "
            f"{max_bytes // MAX_BYTES_PER_EVENT:,} MIDI events allowed: raise it with --max-events N, or 0 "
            "for no limit)"
        )
    return _unwrapped(data)


def _starts_as_midi(head: bytes) -> bool:
    """Whether `head` (a file's first bytes, up to 14) can start a Standard MIDI File ("MThd") or an RMID file (a
    RIFF file of form "RMID", which wraps one)."""
    return head[:4] == b"MThd"[: len(head)] or (
        head[:4] == b"RIFF"[: len(head)] and head[8:12] == b"RMID"[: max(0, len(head) - 8)]
    )


def _unwrapped(data: bytes) -> bytes:
    """The Standard MIDI File in `data`: `data` itself, or the payload of an RMID file's "data" chunk (RIFF chunks:
    a 4-byte id, a little-endian 4-byte size, the payload padded to an even length); MidiError for an RMID file
    without one."""
    if not data.startswith(b"RIFF"):
        return data
    offset = _RIFF_HEADER_BYTES
    while offset + 8 <= len(data):
        size = struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        if data[offset : offset + 4] == b"data":
            return data[offset + 8 : offset + 8 + size]
        offset += 8 + size + size % 2
    raise MidiError("RMID file without a 'data' chunk (the MIDI file it wraps)")


def _read_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of the file at `path` (`_capped`); MidiError (one line) when it cannot be read or is empty."""
    try:
        with open(path, "rb") as f:
            return _capped(f, max_bytes, nothing="empty file (0 bytes)")
    except FileNotFoundError:
        raise MidiError("no such file") from None
    except IsADirectoryError:
        raise MidiError("is a directory, not a MIDI file") from None
    except OSError as err:
        raise MidiError(f"cannot read file ({err.strerror or err})") from None


class _TickTimes:
    """pretty_midi's tick -> seconds table without storing it: each tick's time computed when looked up, with the
    same float64 operations as pretty_midi's `_update_tick_to_time` (so exactly the same times)."""

    def __init__(self, tick_scales: list[tuple[int, float]], max_tick: int):
        self.length = max(max_tick, max(tick for tick, _ in tick_scales)) + 1
        self.starts = [tick for tick, _ in tick_scales]
        self.scales = [scale for _, scale in tick_scales]
        self.bases = [0.0]  # time of each tempo segment's first tick
        for (start, scale), (end, _) in zip(tick_scales[:-1], tick_scales[1:], strict=True):
            self.bases.append(self.bases[-1] + scale * (end - start))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, tick: int) -> float:
        segment = bisect.bisect_right(self.starts, tick) - 1  # the last segment starting at or before the tick
        return self.bases[segment] + self.scales[segment] * (int(tick) - self.starts[segment])


class _PrettyMIDI(pretty_midi.PrettyMIDI):
    """pretty_midi's reader with `_TickTimes` in place of its table of 8 bytes per tick."""

    def _update_tick_to_time(self, max_tick):
        self._PrettyMIDI__tick_to_time = _TickTimes(self._tick_scales, int(max_tick))


def _unreleased_notes(midi_file: mido.MidiFile) -> int:
    """Note-ons that pretty_midi leaves out because nothing releases them: in each track (absolute ticks), a note-off
    (or velocity-0 note-on) closes the open notes of its channel and pitch, except those begun at its own tick when
    it also closes earlier ones; notes begun only at its tick are dropped as empty. What stays open is unreleased."""
    count = 0
    for track in midi_file.tracks:
        open_ticks: dict[tuple[int, int], list[int]] = defaultdict(list)  # (channel, pitch) -> note-on ticks
        for event in track:
            if event.type == "note_on" and event.velocity > 0:
                open_ticks[(event.channel, event.note)].append(event.time)
            elif event.type in ("note_on", "note_off"):
                ticks = open_ticks[(event.channel, event.note)]
                same_tick = [tick for tick in ticks if tick == event.time]
                open_ticks[(event.channel, event.note)] = same_tick if len(same_tick) < len(ticks) else []
        count += sum(map(len, open_ticks.values()))
    return count


def _parse(data: bytes, max_events: int = 0) -> tuple[pretty_midi.PrettyMIDI, int]:
    """The parsed file and its count of unreleased notes."""
    spans = _track_spans(data)
    # Every event takes at least 2 bytes, so only files over 2 bytes per allowed event need counting.
    if (
        max_events
        and sum(end - start for start, end in spans) > 2 * max_events
        and _count_events(data, spans, max_events) > max_events
    ):
        raise MidiError(f"over {max_events:,} MIDI events, the limit (raise it with --max-events N, or 0 for no limit)")
    try:
        with warnings.catch_warnings(), _MAX_TICK_LOCK:
            warnings.simplefilter("ignore")
            midi_file = mido.MidiFile(file=io.BytesIO(_repair_empty_tracks(data, spans)), charset="latin1")
            library_max_tick = pretty_midi.pretty_midi.MAX_TICK
            pretty_midi.pretty_midi.MAX_TICK = REFERENCE_MAX_TICK
            try:
                pm = _PrettyMIDI(mido_object=midi_file)
            finally:
                pretty_midi.pretty_midi.MAX_TICK = library_max_tick
    except ZeroDivisionError:  # ticks per beat are checked above: a tempo event of 0 µs per beat
        raise MidiError("malformed MIDI (a tempo of 0 microseconds per beat)") from None
    except Exception as err:  # mido and pretty_midi raise many exception types for malformed files
        reason = _PARSER_ERRORS.get(type(err)) or str(err) or type(err).__name__
        raise MidiError(f"malformed MIDI ({reason})") from None
    return pm, _unreleased_notes(midi_file)


def type2_notice(patterns: int) -> str:
    """The line that says how a type-2 file of `patterns` patterns is played."""
    return (
        f"MIDI type 2: its {patterns} patterns play together, as the reference tokenizer reads them, not one "
        "after another as the file means"
    )


def _type2_patterns(data: bytes) -> int:
    """The number of patterns (tracks) of a MIDI type-2 file, from its header; 0 for types 0 and 1."""
    file_format, tracks = struct.unpack(">HH", data[8:12])
    return tracks if file_format == 2 else 0


def apply_sustain(notes: Sequence[Note], instruments: Sequence[int], pedal: Sequence[tuple[float, int, bool]]) -> Song:
    """Extend notes held by the sustain pedal, as note_seq's `apply_sustain_control_changes`.

    notes: in file order; instruments: the instrument index of each note; pedal: (time s, instrument index,
    pedal down). Events are processed by time, and at equal times pedal-down, pedal-up, note-on, note-off, each
    kind in input order. Per instrument: a note released while the pedal is down sounds until the pedal goes up;
    a new onset under the pedal ends every sounding note of its pitch there (a note so cut to zero length is
    dropped); notes still sounding when events run out end at the last event, which then becomes the song
    length, even if it is earlier than the latest (drum) note end. Drum notes are left as they are.
    """
    ends = [n.end for n in notes]
    events: list[tuple[float, int, int]] = [(n.start, _NOTE_ON, i) for i, n in enumerate(notes) if not n.is_drum]
    events += [(n.end, _NOTE_OFF, i) for i, n in enumerate(notes) if not n.is_drum]
    events += [(time, _PEDAL_DOWN if down else _PEDAL_UP, part) for time, part, down in pedal]
    events.sort(key=lambda e: (e[0], e[1]))
    sounding: dict[int, list[int]] = defaultdict(list)  # instrument -> indices of its sounding notes
    pedal_down: dict[int, bool] = defaultdict(bool)
    dropped: set[int] = set()
    duration = max(ends, default=0.0)
    time = 0.0
    for time, kind, item in events:
        if kind == _PEDAL_DOWN:
            pedal_down[item] = True
        elif kind == _PEDAL_UP:
            pedal_down[item] = False
            held = []
            for i in sounding[item]:
                if ends[i] < time:  # released earlier, kept sounding by the pedal
                    ends[i] = time
                    duration = max(duration, time)
                else:
                    held.append(i)
            sounding[item] = held
        elif kind == _NOTE_ON:
            part, pitch = instruments[item], notes[item].pitch
            if pedal_down[part]:
                for i in sounding[part]:
                    if notes[i].pitch == pitch:
                        ends[i] = time
                        if notes[i].start == time:
                            dropped.add(i)
                sounding[part] = [i for i in sounding[part] if notes[i].pitch != pitch]
            sounding[part].append(item)
        elif not pedal_down[instruments[item]] and item in sounding[instruments[item]]:
            sounding[instruments[item]].remove(item)
    held_to_end = [i for part in sounding.values() for i in part]
    for i in held_to_end:
        ends[i] = time
    if held_to_end:
        duration = time
    kept = [replace(n, end=ends[i]) for i, n in enumerate(notes) if i not in dropped]
    return Song(notes=kept, duration=duration)


def read_midi(
    source: str | os.PathLike | bytes | BinaryIO | pretty_midi.PrettyMIDI | mido.MidiFile,
    limits: SongLimits = DEFAULT_LIMITS,
    start: float = 0.0,
    end: float | None = None,
) -> Song:
    """Read a MIDI file (any of MIDI_SOURCES; TypeError for anything else) into a `Song`, cut to [start, end]
    seconds when asked (end None: the song's end); raises `MidiError` for anything unreadable or over `limits`
    (a file that is not MIDI is refused after its header, a longer one than `limits.max_bytes` without reading
    the rest, one of more events before parsing, a song longer than the limit after cutting; `NO_LIMITS` reads
    anything).
    """
    data = _read_bytes(source, limits.max_bytes)
    pm, unreleased = _parse(data, limits.max_events)
    notes: list[Note] = []
    instruments: list[int] = []
    pedal: list[tuple[float, int, bool]] = []
    for index, inst in enumerate(pm.instruments):
        for n in inst.notes:
            notes.append(
                Note(float(n.start), float(n.end), int(n.pitch), int(n.velocity), int(inst.program), bool(inst.is_drum))
            )
            instruments.append(index)
        pedal += [
            (float(cc.time), index, cc.value >= 64) for cc in inst.control_changes if cc.number == SUSTAIN_CONTROL
        ]
    song = replace(
        apply_sustain(notes, instruments, pedal), unreleased=unreleased, together_patterns=_type2_patterns(data)
    )
    if start or end is not None:
        try:
            song = song.excerpt(start, end)
        except ValueError as err:
            raise MidiError(str(err)) from None
    if limits.max_duration and song.duration > limits.max_duration:
        length, most = distinct_durations(song.duration, limits.max_duration)
        raise MidiError(
            f"song is {length} long, over the {most} limit (raise it with --max-duration SECONDS, or 0 for no limit)"
        )
    return song
