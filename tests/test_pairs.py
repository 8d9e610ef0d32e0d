"""Data sets from recordings: folders of MIDI + audio pairs, Slakh2100 and MAESTRO layouts, refused pairs."""

from __future__ import annotations

import csv
import json
import random
import shutil

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from typer.testing import CliRunner

from midisynth.audio import log_mel
from midisynth.cli import app
from midisynth.constants import SAMPLE_RATE, WINDOW_SAMPLES
from midisynth.data.fluidsynth import DEFAULT_SOUNDFONT, render_midi
from midisynth.data.pairs import AUDIO_LONGER_S, maestro_pairs, slakh_pairs
from midisynth.data.sources import note_survey
from midisynth.data.store import load_records, split_of
from midisynth.score.midi import read_midi
from midisynth.score.tokens import tokenize

pytestmark = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not DEFAULT_SOUNDFONT.exists(),
    reason="the recordings are FluidSynth renders (apt-get install fluidsynth fluid-soundfont-gm)",
)
RECORDING_RATE = 44_100


def _record(midi_path, audio_path, seconds: float, seed: int, source_midi=None) -> np.ndarray:
    """Write a note survey of `seconds` as MIDI, and FluidSynth's render of `source_midi` (default: that MIDI) as a
    44.1 kHz stereo recording, right channel at half level; returns the 16 kHz mono mix expected back."""
    note_survey(random.Random(seed), seconds).write(str(midi_path))
    render = render_midi(source_midi or midi_path, DEFAULT_SOUNDFONT)  # [samples] 16 kHz
    left = soxr.resample(render, SAMPLE_RATE, RECORDING_RATE)
    sf.write(audio_path, np.stack([left, 0.5 * left], axis=1), RECORDING_RATE)
    return 0.75 * render


def _assert_stored(root, piece_id, midi_path, expected_audio):
    """The piece's MIDI copy, tokens, audio (the recording's mono mix at 16 kHz) and features."""
    (record,) = [r for r in load_records(root) if r.piece_id == piece_id]
    assert (root / "midi" / f"{piece_id}.mid").read_bytes() == midi_path.read_bytes()
    windows = tokenize(read_midi(midi_path))
    assert record.windows == len(windows)
    assert np.load(record.path(root, "tokens")).tolist() == [t for w in windows for t in w]
    audio = np.load(record.path(root, "audio")).astype(np.float32)
    assert audio.shape == (record.windows * WINDOW_SAMPLES,)
    n = min(audio.shape[0], expected_audio.shape[0])
    error = audio[:n] - expected_audio[:n]
    assert np.sqrt(np.mean(error**2)) < 0.02 * np.sqrt(np.mean(expected_audio[:n] ** 2))  # -34 dB: resampling
    features = np.load(record.path(root, "features")).astype(np.float32)
    error = np.abs(features - log_mel(torch.from_numpy(audio)).numpy())  # float16 storage of both arrays
    assert error.mean() < 0.03 and np.median(error) < 0.005
    return record


def test_folder_of_pairs_with_bad_ones_and_rendered_midi(tmp_path):
    recordings = tmp_path / "recordings"
    (recordings / "live").mkdir(parents=True)
    expected = {
        "pair-a": (recordings / "a.mid", _record(recordings / "a.mid", recordings / "a.flac", 6.0, seed=1)),
        "pair-live-b": (
            recordings / "live" / "b.midi",
            _record(recordings / "live" / "b.midi", recordings / "live" / "b.wav", 3.0, seed=2),
        ),
    }
    # A recording of a longer piece beside a short MIDI file, a corrupt WAV file, and a MIDI file without audio.
    note_survey(random.Random(3), 20.0).write(str(tmp_path / "long.mid"))
    _record(recordings / "wrong.mid", recordings / "wrong.wav", 3.0, seed=4, source_midi=tmp_path / "long.mid")
    note_survey(random.Random(5), 3.0).write(str(recordings / "corrupt.mid"))
    (recordings / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(200))
    note_survey(random.Random(6), 3.0).write(str(recordings / "lonely.mid"))
    rendered = tmp_path / "midi"
    rendered.mkdir()
    note_survey(random.Random(7), 3.0).write(str(rendered / "r.mid"))
    root = tmp_path / "ds"
    args = ["dataset", str(root), "--pairs", str(recordings), "--midi", str(rendered), "--hours", "0.01"]

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("midisynth:")]
    assert len(lines) == 3 and all(line.endswith("(skipped)") for line in lines[:2])
    assert lines[0].startswith(f"midisynth: {recordings / 'corrupt.wav'}: unreadable audio (")
    assert lines[1].startswith(f"midisynth: {recordings / 'wrong.wav'}: ")
    wrong_seconds = read_midi(recordings / "wrong.mid").duration
    assert (
        f"s of audio for {wrong_seconds:.1f} s of MIDI, beyond the tolerance" in lines[1] and "misaligned?" in lines[1]
    )
    assert lines[2] == "midisynth: 2 of 4 recordings stored, 2 skipped"
    assert {r.piece_id for r in load_records(root)} == {"pair-a", "pair-live-b", "user-r"}  # both kinds together
    for piece_id, (midi_path, audio) in expected.items():
        assert _assert_stored(root, piece_id, midi_path, audio).split == split_of(piece_id)

    stamps = {p: p.stat().st_mtime_ns for p in (root / "pieces").iterdir()}
    again = CliRunner().invoke(app, args)  # resumes: nothing stored again, the bad pairs reported again
    assert again.exit_code == 0 and again.stderr.count("(skipped)") == 2
    assert {p: p.stat().st_mtime_ns for p in (root / "pieces").iterdir()} == stamps


def test_slakh_layout_keeps_its_splits(tmp_path):
    root = tmp_path / "slakh2100"
    expected = {}
    for k, (folder, split) in enumerate(
        (("train", "train"), ("train", "train"), ("validation", "heldout"), ("test", "test"))
    ):
        track = root / folder / f"Track{k + 1:05d}"
        (track / "MIDI").mkdir(parents=True)  # the stems' MIDI and audio are beside the mix; only the mix is read
        expected[f"slakh-{track.name}"] = (
            split,
            track / "all_src.mid",
            _record(track / "all_src.mid", track / "mix.flac", 3.0, seed=10 + k),
        )
    (root / "omitted" / "Track00009").mkdir(parents=True)
    (root / "train" / "Track00010").mkdir()  # no files: reported, not stored
    (root / "train" / "Track00010" / "all_src.mid").write_bytes(b"MThd")
    shutil.copyfile(root / "train" / "Track00001" / "mix.flac", root / "train" / "Track00010" / "mix.flac")

    result = CliRunner().invoke(app, ["dataset", str(tmp_path / "ds"), "--slakh", str(root)])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("(skipped)") == 1 and "Track00010/all_src.mid: unreadable MIDI" in result.stderr
    records = {r.piece_id: r for r in load_records(tmp_path / "ds")}
    assert set(records) == set(expected)  # no rendered material without --generated
    for piece_id, (split, midi_path, audio) in expected.items():
        assert _assert_stored(tmp_path / "ds", piece_id, midi_path, audio).split == split
    assert sorted(p.name for p in (tmp_path / "ds" / "heldout_midi").iterdir()) == ["slakh-Track00003.mid"]
    assert sorted(p.name for p in (tmp_path / "ds" / "test_midi").iterdir()) == ["slakh-Track00004.mid"]
    splits = json.loads((tmp_path / "ds" / "manifest.json").read_text())["splits"]
    assert {split: summary["pieces"] for split, summary in splits.items()} == {"train": 2, "heldout": 1, "test": 1}


def test_maestro_csv_gives_paths_and_splits(tmp_path):
    root = tmp_path / "maestro-v3.0.0"
    (root / "2004").mkdir(parents=True)
    rows = [
        {
            "canonical_composer": "X",
            "canonical_title": "Y",
            "split": split,
            "year": "2004",
            "midi_filename": f"2004/perf{k}.midi",
            "audio_filename": f"2004/perf{k}.wav",
            "duration": "3.0",
        }
        for k, split in enumerate(("train", "validation", "test"))
    ]
    with open(root / "maestro-v3.0.0.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pairs = maestro_pairs(root)
    assert [(p.piece_id, p.midi_path, p.audio_path, p.split) for p in pairs] == [
        (f"maestro-2004-perf{k}", root / "2004" / f"perf{k}.midi", root / "2004" / f"perf{k}.wav", split)
        for k, split in enumerate(("train", "heldout", "test"))
    ]
    with pytest.raises(FileNotFoundError, match="not a MAESTRO folder"):
        maestro_pairs(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a Slakh2100 folder"):
        slakh_pairs(root)


def test_length_tolerance_is_stated(tmp_path):
    """The longer bound is part of the message a misaligned pair gets (the test above checks the shorter side)."""
    from midisynth.data.pairs import PairError, check_alignment

    audio = np.full(int((2.0 + AUDIO_LONGER_S + 0.5) * SAMPLE_RATE), 0.1, np.float32)
    with pytest.raises(PairError, match=rf"12.5 s of audio for 2.0 s of MIDI.*{AUDIO_LONGER_S:g} s longer"):
        check_alignment(tmp_path / "x.wav", audio, 2.0)
    check_alignment(tmp_path / "x.wav", audio[: int((2.0 + AUDIO_LONGER_S - 0.5) * SAMPLE_RATE)], 2.0)
    with pytest.raises(PairError, match="silent"):
        check_alignment(tmp_path / "x.wav", np.zeros(2 * SAMPLE_RATE, np.float32), 2.0)
