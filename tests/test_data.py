"""Data set building: sources, FluidSynth rendering, storage layout, resume, splits, training windows."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pretty_midi
import pytest
import torch

from midisynth.audio import log_mel
from midisynth.constants import WINDOW_FRAMES, WINDOW_SAMPLES
from midisynth.data.fluidsynth import DEFAULT_SOUNDFONT
from midisynth.data.sources import generated_pieces, note_survey, random_program
from midisynth.data.store import WindowDataset, collate_windows, load_records, split_of
from midisynth.tokens import SLAKH_PROGRAMS, slakh_program

needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not DEFAULT_SOUNDFONT.exists(),
    reason="needs the fluidsynth program and the FluidR3 GM SoundFont (apt-get install fluidsynth fluid-soundfont-gm)",
)


def _signature(pm: pretty_midi.PrettyMIDI):
    return [(i.program, i.is_drum, [(n.pitch, round(n.start, 6), n.velocity) for n in i.notes]) for i in pm.instruments]


def test_generated_pieces_are_deterministic_and_varied():
    first = [(name, _signature(pm)) for _, (name, pm) in zip(range(12), generated_pieces(seed=3), strict=False)]
    again = [(name, _signature(pm)) for _, (name, pm) in zip(range(12), generated_pieces(seed=3), strict=False)]
    assert first == again
    pieces = [pm for _, (_, pm) in zip(range(40), generated_pieces(seed=3), strict=False)]
    assert any(i.is_drum for pm in pieces for i in pm.instruments)
    programs = {slakh_program(i.program) for pm in pieces for i in pm.instruments if not i.is_drum}
    assert len(programs) >= 15


def test_random_program_covers_every_slakh_class():
    rng = random.Random(0)
    assert {slakh_program(random_program(rng)) for _ in range(2000)} == set(SLAKH_PROGRAMS)


def test_note_survey_has_notes():
    pm = note_survey(random.Random(1), seconds=10.0)
    assert len(pm.instruments) == 1 and len(pm.instruments[0].notes) >= 4


def test_split_is_fixed_and_about_five_percent():
    ids = [f"piece-{k}" for k in range(4000)]
    held = [i for i in ids if split_of(i) == "heldout"]
    assert 0.03 < len(held) / len(ids) < 0.07
    assert held == [i for i in ids if split_of(i) == "heldout"]


@needs_fluidsynth
def test_build_store_resume_and_windows(tmp_path):
    from midisynth.data.build import build_dataset

    midi_dir = tmp_path / "midi"
    midi_dir.mkdir()
    rng = random.Random(2)
    for k in range(3):
        note_survey(rng, seconds=6.0 + 2 * k).write(str(midi_dir / f"p{k}.mid"))
    root = tmp_path / "ds"
    kwargs = dict(midi_dirs=[midi_dir], hours=1.0, progress=False, generated=False)
    manifest = build_dataset(root, **kwargs)
    records = load_records(root)
    assert len(records) == 3
    assert manifest["splits"]["train"]["pieces"] + manifest["splits"]["heldout"]["pieces"] == len(records)
    for record in records:
        audio = np.load(record.path(root, "audio")).astype(np.float32)
        features = np.load(record.path(root, "features"))
        assert audio.shape == (record.windows * WINDOW_SAMPLES,)
        assert np.abs(audio).max() > 1e-3, "rendered audio is silent"
        assert features.shape == (record.windows * WINDOW_FRAMES, 128) and features.dtype == np.float16
        expected = log_mel(torch.from_numpy(audio)).numpy()
        error = np.abs(features.astype(np.float32) - expected)  # float16 storage of both arrays
        assert error.mean() < 0.01 and np.quantile(error, 0.99) < 0.05
        assert len(record.token_offsets) == record.windows + 1
    # Resume: a second run with the same budget renders nothing new.
    stamps = {p: p.stat().st_mtime_ns for p in (root / "pieces").iterdir()}
    build_dataset(root, **kwargs)
    assert {p: p.stat().st_mtime_ns for p in (root / "pieces").iterdir()} == stamps

    dataset = WindowDataset(root, split="train")
    record = dataset.records[0]
    features = np.load(record.path(root, "features")).astype(np.float32)
    item0, item1 = dataset[0], dataset[1]
    assert not bool(item0["context_mask"]) and bool(item1["context_mask"])
    assert torch.equal(item0["context"], torch.zeros(WINDOW_FRAMES, 128))
    assert torch.equal(item1["context"], item0["targets"])  # context of window 1 is window 0
    assert np.array_equal(item1["targets"].numpy(), features[WINDOW_FRAMES : 2 * WINDOW_FRAMES])
    assert item0["tokens"][-1] == 1
    batch = collate_windows([item0, item1])
    assert batch["tokens"].shape == (2, max(len(item0["tokens"]), len(item1["tokens"])))
    assert batch["targets"].shape == (2, WINDOW_FRAMES, 128)
