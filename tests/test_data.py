"""Data set building: sources, FluidSynth rendering, storage layout, resume, splits, training windows."""

from __future__ import annotations

import dataclasses
import itertools
import random
import shutil
import sys

import numpy as np
import pretty_midi
import pytest
import torch

from midisynth.audio import log_mel
from midisynth.constants import EOS_ID, SAMPLE_RATE, WINDOW_FRAMES, WINDOW_SAMPLES, WINDOW_SECONDS
from midisynth.data.fluidsynth import DEFAULT_SOUNDFONT
from midisynth.data.sources import generated_pieces, note_survey, random_program, truncate
from midisynth.data.store import TOKEN_BUCKET, WindowDataset, collate_windows, load_records, split_of
from midisynth.score.midi import read_midi
from midisynth.score.tokens import SLAKH_PROGRAMS, slakh_program, tokenize

needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not DEFAULT_SOUNDFONT.exists(),
    reason="needs the fluidsynth program and the FluidR3 GM SoundFont (apt-get install fluidsynth fluid-soundfont-gm)",
)


def _signature(pm: pretty_midi.PrettyMIDI):
    return [(i.program, i.is_drum, [(n.pitch, round(n.start, 6), n.velocity) for n in i.notes]) for i in pm.instruments]


def test_generated_pieces_are_deterministic_and_varied():
    first = [(name, _signature(pm)) for name, pm in itertools.islice(generated_pieces(seed=3), 12)]
    again = [(name, _signature(pm)) for name, pm in itertools.islice(generated_pieces(seed=3), 12)]
    assert first == again
    assert first != [(name, _signature(pm)) for name, pm in itertools.islice(generated_pieces(seed=4), 12)]
    pieces = [pm for _, pm in itertools.islice(generated_pieces(seed=3), 40)]
    assert any(i.is_drum for pm in pieces for i in pm.instruments)
    programs = {slakh_program(i.program) for pm in pieces for i in pm.instruments if not i.is_drum}
    assert len(programs) >= 15


def test_generated_ensembles_play_two_to_four_instruments_at_once():
    ensembles = [pm for name, pm in itertools.islice(generated_pieces(seed=0), 40) if name.startswith("gen-")]
    counts = {len(pm.instruments) for pm in ensembles}
    assert counts <= {2, 3, 4} and len(counts) >= 2
    for pm in ensembles:
        assert all(inst.notes and inst.notes[0].start < 5.0 for inst in pm.instruments)  # all play from the start


def test_random_program_covers_every_slakh_class():
    rng = random.Random(0)
    assert {slakh_program(random_program(rng)) for _ in range(2000)} == set(SLAKH_PROGRAMS)


def test_note_survey_has_notes():
    pm = note_survey(random.Random(1), seconds=10.0)
    assert len(pm.instruments) == 1 and len(pm.instruments[0].notes) >= 4


def test_truncate_keeps_the_first_seconds():
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [
        pretty_midi.Note(90, 60, 0.0, 1.0),
        pretty_midi.Note(90, 62, 1.5, 4.0),
        pretty_midi.Note(90, 64, 3.0, 5),
    ]
    pm.instruments.append(inst)
    truncate(pm, 2.0)
    assert [(n.pitch, n.start, n.end) for n in inst.notes] == [(60, 0.0, 1.0), (62, 1.5, 2.0)]


def test_music21_pieces_are_deterministic_reassigned_and_short():
    pytest.importorskip("music21", reason="music21 supplies the corpus of real music")
    from midisynth.data.sources import music21_pieces

    first = [(name, _signature(pm)) for name, pm in itertools.islice(music21_pieces(seed=0, max_seconds=20.0), 2)]
    again = [(name, _signature(pm)) for name, pm in itertools.islice(music21_pieces(seed=0, max_seconds=20.0), 2)]
    assert first == again and len(first) == 2
    for name, signature in first:
        assert name.startswith("m21-")
        assert all(start < 20.0 for _, _, notes in signature for _, start, _ in notes)
    # music21 writes every part as piano (program 0); re-assignment spreads them over the GM families.
    assert {program for _, signature in first for program, is_drum, _ in signature if not is_drum} != {0}


def test_music21_missing_is_said_not_silently_skipped(monkeypatch):
    from midisynth.data.sources import music21_pieces

    monkeypatch.setitem(sys.modules, "music21", None)  # `from music21 import corpus` now raises ImportError
    with pytest.warns(UserWarning, match=r"music21 is not installed.*midisynth\[data\]"):
        assert list(music21_pieces(seed=0)) == []


@needs_fluidsynth
def test_render_is_aligned_with_midi_time_zero(tmp_path):
    from midisynth.data.fluidsynth import render_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(100, 60, 0.0, 0.3), pretty_midi.Note(100, 60, 1.0, 1.3)]
    pm.instruments.append(inst)
    pm.write(str(tmp_path / "two.mid"))
    audio = render_midi(tmp_path / "two.mid", DEFAULT_SOUNDFONT)
    assert audio.dtype == np.float32 and audio.ndim == 1
    loud = np.flatnonzero(np.abs(audio) > 1e-2)
    second = loud[loud > SAMPLE_RATE // 2][0]
    assert 0 <= loud[0] < 320, "the note at 0 s must sound within the first frame"
    assert SAMPLE_RATE <= second < SAMPLE_RATE + 320, "the note at 1.0 s must sound from sample ~16000"
    assert np.abs(audio[int(0.7 * SAMPLE_RATE) : SAMPLE_RATE]).max() < 1e-2  # released before the second note
    assert audio.shape[0] > int(1.5 * SAMPLE_RATE)  # the release tail after the last note-off is rendered


@needs_fluidsynth
def test_build_store_resume_split_and_windows(tmp_path):
    from midisynth.data.build import build_dataset

    midi_dir = tmp_path / "midi"
    midi_dir.mkdir()
    held = next(k for k in itertools.count(2) if split_of(f"user-p{k}") == "heldout")
    rng = random.Random(2)
    for k, seconds in zip((0, 1, held), (6.0, 8.0, 3.0), strict=True):
        note_survey(rng, seconds).write(str(midi_dir / f"p{k}.mid"))
    root = tmp_path / "ds"
    options = dict(midi_dirs=[midi_dir], progress=False, generated=False)

    # A budget of a few seconds stops after the first piece; a larger one resumes without re-rendering it.
    manifest = build_dataset(root, hours=1e-3, **options)
    assert [p["piece_id"] for p in manifest["pieces"]] == ["user-p0"]
    first = {p: p.stat().st_mtime_ns for p in (root / "pieces").iterdir()}
    manifest = build_dataset(root, hours=1.0, **options)
    assert {p: p.stat().st_mtime_ns for p in (root / "pieces").iterdir() if p in first} == first
    records = load_records(root)
    assert [r.piece_id for r in records] == ["user-p0", "user-p1", f"user-p{held}"]
    assert manifest["pieces"] == [dataclasses.asdict(r) for r in records]
    stamps = {p: p.stat().st_mtime_ns for p in (root / "pieces").iterdir()}
    build_dataset(root, hours=1.0, **options)
    assert {p: p.stat().st_mtime_ns for p in (root / "pieces").iterdir()} == stamps

    # Held-out split: fixed by piece id, disjoint from training, its MIDI copied for evaluation.
    train, heldout = load_records(root, "train"), load_records(root, "heldout")
    assert [r.piece_id for r in heldout] == [f"user-p{held}"] and len(train) == 2
    assert manifest["splits"]["heldout"] == {
        "pieces": 1,
        "windows": heldout[0].windows,
        "hours": round(heldout[0].seconds / 3600, 3),
    }
    assert [p.name for p in (root / "heldout_midi").iterdir()] == [f"user-p{held}.mid"]

    for record in records:
        audio = np.load(record.path(root, "audio"), mmap_mode="r").astype(np.float32)
        features = np.load(record.path(root, "features"), mmap_mode="r")
        tokens = np.load(record.path(root, "tokens"), mmap_mode="r")
        assert (record.windows - 1) * WINDOW_SECONDS <= record.seconds < record.windows * WINDOW_SECONDS
        assert audio.shape == (record.windows * WINDOW_SAMPLES,)
        assert np.abs(audio).max() > 1e-2, "rendered audio is silent"
        assert features.shape == (record.windows * WINDOW_FRAMES, 128) and features.dtype == np.float16
        expected = log_mel(torch.from_numpy(audio)).numpy()
        error = np.abs(features.astype(np.float32) - expected)  # float16 storage of both arrays
        assert error.mean() < 0.01 and np.quantile(error, 0.99) < 0.05
        assert len(record.token_offsets) == record.windows + 1 and record.token_offsets[-1] == tokens.shape[0]
        assert all(tokens[end - 1] == EOS_ID for end in record.token_offsets[1:])

    dataset = WindowDataset(root, split="train")
    assert {r.piece_id for r in dataset.records} == {"user-p0", "user-p1"}
    assert len(dataset) == sum(r.windows for r in train)
    for i, (record, window) in enumerate(dataset.index):
        item = dataset[i]
        assert item["targets"].shape == item["context"].shape == (WINDOW_FRAMES, 128)
        lo, hi = record.token_offsets[window], record.token_offsets[window + 1]
        assert item["tokens"].tolist() == np.load(record.path(root, "tokens"))[lo:hi].tolist()
        if window == 0:
            assert not item["context_mask"] and not item["context"].any()
        else:
            assert item["context_mask"] and torch.equal(item["context"], dataset[i - 1]["targets"])
    with pytest.warns(UserWarning, match="keeping the first 4"):
        short = WindowDataset(root, split="train", max_tokens=4)[0]["tokens"]
    assert len(short) == 4 and short[-1] == EOS_ID
    assert len(WindowDataset(root, split="heldout")) == heldout[0].windows

    items = [dataset[0], dataset[1]]
    batch = collate_windows(items)
    longest = max(len(item["tokens"]) for item in items)
    bucket = -(-longest // TOKEN_BUCKET) * TOKEN_BUCKET  # rounded up to the bucket
    assert batch["tokens"].shape == (2, bucket) and batch["tokens"].dtype == torch.long
    assert collate_windows(items, max_tokens=longest)["tokens"].shape == (2, longest)  # never past the model's
    for row, item in enumerate(items):
        n = len(item["tokens"])
        assert torch.equal(batch["tokens"][row, :n], item["tokens"]) and not batch["tokens"][row, n:].any()
    assert batch["targets"].shape == batch["context"].shape == (2, WINDOW_FRAMES, 128)
    assert batch["context_mask"].tolist() == [items[0]["context_mask"].item(), items[1]["context_mask"].item()]

    # The stored tokens are those of each piece's stored MIDI.
    for record, window in dataset.index:
        expected = tokenize(read_midi(root / "midi" / f"{record.piece_id}.mid"))[window]
        assert dataset.window_tokens(record, window) == expected


# -- dataset's one-line errors ----------------------------------------------------------------------------------------
def _dataset(*args: str):
    from typer.testing import CliRunner

    from midisynth.cli import app

    return CliRunner().invoke(app, ["dataset", *args])


def _read_only(monkeypatch) -> None:
    """Files cannot be created anywhere (as on a read-only file system; root is refused nothing else)."""
    import errno
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


@pytest.mark.parametrize(
    "make_args, line",
    [
        (lambda tmp: ["--hours", "inf"], "--hours inf: give a finite number of hours, at least 0.01"),
        (lambda tmp: ["--hours", "-1"], "--hours -1: give a finite number of hours, at least 0.01"),
        (lambda tmp: ["--midi", str(tmp / "nonexistent")], "--midi {tmp}/nonexistent: no such directory"),
        (lambda tmp: ["--midi", str(tmp / "a.mid")], "--midi {tmp}/a.mid: not a directory"),
    ],
)
def test_dataset_options_that_cannot_work_are_one_line_exit_2(tmp_path, make_args, line):
    (tmp_path / "a.mid").write_bytes(b"")
    result = _dataset(str(tmp_path / "ds"), "--no-generated", *make_args(tmp_path))
    assert (result.exit_code, result.output) == (2, f"midisynth: {line.format(tmp=tmp_path)}\n")
    assert not (tmp_path / "ds" / "pieces").exists()


def test_dataset_output_that_is_a_file_or_read_only_is_one_line_exit_2(tmp_path, monkeypatch):
    (tmp_path / "file").write_bytes(b"")
    result = _dataset(str(tmp_path / "file"), "--no-generated")
    assert (result.exit_code, result.output) == (
        2,
        f"midisynth: {tmp_path}/file: cannot create the output directory {tmp_path}/file (a file has that name)\n",
    )
    (tmp_path / "ds").mkdir()
    _read_only(monkeypatch)
    result = _dataset(str(tmp_path / "ds"), "--no-generated")
    assert (result.exit_code, result.output) == (
        2,
        f"midisynth: {tmp_path}/ds/manifest.json: cannot write in {tmp_path}/ds (Read-only file system)\n",
    )
    assert list((tmp_path / "ds").iterdir()) == []


def _pair(folder, name: str) -> None:
    """A one-note MIDI file and a 1.5 s tone beside it: a pair within the length tolerance."""
    import soundfile as sf

    from tests.conftest import write_midi

    write_midi(folder / f"{name}.mid", [(60, 0.0, 1.0, 100)])
    tone = 0.3 * np.sin(2 * np.pi * 262 * np.arange(int(1.5 * SAMPLE_RATE)) / SAMPLE_RATE)
    sf.write(folder / f"{name}.wav", tone.astype(np.float32), SAMPLE_RATE)


def test_a_pair_whose_piece_file_names_are_too_long_is_skipped_and_the_rest_stored(tmp_path):
    from midisynth.jobs.plan import name_limit

    (tmp_path / "pairs").mkdir()
    limit = name_limit(tmp_path / "ds" / "pieces" / "x")
    long_name = "a" * (limit - len("pair-.features.npy") + 2)  # its piece's file names: limit + 2 bytes
    for name in (long_name, "b", "c"):
        _pair(tmp_path / "pairs", name)
    result = _dataset(str(tmp_path / "ds"), "--pairs", str(tmp_path / "pairs"))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("midisynth:")]
    assert lines == [
        f"midisynth: {tmp_path / 'pairs' / long_name}.mid: its piece's file names would be {limit + 2} "
        f"bytes long, over the {limit} the file system takes (shorten its file or folder names) (skipped)",
        "midisynth: 2 of 3 recordings stored, 1 skipped",
    ]
    assert [r.piece_id for r in load_records(tmp_path / "ds")] == ["pair-b", "pair-c"]


@pytest.mark.parametrize(
    "rows, line",
    [
        (
            "train,/abs/x.midi,2004/x.wav\n",
            "line 2: midi_filename '/abs/x.midi' is not a path inside the MAESTRO folder",
        ),
        ("train,2004/x.midi,../x.wav\n", "line 2: audio_filename '../x.wav' is not a path inside the MAESTRO folder"),
        ("train,2004/x.midi,2004/x.wav\ntest,2004/y.midi\n", "line 3: no audio_filename"),
        ("train,,2004/x.wav\n", "line 2: no midi_filename"),
    ],
)
def test_a_maestro_csv_with_bad_rows_is_one_line_naming_file_and_line(tmp_path, rows, line):
    root = tmp_path / "maestro"
    root.mkdir()
    table = root / "maestro-v3.0.0.csv"
    table.write_text("split,midi_filename,audio_filename\n" + rows)
    result = _dataset(str(tmp_path / "ds"), "--maestro", str(root))
    assert (result.exit_code, result.output) == (1, f"midisynth: {table}, {line}\n")


def test_a_binary_maestro_csv_is_named(tmp_path):
    root = tmp_path / "maestro"
    root.mkdir()
    (root / "maestro-v3.0.0.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + bytes(64))
    result = _dataset(str(tmp_path / "ds"), "--maestro", str(root))
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith(f"midisynth: {root / 'maestro-v3.0.0.csv'}: not a CSV text file (")


@needs_fluidsynth
def test_dataset_reports_each_unreadable_midi_file_and_renders_the_rest(tmp_path):
    from tests.conftest import write_midi

    midi = tmp_path / "midi"
    midi.mkdir()
    (midi / "garbage.mid").write_bytes(b"not MIDI at all")
    (midi / "empty.mid").write_bytes(b"")
    write_midi(midi / "ok.mid", [(60, 0.0, 1.0, 100)])
    result = _dataset(str(tmp_path / "ds"), "--midi", str(midi), "--no-generated", "--hours", "0.01")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("midisynth:")]
    assert [line.split(": unreadable MIDI (")[0] for line in lines] == [
        f"midisynth: {midi / 'empty.mid'}",
        f"midisynth: {midi / 'garbage.mid'}",
    ]
    assert all(line.endswith(") (skipped)") for line in lines)
    assert [r.piece_id for r in load_records(tmp_path / "ds")] == ["user-ok"]
