"""MT3-style event tokens of a song, cut into 5.12 s windows, as the reference `MidiProcessor` makes them.

Vocabulary (ids before the +3 offset of the special tokens PAD=0, EOS=1, UNK=2):

    shift     0..1000   time since the window start, in 10 ms steps (run-length, absolute)
    pitch  1001..1128   MIDI pitch of a pitched note
    velocity 1129..1130 0 = note off, 1 = note on
    tie       1131      ends the tie section (notes still sounding at the window start)
    program 1132..1259  Slakh class program of the following pitched notes
    drum   1260..1387   drum note (pitch on channel 10)

A window is: tie section (`program, pitch` per sounding note, then `tie`), then its events with shifts, trailing
shifts dropped, repeated program/velocity tokens dropped, +3, EOS.
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
from midisynth.midi import Song

MAX_SHIFT = MAX_SHIFT_SECONDS * STEPS_PER_SECOND  # 1000 steps
SHIFT_OFFSET = 0
PITCH_OFFSET = SHIFT_OFFSET + MAX_SHIFT + 1  # 1001
VELOCITY_OFFSET = PITCH_OFFSET + 128  # 1129
TIE_ID = VELOCITY_OFFSET + 2  # 1131
PROGRAM_OFFSET = TIE_ID + 1  # 1132
DRUM_OFFSET = PROGRAM_OFFSET + 128  # 1260
NUM_EVENT_IDS = DRUM_OFFSET + 128  # 1388
VOCAB_SIZE = NUM_EVENT_IDS + NUM_SPECIAL_TOKENS  # 1391

# The 34 Slakh instrument classes, each named by its first General MIDI program.
SLAKH_PROGRAMS = (0, 4, 8, 16, 24, 26, 29, 32, 33, 40, 41, 42, 43, 46, 47, 48, 50, 52, 55, 56, 57, 58, 60, 61, 64,
                  66, 67, 68, 69, 70, 71, 73, 80, 88)


def slakh_program(program: int) -> int:
    """The largest Slakh class program not above `program`."""
    return max(p for p in SLAKH_PROGRAMS if p <= program)


def _frame_times(duration: float) -> np.ndarray:
    """Times (s) of the reference's audio frames: a zero signal of int(duration * 16000) samples, padded by 1-320."""
    samples = int(duration * SAMPLE_RATE)
    frames = (samples + HOP_LENGTH - samples % HOP_LENGTH) // HOP_LENGTH
    return np.arange(frames) / FRAME_RATE


def num_windows(duration: float) -> int:
    """Windows the tokenizer makes for a song of `duration` seconds."""
    return math.ceil(len(_frame_times(duration)) / WINDOW_FRAMES)


def _note_events(song: Song) -> tuple[list[float], list[tuple[int, int, int, bool]]]:
    """(time s, (pitch, velocity bin, Slakh program, is_drum)): offsets of pitched notes first, then all onsets."""
    notes = sorted(song.notes, key=lambda n: (n.is_drum, slakh_program(n.program) if not n.is_drum else n.program,
                                              n.pitch))
    times = [n.end for n in notes if not n.is_drum] + [n.start for n in notes]
    values = [(n.pitch, 0, slakh_program(n.program), False) for n in notes if not n.is_drum]
    values += [(n.pitch, 1 if n.velocity > 0 else 0, n.program if n.is_drum else slakh_program(n.program), n.is_drum)
               for n in notes]
    return times, values


def _event_ids(pitch: int, velocity: int, program: int, is_drum: bool) -> list[int]:
    if is_drum:
        return [VELOCITY_OFFSET + velocity, DRUM_OFFSET + pitch]
    return [PROGRAM_OFFSET + program, VELOCITY_OFFSET + velocity, PITCH_OFFSET + pitch]


def _tie_section(active: dict[tuple[int, int], int]) -> list[int]:
    ids = []
    for pitch, program in sorted(active, key=lambda key: (key[1], key[0])):
        if active[(pitch, program)]:
            ids += [PROGRAM_OFFSET + program, PITCH_OFFSET + pitch]
    return ids + [TIE_ID]


def _run_length(ids: list[int]) -> list[int]:
    """Absolute shifts since the window start before each event; drop repeated program/velocity and trailing shifts."""
    out: list[int] = []
    pending = False
    total_steps = 0
    last_velocity = last_program = None
    for token in ids:
        if token <= MAX_SHIFT:  # a one-step shift
            total_steps += 1
            pending = True
            continue
        if VELOCITY_OFFSET <= token < TIE_ID:
            if token == last_velocity:
                continue
            last_velocity = token
        elif PROGRAM_OFFSET <= token < DRUM_OFFSET:
            if token == last_program:
                continue
            last_program = token
        if pending:
            remaining = total_steps
            while remaining > 0:
                step = min(MAX_SHIFT, remaining)
                out.append(SHIFT_OFFSET + step)
                remaining -= step
            pending = False
        out.append(token)
    return out


def tokenize(song: Song) -> list[list[int]]:
    """Token ids per 5.12 s window (with the +3 special-token offset, ending with EOS, without padding)."""
    frame_times = _frame_times(song.duration)
    times, values = _note_events(song)
    order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
    events: list[int] = []  # one-step shifts (id 1) and event ids
    frame_starts: list[int] = []  # index into `events` where each frame's events start
    frame_states: list[int] = []  # per frame: how many notes events came before its tie-section snapshot
    snapshots: dict[int, list[int]] = {}  # events processed -> tie section just before the next one
    active: dict[tuple[int, int], int] = {}  # (pitch, program) -> velocity bin of its latest event
    step = processed = current_start = state_index = 0

    def shift() -> None:
        nonlocal step
        events.append(SHIFT_OFFSET + 1)
        step += 1
        while len(frame_starts) < len(frame_times) and frame_times[len(frame_starts)] < step / STEPS_PER_SECOND:
            frame_starts.append(current_start)
            frame_states.append(state_index)

    for i in order:
        event_step = round(times[i] * STEPS_PER_SECOND)
        while event_step > step:
            shift()
            current_start, state_index = len(events), processed
        if processed == state_index and processed not in snapshots:
            snapshots[processed] = _tie_section(active)
        pitch, velocity, program, is_drum = values[i]
        if not is_drum:
            active[(pitch, program)] = velocity
        events.extend(_event_ids(pitch, velocity, program, is_drum))
        processed += 1
    # Shifts to the last frame; as in the reference, the tie-section index is not advanced here.
    while step / STEPS_PER_SECOND <= frame_times[-1]:
        shift()
        current_start = len(events)

    windows = []
    for first in range(0, len(frame_times), WINDOW_FRAMES):
        last = min(first + WINDOW_FRAMES, len(frame_times))
        end = frame_starts[last] if last < len(frame_times) else len(events)
        ties = snapshots.get(frame_states[first]) or _tie_section(active)
        ids = _run_length(ties + events[frame_starts[first] : end])
        windows.append([token + NUM_SPECIAL_TOKENS for token in ids] + [EOS_ID])
    return windows


def fit_window(window: list[int], length: int = MAX_INPUT_TOKENS) -> list[int]:
    """A window cut to at most `length` tokens, still ending with EOS (the notes encoder takes `length`)."""
    if len(window) <= length:
        return window
    warnings.warn(f"a 5.12 s window has {len(window)} tokens; keeping the first {length} (the model's limit)",
                  stacklevel=2)
    return window[: length - 1] + [EOS_ID]


def pad_tokens(windows: list[list[int]], length: int = MAX_INPUT_TOKENS) -> np.ndarray:
    """Windows as a [windows, length] int64 array padded with PAD = 0."""
    out = np.zeros((len(windows), length), dtype=np.int64)
    for i, window in enumerate(windows):
        if len(window) > length:
            raise ValueError(f"window {i} has {len(window)} tokens, more than the {length} the model takes")
        out[i, : len(window)] = window
    return out
