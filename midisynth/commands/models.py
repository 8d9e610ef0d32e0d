"""`midisynth convert`, `download` and `models`: checkpoints (`midisynth.model`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midisynth.commands import EXIT_FAILED, EXIT_USAGE, AllowPickleOption, exits, stop_cleanly_on_signals
from midisynth.model.hub import OFFICIAL_MODEL


def convert(
    source: Annotated[
        str,
        typer.Argument(
            help="A diffusers-layout checkpoint directory, a cached hub id (owner/name[@revision]), or a midisynth file."
        ),
    ],
    output: Annotated[Path, typer.Argument(help="The midisynth .safetensors file to write.")],
    half: Annotated[bool, typer.Option("--half/--full", help="Store weights as float16 (half the size).")] = False,
    allow_pickle: AllowPickleOption = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite/--no-overwrite", help="Replace an existing output file.")
    ] = False,
) -> None:
    """Convert a checkpoint to midisynth's single-file format; prints its sha256."""
    from midisynth.jobs.output import OutputError, check_writable
    from midisynth.jobs.plan import UsageError, check_name_lengths

    with exits(EXIT_FAILED, UsageError, OutputError):
        check_name_lengths([output])
        check_writable(output, overwrite)

    from midisynth.model.checkpoints import CheckpointError
    from midisynth.model.hub import HubError
    from midisynth.model.resolve import convert_model

    with exits(EXIT_FAILED, CheckpointError, HubError, ImportError, OutputError), stop_cleanly_on_signals():
        digest = convert_model(source, output, half, allow_pickle, overwrite)
    typer.echo(f"{digest}  {output}")


def download(
    model: Annotated[str, typer.Argument(help="Hub id: owner/name, optionally @revision.")] = OFFICIAL_MODEL,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit (the same as ID@REVISION).")] = None,
) -> None:
    """Fetch a checkpoint from the Hugging Face hub into its cache (only the files midisynth reads); prints where."""
    from midisynth.model import hub

    with exits(EXIT_USAGE, ValueError):
        hub_id = hub.requested_hub_id(model, revision)
    with exits(EXIT_FAILED, hub.HubError, ImportError):
        typer.echo(str(hub.download(hub_id)))


def models(
    directories: Annotated[
        list[Path] | None,
        typer.Argument(help="Model directories to describe too (what `midisynth adapt` writes).", show_default=False),
    ] = None,
) -> None:
    """List the bundled default model, its partials model and vocoder, the model directories given, and the
    checkpoints in the Hugging Face cache, each with the sampling it is rendered with unless --sampler, --steps or
    --guidance say otherwise; say what `--precision auto` computes in here."""
    from midisynth.model.checkpoints import CheckpointError
    from midisynth.model.resolve import model_listing

    with exits(EXIT_USAGE, CheckpointError):
        for line in model_listing(list(directories or [])):
            typer.echo(line)
