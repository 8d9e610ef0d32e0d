"""`midisynth eval`: how close renders are to the SoundFont reference, beside baselines that bracket the scale.

For each MIDI file the reference is FluidSynth's render; each candidate is scaled to the reference's RMS and
compared over the song's length (plus release tail) with log-mel L1 and multi-resolution STFT distance:

- midisynth: the model at the given settings, with its vocoder;
- sine: pretty_midi's sine synthesis of the same notes;
- noise: white noise at the reference's level;
- lowpass: the reference low-passed at 1.5 kHz, 4th-order Butterworth response (a dull but correct rendering);
- vocoder: the reference's own features through the vocoder (the vocoder's ceiling).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pretty_midi
import torch

from midisynth.audio import log_mel
from midisynth.constants import HOP_LENGTH, SAMPLE_RATE
from midisynth.data.fluidsynth import render_midi
from midisynth.evaluation.metrics import log_mel_l1, mr_stft_distance, scale_to_rms
from midisynth.render.pipeline import Synthesizer
from midisynth.score.midi import read_midi

LOWPASS_HZ = 1500.0
LOWPASS_ORDER = 4
CANDIDATES = ("midisynth", "sine", "noise", "lowpass", "vocoder")


def _fit(audio: np.ndarray, samples: int) -> np.ndarray:
    out = np.zeros(samples, np.float32)
    out[: min(samples, audio.shape[0])] = audio[:samples]
    return out


def lowpass(audio: np.ndarray, cutoff_hz: float = LOWPASS_HZ, order: int = LOWPASS_ORDER) -> np.ndarray:
    """Zero-phase low-pass with a Butterworth magnitude response |H(f)| = 1 / sqrt(1 + (f / fc)^(2 order))."""
    freqs = np.fft.rfftfreq(audio.shape[0], 1.0 / SAMPLE_RATE)
    response = 1.0 / np.sqrt(1.0 + (freqs / cutoff_hz) ** (2 * order))
    return np.fft.irfft(np.fft.rfft(audio) * response, n=audio.shape[0]).astype(np.float32)


def evaluate_file(synth: Synthesizer, midi_path: Path, soundfont: Path, seed: int = 0) -> dict:
    """Scores of every candidate for one MIDI file, plus midisynth's real-time factor."""
    song = read_midi(midi_path)
    samples = synth.num_samples(song)
    reference = _fit(render_midi(midi_path, soundfont), samples)
    start = time.perf_counter()
    rendered = synth.render(song)
    render_seconds = time.perf_counter() - start
    candidates: dict[str, np.ndarray] = {
        "midisynth": rendered,
        "sine": pretty_midi.PrettyMIDI(str(midi_path)).synthesize(fs=SAMPLE_RATE).astype(np.float32),
        "noise": np.random.default_rng(seed).standard_normal(samples).astype(np.float32),
        "lowpass": lowpass(reference),
        "vocoder": synth.vocoder(log_mel(torch.from_numpy(reference)).numpy()),
    }
    scores = {}
    for name, audio in candidates.items():
        audio = scale_to_rms(_fit(audio, samples), reference)
        scores[name] = {"log_mel_l1": log_mel_l1(audio, reference),
                        "mr_stft": float(mr_stft_distance(audio, reference))}
    audio_seconds = samples / SAMPLE_RATE
    return {"file": str(midi_path), "seconds": audio_seconds, "frames": samples // HOP_LENGTH,
            "render_seconds": render_seconds, "real_time_factor": audio_seconds / render_seconds, "scores": scores}


def summarise(results: list[dict]) -> dict:
    """Mean of each metric per candidate over files, and the overall real-time factor."""
    summary = {name: {metric: float(np.mean([r["scores"][name][metric] for r in results]))
                      for metric in ("log_mel_l1", "mr_stft")} for name in CANDIDATES}
    total_audio = sum(r["seconds"] for r in results)
    total_render = sum(r["render_seconds"] for r in results)
    return {"files": len(results), "mean": summary, "real_time_factor": total_audio / total_render}


def evaluate(synth: Synthesizer, midi_files: list[Path], soundfont: Path,
             on_file: Callable[[Path], None] | None = None) -> dict:
    results = []
    for path in midi_files:
        results.append(evaluate_file(synth, path, soundfont))
        if on_file is not None:
            on_file(path)
    return {"summary": summarise(results), "files": results}
