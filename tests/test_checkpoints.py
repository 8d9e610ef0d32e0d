"""Checkpoint loading (diffusers layout, midisynth format) and network parity with diffusers."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from midisynth.model.checkpoints import CheckpointError, load_checkpoint, load_diffusers, load_model_file, save_model
from midisynth.model.config import ModelConfig, load_config
from midisynth.model.networks import SpectrogramDiffusion
from tests.reference import save_reference_checkpoint

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny_cfg() -> ModelConfig:
    return load_config("configs/tiny.toml").model


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_cfg):
    root = tmp_path_factory.mktemp("diffusers_ckpt")
    modules = save_reference_checkpoint(root, tiny_cfg, seed=1)
    return root, modules


def _tokens(lengths: list[int], width: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        tokens[i, :n] = torch.randint(3, vocab, (n,), generator=g)
    return tokens


def test_notes_encoder_matches_diffusers(reference):
    root, (notes_ref, _, _) = reference
    model = load_diffusers(root).model
    tokens = _tokens([37, 120, 5], width=2048, vocab=1391)
    with torch.no_grad():
        ref, _ = notes_ref(encoder_input_tokens=tokens, encoder_inputs_mask=tokens > 0)
        ours, mask = model.notes_encoder(tokens)
        trimmed, _ = model.notes_encoder(tokens[:, :120])  # padding trimmed to the longest window
    valid = mask[..., None]
    assert (ours - ref).abs().mul(valid).max() <= TOL
    assert (trimmed - ref[:, :120]).abs().mul(valid[:, :120]).max() <= TOL


@pytest.mark.parametrize("has_context", [True, False])
def test_context_encoder_matches_diffusers(reference, has_context):
    root, (_, cont_ref, _) = reference
    model = load_diffusers(root).model
    context = torch.rand(1, 256, 128) * 2 - 1
    mask = torch.full((1, 256), has_context)
    with torch.no_grad():
        ref, _ = cont_ref(encoder_inputs=context, encoder_inputs_mask=mask)
        ours = model.context_encoder(context, mask)
    assert (ours - ref).abs().max() <= TOL


@pytest.mark.parametrize("has_context", [True, False])
def test_decoder_matches_diffusers(reference, has_context):
    root, (notes_ref, cont_ref, dec_ref) = reference
    model = load_diffusers(root).model
    tokens = _tokens([60, 17], width=2048, vocab=1391, seed=3)
    context = torch.rand(2, 256, 128) * 2 - 1
    context_mask = torch.tensor([has_context, has_context])
    x = torch.randn(2, 256, 128)
    t = torch.tensor([0.99, 0.31])
    with torch.no_grad():
        frames_mask = context_mask[:, None].expand(-1, 256)
        # diffusers' context encoder cannot run a batch larger than 1 (its position roll fails): row by row.
        rows = [
            cont_ref(encoder_inputs=context[i : i + 1], encoder_inputs_mask=frames_mask[i : i + 1]) for i in range(2)
        ]
        encodings = [
            notes_ref(encoder_input_tokens=tokens, encoder_inputs_mask=tokens > 0),
            (torch.cat([r[0] for r in rows]), frames_mask),
        ]
        ref = dec_ref(encodings_and_masks=encodings, decoder_input_tokens=x, decoder_noise_time=t)
        cache = model.encode(tokens[:, :60], context, context_mask)
        ours = model.decoder(x, t, cache)
    assert (ours - ref).abs().max() <= TOL


def test_unconditional_rows_equal_zeroed_encodings(reference):
    """Rows past the cache's batch get no cross-attention: the same as attending to zeroed, masked encodings."""
    root, (_, _, dec_ref) = reference
    model = load_diffusers(root).model
    x = torch.randn(1, 256, 128)
    t = torch.tensor([0.5])
    zeros = torch.zeros(1, 300, model.cfg.d_model)
    with torch.no_grad():
        ref = dec_ref(
            encodings_and_masks=[(zeros, torch.zeros(1, 300, dtype=torch.bool))],
            decoder_input_tokens=x,
            decoder_noise_time=t,
        )
        ours = model.decoder(x, t, None)
    assert (ours - ref).abs().max() <= TOL


def test_midisynth_format_round_trip(tmp_path, tiny_cfg):
    torch.manual_seed(0)
    model = SpectrogramDiffusion(tiny_cfg)
    digest = save_model(model, tmp_path / "m.safetensors", {"note": "test"})
    loaded = load_model_file(tmp_path / "m.safetensors", expected_sha256=digest)
    assert loaded.metadata["note"] == "test"
    assert loaded.model.cfg == tiny_cfg
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name])
    assert not list(tmp_path.glob("*.tmp"))
    # Loading switched torch's random initialisers off while it built the networks, and back on after.
    fresh = SpectrogramDiffusion(tiny_cfg).requires_grad_(False)
    assert 0.9 < float(fresh.notes_encoder.token_embedding.weight.std()) < 1.1  # N(0, 1), as nn.Embedding draws it
    bound = 1 / tiny_cfg.d_model**0.5  # kaiming_uniform_(a=sqrt(5)) of nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    weight = fresh.decoder.blocks[0].ff.wi_0.weight
    assert float(weight.abs().max()) <= bound and float(weight.std()) > bound / 3


def test_corrupted_model_file_detected(tmp_path, tiny_cfg):
    path = tmp_path / "m.safetensors"
    digest = save_model(SpectrogramDiffusion(tiny_cfg), path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_model_file(path, expected_sha256=digest)


def test_wrong_shapes_are_reported(tmp_path, tiny_cfg):
    path = tmp_path / "m.safetensors"
    save_model(SpectrogramDiffusion(tiny_cfg), path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    state["decoder.output_proj.weight"] = torch.zeros(3, 3)
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"decoder.output_proj.weight has shape \(3, 3\)"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d_model": 32.0}, "d_model must be a whole number >= 1, got 32.0"),
        ({"max_decoder_noise_time": 0}, "max_decoder_noise_time must be a finite number > 0"),
    ],
)
def test_model_metadata_that_cannot_render_is_refused_at_load(tmp_path, tiny_cfg, short_midi, change, message):
    from tests.test_cli import run

    path = tmp_path / "m.safetensors"
    save_model(SpectrogramDiffusion(tiny_cfg), path, {"model_config": json.dumps({**tiny_cfg.to_dict(), **change})})
    result = run("render", str(short_midi), "-o", str(tmp_path / "o.wav"), "--model", str(path))
    assert result.exit_code == 2
    assert result.output.startswith(f"midisynth: {path}: invalid model config in metadata (model config: {message}")
    assert result.output.count("\n") == 1


@contextmanager
def _address_space_limit(headroom: int):
    """The process may map at most `headroom` bytes more than it has mapped now (so an allocation of many GB fails
    at once instead of exhausting the machine)."""
    import resource

    status = Path("/proc/self/status").read_text()
    mapped = int(next(line for line in status.splitlines() if line.startswith("VmSize:")).split()[1]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + headroom, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the mapped size from Linux's /proc")
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d_model": 10**7}, "weights do not match the config: missing"),
        ({"vocab_size": 10**12}, "weights do not match the config: missing"),
        ({"vocab_size": 10**12, "d_model": 10**7}, "the model config asks for tensors too large to hold"),
        (
            {"num_decoder_layers": 10**6},
            "weights do not match the config: it asks for 1000004 layers, and the weights hold 8 tensors in all",
        ),
    ],
)
def test_metadata_asking_for_more_than_the_weights_is_refused_without_allocating(tmp_path, tiny_cfg, change, message):
    from midisynth.model.checkpoints import FORMAT_TAG

    path = tmp_path / "small.safetensors"
    save_file(
        {f"t{k}": torch.zeros(1) for k in range(8)},
        str(path),
        {"format": FORMAT_TAG, "model_config": json.dumps({**tiny_cfg.to_dict(), **change})},
    )
    assert path.stat().st_size <= 1024
    with _address_space_limit(2**30), pytest.raises(CheckpointError, match=f"{path.name}: {message}"):
        load_model_file(path)


@pytest.mark.parametrize("change", [{}, {"note_roll": True, "num_decoder_layers": 3}, {"num_heads": 3, "d_kv": 5}])
def test_tensor_shapes_are_those_of_the_networks(tiny_cfg, change):
    from dataclasses import replace

    from midisynth.model.networks import tensor_shapes

    cfg = replace(tiny_cfg, **change)
    made = {name: tuple(tensor.shape) for name, tensor in SpectrogramDiffusion(cfg).state_dict().items()}
    assert list(tensor_shapes(cfg).items()) == list(made.items())


def test_a_model_made_while_another_loads_is_whole(tiny_model_path, tiny_cfg, monkeypatch):
    """Checking a file's weights replaces none of the networks' functions: a model another thread makes meanwhile
    gets its true position tables."""
    from midisynth.model import networks

    made = []
    make_norm = networks.RMSNorm.__init__

    def make_another_model_first(norm, *args, **kwargs):
        if threading.current_thread() is threading.main_thread() and not made:
            worker = threading.Thread(target=lambda: made.append(SpectrogramDiffusion(tiny_cfg)))
            worker.start()
            worker.join()
        make_norm(norm, *args, **kwargs)

    monkeypatch.setattr(networks.RMSNorm, "__init__", make_another_model_first)
    load_model_file(tiny_model_path)
    expected = networks.sinusoid_table(tiny_cfg.max_tokens, tiny_cfg.d_model)
    assert torch.equal(made[0].notes_encoder.position_table, expected)


def test_loading_a_model_imports_no_compiler(tiny_model_path):
    """Checking the weights' shapes costs no import of torch's compiler (about a second)."""
    import subprocess
    import sys

    code = (
        f"import sys; from midisynth.model.checkpoints import load_model_file; "
        f"load_model_file({str(tiny_model_path)!r}); print('torch._dynamo' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_not_a_model_file(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"definitely not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors model"):
        load_checkpoint(path)


def test_pickle_weights_need_explicit_flag(tmp_path, tiny_cfg):
    root = tmp_path / "ckpt"
    save_reference_checkpoint(root, tiny_cfg, seed=2, safe=False)
    with pytest.raises(CheckpointError, match="--allow-pickle"):
        load_diffusers(root)
    assert load_diffusers(root, allow_pickle=True).model.cfg == tiny_cfg


def test_missing_module_and_inconsistent_config(tmp_path, reference):
    root, _ = reference
    with pytest.raises(CheckpointError, match="missing notes_encoder/config.json"):
        load_diffusers(tmp_path)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    cfg_path = broken / "decoder" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["d_model"] = 48
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="modules disagree on d_model"):
        load_diffusers(broken)


class _TouchOnLoad:
    """A pickle payload: unpickling it creates `path` (as a hostile checkpoint could run any code)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from pathlib import Path

        return Path.touch, (self.path,)


def test_pickle_code_never_runs_even_with_allow_pickle(tmp_path, reference):
    import shutil

    root, _ = reference
    hostile = tmp_path / "hostile"
    shutil.copytree(root, hostile)
    (hostile / "decoder" / "diffusion_pytorch_model.safetensors").unlink()
    weights = hostile / "decoder" / "diffusion_pytorch_model.bin"
    marker = tmp_path / "code-ran"
    torch.save({"spec_out.weight": _TouchOnLoad(marker)}, weights)
    with pytest.raises(CheckpointError, match="--allow-pickle"):
        load_diffusers(hostile)
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_diffusers(hostile, allow_pickle=True)
    assert not marker.exists()
    torch.load(weights, weights_only=False)  # the payload is live: a plain unpickling runs it
    assert marker.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"vocab_size": 10}, "vocab_size must be at least 1391"),
        ({"d_model": -32}, "d_model must be a whole number >= 1, got -32"),
        ({"prediction": "x0"}, "prediction must be one of"),
        ({"colour": "blue"}, r"unknown keys \['colour'\]"),
    ],
)
def test_invalid_config_in_a_model_file(tmp_path, tiny_cfg, change, message):
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    save_model(SpectrogramDiffusion(tiny_cfg), path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    meta["model_config"] = json.dumps({**tiny_cfg.to_dict(), **change})
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=f"invalid model config in metadata .*{message}"):
        load_checkpoint(path)


def test_corrupted_bundled_model_is_refused_before_rendering(tmp_path, tiny_cfg, short_midi, monkeypatch):
    from midisynth.model import resolve as models
    from tests.test_cli import FAST, run

    bundled = tmp_path / "bundled"
    digest = save_model(SpectrogramDiffusion(tiny_cfg), bundled / "model.safetensors")
    (bundled / "manifest.json").write_text(json.dumps({"model": {"file": "model.safetensors", "sha256": digest}}))
    monkeypatch.setattr(models, "BUNDLED_DIR", bundled)
    monkeypatch.delenv("MIDISYNTH_MODEL", raising=False)
    out = tmp_path / "song.wav"
    assert run("render", str(short_midi), "-o", str(out), *FAST).exit_code == 0
    out.unlink()
    data = bytearray((bundled / "model.safetensors").read_bytes())
    data[-10] ^= 0x01  # one bit of one weight
    (bundled / "model.safetensors").write_bytes(bytes(data))
    result = run("render", str(short_midi), "-o", str(out), *FAST)
    assert result.exit_code == 2
    assert "model.safetensors: sha256 mismatch (file corrupted or replaced)" in result.output
    assert not out.exists()


def test_sampling_defaults_are_stored_with_the_model(tmp_path, tiny_cfg, short_midi):
    from midisynth.model.resolve import resolve_model
    from midisynth.model.samplers import DIFFUSERS_SAMPLING, V_PREDICTION_SAMPLING, SamplingDefaults
    from midisynth.render.pipeline import RenderOptions, Synthesizer

    model = SpectrogramDiffusion(tiny_cfg)  # an epsilon model, like the official checkpoint
    save_model(model, tmp_path / "eps.safetensors")
    assert load_model_file(tmp_path / "eps.safetensors").sampling == DIFFUSERS_SAMPLING
    chosen = SamplingDefaults("dpmpp", 12, 1.5)
    save_model(model, tmp_path / "own.safetensors", {"sampling": chosen.to_json()})
    synth = Synthesizer.from_pretrained(str(tmp_path / "own.safetensors"), device="cpu", vocoder="griffin-lim")
    assert (synth.options.sampler, synth.options.steps, synth.options.guidance) == ("dpmpp", 12, 1.5)
    overridden = Synthesizer.from_pretrained(
        str(tmp_path / "own.safetensors"),
        device="cpu",
        vocoder="griffin-lim",
        options=RenderOptions(sampler="ddim", guidance=1.0),
    )
    assert (overridden.options.sampler, overridden.options.steps, overridden.options.guidance) == ("ddim", 20, 1.0)
    assert overridden.with_options(steps=3).options.steps == 3

    # a file written before sampling defaults were stored: loaded, with those of its prediction type
    state = load_file(tmp_path / "own.safetensors")
    with open(tmp_path / "own.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))["__metadata__"]
    del header["sampling"]
    save_file(state, tmp_path / "old.safetensors", metadata=header)
    assert load_model_file(tmp_path / "old.safetensors").sampling == DIFFUSERS_SAMPLING
    save_file(state, tmp_path / "bad.safetensors", metadata={**header, "sampling": '{"sampler": "magic"}'})
    with pytest.raises(CheckpointError, match="bad.safetensors: invalid sampling defaults"):
        load_model_file(tmp_path / "bad.safetensors")

    bundled = resolve_model(None)  # its manifest states DDIM, 3 steps, no guidance; its hash still checks out
    assert bundled.sampling == V_PREDICTION_SAMPLING == SamplingDefaults("ddim", 3, 1.0)


def test_models_shows_the_bundled_sampling():
    from tests.test_cli import run

    result = run("models")
    lines = result.stdout.splitlines()
    model_line = next(i for i, line in enumerate(lines) if line.startswith("model: "))
    assert result.exit_code == 0 and lines[model_line + 1] == "  sampling: ddim, 3 steps, guidance 1"
