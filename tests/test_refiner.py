"""The refiner: what an unfitted one returns, how far it sees, its files, its place in the render loop, its fit."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from midisynth.cli import app
from midisynth.constants import MAX_LOG_MEL, MIN_LOG_MEL, N_MELS, WINDOW_FRAMES
from midisynth.data.store import load_records
from midisynth.model import partials as P
from midisynth.model.checkpoints import CheckpointError, load_model_file
from midisynth.model.directory import PARTIALS_FILE, REFINER_FILE, describe, write_model_directory
from midisynth.model.refiner import Refiner, RefinerShape, load_refiner, save_refiner
from midisynth.model.resolve import resolve_model
from midisynth.render.pipeline import RenderOptions, Synthesizer
from midisynth.score.midi import read_midi
from midisynth.training.refiner import RefinerTrainConfig, RefinerTrainer, refiner_inputs, refiner_loss
from tests.conftest import FAST, ROOT, write_midi

SMALL = RefinerShape(hidden=16, kernel=3, dilations=(1, 2))


def _inputs(batch: int = 2, frames: int = 64, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random network log-mel, partials magnitude, shares and onset shares [batch, frames, 128 | 1] in their usual
    ranges."""
    g = torch.Generator().manual_seed(seed)
    network = -8.0 + 6.0 * torch.rand(batch, frames, N_MELS, generator=g)
    magnitude = torch.rand(batch, frames, N_MELS, generator=g) ** 4
    onsets = (torch.rand(batch, frames, 1, generator=g) > 0.9).float()
    return network, magnitude, 0.85 + 0.15 * onsets, onsets


def _fitted(shape: RefinerShape = SMALL, seed: int = 0) -> Refiner:
    """A refiner with random weights everywhere, its correction included."""
    torch.manual_seed(seed)
    refiner = Refiner(shape)
    torch.nn.init.normal_(refiner.correction.weight, std=0.05)
    return refiner.eval()


def _random_partials(seed: int = 0) -> P.Partials:
    return P.Partials(np.random.default_rng(seed).uniform(0.0, 1.0, (N_MELS, P.COLUMNS)).astype(np.float32))


def test_an_unfitted_refiner_returns_the_mix():
    inputs = _inputs()
    with torch.no_grad():
        refined = Refiner(SMALL)(*inputs)
    expected = P.mix_log_mel(*(x.numpy() for x in inputs[:3]))
    np.testing.assert_allclose(refined.numpy(), expected, atol=1e-5)


def test_onset_frames_keep_the_mix_and_the_others_are_corrected():
    refiner = _fitted()
    network, magnitude, shares, onsets = _inputs(batch=1)
    mix = P.mix_log_mel(network.numpy(), magnitude.numpy(), shares.numpy())
    onset = onsets[0, :, 0] == 1.0
    with torch.no_grad():
        refined = refiner(network, magnitude, shares, onsets).numpy()
        halved = refiner(network, magnitude, shares, onsets / 2).numpy()
        whole = refiner(network, magnitude, shares, torch.zeros_like(onsets)).numpy()  # the correction everywhere
    np.testing.assert_allclose(refined[0, onset], mix[0, onset], atol=1e-5)
    assert np.abs(refined[0, ~onset] - mix[0, ~onset]).min() > 0
    np.testing.assert_allclose(refined[0, ~onset], whole[0, ~onset], atol=1e-6)
    np.testing.assert_allclose(halved[0, onset], (mix[0, onset] + whole[0, onset]) / 2, atol=1e-5)


def test_in_rests_the_correction_may_lower_the_mix_but_not_raise_it():
    refiner = _fitted()
    network, magnitude, shares, _ = _inputs(batch=1)
    onsets = torch.zeros_like(shares)
    rests = torch.zeros(1, network.shape[1], 1, dtype=torch.bool)
    rests[:, 32:] = True  # the second half is a rest
    mix = P.mix_log_mel(network.numpy(), magnitude.numpy(), shares.numpy())
    with torch.no_grad():
        free = refiner(network, magnitude, shares, onsets).numpy()
        held = refiner(network, magnitude, shares, onsets, rests).numpy()
    np.testing.assert_array_equal(held[:, :32], free[:, :32])  # where notes sound, the correction as it was
    raised = free[:, 32:] > mix[:, 32:]
    assert raised.mean() > 0.2 and (~raised).mean() > 0.2  # this refiner raises some bins of the rest, lowers others
    np.testing.assert_allclose(held[:, 32:][raised], mix[:, 32:][raised], atol=1e-5)
    np.testing.assert_allclose(held[:, 32:][~raised], free[:, 32:][~raised], atol=1e-6)


def test_a_frame_sees_its_reach_and_no_further():
    refiner = _fitted()
    reach = SMALL.reach_frames
    assert reach == 1 + 1 + 2
    network, magnitude, shares, onsets = _inputs(batch=1)
    onsets, shares = torch.zeros_like(onsets), torch.full_like(shares, 0.85)  # no frame held back by an onset
    moved = network.clone()
    moved[0, 30] += 2.0
    with torch.no_grad():
        before = refiner(network, magnitude, shares, onsets)
        change = (refiner(moved, magnitude, shares, onsets) - before).abs().amax(-1)[0]
    assert (change[30 - reach : 30 + reach + 1] > 0).all()
    assert (change[: 30 - reach] == 0).all() and (change[30 + reach + 1 :] == 0).all()


def test_the_output_stays_in_the_feature_range():
    refiner = _fitted()
    torch.nn.init.constant_(refiner.correction.bias, 50.0)
    inputs = _inputs()
    with torch.no_grad():
        assert float(refiner(*inputs).max()) == MAX_LOG_MEL
        torch.nn.init.constant_(refiner.correction.bias, -50.0)
        assert float(refiner(*inputs).min()) == pytest.approx(MIN_LOG_MEL)


def test_files_round_trip_in_float16_and_bad_files_are_named(tmp_path):
    refiner = _fitted(RefinerShape(hidden=8, kernel=5, dilations=(1, 3)))
    path = tmp_path / REFINER_FILE
    save_refiner(refiner, path)
    loaded = load_refiner(path)
    assert loaded.shape == refiner.shape and not loaded.training
    for name, tensor in refiner.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor.half().float(), rtol=0, atol=0)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors: not a readable refiner file"):
        load_refiner(tmp_path / "junk.safetensors")
    P.save_partials(_random_partials(), tmp_path / PARTIALS_FILE)
    with pytest.raises(ValueError, match="not a midisynth refiner file"):
        load_refiner(tmp_path / PARTIALS_FILE)
    torch.nn.init.constant_(refiner.correction.bias, math.nan)
    save_refiner(refiner, tmp_path / "nan.safetensors")
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_refiner(tmp_path / "nan.safetensors")
    with pytest.raises(ValueError, match="odd kernel"):
        RefinerShape(kernel=4)


def _synths(tiny_model_path: Path) -> tuple[Synthesizer, Synthesizer, Refiner]:
    """The tiny model with random partials, without and with a refiner."""
    base = Synthesizer.from_pretrained(
        tiny_model_path, device="cpu", options=RenderOptions(sampler="ddim", steps=2, precision="fp32")
    )
    refiner = _fitted()
    plain = Synthesizer(base.model, base.vocoder, "cpu", base.requested, base.sampling, _random_partials())
    refined = Synthesizer(base.model, base.vocoder, "cpu", base.requested, base.sampling, plain.partials, refiner)
    return plain, refined, refiner


def test_renders_refine_the_mix_and_can_leave_it(tiny_model_path, two_window_midi):
    plain, refined, refiner = _synths(tiny_model_path)
    song = read_midi(two_window_midi)
    network = list(plain.with_options(partials_mix=0.0).spectrogram_windows(plain.tokenize(song)))
    mixed = [np.concatenate(list(parts)) for _, parts in plain.spectrogram_songs([song])][0]
    out = [np.concatenate(list(parts)) for _, parts in refined.spectrogram_songs([song])][0]
    reach = P.NoteReach(song)
    expected = []
    for index, window in enumerate(network):
        inputs = (
            window,
            plain.partials.magnitude(song, index, reach),
            P.mix_shares(song, index, P.DEFAULT_MIX, reach),
            P.onset_shares(song, index, reach)[:, None],
            P.rest_frames(song, index, reach)[:, None],  # the song's rest after its last note: lowered only
        )
        with torch.no_grad():
            expected.append(refiner(*(torch.from_numpy(a)[None] for a in inputs))[0].numpy())
    frames = len(out)
    np.testing.assert_allclose(out, np.concatenate(expected)[:frames], atol=1e-5)
    assert np.abs(out - mixed).max() > 0.01
    unrefined = [np.concatenate(list(p)) for _, p in refined.with_options(refine=False).spectrogram_songs([song])]
    np.testing.assert_array_equal(unrefined[0], mixed)
    alone = [np.concatenate(list(p)) for _, p in refined.with_options(partials_mix=0.0).spectrogram_songs([song])]
    np.testing.assert_array_equal(alone[0], np.concatenate(network)[:frames])
    batched = {index: np.concatenate(list(parts)) for index, parts in refined.spectrogram_songs([song, song])}
    np.testing.assert_allclose(batched[1], out, atol=1e-4)
    with pytest.raises(TypeError, match="refine must be True or False"):
        RenderOptions(refine="yes")  # type: ignore[arg-type]


def test_a_refiner_beside_a_model_file_or_in_a_model_directory_is_used(tmp_path, tiny_model_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(tiny_model_path.read_bytes())
    save_refiner(_fitted(), tmp_path / REFINER_FILE)
    assert resolve_model(model).refiner_path is None  # nothing to refine without a partials model
    P.save_partials(_random_partials(), tmp_path / PARTIALS_FILE)
    assert resolve_model(model).refiner_path == tmp_path / REFINER_FILE
    assert Synthesizer.from_pretrained(model, device="cpu").refiner is not None
    directory = tmp_path / "dir"
    write_model_directory(
        directory,
        load_model_file(model).model,
        {},
        partials=tmp_path / PARTIALS_FILE,
        refiner=tmp_path / REFINER_FILE,
    )
    assert resolve_model(directory).refiner_path == directory / REFINER_FILE
    assert "  16 channels, sees 4 frames either way (--no-refiner: off)" in describe(directory)
    (directory / REFINER_FILE).write_bytes(b"tampered")
    with pytest.raises(CheckpointError, match=r"refiner missing or corrupted \(sha256 mismatch\)"):
        resolve_model(directory)


def test_the_loss_is_l1_plus_the_l1_of_frame_differences():
    reference = torch.zeros(1, 3, N_MELS)
    refined = torch.zeros(1, 3, N_MELS)
    refined[0, 1] = 1.0  # one frame off by 1: level L1 1/3, differences off by 1 in both pairs
    weights = torch.ones(1, 3)
    assert float(refiner_loss(refined, reference, weights, 0.0)) == pytest.approx(1 / 3)
    assert float(refiner_loss(refined, reference, weights, 0.5)) == pytest.approx(1 / 3 + 0.5 * 1.0)
    weights[0, 2] = 0.0  # a frame past the song's end counts in neither term
    assert float(refiner_loss(refined, reference, weights, 0.5)) == pytest.approx(1 / 2 + 0.5 * 1.0)


def _example(path: Path, windows: int, seed: int, offset: float) -> Path:
    """A stored example whose reference is the mix raised by `offset` in the low half of the mel bins."""
    network, magnitude, shares, onsets = _inputs(windows, WINDOW_FRAMES, seed)
    mix = torch.from_numpy(P.mix_log_mel(network.numpy(), magnitude.numpy(), shares.numpy()))
    reference = mix.clone()
    reference[..., : N_MELS // 2] += offset
    buffer = io.BytesIO()
    np.savez(
        buffer,
        network=network.numpy().astype(np.float16),
        partials=np.log(np.maximum(magnitude.numpy(), math.exp(MIN_LOG_MEL))).astype(np.float16),
        shares=shares[..., 0].numpy().astype(np.float16),
        onsets=onsets[..., 0].numpy().astype(np.float16),
        reference=reference.reshape(-1, N_MELS).numpy().astype(np.float16),
        weights=(np.arange(windows * WINDOW_FRAMES) < windows * WINDOW_FRAMES - 40)
        .reshape(windows, -1)
        .astype(np.float16),
    )
    path.write_bytes(buffer.getvalue())
    return path


def test_the_fit_learns_a_correction_and_resumes(tmp_path):
    files = [_example(tmp_path / f"e{k}.npz", 2, k, 0.5) for k in range(3)]
    config = RefinerTrainConfig(shape=SMALL, batch_size=4, crop_frames=32, max_steps=150, checkpoint_every=50)
    trainer = RefinerTrainer(files, tmp_path / "run", config)
    assert trainer.windows == 6 and float(trainer.examples["weights"].sum()) == 3 * (2 * WINDOW_FRAMES - 40)
    before = float(refiner_loss(*_scored(trainer), config.flux_weight))
    assert before == pytest.approx(0.25, abs=0.01)  # half the bins off by 0.5; the differences match
    # (the onset frames, a tenth, cannot be corrected: the fitted loss ends near 0.025 at best)
    trainer.train()
    after = float(refiner_loss(*_scored(trainer), config.flux_weight))
    assert after < 0.4 * before
    fitted = load_refiner(tmp_path / "run" / REFINER_FILE)
    assert fitted.shape == SMALL
    resumed = RefinerTrainer(files, tmp_path / "run", RefinerTrainConfig(**{**config.__dict__, "max_steps": 160}))
    assert resumed.step == 150
    assert resumed.draws.get_state().equal(trainer.draws.get_state())


def _scored(trainer: RefinerTrainer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The trainer's EMA refiner on all its windows, the reference and the frame weights."""
    examples = {name: value.float() for name, value in trainer.examples.items()}
    with torch.no_grad():
        refined = trainer.ema_weights(*refiner_inputs(examples))
    return refined, examples["reference"], examples["weights"]


def test_the_config_file_sets_the_shape_and_names_bad_keys(tmp_path):
    config = RefinerTrainConfig.from_file(ROOT / "configs" / "refiner.toml")
    assert config.shape == RefinerShape() and config.max_steps >= 1
    path = tmp_path / "bad.toml"
    path.write_text("[refiner]\nhidden = 8\ndilations = [1, 3]\n[train]\nmax_steps = 5\n")
    assert RefinerTrainConfig.from_file(path).shape == RefinerShape(hidden=8, dilations=(1, 3))
    path.write_text("[train]\nlearning_rat = 1.0\n")
    with pytest.raises(ValueError, match=r"bad.toml: refiner train config: unknown keys \['learning_rat'\]"):
        RefinerTrainConfig.from_file(path)
    path.write_text("[train]\ncrop_frames = 300\n")
    with pytest.raises(ValueError, match="crop_frames must be at most 256"):
        RefinerTrainConfig.from_file(path)


@pytest.mark.slow  # renders a data set with the tiny model and fits through the CLI
def test_cli_fits_a_refiner_to_a_data_set_and_renders_with_it(tmp_path, tiny_model_path):
    from tests.test_partials import _dataset_from, _note, _song

    songs = [_song([_note(0.0, 1.0, pitch=60), _note(0.5, 2.0, pitch=67, program=24)]), _song([_note(0.2, 3.0)])]
    _dataset_from(tmp_path / "ds", songs, np.full((N_MELS, P.COLUMNS), 0.5, np.float32))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(tiny_model_path.read_bytes())
    P.save_partials(_random_partials(), model_dir / PARTIALS_FILE)
    config = tmp_path / "r.toml"
    config.write_text("[refiner]\nhidden = 8\nkernel = 3\ndilations = [1]\n[train]\nmax_steps = 20\nbatch_size = 2\n")
    runner = CliRunner()
    args = ["fit-refiner", "--data", str(tmp_path / "ds"), "--model", str(model_dir / "model.safetensors")]
    args += ["--run", str(tmp_path / "run"), "--config", str(config), "--out", str(model_dir / REFINER_FILE)]
    result = runner.invoke(app, [*args[:2], str(tmp_path / "empty"), *args[3:]])
    assert result.exit_code == 1 and "empty: no training pieces" in result.output, result.output
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    stored = sorted(p.name for p in (tmp_path / "run" / "examples").iterdir())
    assert stored == sorted(f"{r.piece_id}.npz" for r in load_records(tmp_path / "ds")) and len(stored) == 2
    assert load_refiner(model_dir / REFINER_FILE).shape == RefinerShape(hidden=8, kernel=3, dilations=(1,))
    midi = write_midi(tmp_path / "a.mid", [(60, 0.0, 1.0, 100)])
    outputs = []
    for flag in ("--refiner", "--no-refiner"):
        out = tmp_path / f"a{flag}.wav"
        result = runner.invoke(
            app, ["render", str(midi), "-o", str(out), "--model", str(model_dir / "model.safetensors"), flag, *FAST]
        )
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0] != outputs[1]


def test_the_bundled_model_ships_the_refiner_its_config_describes():
    checkpoint = resolve_model(None)
    assert checkpoint.refiner_path is not None and checkpoint.refiner_path.name == REFINER_FILE
    config = RefinerTrainConfig.from_file(ROOT / "configs" / "refiner.toml")
    refiner = load_refiner(checkpoint.refiner_path)
    assert refiner.shape == config.shape
    assert float(refiner.correction.weight.abs().max()) > 0  # fitted, not the identity an unfitted one is
