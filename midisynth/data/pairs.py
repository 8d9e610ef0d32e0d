"""Aligned MIDI and audio recordings as training pieces: folders of pairs, Slakh2100 and MAESTRO v3 as on disk.

A pair is a MIDI file and a recording of it whose time zeros coincide (the MIDI was played, transcribed or
rendered against the audio). The audio, of any rate and channel count, is mixed to mono and resampled to 16 kHz
with soxr. A pair is refused with `PairError` (one line naming the file) when either file is unreadable, the
MIDI has no notes, the audio is silent, or the audio's length disagrees with the MIDI's beyond the tolerances
below (the sign of a misaligned or wrong file).

Splits: a folder pair's split is fixed by its piece id, as for rendered pieces (`store.split_of`); Slakh2100 and
MAESTRO keep their own: train -> "train", validation -> "heldout", test -> "test".
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from midisynth.constants import SAMPLE_RATE

MIDI_SUFFIXES = (".mid", ".midi")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")  # looked for in this order beside a MIDI file
SPLIT_NAMES = {"train": "train", "validation": "heldout", "test": "test"}  # a collection's split -> the store's
SILENCE_PEAK = 1e-3  # audio whose peak stays below this (-60 dBFS) is silent
AUDIO_SHORTER_S = 1.0  # the audio may end this many seconds before the MIDI's last note-off (a cut release) ...
AUDIO_LONGER_S = 10.0  # ... or run this many seconds past it (release tails, room decay, silence at the end)
PAIRED_SOURCES = ("pair", "slakh", "maestro")  # piece id prefixes (`store.piece_source`) of recorded pieces
SLAKH_MIDI, SLAKH_AUDIO = "all_src.mid", "mix.flac"  # a Slakh2100 track folder's mix and its MIDI
MAESTRO_COLUMNS = ("split", "midi_filename", "audio_filename")  # the columns of a MAESTRO CSV that are read


class PairError(ValueError):
    """A pair that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class AlignedPair:
    """A MIDI file and its recording; `split` is the collection's own ("train", "heldout", "test"), or None for
    the split fixed by the piece id."""

    piece_id: str
    midi_path: Path
    audio_path: Path
    split: str | None = None


def _id(prefix: str, relative: Path) -> str:
    return prefix + "-" + "-".join(relative.with_suffix("").parts)


def folder_pairs(folder: str | Path) -> list[AlignedPair]:
    """Every MIDI file under `folder` (recursive) with an audio file of the same stem beside it, ids
    `pair-<relative path>`; MIDI files without one are not pairs. Raises FileNotFoundError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such directory")
    pairs = []
    for midi in sorted(p for p in folder.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file()):
        audio = next(
            (a for s in AUDIO_SUFFIXES for a in (midi.with_suffix(s), midi.with_suffix(s.upper())) if a.is_file()), None
        )
        if audio is not None:
            pairs.append(AlignedPair(_id("pair", midi.relative_to(folder)), midi, audio))
    if not pairs:
        raise FileNotFoundError(
            f"{folder}: no MIDI file with an audio file of the same name beside it ({', '.join(AUDIO_SUFFIXES)})"
        )
    return pairs


def slakh_pairs(root: str | Path) -> list[AlignedPair]:
    """Slakh2100's tracks, `ROOT/{train,validation,test}/TrackNNNNN/{all_src.mid, mix.flac}`, ids `slakh-TrackNNNNN`,
    in their own splits (other folders, such as Slakh2100-redux's omitted/, are left out). A track folder missing
    either file is still listed, so that building it reports the missing file."""
    root = Path(root)
    pairs = [
        AlignedPair(f"slakh-{track.name}", track / SLAKH_MIDI, track / SLAKH_AUDIO, split)
        for folder, split in SPLIT_NAMES.items()
        for track in sorted((root / folder).glob("Track*"))
        if track.is_dir()
    ]
    if not pairs:
        raise FileNotFoundError(f"{root}: not a Slakh2100 folder (no train/, validation/ or test/ with Track folders)")
    return pairs


def maestro_pairs(root: str | Path) -> list[AlignedPair]:
    """MAESTRO's performances as its CSV (`ROOT/maestro-v*.csv`: split, midi_filename, audio_filename) lists them,
    ids `maestro-<MIDI path without suffix>`."""
    root = Path(root)
    tables = sorted(root.glob("maestro-v*.csv"))
    if not tables:
        raise FileNotFoundError(f"{root}: not a MAESTRO folder (no maestro-v*.csv)")
    pairs = []
    for line, row in _maestro_rows(tables[-1]):
        split, midi, audio = (_maestro_field(tables[-1], line, row, column) for column in MAESTRO_COLUMNS)
        if split not in SPLIT_NAMES:
            raise ValueError(f"{tables[-1]}, line {line}: unknown split {split!r} (expected {', '.join(SPLIT_NAMES)})")
        pairs.append(AlignedPair(_id("maestro", Path(midi)), root / midi, root / audio, SPLIT_NAMES[split]))
    return pairs


def _maestro_rows(table: Path) -> list[tuple[int, dict]]:
    """(line number, row) of each row of a MAESTRO CSV; ValueError naming the file for one that is not CSV text
    or lacks one of MAESTRO_COLUMNS."""
    try:
        with open(table, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [(reader.line_num, row) for row in reader]
            columns = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{table}: not a CSV text file ({err})") from None
    missing = [column for column in MAESTRO_COLUMNS if column not in columns]
    if missing:
        raise ValueError(f"{table}: no {', '.join(missing)} column")
    return rows


def _maestro_field(table: Path, line: int, row: dict, column: str) -> str:
    """A row's value in `column`: present, and for a file a relative path inside the MAESTRO folder (ValueError
    naming the file and line if not)."""
    value = row.get(column)
    if not value:
        raise ValueError(f"{table}, line {line}: no {column}")
    if column != "split" and (Path(value).is_absolute() or ".." in Path(value).parts):
        raise ValueError(f"{table}, line {line}: {column} {value!r} is not a path inside the MAESTRO folder")
    return value


def paired_sources(pair_dirs: list[Path], slakh: list[Path], maestro: list[Path]) -> Iterator[AlignedPair]:
    """The pairs of all collections, in the order given."""
    for folder in pair_dirs:
        yield from folder_pairs(folder)
    for root in slakh:
        yield from slakh_pairs(root)
    for root in maestro:
        yield from maestro_pairs(root)


def read_recording(path: Path) -> np.ndarray:
    """A recording as mono float32 16 kHz audio [samples] (channels averaged, soxr resampling)."""
    import soxr

    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)  # [samples, channels]
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise PairError(f"{path}: unreadable audio ({err})") from None
    if audio.shape[0] == 0:
        raise PairError(f"{path}: no audio samples")
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def check_alignment(path: Path, audio: np.ndarray, midi_seconds: float) -> None:
    """Raise PairError when 16 kHz `audio` is silent or its length disagrees with the MIDI's `midi_seconds` beyond
    AUDIO_SHORTER_S / AUDIO_LONGER_S."""
    peak = float(np.abs(audio).max())
    if peak < SILENCE_PEAK:
        raise PairError(f"{path}: silent (peak {20 * np.log10(max(peak, 1e-10)):.0f} dBFS)")
    audio_seconds = audio.shape[0] / SAMPLE_RATE
    if not -AUDIO_SHORTER_S <= audio_seconds - midi_seconds <= AUDIO_LONGER_S:
        raise PairError(
            f"{path}: {audio_seconds:.1f} s of audio for {midi_seconds:.1f} s of MIDI, beyond the "
            f"tolerance ({AUDIO_SHORTER_S:g} s shorter to {AUDIO_LONGER_S:g} s longer): misaligned?"
        )
