"""Models from the Hugging Face hub, against a fake local cache: resolving ids, `download`, `models`, `convert`, and
the official checkpoint's ONNX MelGAN as the default vocoder."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from midisynth.cli import app
from midisynth.constants import HOP_LENGTH
from midisynth.model import hub
from midisynth.model.checkpoints import file_sha256, load_diffusers, load_model_file
from midisynth.model.config import load_config
from midisynth.model.resolve import resolve_model
from midisynth.model.samplers import DIFFUSERS_SAMPLING, SamplingDefaults
from midisynth.render.pipeline import Synthesizer
from midisynth.render.silence import silence
from midisynth.score.midi import read_midi
from midisynth.vocoders.vocoder import GriffinLim, OnnxVocoder
from tests.conftest import FAST, ROOT
from tests.onnx_models import NEEDS_ONNXRUNTIME, ToyMelGan, export_onnx
from tests.reference import save_reference_checkpoint

REPO = hub.OFFICIAL_MODEL
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def add_to_cache(cache: Path, repo_id: str, checkpoint: Path, commit: str = COMMIT, ref: str = "main") -> Path:
    """Lay out a checkpoint's files as huggingface_hub caches them (blobs named by hash, snapshot symlinks, refs);
    returns the snapshot directory."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        blob = repo / "blobs" / file_sha256(file)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(checkpoint)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty, offline Hugging Face cache: set in the environment (for subprocesses) and in huggingface_hub's
    constants (which it reads from the environment once, when first imported)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture(scope="module")
def official_layout(tmp_path_factory) -> Path:
    """A tiny checkpoint in the official repository's layout: random diffusers weights and a toy melgan/model.onnx."""
    root = tmp_path_factory.mktemp("official")
    save_reference_checkpoint(root, load_config(ROOT / "configs" / "tiny.toml").model, seed=3)
    (root / "melgan").mkdir()
    torch.manual_seed(0)
    export_onnx(ToyMelGan(), root / "melgan" / "model.onnx")
    return root


def test_parse_hub_id():
    assert hub.parse_hub_id(REPO) == hub.HubId(REPO)
    assert hub.parse_hub_id(f"{REPO}@v1.0") == hub.HubId(REPO, "v1.0")
    for path_like in ("model.safetensors", "runs/model.safetensors", "./a/b", "/abs/dir", "a/b/c", "~/x", "a/b@c@d"):
        assert hub.parse_hub_id(path_like) is None, path_like


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript-based ONNX exporter
def test_render_from_the_cache_uses_the_snapshot_and_its_melgan(official_layout, hub_cache, short_midi, tmp_path):
    pytest.importorskip("onnxruntime", reason=NEEDS_ONNXRUNTIME)
    snapshot = add_to_cache(hub_cache, REPO, official_layout)
    for spec in (REPO, f"{REPO}@main", f"{REPO}@{COMMIT}"):
        assert resolve_model(spec).source == snapshot
    out, mel = tmp_path / "hub.wav", tmp_path / "hub_mel.npy"
    result = run("render", str(short_midi), "-o", str(out), "--mel-out", str(mel), "--model", REPO, *FAST)
    assert result.exit_code == 0, result.output
    audio, _ = sf.read(out, dtype="float32")
    features = np.load(mel)
    assert audio.shape[0] == features.shape[0] * HOP_LENGTH == 125 * HOP_LENGTH  # 1.5 s + 1 s release tail
    melgan = OnnxVocoder(official_layout / "melgan" / "model.onnx")
    gated = silence(read_midi(short_midi), melgan(features))  # muted where the score is silent
    np.testing.assert_allclose(audio, np.clip(gated, -1, 1), atol=1.5 / 32768)  # PCM_16 rounding
    direct = tmp_path / "direct.wav"
    assert run("render", str(short_midi), "-o", str(direct), "--model", str(official_layout), *FAST).exit_code == 0
    np.testing.assert_array_equal(sf.read(direct)[0], sf.read(out)[0])


def test_an_existing_path_wins_over_a_hub_id(official_layout, hub_cache, tiny_model_path, tmp_path, monkeypatch):
    add_to_cache(hub_cache, REPO, official_layout)
    monkeypatch.chdir(tmp_path)
    Path("google").mkdir()
    shutil.copyfile(tiny_model_path, REPO)  # a local file that happens to be named like the hub id
    checkpoint = resolve_model(REPO)
    assert checkpoint.source == Path(REPO) and "hub_id" not in checkpoint.metadata
    expected = load_model_file(tiny_model_path).model.state_dict()
    for name, tensor in checkpoint.model.state_dict().items():
        torch.testing.assert_close(tensor, expected[name])


def test_uncached_id_names_the_download_command(hub_cache, short_midi, tmp_path):
    result = run("render", str(short_midi), "-o", str(tmp_path / "x.wav"), "--model", "google/other-model@v2", *FAST)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "`midisynth download google/other-model@v2`" in result.stderr
    missing = run("render", str(short_midi), "-o", str(tmp_path / "x.wav"), "--model", "gone.safetensors", *FAST)
    assert missing.exit_code == 2 and "gone.safetensors: no such model file or directory" in missing.stderr
    assert not (tmp_path / "x.wav").exists()


def test_models_lists_cached_checkpoints(official_layout, hub_cache, tmp_path):
    empty = run("models")
    assert (
        empty.exit_code == 0
        and f"no Spectrogram Diffusion checkpoints in the Hugging Face cache ({hub_cache})" in empty.stdout
    )
    snapshot = add_to_cache(hub_cache, REPO, official_layout)
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text("{}")
    add_to_cache(hub_cache, "someone/bert", other)  # another kind of model: not listed
    megabytes = sum(f.stat().st_size for f in official_layout.rglob("*") if f.is_file()) / 1e6
    expected = f"hub: {REPO}@main  commit={COMMIT[:12]}  {megabytes:,.1f} MB  {snapshot}"
    result = run("models")
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and expected in lines
    assert lines[lines.index(expected) + 1] == "  sampling: ddpm, 100 steps, guidance 1"  # diffusers' pipeline
    assert "someone/bert" not in result.stdout
    # a fresh process finds the cache through HF_HUB_CACHE alone
    fresh = subprocess.run(
        [sys.executable, "-m", "midisynth.cli", "models"], capture_output=True, text=True, check=True
    )
    assert expected in fresh.stdout.splitlines()


def test_download_offline_fails_with_one_line(hub_cache):
    result = run("download", REPO, "--revision", "main")
    assert result.exit_code == 1
    assert (
        result.stderr == f"midisynth: cannot download {REPO}@main: HF_HUB_OFFLINE is set "
        "(unset it on a machine with network access)\n"
    )
    assert not hub_cache.exists()
    assert run("download", "not/a/hub/id").exit_code == 2
    assert run("download", f"{REPO}@main", "--revision", "other").exit_code == 2


def test_download_fetches_only_what_midisynth_reads(hub_cache, monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub import constants

    listing = [
        ".gitattributes",
        "README.md",
        "model_index.json",
        "scheduler/scheduler_config.json",
        "melgan/model.onnx",
    ]
    for module in ("notes_encoder", "continuous_encoder", "decoder"):
        listing += [
            f"{module}/config.json",
            f"{module}/diffusion_pytorch_model.bin",
            f"{module}/diffusion_pytorch_model.safetensors",
        ]
    fetched = {}

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        fetched.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id, revision=None: listing)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    result = run("download", "--revision", "abc")
    assert result.exit_code == 0 and result.stdout == f"{tmp_path / 'snapshot'}\n"
    assert fetched == {
        "repo_id": REPO,
        "revision": "abc",
        "allow_patterns": [
            "model_index.json",
            "scheduler/scheduler_config.json",
            "notes_encoder/config.json",
            "notes_encoder/diffusion_pytorch_model.safetensors",
            "continuous_encoder/config.json",
            "continuous_encoder/diffusion_pytorch_model.safetensors",
            "decoder/config.json",
            "decoder/diffusion_pytorch_model.safetensors",
            "melgan/model.onnx",
        ],
    }


def test_files_to_fetch_falls_back_to_pickle_and_rejects_other_models():
    hub_id = hub.HubId(REPO)
    pickle_only = [
        f"{m}/{f}"
        for m in ("notes_encoder", "continuous_encoder", "decoder")
        for f in ("config.json", "diffusion_pytorch_model.bin")
    ]
    assert hub.files_to_fetch(pickle_only, hub_id) == pickle_only
    with pytest.raises(hub.HubError, match="not a Spectrogram Diffusion checkpoint .no decoder/config.json"):
        hub.files_to_fetch([f for f in pickle_only if not f.startswith("decoder/")], hub_id)


def test_convert_a_cached_hub_id(official_layout, hub_cache, tmp_path):
    add_to_cache(hub_cache, REPO, official_layout)
    out = tmp_path / "official.safetensors"
    result = run("convert", REPO, str(out))
    assert result.exit_code == 0, result.output
    digest = result.stdout.split()[0]
    assert digest == file_sha256(out)
    converted = load_model_file(out, expected_sha256=digest)
    assert converted.metadata["converted_from"] == f"{REPO}@{COMMIT}"
    assert converted.sampling == DIFFUSERS_SAMPLING == SamplingDefaults("ddpm", 100, 1.0)  # carried over
    expected = load_diffusers(official_layout).model.state_dict()
    for name, tensor in converted.model.state_dict().items():
        torch.testing.assert_close(tensor, expected[name])
    uncached = run("convert", "google/other-model", str(tmp_path / "x.safetensors"))
    assert uncached.exit_code == 1 and "midisynth download google/other-model" in uncached.stderr


def test_melgan_without_onnxruntime_falls_back_to_griffin_lim(official_layout, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with caplog.at_level(logging.WARNING, logger="midisynth.render.pipeline"):
        synth = Synthesizer.from_pretrained(official_layout, device="cpu")
    assert isinstance(synth.vocoder, GriffinLim)
    (record,) = caplog.records
    assert record.getMessage() == (
        "midisynth: note: melgan/model.onnx not used (ONNX vocoders need onnxruntime: "
        "pip install 'midisynth[onnx]'); vocoding with griffin-lim"
    )
    with pytest.raises(ImportError, match="onnxruntime"):  # asked for by name: no silent substitute
        Synthesizer.from_pretrained(official_layout, device="cpu", vocoder=str(official_layout / "melgan/model.onnx"))


def test_without_huggingface_hub_hub_ids_say_what_to_install(tiny_model_path, short_midi, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if it were not installed
    result = run("render", str(short_midi), "-o", str(tmp_path / "x.wav"), "--model", REPO, *FAST)
    assert result.exit_code == 2
    assert result.stderr == "midisynth: a hub id needs huggingface_hub: pip install 'midisynth[hub]'\n"
    listed = run("models")
    assert listed.exit_code == 0 and "hub checkpoints not listed: a hub id needs huggingface_hub" in listed.stdout
    assert run("download").exit_code == 1
    assert resolve_model(tiny_model_path).source == tiny_model_path  # paths need no hub


@pytest.mark.parametrize("hub_major", ["httpx", "requests"])
def test_download_without_network_says_the_hub_cannot_be_reached_and_how_to_use_a_checkpoint_on_disk(
    hub_cache, monkeypatch, hub_major
):
    """huggingface_hub 1.x raises httpx.ConnectError when the hub is out of reach (0.x: requests' ConnectionError,
    an OSError); neither is a traceback."""
    import types

    import huggingface_hub
    from huggingface_hub import constants

    httpx = types.ModuleType("httpx")  # httpx's error classes as huggingface_hub 1.x raises them
    httpx.TransportError = type("TransportError", (Exception,), {})
    httpx.ConnectError = type("ConnectError", (httpx.TransportError,), {})
    monkeypatch.setitem(sys.modules, "httpx", httpx)
    failure = (
        httpx.ConnectError("[Errno -3] Temporary failure in name resolution")
        if hub_major == "httpx"
        else ConnectionError()
    )

    def unreachable(self, repo_id, revision=None):
        raise failure

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", unreachable)
    result = run("download", REPO)
    assert (result.exit_code, result.stderr) == (
        1,
        (
            f"midisynth: cannot download {REPO}: the hub ({constants.ENDPOINT}) cannot be reached (no network?); to use "
            "a checkpoint on disk, give its directory (diffusers layout) or .safetensors file: midisynth render --model "
            "DIR ...\n"
        ),
    )
