"""The `midisynth` command: a thin Typer layer over the library. This module lists the commands
(`midisynth.commands`: each parses its options and calls the library) and runs the chosen one."""

from __future__ import annotations

from typing import Annotated

import typer

from midisynth.commands import evaluation, models, play, render, score, training

app = typer.Typer(
    name="midisynth",
    help="Neural MIDI-to-audio rendering with Spectrogram Diffusion.\n\nExample: midisynth render song.mid -o song.wav",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from midisynth import __version__

        typer.echo(f"midisynth {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Neural MIDI-to-audio rendering with Spectrogram Diffusion."""


# The commands, in the order `midisynth --help` lists them.
app.command(epilog=render.EXAMPLES)(render.render)
app.command(epilog=play.EXAMPLES)(play.play)
app.command()(score.tokens)
app.command()(score.info)
app.command(epilog=training.DATASET_EXAMPLES)(training.dataset)
app.command(epilog=training.TRAIN_EXAMPLES)(training.train)
app.command(epilog=training.ADAPT_EXAMPLES)(training.adapt)
app.command()(models.convert)
app.command()(models.download)
app.command()(models.models)
app.command("eval")(evaluation.evaluate)
app.command("fit-partials")(training.fit_partials)
app.command("fit-refiner", epilog=training.REFINER_EXAMPLES)(training.fit_refiner)
app.command("train-vocoder")(training.train_vocoder)


def run() -> None:
    """The `midisynth` command (`midisynth.standard_streams.run_and_exit`)."""
    from midisynth.standard_streams import run_and_exit

    run_and_exit(lambda: app(prog_name="midisynth"), "midisynth")


if __name__ == "__main__":
    run()
