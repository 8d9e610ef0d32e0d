"""Transcription F1: how many of a song's notes an automatic transcriber finds in a render of it.

The measure of the Spectrogram Diffusion paper (which transcribed with MT3), here with Spotify's basic-pitch
0.4.0 (its ONNX model ships in the wheel and runs on onnxruntime) at its default thresholds:

- reference notes: the MIDI's pitched notes (drums left out), onsets and pitches as the file has them;
- score: mir_eval's onset-only note F1 (an estimated note matches a reference note of the same pitch, within
  50 cents, whose onset is within 50 ms; offsets are ignored, each note matches at most once).

basic-pitch and mir_eval belong to the `eval` extra; basic-pitch itself is installed with `--no-deps`
(`make eval-install`), as its metadata asks for TensorFlow, which the ONNX model does not need.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from midisynth.constants import SAMPLE_RATE
from midisynth.score.midi import Song

ONSET_TOLERANCE_S = 0.05  # seconds between a found onset and the reference's
PITCH_TOLERANCE_CENTS = 50.0
MIN_SCORED_DURATION_S = 1e-3  # mir_eval needs positive note lengths; offsets are not scored, so a 0-length note
# keeps its onset and gets this length
INSTALL_HINT = "pip install 'midisynth[eval]' && pip install --no-deps basic-pitch==0.4.0 (or: make eval-install)"


@dataclass(frozen=True)
class Notes:
    """A note list: onset and offset times in seconds [notes, 2] and MIDI pitches [notes]."""

    intervals: np.ndarray  # [notes, 2] seconds
    pitches: np.ndarray  # [notes] MIDI note numbers

    @classmethod
    def from_events(cls, events: list[tuple[float, float, int]]) -> Notes:
        """Notes from (onset s, offset s, MIDI pitch) tuples."""
        intervals = np.array([(start, end) for start, end, _ in events], np.float64).reshape(-1, 2)
        return cls(intervals, np.array([pitch for _, _, pitch in events], np.int64))

    def __len__(self) -> int:
        return int(self.pitches.shape[0])


@dataclass(frozen=True)
class NoteScore:
    """Onset-only note precision, recall and F1 (0-1) of an estimate against the reference notes."""

    precision: float
    recall: float
    f1: float

    def as_dict(self) -> dict[str, float]:
        return {"note_f1": self.f1, "note_precision": self.precision, "note_recall": self.recall}


def pitched_notes(song: Song) -> Notes:
    """The song's notes without drums: its onsets and pitches (the sustain pedal moves offsets only)."""
    return Notes.from_events([(n.start, n.end, n.pitch) for n in song.notes if not n.is_drum])


def note_f1(reference: Notes, estimate: Notes) -> NoteScore:
    """mir_eval onset-only note scores (50 ms onsets, 50 cents pitch, offsets ignored).

    Raises ValueError for an empty reference (a song without pitched notes has no F1).
    """
    import mir_eval

    if len(reference) == 0:
        raise ValueError("no pitched notes to score against")
    if len(estimate) == 0:
        return NoteScore(0.0, 0.0, 0.0)
    with _quiet():
        precision, recall, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
            _scorable(reference.intervals),
            mir_eval.util.midi_to_hz(reference.pitches),
            _scorable(estimate.intervals),
            mir_eval.util.midi_to_hz(estimate.pitches),
            onset_tolerance=ONSET_TOLERANCE_S,
            pitch_tolerance=PITCH_TOLERANCE_CENTS,
            offset_ratio=None,
        )
    return NoteScore(float(precision), float(recall), float(f1))


def _scorable(intervals: np.ndarray) -> np.ndarray:
    """Intervals with every length at least MIN_SCORED_DURATION_S (onsets unchanged)."""
    return np.stack([intervals[:, 0], np.maximum(intervals[:, 1], intervals[:, 0] + MIN_SCORED_DURATION_S)], axis=1)


class Transcriber:
    """basic-pitch's ICASSP 2022 model (ONNX) at its default thresholds, loaded once.

    Raises ImportError naming the install command when basic-pitch or onnxruntime is missing.
    """

    def __init__(self):
        try:
            with _quiet():
                import onnxruntime  # noqa: F401  (basic-pitch falls back silently to no model without it)
                from basic_pitch import FilenameSuffix, build_icassp_2022_model_path
                from basic_pitch.inference import Model, predict
        except ImportError as err:
            raise ImportError(
                f"transcription F1 needs basic-pitch and onnxruntime ({err.name} is missing): {INSTALL_HINT}"
            ) from None
        self._predict = predict
        with _quiet():
            self._model = Model(build_icassp_2022_model_path(FilenameSuffix.onnx))

    def transcribe(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Notes:
        """Notes found in mono float audio [samples] at `sample_rate` Hz.

        basic-pitch reads a file (resampling it to 22.05 kHz itself): the audio goes through a float WAV.
        """
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "audio.wav"
            sf.write(path, np.asarray(audio, np.float32), sample_rate, subtype="FLOAT")
            with _quiet():
                _, _, events = self._predict(path, self._model)
        return Notes.from_events([(start, end, pitch) for start, end, pitch, *_ in events])


@contextlib.contextmanager
def _quiet():
    """Silence basic-pitch's prints ("Predicting MIDI for ..."), its warnings about absent back ends (TensorFlow,
    CoreML, TFLite) and mir_eval's empty-list warnings."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
