"""`midisynth eval`: note scoring, the summary, the optional scorers (basic-pitch, ViSQOL) and what a bad input
or a run-away reference render does to an evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest
from typer.testing import CliRunner

from midisynth.cli import app
from midisynth.constants import SAMPLE_RATE
from midisynth.data.fluidsynth import DEFAULT_SOUNDFONT, check_soundfont, render_midi
from midisynth.evaluation.evaluate import (
    CANDIDATES,
    REFERENCE,
    REFERENCE_TAIL_SECONDS,
    Scorers,
    evaluate,
    evaluate_model,
    summarise,
)
from midisynth.evaluation.transcription import Notes, note_f1, pitched_notes
from midisynth.render.pipeline import RenderOptions, Synthesizer
from midisynth.score.midi import read_midi
from tests.conftest import write_midi

needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not DEFAULT_SOUNDFONT.exists(),
    reason="needs the fluidsynth program and the FluidR3 GM SoundFont (apt-get install fluidsynth fluid-soundfont-gm)",
)
QUICK = ["--sampler", "ddim", "--steps", "1", "--guidance", "1", "--precision", "fp32", "--device", "cpu"]
NO_SCORERS = ["--no-transcription", "--no-visqol"]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def tiny_synth(model_path: Path) -> Synthesizer:
    options = RenderOptions(sampler="ddim", steps=1, guidance=1.0, precision="fp32")
    return Synthesizer.from_pretrained(str(model_path), device="cpu", vocoder="griffin-lim", options=options)


def endless_midi(path: Path, tail_seconds: float) -> Path:
    """One 0.5 s piano note, then `tail_seconds` of nothing before the End of Track (120 bpm, 480 ticks a beat):
    FluidSynth renders up to the End of Track, midisynth's song ends with the note."""
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack(
        [
            mido.Message("note_on", note=60, velocity=100, time=0),
            mido.Message("note_off", note=60, velocity=0, time=480),
            mido.MetaMessage("end_of_track", time=int(tail_seconds * 2 * 480)),
        ]
    )
    midi.tracks.append(track)
    midi.save(str(path))
    return path


# -- note scoring ------------------------------------------------------------------------------------------------
def test_note_f1_matches_onsets_within_50_ms_at_the_same_pitch():
    reference = Notes.from_events([(0.0, 0.5, 60), (1.0, 1.5, 62), (2.0, 2.5, 64), (3.0, 3.5, 65)])
    estimate = Notes.from_events(
        [
            (0.0, 0.5, 60),  # exact
            (1.04, 1.2, 62),  # 40 ms late, offset far off: a match (offsets are not scored)
            (2.06, 2.5, 64),  # 60 ms late: no match
            (3.0, 3.5, 66),  # a semitone off: no match
            (4.0, 4.5, 67),  # not in the reference
        ]
    )
    score = note_f1(reference, estimate)
    assert score.precision == pytest.approx(2 / 5)
    assert score.recall == pytest.approx(2 / 4)
    assert score.f1 == pytest.approx(2 * 0.4 * 0.5 / 0.9)


def test_note_f1_counts_each_note_once_and_scores_zero_length_notes():
    reference = Notes.from_events([(0.0, 0.0, 60), (0.0, 1.0, 64)])  # a 0-length note keeps its onset
    doubled = Notes.from_events([(0.0, 0.3, 60), (0.01, 0.3, 60), (0.0, 0.3, 64)])
    assert note_f1(reference, doubled).as_dict() == pytest.approx(
        {"note_f1": 0.8, "note_precision": 2 / 3, "note_recall": 1.0}
    )
    assert note_f1(reference, Notes.from_events([])).f1 == 0.0
    with pytest.raises(ValueError, match="no pitched notes"):
        note_f1(Notes.from_events([]), doubled)


def test_reference_notes_are_the_pitched_notes_with_their_onsets(tmp_path):
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    piano, drums = pretty_midi.Instrument(program=0), pretty_midi.Instrument(program=0, is_drum=True)
    piano.notes = [pretty_midi.Note(90, 60, 0.25, 0.5), pretty_midi.Note(90, 67, 1.0, 1.25)]
    piano.control_changes = [pretty_midi.ControlChange(64, 127, 0.0), pretty_midi.ControlChange(64, 0, 2.0)]
    drums.notes = [pretty_midi.Note(100, 36, 0.0, 0.1)]
    pm.instruments += [piano, drums]
    pm.write(str(tmp_path / "song.mid"))
    notes = pitched_notes(read_midi(tmp_path / "song.mid"))
    assert notes.pitches.tolist() == [60, 67]
    np.testing.assert_allclose(notes.intervals[:, 0], [0.25, 1.0])  # the pedal holds them on, onsets stay


def test_summary_means_each_metric_over_the_files_that_have_it_and_the_f1_ratio():
    def result(seconds, render_seconds, reference_f1, midisynth):
        return {
            "seconds": seconds,
            "render_seconds": render_seconds,
            "scores": {REFERENCE: {"note_f1": reference_f1}, "midisynth": midisynth},
        }

    results = [
        result(10.0, 2.0, 0.8, {"log_mel_l1": 1.0, "note_f1": 0.4, "visqol": 3.0}),
        result(30.0, 3.0, 0.6, {"log_mel_l1": 2.0, "note_f1": 0.2}),
    ]
    summary = summarise(results)
    assert summary["mean"][REFERENCE] == pytest.approx({"note_f1": 0.7})
    assert summary["mean"]["midisynth"] == pytest.approx({"log_mel_l1": 1.5, "note_f1": 0.3, "visqol": 3.0})
    assert summary["f1_ratio"] == pytest.approx({"midisynth": 0.3 / 0.7})
    assert summary["real_time_factor"] == pytest.approx(40.0 / 5.0)
    assert "sine" not in summary["mean"]


class KnownNotes:
    """Stands in for basic-pitch: 'finds' a fixed note list in any audio, and keeps what it was given."""

    def __init__(self, notes: Notes):
        self.notes, self.heard = notes, []

    def transcribe(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Notes:
        self.heard.append(audio)
        return self.notes


@pytest.mark.slow  # a whole evaluation with transcription
@needs_fluidsynth
def test_every_render_is_transcribed_and_scored_against_the_midi(tmp_path, tiny_model_path):
    song = write_midi(tmp_path / "song.mid", [(60, 0.0, 0.5, 100), (64, 0.5, 1.0, 100), (67, 1.0, 1.5, 100)])
    transcriber = KnownNotes(Notes.from_events([(0.0, 0.4, 60), (0.52, 0.9, 64)]))  # 2 of 3 notes
    report = evaluate(tiny_synth(tiny_model_path), [song], scorers=Scorers(transcriber=transcriber))
    (result,) = report["files"]
    assert set(result["scores"]) == {REFERENCE, *CANDIDATES}
    for scores in result["scores"].values():
        assert scores["note_f1"] == pytest.approx(0.8) and scores["note_recall"] == pytest.approx(2 / 3)
    assert len(transcriber.heard) == 1 + len(CANDIDATES)
    assert all(audio.shape == (result["frames"] * 320,) for audio in transcriber.heard)
    reference = render_midi(song, DEFAULT_SOUNDFONT)[: result["frames"] * 320]
    np.testing.assert_array_equal(transcriber.heard[0][: reference.shape[0]], reference)  # the reference first
    assert report["summary"]["f1_ratio"] == pytest.approx(dict.fromkeys(CANDIDATES, 1.0))


@pytest.mark.slow  # a whole evaluation
@needs_fluidsynth
def test_a_model_file_is_evaluated_on_a_folder_without_the_cli(tmp_path, tiny_model_path):
    folder = tmp_path / "midi"
    (folder / "sub").mkdir(parents=True)
    write_midi(folder / "sub" / "a.mid", [(60, 0.0, 1.0, 100)])
    write_midi(folder / "b.mid", [(64, 0.0, 1.0, 100)])
    options = RenderOptions(sampler="ddim", steps=1, guidance=1.0, precision="fp32")
    seen = []
    report = evaluate_model(
        tiny_model_path,
        folder,
        device="cpu",
        options=options,
        limit=1,
        transcription=False,
        visqol=False,
        on_file=lambda path, error, so_far: seen.append((path.name, error)),
    )
    assert seen == [("b.mid", None)] and report["failed"] == []
    assert set(report["summary"]["mean"]) == set(CANDIDATES)
    assert report["summary"]["mean"]["vocoder"]["log_mel_l1"] < report["summary"]["mean"]["noise"]["log_mel_l1"]


# -- the real scorers (the eval extra) ---------------------------------------------------------------------------
@needs_fluidsynth
def test_basic_pitch_finds_the_notes_of_a_fluidsynth_render(tmp_path):
    pytest.importorskip("basic_pitch", reason="transcription F1 needs basic-pitch (make eval-install)")
    from midisynth.evaluation.transcription import Transcriber

    melody = write_midi(
        tmp_path / "melody.mid", [(60, 0.0, 0.4, 100), (64, 0.5, 0.9, 100), (67, 1.0, 1.4, 100), (72, 1.5, 2.5, 100)]
    )
    reference = pitched_notes(read_midi(melody))
    transcriber = Transcriber()
    rendered = render_midi(melody, DEFAULT_SOUNDFONT)
    assert note_f1(reference, transcriber.transcribe(rendered)).recall == 1.0
    noise = np.random.default_rng(0).standard_normal(rendered.shape[0]).astype(np.float32) * 0.1
    assert note_f1(reference, transcriber.transcribe(noise)).f1 < 0.3


@needs_fluidsynth
def test_visqol_scores_a_render_against_itself_near_the_top_and_a_noisy_copy_lower(tmp_path):
    pytest.importorskip("visqol", reason="ViSQOL needs visqol-python (pip install 'midisynth[eval]')")
    from midisynth.evaluation.visqol_score import VisqolScorer

    melody = write_midi(tmp_path / "melody.mid", [(60, 0.0, 0.4, 100), (64, 0.5, 0.9, 100), (72, 1.0, 2.0, 100)])
    rendered = render_midi(melody, DEFAULT_SOUNDFONT)
    scorer = VisqolScorer()
    noisy = rendered + 0.05 * np.random.default_rng(0).standard_normal(rendered.shape[0]).astype(np.float32)
    assert scorer.moslqo(rendered, rendered) > 4.6
    assert scorer.moslqo(noisy, rendered) < scorer.moslqo(rendered, rendered) - 0.3
    assert scorer.moslqo(0.25 * rendered, rendered) == pytest.approx(scorer.moslqo(rendered, rendered), abs=1e-6)


# -- bad inputs and run-away renders ------------------------------------------------------------------------------
@needs_fluidsynth
def test_eval_scores_the_readable_files_lists_the_bad_one_and_writes_its_json(tmp_path, tiny_model_path):
    folder = tmp_path / "midi"
    folder.mkdir()
    write_midi(folder / "a.mid", [(60, 0.0, 1.0, 100)])
    (folder / "b.mid").write_bytes(b"not MIDI at all")
    out = tmp_path / "eval.json"
    result = run("eval", str(folder), "--json", str(out), "--model", str(tiny_model_path), *QUICK, *NO_SCORERS)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"midisynth: {folder / 'b.mid'}: not a MIDI file" in result.output
    report = json.loads(out.read_text())
    assert [Path(r["file"]).name for r in report["files"]] == ["a.mid"]
    assert [Path(f["file"]).name for f in report["failed"]] == ["b.mid"]
    assert report["summary"]["files"] == 1 and report["summary"]["mean"]["midisynth"]["log_mel_l1"] > 0


@pytest.mark.parametrize(
    "make_json_path, reason",
    [
        (lambda tmp: tmp / "missing" / "eval.json", "does not exist"),
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: tmp / "a.mid" / "eval.json", "is a file"),
    ],
)
def test_eval_refuses_an_unwritable_json_path_before_evaluating(tmp_path, make_json_path, reason):
    write_midi(tmp_path / "a.mid", [(60, 0.0, 1.0, 100)])
    result = run(
        "eval",
        str(tmp_path),
        "--json",
        str(make_json_path(tmp_path)),
        "--model",
        "no-such-model.safetensors",
        *NO_SCORERS,
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith("midisynth: ") and reason in result.output and "evaluated" not in result.output


@pytest.mark.parametrize(
    "soundfont_bytes, reason",
    [
        (None, "no such SoundFont"),
        (b"RIFF\x04\x00\x00\x00WAVEfmt ", "not a SoundFont"),
        (b"just text\n", "not a SoundFont"),
    ],
)
def test_eval_refuses_a_missing_soundfont_or_a_file_that_is_not_one(tmp_path, soundfont_bytes, reason):
    write_midi(tmp_path / "a.mid", [(60, 0.0, 1.0, 100)])
    soundfont = tmp_path / "font.sf2"
    if soundfont_bytes is not None:
        soundfont.write_bytes(soundfont_bytes)
    result = run(
        "eval", str(tmp_path), "--soundfont", str(soundfont), "--model", "no-such-model.safetensors", *NO_SCORERS
    )
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"midisynth: {soundfont}: {reason}")


@needs_fluidsynth
def test_a_real_soundfont_passes_the_header_check():
    check_soundfont(DEFAULT_SOUNDFONT)


@needs_fluidsynth
def test_fluidsynth_is_stopped_at_max_seconds(tmp_path):
    midi = endless_midi(tmp_path / "endless.mid", tail_seconds=600.0)
    audio = render_midi(midi, DEFAULT_SOUNDFONT, max_seconds=3.0)
    assert audio.shape == (3 * SAMPLE_RATE,)
    assert np.abs(audio[: SAMPLE_RATE // 2]).max() > 1e-2  # the note is there


@pytest.mark.slow  # a whole evaluation
@needs_fluidsynth
def test_eval_bounds_the_reference_render_by_the_song(tmp_path, tiny_model_path):
    midi = endless_midi(tmp_path / "endless.mid", tail_seconds=600.0)
    synth = tiny_synth(tiny_model_path)
    report = evaluate(synth, [midi])
    (result,) = report["files"]
    bound = synth.num_samples(read_midi(midi)) / SAMPLE_RATE + REFERENCE_TAIL_SECONDS
    assert result["reference_cut"] and result["reference_seconds"] == pytest.approx(bound, abs=1 / SAMPLE_RATE)
    assert report["failed"] == []


@needs_fluidsynth
def test_files_named_like_options_are_given_to_fluidsynth_as_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_midi(tmp_path / "-x.mid", [(60, 0.0, 0.5, 100)])
    (tmp_path / "-font.sf2").symlink_to(DEFAULT_SOUNDFONT)
    audio = render_midi(Path("-x.mid"), Path("-font.sf2"))
    assert np.abs(audio[: SAMPLE_RATE // 2]).max() > 1e-2


def test_eval_without_fluidsynth_says_so_before_loading_the_model(tmp_path, monkeypatch, tiny_model_path):
    write_midi(tmp_path / "a.mid", [(60, 0.0, 1.0, 100)])
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    result = run("eval", str(tmp_path), "--model", "no-such-model.safetensors", *NO_SCORERS)
    assert result.exit_code == 2, result.output
    assert result.output == (
        "midisynth: the fluidsynth program is not installed (Debian: apt-get install fluidsynth)\n"
    )
    with pytest.raises(FileNotFoundError, match="fluidsynth program is not installed"):
        evaluate(tiny_synth(tiny_model_path), [tmp_path / "a.mid"])


class NotANumber:
    """Stands in for ViSQOL: a score that is not a number (as a scorer gives for audio it cannot measure)."""

    def moslqo(self, audio: np.ndarray, reference: np.ndarray) -> float:
        return float("nan")


@pytest.mark.slow  # a whole evaluation
@needs_fluidsynth
def test_eval_writes_strict_json_with_null_for_a_score_that_is_not_finite(tmp_path, tiny_model_path, monkeypatch):
    write_midi(tmp_path / "a.mid", [(60, 0.0, 1.0, 100)])
    monkeypatch.setattr(Scorers, "create", classmethod(lambda cls, transcription, visqol: cls(visqol=NotANumber())))
    out = tmp_path / "eval.json"
    result = run("eval", str(tmp_path), "--json", str(out), "--model", str(tiny_model_path), *QUICK)
    assert result.exit_code == 0, result.output

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    report = json.loads(out.read_text(), parse_constant=refuse)
    assert report["files"][0]["scores"]["midisynth"]["visqol"] is None
    assert report["summary"]["mean"]["midisynth"]["visqol"] is None
    assert report["summary"]["mean"]["midisynth"]["log_mel_l1"] > 0
