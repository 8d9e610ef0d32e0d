"""MIDI for trying `midisynth adapt` on a SoundFont: music21 corpus scores that a data set does not hold, instruments
re-assigned at random, written as MIDI files until `--minutes` of music.

    python scripts/adapt_material.py data/adapt_midi --minutes 10 --exclude data/fluidr3

The scores are drawn in another order than `midisynth dataset` draws them (seed 1), and those whose piece id is in
the --exclude data set are left out, so the material is new to the bundled model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from midisynth.data.sources import music21_pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for the MIDI files")
    parser.add_argument("--minutes", type=float, default=10.0, help="music to write, minutes")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="longest piece, seconds")
    parser.add_argument("--exclude", type=Path, action="append", default=[], help="data set whose pieces to leave out")
    args = parser.parse_args()
    used = {piece["piece_id"] for root in args.exclude
            for piece in json.loads((root / "manifest.json").read_text())["pieces"]}
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for name, pm in music21_pieces(seed=1, max_seconds=args.max_seconds, skip=used.__contains__):
        if total >= args.minutes * 60:
            break
        pm.write(str(args.out / f"{name}.mid"))
        total += pm.get_end_time()
        print(f"{name}: {pm.get_end_time():.1f} s")
    print(f"{total / 60:.1f} min in {args.out}")


if __name__ == "__main__":
    main()
