"""Training: the objective, checkpoints, resuming, and the exported weights."""

from __future__ import annotations

import json
import math
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from midisynth.audio import to_network_range
from midisynth.constants import WINDOW_FRAMES, WINDOW_SAMPLES
from midisynth.data.store import PieceRecord, save_piece, split_of
from midisynth.model.checkpoints import load_model_file
from midisynth.model.config import Config, load_config
from midisynth.model.noise_schedule import q_sample, v_target
from midisynth.signals import Terminated
from midisynth.training.diffusion import Trainer, diffusion_loss

ROOT = Path(__file__).resolve().parent.parent


def _fake_dataset(root: Path, pieces: int = 6, source: str = "fake") -> None:
    """Pieces with random features and tokens in the store layout (no renderer needed), ids `source-k`."""
    (root / "pieces").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    made = {"train": 0, "heldout": 0}
    k = 0
    while made["train"] < pieces or made["heldout"] < 1:
        piece_id = f"{source}-{k}"
        k += 1
        split = split_of(piece_id)
        if made[split] >= (pieces if split == "train" else 1):
            continue
        made[split] += 1
        windows = 2
        tokens = [list(rng.integers(3, 1391, size=rng.integers(5, 40))) + [1] for _ in range(windows)]
        offsets = np.cumsum([0] + [len(t) for t in tokens]).tolist()
        record = PieceRecord(piece_id, split, 9.0, windows, offsets)
        features = rng.uniform(-11, 2, size=(windows * WINDOW_FRAMES, 128)).astype(np.float16)
        save_piece(
            root,
            record,
            features,
            np.zeros(windows * WINDOW_SAMPLES, np.float16),
            np.concatenate(tokens).astype(np.int16),
        )


@pytest.fixture
def tiny_config() -> Config:
    return load_config(ROOT / "configs" / "tiny.toml")


def test_loss_is_finite_and_conditioning_dropout_orders_rows(tmp_path, tiny_config):
    _fake_dataset(tmp_path / "ds")
    trainer = Trainer(tiny_config, tmp_path / "ds", tmp_path / "run")
    batch = next(iter(trainer.loader))
    gen = torch.Generator().manual_seed(0)
    full = diffusion_loss(trainer.model, batch, gen, cond_dropout=0.0, loss_type="l1")
    dropped = diffusion_loss(trainer.model, batch, torch.Generator().manual_seed(0), cond_dropout=1.0, loss_type="l1")
    assert torch.isfinite(full) and torch.isfinite(dropped)
    assert full.item() != dropped.item()  # the unconditional branch really skips the encodings


def test_v_models_regress_v(tmp_path, tiny_config):
    """With prediction = "v" the loss compares the decoder's output with alpha eps - sigma x0, not eps."""
    _fake_dataset(tmp_path / "ds")
    cfg = Config(replace(tiny_config.model, prediction="v", dropout_rate=0.0), tiny_config.train)
    trainer = Trainer(cfg, tmp_path / "ds", tmp_path / "run")
    model, batch = trainer.model, next(iter(trainer.loader))
    loss = diffusion_loss(model, batch, torch.Generator().manual_seed(3), cond_dropout=0.0, loss_type="l1")
    gen = torch.Generator().manual_seed(3)  # replay the draws: keep-mask, times, noise
    size = batch["targets"].shape[0]
    torch.rand(size, generator=gen)
    t = torch.rand(size, generator=gen)
    eps = torch.randn(batch["targets"].shape, generator=gen)
    x0 = to_network_range(batch["targets"])
    with torch.no_grad():
        pred = model(
            q_sample(x0, eps, t),
            t,
            batch["tokens"],
            to_network_range(batch["context"]),
            batch["context_mask"],
            num_conditioned=size,
        )
    assert loss.item() == pytest.approx((pred - v_target(x0, eps, t)).abs().mean().item(), rel=1e-5)
    assert loss.item() != pytest.approx((pred - eps).abs().mean().item(), rel=1e-3)


@pytest.mark.slow  # trains, resumes and trains again (resuming is tested fast with the vocoder's trainer)
def test_train_checkpoint_resume_and_export(tmp_path, tiny_config):
    _fake_dataset(tmp_path / "ds")
    run = tmp_path / "run"
    trainer = Trainer(tiny_config, tmp_path / "ds", run)
    trainer.train()
    assert trainer.step == tiny_config.train.max_steps
    history = json.loads((run / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, trainer.step + 1))
    assert all(np.isfinite(h["loss"]) for h in history)
    assert any("heldout_loss" in h for h in history)
    exported = load_model_file(run / "model.safetensors")
    assert exported.metadata["step"] == str(trainer.step)
    for name, tensor in trainer.ema.state_dict().items():
        assert torch.equal(tensor, exported.model.state_dict()[name])

    longer = Config(
        model=tiny_config.model,
        train=type(tiny_config.train)(**{**tiny_config.train.__dict__, "max_steps": tiny_config.train.max_steps + 2}),
    )
    resumed = Trainer(longer, tmp_path / "ds", run)
    assert resumed.step == trainer.step
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name])
    resumed.train()
    assert resumed.step == tiny_config.train.max_steps + 2


def test_cosine_schedule_warms_up_then_decays_to_the_floor(tmp_path, tiny_config):
    _fake_dataset(tmp_path / "ds")
    train_cfg = replace(
        tiny_config.train, learning_rate=1e-3, warmup_steps=10, max_steps=110, lr_schedule="cosine", min_lr_ratio=0.1
    )
    trainer = Trainer(Config(tiny_config.model, train_cfg), tmp_path / "ds", tmp_path / "run")
    rates = {}
    for step in (0, 9, 55, 110):
        trainer.step = step
        rates[step] = trainer._lr()
    assert rates[0] == pytest.approx(1e-4)  # warm-up: (step + 1) / warmup_steps of the peak
    assert rates[9] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 110))))
    assert rates[55] == pytest.approx(1e-3 * 0.55)  # half-way: midway between peak and floor
    assert rates[110] == pytest.approx(1e-4)  # the floor


def test_unknown_lr_schedule_is_refused(tiny_config):
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        replace(tiny_config.train, lr_schedule="linear")


def test_context_level_jitter_shifts_each_row_by_one_gain_and_keeps_silence():
    from midisynth.constants import MAX_LOG_MEL, MIN_LOG_MEL
    from midisynth.training.diffusion import jitter_context_level

    context = torch.full((500, 4, 3), -3.0)
    context[:, 0] = MIN_LOG_MEL  # a silent frame
    context[:, 1, 0] = 3.5  # near the top of the feature range
    jittered = jitter_context_level(context, 1.5, torch.Generator().manual_seed(0))
    assert torch.equal(jittered[:, 0], context[:, 0])  # silence stays silence
    gains = jittered[:, 2:] - context[:, 2:]  # [500, 2, 3]
    assert torch.allclose(gains, gains[:, :1, :1].expand_as(gains))  # one gain per row
    assert gains[:, 0, 0].std().item() == pytest.approx(1.5, rel=0.1) and abs(gains.mean().item()) < 0.2
    assert jittered[:, 1, 0].max().item() == MAX_LOG_MEL and jittered.min().item() >= MIN_LOG_MEL  # clipped
    assert torch.equal(jitter_context_level(context, 0.0, torch.Generator()), context)


def test_training_jitters_every_batchs_context_when_asked(tmp_path, tiny_config, monkeypatch):
    import midisynth.training.diffusion

    seen = []

    def spy(context, std, generator, rows=None):
        seen.append((context.shape, std))
        return context

    monkeypatch.setattr(midisynth.training.diffusion, "jitter_context_level", spy)
    _fake_dataset(tmp_path / "ds", pieces=3)
    cfg = Config(tiny_config.model, replace(tiny_config.train, context_level_jitter=1.0, max_steps=2))
    Trainer(cfg, tmp_path / "ds", tmp_path / "run").train()
    assert seen == [((tiny_config.train.batch_size, WINDOW_FRAMES, 128), 1.0)] * 2
    Trainer(
        replace(cfg, train=replace(cfg.train, context_level_jitter=0.0, max_steps=3)), tmp_path / "ds", tmp_path / "run"
    ).train()
    assert len(seen) == 2  # off: never called
    with pytest.raises(ValueError, match="context_level_jitter must be a finite number >= 0"):
        replace(tiny_config.train, context_level_jitter=-1.0)


@pytest.mark.parametrize(
    ("table", "key", "value", "message"),
    [
        ("train", "batch_size", '"2"', "batch_size must be a whole number >= 1, got '2'"),
        ("train", "learning_rate", '"fast"', "learning_rate must be a finite number > 0, got 'fast'"),
        ("model", "d_ff", "64.5", "d_ff must be a whole number >= 1, got 64.5"),
        ("train", "checkpoint_every", "0", "checkpoint_every must be a whole number >= 1, got 0"),
        ("train", "eval_every", "0", "eval_every must be a whole number >= 1, got 0"),
        ("train", "log_every", "0", "log_every must be a whole number >= 1, got 0"),
        ("train", "loss", '"huber"', "loss must be one of \\('l1', 'l2'\\), got 'huber'"),
        ("model", "d_model", "0", "d_model must be a whole number >= 1, got 0"),
        ("train", "max_steps", "-5", "max_steps must be a whole number >= 0, got -5"),
        ("train", "cond_dropout", "1.5", "cond_dropout must be a number in \\[0, 1\\], got 1.5"),
        ("train", "warmup_steps", "-10", "warmup_steps must be a whole number >= 0, got -10"),
        ("train", "grad_clip", "-1", "grad_clip must be a number in \\(0, inf\\], got -1"),
        ("train", "ema_decay", "nan", "ema_decay must be a number in \\[0, 1\\), got nan"),
        ("train", "compile", '"yes"', "compile must be true or false, got 'yes'"),
    ],
)
def test_every_config_field_is_checked_and_named_with_its_file(tmp_path, table, key, value, message):
    from tests.test_cli import run

    config = tmp_path / "bad.toml"
    config.write_text(f'base = "{ROOT / "configs" / "tiny.toml"}"\n[{table}]\n{key} = {value}\n')
    with pytest.raises(ValueError, match=f"^{config}: {table} config: {message}$"):
        load_config(config)
    result = run("train", "--config", str(config), "--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith(f"midisynth: {config}: {table} config: {key}")
    assert not (tmp_path / "run").exists()


def test_vocoder_train_config_is_checked():
    from midisynth.training.vocoder import VocoderTrainConfig

    with pytest.raises(ValueError, match="vocoder train config: checkpoint_every must be a whole number >= 1, got 0"):
        VocoderTrainConfig(checkpoint_every=0)
    with pytest.raises(ValueError, match="vocoder train config: learning_rate must be a finite number > 0, got -1"):
        VocoderTrainConfig(learning_rate=-1)


def test_source_weights_set_how_often_each_source_is_drawn(tmp_path, tiny_config):
    _fake_dataset(tmp_path / "ds", pieces=3, source="often")
    _fake_dataset(tmp_path / "ds", pieces=3, source="never")
    _fake_dataset(tmp_path / "ds", pieces=3, source="plain")
    weights = {"often": 3.0, "never": 0.0}  # "plain" is not named: weight 1
    trainer = Trainer(
        Config(tiny_config.model, replace(tiny_config.train, source_weights=weights)), tmp_path / "ds", tmp_path / "run"
    )
    index = trainer.loader.dataset.index
    drawn = [
        index[i][0].piece_id.split("-")[0] for _ in range(50) for batch in trainer.loader.batch_sampler for i in batch
    ]
    assert "never" not in drawn
    assert 2.4 < drawn.count("often") / drawn.count("plain") < 3.6
    assert len(drawn) == 50 * len(index)  # an epoch is still one draw per window


def test_source_weights_must_not_be_negative(tiny_config):
    with pytest.raises(ValueError, match="source_weights must be non-negative"):
        replace(tiny_config.train, source_weights={"gen": -1.0})


def test_stop_signals_set_a_flag_and_restore_the_handlers():
    import os
    import signal

    from midisynth.training.stopping import StopSignals

    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
    assert signal.getsignal(signal.SIGTERM) is before


def _terminate_at(step: int):
    import os
    import signal

    def on_step(done: int, loss: float) -> None:
        if done == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return on_step


def test_sigterm_stops_training_after_the_step_with_a_checkpoint(tmp_path, tiny_config):
    _fake_dataset(tmp_path / "ds")
    trainer = Trainer(tiny_config, tmp_path / "ds", tmp_path / "run")
    with pytest.raises(Terminated) as stopped:
        trainer.train(on_step=_terminate_at(1))
    assert stopped.value.code == 128 + signal.SIGTERM
    assert trainer.step == 1 < tiny_config.train.max_steps
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 1


def test_vocoder_training_stops_on_sigterm_checkpoints_and_resumes(tmp_path):
    from midisynth.training.vocoder import VocoderTrainConfig, VocoderTrainer
    from midisynth.vocoders.vocoder import load_vocoder
    from midisynth.vocoders.vocos import VocosConfig

    _fake_dataset(tmp_path / "ds", pieces=2)
    config = VocoderTrainConfig(batch_size=2, segment_frames=16, max_steps=3, checkpoint_every=100)
    tiny = VocosConfig(dim=16, intermediate_dim=32, num_layers=1)
    trainer = VocoderTrainer(tmp_path / "ds", tmp_path / "run", config, tiny)
    with pytest.raises(Terminated):
        trainer.train(on_step=_terminate_at(2))
    assert trainer.step == 2
    resumed = VocoderTrainer(tmp_path / "ds", tmp_path / "run", config, tiny)
    assert resumed.step == 2 and [h["step"] for h in resumed.history] == [1, 2]
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name])
    resumed.train()
    assert resumed.step == 3
    vocoder = load_vocoder(str(tmp_path / "run" / "vocoder.safetensors"))
    assert vocoder(np.full((20, 128), -5.0, np.float32)).shape == (20 * 320,)


def test_a_config_states_what_differs_from_its_base(tmp_path):
    """`base` names the config a file builds on (relative to the file, chained); the file's keys replace the base's
    key by key, tables included (a `source_weights` table is a value, replaced whole)."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.toml").write_text(
        "[model]\nd_model = 32\nnum_heads = 2\n[train]\nmax_steps = 7\nseed = 3\n"
        "source_weights = { gen = 2.0, survey = 3.0 }\n"
    )
    (tmp_path / "sub" / "b.toml").write_text('base = "../a.toml"\n[model]\nnum_heads = 4\n[train]\nseed = 5\n')
    (tmp_path / "sub" / "c.toml").write_text('base = "b.toml"\n[train]\nsource_weights = { gen = 1.5 }\n')
    c = load_config(tmp_path / "sub" / "c.toml")
    assert (c.model.d_model, c.model.num_heads, c.train.max_steps, c.train.seed) == (32, 4, 7, 5)
    assert c.train.source_weights == {"gen": 1.5}
    assert load_config(tmp_path / "sub" / "b.toml").train.source_weights == {"gen": 2.0, "survey": 3.0}
    (tmp_path / "loop.toml").write_text('base = "loop.toml"\n')
    with pytest.raises(ValueError, match="a cycle"):
        load_config(tmp_path / "loop.toml")
    (tmp_path / "lost.toml").write_text('base = "nowhere.toml"\n')
    with pytest.raises(FileNotFoundError, match="nowhere.toml"):
        load_config(tmp_path / "lost.toml")


def test_the_bundled_models_recipe_configs_resolve_to_what_trained_it():
    """The recipe's configs, each stating only what differs from its base, give the stages' full settings."""
    eps, v, gain, roll = (
        load_config(ROOT / "configs" / f"{name}.toml") for name in ("epsilon", "default", "velocity_gain", "note_roll")
    )
    size = dict(
        d_model=256, num_heads=4, d_kv=64, d_ff=1024, num_notes_layers=4, num_context_layers=4, num_decoder_layers=4
    )
    assert eps.model == replace(v.model, prediction="epsilon", dropout_rate=0.1)
    assert v.model == replace(type(v.model)(), **size, prediction="v", dropout_rate=0.0)
    assert gain.model == replace(v.model, velocity_gain=True) and roll.model == replace(gain.model, note_roll=True)
    assert (eps.train.max_steps, v.train.max_steps, gain.train.max_steps, roll.train.max_steps) == (
        4800,
        5000,
        3000,
        5000,
    )
    assert (eps.train.lr_schedule, eps.train.learning_rate, eps.train.warmup_steps) == ("constant", 5e-4, 300)
    assert (v.train.lr_schedule, v.train.min_lr_ratio, v.train.learning_rate) == ("cosine", 0.05, 5e-4)
    assert (roll.train.learning_rate, roll.train.cue_lr_scale, roll.train.context_level_jitter) == (4e-4, 20.0, 1.0)
    assert roll.train.source_weights == gain.train.source_weights == {"survey": 3.0, "gen": 2.0}


def _recipe_data(root: Path) -> None:
    """A fake data set whose pieces also have MIDI files (the note roll is made from them)."""
    from midisynth.data.store import load_records
    from tests.conftest import write_midi

    _fake_dataset(root)
    (root / "midi").mkdir()
    for record in load_records(root):
        write_midi(root / "midi" / f"{record.piece_id}.mid", [(60, 0.5, 3.0, 80), (67, 2.0, 8.5, 120)])


def _recipe(tmp_path: Path) -> list[Path]:
    """A two-stage tiny recipe: the paper's ε objective, then v-prediction with a note roll from its weights."""
    (tmp_path / "first.toml").write_text(f'base = "{ROOT / "configs" / "tiny.toml"}"\n[train]\nmax_steps = 2\n')
    (tmp_path / "second.toml").write_text(
        'base = "first.toml"\n[model]\nprediction = "v"\nnote_roll = true\n[train]\nmax_steps = 3\nseed = 1\n'
    )
    return [tmp_path / "first.toml", tmp_path / "second.toml"]


@pytest.mark.slow  # trains a two-stage recipe, then once more (the CLI's recipe is tested fast)
def test_a_recipe_chains_its_stages_and_skips_finished_ones(tmp_path, monkeypatch):
    from midisynth.training import recipe
    from midisynth.training.recipe import train_recipe, trained_steps

    _recipe_data(tmp_path / "ds")
    configs = _recipe(tmp_path)
    starts = []  # (run directory, init_from) of each Trainer the recipe builds
    real_trainer = Trainer

    def recording_trainer(config, data_dir, run_dir, device="cpu", init_from=None, ranks=None):
        starts.append((run_dir.name, init_from))
        return real_trainer(config, data_dir, run_dir, device=device, init_from=init_from, ranks=ranks)

    monkeypatch.setattr("midisynth.training.diffusion.Trainer", recording_trainer)
    seen = []
    final = train_recipe(
        configs,
        tmp_path / "ds",
        tmp_path / "run",
        on_stage=lambda stage, done, total: seen.append((stage.run_dir.name, done, total)),
    )
    assert final == tmp_path / "run" / "second" / recipe.WEIGHTS
    assert starts == [("first", None), ("second", tmp_path / "run" / "first" / recipe.WEIGHTS)]
    assert seen == [("first", 0, 2), ("second", 0, 3)]
    assert trained_steps(tmp_path / "run" / "first") == 2 and trained_steps(tmp_path / "run" / "second") == 3
    first, second = (load_model_file(tmp_path / "run" / name / recipe.WEIGHTS).model for name in ("first", "second"))
    assert first.cfg.prediction == "epsilon" and second.cfg.prediction == "v" and second.cfg.note_roll
    # The second stage started from the first's weights (its own step 0 EMA would be its random init otherwise):
    # the notes encoder's embedding moved little from the first stage's, far less than from a fresh init.
    name = "notes_encoder.token_embedding.weight"
    moved = (second.state_dict()[name] - first.state_dict()[name]).abs().mean()
    assert moved < 0.1 * first.state_dict()[name].abs().mean()

    # Re-running skips both finished stages; a longer second stage resumes from its checkpoint.
    starts.clear()
    assert train_recipe(configs, tmp_path / "ds", tmp_path / "run") == final and starts == []
    configs[1].write_text(configs[1].read_text().replace("max_steps = 3", "max_steps = 4"))
    train_recipe(configs, tmp_path / "ds", tmp_path / "run")
    assert [name for name, _ in starts] == ["second"] and trained_steps(tmp_path / "run" / "second") == 4


def test_a_stage_that_stops_early_ends_the_recipe(tmp_path):
    from midisynth.training.recipe import recipe_stages, train_recipe, trained_steps

    _recipe_data(tmp_path / "ds")
    configs = _recipe(tmp_path)
    # SIGTERM during the first stage's first step: it stops there with a checkpoint, and the second never starts.
    with pytest.raises(Terminated):
        train_recipe(configs, tmp_path / "ds", tmp_path / "run", on_step=_terminate_at(1))
    assert trained_steps(tmp_path / "run" / "first") == 1 and not (tmp_path / "run" / "second").exists()
    assert train_recipe(configs, tmp_path / "ds", tmp_path / "run", max_minutes=0.0) is None  # no time: no stage
    with pytest.raises(ValueError, match="appear twice"):
        recipe_stages([configs[0], configs[0]], tmp_path / "run")


def test_make_train_runs_the_recipe_through_the_cli(tmp_path):
    """`midisynth train --config A --config B` (what `make train` runs) trains the recipe into OUT/<name>."""
    from typer.testing import CliRunner

    from midisynth.cli import app
    from midisynth.training.recipe import trained_steps

    _recipe_data(tmp_path / "ds")
    first, second = _recipe(tmp_path)
    args = [
        "train",
        "--config",
        str(first),
        "--config",
        str(second),
        "--data",
        str(tmp_path / "ds"),
        "--out",
        str(tmp_path / "run"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert trained_steps(tmp_path / "run" / "first") == 2 and trained_steps(tmp_path / "run" / "second") == 3
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "first: finished (2 steps), skipped" in again.output
