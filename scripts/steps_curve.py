"""Quality and speed of a model against sampler, step count and guidance (docs/experiments.md has its curve).

Runs the `midisynth eval` scoring (log-mel L1 and MR-STFT to the FluidSynth reference, each render scaled to the
reference's RMS) for every combination asked for and writes one JSON row per combination.

    python scripts/steps_curve.py data/fluidr3/heldout_midi --samplers dpmpp ddim --steps 5 10 20 \
        --guidance 1 2 --json docs/steps_curve.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from midisynth.data.fluidsynth import DEFAULT_SOUNDFONT
from midisynth.evaluation.evaluate import evaluate
from midisynth.files import save_text_atomic
from midisynth.render.pipeline import RenderOptions, Synthesizer
from midisynth.score.midi_files import find_midi_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("midi_dir", type=Path)
    parser.add_argument("--model", default=None, help="model path (default: the bundled model)")
    parser.add_argument("--samplers", nargs="+", default=["dpmpp"])
    parser.add_argument("--steps", nargs="+", type=int, default=[5, 10, 20])
    parser.add_argument("--guidance", nargs="+", type=float, default=[1.0])
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--limit", type=int, default=None, help="first N files only")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    files = find_midi_files(args.midi_dir)[: args.limit]
    synth = Synthesizer.from_pretrained(args.model, device="cpu")
    rows = []
    for sampler, steps, guidance in itertools.product(args.samplers, args.steps, args.guidance):
        options = RenderOptions(sampler=sampler, steps=steps, guidance=guidance, precision=args.precision)
        summary = evaluate(synth.with_options(**options.__dict__), files, DEFAULT_SOUNDFONT)["summary"]
        row = {
            "sampler": sampler,
            "steps": steps,
            "guidance": guidance,
            "precision": args.precision,
            **summary["mean"]["midisynth"],
            "real_time_factor": summary["real_time_factor"],
            "files": summary["files"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    save_text_atomic(args.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
