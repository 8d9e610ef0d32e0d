"""A corpus of malformed and extreme MIDI files, generated: hand-made edge cases, plus byte-level truncations and
mutations of the valid fixtures in tests/data/midi. Used by the reliability tests and as the fuzzer's seeds."""

from __future__ import annotations

import random
import struct
from pathlib import Path

VALID = sorted((Path(__file__).parent / "data" / "midi").glob("*.mid"))

END_OF_TRACK = b"\x00\xff\x2f\x00"
C4_ONE_BEAT = b"\x00\x90\x3c\x64\x83\x60\x80\x3c\x40"  # note-on, then note-off 480 ticks (one beat) later


def varlen(value: int) -> bytes:
    """A MIDI variable-length quantity (7 bits per byte, high bit set on all but the last)."""
    out = [value & 0x7F]
    while value > 0x7F:
        value >>= 7
        out.append(0x80 | (value & 0x7F))
    return bytes(reversed(out))


def smf(*tracks: bytes, fmt: int = 1, division: int = 480) -> bytes:
    """A Standard MIDI File from raw track event bytes; division 480 ticks per beat (a beat is 0.5 s at 120 bpm)."""
    header = b"MThd" + struct.pack(">IHHH", 6, fmt, len(tracks), division)
    return header + b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)


def meta(kind: int, payload: bytes, delta: int = 0) -> bytes:
    return varlen(delta) + bytes([0xFF, kind]) + varlen(len(payload)) + payload


def many_notes(count: int) -> bytes:
    """One track of `count` short notes written with running status (3 bytes per event)."""
    return C4_ONE_BEAT[:4] + b"\x01\x3c\x00\x01\x3c\x64" * (count - 1) + b"\x01\x3c\x00" + END_OF_TRACK


# Odd but valid files: each must render.
RENDERS = {
    "type2": smf(C4_ONE_BEAT + END_OF_TRACK, C4_ONE_BEAT + END_OF_TRACK, fmt=2),
    "slowest_tempo": smf(meta(0x51, b"\xff\xff\xff") + C4_ONE_BEAT + END_OF_TRACK),  # 16.8 s per beat
    "fastest_tempo": smf(meta(0x51, b"\x00\x00\x01") + C4_ONE_BEAT + END_OF_TRACK),  # 1 µs per beat
    "zero_length_notes": smf(b"\x00\x90\x3c\x64\x00\x80\x3c\x40" + C4_ONE_BEAT + END_OF_TRACK),
    "velocity0_note_off": smf(b"\x00\x90\x3c\x64\x83\x60\x90\x3c\x00" + END_OF_TRACK),
    "running_status": smf(b"\x00\x90\x3c\x64\x00\x40\x64\x83\x60\x3c\x00\x00\x40\x00" + END_OF_TRACK),
    "empty_tracks": smf(END_OF_TRACK, C4_ONE_BEAT + END_OF_TRACK, b""),
    "non_ascii_names": smf(
        meta(0x03, "Клавир ピアノ 🎹".encode()) + meta(0x04, b"\xe9t\xe9\xff") + C4_ONE_BEAT + END_OF_TRACK
    ),
    "hanging_note": smf(b"\x00\x90\x3c\x64" + C4_ONE_BEAT + END_OF_TRACK),
    "sysex": smf(b"\x00\xf0\x05\x7e\x7f\x09\x01\xf7" + C4_ONE_BEAT + END_OF_TRACK),
    "long_header": b"MThd\x00\x00\x00\x0a\x00\x00\x00\x01\x01\xe0\x00\x00\x00\x00" + smf(C4_ONE_BEAT)[14:],
    "trailing_garbage": smf(C4_ONE_BEAT + END_OF_TRACK) + b"garbage after the last track",
    "no_notes_at_all": smf(END_OF_TRACK),
    "no_notes_with_length": smf(varlen(2880) + b"\xb0\x07\x64" + END_OF_TRACK),  # a volume change at 3 s
}
# Files that must be refused with a clear error (when rendered with --max-events below 3000 and --max-duration
# below 10 h).
_ONE_NOTE = smf(C4_ONE_BEAT + END_OF_TRACK)
REFUSED = {
    "smpte_timing": smf(C4_ONE_BEAT + END_OF_TRACK, division=0xE728),  # -25 frames/s, 40 ticks per frame
    "zero_ticks_per_beat": smf(C4_ONE_BEAT + END_OF_TRACK, division=0),
    "zero_tempo": smf(meta(0x51, b"\x00\x00\x00") + C4_ONE_BEAT + END_OF_TRACK),
    "ten_hours": smf(
        meta(0x51, b"\xff\xff\xff") + C4_ONE_BEAT + varlen(2146 * 480) + C4_ONE_BEAT[1:] + END_OF_TRACK
    ),  # 2146 beats of 16.8 s
    "forty_million_ticks": smf(C4_ONE_BEAT + varlen(40_000_000) + C4_ONE_BEAT[1:] + END_OF_TRACK),
    "too_many_events": smf(many_notes(3000)),
    "meta_overruns_track": smf(b"\x00\xff\x03\x7f\x41\x42" + END_OF_TRACK),
    "data_without_status": smf(b"\x00\x3c\x64" + END_OF_TRACK),
    "track_count_too_high": _ONE_NOTE[:10] + b"\x00\x03" + _ONE_NOTE[12:],
    "huge_track_length": _ONE_NOTE[:18] + b"\xff\xff\xff\xff" + _ONE_NOTE[22:],
    "header_only": _ONE_NOTE[:14],
    "not_midi_wav": b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(24),
    "not_midi_text": b"just some text, not a MIDI file\n",
    "not_midi_png": b"\x89PNG\r\n\x1a\n" + bytes(40),
    "empty": b"",
}


def truncations(data: bytes, count: int) -> list[bytes]:
    """`count` prefixes of `data` cut at evenly spread offsets (1 byte up to all but the last byte)."""
    cuts = sorted({1 + (len(data) - 2) * k // max(1, count - 1) for k in range(count)})
    return [data[:cut] for cut in cuts]


def mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    """`count` copies of `data` with 1 to 8 random bytes replaced each."""
    out = []
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        out.append(bytes(mutated))
    return out


def write_corpus(directory: Path, cuts: int = 12, mutants: int = 3, seed: int = 0) -> dict[str, list[Path]]:
    """Write the corpus as .mid files; returns the paths by kind: "renders", "refused", "truncated", "mutated".

    Truncations always lose part of a declared chunk, so each must be refused; mutations may or may not parse.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kinds: dict[str, dict[str, bytes]] = {"renders": RENDERS, "refused": REFUSED, "truncated": {}, "mutated": {}}
    for path in VALID:
        data = path.read_bytes()
        kinds["truncated"].update((f"{path.stem}_cut{i}", d) for i, d in enumerate(truncations(data, cuts)))
        kinds["mutated"].update((f"{path.stem}_mut{i}", d) for i, d in enumerate(mutations(data, rng, mutants)))
    written: dict[str, list[Path]] = {}
    for kind, files in kinds.items():
        written[kind] = []
        for name, data in files.items():
            (directory / f"{kind}_{name}.mid").write_bytes(data)
            written[kind].append(directory / f"{kind}_{name}.mid")
    return written
