"""Harmonic templates: where a note's partials lie in the log-mel spectrogram, computed from its pitch.

A pitched note of fundamental f0 puts partials at k * f0 (k = 1, 2, ... up to MEL_FMAX), with amplitudes falling as
1 / k; on a stiff string (pianos, plucked strings) the partials are stretched: partial k lies at
k * f0 * sqrt((1 + B k^2) / (1 + B)) for the string's inharmonicity coefficient B (`inharmonicity`). Each partial is
drawn as the magnitude response of the front end's STFT (periodic Hann, 640 samples, 1 024 points) to a sinusoid at
that frequency, so it lands in the mel bins, with the spread, that a real partial of that frequency would. A note's
level follows its velocity as SoundFont synthesizers apply it (proportional to velocity², see
`midisynth.model.note_inputs.velocity_gain`) and, for struck and plucked families, decays from the onset. The
partials model (`midisynth.model.partials`) gives each instrument its own spectral envelope over these templates.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from midisynth.audio import hann_window, mel_filterbank
from midisynth.constants import (
    FFT_SIZE,
    MEL_FMAX,
    N_MELS,
    SAMPLE_RATE,
)

# Decay time constant (seconds) of a note's level after its onset, by General MIDI family (program // 8): piano,
# chromatic percussion, guitar, bass, ethnic (mostly plucked) and percussive families fade while held; the others
# (organ, strings, ensemble, brass, reed, pipe, synths, effects) sustain.
FAMILY_DECAY_SECONDS = {0: 1.5, 1: 1.0, 3: 1.0, 4: 1.0, 13: 1.0, 14: 0.5}
# The plucked and struck programs of a sustaining family: pizzicato strings, harp and timpani (strings, 40-47).
PROGRAM_DECAY_SECONDS = {45: 0.5, 46: 1.0, 47: 1.0}


def decay_seconds(program: int) -> float | None:
    """Decay time constant (seconds) of a held note of GM `program`, None for one that sustains."""
    return PROGRAM_DECAY_SECONDS.get(program, FAMILY_DECAY_SECONDS.get(program // 8))


# Amplitude (full scale 1) of a velocity-90 note's fundamental: FluidR3's level, the median over the training renders
# of the reference log-mel minus the unit-level templates' log-mel, in their strongest bins (within 1 log unit of
# each frame's peak). The partials model's gains are relative to it.
NOTE_LEVEL = math.exp(-4.9)


# Inharmonicity by kind of string (`STRING_KINDS`): none (winds, bowed strings, organs, synths), acoustic piano and
# plucked strings. Measured on FluidR3's samples (the frequencies of partials 2 to 39 of single notes, 0.15 to 0.66 s
# after the onset): its grand piano's B doubles about every 8.7 semitones, 4e-5 at pitch 36, 3.2e-4 at 60 and 2e-3 at
# 84, as on real pianos; its guitars, basses, harp and harpsichord lie between 2e-5 and 2e-4 with no clear trend.
HARMONIC, PIANO, PLUCKED = range(3)
STRING_KINDS = 3
PIANO_B_AT_60, PIANO_B_DOUBLING_SEMITONES, PIANO_B_MAX = 3.2e-4, 8.7, 3e-3
PLUCKED_B = 6e-5
PLUCKED_PROGRAMS = frozenset([6, 7, 45, 46, *range(24, 40)])  # harpsichord, clavinet, pizzicato, harp, guitars, basses


def string_kind(program: int) -> int:
    """The kind of string (HARMONIC, PIANO or PLUCKED) of GM `program`: acoustic pianos (0-3) are PIANO."""
    if program < 4:
        return PIANO
    return PLUCKED if program in PLUCKED_PROGRAMS else HARMONIC


def inharmonicity(kind: int, pitch: int) -> float:
    """The inharmonicity coefficient B of a string of `kind` (`string_kind`) sounding MIDI `pitch`."""
    if kind == PIANO:
        return min(PIANO_B_AT_60 * 2.0 ** ((pitch - 60) / PIANO_B_DOUBLING_SEMITONES), PIANO_B_MAX)
    return PLUCKED_B if kind == PLUCKED else 0.0


def pitch_hz(pitch: int | np.ndarray) -> np.ndarray:
    """Equal-tempered frequency in Hz of MIDI pitch(es), A4 = 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - 69.0) / 12.0)


KERNEL_BINS = 8  # a partial is drawn over the FFT bins within this many of its frequency (the Hann window's
#                  sidelobes beyond are below -60 dB)
KERNEL_STEPS = 64  # resolution of the kernel table, per FFT bin


@functools.cache
def _window_kernel() -> tuple[np.ndarray, np.ndarray]:
    """(offsets, magnitudes), each [2 * KERNEL_BINS * KERNEL_STEPS + 1]: |STFT| of a unit-amplitude sinusoid at bin
    offsets -KERNEL_BINS .. +KERNEL_BINS from its frequency (in FFT bins), through the front end's window."""
    offsets = np.linspace(-KERNEL_BINS, KERNEL_BINS, 2 * KERNEL_BINS * KERNEL_STEPS + 1)
    window = hann_window(torch.device("cpu"), torch.float64).numpy()  # [640]
    # The window's spectrum at every 1 / KERNEL_STEPS of an FFT bin: one FFT KERNEL_STEPS times as long, zero-padded.
    spectrum = np.fft.fft(window, n=FFT_SIZE * KERNEL_STEPS)
    steps = np.arange(-KERNEL_BINS * KERNEL_STEPS, KERNEL_BINS * KERNEL_STEPS + 1)  # the offsets, in 1 / KERNEL_STEPS
    return offsets, np.abs(spectrum[steps % spectrum.shape[0]]) / 2  # a real sinusoid's energy splits between +f, -f


def _partial_magnitude(hz: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """|STFT| [513] of a sum of sinusoids at frequencies `hz` [partials] with `amplitude` [partials], their
    magnitudes added (partials far enough apart not to interfere)."""
    offsets, kernel = _window_kernel()
    centres = np.asarray(hz, dtype=np.float64) * FFT_SIZE / SAMPLE_RATE  # [partials], in FFT bins
    bins = np.ceil(centres - KERNEL_BINS)[:, None] + np.arange(2 * KERNEL_BINS + 1)  # [partials, 17] candidates
    reached = (bins >= 0) & (bins <= FFT_SIZE // 2) & (bins <= np.floor(centres + KERNEL_BINS)[:, None])
    values = np.asarray(amplitude, dtype=np.float64)[:, None] * np.interp(bins - centres[:, None], offsets, kernel)
    return np.bincount(bins[reached].astype(np.int64), weights=values[reached], minlength=FFT_SIZE // 2 + 1)


@functools.cache
def pitch_templates(fundamental_only: bool = False, kind: int = HARMONIC) -> np.ndarray:
    """[128 pitches, 128 mel bins] float32: mel magnitude of a unit-level note of each MIDI pitch on a string of
    `kind` (partials below MEL_FMAX, stretched by `inharmonicity`, partial k of amplitude 1 / k; `fundamental_only`:
    the partial k = 1 alone)."""
    mel = mel_filterbank().astype(np.float64)  # [513, 128]
    templates = np.zeros((128, N_MELS))
    for pitch, f0 in enumerate(pitch_hz(np.arange(128))):
        b = inharmonicity(kind, pitch)
        harmonics = np.arange(1, int(MEL_FMAX // f0) + 1, dtype=np.float64)[: 1 if fundamental_only else None]
        hz = harmonics * f0 * np.sqrt((1.0 + b * harmonics**2) / (1.0 + b))  # [partials]
        below = hz < MEL_FMAX  # a stretched partial may pass MEL_FMAX
        templates[pitch] = _partial_magnitude(hz[below], 1.0 / harmonics[below]) @ mel
    return templates.astype(np.float32)


@functools.cache
def voice_templates(fundamental_only: bool = False) -> np.ndarray:
    """[STRING_KINDS * 128 voices, 128 mel bins] float32: `pitch_templates` of each kind of string, stacked; voice
    kind * 128 + pitch."""
    return np.concatenate([pitch_templates(fundamental_only, kind) for kind in range(STRING_KINDS)])
