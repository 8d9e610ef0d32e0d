"""`--precision auto`: bf16 where the hardware computes it natively, int8 on other x86 CPUs with a quantized engine,
fp32 elsewhere (and for training, never int8); decided from injected hardware facts, so these tests do not depend on
the machine that runs them (CUDA tests run only where CUDA is)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from midisynth.model import networks
from midisynth.model.config import TrainConfig, load_config
from midisynth.model.networks import attend, attention_bias
from midisynth.precision import Hardware, explain, native_bf16, read_cpuinfo, resolve_precision, training_precision
from midisynth.render.pipeline import RenderOptions, Synthesizer
from midisynth.score.midi import read_midi
from midisynth.vocoders.vocoder import load_vocoder
from tests.conftest import ROOT

# Flag sets as /proc/cpuinfo prints them (abridged to the vector extensions).
ZEN3_FLAGS = frozenset("sse4_2 avx avx2 fma f16c bmi2 sha_ni vaes vpclmulqdq".split())
ZEN4_FLAGS = ZEN3_FLAGS | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}
SAPPHIRE_RAPIDS_FLAGS = ZEN3_FLAGS | {"avx512f", "avx512bw", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"}
SKYLAKE_SERVER_FLAGS = ZEN3_FLAGS | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}  # AVX-512, but no bf16

ZEN3 = Hardware("cpu", ZEN3_FLAGS, "AVX2", cpu_model="AMD Ryzen 9 5950X 16-Core Processor", quantized_engine="x86")
ZEN4 = Hardware("cpu", ZEN4_FLAGS, "AVX512", cpu_model="AMD EPYC 9654 96-Core Processor", quantized_engine="x86")
SAPPHIRE_RAPIDS = Hardware("cpu", SAPPHIRE_RAPIDS_FLAGS, "AVX512", quantized_engine="x86")
SKYLAKE_SERVER = Hardware("cpu", SKYLAKE_SERVER_FLAGS, "AVX512", quantized_engine="x86")
ARM = Hardware("cpu", frozenset("fp asimd sve bf16 i8mm".split()), "SVE256", quantized_engine="qnnpack")
NO_ENGINE = replace(ZEN3, quantized_engine="")  # a torch built without quantized kernels


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        (ZEN3, "int8"),
        (SKYLAKE_SERVER, "int8"),
        (replace(ZEN3, quantized_engine="fbgemm"), "int8"),
        (ARM, "fp32"),  # qnnpack: not the engine the held-out evaluation measured
        (NO_ENGINE, "fp32"),
        (ZEN4, "bf16"),
        (SAPPHIRE_RAPIDS, "bf16"),
        (replace(ZEN4, cpu_capability="AVX2"), "int8"),  # ATEN_CPU_CAPABILITY=avx2: torch's kernels would emulate bf16
        (Hardware("cuda", ZEN3_FLAGS, "AVX2", (8, 0), quantized_engine="x86"), "bf16"),  # A100, whatever the host CPU
        (Hardware("cuda", ZEN3_FLAGS, "AVX2", (9, 0)), "bf16"),
        (Hardware("cuda", ZEN4_FLAGS, "AVX512", (7, 5), quantized_engine="x86"), "fp32"),  # T4: no bf16 tensor cores
    ],
)
def test_auto_picks_bf16_where_native_else_int8_on_x86_cpus(hw, expected):
    assert native_bf16(hw) == (expected == "bf16")
    assert resolve_precision("auto", hw) == expected
    assert training_precision("auto", hw) == ("bf16" if expected == "bf16" else "fp32")  # training: never int8


@pytest.mark.parametrize("asked", ["fp32", "bf16", "int8"])
def test_an_explicit_precision_is_kept(asked):
    assert resolve_precision(asked, ZEN3) == asked
    assert resolve_precision(asked, ZEN4) == asked


def test_fp16_only_on_cuda_and_unknown_names_are_refused():
    assert resolve_precision("fp16", Hardware("cuda", cuda_capability=(7, 5))) == "fp16"
    with pytest.raises(ValueError, match="fp16 runs on CUDA only"):
        resolve_precision("fp16", ZEN4)
    with pytest.raises(ValueError, match="^precision int8 runs on CPU only; on cuda use auto, fp32, bf16 or fp16$"):
        resolve_precision("int8", Hardware("cuda", cuda_capability=(9, 0), quantized_engine="x86"))
    with pytest.raises(ValueError, match="^precision int8 needs a quantized engine"):
        resolve_precision("int8", NO_ENGINE)
    with pytest.raises(ValueError, match="unknown precision 'int4'; choose from auto, fp32, bf16, fp16, int8"):
        resolve_precision("int4", ZEN4)
    with pytest.raises(ValueError, match="unknown precision"):
        RenderOptions(precision="half")


def test_explain_says_what_auto_picks_and_why():
    assert explain(ZEN3) == (
        "auto = int8 on cpu (AMD Ryzen 9 5950X 16-Core Processor; no native bf16 "
        "(AVX-512 BF16 or AMX); int8 Linear layers on the x86 engine)"
    )
    assert explain(ARM) == "auto = fp32 on cpu (no native bf16 (AVX-512 BF16 or AMX))"
    assert explain(ZEN4) == "auto = bf16 on cpu (AMD EPYC 9654 96-Core Processor; native bf16: avx512_bf16)"
    assert explain(replace(ZEN4, cpu_capability="AVX2")).endswith(
        "avx512_bf16 present, but torch uses its AVX2 kernels; int8 Linear layers on the x86 engine)"
    )
    assert explain(Hardware("cuda", cuda_capability=(7, 5))) == (
        "auto = fp32 on cuda (compute capability 7.5; bf16 needs 8.0 or newer)"
    )


def test_read_cpuinfo_takes_the_first_processor(tmp_path):
    x86 = tmp_path / "cpuinfo"
    x86.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD Ryzen 9 5950X\n"
        "flags\t\t: fpu avx avx2 fma\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    )
    assert read_cpuinfo(x86) == ("AMD Ryzen 9 5950X", frozenset({"fpu", "avx", "avx2", "fma"}))
    arm = tmp_path / "cpuinfo-arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd bf16\n")
    assert read_cpuinfo(arm) == ("", frozenset({"fp", "asimd", "bf16"}))
    assert read_cpuinfo(tmp_path / "missing") == ("", frozenset())


@pytest.fixture
def tiny_synth() -> Synthesizer:
    from midisynth.model.networks import SpectrogramDiffusion

    torch.manual_seed(0)
    model = SpectrogramDiffusion(load_config(ROOT / "configs" / "tiny.toml").model)
    return Synthesizer(model, load_vocoder("griffin-lim", "cpu"), "cpu", RenderOptions(steps=2))


@pytest.mark.parametrize(("hw", "expected"), [(ZEN3, "int8"), (ARM, "fp32"), (ZEN4, "bf16")])
def test_synthesizer_renders_in_what_auto_resolves_to(tiny_synth, short_midi, monkeypatch, hw, expected):
    """The default options ask for auto; the render computes in the resolved precision: a bf16 or int8 render makes
    (and keeps) that copy of the network and differs from the fp32 render only by rounding."""
    monkeypatch.setattr("midisynth.render.pipeline.hardware", lambda device_type, index=None: hw)
    assert tiny_synth.options.precision == "auto"
    assert tiny_synth.precision() == expected
    windows = tiny_synth.tokenize(read_midi(short_midi))
    auto = np.concatenate(list(tiny_synth.spectrogram_windows(windows)))
    assert sorted(tiny_synth._networks) == sorted({"fp32", expected})
    fp32 = np.concatenate(list(tiny_synth.spectrogram_windows(windows, RenderOptions(steps=2, precision="fp32"))))
    if expected == "fp32":
        np.testing.assert_array_equal(auto, fp32)
    else:
        assert 0 < np.abs(auto - fp32).mean() < 0.05


def test_a_cpu_synthesizer_refuses_fp16(tiny_synth):
    with pytest.raises(ValueError, match="fp16 runs on CUDA only; on cpu"):
        tiny_synth.with_options(precision="fp16")


def test_shipped_train_configs_ask_for_auto():
    """Every shipped config trains in fp32 on a CPU without native bf16 (emulated bf16 trained 24x slower) and in
    bf16 where it is native; only the test config pins fp32."""
    assert TrainConfig().precision == "auto"
    for path in sorted((ROOT / "configs").glob("*.toml")):
        if path.name == "refiner.toml":  # the refiner's config (RefinerTrainConfig): a small network fitted in fp32
            continue
        precision = load_config(path).train.precision
        if path.name == "tiny.toml":
            assert precision == "fp32"
            continue
        assert precision == "auto", path.name
        assert training_precision(precision, ZEN3) == "fp32"
        assert training_precision(precision, ZEN4) == "bf16"


def test_train_config_refuses_fp16():
    with pytest.raises(ValueError, match=r"precision must be one of \('auto', 'fp32', 'bf16'\), got 'fp16'"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize(("hw", "dtype"), [(ZEN3, torch.float32), (ZEN4, torch.bfloat16)])
def test_trainer_autocasts_to_what_auto_resolves_to(tmp_path, monkeypatch, hw, dtype):
    from midisynth.training.diffusion import Trainer, diffusion_loss
    from tests.test_train import _fake_dataset

    monkeypatch.setattr("midisynth.training.diffusion.hardware", lambda device_type, index=None: hw)
    cfg = load_config(ROOT / "configs" / "tiny.toml")
    cfg = replace(cfg, train=replace(cfg.train, precision="auto"))
    _fake_dataset(tmp_path / "ds")
    trainer = Trainer(cfg, tmp_path / "ds", tmp_path / "run")
    assert trainer.precision == {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    outputs = []
    trainer.model.decoder.register_forward_hook(lambda module, args, out: outputs.append(out.dtype))
    with trainer._autocast():
        diffusion_loss(trainer.model, next(iter(trainer.loader)), torch.Generator().manual_seed(0), 0.0, "l1")
    assert outputs == [dtype]


def test_training_refuses_bf16_on_a_gpu_without_it():
    """A T4 (compute capability 7.5) would emulate every bf16 step; auto trains it in fp32."""
    t4 = Hardware("cuda", ZEN4_FLAGS, "AVX512", (7, 5))
    with pytest.raises(
        ValueError,
        match=r"^train config: precision bf16, but this GPU \(compute capability 7\.5\) "
        r"has no bf16 arithmetic \(it needs 8\.0 or newer\); use precision = "
        r"\"auto\" or \"fp32\"$",
    ):
        training_precision("bf16", t4)
    assert training_precision("auto", t4) == training_precision("fp32", t4) == "fp32"
    assert training_precision("bf16", Hardware("cuda", ZEN3_FLAGS, "AVX2", (8, 0))) == "bf16"
    assert training_precision("bf16", ZEN3) == "bf16"  # on a CPU, the user's call (emulated: slow, not wrong)
    with pytest.raises(ValueError, match="precision int8 is for rendering only"):
        training_precision("int8", ZEN3)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_training_refuses_bf16_where_the_gpu_lacks_it(tmp_path):
    from midisynth.training.diffusion import Trainer
    from tests.test_train import _fake_dataset

    _fake_dataset(tmp_path / "ds", pieces=2)
    cfg = load_config(ROOT / "configs" / "tiny.toml")
    cfg = replace(cfg, train=replace(cfg.train, precision="bf16"))
    if torch.cuda.get_device_capability(0) >= (8, 0):
        assert Trainer(cfg, tmp_path / "ds", tmp_path / "run", device="cuda").precision == "bf16"
    else:
        with pytest.raises(ValueError, match="has no bf16 arithmetic"):
            Trainer(cfg, tmp_path / "ds", tmp_path / "run", device="cuda")


@needs_cuda
def test_cuda_auto_follows_the_device_capability():
    from midisynth.precision import hardware

    hw = hardware("cuda", 0)
    assert hw.cuda_capability == torch.cuda.get_device_capability(0)
    assert resolve_precision("auto", hw) == ("bf16" if hw.cuda_capability >= (8, 0) else "fp32")


@needs_cuda
@pytest.mark.parametrize("precision", ["auto", "fp32", "fp16"])
def test_cuda_render_matches_cpu_fp32(tiny_synth, short_midi, precision):
    """The CUDA path (device tensors, per-song CPU generators, autocast on cuda) renders what the CPU renders."""
    windows = tiny_synth.tokenize(read_midi(short_midi))
    options = RenderOptions(steps=2, precision="fp32")
    cpu = np.concatenate(list(tiny_synth.spectrogram_windows(windows, options)))
    gpu_synth = Synthesizer(tiny_synth.model, load_vocoder("griffin-lim", "cuda"), "cuda", options)
    gpu = np.concatenate(list(gpu_synth.spectrogram_windows(windows, replace(options, precision=precision))))
    tolerance = 1e-3 if gpu_synth.precision(replace(options, precision=precision)) == "fp32" else 0.05
    assert np.abs(gpu - cpu).mean() < tolerance
    audio = gpu_synth.render(read_midi(short_midi), replace(options, precision=precision))
    assert audio.shape == (gpu_synth.num_samples(read_midi(short_midi)),) and np.abs(audio).max() > 1e-4


def test_models_command_says_what_auto_picks(monkeypatch):
    from typer.testing import CliRunner

    from midisynth.cli import app

    monkeypatch.setattr("midisynth.precision.hardware", lambda device_type, index=None: ZEN3)
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == f"precision {explain(ZEN3)}"


SDPA = torch.nn.functional.scaled_dot_product_attention


def _float32_attention(q, k, v, bias):
    return torch.softmax(q.float() @ k.float().transpose(-1, -2) + bias.float(), dim=-1) @ v.float()


@pytest.mark.parametrize(
    ("queries", "keys", "native", "fused"),
    [(256, 512, True, False), (1100, 1000, True, True), (256, 512, False, True)],  # emulated bf16: fused
)
def test_bf16_cpu_attention_matches_float32(queries, keys, native, fused, monkeypatch):
    calls = []
    monkeypatch.setattr(networks, "native_bf16", lambda hw: native)
    monkeypatch.setattr(networks.F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or SDPA(*a, **kw))
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 64, generator=generator) * 0.4 for n in (queries, keys, keys))
    key_mask = torch.ones(2, keys, dtype=torch.bool)
    key_mask[1, keys // 3 :] = False  # the second example attends to its first third of keys only
    bias = attention_bias(key_mask, torch.float32)
    expected = _float32_attention(q, k, v, bias)  # [2, 4, queries, 64]
    got = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), bias.bfloat16())
    assert got.dtype == torch.bfloat16 and bool(calls) == fused
    error = (got.float() - expected).norm() / expected.norm()
    assert error < 0.01, error
    v_elsewhere = v.clone()
    v_elsewhere[1, :, keys // 3 :] = 100.0  # values of masked keys: no weight
    assert torch.equal(attend(q.bfloat16(), k.bfloat16(), v_elsewhere.bfloat16(), bias.bfloat16()), got)


def test_bf16_cpu_attention_with_every_key_masked_attends_uniformly():
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 8, 16, generator=generator) for _ in range(3))
    bias = attention_bias(torch.zeros(1, 8, dtype=torch.bool), torch.float32).bfloat16()
    got = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), bias)
    expected = v.bfloat16().float().mean(dim=2, keepdim=True).expand(1, 2, 8, 16)
    assert torch.allclose(got.float(), expected, atol=0.02)
