"""Network arithmetic: the formats the networks may compute in, and what `auto` picks on this hardware.

bf16 halves the memory traffic of every matmul, but only pays where the hardware multiplies bf16 natively: CUDA GPUs
of compute capability 8.0 or newer, and x86 CPUs with AVX-512 BF16 or AMX. Elsewhere (AVX2-only CPUs such as AMD Zen
3, most laptops, ARM) torch emulates it, and bf16 renders about 3x and trains up to 20x slower than fp32.

int8 (CPU only) is dynamic quantization of most Linear layers (`midisynth.model.int8`): weights stored as int8 per
output channel, each layer's input quantized on the fly, products summed in int32 by the quantized engine. On an x86
CPU without native bf16 its layers run three times as fast as fp32 and the held-out evaluation scores it as fp32
(docs/cpu_paths.md).

So `auto` renders in bf16 where bf16 is native, in int8 on other x86 CPUs (their quantized engine, fbgemm, runs on
AVX2; ARM's qnnpack is not what the evaluation measured), and in fp32 elsewhere; fp16 is a CUDA format it never
picks. Training never computes in int8: its `auto` is bf16 where native, else fp32.

The choice is a pure function of `Hardware` facts (`resolve_precision`), so it can be tested for any machine;
`hardware(device)` reads the facts of this one. Importing this module does not import torch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

AUTO = "auto"
PRECISIONS = (AUTO, "fp32", "bf16", "fp16", "int8")  # what a user may ask for
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo flags of native bf16 arithmetic
CUDA_BF16_CAPABILITY = (8, 0)  # Ampere: the first CUDA compute capability with bf16 tensor cores
CPUINFO = Path("/proc/cpuinfo")
X86_QUANTIZED_ENGINES = frozenset({"x86", "fbgemm"})  # torch's quantized engines whose int8 `auto` picks


@dataclass(frozen=True)
class Hardware:
    """What decides the precision on one device.

    `cpu_flags`: the CPU's feature flags as /proc/cpuinfo names them. `cpu_capability`: the vector ISA torch's own
    kernels dispatch to (`torch.backends.cpu.get_cpu_capability()`: "AVX512", "AVX2", "DEFAULT", ...; lowered by
    ATEN_CPU_CAPABILITY). `cuda_capability`: the CUDA device's compute capability, None on CPU.
    """

    device_type: str  # "cpu" or "cuda"
    cpu_flags: frozenset[str] = frozenset()
    cpu_capability: str = "DEFAULT"
    cuda_capability: tuple[int, int] | None = None
    cpu_model: str = ""
    quantized_engine: str = ""  # torch.backends.quantized.engine, "" where there is none


def native_bf16(hw: Hardware) -> bool:
    """True where bf16 matmuls run in hardware: a CUDA device of capability >= 8.0, or a CPU with AVX-512 BF16 or
    AMX whose AVX-512 kernels torch uses."""
    if hw.device_type == "cuda":
        return hw.cuda_capability is not None and hw.cuda_capability >= CUDA_BF16_CAPABILITY
    return bool(hw.cpu_flags & CPU_BF16_FLAGS) and hw.cpu_capability.upper().startswith("AVX512")


def check_precision(requested: str, device_type: str | None = None) -> None:
    """Raise ValueError for a precision that does not exist, fp16 off CUDA (CPUs have no fast fp16 matmul) or int8
    off the CPU (dynamic quantization has CPU kernels only)."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose from {', '.join(PRECISIONS)}")
    if requested == "fp16" and device_type is not None and device_type != "cuda":
        raise ValueError(f"precision fp16 runs on CUDA only; on {device_type} use auto, fp32, bf16 or int8")
    if requested == "int8" and device_type is not None and device_type != "cpu":
        raise ValueError(f"precision int8 runs on CPU only; on {device_type} use auto, fp32, bf16 or fp16")


def resolve_precision(requested: str, hw: Hardware) -> str:
    """The precision to render in: `requested`, or for "auto" bf16 where it is native (`native_bf16`), else int8 on
    an x86 CPU with a quantized engine, else fp32."""
    check_precision(requested, hw.device_type)
    if requested == "int8" and not hw.quantized_engine:
        raise ValueError("precision int8 needs a quantized engine (fbgemm, x86 or qnnpack), and this torch has none")
    if requested != AUTO:
        return requested
    if native_bf16(hw):
        return "bf16"
    return "int8" if hw.device_type == "cpu" and hw.quantized_engine in X86_QUANTIZED_ENGINES else "fp32"


def training_precision(requested: str, hw: Hardware) -> str:
    """The precision to train in: `requested`, or for "auto" bf16 where it is native, else fp32 (never int8, which
    has no gradients). Refuses bf16 on a GPU without bf16 arithmetic (ValueError): there every step would be
    emulated, several times slower than fp32 (on a CPU, asking for bf16 is the user's call)."""
    if requested == "int8":
        raise ValueError('train config: precision int8 is for rendering only; use "auto", "fp32" or "bf16"')
    chosen = ("bf16" if native_bf16(hw) else "fp32") if requested == AUTO else resolve_precision(requested, hw)
    if chosen == "bf16" and hw.device_type == "cuda" and not native_bf16(hw):
        capability = ".".join(map(str, hw.cuda_capability or ()))
        raise ValueError(
            f"train config: precision bf16, but this GPU (compute capability {capability}) has no bf16 "
            f"arithmetic (it needs {'.'.join(map(str, CUDA_BF16_CAPABILITY))} or newer); use precision "
            '= "auto" or "fp32"'
        )
    return chosen


def explain(hw: Hardware) -> str:
    """One line: what `auto` resolves to on `hw`, and why."""
    chosen = resolve_precision(AUTO, hw)
    if hw.device_type == "cuda":
        why = f"compute capability {'.'.join(map(str, hw.cuda_capability or ()))}"
        return f"auto = {chosen} on cuda ({why}; bf16 needs {'.'.join(map(str, CUDA_BF16_CAPABILITY))} or newer)"
    found = sorted(hw.cpu_flags & CPU_BF16_FLAGS)
    if chosen == "bf16":
        why = f"native bf16: {', '.join(found)}"
    elif found:
        why = f"{', '.join(found)} present, but torch uses its {hw.cpu_capability} kernels"
    else:
        why = "no native bf16 (AVX-512 BF16 or AMX)"
    if chosen == "int8":
        why += f"; int8 Linear layers on the {hw.quantized_engine} engine"
    model = f"{hw.cpu_model}; " if hw.cpu_model else ""
    return f"auto = {chosen} on cpu ({model}{why})"


def read_cpuinfo(path: Path = CPUINFO) -> tuple[str, frozenset[str]]:
    """(model name, feature flags) of the first processor in /proc/cpuinfo; ("", empty) where there is none."""
    model, flags = "", frozenset[str]()
    try:
        with path.open() as lines:
            for line in lines:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = frozenset(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model, flags


@functools.cache
def hardware(device_type: str = "cpu", device_index: int | None = None) -> Hardware:
    """This machine's facts for `device_type` ("cpu" or "cuda"): /proc/cpuinfo, with torch's own CPU feature
    queries added where it has them (so machines without /proc/cpuinfo are covered), and the CUDA capability."""
    import torch

    model, flags = read_cpuinfo()
    queries = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    flags |= {flag for flag, query in queries.items() if getattr(torch.cpu, query, lambda: False)()}
    cuda = torch.cuda.get_device_capability(device_index) if device_type == "cuda" else None
    # torch has announced the end of its quantized tensors: a torch without them has no int8 path here
    engine = torch.backends.quantized.engine if hasattr(torch.ops.quantized, "linear_dynamic") else ""
    return Hardware(
        device_type,
        frozenset(flags),
        torch.backends.cpu.get_cpu_capability(),
        cuda,
        model,
        "" if engine == "none" else engine,
    )
