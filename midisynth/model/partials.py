"""The partials model: an additive estimate of a window's mel magnitude computed from its notes, with a spectral
envelope per instrument fitted to a data set, mixed into the network's spectrogram at render time.

The diffusion model draws where each note's energy lies only as well as its small network has learned to, and its
partials come out smeared across neighbouring mel bins, with soft onsets: the notes are hard to hear. The partials
model places them exactly. It is linear in its gains, one per (mel bin, column):

- held notes, two columns per GM program (below and from REGISTER_SPLIT): each note's harmonic template
  (`midisynth.model.harmonics.pitch_templates`: partials k * f0 of amplitude 1 / k through the front end's window
  and mel filters) at the note's level (velocity², decaying from the onset for struck and plucked families,
  `harmonics.FAMILY_DECAY_SECONDS`);
- releases, one column per GM family (program // 8): the template after the note-off, decaying over
  RELEASE_SECONDS from the level the note had reached;
- reverb: the held columns' unit templates summed and smeared by a causal exponential tail of REVERB_SECONDS;
- drums, one column per GM drum key (35-81, and one for the keys outside): a broadband hit decaying from its onset
  with the time constant of its kind of drum (DRUM_GROUPS);
- a constant floor.

So the gains of a program are its spectral envelope: the level, per mel bin, of its partials against the 1 / k
template; `midisynth.training.partials` fits them to a data set in closed form.

`Partials.mix` gives the rendered spectrogram (1 - w) of the network's magnitude and w of this estimate's, in linear
magnitude. The network's own spectrogram stays the next window's context, as in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from midisynth.constants import FRAME_RATE, MAX_LOG_MEL, MIN_LOG_MEL, N_MELS, REFERENCE_VELOCITY, WINDOW_FRAMES
from midisynth.model.harmonics import FAMILY_DECAY_SECONDS, NOTE_LEVEL, pitch_templates
from midisynth.score.frames import sounding_frames
from midisynth.score.midi import Note, Song

PROGRAMS, FAMILIES = 128, 16
REGISTER_SPLIT = 60  # a program's notes below this pitch have a column of their own, those from it up another
HELD_COLUMNS = 2 * PROGRAMS
RELEASE_SECONDS = 0.2  # time constant of a note's release after its note-off
REVERB_SECONDS = 0.4  # time constant of the reverb tail
# GM drum keys by the kind of sound, each group with its decay time constant in seconds; other keys are group 5.
DRUM_GROUPS = {35: 0, 36: 0,  # bass drums
               37: 1, 38: 1, 39: 1, 40: 1,  # snares, clap, side stick
               41: 2, 43: 2, 45: 2, 47: 2, 48: 2, 50: 2,  # toms
               42: 3, 44: 3, 46: 3,  # hi-hats
               49: 4, 51: 4, 52: 4, 53: 4, 55: 4, 57: 4, 59: 4}  # cymbals
DRUM_DECAY_SECONDS = (0.15, 0.15, 0.2, 0.1, 0.6, 0.15)
# Column layout of the gains: [held: program x register | release per family | reverb | drum keys | floor].
RELEASE_COLUMN = HELD_COLUMNS
REVERB_COLUMN = RELEASE_COLUMN + FAMILIES
FIRST_DRUM_KEY, LAST_DRUM_KEY = 35, 81  # the GM percussion map
DRUM_KEYS = LAST_DRUM_KEY - FIRST_DRUM_KEY + 2  # a column per key, the last for keys outside the map
DRUM_COLUMN = REVERB_COLUMN + 1
FLOOR_COLUMN = DRUM_COLUMN + DRUM_KEYS
COLUMNS = FLOOR_COLUMN + 1
LEAD_FRAMES = math.ceil(5 * REVERB_SECONDS * FRAME_RATE)  # history computed before a window for its reverb tail
RELEASE_FRAMES = math.ceil(5 * RELEASE_SECONDS * FRAME_RATE)  # frames a release is drawn for after the note-off

DEFAULT_MIX = 0.7  # share of the partials model's magnitude in a render, chosen by the held-out evaluation
#                   (docs/experiments.md): from 0.6 to 0.8 the log-mel distance holds, the notes found rise with it
FORMAT_TAG = "midisynth.partials/1"


@dataclass(frozen=True)
class NoteColumns:
    """A span of frames' unit-gain columns, as levels per pitch (so each column's mel magnitude is levels @ template).

    held: held column (`held_column`) -> [frames, 128 pitches]; release: family -> [frames, 128 pitches]; reverb
    [frames, 128 mel bins]; drums [frames, DRUM_KEYS]. All levels are amplitudes relative to NOTE_LEVEL.
    """

    held: dict[int, np.ndarray]
    release: dict[int, np.ndarray]
    reverb: np.ndarray
    drums: np.ndarray

    def design(self) -> tuple[np.ndarray, list[int]]:
        """([frames, 128 mel bins, active columns] float32, the active columns' indices): the mel magnitude of each
        column that is not silent in the span, at unit gain (the fit's design matrix, per mel bin)."""
        parts = [(column, NOTE_LEVEL * _on_mel(levels)) for column, levels in self.held.items()]
        parts += [(RELEASE_COLUMN + family, NOTE_LEVEL * _on_mel(levels)) for family, levels in self.release.items()]
        parts.append((REVERB_COLUMN, self.reverb))
        parts += [(DRUM_COLUMN + key, np.repeat(NOTE_LEVEL * self.drums[:, key:key + 1], N_MELS, axis=1))
                  for key in range(DRUM_KEYS) if self.drums[:, key].any()]
        parts.append((FLOOR_COLUMN, np.full(self.reverb.shape, NOTE_LEVEL, np.float32)))
        return np.stack([p for _, p in parts], axis=2).astype(np.float32), [c for c, _ in parts]


def _drum_frames(key: int) -> int:
    """Frames a hit of drum `key` is drawn for."""
    return math.ceil(5 * DRUM_DECAY_SECONDS[drum_group(key)] * FRAME_RATE)


class NoteReach:
    """The frames [begin, end) in which each of a song's notes adds to the estimate (held, released or decaying),
    indexed once so that a window visits only its own notes: a long song's windows cost what a short one's do."""

    def __init__(self, song: Song):
        self.notes = song.notes
        spans = [sounding_frames(note) for note in song.notes]
        self.begin = np.array([onset for onset, _ in spans], dtype=np.int64)  # [notes]
        self.end = np.array([onset + _drum_frames(note.pitch) if note.is_drum else end + RELEASE_FRAMES
                             for note, (onset, end) in zip(song.notes, spans, strict=True)], dtype=np.int64)

    def within(self, start: int, stop: int) -> list[Note]:
        """The notes, in song order, that add to frames [start, stop)."""
        return [self.notes[i] for i in np.flatnonzero((self.begin < stop) & (self.end > start))]


def note_columns(song: Song, first: int, stop: int, reach: NoteReach | None = None) -> NoteColumns:
    """The unit-gain columns of frames [first, stop) of `song` (frame f at f / 50 s); the reverb tail counts the held
    notes from LEAD_FRAMES before `first`. `reach`: the song's `NoteReach`, if made (else every note is looked at)."""
    start = max(0, first - LEAD_FRAMES)
    frames = stop - start
    held: dict[int, np.ndarray] = {}
    release: dict[int, np.ndarray] = {}
    drums = np.zeros((frames, DRUM_KEYS), np.float32)
    for note in song.notes if reach is None else reach.within(start, stop):
        onset, end = sounding_frames(note)
        level = (note.velocity / REFERENCE_VELOCITY) ** 2
        if note.is_drum:
            decay = DRUM_DECAY_SECONDS[drum_group(note.pitch)]
            _add_decay(drums[:, drum_column(note.pitch)], onset - start, onset + _drum_frames(note.pitch) - start,
                       level, decay)
            continue
        if end + RELEASE_FRAMES <= start or onset >= stop:
            continue
        decay = FAMILY_DECAY_SECONDS.get(note.program // 8)
        held_levels = held.setdefault(held_column(note), np.zeros((frames, 128), np.float32))
        _add_decay(held_levels[:, note.pitch], onset - start, end - start, level, decay)
        at_release = level * (1.0 if decay is None else math.exp(-(end - onset) / FRAME_RATE / decay))
        release_levels = release.setdefault(note.program // 8, np.zeros((frames, 128), np.float32))
        _add_decay(release_levels[:, note.pitch], end - start, end + RELEASE_FRAMES - start, at_release, RELEASE_SECONDS)
    total = NOTE_LEVEL * _on_mel(sum(held.values(), np.zeros((frames, 128), np.float32)))
    keep = slice(first - start, None)
    return NoteColumns(
        held={c: levels[keep] for c, levels in held.items() if levels[keep].any()},
        release={f: levels[keep] for f, levels in release.items() if levels[keep].any()},
        reverb=_reverb_tail(total)[keep], drums=drums[keep])


def held_column(note: Note) -> int:
    """The column of a pitched note while held: its program's, in its register (REGISTER_SPLIT)."""
    return 2 * note.program + (note.pitch >= REGISTER_SPLIT)


def drum_group(key: int) -> int:
    """The kind of drum (DRUM_GROUPS) of a GM drum key; keys not listed are the last kind."""
    return DRUM_GROUPS.get(key, len(DRUM_DECAY_SECONDS) - 1)


def drum_column(key: int) -> int:
    """A drum key's column among the drums (the last for keys outside the GM map)."""
    return key - FIRST_DRUM_KEY if FIRST_DRUM_KEY <= key <= LAST_DRUM_KEY else DRUM_KEYS - 1


def _on_mel(levels: np.ndarray) -> np.ndarray:
    """Levels per pitch [frames, 128] -> their unit templates' mel magnitude [frames, 128 mel bins]. The product
    runs in torch, on its threads: numpy's BLAS threads, left spinning after a call, would slow torch's next ops."""
    return (torch.from_numpy(levels) @ torch.from_numpy(pitch_templates())).numpy()


def _add_decay(target: np.ndarray, begin: int, end: int, level: float, decay: float | None) -> None:
    """Add `level` (times exp(-age / decay) for a decay in seconds, age from `begin`) to target[begin:end], clipped
    to the target's frames."""
    lo, hi = max(begin, 0), min(end, target.shape[0])
    if hi <= lo:
        return
    if decay is None:
        target[lo:hi] += level
    else:
        target[lo:hi] += level * np.exp(-(np.arange(lo, hi) - begin) / FRAME_RATE / decay)


def _reverb_tail(magnitude: np.ndarray) -> np.ndarray:
    """[frames, 128]: what a causal exponential tail (REVERB_SECONDS) of `magnitude` [frames, 128] adds after each
    frame, normalised to unit total weight."""
    keep = math.exp(-1.0 / (FRAME_RATE * REVERB_SECONDS))
    tail = np.zeros_like(magnitude)
    state = np.zeros(magnitude.shape[1], magnitude.dtype)
    for frame in range(magnitude.shape[0]):
        tail[frame] = (1 - keep) * state
        state = keep * state + magnitude[frame]
    return tail


@dataclass(frozen=True)
class Partials:
    """Fitted gains [128 mel bins, COLUMNS] of the partials model, and its default share `mix` in a render."""

    gains: np.ndarray
    mix: float = DEFAULT_MIX

    def __post_init__(self) -> None:
        if self.gains.shape != (N_MELS, COLUMNS):
            raise ValueError(f"partials gains have shape {self.gains.shape}, expected {(N_MELS, COLUMNS)}")
        check_mix(self.mix)

    def magnitude(self, song: Song, window: int, reach: NoteReach | None = None) -> np.ndarray:
        """[256, 128] float32 mel magnitude of window `window` (frame f at (window * 256 + f) / 50 s); `reach`: the
        song's `NoteReach`, for a song rendered window by window."""
        columns = note_columns(song, window * WINDOW_FRAMES, (window + 1) * WINDOW_FRAMES, reach)
        templates = torch.from_numpy(pitch_templates())  # [128 pitches, 128 mel bins]
        gains = torch.from_numpy(self.gains)
        out = columns.reverb * self.gains[:, REVERB_COLUMN] + NOTE_LEVEL * self.gains[:, FLOOR_COLUMN]
        for column, levels in columns.held.items():
            out += NOTE_LEVEL * (torch.from_numpy(levels) @ (templates * gains[:, column])).numpy()
        for family, levels in columns.release.items():
            out += NOTE_LEVEL * (torch.from_numpy(levels) @ (templates * gains[:, RELEASE_COLUMN + family])).numpy()
        out += NOTE_LEVEL * (torch.from_numpy(columns.drums) @ gains[:, DRUM_COLUMN:FLOOR_COLUMN].T).numpy()
        return out.astype(np.float32)


def check_mix(mix: float) -> None:
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"partials mix must be in [0, 1] (0: the network alone), got {mix}")


def mix_log_mel(log_mel: np.ndarray, magnitude: np.ndarray, mix: float) -> np.ndarray:
    """float32 log((1 - mix) exp(log_mel) + mix magnitude), in the feature range: log-mel [..., frames, 128] and
    mel magnitude of the same shape."""
    mixed = (1.0 - mix) * np.exp(log_mel.astype(np.float64)) + mix * magnitude
    return np.clip(np.log(np.maximum(mixed, math.exp(MIN_LOG_MEL))), MIN_LOG_MEL, MAX_LOG_MEL).astype(np.float32)


# -- files --------------------------------------------------------------------------------------------------------------
def save_partials(partials: Partials, path: str | Path) -> None:
    """Write the gains as safetensors (atomically)."""
    from safetensors.numpy import save_file

    from midisynth.files import atomic_path

    with atomic_path(Path(path), True) as tmp:
        save_file({"gains": np.ascontiguousarray(partials.gains, dtype=np.float32)}, str(tmp),
                  metadata={"format": FORMAT_TAG, "mix": repr(partials.mix)})


def load_partials(path: str | Path) -> Partials:
    """Read `save_partials`' file; ValueError naming the file when it is not one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT_TAG:
                raise ValueError(f"{path}: not a midisynth partials file (format {meta.get('format')!r})")
            gains = f.get_tensor("gains")
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable partials file ({err})") from None
    if not np.isfinite(gains).all():
        raise ValueError(f"{path}: partials gains hold NaN or infinite values")
    try:
        return Partials(gains, float(meta.get("mix", DEFAULT_MIX)))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
