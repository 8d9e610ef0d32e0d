"""Shared fixtures: a tiny random model in midisynth's format and small MIDI files written with pretty_midi."""

from __future__ import annotations

from pathlib import Path

import pretty_midi
import pytest
import torch

from midisynth.model.checkpoints import save_model
from midisynth.model.config import load_config
from midisynth.model.networks import SpectrogramDiffusion

ROOT = Path(__file__).resolve().parent.parent
# CLI options for quick renders with the tiny test models (fp32: outputs compared across processes and batches).
FAST = ["--sampler", "ddim", "--steps", "2", "--guidance", "1", "--precision", "fp32", "-q"]


def write_midi(path: Path, notes: list[tuple[int, float, float, int]], program: int = 0, is_drum: bool = False) -> Path:
    """notes: (pitch, start s, end s, velocity)."""
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
    inst.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for p, s, e, v in notes]
    pm.instruments.append(inst)
    pm.write(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = SpectrogramDiffusion(load_config(ROOT / "configs" / "tiny.toml").model)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model, path)
    return path


SHORT_NOTES = [(60, 0.0, 1.0, 100), (64, 0.5, 1.5, 90)]  # two piano notes, 1.5 s long: one 5.12 s window


@pytest.fixture
def short_midi(tmp_path) -> Path:
    """SHORT_NOTES as a MIDI file."""
    return write_midi(tmp_path / "short.mid", SHORT_NOTES)


@pytest.fixture
def two_window_midi(tmp_path) -> Path:
    """A note crossing the first window boundary: song of 6 s, two windows."""
    return write_midi(tmp_path / "long.mid", [(60, 0.0, 1.0, 100), (64, 0.5, 6.0, 100)])
