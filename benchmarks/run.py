"""`make bench`: speed and memory of midisynth, side by side with diffusers in the same run.

Writes JSON (default benchmarks/results.json, benchmarks/results_cuda.json with --device cuda) and prints a short
table. The machine is recorded (CPU model, its bf16/AMX flags, torch's CPU kernels, threads, torch version, GPU),
and every speed is given for fp32 and bf16 side by side, since bf16 is fast only where the hardware has it. Timings
are medians of repeated runs. Seconds per window are measured as encode time + steps x median step time, each
measured directly (running 100 full diffusers steps per window would take minutes per sample on 2 cores); the step
counts are stated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from midisynth.files import save_text_atomic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


PRECISIONS = ("fp32", "bf16", "int8")  # measured side by side on every CPU (int8 is CPU-only: not on cuda)
# Holds torch (ATen, oneDNN, MKL) to AVX2 kernels: a stand-in for a CPU without AVX-512 and native bf16 (AMD Zen 3).
NO_BF16_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def precisions_on(device: str) -> tuple[str, ...]:
    return PRECISIONS if device == "cpu" else tuple(p for p in PRECISIONS if p != "int8")


def median_seconds(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of `fn()` over `repeats` runs after `warmup` runs (CUDA work is waited for)."""

    def run() -> None:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_info(device: str) -> dict:
    """What the figures depend on: CPU model, its native bf16 / AMX flags, the vector kernels torch uses, threads,
    torch version, the GPU, and what `--precision auto` picks on `device`."""
    from midisynth.precision import CPU_BF16_FLAGS, explain, hardware

    cpu = hardware("cpu")
    info = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu.cpu_model,
        "cpu_bf16_flags": sorted(cpu.cpu_flags & CPU_BF16_FLAGS),
        "cpu_amx_flags": sorted(f for f in cpu.cpu_flags if f.startswith("amx")),
        "cpu_avx512": "avx512f" in cpu.cpu_flags,
        "torch_cpu_kernels": cpu.cpu_capability,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    info["auto_precision"] = explain(hardware(device, 0 if device == "cuda" else None))
    return info


def window_inputs(num_tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(1, 2048, dtype=torch.long)
    tokens[0, :num_tokens] = torch.randint(3, 1391, (num_tokens,), generator=g)
    context = torch.rand(1, 256, 128, generator=g) * 2 - 1
    x = torch.randn(1, 256, 128, generator=g)
    return tokens, context, x


def bench_base_vs_diffusers(num_tokens: int, repeats: int, device: str = "cpu") -> dict:
    """Official base size with random weights: one window's encode and one denoising step, both implementations,
    on `device`."""
    from midisynth.model.config import load_config
    from midisynth.model.low_precision import AUTOCAST_DTYPES, network_in
    from midisynth.model.networks import SpectrogramDiffusion
    from tests.reference import build_reference_modules

    cfg = load_config(ROOT / "configs" / "base.toml").model
    notes_ref, cont_ref, dec_ref = (module.to(device) for module in build_reference_modules(cfg))
    ours = SpectrogramDiffusion(cfg).eval().to(device)
    tokens, context, x = (tensor.to(device) for tensor in window_inputs(num_tokens))
    mask = torch.ones(1, 256, dtype=torch.bool, device=device)
    t = torch.tensor([0.5], device=device)
    results: dict[str, float] = {}
    with torch.inference_mode():

        def ref_encode():
            return [
                notes_ref(encoder_input_tokens=tokens, encoder_inputs_mask=tokens > 0),
                cont_ref(encoder_inputs=context, encoder_inputs_mask=mask),
            ]

        encodings = ref_encode()
        results["diffusers_encode_s"] = median_seconds(ref_encode, repeats)
        results["diffusers_step_s"] = median_seconds(
            lambda: dec_ref(encodings_and_masks=encodings, decoder_input_tokens=x, decoder_noise_time=t), repeats
        )
        trimmed = tokens[:, :num_tokens]
        has_context = torch.tensor([True], device=device)
        for precision in precisions_on(device):
            # As `Synthesizer` runs it: bf16 Linear weights cast once, not by autocast on every call; int8 quantized.
            net, half = network_in(ours, precision), AUTOCAST_DTYPES[precision]
            with torch.autocast(torch.device(device).type, dtype=half or torch.float32, enabled=half is not None):
                cache = net.encode(trimmed, context, has_context)
                results[f"midisynth_{precision}_encode_s"] = median_seconds(
                    lambda n=net: n.encode(trimmed, context, has_context), repeats
                )
                results[f"midisynth_{precision}_step_s"] = median_seconds(
                    lambda n=net, c=cache: n.decoder(x, t, c), repeats
                )
                x2, t2 = torch.cat([x, x]), torch.cat([t, t])
                results[f"midisynth_{precision}_guided_step_s"] = median_seconds(
                    lambda n=net, c=cache, x2=x2, t2=t2: n.decoder(x2, t2, c), repeats
                )
    return results


def window_seconds(r: dict, impl: str, steps: int, guided: bool = False) -> float:
    step = r[f"{impl}_guided_step_s"] if guided else r[f"{impl}_step_s"]
    return r[f"{impl}_encode_s"] + steps * step


def write_long_midi(path: Path, minutes: float) -> Path:
    """A looping four-instrument song of the given length."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    parts = [pretty_midi.Instrument(program=p) for p in (0, 33, 40)] + [pretty_midi.Instrument(0, is_drum=True)]
    t, beat = 0.0, 0.5
    while t < minutes * 60:
        for k, inst in enumerate(parts):
            pitch = 36 + (k * 12 + int(t / beat) * 5) % 48
            inst.notes.append(pretty_midi.Note(90, pitch if k < 3 else 36 + int(t / beat) % 3, t, t + beat * 0.9))
        t += beat
    pm.instruments.extend(parts)
    pm.write(str(path))
    return path


def bench_peak_rss(model: str | None, tmp: Path) -> dict:
    """Peak resident memory (MiB) of a whole `midisynth render` process for a 1- and a 10-minute song."""
    # VmHWM is the high-water mark of the process's own memory map, which starts afresh at exec; ru_maxrss would
    # carry over the forking parent's size (this benchmark process holds the base-size models by then).
    script = (
        "import re, sys; from midisynth.cli import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "status = open('/proc/self/status').read()\n"
        "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) / 1024)"
    )
    results = {}
    for minutes in (1, 10):
        midi = write_long_midi(tmp / f"song_{minutes}min.mid", minutes)
        cmd = [
            sys.executable,
            "-c",
            script,
            "render",
            str(midi),
            "-o",
            str(tmp / f"out_{minutes}.wav"),
            "-q",
            "--overwrite",
            "--steps",
            "2",
            "--guidance",
            "1",
        ] + (["--model", model] if model else [])
        start = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[f"{minutes}min"] = {"peak_rss_mib": float(out), "wall_s": time.perf_counter() - start}
    results["ratio_10_to_1"] = results["10min"]["peak_rss_mib"] / results["1min"]["peak_rss_mib"]
    return results


def bench_default_model(device: str = "cpu", seconds: float = 30.0, repeats: int = 3) -> dict | None:
    """The bundled model at default settings, model loaded, in each precision: real-time factor, seconds per window
    and time to first audio (medians of `repeats` renders after a warm-up render, whose time is reported as
    cold_render_s). The precisions take turns, so a change in the machine's load hits them alike."""
    from midisynth.model.resolve import bundled_manifest
    from midisynth.render.pipeline import RenderOptions, Synthesizer
    from midisynth.score.midi import read_midi
    from midisynth.score.tokens import tokenize

    if bundled_manifest() is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        song = read_midi(write_long_midi(Path(tmp) / "song.mid", seconds / 60))
    synth = Synthesizer.from_pretrained(device=device)
    runs: dict[str, list[tuple[float, float, int]]] = {
        p: [] for p in precisions_on(device)
    }  # (first chunk s, total s, samples)
    for _ in range(1 + repeats):  # the first run warms up (kernel selection, the bf16 weight copy) and is dropped
        for precision in runs:
            options = RenderOptions(precision=precision)
            start = time.perf_counter()
            first, samples = None, 0
            for chunk in synth.stream(song, options):
                first = first if first is not None else time.perf_counter() - start
                samples += chunk.shape[0]
            runs[precision].append((first, time.perf_counter() - start, samples))
    windows = len(tokenize(song))
    report: dict = {"options": str(synth.options), "auto_is": synth.precision(), "repeats": repeats}
    for precision, times in runs.items():
        total = statistics.median(r[1] for r in times[1:])
        samples = times[-1][2]
        report[precision] = {
            "audio_s": samples / 16_000,
            "render_s": total,
            "real_time_factor": samples / 16_000 / total,
            "seconds_per_window": total / windows,
            "time_to_first_audio_s": statistics.median(r[0] for r in times[1:]),
            "cold_render_s": times[0][1],
        }
    return report


EXAMPLE_SONG = ROOT / "midisynth" / "assets" / "examples" / "example.mid"  # the song the README's Quickstart renders


def bench_play(device: str = "cpu") -> dict | None:
    """`midisynth play` of the example song at default settings through a stand-in sound card that takes blocks at
    real-time pace (tests/clocked_output.py): seconds until its first block, counted from a fresh process's start
    (start-up, model load, the first window cold) and from the call to `play_song` with the model loaded and warmed
    up; in each, the underruns and the least audio buffered ahead of playback."""
    from midisynth.model.resolve import bundled_manifest

    if bundled_manifest() is None:
        return None
    script = """\
import json, sys
from midisynth.cli import app
from midisynth.jobs import play, sound_card
from tests.clocked_output import StandInCard

sound_card.SoundCard, reports, playing = StandInCard, [], play.play

def recorded(*args, **kwargs):
    reports.append(playing(*args, **kwargs))
    return reports[-1]

play.play = recorded
try:
    app(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps([StandInCard.opened[0].blocks[0][0], reports[0].underruns, reports[0].min_headroom_seconds]))
"""
    began = time.monotonic()
    out = (
        subprocess.run(
            [sys.executable, "-c", script, "play", str(EXAMPLE_SONG), "-q", "--device", device],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    first_block, underruns, headroom = json.loads(out)
    report = {
        "song": EXAMPLE_SONG.name,
        "fresh_process": {"first_block_s": first_block - began, "underruns": underruns, "min_headroom_s": headroom},
    }

    from midisynth.jobs.play import play_song
    from midisynth.render.pipeline import Synthesizer
    from midisynth.score.midi import read_midi
    from tests.clocked_output import ClockedOutput

    synth = Synthesizer.from_pretrained(device=device)
    song = read_midi(EXAMPLE_SONG)
    list(synth.stream(song))  # warm-up: kernel selection, the low-precision weights
    output = ClockedOutput()
    began = time.monotonic()
    played = play_song(synth, song, output)
    report["model_loaded"] = {
        "first_block_s": output.blocks[0][0] - began,
        "underruns": played.underruns,
        "min_headroom_s": played.min_headroom_seconds,
    }
    report["precision"] = synth.precision()
    return report


def bench_whole_process(tmp: Path, minutes: float = 2.0, repeats: int = 2) -> dict | None:
    """`midisynth render SONG -o OUT.wav` at default settings as a user runs it (start-up, model load, render, write),
    for a `minutes`-long four-instrument song: on this machine as it is, and with torch held to its AVX2 kernels
    (NO_BF16_ENV), a stand-in for a CPU without AVX-512 and native bf16, where `auto` computes in int8.
    Best of `repeats` wall times, the two settings taking turns."""
    from midisynth.model.resolve import bundled_manifest

    if bundled_manifest() is None:
        return None
    midi = write_long_midi(tmp / "whole.mid", minutes)
    settings = {"native": {}, "avx2_kernels": NO_BF16_ENV}
    walls: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(repeats):
        for name, env in settings.items():
            cmd = [
                sys.executable,
                "-m",
                "midisynth.cli",
                "render",
                str(midi),
                "-o",
                str(tmp / "whole.wav"),
                "-q",
                "--overwrite",
            ]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, env={**os.environ, **env})
            walls[name].append(time.perf_counter() - start)
    report: dict = {"audio_s": minutes * 60, "env": {"avx2_kernels": NO_BF16_ENV}}
    for name in settings:
        best = min(walls[name])
        report[name] = {"wall_s": best, "real_time_factor": minutes * 60 / best, "all_wall_s": walls[name]}
    return report


def bench_batch_throughput(device: str, num_songs: int = 4, seconds: float = 15.0) -> dict | None:
    """Windows per second of the bundled model at default settings for `num_songs` songs generated one at a time
    vs together (`--batch-size`), spectrograms only (the vocoder's cost is the same either way)."""
    from midisynth.model.resolve import bundled_manifest
    from midisynth.render.pipeline import Synthesizer
    from midisynth.score.midi import read_midi
    from midisynth.score.tokens import tokenize

    if bundled_manifest() is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        songs = [read_midi(write_long_midi(Path(tmp) / f"song{i}.mid", seconds / 60)) for i in range(num_songs)]
    windows = sum(len(tokenize(song)) for song in songs)
    synth = Synthesizer.from_pretrained(device=device)

    def one_at_a_time() -> None:
        for song in songs:
            for _, parts in synth.spectrogram_songs([song]):
                list(parts)

    def together() -> None:
        for _, parts in synth.spectrogram_songs(songs):
            list(parts)

    alone_s = median_seconds(one_at_a_time, repeats=2)
    batched_s = median_seconds(together, repeats=2)
    return {
        "device": device,
        "precision": synth.precision(),
        "songs": num_songs,
        "windows": windows,
        "batch_1_windows_per_s": windows / alone_s,
        f"batch_{num_songs}_windows_per_s": windows / batched_s,
        "speedup": alone_s / batched_s,
    }


def bench_train_step(device: str, data: Path = ROOT / "data" / "fluidr3", steps: int = 3) -> dict | None:
    """Seconds per training step of `configs/default.toml` on `data` (None without it) with its own precision ("auto",
    resolved for this machine) and with fp32, taking turns twice, each after one warm-up step."""
    from dataclasses import replace

    from midisynth.model.config import load_config
    from midisynth.training.diffusion import Trainer

    if not (data / "manifest.json").exists():
        return None
    config = load_config(ROOT / "configs" / "default.toml")
    seconds: dict[str, list[float]] = {"auto": [], "fp32": []}
    resolved = {}
    for precision in ("auto", "fp32") * 2:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(
                replace(config, train=replace(config.train, precision=precision)),
                data,
                Path(tmp) / "run",
                device=device,
            )
            resolved[precision] = trainer.precision
            trainer.model.train()
            seconds[precision].append(median_seconds(trainer.train_step, repeats=steps))
    return {
        "config": "configs/default.toml",
        "auto_resolves_to": resolved["auto"],
        **{f"{p}_s_per_step": statistics.median(s) for p, s in seconds.items()},
        "auto_to_fp32": statistics.median(seconds["auto"]) / statistics.median(seconds["fp32"]),
    }


def bench_help(repeats: int = 5) -> float:
    cmd = [sys.executable, "-m", "midisynth.cli", "--help"]
    return median_seconds(lambda: subprocess.run(cmd, check=True, capture_output=True), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results.json (results_cuda.json on cuda)")
    parser.add_argument("--tokens", type=int, default=400, help="real tokens in the benchmark window")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to torch")
    out = args.out or ROOT / "benchmarks" / ("results_cuda.json" if args.device == "cuda" else "results.json")

    from midisynth.model.directory import manifest_sampling
    from midisynth.model.resolve import bundled_manifest
    from midisynth.render.pipeline import RenderOptions

    defaults = RenderOptions().resolved(manifest_sampling(bundled_manifest()))
    default_steps = defaults.steps
    report: dict = {"device": args.device, "machine": machine_info(args.device), "help_s": bench_help()}
    base = bench_base_vs_diffusers(args.tokens, args.repeats, args.device)
    report["base_random_weights"] = base
    table = []
    for steps in (100, 10):
        ref = window_seconds(base, "diffusers", steps)
        for precision in precisions_on(args.device):
            ours = window_seconds(base, f"midisynth_{precision}", steps)
            table.append(
                {
                    "setting": f"{steps} steps, no guidance, {precision}",
                    "diffusers_s_per_window": ref,
                    "midisynth_s_per_window": ours,
                    "speedup": ref / ours,
                }
            )
    ref100 = window_seconds(base, "diffusers", 100)
    for precision in precisions_on(args.device):
        ours = window_seconds(base, f"midisynth_{precision}", default_steps, guided=defaults.guidance != 1.0)
        table.append(
            {
                "setting": f"midisynth default ({defaults.sampler} {default_steps} steps, guidance "
                f"{defaults.guidance}, {precision}) vs diffusers default (100 steps)",
                "diffusers_s_per_window": ref100,
                "midisynth_s_per_window": ours,
                "speedup": ref100 / ours,
            }
        )
    report["per_window"] = table
    report["default_model"] = bench_default_model(args.device, repeats=args.repeats)
    report["batch_throughput"] = bench_batch_throughput(args.device, num_songs=16 if args.device == "cuda" else 4)
    report["train_step"] = bench_train_step(args.device)
    report["play"] = bench_play(args.device)
    if args.device == "cpu":  # whole-process figures: start-up, memory and the no-bf16 stand-in are CPU matters
        with tempfile.TemporaryDirectory() as tmp:
            report["whole_process"] = bench_whole_process(Path(tmp))
            report["peak_rss"] = bench_peak_rss(_model_for_streaming(Path(tmp)), Path(tmp))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_text_atomic(out, json.dumps(report, indent=2))
    print_summary(report)
    print(f"wrote {out}")


def _model_for_streaming(tmp: Path) -> str | None:
    """None (the bundled model), or where none is bundled a tiny random model saved in `tmp`."""
    from midisynth.model.resolve import bundled_manifest

    if bundled_manifest() is not None:
        return None
    from midisynth.model.checkpoints import save_model
    from midisynth.model.config import load_config
    from midisynth.model.networks import SpectrogramDiffusion

    tiny = str(tmp / "tiny.safetensors")
    save_model(SpectrogramDiffusion(load_config(ROOT / "configs" / "tiny.toml").model), tiny)
    return tiny


def print_summary(report: dict) -> None:
    machine = report["machine"]
    print(
        f"{machine['cpu_model']} ({machine['threads']} threads, torch {machine['torch']}, "
        f"{machine['torch_cpu_kernels']} kernels{', ' + machine['gpu'] if 'gpu' in machine else ''}); "
        f"{machine['auto_precision']}"
    )
    print(f"midisynth --help: {report['help_s']:.3f} s")
    print(f"{'setting':<90} {'diffusers s':>12} {'midisynth s':>12} {'speedup':>8}")
    for row in report["per_window"]:
        print(
            f"{row['setting']:<90} {row['diffusers_s_per_window']:>12.2f} {row['midisynth_s_per_window']:>12.2f} "
            f"{row['speedup']:>7.1f}x"
        )
    if report["default_model"]:
        for precision in precisions_on(report["device"]):
            d = report["default_model"][precision]
            print(
                f"default model, {precision}: {d['real_time_factor']:.1f}x real time, "
                f"{d['seconds_per_window']:.2f} s/window, first audio after {d['time_to_first_audio_s']:.2f} s"
            )
    lines = {  # the optional sections, one line each
        "batch_throughput": lambda b: (
            f"batch of {b['songs']} songs on {b['device']}: "
            f"{b['batch_' + str(b['songs']) + '_windows_per_s']:.1f} windows/s, "
            f"{b['speedup']:.2f}x one at a time"
        ),
        "train_step": lambda t: (
            f"training step ({t['config']}): auto ({t['auto_resolves_to']}) "
            f"{t['auto_s_per_step']:.2f} s, fp32 {t['fp32_s_per_step']:.2f} s "
            f"({t['auto_to_fp32']:.2f}x)"
        ),
        "whole_process": lambda w: (
            f"whole process, {w['audio_s'] / 60:.0f}-min song: "
            f"{w['native']['real_time_factor']:.1f}x real time as is, "
            f"{w['avx2_kernels']['real_time_factor']:.1f}x on AVX2 kernels (no native bf16)"
        ),
        "play": lambda p: (
            f"play {p['song']} ({p['precision']}): first block {p['model_loaded']['first_block_s']:.2f} s "
            f"after the call, {p['fresh_process']['first_block_s']:.2f} s after a fresh process "
            f"starts; underruns {p['model_loaded']['underruns']} and "
            f"{p['fresh_process']['underruns']}, least headroom "
            f"{p['model_loaded']['min_headroom_s']:.2f} s and {p['fresh_process']['min_headroom_s']:.2f} s"
        ),
        "peak_rss": lambda r: (
            f"peak RSS: 1 min {r['1min']['peak_rss_mib']:.0f} MiB, 10 min "
            f"{r['10min']['peak_rss_mib']:.0f} MiB (ratio {r['ratio_10_to_1']:.2f})"
        ),
    }
    for section, line in lines.items():
        if report.get(section):
            print(line(report[section]))


if __name__ == "__main__":
    main()
