"""`midisynth render`: MIDI files to audio files (`midisynth.jobs`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from midisynth.commands import (
    EXIT_FAILED,
    EXIT_USAGE,
    AllowPickleOption,
    Device,
    DeviceOption,
    GuidanceOption,
    MaxDurationOption,
    MaxEventsOption,
    ModelOption,
    PartialsOption,
    PrecisionOption,
    QuietOption,
    RefinerOption,
    SamplerOption,
    SeedOption,
    StepsOption,
    VocoderOption,
    auto_precision_line,
    exits,
    print_error,
    render_options,
    stop_cleanly_on_signals,
    synthesizer,
)
from midisynth.constants import DEFAULT_PRECISION, MAX_SONG_EVENTS, MAX_SONG_SECONDS


class AudioContainer(StrEnum):
    wav = "wav"
    flac = "flac"
    ogg = "ogg"


class BitDepth(StrEnum):
    pcm16 = "16"
    pcm24 = "24"
    float32 = "32f"


EXAMPLES = """Examples:

midisynth render song.mid -o song.wav

midisynth render midi_dir/ -o flac_dir/ --format flac --bit-depth 24

midisynth render song.mid -o song.wav -r 44100 --loudness -14

midisynth render song.mid -o song.wav --stems --plot song.png

cat song.mid | midisynth render - -o - | sox -t wav - song.mp3

Environment: MIDISYNTH_MODEL and MIDISYNTH_DEVICE set the defaults of --model and --device."""


def render(
    inputs: Annotated[list[str], typer.Argument(help="MIDI files, directories (recursive), or '-' for stdin.")],
    output: Annotated[
        str | None, typer.Option("-o", "--output", help="Output file, directory, or '-' (WAV on stdout).")
    ] = None,
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
    mel_out: Annotated[
        Path | None, typer.Option("--mel-out", help="Also save the spectrogram [frames, 128] (.npy).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="Replace existing outputs.")] = False,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="Skip inputs whose outputs (mix, stems, --mel-out, --plot) are all complete; render the others again whole (resume a batch).",
        ),
    ] = False,
    allow_pickle: AllowPickleOption = False,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="Songs generated together (faster; each song's audio is what it gets alone, up to float rounding at fp32, see docs/usage.md); at most 32, a larger number is lowered to it.",
        ),
    ] = 1,
    max_duration: MaxDurationOption = MAX_SONG_SECONDS,
    max_events: MaxEventsOption = MAX_SONG_EVENTS,
    shard_spec: Annotated[
        str | None, typer.Option("--shard", help="Render only shard I of N (e.g. 3/8) for job arrays.")
    ] = None,
    sample_rate: Annotated[
        int,
        typer.Option(
            "--sample-rate", "-r", min=8000, max=192000, help="Output rate in Hz (soxr resampling from 16 kHz)."
        ),
    ] = 16000,
    start: Annotated[float, typer.Option(min=0.0, help="Render from this time (seconds).")] = 0.0,
    end: Annotated[float | None, typer.Option(min=0.0, help="Render up to this time (seconds).")] = None,
    output_format: Annotated[
        AudioContainer | None,
        typer.Option("--format", help="Audio format.", show_default="the output's extension; wav for directories"),
    ] = None,
    bit_depth: Annotated[
        BitDepth | None,
        typer.Option(
            help="Sample format: WAV 16, 24 or 32f (float); FLAC 16 or 24; OGG none (Vorbis).", show_default="16"
        ),
    ] = None,
    loudness: Annotated[
        float | None,
        typer.Option(
            min=-70.0,
            max=0.0,
            metavar="LUFS",
            help="Normalise to this integrated loudness, e.g. -14 (two passes; gain stops at a -1 dBFS peak).",
        ),
    ] = None,
    stems: Annotated[
        bool,
        typer.Option(
            "--stems",
            help="Also write one file per instrument beside the mix: NAME.stem-000-acoustic_grand_piano.wav, NAME.stem-drums.wav.",
        ),
    ] = False,
    plot: Annotated[
        str | None,
        typer.Option(
            metavar="PNG",
            help="Save a picture of the spectrogram over instrument lanes (a directory for several inputs).",
        ),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Render MIDI to audio: WAV, FLAC or OGG (by extension or --format), optionally loudness-normalised, with
    per-instrument stems and a spectrogram plot."""
    from midisynth.jobs.output import OutputError, OutputSettings
    from midisynth.jobs.plan import UsageError, parse_shard, plan_render
    from midisynth.score.midi import SongLimits

    notify = None if quiet else print_error
    with exits(EXIT_USAGE, UsageError, OutputError, ImportError, ValueError):
        options = render_options(sampler, steps, guidance, seed, precision, partials, refiner)
        settings = OutputSettings(
            sample_rate=sample_rate,
            container=output_format.value.upper() if output_format else None,
            bit_depth=bit_depth.value if bit_depth else None,
            loudness_lufs=loudness,
            stems=stems,
            overwrite=overwrite,
        )
        plan = plan_render(
            inputs,
            output,
            settings,
            mel_out,
            plot,
            shard_spec,
            SongLimits(max_duration=max_duration, max_events=max_events),
            start,
            end,
            skip_existing,
            notify,
        )
    if not plan.jobs:
        if notify is not None and plan.skipped:
            notify("nothing to do: every output exists (--skip-existing)")
        elif notify is not None and shard_spec is not None:
            notify(
                f"shard {shard_spec} has nothing to do ({plan.planned} input file{'s' * (plan.planned != 1)} for "
                f"{parse_shard(shard_spec)[1]} shards)"
            )
        return

    from midisynth.jobs.run import run_jobs

    synth = synthesizer(model, device, vocoder, options, allow_pickle)
    if notify is not None and precision == "auto":
        notify(auto_precision_line(synth.device))
    with stop_cleanly_on_signals():
        failures = run_jobs(synth, plan, progress=not quiet, batch_size=batch_size, notify=notify)
    for failure in failures:
        print_error(f"{failure.name}: {failure.message}")
    if len(plan.jobs) > 1 and notify is not None:
        notify(
            f"{len(plan.jobs) - len(failures)} of {len(plan.jobs)} rendered"
            + (f", {len(failures)} failed" if failures else "")
        )
    if failures:
        raise typer.Exit(EXIT_FAILED)
