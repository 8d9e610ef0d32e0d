"""Note dynamics: per frame, how loudly the sounding notes were played; the decoder's loudness cue.

The paper's codec has one velocity bin, so its tokens cannot tell a note played at velocity 20 from one at 127, while
a SoundFont synthesizer renders them far apart (FluidR3's trombone at pitch 70: peak frame log-mel energy -0.77 at
velocity 20, 2.99 at 127). Models with `ModelConfig.dynamics_bins` > 0 also see, for every frame, the distribution of
the sounding notes' velocities over that many equal-width bins of 1..127; the FiLM decoder adds a learned projection
of it to its frame inputs (`networks.FilmDecoder`). The tokens stay the paper's.
"""

from __future__ import annotations

import math

import numpy as np

from midisynth.constants import FRAME_RATE, WINDOW_FRAMES
from midisynth.midi import Song
from midisynth.tokens import MAX_VELOCITY

DRUM_SECONDS = 0.25  # a drum hit counts as sounding at least this long (its MIDI note-off often comes at once)


def velocity_bin(velocity: int, bins: int) -> int:
    """The bin (0..bins-1) of a velocity 1..127, bins of equal width."""
    return min(bins - 1, (min(max(velocity, 1), MAX_VELOCITY) - 1) * bins // MAX_VELOCITY)


def note_dynamics(song: Song, windows: int, bins: int) -> np.ndarray:
    """[windows, 256, bins] float32: for frame f (time f / 50 s from the song start), the fraction of the notes
    sounding then (start <= time < end) whose velocity falls in each bin; all zeros where no note sounds."""
    frames = windows * WINDOW_FRAMES
    changes = np.zeros((frames + 1, bins), dtype=np.int64)  # +1 where a note starts sounding, -1 where it stops
    for note in song.notes:
        end = max(note.end, note.start + DRUM_SECONDS) if note.is_drum else note.end
        first = min(frames, max(0, math.ceil(note.start * FRAME_RATE)))
        stop = min(frames, max(first, math.ceil(end * FRAME_RATE)))
        column = velocity_bin(note.velocity, bins)
        changes[first, column] += 1
        changes[stop, column] -= 1
    counts = np.cumsum(changes[:frames], axis=0)  # [frames, bins] notes sounding, by velocity bin
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return fractions.reshape(windows, WINDOW_FRAMES, bins).astype(np.float32)
