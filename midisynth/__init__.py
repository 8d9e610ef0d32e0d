"""midisynth: neural MIDI-to-audio rendering with Spectrogram Diffusion.

    from midisynth import Synthesizer, RenderOptions

    synth = Synthesizer.from_pretrained()  # the bundled model
    audio = synth.render("song.mid", RenderOptions(seed=1))  # float32 samples at 16 kHz

The package reads in the order the data flows: `score` (MIDI and tokens), `model` (network, noise schedule and
its samplers, configuration, checkpoints, model directories), `render` (the render pipeline), `vocoders` (log-mel to
audio), `jobs` (batches, output files, playback), `data` and `training` (data sets, trainers, adaptation),
`evaluation` (held-out metrics). The names above are imported on first use, so that importing the package (and
`midisynth --help`) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["RenderOptions", "Synthesizer", "__version__"]

if TYPE_CHECKING:
    from midisynth.render.pipeline import RenderOptions, Synthesizer


def __getattr__(name: str):
    if name in ("Synthesizer", "RenderOptions"):
        from midisynth.render import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'midisynth' has no attribute {name!r}")
