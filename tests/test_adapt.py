"""`midisynth adapt`: what a small data set holds out, the partials fit from a prior, model directories, and the
command from recordings to a model that `render --model` reads."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from midisynth.cli import app
from midisynth.constants import N_MELS, SAMPLE_RATE, WINDOW_FRAMES
from midisynth.data.holdout import HeldOut, choose_heldout, hold_out
from midisynth.data.store import PieceRecord, WindowDataset, load_records, save_piece
from midisynth.model.checkpoints import CheckpointError, save_model
from midisynth.model.config import load_config
from midisynth.model.directory import describe, load_model_directory, write_model_directory
from midisynth.model.networks import SpectrogramDiffusion
from midisynth.model.partials import ATTACK_COLUMN, COLUMNS, DRUM_COLUMN, Partials, save_partials
from midisynth.model.resolve import BUNDLED_DIR, resolve_model
from midisynth.model.samplers import SamplingDefaults
from midisynth.training.partials import adapt_gains, adapted_columns
from tests.conftest import FAST, ROOT

RECORDING_RATE = 44_100


def _record(piece_id: str, windows: int, split: str = "train") -> PieceRecord:
    return PieceRecord(piece_id, split, windows * 5.12, windows, list(range(windows + 1)))


# -- what is held out ------------------------------------------------------------------------------------------------
def test_a_single_window_holds_nothing_out():
    assert choose_heldout([_record("pair-a", 1)]) == HeldOut()
    assert "nothing" in HeldOut().describe()


def test_few_pieces_hold_out_the_last_windows_of_the_longest():
    assert choose_heldout([_record("pair-a", 4)]) == HeldOut(windows_of="pair-a", windows=1)
    assert choose_heldout([_record("pair-a", 3), _record("pair-b", 25)]) == HeldOut(windows_of="pair-b", windows=3)
    assert choose_heldout([_record("pair-a", 2), _record("pair-b", 2)]) == HeldOut(windows_of="pair-b", windows=1)


def test_enough_pieces_hold_out_a_tenth_of_them_by_hash_of_their_ids():
    records = [_record(f"pair-{i}", 2) for i in range(25)]
    chosen = choose_heldout(records)
    assert len(chosen.pieces) == 2 and chosen.windows_of is None
    assert choose_heldout(list(reversed(records))) == chosen  # the order they come in does not matter
    assert len(choose_heldout(records[:3]).pieces) == 1  # at least one


def test_a_collection_with_its_own_split_keeps_it():
    records = [_record("slakh-Track1", 3), _record("slakh-Track2", 3, "heldout"), _record("pair-a", 3)]
    assert choose_heldout(records) == HeldOut(pieces=("slakh-Track2",))


def _store(root, piece_id: str, windows: int) -> None:
    record = _record(piece_id, windows)
    for folder in ("pieces", "midi", "heldout_midi"):
        (root / folder).mkdir(exist_ok=True)
    features = np.arange(windows * WINDOW_FRAMES * N_MELS, dtype=np.float16).reshape(-1, N_MELS)
    save_piece(root, record, features, np.zeros(windows * 81920, np.float16), np.arange(windows, dtype=np.int16))
    pretty_midi.PrettyMIDI().write(str(record.midi_path(root)))


def test_held_out_windows_are_kept_from_training_and_given_to_the_held_out_split(tmp_path):
    _store(tmp_path, "pair-a", 4)
    assert hold_out(tmp_path) == HeldOut(windows_of="pair-a", windows=1)
    (record,) = load_records(tmp_path)
    assert record.heldout_from == 3 and record.split == "train"
    train, heldout = WindowDataset(tmp_path, "train"), WindowDataset(tmp_path, "heldout")
    assert [w for _, w in train.index] == [0, 1, 2] and [w for _, w in heldout.index] == [3]
    assert torch.equal(heldout[0]["context"], train[2]["targets"])  # its context is the window before
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["splits"]["train"]["windows"] == 3 and manifest["splits"]["heldout"]["windows"] == 1
    assert hold_out(tmp_path) == HeldOut(windows_of="pair-a", windows=1)  # again: the same


def test_pieces_held_out_get_their_midi_copied_for_eval(tmp_path):
    for i in range(3):
        _store(tmp_path, f"pair-{i}", 1)
    (piece,) = hold_out(tmp_path).pieces
    assert [p.name for p in (tmp_path / "heldout_midi").iterdir()] == [f"{piece}.mid"]
    assert [r.piece_id for r in load_records(tmp_path, "heldout")] == [piece]
    assert len(WindowDataset(tmp_path, "train")) == 2


# -- the partials fit from a prior -------------------------------------------------------------------------------------
def test_adapting_gains_follows_the_data_where_it_has_some_and_keeps_the_prior_elsewhere():
    rng = np.random.default_rng(0)
    prior = rng.uniform(0.5, 1.5, (N_MELS, COLUMNS))
    design = rng.uniform(0, 1, (200, 3))  # data for columns 0, 5 and 9 only
    wanted = np.array([2.0, 0.1, 3.0])
    gram = np.zeros((N_MELS, COLUMNS, COLUMNS))
    target = np.zeros((N_MELS, COLUMNS))
    seen = [0, 5, 9]
    gram[np.ix_(range(N_MELS), seen, seen)] = design.T @ design
    target[:, seen] = design.T @ (design @ wanted)
    gains = adapt_gains(gram, target, prior)
    others = np.setdiff1d(np.arange(COLUMNS), seen)
    np.testing.assert_array_equal(gains[:, others], prior[:, others].astype(np.float32))
    # the pull toward the prior (0.5-1.5) is slight: a few hundredths
    np.testing.assert_allclose(gains[:, seen], np.broadcast_to(wanted, (N_MELS, 3)), atol=0.06)


def test_adapting_gains_keeps_the_time_structure_and_fits_the_spectra_around_it():
    """Data for a held column and for the attack column of the same program: the attack keeps the prior's gain, and
    the held column's gain is what the data asks for beside that attack."""
    rng = np.random.default_rng(1)
    prior = rng.uniform(0.5, 1.5, (N_MELS, COLUMNS))
    seen = [0, ATTACK_COLUMN, DRUM_COLUMN]
    design = rng.uniform(0, 1, (300, 3))
    assert adapted_columns()[[0, DRUM_COLUMN]].all() and not adapted_columns()[ATTACK_COLUMN]
    gram = np.zeros((N_MELS, COLUMNS, COLUMNS))
    target = np.zeros((N_MELS, COLUMNS))
    gram[np.ix_(range(N_MELS), seen, seen)] = design.T @ design
    for b in range(N_MELS):
        target[b, seen] = design.T @ (design @ np.array([2.0, prior[b, ATTACK_COLUMN], 0.3]))
    gains = adapt_gains(gram, target, prior)
    np.testing.assert_array_equal(gains[:, ATTACK_COLUMN], prior[:, ATTACK_COLUMN].astype(np.float32))
    np.testing.assert_allclose(gains[:, 0], 2.0, atol=0.05)
    np.testing.assert_allclose(gains[:, DRUM_COLUMN], 0.3, atol=0.05)


# -- model directories -------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_directory(tmp_path):
    """A model directory of a tiny random model, sampled in two steps, with the bundled partials model."""
    torch.manual_seed(0)
    model = SpectrogramDiffusion(load_config(ROOT / "configs" / "tiny.toml").model)
    directory = tmp_path / "tiny"
    write_model_directory(
        directory,
        model,
        {"step": "7", "sampling": SamplingDefaults("ddim", 2).to_json()},
        partials=BUNDLED_DIR / "partials.safetensors",
    )
    return directory


def test_a_model_directory_loads_with_its_partials_and_refuses_an_altered_file(tiny_directory):
    checkpoint = resolve_model(tiny_directory)
    assert checkpoint.partials_path == tiny_directory / "partials.safetensors"
    assert checkpoint.model.cfg.d_model == 32 and checkpoint.metadata["step"] == "7"
    lines = describe(tiny_directory)
    assert lines[0].startswith(f"model: {tiny_directory / 'model.safetensors'}  sha256=") and "step=7" in lines[0]
    assert lines[1] == "  sampling: ddim, 2 steps, guidance 1" and checkpoint.sampling == SamplingDefaults("ddim", 2)
    save_partials(Partials(np.ones((N_MELS, COLUMNS), np.float32)), tiny_directory / "partials.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"partials.safetensors: partials missing or corrupted \(sha256 "
        r"mismatch\); restore it, or write the model again",
    ):
        load_model_directory(tiny_directory)


def test_models_describes_the_directories_given_and_refuses_others(tiny_directory, tmp_path):
    result = CliRunner().invoke(app, ["models", str(tiny_directory)])
    assert result.exit_code == 0, result.output
    assert f"{tiny_directory}:\n  model: {tiny_directory / 'model.safetensors'}" in result.stdout
    assert "  share in renders: 0.85 (--partials)" in result.stdout
    result = CliRunner().invoke(app, ["models", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'nothing'}: no manifest.json (not a midisynth model directory)" in result.stderr


# -- the command -----------------------------------------------------------------------------------------------------
def _recordings(folder, count: int, seconds: float) -> None:
    """`count` MIDI files of `seconds` with their sine renders beside them, as 44.1 kHz stereo recordings."""
    folder.mkdir(parents=True)
    rng = random.Random(0)
    for i in range(count):
        pm = pretty_midi.PrettyMIDI()
        inst = pretty_midi.Instrument(program=rng.choice([0, 24, 40]))
        t = 0.0
        while t < seconds - 0.5:
            inst.notes.append(pretty_midi.Note(rng.randint(70, 110), rng.randint(48, 84), t, t + 0.4))
            t += 0.25
        pm.instruments.append(inst)
        pm.write(str(folder / f"take{i}.mid"))
        audio = pm.synthesize(RECORDING_RATE) * 0.3
        sf.write(folder / f"take{i}.wav", np.stack([audio, audio], axis=1), RECORDING_RATE)


@pytest.mark.slow  # every step of the command twice, with renders of the held-out piece
def test_adapt_turns_four_recordings_into_a_model_that_renders_and_resumes(tiny_directory, tmp_path):
    _recordings(tmp_path / "takes", 4, 6.0)
    out = tmp_path / "mine"
    args = ["adapt", str(tmp_path / "takes"), "-o", str(out), "--model", str(tiny_directory), "--minutes", "0.02"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "midisynth: held out: 1 piece (pair-take" in result.stderr
    assert result.stdout.startswith(f"adapted model: {out} (")
    assert "held-out base model: log-mel L1 " in result.stdout and "held-out adapted: log-mel L1 " in result.stdout
    state = json.loads((out / "adapt.json").read_text())
    assert state["steps"] > 0 and state["minutes_trained"] >= 0.02
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["step"] == str(state["steps"]) and manifest["partials"]["file"] == "partials.safetensors"
    assert manifest["model"]["adapted_from"] == str(tiny_directory / "model.safetensors")

    wav = tmp_path / "take0.wav"
    rendered = CliRunner().invoke(
        app, ["render", str(tmp_path / "takes" / "take0.mid"), "-o", str(wav), "--model", str(out), *FAST]
    )
    assert rendered.exit_code == 0, rendered.output
    audio, rate = sf.read(wav)
    assert rate == SAMPLE_RATE and np.abs(audio).max() > 0.01

    again = CliRunner().invoke(app, args)  # the time is spent: nothing more is trained, the model is written again
    assert again.exit_code == 0, again.output
    assert "fine-tuning for 0.0 min from step " in again.stderr
    assert "fitting the partials model" in result.stderr and "fitting the partials model" not in again.stderr
    assert json.loads((out / "adapt.json").read_text())["steps"] == state["steps"]


def test_one_short_recording_adapts_with_nothing_held_out(tiny_directory, tmp_path):
    _recordings(tmp_path / "takes", 1, 3.0)
    result = CliRunner().invoke(
        app,
        [
            "adapt",
            str(tmp_path / "takes"),
            "-o",
            str(tmp_path / "mine"),
            "--model",
            str(tiny_directory),
            "--minutes",
            "0.01",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "held out: nothing (too little material: a single window)" in result.stderr
    assert "held-out adapted: nothing held out" in result.stdout
    assert (tmp_path / "mine" / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [],
            "nothing to adapt to: give folders of recordings (MIDI files with their audio beside them), or a --soundfont",
        ),
        (["--midi", "."], "--midi needs --soundfont"),
        (["{tmp}"], "{tmp}: no MIDI file with an audio file of the same name beside it"),
        (["{tmp}/missing"], "{tmp}/missing: no such directory"),
        (["--midi", "{tmp}", "--soundfont", str(BUNDLED_DIR / "model.safetensors")], "not a SoundFont"),
        (["{tmp}", "--minutes", "inf"], "--minutes inf: give a finite number of minutes"),
    ],
)
def test_adapt_arguments_that_cannot_work_are_one_line(tmp_path, args, message):
    if "not a SoundFont" in message and shutil.which("fluidsynth") is None:
        pytest.skip("the SoundFont is checked after the fluidsynth program")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(app, ["adapt", *args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message.replace("{tmp}", str(tmp_path)) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.slow  # a fresh process, stopped and resumed
def test_adapt_stopped_by_a_signal_keeps_its_work_and_a_rerun_finishes(tiny_directory, tmp_path):
    _recordings(tmp_path / "takes", 3, 6.0)
    out = tmp_path / "mine"
    command = [
        sys.executable,
        "-m",
        "midisynth",
        "adapt",
        str(tmp_path / "takes"),
        "-o",
        str(out),
        "--model",
        str(tiny_directory),
        "--minutes",
        "5",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "run" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert f"stopped by SIGTERM; what is done is kept in {out}: run the same command to continue" in stderr
    state = json.loads((out / "adapt.json").read_text())
    assert 0 < state["minutes_trained"] < 5 and state["steps"] > 0
    assert not (out / "manifest.json").exists()
    finish = subprocess.run(
        command[:-1] + [str(state["minutes_trained"] + 0.02)], capture_output=True, text=True, timeout=300
    )
    assert finish.returncode == 0, finish.stderr
    assert f"from step {state['steps']}" in finish.stderr
    assert json.loads((out / "manifest.json").read_text())["model"]["step"] == str(
        json.loads((out / "adapt.json").read_text())["steps"]
    )


def test_save_model_is_what_a_directory_holds(tmp_path):
    """write_model_directory stores the weights in fp16, as the bundled model's are."""
    torch.manual_seed(0)
    model = SpectrogramDiffusion(load_config(ROOT / "configs" / "tiny.toml").model)
    write_model_directory(tmp_path, model, {})
    reference = tmp_path / "reference.safetensors"
    save_model(model, reference, dtype=torch.float16)
    loaded, expected = resolve_model(tmp_path).model.state_dict(), resolve_model(reference).model.state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_the_instrument_survey_plays_every_program_and_the_drum_kit_twice_then_drum_grooves_in_about_twelve_minutes():
    from collections import Counter

    from midisynth.data.sources import instrument_survey

    pieces = list(instrument_survey(0))
    voices = Counter(
        -1 if inst.is_drum else inst.program
        for name, pm in pieces
        if name.startswith("instruments-")
        for inst in pm.instruments
    )
    assert voices == Counter({voice: 2 for voice in range(-1, 128)})
    grooves = [pm for name, pm in pieces if name.startswith("grooves-")]
    assert len(grooves) == 6 and all(len(pm.instruments) == 1 and pm.instruments[0].is_drum for pm in grooves)
    keys = Counter(note.pitch for pm in grooves for note in pm.instruments[0].notes)
    assert {36, 38, 42}.issubset(keys) or {35, 38, 42}.issubset(keys)  # kick, snare, hi-hat
    assert all(9.5 < pm.get_end_time() <= 10.1 for pm in grooves)  # four grooves of 2.5 s
    assert all(inst.notes for _, pm in pieces for inst in pm.instruments)
    assert 11.0 < sum(pm.get_end_time() for _, pm in pieces) / 60 < 12.5
    again = list(instrument_survey(0))
    assert [(n, [x.pitch for i in pm.instruments for x in i.notes]) for n, pm in again] == [
        (n, [x.pitch for i in pm.instruments for x in i.notes]) for n, pm in pieces
    ]
