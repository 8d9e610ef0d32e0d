"""Splitting a song into instruments: one stem per General MIDI program, plus one for all drums.

A stem keeps the song's length, so its render has exactly as many samples as the mix's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from midisynth.score.midi import Note, Song


@dataclass(frozen=True)
class Instrument:
    """The notes of one General MIDI program (or of all drums) in a song."""

    program: int | None  # GM program 0-127; None for drums
    notes: tuple[Note, ...]

    @property
    def name(self) -> str:
        """General MIDI instrument name, or "Drums"."""
        return self.notes[0].instrument_name

    @property
    def slug(self) -> str:
        """File-name part: "000-acoustic_grand_piano" (program and name), or "drums"."""
        if self.program is None:
            return "drums"
        return f"{self.program:03d}-" + re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")


def instruments(song: Song) -> list[Instrument]:
    """The song's instruments in program order, drums last; each with its notes in song order."""
    groups: dict[int | None, list[Note]] = {}
    for note in song.notes:
        groups.setdefault(None if note.is_drum else note.program, []).append(note)
    order = sorted(groups, key=lambda program: (program is None, program or 0))
    return [Instrument(program, tuple(groups[program])) for program in order]


def stem_song(song: Song, instrument: Instrument) -> Song:
    """The song with only `instrument`'s notes, and the whole song's length (seconds)."""
    return Song(notes=list(instrument.notes), duration=song.duration)


def stem_path(target: str | Path, instrument: Instrument) -> Path:
    """Where a stem goes beside the mix: song.wav -> song.stem-000-acoustic_grand_piano.wav, song.stem-drums.wav."""
    target = Path(target)
    return target.with_name(f"{target.stem}.stem-{instrument.slug}{target.suffix}")
