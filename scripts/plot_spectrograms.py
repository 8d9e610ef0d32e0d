"""Picture of the FluidSynth reference's log-mel above midisynth's render of the same MIDI (needs matplotlib).

python scripts/plot_spectrograms.py SONG.mid docs/spectrograms.png [--model PATH] [--seconds 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from midisynth.audio import log_mel  # noqa: E402
from midisynth.constants import FRAME_RATE, SAMPLE_RATE  # noqa: E402
from midisynth.data.fluidsynth import DEFAULT_SOUNDFONT, render_midi  # noqa: E402
from midisynth.render.pipeline import Synthesizer  # noqa: E402
from midisynth.score.midi import read_midi  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("midi", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default=None)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    song = read_midi(args.midi)
    synth = Synthesizer.from_pretrained(args.model, device="cpu")
    samples = int(args.seconds * SAMPLE_RATE)
    ours = synth.render(song)[:samples]
    reference = render_midi(args.midi, DEFAULT_SOUNDFONT)[: ours.shape[0]]
    rows = [("FluidSynth + FluidR3 GM (reference)", reference), ("midisynth (default settings)", ours)]
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 6), sharex=True)
    for ax, (title, audio) in zip(axes, rows, strict=True):
        features = log_mel(torch.from_numpy(np.ascontiguousarray(audio))).numpy()
        ax.imshow(
            features.T,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=-11.5,
            vmax=2.0,
            extent=(0, features.shape[0] / FRAME_RATE, 0, 128),
        )
        ax.set_title(title)
        ax.set_ylabel("mel bin")
    axes[-1].set_xlabel("seconds")
    fig.suptitle(args.midi.name)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(args.out)


if __name__ == "__main__":
    main()
