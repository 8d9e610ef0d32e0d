"""`midisynth eval`: renders scored against a reference synthesizer (`midisynth.evaluation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midisynth.commands import (
    EXIT_FAILED,
    EXIT_USAGE,
    Device,
    DeviceOption,
    GuidanceOption,
    ModelOption,
    PartialsOption,
    PrecisionOption,
    RefinerOption,
    SamplerOption,
    SeedOption,
    StepsOption,
    VocoderOption,
    exits,
    print_error,
    render_options,
    synthesizer,
)
from midisynth.constants import DEFAULT_PRECISION


def evaluate(
    midi_dir: Annotated[Path, typer.Argument(help="Folder of MIDI files (e.g. a data set's heldout_midi/).")],
    soundfont: Annotated[Path, typer.Option(help="SoundFont of the reference renders.")] = Path(
        "/usr/share/sounds/sf2/FluidR3_GM.sf2"
    ),
    json_out: Annotated[Path | None, typer.Option("--json", help="Write per-file and mean scores here.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N files.")] = None,
    transcription: Annotated[
        bool, typer.Option(help="Transcription F1 (basic-pitch; the eval extra, see README).")
    ] = True,
    visqol: Annotated[bool, typer.Option(help="ViSQOL MOS-LQO (visqol-python; the eval extra).")] = True,
    model: ModelOption = None,
    device: DeviceOption = Device.auto,
    sampler: SamplerOption = None,
    steps: StepsOption = None,
    guidance: GuidanceOption = None,
    seed: SeedOption = 0,
    vocoder: VocoderOption = None,
    precision: PrecisionOption = DEFAULT_PRECISION,
    partials: PartialsOption = None,
    refiner: RefinerOption = True,
) -> None:
    """Score renders against the SoundFont reference (log-mel L1, MR-STFT, onset correlation, level in the reference's
    silences, transcription F1, ViSQOL) beside the vocoder's ceiling and sine, noise and low-pass baselines. Files
    that fail are listed; the rest are scored."""
    from midisynth.evaluation.evaluate import Scorers, evaluation_files, format_table
    from midisynth.evaluation.evaluate import evaluate as run_eval
    from midisynth.files import OutputError

    with exits(EXIT_USAGE, OutputError, FileNotFoundError, ValueError, ImportError):
        options = render_options(sampler, steps, guidance, seed, precision, partials, refiner)
        files = evaluation_files(midi_dir, soundfont, json_out, limit)
        scorers = Scorers.create(transcription, visqol)
    synth = synthesizer(model, device, vocoder, options)

    def on_file(path: Path, error: str | None, report_so_far: dict) -> None:
        if error:
            print_error(f"{path}: {error}")
        else:
            typer.echo(f"evaluated {path.name}", err=True)

    with exits(EXIT_FAILED, OutputError):
        report = run_eval(synth, files, soundfont, scorers, on_file, json_out)
    typer.echo(format_table(report["summary"]))
    if report["failed"]:
        print_error(
            f"{len(report['failed'])} of {len(files)} files failed: "
            + ", ".join(Path(f["file"]).name for f in report["failed"])
        )
        raise typer.Exit(EXIT_FAILED)
