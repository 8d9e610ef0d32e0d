"""A note's place on the spectrogram's frame grid (FRAME_RATE frames per second, frame f at f / FRAME_RATE s)."""

from __future__ import annotations

import math

from midisynth.constants import FRAME_RATE
from midisynth.score.midi import Note

DRUM_SECONDS = 0.25  # a drum hit counts as sounding at least this long


def sounding_end(note: Note) -> float:
    """When a note stops sounding, in seconds: its note-off, a drum hit lasting at least DRUM_SECONDS (its MIDI
    note-off often comes at once)."""
    return max(note.end, note.start + DRUM_SECONDS) if note.is_drum else note.end


def sounding_frames(note: Note) -> tuple[int, int]:
    """The frames [first, stop) in which a note sounds, from the song start: those at times start <= f / 50 s <
    `sounding_end`."""
    return math.ceil(note.start * FRAME_RATE), math.ceil(sounding_end(note) * FRAME_RATE)
