"""What a small data set holds out, for `midisynth adapt`: whole pieces when there are enough of them, else the last
windows of its longest piece, else nothing.

A large data set holds out a fixed share of piece ids by hash (`store.split_of`), which may pick none of a few
recordings, or all of them. Here the choice is made on the whole set: HELDOUT_SHARE of the pieces (at least one)
when there are at least MIN_PIECES; with fewer, HELDOUT_SHARE of the longest piece's windows (at least one, and
never all of them) stay in that piece as held-out windows (`PieceRecord.heldout_from`). Pieces whose collection has
its own split (Slakh2100, MAESTRO) keep it, and when it holds pieces out, nothing more is held out. The choice
depends only on the set of piece ids and their lengths, so re-running it on the same data set changes nothing.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from midisynth.data.store import MIDI_COPIES, PieceRecord, load_records, piece_source, save_record, write_manifest

HELDOUT_SHARE = 0.1  # of the pieces, or of the longest piece's windows
MIN_PIECES = 3  # from this many pieces on, whole pieces are held out
OWN_SPLITS = ("slakh", "maestro")  # piece sources whose collection fixes the split


@dataclass(frozen=True)
class HeldOut:
    """What a data set holds out: whole pieces, or windows of one piece, or nothing."""

    pieces: tuple[str, ...] = ()
    windows_of: str | None = None  # the piece whose last windows are held out
    windows: int = 0  # how many of its windows

    def describe(self) -> str:
        """One line for a user."""
        if self.pieces:
            return f"held out: {len(self.pieces)} piece{'s' * (len(self.pieces) > 1)} ({', '.join(self.pieces)})"
        if self.windows_of is not None:
            return f"held out: the last {self.windows} window{'s' * (self.windows > 1)} of {self.windows_of}"
        return "held out: nothing (too little material: a single window); the held-out scores are left out"


def _order(piece_id: str) -> str:
    return hashlib.sha1(piece_id.encode()).hexdigest()


def choose_heldout(records: list[PieceRecord]) -> HeldOut:
    """What to hold out of a data set's pieces (see the module's docstring)."""
    own = [r for r in records if piece_source(r.piece_id) in OWN_SPLITS]
    if any(r.split != "train" for r in own):
        return HeldOut(pieces=tuple(sorted(r.piece_id for r in own if r.split == "heldout")))
    free = [r for r in records if r not in own]
    if len(free) >= MIN_PIECES:
        count = max(1, round(len(free) * HELDOUT_SHARE))
        return HeldOut(pieces=tuple(sorted(sorted((r.piece_id for r in free), key=_order)[:count])))
    longest = max(free, key=lambda r: (r.windows, r.piece_id), default=None)
    if longest is None or longest.windows < 2:
        return HeldOut()
    return HeldOut(
        windows_of=longest.piece_id,
        windows=min(longest.windows - 1, max(1, math.ceil(longest.windows * HELDOUT_SHARE))),
    )


def hold_out(root: str | Path) -> HeldOut:
    """Choose what the data set at `root` holds out and rewrite its piece records (and held-out MIDI copies and
    manifest) to say so; returns the choice."""
    root = Path(root)
    records = load_records(root)
    choice = choose_heldout(records)
    for record in records:
        if piece_source(record.piece_id) in OWN_SPLITS:
            continue
        split = "heldout" if record.piece_id in choice.pieces else "train"
        heldout_from = record.windows - choice.windows if record.piece_id == choice.windows_of else None
        updated = replace(record, split=split, heldout_from=heldout_from)
        if updated != record:
            save_record(root, updated)
        copy = root / MIDI_COPIES["heldout"] / f"{record.piece_id}.mid"
        if split == "heldout":
            shutil.copyfile(record.midi_path(root), copy)
        else:
            copy.unlink(missing_ok=True)
    write_manifest(root)
    return choice
