"""`midisynth eval`: how close renders are to the SoundFont reference, beside baselines that bracket the scale.

For each MIDI file the reference is FluidSynth's render; each candidate is scaled to the reference's RMS and
compared over the song's length (plus release tail):

- midisynth: the model at the given settings, with its vocoder;
- vocoder: the reference's own features through the vocoder (the vocoder's ceiling);
- sine: pretty_midi's sine synthesis of the same notes (none for a song without pitched notes);
- noise: white noise at the reference's level;
- lowpass: the reference low-passed at 1.5 kHz, 4th-order Butterworth response (a dull but correct rendering).

Measures (`midisynth.evaluation.metrics`): log-mel L1 and multi-resolution STFT distance; onset-strength correlation
(`onset_corr`, attacks where the reference's are, with its lag in 10 ms frames) and the level in the reference's
silent frames (`silence_db`, dB below the candidate's loudest frame; only for songs with such frames); transcription F1
(`midisynth.evaluation.transcription`: the notes basic-pitch finds in the audio against the MIDI's pitched notes), also of
the reference render itself, which bounds what the transcriber can do; ViSQOL MOS-LQO (`midisynth.evaluation.visqol_score`).
F1 is read beside the spectral distances, never alone: sine tones are easy to transcribe and sound nothing like
the reference. A file that fails (unreadable MIDI, FluidSynth error) is listed with its reason; the rest are
still scored.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import torch

from midisynth.audio import log_mel
from midisynth.constants import HOP_LENGTH, SAMPLE_RATE
from midisynth.data.fluidsynth import DEFAULT_SOUNDFONT, check_fluidsynth, render_midi
from midisynth.evaluation.metrics import (
    log_mel_l1,
    mr_stft_distance,
    onset_correlation,
    scale_to_rms,
    silence_level,
)
from midisynth.evaluation.transcription import Transcriber, note_f1, pitched_notes
from midisynth.evaluation.visqol_score import VisqolScorer
from midisynth.files import check_creatable, save_text_atomic
from midisynth.render.pipeline import RenderOptions, Synthesizer
from midisynth.score.midi import read_midi
from midisynth.score.midi_files import find_midi_files

LOWPASS_HZ = 1500.0
LOWPASS_ORDER = 4
CANDIDATES = ("midisynth", "vocoder", "sine", "noise", "lowpass")
REFERENCE = "reference"  # the reference render, scored by transcription F1 only
METRICS = ("log_mel_l1", "mr_stft", "onset_corr", "silence_db", "note_f1", "note_precision", "note_recall", "visqol")
REFERENCE_TAIL_SECONDS = 10.0  # FluidSynth is stopped this long past the render's length (see `render_midi`)


def _fit(audio: np.ndarray, samples: int) -> np.ndarray:
    out = np.zeros(samples, np.float32)
    out[: min(samples, audio.shape[0])] = audio[:samples]
    return out


def lowpass(audio: np.ndarray, cutoff_hz: float = LOWPASS_HZ, order: int = LOWPASS_ORDER) -> np.ndarray:
    """Zero-phase low-pass with a Butterworth magnitude response |H(f)| = 1 / sqrt(1 + (f / fc)^(2 order))."""
    freqs = np.fft.rfftfreq(audio.shape[0], 1.0 / SAMPLE_RATE)
    response = 1.0 / np.sqrt(1.0 + (freqs / cutoff_hz) ** (2 * order))
    return np.fft.irfft(np.fft.rfft(audio) * response, n=audio.shape[0]).astype(np.float32)


@dataclass
class Scorers:
    """The optional measures' models, loaded once: basic-pitch for transcription F1, ViSQOL. None: not measured."""

    transcriber: Transcriber | None = None
    visqol: VisqolScorer | None = None

    @classmethod
    def create(cls, transcription: bool = True, visqol: bool = True) -> Scorers:
        """Load the asked-for scorers; ImportError (naming what to install) if one is not installed."""
        return cls(Transcriber() if transcription else None, VisqolScorer() if visqol else None)


def evaluate_file(
    synth: Synthesizer, midi_path: Path, soundfont: Path, scorers: Scorers | None = None, seed: int = 0
) -> dict:
    """Scores of every candidate for one MIDI file, plus midisynth's real-time factor.

    The reference render is bounded at the render's length plus REFERENCE_TAIL_SECONDS; `reference_cut` says
    whether FluidSynth was stopped there (a song whose End of Track lies far past its last note).
    """
    scorers = scorers or Scorers()
    song = read_midi(midi_path)
    samples = synth.num_samples(song)
    bound_seconds = samples / SAMPLE_RATE + REFERENCE_TAIL_SECONDS
    rendered_reference = render_midi(midi_path, soundfont, max_seconds=bound_seconds)
    reference = _fit(rendered_reference, samples)
    start = time.perf_counter()
    rendered = synth.render(song)
    render_seconds = time.perf_counter() - start
    candidates: dict[str, np.ndarray] = {
        "midisynth": rendered,
        "vocoder": synth.vocoder(log_mel(torch.from_numpy(reference)).numpy()),
        "noise": np.random.default_rng(seed).standard_normal(samples).astype(np.float32),
        "lowpass": lowpass(reference),
    }
    notes = pitched_notes(song)
    if len(notes) > 0:  # pretty_midi synthesizes no drums: a drum-only song has no sine baseline (it would be NaN)
        candidates["sine"] = pretty_midi.PrettyMIDI(str(midi_path)).synthesize(fs=SAMPLE_RATE).astype(np.float32)
    transcriber = scorers.transcriber if len(notes) > 0 else None  # transcription F1 of songs with pitched notes
    scores: dict[str, dict[str, float]] = {}
    if transcriber is not None:
        scores[REFERENCE] = note_f1(notes, transcriber.transcribe(reference)).as_dict()
    for name, audio in candidates.items():
        audio = scale_to_rms(_fit(audio, samples), reference)
        scores[name] = {
            "log_mel_l1": log_mel_l1(audio, reference),
            "mr_stft": float(mr_stft_distance(audio, reference)),
        }
        correlation, lag = onset_correlation(audio, reference)
        if np.isfinite(correlation):
            scores[name].update(onset_corr=correlation, onset_lag=lag)
        silence = silence_level(audio, reference)
        if silence is not None:
            scores[name]["silence_db"] = silence
        if transcriber is not None:
            scores[name].update(note_f1(notes, transcriber.transcribe(audio)).as_dict())
        if scorers.visqol is not None:
            scores[name]["visqol"] = scorers.visqol.moslqo(audio, reference)
    audio_seconds = samples / SAMPLE_RATE
    return {
        "file": str(midi_path),
        "seconds": audio_seconds,
        "frames": samples // HOP_LENGTH,
        "pitched_notes": len(notes),
        "reference_seconds": rendered_reference.shape[0] / SAMPLE_RATE,
        "reference_cut": rendered_reference.shape[0] >= int(bound_seconds * SAMPLE_RATE),
        "render_seconds": render_seconds,
        "real_time_factor": audio_seconds / render_seconds,
        "scores": scores,
    }


def summarise(results: list[dict]) -> dict:
    """Per candidate, the mean of each metric over the files that have it; `worst_silence_db`: each candidate's
    loudest level in the reference's silent frames over the files (the bar holds on every song, not on average);
    midisynth's overall real-time factor; and `f1_ratio`: each candidate's mean note F1 over the reference
    render's, on the same files."""
    summary: dict[str, dict[str, float]] = {}
    for name in (REFERENCE, *CANDIDATES):
        values = {
            metric: [r["scores"][name][metric] for r in results if metric in r["scores"].get(name, {})]
            for metric in METRICS
        }
        if any(values.values()):
            summary[name] = {metric: float(np.mean(v)) for metric, v in values.items() if v}
    reference_f1 = summary.get(REFERENCE, {}).get("note_f1")
    ratios = {
        name: summary[name]["note_f1"] / reference_f1
        for name in CANDIDATES
        if reference_f1 and "note_f1" in summary.get(name, {})
    }
    silences = {
        name: [r["scores"][name]["silence_db"] for r in results if "silence_db" in r["scores"].get(name, {})]
        for name in CANDIDATES
    }
    worst_silence = {name: max(values) for name, values in silences.items() if values}
    total_audio = sum(r["seconds"] for r in results)
    total_render = sum(r["render_seconds"] for r in results)
    return {
        "files": len(results),
        "mean": summary,
        "f1_ratio": ratios,
        "worst_silence_db": worst_silence,
        "real_time_factor": total_audio / total_render if total_render else None,
    }


TABLE_COLUMNS = (  # (heading, width): the columns of `format_table`
    ("log-mel L1", 10),
    ("MR-STFT", 8),
    ("onset r", 8),
    ("silence dB", 10),
    ("note F1", 8),
    ("F1/ref", 7),
    ("ViSQOL", 7),
)


def format_table(summary: dict) -> str:
    """`summarise`'s means as a text table, a row per candidate (the reference's only for note F1); the silence
    column is the worst song's level (`worst_silence_db`); then midisynth's real-time factor."""
    lines = [
        f"{'candidate':<10}"
        + "".join(f" {heading:>{width}}" for heading, width in TABLE_COLUMNS)
        + f"   ({summary['files']} files)"
    ]
    for name in (REFERENCE, *CANDIDATES):
        scores = summary["mean"].get(name, {})
        ratio = 1.0 if name == REFERENCE and "note_f1" in scores else summary["f1_ratio"].get(name)
        cells = [
            scores.get("log_mel_l1"),
            scores.get("mr_stft"),
            scores.get("onset_corr"),
            summary["worst_silence_db"].get(name),
            scores.get("note_f1"),
            ratio,
            scores.get("visqol"),
        ]
        lines.append(
            f"{name:<10}"
            + "".join(
                f" {'-' if v is None else f'{v:.3f}':>{width}}"
                for v, (_, width) in zip(cells, TABLE_COLUMNS, strict=True)
            )
        )
    if summary["real_time_factor"] is not None:
        lines.append(f"real-time factor of midisynth: {summary['real_time_factor']:.2f}x")
    return "\n".join(lines)


def strict_json(report: dict) -> str:
    """`report` as strict JSON text (indented by 1), each number that is not finite (NaN, infinity) written as
    null: `json.loads` in other languages and tools reject bare NaN and Infinity."""
    return json.dumps(_finite_or_none(report), indent=1, allow_nan=False)


def _finite_or_none(value):
    """`value` (dicts, lists, numbers, strings) with each float that is not finite replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    return value


def evaluation_files(
    midi_dir: Path, soundfont: Path = DEFAULT_SOUNDFONT, json_out: Path | None = None, limit: int | None = None
) -> list[Path]:
    """The MIDI files under `midi_dir` (the first `limit`) that `evaluate` scores, with what it needs checked before
    anything loads: ValueError for a folder that is not one or holds no MIDI files, OutputError for a `json_out` that
    cannot be written, FileNotFoundError or ValueError for a missing fluidsynth program or SoundFont."""
    if not Path(midi_dir).is_dir():
        raise ValueError(f"{midi_dir}: not a directory")
    files = find_midi_files(midi_dir)[:limit]
    if not files:
        raise ValueError(f"{midi_dir}: no MIDI files")
    if json_out is not None:
        check_creatable(json_out)
    check_fluidsynth(soundfont)
    return files


def evaluate(
    synth: Synthesizer,
    midi_files: list[Path],
    soundfont: Path = DEFAULT_SOUNDFONT,
    scorers: Scorers | None = None,
    on_file: Callable[[Path, str | None, dict], None] | None = None,
    json_out: Path | None = None,
) -> dict:
    """Score every file; {"summary", "files": per-file results, "failed": [{"file", "error"}]}.

    A file that cannot be scored (unreadable MIDI, FluidSynth failure or time-out, ...) is listed under "failed"
    and the others are still scored. on_file(path, error or None, report so far) is called after each file; the
    report so far is also saved to `json_out` (`strict_json`, OutputError if that fails), so that a long evaluation
    keeps what it has scored if it is stopped. FileNotFoundError or ValueError up front for a missing fluidsynth
    program, a missing SoundFont or a file that is not one.
    """
    check_fluidsynth(soundfont)
    results, failed = [], []
    for path in midi_files:
        try:
            results.append(evaluate_file(synth, path, soundfont, scorers))
            error = None
        except Exception as err:  # noqa: BLE001  one file's failure of any kind must not lose the other scores
            error = str(err) or type(err).__name__
            failed.append({"file": str(path), "error": error})
        report = {"summary": summarise(results), "files": results, "failed": failed}
        if on_file is not None:
            on_file(path, error, report)
        if json_out is not None:
            save_text_atomic(json_out, strict_json(report))
    return {"summary": summarise(results), "files": results, "failed": failed}


def evaluate_model(
    model: str | Path | None,
    midi_dir: Path,
    soundfont: Path = DEFAULT_SOUNDFONT,
    device: str = "auto",
    vocoder: str | None = None,
    options: RenderOptions | None = None,
    limit: int | None = None,
    transcription: bool = True,
    visqol: bool = True,
    on_file: Callable[[Path, str | None, dict], None] | None = None,
) -> dict:
    """Evaluate a model file (e.g. a training run's model.safetensors; None: the bundled model) on the MIDI files
    under `midi_dir`, as `midisynth eval` does; returns `evaluate`'s report.

    Example: `evaluate_model("runs/x/model.safetensors", "data/fluidr3/heldout_midi", visqol=False)["summary"]`.
    """
    check_fluidsynth(soundfont)
    scorers = Scorers.create(transcription, visqol)
    synth = Synthesizer.from_pretrained(model, device=device, vocoder=vocoder, options=options)
    return evaluate(synth, find_midi_files(midi_dir)[:limit], soundfont, scorers, on_file)
