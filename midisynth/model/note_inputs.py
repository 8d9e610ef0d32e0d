"""Per-frame note inputs of the decoder besides the tokens: how loudly the sounding notes were played (the velocity
gain) and which notes sound (the note roll).

The paper's codec has one velocity bin, so its tokens cannot tell a note played at velocity 20 from one at 127, while
a SoundFont synthesizer renders them far apart. With `ModelConfig.velocity_gain` a model hears velocity as a level,
the way SoundFont synthesizers apply it: it learns and renders velocity-normalised spectrograms (`velocity_gain`
removed from the training targets and contexts), and the gain is added back to each window it renders.

With `ModelConfig.note_roll` the FiLM decoder adds a projection of `note_roll` to its frame inputs: per frame, the
sounding notes by instrument group and pitch, and their onsets. The tokens say the same in time-shift events that
cross-attention must decode into frames; a frame-aligned roll gives the decoder the notes where it needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from midisynth.constants import (
    FRAME_RATE,
    MAX_LOG_MEL,
    MIN_LOG_MEL,
    REFERENCE_VELOCITY,
    ROLL_DIMS,
    ROLL_GROUPS,
    ROLL_PITCHES,
    WINDOW_FRAMES,
)
from midisynth.model.config import ModelConfig
from midisynth.score.frames import sounding_frames
from midisynth.score.midi import Note, Song
from midisynth.score.tokens import MAX_VELOCITY

ONSET_SECONDS = 0.1  # time constant of a note's onset column in the note roll


def velocity_mix(song: Song, windows: int) -> np.ndarray:
    """[windows * 256, 127] float32: for frame f (time f / 50 s from the song start), the fraction of the notes
    sounding then (start <= time < end) played at each velocity 1..127; all zeros where no note sounds."""
    frames = windows * WINDOW_FRAMES
    changes = np.zeros((frames + 1, MAX_VELOCITY), dtype=np.int64)  # +1 where a note starts sounding, -1 where it stops
    for note in song.notes:
        onset, end = sounding_frames(note)
        first = min(frames, max(0, onset))
        stop = min(frames, max(first, end))
        column = min(max(note.velocity, 1), MAX_VELOCITY) - 1
        changes[first, column] += 1
        changes[stop, column] -= 1
    counts = np.cumsum(changes[:frames], axis=0)  # [frames, 127] notes sounding, by velocity
    return (counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)).astype(np.float32)


def roll_group(note: Note) -> int:
    """A note's instrument group in the note roll: its GM family (program // 8, 0..15), or 16 for drums."""
    return ROLL_GROUPS - 1 if note.is_drum else note.program // 8


def note_roll(song: Song, window: int) -> np.ndarray:
    """[256, ROLL_DIMS] float32, window `window` of the song (frame f at (window * 256 + f) / 50 s):

    - column group * 128 + pitch (`roll_group`): 1 while a note of that group and pitch sounds (start <= time < end;
      a drum hit sounds at least `midisynth.score.frames.DRUM_SECONDS`);
    - column ROLL_GROUPS * 128 + pitch: the onsets of that pitch, any group: velocity / 127 at a note's first frame,
      decaying as exp(-age / ONSET_SECONDS) (the largest where notes overlap), 0 before the note.
    """
    first_frame = window * WINDOW_FRAMES
    roll = np.zeros((WINDOW_FRAMES, ROLL_DIMS), np.float32)
    ages = np.arange(WINDOW_FRAMES, dtype=np.float32)
    for note in song.notes:
        onset, end = (frame - first_frame for frame in sounding_frames(note))  # in this window's frames
        stop = min(WINDOW_FRAMES, end)
        lo = max(onset, 0)
        if stop <= lo:
            continue
        roll[lo:stop, roll_group(note) * ROLL_PITCHES + note.pitch] = 1.0
        decay = note.velocity / MAX_VELOCITY * np.exp(-(ages[lo:] - onset) / (ONSET_SECONDS * FRAME_RATE))
        column = roll[lo:, ROLL_GROUPS * ROLL_PITCHES + note.pitch]
        np.maximum(column, decay, out=column)
    return roll


def velocity_gain(song: Song, windows: int) -> np.ndarray:
    """[windows, 256] float32, log units: per frame, ln of the mean (velocity / 90)^2 of the notes sounding then.

    That is the level SoundFont synthesizers give a note by its velocity: the SF2 default velocity-to-attenuation
    curve makes amplitude proportional to velocity^2. FluidR3's trombone at pitch 70 is 3.83 log units softer at
    velocity 20 than at 127; 2 ln(20 / 127) = -3.70. Frames where nothing sounds keep the last value (a release
    tail keeps its notes' level); frames before the first note get 0.
    """
    mix = velocity_mix(song, windows)  # [frames, 127]: velocities 1..127
    power = mix.astype(np.float64) @ (np.arange(1, MAX_VELOCITY + 1) / REFERENCE_VELOCITY) ** 2  # [frames]; 0: silent
    frames = np.arange(power.shape[0])
    last_sounding = np.maximum.accumulate(np.where(power > 0, frames, -1))  # [frames]; -1 before the first note
    gain = np.where(last_sounding >= 0, np.log(np.maximum(power[last_sounding], 1e-12)), 0.0)
    return gain.reshape(windows, WINDOW_FRAMES).astype(np.float32)


def apply_gain(features: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Log-mel features [..., frames, 128] made louder by `gain` [..., frames] log units (softer where negative),
    clipped to the feature range; bins at the floor (silence) stay there."""
    shifted = (features + gain[..., None]).clamp(MIN_LOG_MEL, MAX_LOG_MEL)
    return torch.where(features > MIN_LOG_MEL + 1e-3, shifted, features)


@dataclass(frozen=True)
class NoteInputs:
    """A song's per-frame note inputs for a model, each only where the model's config asks for it: the velocity gain,
    made for the whole song, and the frame cue, made window by window from the song."""

    song: Song
    gain: np.ndarray | None  # [windows, 256] `velocity_gain`, log units
    note_roll: bool  # the cue has the song's `note_roll`

    def cue(self, window: int) -> np.ndarray | None:
        """[256, cue_dims] float32, the decoder's frame cue for a window, the note roll; None for a model without it."""
        return note_roll(self.song, window) if self.note_roll else None


def song_note_inputs(song: Song, windows: int, cfg: ModelConfig) -> NoteInputs | None:
    """What a model with `cfg` needs of a song's notes besides its tokens (None for the paper's models)."""
    if not cfg.takes_note_inputs:
        return None
    return NoteInputs(
        song=song, gain=velocity_gain(song, windows) if cfg.velocity_gain else None, note_roll=cfg.note_roll
    )
