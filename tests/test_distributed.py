"""Rendering on Ray: a local one-CPU Ray instance renders a tree of MIDI files as `midisynth render` does."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from midisynth.cli import app
from midisynth.constants import HOP_LENGTH
from midisynth.render.pipeline import RenderOptions
from tests.conftest import write_midi

ray = pytest.importorskip("ray", reason="scale-out needs Ray (pip install 'midisynth[ray]')")


@pytest.fixture
def local_ray():
    """A private one-CPU Ray instance, shut down after the test."""
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_render_on_ray_matches_the_cli(local_ray, tiny_model_path, tmp_path):
    from midisynth.jobs.distributed import render_on_ray

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    write_midi(src / "a.mid", [(60, 0.0, 1.0, 100), (64, 0.5, 1.5, 90)])  # 1.5 s: one window
    write_midi(src / "sub" / "b.mid", [(67, 0.0, 1.0, 100), (72, 0.5, 6.0, 100)])  # 6 s: two windows
    (src / "sub" / "bad.mid").write_bytes(b"this is not a MIDI file")
    out = tmp_path / "out"
    options = RenderOptions(sampler="ddim", steps=2, guidance=1.0, seed=3, precision="fp32")

    summary = render_on_ray([src], out, model=tiny_model_path, options=options)
    assert (summary.planned, summary.rendered, summary.skipped) == (3, 2, 0)
    (failure,) = summary.failures
    assert failure.name == str(src / "sub" / "bad.mid") and str(summary).endswith("2 of 3 rendered, 1 failed")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.wav", "sub", "sub/b.wav"]
    for name, seconds in (("a", 1.5), ("sub/b", 6.0)):
        ray_audio, _ = sf.read(out / f"{name}.wav")
        assert ray_audio.shape[0] == round((seconds + 1.0) * 50) * HOP_LENGTH  # song + 1 s release tail
        local = tmp_path / "local.wav"
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the one-CPU worker: float sums in another order differ by up to 7e-4
        try:
            result = CliRunner().invoke(
                app,
                [
                    "render",
                    str(src / f"{name}.mid"),
                    "-o",
                    str(local),
                    "--overwrite",
                    "-q",
                    "--model",
                    str(tiny_model_path),
                    "--sampler",
                    "ddim",
                    "--steps",
                    "2",
                    "--guidance",
                    "1",
                    "--seed",
                    "3",
                    "--precision",
                    "fp32",
                ],
            )
        finally:
            torch.set_num_threads(threads)
        assert result.exit_code == 0, result.output
        np.testing.assert_allclose(ray_audio, sf.read(local)[0], atol=1.5 / 32768)  # PCM_16 rounding at most

    resumed = render_on_ray([src], out, model=tiny_model_path, options=options, skip_existing=True)
    assert (resumed.planned, resumed.skipped, resumed.rendered, len(resumed.failures)) == (3, 2, 0, 1)
    with pytest.raises(ValueError, match="render workers cannot load the model: .*nothing.safetensors: no such model"):
        render_on_ray([src / "a.mid"], tmp_path / "unused", model=tmp_path / "nothing.safetensors", options=options)
