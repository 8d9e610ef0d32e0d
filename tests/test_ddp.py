"""Training on several processes (DistributedDataParallel, gloo on CPU): torchrun, equivalence with one process,
resuming with another number of processes, stopping all processes when one is signalled; and the one-process path,
which must train exactly as a plain loop does.

Two processes train on their halves of each global batch. Everything random in a step is drawn for the global
batch on every process (the windows, conditioning dropout, noise times, noise, context jitter) except the model's
dropout masks, so with dropout_rate = 0 two processes follow one process's loss curve up to the float rounding of
averaging gradients over processes: within LOSS_TOLERANCE (relative) over six steps.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from midisynth.cli import app
from midisynth.constants import SAMPLE_RATE
from midisynth.model.checkpoints import load_model_file
from midisynth.model.config import Config, load_config
from midisynth.training.ddp import RankBatches, Ranks, whole_batch
from midisynth.training.diffusion import Trainer, diffusion_loss, jitter_context_level, loader_workers
from midisynth.training.loop import endless
from tests.conftest import FAST, ROOT, write_midi
from tests.test_train import _fake_dataset

LOSS_TOLERANCE = 1e-5  # measured: 1.3e-7 over six steps
TINY = ROOT / "configs" / "tiny.toml"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _config(**train) -> Config:
    """The tiny config without model dropout (its masks are each process's own), checkpoints only at the end."""
    tiny = load_config(TINY)
    defaults = dict(max_steps=3, checkpoint_every=1000, eval_every=1000, batch_size=4, context_level_jitter=0.3)
    return Config(replace(tiny.model, dropout_rate=0.0), replace(tiny.train, **{**defaults, **train}))


def _in_two_processes(tmp_path: Path, work: Callable[[Ranks], None]) -> list[int]:
    """Run `work(ranks)` in two processes joined by gloo, started by fork as torchrun would start them (the test's
    modules are imported already: a fast start). Their exit statuses: 0 when `work` returned, 3 when it raised
    ValueError (its message in `tmp_path`/refused-RANK)."""
    import torch.distributed as dist

    store = tmp_path / f"store-{uuid.uuid4().hex}"

    def main(rank: int) -> None:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
        try:
            work(Ranks(rank, 2, rank))
        except ValueError as err:
            (tmp_path / f"refused-{rank}").write_text(str(err))
            os._exit(3)
        dist.destroy_process_group()

    procs = [multiprocessing.get_context("fork").Process(target=main, args=(rank,)) for rank in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    return [proc.exitcode for proc in procs]


def _train(config: Config, data: Path, runs: list[Path], signal_at_step: int | None = None) -> Callable[[Ranks], None]:
    """Training as one of several processes, rank r in `runs[r]`; with `signal_at_step`, rank 1 gets SIGTERM during
    that step."""

    def work(ranks: Ranks) -> None:
        trainer = Trainer(config, data, runs[ranks.rank], ranks=ranks)
        if signal_at_step is not None and ranks.rank == 1:
            step = trainer.optimizer.step

            def step_then_signal(*args, **kwargs):
                if trainer.step + 1 == signal_at_step:
                    os.kill(os.getpid(), signal.SIGTERM)
                return step(*args, **kwargs)

            trainer.optimizer.step = step_then_signal
        trainer.train()

    return work


def _losses(run: Path) -> list[float]:
    return [record["loss"] for record in json.loads((run / "history.json").read_text())]


@pytest.fixture
def one_thread():
    """Tiny models step fastest on one thread; on a busy machine more threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_each_process_takes_its_rows_of_the_global_batch():
    batches = [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [list(RankBatches(batches, Ranks(r, 2).rows(4))) for r in range(2)] == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]
    whole = whole_batch(4).randn(torch.Generator().manual_seed(5), 3)  # [4, 3]
    halves = [Ranks(r, 2).rows(4).randn(torch.Generator().manual_seed(5), 3) for r in range(2)]  # 2 x [2, 3]
    assert torch.equal(torch.cat(halves), whole)
    plain = torch.rand(4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(whole_batch(4).rand(torch.Generator().manual_seed(5)), plain)
    with pytest.raises(ValueError, match=r"batch_size 6 \(the global batch\) cannot be shared by 4 processes"):
        Ranks(0, 4).rows(6)


def test_one_process_trains_as_a_plain_loop(tmp_path, one_thread):
    """One process through the distributed-ready path (rows of a global batch, a batch sampler, the loss averaged
    over one process) trains bit for bit as a plain loop: shuffled DataLoader batches, draws for the whole batch."""
    _fake_dataset(tmp_path / "ds", pieces=4)
    tiny = load_config(TINY)
    config = Config(tiny.model, replace(tiny.train, max_steps=5, context_level_jitter=0.5, cond_dropout=0.3))
    trainer = Trainer(config, tmp_path / "ds", tmp_path / "run")
    trainer.train()

    plain = Trainer(config, tmp_path / "ds", tmp_path / "plain")  # the same initial weights and generators
    tc = config.train
    loader = DataLoader(
        plain.loader.dataset,
        batch_size=tc.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=plain._collate,
        generator=torch.Generator().manual_seed(tc.seed + 1),
    )
    batches = endless(loader)
    plain.model.train()
    for _ in range(tc.max_steps):
        batch = next(batches)
        batch["context"] = jitter_context_level(batch["context"], tc.context_level_jitter, plain.generator)
        for group in plain.optimizer.param_groups:
            group["lr"] = plain._lr() * group["lr_scale"]
        loss = diffusion_loss(plain.model, batch, plain.generator, tc.cond_dropout, tc.loss)
        plain.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.model.parameters(), tc.grad_clip)
        plain.optimizer.step()
        plain.ema_update()
        plain.step += 1
        plain.after_step(float(loss.detach()))
    assert [{k: v for k, v in r.items() if k != "time"} for r in trainer.history] == [
        {k: v for k, v in r.items() if k != "time"} for r in plain.history
    ]
    assert len({r["loss"] for r in plain.history}) == tc.max_steps
    for name, tensor in plain.ema.state_dict().items():
        assert torch.equal(trainer.ema.state_dict()[name], tensor), name


def test_a_batch_that_the_processes_cannot_share_is_refused_in_one_line(tmp_path, monkeypatch):
    """torchrun's 3 processes and the tiny config's batch of 2: the main process says why, the others say nothing,
    all exit with status 2 before joining the process group."""
    args = ["train", "--config", str(TINY), "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run")]
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2
        expected = (
            "midisynth: train config: batch_size 2 (the global batch) cannot be shared by 3 processes; use a "
            "multiple of 3, or a number of processes that divides it\n"
        )
        assert result.stderr == (expected if rank == 0 else "")
    assert not (tmp_path / "run").exists()


def test_loader_settings_follow_the_device(tmp_path, one_thread):
    assert loader_workers(None, torch.device("cpu")) == 0  # workers would take the threads that compute
    assert loader_workers(None, torch.device("cuda", 1)) == 4
    assert loader_workers(2, torch.device("cuda")) == 2 and loader_workers(0, torch.device("cuda")) == 0
    _fake_dataset(tmp_path / "ds", pieces=2)
    trainer = Trainer(load_config(TINY), tmp_path / "ds", tmp_path / "run")
    assert (trainer.loader.num_workers, trainer.loader.pin_memory) == (0, False)
    with pytest.raises(ValueError, match="num_workers must be a whole number >= 0, got -1"):
        replace(trainer.tc, num_workers=-1)
    with pytest.raises(ValueError, match="compile must be true or false, got 'yes'"):
        replace(trainer.tc, compile="yes")


@needs_cuda
def test_cuda_training_loads_in_workers_into_pinned_memory(tmp_path):
    _fake_dataset(tmp_path / "ds", pieces=2)
    trainer = Trainer(load_config(TINY), tmp_path / "ds", tmp_path / "run", device="cuda")
    assert (trainer.loader.num_workers, trainer.loader.pin_memory) == (4, True)
    trainer.train()
    assert trainer.step == trainer.tc.max_steps and math.isfinite(trainer.history[-1]["loss"])


@pytest.mark.slow
def test_compiled_steps_train_as_the_plain_ones(tmp_path, one_thread, monkeypatch):
    """`compile = true` runs the steps through torch.compile. Its graphs go to a backend that records them and runs
    them as traced (inductor's code generation takes minutes on a small CPU): the same losses as without."""
    graphs = []

    def recording_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module: real_compile(module, backend=recording_backend))
    _fake_dataset(tmp_path / "ds", pieces=2)
    config = _config(max_steps=2, batch_size=2)
    Trainer(config, tmp_path / "ds", tmp_path / "eager").train()
    assert not graphs
    Trainer(replace(config, train=replace(config.train, compile=True)), tmp_path / "ds", tmp_path / "compiled").train()
    assert graphs
    assert _losses(tmp_path / "compiled") == pytest.approx(_losses(tmp_path / "eager"), rel=1e-6)


@pytest.mark.slow
def test_two_processes_follow_one_and_resume_with_another_number(tmp_path, one_thread):
    data = tmp_path / "ds"
    _fake_dataset(data, pieces=6)
    config = _config()
    longer = replace(config, train=replace(config.train, max_steps=6))

    Trainer(config, data, tmp_path / "one").train()  # one process: steps 1-3 ...
    shutil.copytree(tmp_path / "one", tmp_path / "one-two")
    Trainer(longer, data, tmp_path / "one").train()  # ... then resumed for 4-6
    assert _in_two_processes(tmp_path, _train(longer, data, [tmp_path / "one-two"] * 2)) == [0, 0]  # 2 resume 1's
    assert _in_two_processes(tmp_path, _train(config, data, [tmp_path / "two"] * 2)) == [0, 0]  # two: 1-3 ...
    shutil.copytree(tmp_path / "two", tmp_path / "two-one")
    Trainer(longer, data, tmp_path / "two-one").train()  # ... resumed by one process

    one = _losses(tmp_path / "one")
    assert len(one) == 6 and len(set(one)) == 6
    assert _losses(tmp_path / "two") == pytest.approx(one[:3], rel=LOSS_TOLERANCE)
    assert _losses(tmp_path / "two-one") == pytest.approx(one, rel=LOSS_TOLERANCE)
    assert _losses(tmp_path / "one-two") == pytest.approx(one, rel=LOSS_TOLERANCE)
    weights = load_model_file(tmp_path / "one" / "model.safetensors").model.state_dict()
    for other in ("two-one", "one-two"):
        exported = load_model_file(tmp_path / other / "model.safetensors")
        assert exported.metadata["step"] == "6"
        for name, tensor in exported.model.state_dict().items():
            torch.testing.assert_close(tensor, weights[name], rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_and_they_must_resume_together(tmp_path, one_thread):
    data = tmp_path / "ds"
    _fake_dataset(data, pieces=4)
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    # both stop after the same step; the signalled process exits 128 + SIGTERM, the other ends normally
    assert _in_two_processes(tmp_path, _train(_config(max_steps=1000), data, [run, run], signal_at_step=2)) == [0, 143]
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2  # the step rank 1 was signalled in
    assert load_model_file(run / "model.safetensors").metadata["step"] == "2"

    # Rank 1 on a machine that does not see the run directory: it would start at step 0. Both refuse.
    elsewhere.mkdir()
    assert _in_two_processes(tmp_path, _train(_config(max_steps=1000), data, [run, elsewhere])) == [3, 3]
    expected = (
        "the processes resumed at different steps (0 to 2): every machine must see the same run directory "
        "(a shared file system)"
    )
    assert (tmp_path / "refused-0").read_text() == (tmp_path / "refused-1").read_text() == expected


@pytest.mark.slow
def test_torchrun_trains_a_model_that_renders(tmp_path):
    data, run = tmp_path / "ds", tmp_path / "run"
    _fake_dataset(data, pieces=4)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [*torchrun, "-m", "midisynth", "train", "--config", str(TINY), "--data", str(data), "--out", str(run)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("stopped at step 4") == 1  # the main process reports
    assert sorted(p.name for p in run.iterdir()) == ["history.json", "last.pt", "model.safetensors"]
    assert [h["step"] for h in json.loads((run / "history.json").read_text())] == [1, 2, 3, 4]
    midi = write_midi(tmp_path / "song.mid", [(60, 0.0, 1.0, 100), (64, 0.5, 1.5, 90)])  # one window
    rendered = CliRunner().invoke(
        app, ["render", str(midi), "-o", str(tmp_path / "song.wav"), "--model", str(run / "model.safetensors"), *FAST]
    )
    assert rendered.exit_code == 0, rendered.output
    audio, rate = sf.read(tmp_path / "song.wav")
    assert rate == SAMPLE_RATE and audio.shape[0] >= 1.5 * SAMPLE_RATE and abs(audio).max() > 1e-3


@pytest.mark.slow
def test_two_processes_train_a_recipe(tmp_path, one_thread):
    """Every process runs the recipe; each stage starts once the one before has written its weights."""
    from midisynth.training.recipe import train_recipe, trained_steps
    from tests.test_train import _recipe, _recipe_data

    _recipe_data(tmp_path / "ds")
    configs = _recipe(tmp_path)
    for path in configs:  # batches of 4 windows: 2 for each process
        path.write_text(path.read_text().replace("[train]\n", "[train]\nbatch_size = 4\n"))
    run = tmp_path / "run"
    assert _in_two_processes(tmp_path, lambda ranks: train_recipe(configs, tmp_path / "ds", run, ranks=ranks)) == [0, 0]
    assert trained_steps(run / "first") == 2 and trained_steps(run / "second") == 3
    assert [h["step"] for h in json.loads((run / "second" / "history.json").read_text())] == [1, 2, 3]
