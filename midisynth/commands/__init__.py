"""The commands of `midisynth` (`midisynth.cli` lists them), one module per part of the library they call, and what
they share: one-line errors and exit statuses, clean stops on signals, and the options of the commands that render.
A command parses its options, calls the library and says what happened; heavy imports (torch) happen inside
commands, so that `midisynth --help` stays instant."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated

import typer

EXIT_FAILED = 1
EXIT_USAGE = 2


def print_error(message: str) -> None:
    """One line on standard error, "midisynth: MESSAGE", with the message's unprintable characters escaped as repr()
    escapes them (a newline in a file name cannot start a forged line)."""
    if not message.isprintable():
        message = "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)
    typer.echo(f"midisynth: {message}", err=True)


@contextmanager
def exits(status: int, *errors: type[Exception]) -> Iterator[None]:
    """One line (`print_error`) for any of `errors` raised in the block, then exit with `status`."""
    try:
        yield
    except errors as err:
        print_error(str(err))
        raise typer.Exit(status) from None


@contextmanager
def stop_cleanly_on_signals(kept: str = "no partial output was left behind") -> Iterator[None]:
    """Ctrl-C, SIGTERM, SIGHUP and every other terminating signal unwind the block (temporary files are deleted),
    then the command exits with 128 + the signal's number after one line, which ends with `kept` (what was saved).
    A `Terminated` raised in the block by code that catches the signals itself (training) ends it the same way."""
    from midisynth.signals import Terminated, exit_on_signals

    try:
        with exit_on_signals():
            yield
    except Terminated as stop:
        print_error(f"{'interrupted' if stop.signal_name == 'SIGINT' else 'stopped by ' + stop.signal_name}; {kept}")
        raise typer.Exit(128 + stop.signum) from None


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# The options of the commands that render (render, eval): which model and vocoder run where, and how they sample.
ModelOption = Annotated[
    str | None,
    typer.Option(
        help="Model: midisynth .safetensors file, diffusers checkpoint dir, or cached hub id (owner/name[@revision]).",
        show_default="the bundled model",
        envvar="MIDISYNTH_MODEL",
    ),
]
DeviceOption = Annotated[Device, typer.Option(help="Where to run the networks.", envvar="MIDISYNTH_DEVICE")]
SamplerOption = Annotated[
    str | None,
    typer.Option(help="ddpm (diffusers), paper, ddim or dpmpp.", show_default="the model's (midisynth models)"),
]
StepsOption = Annotated[
    int | None,
    typer.Option(
        min=1, help="Denoising steps per window.", show_default="the model's for its sampler, else the sampler's usual"
    ),
]
GuidanceOption = Annotated[
    float | None,
    typer.Option(min=1.0, help="Classifier-free guidance weight; 1 disables it.", show_default="the model's"),
]
SeedOption = Annotated[int, typer.Option(help="Random seed (same seed, model and device: same audio).")]
VocoderOption = Annotated[
    str | None,
    typer.Option(
        help="griffin-lim, PATH.onnx or PATH.safetensors (neural vocoder).",
        show_default="the model's, else griffin-lim",
    ),
]
PrecisionOption = Annotated[
    str,
    typer.Option(
        help="Network arithmetic: auto (bf16 where the hardware computes it natively: CUDA compute capability 8.0+, "
        "CPUs with AVX-512 BF16 or AMX; else int8 on x86 CPUs, fp32 elsewhere), fp32, bf16, fp16 (CUDA only) or int8 "
        "(CPU only: int8 Linear layers). `midisynth models` shows what auto picks on this machine."
    ),
]
PartialsOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Share of the partials model (each note's partials placed from the score, with its "
        "instrument's fitted spectral envelope) in the spectrogram; 0 renders the network alone.",
        show_default="the model's (0 for a model without partials.safetensors)",
    ),
]
RefinerOption = Annotated[
    bool,
    typer.Option(
        "--refiner/--no-refiner",
        help="Correct the mix of the network and the partials model with the model's refiner, if it has one "
        "(refiner.safetensors); --no-refiner renders the plain mix.",
    ),
]


def render_options(
    sampler: str | None,
    steps: int | None,
    guidance: float | None,
    seed: int,
    precision: str,
    partials: float | None,
    refiner: bool,
):
    """The `RenderOptions` of the sampling options `render`, `play` and `eval` share (ValueError for a bad one)."""
    from midisynth.render.pipeline import RenderOptions

    return RenderOptions(
        sampler=sampler,
        steps=steps,
        guidance=guidance,
        seed=seed,
        precision=precision,
        partials_mix=partials,
        refine=refiner,
    )


def synthesizer(model: str | None, device: Device, vocoder: str | None, options, allow_pickle: bool = False):
    """`Synthesizer.from_pretrained`, or exit with status 2 and one line for a bad model, option or device."""
    from midisynth.model.checkpoints import CheckpointError
    from midisynth.render.pipeline import Synthesizer

    with exits(EXIT_USAGE, CheckpointError, ValueError, FileNotFoundError, ImportError):
        return Synthesizer.from_pretrained(
            model, device=device.value, vocoder=vocoder, options=options, allow_pickle=allow_pickle
        )


def auto_precision_line(device) -> str:
    """What `--precision auto` computes in on `device` (a torch.device), and why: "precision auto = fp32 on cpu (...)"."""
    from midisynth.precision import explain, hardware

    return f"precision {explain(hardware(device.type, device.index))}"


MAX_EVENTS_HELP = "Refuse MIDI files of more events than this, before parsing (0: no limit)."

# Options that the commands reading MIDI files or loading models share.
AllowPickleOption = Annotated[
    bool, typer.Option("--allow-pickle", help="Allow pickle-based .bin weights (weights_only).")
]
MaxDurationOption = Annotated[
    float, typer.Option(min=0.0, help="Refuse songs longer than this many seconds (0: no limit).")
]
MaxEventsOption = Annotated[int, typer.Option(min=0, help=MAX_EVENTS_HELP)]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
