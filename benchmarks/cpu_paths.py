"""CPU rendering options side by side in one process: seconds of CPU per 5.12 s window of the bundled model.

    python -m benchmarks.cpu_paths                                   # as this CPU is
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python -m benchmarks.cpu_paths

The second line holds torch to its AVX2 kernels, a stand-in for a CPU without AVX-512 and native bf16 (bf16 is
then left out: it would be emulated). Networks: fp32, bf16 (where native) and int8 dynamic quantization of the
Linear layers (fbgemm or qnnpack), each with its mean distance to the fp32 output; then Griffin-Lim (PGHI start + 4
iterations, the default; + 16; random start + 64) on the fp32 output. CPU seconds (process time) on one thread, so a busy machine changes them less than wall time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.run import write_long_midi


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=4, help="windows of a 2-minute four-instrument song")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs after a warm-up")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from midisynth.precision import hardware, native_bf16
    from midisynth.render.pipeline import RenderOptions, Synthesizer
    from midisynth.score.midi import read_midi
    from midisynth.vocoders.vocoder import GriffinLim

    with tempfile.TemporaryDirectory() as tmp:
        song = read_midi(write_long_midi(Path(tmp) / "song.mid", 2.0))
    synth = Synthesizer.from_pretrained(device="cpu")
    windows, note_inputs = synth.tokenize(song)[: args.windows], synth.note_inputs(song)
    networks = ["fp32", "int8"] + (["bf16"] if native_bf16(hardware("cpu")) else [])
    features, seconds = {}, {name: [] for name in networks}
    for _ in range(1 + args.repeats):  # the precisions take turns; the first round warms up
        for name in networks:

            def render(n=name):
                features[n] = np.concatenate(
                    list(synth.spectrogram_windows(windows, RenderOptions(precision=n), note_inputs=note_inputs))
                )

            seconds[name].append(cpu_seconds(render) / len(windows))
    report = {"torch_cpu_kernels": torch.backends.cpu.get_cpu_capability(), "windows": len(windows), "network": {}}
    for name in networks:
        report["network"][name] = {
            "cpu_s_per_window": min(seconds[name][1:]),
            "mean_abs_diff_to_fp32": float(np.abs(features[name] - features["fp32"]).mean()),
        }
    report["griffin_lim"] = {}
    for start, iterations in (("pghi", 4), ("pghi", 16), ("random", 64)):  # the default first, the old default last
        vocoder = GriffinLim(iterations=iterations, initial_phase=start)
        best = min(cpu_seconds(lambda v=vocoder: list(v.stream([features["fp32"]]))) for _ in range(2))
        report["griffin_lim"][f"{start} + {iterations}"] = {"cpu_s_per_window": best / len(windows)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
