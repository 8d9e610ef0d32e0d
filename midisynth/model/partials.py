"""The partials model: an additive estimate of a window's mel magnitude computed from its notes, with spectral
envelopes per instrument that change over a note's life, fitted to a data set, mixed into the network's spectrogram
at render time.

The diffusion model draws where each note's energy lies only as well as its small network has learned to, and its
partials come out smeared across neighbouring mel bins, with soft onsets: the notes are hard to hear. The partials
model places them exactly, and gives them the attack and decay of their instrument. It is linear in its gains, one
per (mel bin, column); each column is a unit-gain pattern in time and frequency drawn from the notes:

- held notes, a column per GM program and register (REGISTER_SPLITS): each note's harmonic template
  (`midisynth.model.harmonics.pitch_templates`: partials k * f0 of amplitude 1 / k, stretched on pianos' and plucked
  strings (`harmonics.string_kind`), through the front end's window and mel filters) at the note's level (velocity²,
  decaying from the onset for struck and plucked families, `harmonics.decay_seconds`);
- the attack, a column per program and register: the same template decaying from the onset over ATTACK_SECONDS,
  so that a program's spectrum at the attack (bright for a piano) differs from its held one;
- the fundamental, a column per program and register: the held level on the note's fundamental alone, so that in
  each mel bin a program's fundamentals and the overtones of its lower notes have gains of their own (in a chord
  they share bins, and how strong a note's fundamental is against its overtones is what tells it from the octave
  above);
- the fade, a column per GM family and register: the template decaying over FADE_SECONDS (upper partials that die
  away before the body of the note);
- the swell, a column per family and register: the template rising as 1 - exp(-age / SWELL_SECONDS), for
  instruments whose attack is slow (strings, pads), which a short note never lets reach their held level;
- the hard attack, a column per family: the attack weighted once more by (velocity / 127)², for instruments that are
  brighter when played harder;
- the onset noise, a column per family: a broadband burst decaying over NOISE_SECONDS (hammer, pick, breath);
- the body, a column per family and register: broadband at the held level, for what sounds between a note's partials
  and below its fundamental while it is held (a piano's soundboard and hammer thump, a bow's or breath's noise);
- releases, two columns per GM family (program // 8): the template after the note-off, decaying from the level the
  note had reached over each of RELEASE_SECONDS;
- reverb: the held columns' unit templates summed and smeared by a causal exponential tail of REVERB_SECONDS;
- drums, two columns per GM drum key (35-81, and one for the keys outside): the hit's body, a broadband burst
  decaying with the time constant of its kind of drum (DRUM_GROUPS), and its stick, decaying over
  DRUM_ATTACK_SECONDS;
- a constant floor.

Every onset is placed on the frame grid as the front end sees it: a frame whose window (640 samples from frame * 320)
holds the onset part way takes the share of the window's weight that lies after the onset, and ages are measured
from the onset to the window's centre. So an attack lands in the frames, at the level, where the reference's does.

The gains of a program are its spectral envelopes: the level, per mel bin, of its partials against the 1 / k
template at each stage of a note's life; `midisynth.training.partials` fits them to a data set in closed form.

`Partials.mix` gives the rendered spectrogram (1 - w) of the network's magnitude and w of this estimate's, in linear
magnitude. The network's own spectrogram stays the next window's context, as in training.
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from midisynth.audio import hann_window
from midisynth.constants import (
    FRAME_RATE,
    HOP_LENGTH,
    MAX_LOG_MEL,
    MIN_LOG_MEL,
    N_MELS,
    REFERENCE_VELOCITY,
    SAMPLE_RATE,
    WIN_LENGTH,
    WINDOW_FRAMES,
)
from midisynth.model.harmonics import NOTE_LEVEL, decay_seconds, string_kind, voice_templates
from midisynth.score.frames import sounding_frames
from midisynth.score.midi import Note, Song

PROGRAMS, FAMILIES = 128, 16
# A program's notes have columns of their own in each register: below 48, 48-59, 60-71 and from 72 up. A sampled
# instrument's level, brightness and decay change along its range, by more than one spectral envelope per half of
# the keyboard can follow.
REGISTER_SPLITS = (48, 60, 72)
REGISTERS = len(REGISTER_SPLITS) + 1
ATTACK_SECONDS = 0.1  # time constant of the attack columns
FADE_SECONDS = 0.5  # time constant of the fade columns
NOISE_SECONDS = 0.02  # time constant of a pitched note's onset noise
SWELL_SECONDS = 0.15  # time constant of the swell columns' rise
RELEASE_SECONDS = (0.2, 0.8)  # time constants of a note's release after its note-off, a column each
REVERB_SECONDS = 0.4  # time constant of the reverb tail
# GM drum keys by the kind of sound, each group with its decay time constant in seconds; other keys are group 5.
DRUM_GROUPS = {
    35: 0,
    36: 0,  # bass drums
    37: 1,
    38: 1,
    39: 1,
    40: 1,  # snares, clap, side stick
    41: 2,
    43: 2,
    45: 2,
    47: 2,
    48: 2,
    50: 2,  # toms
    42: 3,
    44: 3,
    46: 3,  # hi-hats
    49: 4,
    51: 4,
    52: 4,
    53: 4,
    55: 4,
    57: 4,
    59: 4,
}  # cymbals
DRUM_DECAY_SECONDS = (0.15, 0.15, 0.2, 0.1, 0.6, 0.15)
DRUM_ATTACK_SECONDS = 0.03  # time constant of a drum hit's stick
FIRST_DRUM_KEY, LAST_DRUM_KEY = 35, 81  # the GM percussion map
DRUM_KEYS = LAST_DRUM_KEY - FIRST_DRUM_KEY + 2  # a column per key, the last for keys outside the map
# Column layout of the gains: [held: program x register | attack: program x register | fundamental: program x
# register | fade: family x register | swell: family x register | hard attack: family | onset noise: family | body:
# family x register | release: family x time constant | reverb | drum keys | drum sticks | floor].
HELD_COLUMNS = REGISTERS * PROGRAMS
ATTACK_COLUMN = HELD_COLUMNS
FUNDAMENTAL_COLUMN = ATTACK_COLUMN + HELD_COLUMNS
FADE_COLUMN = FUNDAMENTAL_COLUMN + HELD_COLUMNS
SWELL_COLUMN = FADE_COLUMN + REGISTERS * FAMILIES
HARD_COLUMN = SWELL_COLUMN + REGISTERS * FAMILIES
NOISE_COLUMN = HARD_COLUMN + FAMILIES
BODY_COLUMN = NOISE_COLUMN + FAMILIES
RELEASE_COLUMN = BODY_COLUMN + REGISTERS * FAMILIES
REVERB_COLUMN = RELEASE_COLUMN + len(RELEASE_SECONDS) * FAMILIES
DRUM_COLUMN = REVERB_COLUMN + 1
STICK_COLUMN = DRUM_COLUMN + DRUM_KEYS
FLOOR_COLUMN = STICK_COLUMN + DRUM_KEYS
COLUMNS = FLOOR_COLUMN + 1
LEAD_FRAMES = math.ceil(5 * REVERB_SECONDS * FRAME_RATE)  # history computed before a window for its reverb tail
RELEASE_FRAMES = math.ceil(5 * max(RELEASE_SECONDS) * FRAME_RATE)  # frames a release is drawn for after the note-off
WINDOW_CENTRE_SECONDS = WIN_LENGTH / 2 / SAMPLE_RATE  # frame f's window is centred at f / 50 s + this

DEFAULT_MIX = 0.85  # share of the partials model's magnitude in a render, chosen by the evaluation on both
#                    held-out sets (docs/experiments.md): the log-mel distance holds from 0.7 to 0.85, attacks and
#                    the notes found rise with the share
ONSET_SHARE_SECONDS = 0.01  # around each onset the estimate replaces the network's spectrogram, whose attacks are
#                             smeared and start early: from the frame before the onset's, decaying over this
REST_GUARD_SECONDS = 0.2  # a rest (`rest_frames`) begins this long after the last note stops sounding
FORMAT_TAG = "midisynth.partials/5"


@dataclass(frozen=True)
class NoteColumns:
    """A span of frames' unit-gain columns (levels are amplitudes relative to NOTE_LEVEL):

    voices: the span's voices [n] (`voice`: a pitch on a kind of string), in rising order;
    pitched: column -> levels per voice [frames, n] (each column's mel magnitude is levels @ the voices' rows of
    `harmonics.voice_templates`);
    broadband: column -> level [frames] (the same in every mel bin); reverb [frames, 128 mel bins].
    """

    voices: np.ndarray
    pitched: dict[int, np.ndarray]
    broadband: dict[int, np.ndarray]
    reverb: np.ndarray

    def levels(self, column: int, on_voice: int) -> np.ndarray:
        """[frames] float32: a pitched column's levels on one voice (zeros where it has none)."""
        found = np.flatnonzero(self.voices == on_voice)
        if column not in self.pitched or not found.size:
            return np.zeros(self.reverb.shape[0], np.float32)
        return self.pitched[column][:, found[0]]

    def design(self) -> tuple[np.ndarray, list[int]]:
        """([frames, 128 mel bins, active columns] float32, the active columns' indices): the mel magnitude of each
        column that is not silent in the span, at unit gain (the fit's design matrix, per mel bin)."""
        parts = [
            (column, NOTE_LEVEL * _on_mel(levels, self.voices, is_fundamental(column)))
            for column, levels in self.pitched.items()
        ]
        parts += [
            (column, np.repeat(NOTE_LEVEL * level[:, None], N_MELS, axis=1)) for column, level in self.broadband.items()
        ]
        parts.append((REVERB_COLUMN, self.reverb))
        parts.append((FLOOR_COLUMN, np.full(self.reverb.shape, NOTE_LEVEL, np.float32)))
        return np.stack([p for _, p in parts], axis=2).astype(np.float32), [c for c, _ in parts]


def _drum_frames(key: int) -> int:
    """Frames a hit of drum `key` is drawn for."""
    return math.ceil(5 * DRUM_DECAY_SECONDS[drum_group(key)] * FRAME_RATE)


def onset_frame(seconds: float) -> int:
    """The first frame whose window holds any of the audio from `seconds` on (the one before the first window to
    start after it), at least 0."""
    return max(0, math.floor(seconds * FRAME_RATE) - 1)


class NoteReach:
    """The frames [begin, end) in which each of a song's notes adds to the estimate (attack, held, released or
    decaying), indexed once so that a window visits only its own notes: a long song's windows cost what a short
    one's do."""

    def __init__(self, song: Song):
        self.notes = song.notes
        self.begin = np.array([onset_frame(note.start) for note in song.notes], dtype=np.int64)  # [notes]
        self.end = np.array([_reach_end(note) for note in song.notes], dtype=np.int64)

    def within(self, start: int, stop: int) -> list[Note]:
        """The notes, in song order, that add to frames [start, stop)."""
        return [self.notes[i] for i in np.flatnonzero((self.begin < stop) & (self.end > start))]


def _reach_end(note: Note) -> int:
    """The frame after the last that `note` adds to."""
    if note.is_drum:
        return math.ceil(note.start * FRAME_RATE) + _drum_frames(note.pitch)
    return math.ceil(note.end * FRAME_RATE) + RELEASE_FRAMES


@functools.cache
def _window_weight_after() -> np.ndarray:
    """[WIN_LENGTH + 1] float64: the share of the front end's window weight at samples >= i of a frame's window."""
    window = hann_window(torch.device("cpu"), torch.float64).numpy()
    after = np.concatenate([np.cumsum(window[::-1])[::-1], [0.0]])
    return after / after[0]


def _clock(start: float, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(share, age), each [stop - first] float64, of a note from `start` seconds on frames [first, stop): the share
    of each frame's window weight after the onset, and the age in seconds at the window's centre (0 before it)."""
    frames = np.arange(first, stop)
    offset = np.clip(np.ceil(start * SAMPLE_RATE - frames * HOP_LENGTH), 0, WIN_LENGTH).astype(np.int64)
    return _window_weight_after()[offset], np.maximum(frames / FRAME_RATE + WINDOW_CENTRE_SECONDS - start, 0.0)


def _shape(share: np.ndarray, age: np.ndarray, decay: float | None, rise: float | None = None) -> np.ndarray:
    """float32 share * exp(-age / decay) (1 for None) * (1 - exp(-age / rise)) (1 for None)."""
    envelope = share if decay is None else share * np.exp(-age / decay)
    if rise is not None:
        envelope = envelope * -np.expm1(-age / rise)
    return envelope.astype(np.float32)


@functools.cache
def _release_curves() -> np.ndarray:
    """[len(RELEASE_SECONDS), RELEASE_FRAMES] float32: exp(-t / seconds) at each frame after a note-off."""
    t = np.arange(RELEASE_FRAMES) / FRAME_RATE
    return np.exp(-t[None, :] / np.array(RELEASE_SECONDS)[:, None]).astype(np.float32)


def note_columns(song: Song, first: int, stop: int, reach: NoteReach | None = None) -> NoteColumns:
    """The unit-gain columns of frames [first, stop) of `song` (frame f at f / 50 s); the reverb tail counts the held
    notes from LEAD_FRAMES before `first`. `reach`: the song's `NoteReach`, if made (else every note is looked at)."""
    start = max(0, first - LEAD_FRAMES)
    frames = stop - start
    notes = song.notes if reach is None else reach.within(start, stop)
    voices = np.array(sorted({voice(note) for note in notes if not note.is_drum}), dtype=np.int64)
    voice_index = {v: i for i, v in enumerate(voices.tolist())}  # a voice's place in the levels' last axis
    pitched: dict[int, np.ndarray] = {}
    broadband: dict[int, np.ndarray] = {}

    def add(column: int, on_voice: int | None, lo: int, values: np.ndarray) -> None:
        """Add `values` (one per frame from song frame `lo`, within [start, stop)) to a column, on the `voice`
        `on_voice` (None: broadband). Only the held columns feed the reverb: the others are kept from `first` on."""
        if column >= HELD_COLUMNS and lo < first:
            values, lo = values[first - lo :], first
        if on_voice is None:
            if column not in broadband:
                broadband[column] = np.zeros(frames, np.float32)
            broadband[column][lo - start : lo - start + values.shape[0]] += values
        else:
            if column not in pitched:
                pitched[column] = np.zeros((frames, len(voices)), np.float32)
            pitched[column][lo - start : lo - start + values.shape[0], voice_index[on_voice]] += values

    for note in notes:
        level = (note.velocity / REFERENCE_VELOCITY) ** 2
        begin = onset_frame(note.start)
        end = _reach_end(note) if note.is_drum else math.ceil(note.end * FRAME_RATE)  # drums: their decay's end
        lo, hi = max(begin, start), min(end, stop)  # the sounding frames in the span
        share, age = _clock(note.start, lo, hi)
        if note.is_drum:
            key = drum_column(note.pitch)
            if hi > lo:
                add(DRUM_COLUMN + key, None, lo, level * _shape(share, age, DRUM_DECAY_SECONDS[drum_group(note.pitch)]))
                add(STICK_COLUMN + key, None, lo, level * _shape(share, age, DRUM_ATTACK_SECONDS))
            continue
        family, register, note_voice = note.program // 8, register_of(note.pitch), voice(note)
        decay = decay_seconds(note.program)
        if hi > lo:
            held = level * _shape(share, age, decay)
            add(held_column(note), note_voice, lo, held)
            add(FUNDAMENTAL_COLUMN + held_column(note), note_voice, lo, held)
            add(
                SWELL_COLUMN + REGISTERS * family + register,
                note_voice,
                lo,
                level * _shape(share, age, decay, SWELL_SECONDS),
            )
            attack = level * _shape(share, age, ATTACK_SECONDS)
            add(ATTACK_COLUMN + held_column(note), note_voice, lo, attack)
            add(HARD_COLUMN + family, note_voice, lo, attack * (note.velocity / 127) ** 2)
            add(FADE_COLUMN + REGISTERS * family + register, note_voice, lo, level * _shape(share, age, FADE_SECONDS))
            add(NOISE_COLUMN + family, None, lo, level * _shape(share, age, NOISE_SECONDS))
            add(BODY_COLUMN + REGISTERS * family + register, None, lo, held)
        release_lo, release_hi = max(end, start), min(end + RELEASE_FRAMES, stop)
        if release_hi > release_lo:
            reached = max(end / FRAME_RATE + WINDOW_CENTRE_SECONDS - note.start, 0.0)  # the note's age at its note-off
            at_release = level * (1.0 if decay is None else math.exp(-reached / decay))
            curves = _release_curves()[:, release_lo - end : release_hi - end]
            for index, curve in enumerate(curves):
                add(RELEASE_COLUMN + index * FAMILIES + family, note_voice, release_lo, at_release * curve)
    held_levels = [levels for column, levels in pitched.items() if column < HELD_COLUMNS]
    total = NOTE_LEVEL * _on_mel(sum(held_levels, np.zeros((frames, len(voices)), np.float32)), voices)
    keep = slice(first - start, None)
    return NoteColumns(
        voices=voices,
        pitched={c: levels[keep] for c, levels in pitched.items() if levels[keep].any()},
        broadband={c: level[keep] for c, level in broadband.items() if level[keep].any()},
        reverb=_reverb_tail(total)[keep],
    )


def register_of(pitch: int) -> int:
    """The register (0 to REGISTERS - 1, REGISTER_SPLITS) of a MIDI pitch."""
    return bisect.bisect_right(REGISTER_SPLITS, pitch)


def voice(note: Note) -> int:
    """A pitched note's voice: its pitch on its program's kind of string (`harmonics.string_kind`), kind * 128 +
    pitch, the row of its template in `harmonics.voice_templates`."""
    return string_kind(note.program) * 128 + note.pitch


def held_column(note: Note) -> int:
    """The column of a pitched note while held: its program's, in its register (`register_of`)."""
    return REGISTERS * note.program + register_of(note.pitch)


def is_fundamental(column: int) -> bool:
    """Whether a pitched column draws the note's fundamental alone (`harmonics.pitch_templates(True)`)."""
    return FUNDAMENTAL_COLUMN <= column < FADE_COLUMN


def drum_group(key: int) -> int:
    """The kind of drum (DRUM_GROUPS) of a GM drum key; keys not listed are the last kind."""
    return DRUM_GROUPS.get(key, len(DRUM_DECAY_SECONDS) - 1)


def drum_column(key: int) -> int:
    """A drum key's column among the drums (the last for keys outside the GM map)."""
    return key - FIRST_DRUM_KEY if FIRST_DRUM_KEY <= key <= LAST_DRUM_KEY else DRUM_KEYS - 1


def _on_mel(levels: np.ndarray, voices: np.ndarray, fundamental_only: bool = False) -> np.ndarray:
    """Levels [frames, n] of `voices` [n] -> their unit templates' mel magnitude [frames, 128 mel bins] (of the
    fundamentals alone if `fundamental_only`). The product runs in torch, on its threads: numpy's BLAS threads, left
    spinning after a call, would slow torch's next ops."""
    return (torch.from_numpy(levels) @ torch.from_numpy(voice_templates(fundamental_only)[voices])).numpy()


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
        out = columns.reverb * self.gains[:, REVERB_COLUMN] + NOTE_LEVEL * self.gains[:, FLOOR_COLUMN]
        if columns.pitched:
            # Each (column, voice) that sounds in the window is a unit template weighed by the column's gains: one
            # product [frames, pairs] @ [pairs, 128 mel bins] over the pairs (a window has a few hundred at most).
            # A fundamental column carries its held column's levels, so it joins the held pair: the fundamental's
            # template weighed by its own gains is added to that pair's.
            levels, pairs = [], []
            for column, by_voice in columns.pitched.items():
                if is_fundamental(column):
                    continue
                sounding = np.flatnonzero(by_voice.any(axis=0))
                levels.append(by_voice[:, sounding])
                pairs += [(column, v) for v in columns.voices[sounding]]
            column_of, voice_of = np.array(pairs).T
            weighed = voice_templates()[voice_of] * self.gains[:, column_of].T  # [pairs, 128 mel bins]
            held = np.flatnonzero(column_of < HELD_COLUMNS)
            fundamental_gains = self.gains[:, FUNDAMENTAL_COLUMN + column_of[held]].T
            weighed[held] += voice_templates(True)[voice_of[held]] * fundamental_gains
            out += NOTE_LEVEL * (torch.from_numpy(np.concatenate(levels, axis=1)) @ torch.from_numpy(weighed)).numpy()
        for column, level in columns.broadband.items():
            out += NOTE_LEVEL * level[:, None] * self.gains[:, column]
        return out.astype(np.float32)


def onset_shares(song: Song, window: int, reach: NoteReach | None = None) -> np.ndarray:
    """[256] float32 in [0, 1] for window `window`'s frames: 1 from the frame before each note's onset frame
    (`onset_frame`) to the onset, then exp(-age / ONSET_SHARE_SECONDS) with the age at the frame's centre; the
    largest over the notes (drums included)."""
    first, stop = window * WINDOW_FRAMES, (window + 1) * WINDOW_FRAMES
    notes = song.notes if reach is None else reach.within(first, stop)
    starts = np.array([note.start for note in notes], dtype=np.float64)  # [notes] seconds
    begins = np.maximum(np.floor(starts * FRAME_RATE) - 1, 0) - 1  # the frame before each onset frame
    reached = math.ceil(10 * ONSET_SHARE_SECONDS * FRAME_RATE)  # frames after the onset's in which a share counts
    near = (begins < stop) & (begins + reached >= first)
    starts, begins = starts[near, None], begins[near, None]
    frames = np.arange(first, stop)[None, :]
    age = np.maximum(frames / FRAME_RATE + WINDOW_CENTRE_SECONDS - starts, 0.0)  # [notes, 256] seconds
    shares = np.where(frames >= begins, np.exp(-age / ONSET_SHARE_SECONDS), 0.0)
    return (shares.max(axis=0) if shares.size else np.zeros(WINDOW_FRAMES)).astype(np.float32)


def rest_frames(song: Song, window: int, reach: NoteReach | None = None) -> np.ndarray:
    """[256] bool for window `window`'s frames: True in a rest, where no note sounds (`frames.sounding_frames`) and
    none stopped within REST_GUARD_SECONDS before."""
    first, stop = window * WINDOW_FRAMES, (window + 1) * WINDOW_FRAMES
    rest = np.ones(WINDOW_FRAMES, bool)
    guard = math.ceil(REST_GUARD_SECONDS * FRAME_RATE)
    for note in song.notes if reach is None else reach.within(first, stop):
        begin, end = sounding_frames(note)
        rest[max(begin - first, 0) : max(min(end + guard, stop) - first, 0)] = False
    return rest


def mix_shares(song: Song, window: int, mix: float, reach: NoteReach | None = None) -> np.ndarray:
    """[256, 1] float32: the partials model's share in each frame of window `window`: `mix`, raised toward 1 around
    the onsets (`onset_shares`); 0 everywhere for `mix` 0, the network alone."""
    if mix == 0.0:
        return np.zeros((WINDOW_FRAMES, 1), np.float32)
    return shares_at(onset_shares(song, window, reach), mix)


def shares_at(onsets: np.ndarray, mix: float) -> np.ndarray:
    """[frames, 1] float32: `mix_shares` from a window's onset shares [frames] (`onset_shares`), for a caller that
    needs both."""
    return (mix + (1.0 - mix) * onsets)[:, None].astype(np.float32)


def check_mix(mix: float) -> None:
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"partials mix must be in [0, 1] (0: the network alone), got {mix}")


def mix_log_mel(log_mel: np.ndarray, magnitude: np.ndarray, mix: float | np.ndarray) -> np.ndarray:
    """float32 log((1 - mix) exp(log_mel) + mix magnitude), in the feature range: log-mel [..., frames, 128] and
    mel magnitude of the same shape; `mix` a share, or shares that broadcast against them (`mix_shares`)."""
    mixed = (1.0 - mix) * np.exp(log_mel.astype(np.float64)) + mix * magnitude
    return np.clip(np.log(np.maximum(mixed, math.exp(MIN_LOG_MEL))), MIN_LOG_MEL, MAX_LOG_MEL).astype(np.float32)


# -- files --------------------------------------------------------------------------------------------------------------
def save_partials(partials: Partials, path: str | Path) -> None:
    """Write the gains as safetensors (atomically)."""
    from safetensors.numpy import save_file

    from midisynth.files import atomic_path

    with atomic_path(Path(path), True) as tmp:
        save_file(
            {"gains": np.ascontiguousarray(partials.gains, dtype=np.float32)},
            str(tmp),
            metadata={"format": FORMAT_TAG, "mix": repr(partials.mix)},
        )


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
