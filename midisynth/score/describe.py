"""What `midisynth info` says about a song: its length, windows, notes and instruments."""

from __future__ import annotations

from collections.abc import Iterator

from midisynth.constants import WINDOW_SECONDS
from midisynth.score.midi import Song, type2_notice
from midisynth.score.tokens import num_windows


def describe(song: Song, name: str) -> Iterator[str]:
    """Lines describing `song`, read from the file `name`: duration, windows, notes (and those never released, and
    a type-2 file's patterns played together), and each instrument's notes."""
    yield f"file: {name}"
    yield f"duration: {song.duration:.2f} s"
    yield f"windows: {num_windows(song.duration)} x {WINDOW_SECONDS} s"
    yield f"notes: {len(song.notes)}"
    if song.unreleased:
        yield f"notes never released (left out): {song.unreleased}"
    if song.together_patterns:
        yield type2_notice(song.together_patterns)
    for instrument, count in song.instrument_note_counts().items():
        yield f"  {instrument}: {count} notes"
