"""MT3-style event tokens of a song, one list per 5.12 s window, exactly as diffusers' `MidiProcessor` makes them.

Vocabulary (event ids; the model sees them plus NUM_SPECIAL_TOKENS = 3, after PAD=0, EOS=1, UNK=2):

    shift       0..1000   time since the window start, in 10 ms steps
    pitch    1001..1128   MIDI pitch of a pitched note
    velocity 1129..1130   0 = note off, 1 = note on (one velocity bin)
    tie         1131      ends the tie section
    program  1132..1259   Slakh class program of the pitched notes that follow
    drum     1260..1387   drum note (pitch of a drum instrument)

Events: each pitched note gives `program, velocity 1, pitch` at its start and `program, velocity 0, pitch` at its
end; a drum note gives `velocity 1, drum` at its start only. Times are rounded to 10 ms steps.

A window covers 256 frames (512 steps) and is: the tie section (`program, pitch` for every note sounding at the
window start, by program then pitch, then `tie`), then the window's events, each step change preceded by the
shift from the window start (several shift tokens if over 1000 steps). A program or velocity token equal to the
previous one of its kind in the window is dropped; trailing shifts are dropped; then +3 and EOS.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from midisynth.constants import (
    EOS_ID,
    FRAME_RATE,
    HOP_LENGTH,
    MAX_INPUT_TOKENS,
    MAX_SHIFT_SECONDS,
    NUM_SPECIAL_TOKENS,
    SAMPLE_RATE,
    STEPS_PER_SECOND,
    WINDOW_FRAMES,
)
from midisynth.score.midi import Note, Song

MAX_SHIFT = MAX_SHIFT_SECONDS * STEPS_PER_SECOND  # 1000 steps
SHIFT_OFFSET = 0
PITCH_OFFSET = SHIFT_OFFSET + MAX_SHIFT + 1  # 1001
VELOCITY_OFFSET = PITCH_OFFSET + 128  # 1129
TIE_ID = VELOCITY_OFFSET + 2  # 1131
PROGRAM_OFFSET = TIE_ID + 1  # 1132
DRUM_OFFSET = PROGRAM_OFFSET + 128  # 1260
NUM_EVENT_IDS = DRUM_OFFSET + 128  # 1388
VOCAB_SIZE = NUM_EVENT_IDS + NUM_SPECIAL_TOKENS  # 1391
MAX_VELOCITY = 127  # MIDI velocities are 1..127 (0: note off)

WINDOW_STEPS = WINDOW_FRAMES * STEPS_PER_SECOND // FRAME_RATE  # 512 shift steps per window

# The 34 Slakh instrument classes, each named by its first General MIDI program.
SLAKH_PROGRAMS = (
    0,
    4,
    8,
    16,
    24,
    26,
    29,
    32,
    33,
    40,
    41,
    42,
    43,
    46,
    47,
    48,
    50,
    52,
    55,
    56,
    57,
    58,
    60,
    61,
    64,
    66,
    67,
    68,
    69,
    70,
    71,
    73,
    80,
    88,
)
_SLAKH_OF_PROGRAM = tuple(max(p for p in SLAKH_PROGRAMS if p <= program) for program in range(128))


def slakh_program(program: int) -> int:
    """The largest Slakh class program not above the General MIDI `program` (0-127)."""
    return _SLAKH_OF_PROGRAM[program]


def num_frames(duration: float) -> int:
    """Frames (50/s) the reference indexes events to: those of int(duration * 16000) samples padded by 1..320."""
    return int(duration * SAMPLE_RATE) // HOP_LENGTH + 1


def num_windows(duration: float) -> int:
    """Windows `tokenize` makes for a song of `duration` seconds."""
    return math.ceil(num_frames(duration) / WINDOW_FRAMES)


def _event_ids(note: Note, onset: bool) -> tuple[int, ...]:
    velocity = VELOCITY_OFFSET + (1 if onset and note.velocity > 0 else 0)
    if note.is_drum:
        return velocity, DRUM_OFFSET + note.pitch
    return PROGRAM_OFFSET + slakh_program(note.program), velocity, PITCH_OFFSET + note.pitch


def _timed_events(song: Song) -> tuple[list[int], list[tuple[int, ...]]]:
    """(step, event ids) of every event in the reference's order: by time, ties broken by the order of the list
    built from notes sorted by (is_drum, program, pitch): all offsets of pitched notes, then all onsets."""
    notes = sorted(song.notes, key=lambda n: (n.is_drum, n.program if n.is_drum else slakh_program(n.program), n.pitch))
    pitched = [n for n in notes if not n.is_drum]
    times = np.array([n.end for n in pitched] + [n.start for n in notes], dtype=np.float64)
    ids = [_event_ids(n, onset=False) for n in pitched] + [_event_ids(n, onset=True) for n in notes]
    order = np.argsort(times, kind="stable")
    steps = np.rint(times[order] * STEPS_PER_SECOND).astype(np.int64)  # half to even, as Python's round()
    return steps.tolist(), [ids[i] for i in order]


def _tie_section(sounding: dict[tuple[int, int], bool]) -> list[int]:
    """`program, pitch` of each sounding (program, pitch), by program then pitch, then `tie`."""
    ids = []
    for program, pitch in sorted(key for key, on in sounding.items() if on):
        ids += [program, pitch]
    return ids + [TIE_ID]


def _shifts(steps: int) -> list[int]:
    """Shift tokens for `steps` since the window start, at most MAX_SHIFT each."""
    return [SHIFT_OFFSET + min(MAX_SHIFT, steps - done) for done in range(0, steps, MAX_SHIFT)]


def _window(ties: list[int], events: list[tuple[int, tuple[int, ...]]], start: int) -> list[int]:
    """One window's ids (with the +3 offset and EOS) from its tie section and its (step, event ids)."""
    out: list[int] = []
    velocity = program = None
    written_step = start  # step of the latest token written: later steps need a shift first
    for step, ids in [(start, ties), *events]:
        for token in ids:
            if VELOCITY_OFFSET <= token < TIE_ID:
                if token == velocity:
                    continue
                velocity = token
            elif PROGRAM_OFFSET <= token < DRUM_OFFSET:
                if token == program:
                    continue
                program = token
            if step > written_step:
                out += _shifts(step - start)
                written_step = step
            out.append(token)
    return [token + NUM_SPECIAL_TOKENS for token in out] + [EOS_ID]


def tokenize(song: Song) -> list[list[int]]:
    """Token ids per 5.12 s window (with the +3 special-token offset, ending with EOS, without padding).

    Windows follow the song length (`num_windows`); events after the last frame (possible when sustain shortens
    the length, see `apply_sustain`) go to the last window. As in the reference, the tie section of a window
    starting after the last event's step shows the notes sounding just *before* that step. A song without notes
    gives `[tie, EOS]` per window (the reference raises an IndexError there).
    """
    steps, events = _timed_events(song)
    windows = num_windows(song.duration)
    last_step = steps[-1] if steps else 0
    # The tie section of window w shows the notes sounding after all events before step min(w * 512, last_step).
    tie_steps = [min(w * WINDOW_STEPS, last_step) for w in range(windows)]
    ties: list[list[int]] = []
    sounding: dict[tuple[int, int], bool] = {}  # (program id, pitch id) -> latest event was an onset
    per_window: list[list[tuple[int, tuple[int, ...]]]] = [[] for _ in range(windows)]
    for step, ids in zip(steps, events, strict=True):
        while len(ties) < windows and tie_steps[len(ties)] <= step:
            ties.append(_tie_section(sounding))
        if len(ids) == 3:  # a pitched note's event
            sounding[(ids[0], ids[2])] = ids[1] > VELOCITY_OFFSET
        per_window[min(step // WINDOW_STEPS, windows - 1)].append((step, ids))
    ties += [_tie_section(sounding)] * (windows - len(ties))  # only for a song without events
    return [_window(ties[w], per_window[w], w * WINDOW_STEPS) for w in range(windows)]


def fit_window(window: list[int], length: int = MAX_INPUT_TOKENS, warn: bool = True) -> list[int]:
    """A window cut to at most `length` tokens, still ending with EOS (the notes encoder takes `length`); a cut
    raises a UserWarning unless `warn` is False (renders report it per song, see `cut_seconds`)."""
    if len(window) <= length:
        return window
    if warn:
        warnings.warn(
            f"a 5.12 s window has {len(window)} tokens; keeping the first {length} (the model's limit)", stacklevel=2
        )
    return window[: length - 1] + [EOS_ID]


def cut_seconds(window: list[int], length: int = MAX_INPUT_TOKENS) -> float | None:
    """Where, in seconds from the window's start, `fit_window` cuts a window of over `length` tokens (the time of
    the first event it leaves out, to 10 ms); None if it is not cut."""
    if len(window) <= length:
        return None
    steps, in_shift = 0, False
    for token in window[: length - 1]:
        event = token - NUM_SPECIAL_TOKENS
        is_shift = SHIFT_OFFSET <= event <= MAX_SHIFT
        if is_shift:  # consecutive shifts add up to the time from the window start
            steps = steps + event if in_shift else event
        in_shift = is_shift
    return steps / STEPS_PER_SECOND


def pad_tokens(windows: list[list[int]], length: int = MAX_INPUT_TOKENS) -> np.ndarray:
    """Windows as a [windows, length] int64 array padded with PAD = 0."""
    out = np.zeros((len(windows), length), dtype=np.int64)
    for i, window in enumerate(windows):
        if len(window) > length:
            raise ValueError(f"window {i} has {len(window)} tokens, more than the {length} the model takes")
        out[i, : len(window)] = window
    return out
