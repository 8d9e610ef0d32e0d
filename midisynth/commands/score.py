"""`midisynth tokens` and `midisynth info`: what a MIDI file holds (`midisynth.score`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from midisynth.commands import EXIT_FAILED, MaxEventsOption, print_error
from midisynth.constants import MAX_SONG_EVENTS


def tokens(
    midi: Annotated[str, typer.Argument(help="A MIDI file, or '-' for stdin.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON list of token lists (one per 5.12 s window).")
    ] = False,
    max_events: MaxEventsOption = MAX_SONG_EVENTS,
) -> None:
    """Print the event tokens of each 5.12 s window (padding removed; each ends with EOS = 1)."""
    from midisynth.score.tokens import tokenize

    windows = tokenize(read_described(midi, max_events))
    if as_json:
        typer.echo(json.dumps(windows))
    else:
        for i, window in enumerate(windows):
            typer.echo(f"window {i}: {' '.join(map(str, window))}")


def info(
    midi: Annotated[str, typer.Argument(help="A MIDI file, or '-' for stdin.")],
    max_events: MaxEventsOption = MAX_SONG_EVENTS,
) -> None:
    """Describe a MIDI file: duration, windows, instruments and note counts."""
    from midisynth.score.describe import describe

    for line in describe(read_described(midi, max_events), midi):
        typer.echo(line)


def read_described(midi: str, max_events: int):
    """The song `tokens` and `info` describe (limited in events, and so in bytes, not in length), or exit with
    status 1 and one line."""
    from midisynth.jobs.plan import read_source
    from midisynth.score.midi import MidiError, SongLimits

    try:
        return read_source(midi, SongLimits(max_duration=0.0, max_events=max_events))
    except (MidiError, OSError) as err:
        print_error(f"{midi}: {err}")
        raise typer.Exit(EXIT_FAILED) from None
