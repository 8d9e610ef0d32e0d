"""A picture of a render: the generated log-mel spectrogram over the song's instruments as piano-roll lanes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from midisynth.constants import FRAME_RATE, MAX_LOG_MEL, MIN_LOG_MEL, N_MELS
from midisynth.extras import import_extra
from midisynth.files import make_output_directory, write_atomic
from midisynth.score.midi import Song
from midisynth.score.stems import instruments

WIDTH_INCHES = 12.0
SPECTROGRAM_INCHES = 3.5
LANE_INCHES = 0.45  # height of one instrument's lane
AXIS_INCHES = 0.8  # time axis, its label and margins
DPI = 100


def save_plot(path: Path, features: np.ndarray, song: Song) -> None:
    """Write a PNG of log-mel `features` [frames, 128] (time in seconds, mel bins) above one lane per instrument
    of `song`, each note a bar placed by its pitch within the lane, labelled with General MIDI names; atomically."""
    import_extra("matplotlib", "plot", "--plot")
    from matplotlib.figure import Figure

    lanes = instruments(song)
    seconds = features.shape[0] / FRAME_RATE
    lanes_inches = LANE_INCHES * max(len(lanes), 1)
    figure = Figure(
        figsize=(WIDTH_INCHES, SPECTROGRAM_INCHES + lanes_inches + AXIS_INCHES), dpi=DPI, layout="constrained"
    )
    mel_axes, roll_axes = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [SPECTROGRAM_INCHES, lanes_inches]}
    )
    image = mel_axes.imshow(
        features.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        interpolation="nearest",
        extent=(0.0, seconds, 0, N_MELS),
        vmin=MIN_LOG_MEL,
        vmax=MAX_LOG_MEL,
    )
    figure.colorbar(image, ax=mel_axes, label="log mel", pad=0.01)
    mel_axes.set_ylabel("mel bin")
    for lane, instrument in enumerate(lanes):
        pitches = [note.pitch for note in instrument.notes]
        low, high = min(pitches), max(pitches)
        for note in instrument.notes:  # bars span the lane's middle 80 %, lowest pitch at the bottom (y points down)
            height = (note.pitch - low) / (high - low) if high > low else 0.5  # 0 lowest pitch, 1 highest
            bottom = lane + 0.8 - 0.7 * height
            roll_axes.broken_barh([(note.start, note.end - note.start)], (bottom, 0.1), color=f"C{lane % 10}")
    roll_axes.set_ylim(0, max(len(lanes), 1))
    roll_axes.set_yticks([lane + 0.5 for lane in range(len(lanes))], [instrument.name for instrument in lanes])
    roll_axes.invert_yaxis()  # first instrument on top
    roll_axes.set_xlim(0.0, seconds)
    roll_axes.set_xlabel("time (s)")
    make_output_directory(Path(path).parent, path)
    write_atomic(path, lambda f: figure.savefig(f, format="png"))
