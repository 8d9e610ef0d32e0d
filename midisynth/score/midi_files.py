"""Finding MIDI files: the one place that says which files in a directory count as MIDI."""

from __future__ import annotations

from pathlib import Path

MIDI_SUFFIXES = (".mid", ".midi", ".smf", ".kar")  # compared case-insensitively


def find_midi_files(directory: str | Path) -> list[Path]:
    """The MIDI files below `directory` (any depth), by suffix, sorted by path."""
    return sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)
