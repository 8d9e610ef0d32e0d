"""`midisynth play`: MIDI through the sound card as it renders (`midisynth.jobs.play`)."""

from __future__ import annotations

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
    exits,
    print_error,
    render_options,
    stop_cleanly_on_signals,
    synthesizer,
)
from midisynth.constants import DEFAULT_PRECISION, MAX_SONG_EVENTS, MAX_SONG_SECONDS

EXAMPLES = """Examples:

midisynth play song.mid

midisynth play song.mid --start 30 --seed 1 --audio-device pulse

cat song.mid | midisynth play -"""


def play(
    midi: Annotated[str, typer.Argument(help="A MIDI file, or '-' for stdin.")],
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
    audio_device: Annotated[
        str | None,
        typer.Option(
            help="Output device: its number or part of its name, as `python -m sounddevice` lists them.",
            show_default="the system's default",
        ),
    ] = None,
    allow_pickle: AllowPickleOption = False,
    max_duration: MaxDurationOption = MAX_SONG_SECONDS,
    max_events: MaxEventsOption = MAX_SONG_EVENTS,
    start: Annotated[float, typer.Option(min=0.0, help="Play from this time (seconds).")] = 0.0,
    end: Annotated[float | None, typer.Option(min=0.0, help="Play up to this time (seconds).")] = None,
    quiet: QuietOption = False,
) -> None:
    """Play MIDI through the sound card as it renders, as FluidSynth and TiMidity do (the play extra: sounddevice,
    on the PortAudio library)."""
    from midisynth.audio import NonFiniteError
    from midisynth.jobs.plan import UsageError, check_excerpt, read_source
    from midisynth.jobs.sound_card import SoundCard, SoundCardError
    from midisynth.score.midi import MidiError, SongLimits

    with exits(EXIT_USAGE, UsageError, ValueError):
        check_excerpt(start, end)
        options = render_options(sampler, steps, guidance, seed, precision, partials, refiner)
    try:
        song = read_source(midi, SongLimits(max_duration=max_duration, max_events=max_events), start, end)
    except (MidiError, OSError) as err:
        print_error(f"{midi}: {err}")
        raise typer.Exit(EXIT_FAILED) from None
    with stop_cleanly_on_signals("playback stopped"):
        with exits(EXIT_USAGE, ImportError), exits(EXIT_FAILED, SoundCardError):
            output = SoundCard(audio_device)
        with output:
            from midisynth.jobs.play import PlaybackError, play_song

            synth = synthesizer(model, device, vocoder, options, allow_pickle)
            if not quiet:
                for notice in synth.notices(song):
                    print_error(f"{midi}: {notice}")
                print_error(f"playing {midi} ({song.duration:.1f} s) on {output.name} at {output.sample_rate} Hz")
            try:
                report = play_song(synth, song, output)
            except (PlaybackError, SoundCardError, NonFiniteError) as err:
                print_error(f"{midi}: {err}")
                raise typer.Exit(EXIT_FAILED) from None
    if report.warning and not quiet:
        print_error(report.warning)
