"""The `midisynth` command: a thin Typer layer over the library. Heavy imports (torch) happen inside commands."""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Annotated, get_type_hints

import typer

from midisynth.constants import DEFAULT_PRECISION, MAX_SONG_EVENTS, MAX_SONG_SECONDS
from midisynth.model.hub import OFFICIAL_MODEL

app = typer.Typer(
    name="midisynth",
    help="Neural MIDI-to-audio rendering with Spectrogram Diffusion.\n\n"
    "Example: midisynth render song.mid -o song.wav",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

EXIT_FAILED = 1
EXIT_USAGE = 2


def _err(message: str) -> None:
    """One line on standard error, "midisynth: MESSAGE", with the message's unprintable characters escaped as repr()
    escapes them (a newline in a file name cannot start a forged line)."""
    if not message.isprintable():
        message = "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)
    typer.echo(f"midisynth: {message}", err=True)


@contextmanager
def _stop_cleanly_on_signals(kept: str = "no partial output was left behind") -> Iterator[None]:
    """Ctrl-C, SIGTERM, SIGHUP and every other terminating signal unwind the block (temporary files are deleted),
    then the command exits with 128 + the signal's number after one line, which ends with `kept` (what was saved).
    A `Terminated` raised in the block by code that catches the signals itself (training) ends it the same way."""
    from midisynth.signals import Terminated, exit_on_signals

    try:
        with exit_on_signals():
            yield
    except Terminated as stop:
        _err(f"{'interrupted' if stop.signal_name == 'SIGINT' else 'stopped by ' + stop.signal_name}; {kept}")
        raise typer.Exit(stop.code) from None


def _version(value: bool) -> None:
    if value:
        from midisynth import __version__

        typer.echo(f"midisynth {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Neural MIDI-to-audio rendering with Spectrogram Diffusion."""


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass(frozen=True)
class SynthesizerOptions:
    """The options `render` and `eval` share: which model and vocoder run where, and how they sample. Each field's
    annotation is its Typer option; `_takes_synthesizer_options` gives them to a command."""

    model: Annotated[str | None, typer.Option(
        help="Model: midisynth .safetensors file, diffusers checkpoint dir, or cached hub id (owner/name[@revision]).",
        show_default="the bundled model",
        envvar="MIDISYNTH_MODEL")] = None
    device: Annotated[Device, typer.Option(help="Where to run the networks.", envvar="MIDISYNTH_DEVICE")] = Device.auto
    sampler: Annotated[str | None, typer.Option(help="ddpm (diffusers), paper, ddim or dpmpp.", show_default="the model's (midisynth models)")] = None
    steps: Annotated[int | None, typer.Option(min=1, help="Denoising steps per window.", show_default="the model's for its sampler, else the sampler's usual")] = None
    guidance: Annotated[float | None, typer.Option(min=1.0, help="Classifier-free guidance weight; 1 disables it.", show_default="the model's")] = None
    seed: Annotated[int, typer.Option(help="Random seed (same seed, model and device: same audio).")] = 0
    vocoder: Annotated[str | None, typer.Option(help="griffin-lim, PATH.onnx or PATH.safetensors (neural vocoder).", show_default="the model's, else griffin-lim")] = None
    precision: Annotated[str, typer.Option(
        help="Network arithmetic: auto (bf16 where the hardware computes it natively: CUDA compute capability 8.0+, "
        "CPUs with AVX-512 BF16 or AMX; else int8 on x86 CPUs, fp32 elsewhere), fp32, bf16, fp16 (CUDA only) or int8 "
        "(CPU only: int8 Linear layers). `midisynth models` shows what auto picks on this machine.")] = DEFAULT_PRECISION
    partials: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Share of the partials model (each note's partials placed from the score, with its "
        "instrument's fitted spectral envelope) in the spectrogram; 0 renders the network alone.",
        show_default="the model's (0 for a model without partials.safetensors)")] = None

    def render_options(self):
        """The sampling options, checked (ValueError) before any model is loaded."""
        from midisynth.render.pipeline import RenderOptions

        return RenderOptions(sampler=self.sampler, steps=self.steps, guidance=self.guidance, seed=self.seed,
                             precision=self.precision, partials=self.partials)

    def synthesizer(self, allow_pickle: bool = False):
        """Build the Synthesizer, or exit with status 2 and one line for a bad model, option or device."""
        from midisynth.model.checkpoints import CheckpointError
        from midisynth.render.pipeline import Synthesizer

        try:
            return Synthesizer.from_pretrained(self.model, device=self.device.value, vocoder=self.vocoder,
                                               options=self.render_options(), allow_pickle=allow_pickle)
        except (CheckpointError, ValueError, FileNotFoundError, ImportError) as err:
            _err(str(err))
            raise typer.Exit(EXIT_USAGE) from None


def _takes_synthesizer_options(command):
    """Typer sees `command`'s parameter `synthesizer_options` as SynthesizerOptions' fields, one option each in its
    place (so also in the help); the command receives them as one SynthesizerOptions."""
    hints = get_type_hints(SynthesizerOptions, include_extras=True)
    options = [inspect.Parameter(option.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option.default,
                                 annotation=hints[option.name]) for option in fields(SynthesizerOptions)]
    signature = inspect.signature(command, eval_str=True)
    parameters = [shown for parameter in signature.parameters.values()
                  for shown in (options if parameter.name == "synthesizer_options" else [parameter])]

    @functools.wraps(command)
    def with_options(**values):
        chosen = SynthesizerOptions(**{option.name: values.pop(option.name) for option in options})
        return command(**values, synthesizer_options=chosen)

    with_options.__signature__ = signature.replace(parameters=parameters)
    return with_options


def _auto_precision_line(device) -> str:
    """What `--precision auto` computes in on `device` (a torch.device), and why: "precision auto = fp32 on cpu (...)"."""
    from midisynth.precision import explain, hardware

    return f"precision {explain(hardware(device.type, device.index))}"


def _read_song(source: str, limits, start: float = 0.0, end: float | None = None):
    """Read a MIDI file or stdin ('-') within `limits` (header first, at most `limits.max_bytes` read), cut to
    [start, end] seconds when asked."""
    from midisynth.score.midi import read_midi

    return read_midi(sys.stdin.buffer if source == "-" else source, limits, start, end)


def _event_limit(max_events: int):
    """The limits of commands that describe a file rather than render it: events (and so bytes), not length."""
    from midisynth.score.midi import SongLimits

    return SongLimits(max_duration=0.0, max_events=max_events)


# Options that several commands take, declared once.
AllowPickle = Annotated[bool, typer.Option("--allow-pickle", help="Allow pickle-based .bin weights (weights_only).")]
MaxDuration = Annotated[float, typer.Option(min=0.0, help="Refuse songs longer than this many seconds (0: no limit).")]
MaxEvents = Annotated[int, typer.Option(min=0, help="Refuse MIDI files of more events than this, before parsing (0: no limit).")]
Start = Annotated[float, typer.Option(min=0.0, help="Start at this time in the song (seconds).")]
End = Annotated[float | None, typer.Option(min=0.0, help="End at this time in the song (seconds).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]


def _check_excerpt(start: float, end: float | None) -> None:
    """UsageError for an --end that is not after --start."""
    from midisynth.jobs.plan import UsageError

    if end is not None and end <= start:
        raise UsageError(f"--end {end:g} must be after --start {start:g} (seconds)")


class AudioContainer(StrEnum):
    wav = "wav"
    flac = "flac"
    ogg = "ogg"


class BitDepth(StrEnum):
    pcm16 = "16"
    pcm24 = "24"
    float32 = "32f"


RENDER_EXAMPLES = """Examples:

midisynth render song.mid -o song.wav

midisynth render midi_dir/ -o flac_dir/ --format flac --bit-depth 24

midisynth render song.mid -o song.wav -r 44100 --loudness -14

midisynth render song.mid -o song.wav --stems --plot song.png

cat song.mid | midisynth render - -o - | sox -t wav - song.mp3

Environment: MIDISYNTH_MODEL and MIDISYNTH_DEVICE set the defaults of --model and --device."""


def _check_output_options(jobs, container: str | None, bit_depth: str | None, loudness: float | None, stems: bool,
                          plot: str | None, mel_out: Path | None) -> dict[str, Path]:
    """Refuse output options that cannot work, before anything renders; returns each target's plot path."""
    from midisynth.extras import import_extra
    from midisynth.jobs.output import audio_format
    from midisynth.jobs.plan import STDIO, UsageError, check_name_lengths, check_not_inputs

    for target in {job.target for job in jobs}:
        audio_format(target, container, bit_depth)
    if stems and any(job.target == STDIO for job in jobs):
        raise UsageError("--stems writes files beside the mix: give -o FILE or a directory, not '-'")
    if mel_out is not None and str(mel_out) == STDIO:
        raise UsageError("--mel-out -: the spectrogram is written to a .npy file, not to standard output; give a "
                         "file name")
    if mel_out is not None and len(jobs) != 1:
        raise UsageError("--mel-out takes exactly one input")
    if loudness is not None:
        import_extra("pyloudnorm", "loudness", "--loudness")
    plots = {}
    if plot is not None:
        import_extra("matplotlib", "plot", "--plot")
        from midisynth.jobs.plot import plot_paths

        plots = plot_paths(jobs, plot)
    extra_outputs = [*plots.values(), *([mel_out] if mel_out is not None else [])]
    check_name_lengths(extra_outputs)
    check_not_inputs(jobs, extra_outputs)
    return plots


@app.command(epilog=RENDER_EXAMPLES)
@_takes_synthesizer_options
def render(
    inputs: Annotated[list[str], typer.Argument(help="MIDI files, directories (recursive), or '-' for stdin.")],
    output: Annotated[str | None, typer.Option("-o", "--output", help="Output file, directory, or '-' (WAV on stdout).")] = None,
    synthesizer_options: SynthesizerOptions = SynthesizerOptions(),
    mel_out: Annotated[Path | None, typer.Option("--mel-out", help="Also save the spectrogram [frames, 128] (.npy).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="Replace existing outputs.")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip inputs whose outputs (mix, stems, --mel-out, --plot) are all complete; render the others again whole (resume a batch).")] = False,
    allow_pickle: AllowPickle = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Songs generated together (faster; each song's audio is what it gets alone, up to float rounding at fp32, see docs/usage.md); at most 32, a larger number is lowered to it.")] = 1,
    max_duration: MaxDuration = MAX_SONG_SECONDS,
    max_events: MaxEvents = MAX_SONG_EVENTS,
    shard_spec: Annotated[str | None, typer.Option("--shard", help="Render only shard I of N (e.g. 3/8) for job arrays.")] = None,
    sample_rate: Annotated[int, typer.Option("--sample-rate", "-r", min=8000, max=192000, help="Output rate in Hz (soxr resampling from 16 kHz).")] = 16000,
    start: Start = 0.0,
    end: End = None,
    output_format: Annotated[AudioContainer | None, typer.Option("--format", help="Audio format.", show_default="the output's extension; wav for directories")] = None,
    bit_depth: Annotated[BitDepth | None, typer.Option(help="Sample format: WAV 16, 24 or 32f (float); FLAC 16 or 24; OGG none (Vorbis).", show_default="16")] = None,
    loudness: Annotated[float | None, typer.Option(min=-70.0, max=0.0, metavar="LUFS", help="Normalise to this integrated loudness, e.g. -14 (two passes; gain stops at a -1 dBFS peak).")] = None,
    stems: Annotated[bool, typer.Option("--stems", help="Also write one file per instrument beside the mix: NAME.stem-000-acoustic_grand_piano.wav, NAME.stem-drums.wav.")] = False,
    plot: Annotated[str | None, typer.Option(metavar="PNG", help="Save a picture of the spectrogram over instrument lanes (a directory for several inputs).")] = None,
    quiet: Quiet = False,
) -> None:
    """Render MIDI to audio: WAV, FLAC or OGG (by extension or --format), optionally loudness-normalised, with
    per-instrument stems and a spectrogram plot."""
    from midisynth.jobs.output import EXTENSIONS, OutputError
    from midisynth.jobs.plan import UsageError, parse_shard, plan_jobs, shard

    container = output_format.value.upper() if output_format else None
    depth = bit_depth.value if bit_depth else None
    try:
        _check_excerpt(start, end)
        if overwrite and skip_existing:
            raise UsageError("--overwrite and --skip-existing contradict each other")
        synthesizer_options.render_options()  # refused before any model loads
        jobs = plan_jobs(inputs, output, extension=EXTENSIONS[container] if container else ".wav")
        if shard_spec is not None:
            planned, jobs = len(jobs), shard(jobs, *parse_shard(shard_spec))
            if not jobs:
                if not quiet:
                    _err(f"shard {shard_spec} has nothing to do ({planned} input file{'s' * (planned != 1)} "
                         f"for {parse_shard(shard_spec)[1]} shards)")
                return
        plots = _check_output_options(jobs, container, depth, loudness, stems, plot, mel_out)
    except (UsageError, OutputError, ImportError, ValueError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None

    from midisynth.jobs.run import OutputSettings, RenderFailure, run_jobs, unfinished
    from midisynth.score.midi import SongLimits

    settings = OutputSettings(sample_rate=sample_rate, container=container, bit_depth=depth,
                              loudness_lufs=loudness, stems=stems, overwrite=overwrite)
    read_song = functools.partial(_read_song, limits=SongLimits(max_duration=max_duration, max_events=max_events),
                                  start=start, end=end)
    if skip_existing:
        jobs = unfinished(jobs, settings, notify=None if quiet else _err, mel_out=mel_out, plots=plots,
                          read_song=read_song)
        if not jobs:
            if not quiet:
                _err("nothing to do: every output exists (--skip-existing)")
            return

    synth = synthesizer_options.synthesizer(allow_pickle)
    if not quiet and synthesizer_options.precision == "auto":
        _err(_auto_precision_line(synth.device))
    with _stop_cleanly_on_signals():
        failures: list[RenderFailure] = run_jobs(synth, jobs, settings=settings, mel_out=mel_out, plots=plots,
                                                 read_song=read_song, progress=not quiet, batch_size=batch_size,
                                                 notify=None if quiet else _err)
    for failure in failures:
        _err(f"{failure.name}: {failure.message}")
    if len(jobs) > 1 and not quiet:
        _err(f"{len(jobs) - len(failures)} of {len(jobs)} rendered" + (f", {len(failures)} failed" if failures else ""))
    if failures:
        raise typer.Exit(EXIT_FAILED)


PLAY_EXAMPLES = """Examples:

midisynth play song.mid

midisynth play song.mid --start 30 --seed 1 --audio-device pulse

cat song.mid | midisynth play -"""


@app.command(epilog=PLAY_EXAMPLES)
@_takes_synthesizer_options
def play(
    midi: Annotated[str, typer.Argument(help="A MIDI file, or '-' for stdin.")],
    synthesizer_options: SynthesizerOptions = SynthesizerOptions(),
    audio_device: Annotated[str | None, typer.Option(help="Output device: its number or part of its name, as `python -m sounddevice` lists them.", show_default="the system's default")] = None,
    allow_pickle: AllowPickle = False,
    max_duration: MaxDuration = MAX_SONG_SECONDS,
    max_events: MaxEvents = MAX_SONG_EVENTS,
    start: Start = 0.0,
    end: End = None,
    quiet: Quiet = False,
) -> None:
    """Play MIDI through the sound card as it renders, as FluidSynth and TiMidity do (the play extra: sounddevice,
    on the PortAudio library)."""
    from midisynth.jobs.plan import UsageError
    from midisynth.jobs.sound_card import SoundCard, SoundCardError
    from midisynth.score.midi import MidiError, SongLimits

    try:
        _check_excerpt(start, end)
        synthesizer_options.render_options()  # refused before any model loads
    except (UsageError, ValueError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    try:
        song = _read_song(midi, SongLimits(max_duration=max_duration, max_events=max_events), start, end)
    except (MidiError, OSError) as err:
        _err(f"{midi}: {err}")
        raise typer.Exit(EXIT_FAILED) from None
    with _stop_cleanly_on_signals("playback stopped"):
        try:
            output = SoundCard(audio_device)
        except ImportError as err:
            _err(str(err))
            raise typer.Exit(EXIT_USAGE) from None
        except SoundCardError as err:
            _err(str(err))
            raise typer.Exit(EXIT_FAILED) from None
        with output:
            from midisynth.audio import NonFiniteError
            from midisynth.jobs.play import PlaybackError, play_song

            synth = synthesizer_options.synthesizer(allow_pickle)
            if not quiet:
                for notice in synth.notices(song):
                    _err(f"{midi}: {notice}")
                _err(f"playing {midi} ({song.duration:.1f} s) on {output.name} at {output.sample_rate} Hz")
            try:
                report = play_song(synth, song, output)
            except (PlaybackError, SoundCardError, NonFiniteError) as err:
                _err(f"{midi}: {err}")
                raise typer.Exit(EXIT_FAILED) from None
    if report.warning and not quiet:
        _err(report.warning)


@app.command()
def tokens(
    midi: Annotated[str, typer.Argument(help="A MIDI file, or '-' for stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list of token lists (one per 5.12 s window).")] = False,
    max_events: MaxEvents = MAX_SONG_EVENTS,
) -> None:
    """Print the event tokens of each 5.12 s window (padding removed; each ends with EOS = 1)."""
    from midisynth.score.midi import MidiError
    from midisynth.score.tokens import tokenize

    try:
        windows = tokenize(_read_song(midi, _event_limit(max_events)))
    except (MidiError, OSError) as err:
        _err(f"{midi}: {err}")
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        typer.echo(json.dumps(windows))
    else:
        for i, window in enumerate(windows):
            typer.echo(f"window {i}: {' '.join(map(str, window))}")


@app.command()
def info(
    midi: Annotated[str, typer.Argument(help="A MIDI file, or '-' for stdin.")],
    max_events: MaxEvents = MAX_SONG_EVENTS,
) -> None:
    """Describe a MIDI file: duration, windows, instruments and note counts."""
    from midisynth.constants import WINDOW_SECONDS
    from midisynth.score.midi import MidiError, type2_notice

    try:
        song = _read_song(midi, _event_limit(max_events))
    except (MidiError, OSError) as err:
        _err(f"{midi}: {err}")
        raise typer.Exit(EXIT_FAILED) from None
    from midisynth.score.tokens import tokenize

    windows = len(tokenize(song))
    typer.echo(f"file: {midi}")
    typer.echo(f"duration: {song.duration:.2f} s")
    typer.echo(f"windows: {windows} x {WINDOW_SECONDS} s")
    typer.echo(f"notes: {len(song.notes)}")
    if song.unreleased:
        typer.echo(f"notes never released (left out): {song.unreleased}")
    if song.together_patterns:
        typer.echo(type2_notice(song.together_patterns))
    for name, count in song.instrument_note_counts().items():
        typer.echo(f"  {name}: {count} notes")


MIN_DATASET_HOURS = 0.01  # the least rendered audio `dataset --hours` takes
DATASET_EXAMPLES = """Examples:

midisynth dataset data/fluidr3 --hours 3

midisynth dataset data/mine --pairs recordings/ --slakh slakh2100/ --maestro maestro-v3.0.0/

midisynth dataset data/mixed --pairs recordings/ --generated --hours 1"""


@app.command(epilog=DATASET_EXAMPLES)
def dataset(
    out_dir: Annotated[Path, typer.Argument(help="Data set directory (created; re-running resumes).")],
    soundfont: Annotated[Path, typer.Option(help="SoundFont (.sf2) of the reference synthesizer.")] = Path(
        "/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    midi: Annotated[list[Path] | None, typer.Option(help="Extra MIDI directories to render.")] = None,
    pairs: Annotated[list[Path] | None, typer.Option(help="Directory of recordings: each MIDI file (.mid, .midi) with an audio file of the same name beside it (.wav, .flac, .ogg).")] = None,
    slakh: Annotated[list[Path] | None, typer.Option(help="Slakh2100 root (train/, validation/, test/ of TrackNNNNN/all_src.mid + mix.flac).")] = None,
    maestro: Annotated[list[Path] | None, typer.Option(help="MAESTRO v3 root (maestro-v3.0.0.csv and its year folders).")] = None,
    generated: Annotated[bool | None, typer.Option("--generated/--no-generated", help="Render music21's corpus and generated pieces.", show_default="only without recordings")] = None,
    hours: Annotated[float, typer.Option(help=f"Rendered audio to store, hours, at least {MIN_DATASET_HOURS:g} (recordings are all taken).")] = 3.0,
    seed: Annotated[int, typer.Option(help="Seed of the generated material and instrument choices.")] = 0,
) -> None:
    """Build a training data set: recordings with their MIDI, and MIDI rendered with FluidSynth; tokens, log-mel
    features, manifest. A recording or MIDI file that cannot be used is reported (one line) and left out."""
    from tqdm import tqdm

    from midisynth.data.build import build_dataset
    from midisynth.data.pairs import paired_sources
    from midisynth.jobs.plan import UsageError

    try:
        _check_dataset_run(out_dir, hours, list(midi or []))
    except UsageError as err:
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    recordings = [list(pairs or []), list(slakh or []), list(maestro or [])]

    def skip(line: str) -> None:
        tqdm.write(f"midisynth: {line} (skipped)", file=sys.stderr)  # above the progress bar

    with _stop_cleanly_on_signals(f"the pieces stored so far are kept and listed in {out_dir / 'manifest.json'}; "
                                  "run the same command to continue"):
        try:
            found = list(paired_sources(*recordings))
            manifest = build_dataset(out_dir, soundfont=soundfont, midi_dirs=list(midi or []), hours=hours, seed=seed,
                                     generated=not any(recordings) if generated is None else generated, pairs=found,
                                     on_skip=skip)
        except (OSError, ValueError, RuntimeError) as err:
            _err(str(err))
            raise typer.Exit(EXIT_FAILED) from None
    stored = len({piece["piece_id"] for piece in manifest["pieces"]} & {pair.piece_id for pair in found})
    if stored < len(found):
        _err(f"{stored} of {len(found)} recordings stored, {len(found) - stored} skipped")


def _check_dataset_run(out_dir: Path, hours: float, midi_dirs: list[Path]) -> None:
    """UsageError (one line) for --hours that is not a finite number of at least MIN_DATASET_HOURS, a --midi that is
    not a directory, or an output directory that cannot be made or written in: found before anything is read."""
    import math

    from midisynth.jobs.plan import UsageError

    if not (math.isfinite(hours) and hours >= MIN_DATASET_HOURS):
        raise UsageError(f"--hours {hours:g}: give a finite number of hours, at least {MIN_DATASET_HOURS:g}")
    for folder in midi_dirs:
        if not folder.is_dir():
            raise UsageError(f"--midi {folder}: {'not a directory' if folder.exists() else 'no such directory'}")
    _check_run_directory(out_dir, "manifest.json")


def _check_run_directory(out: Path, probe: str) -> None:
    """UsageError (one line) unless the directory `out` exists or can be made, and a file `probe` can be written
    in it."""
    from midisynth.files import OutputError, make_output_directory
    from midisynth.jobs.output import check_creatable
    from midisynth.jobs.plan import UsageError

    try:
        make_output_directory(out, out)
        check_creatable(out / probe)
    except OutputError as err:
        raise UsageError(str(err)) from None


@contextmanager
def _training_errors() -> Iterator[None]:
    """One line for what stops training before its first step: a damaged data set file (exit 1); a data set, config,
    checkpoint or --init-from that does not fit the run (exit 2)."""
    from midisynth.data.store import DataSetError
    from midisynth.model.checkpoints import CheckpointError

    try:
        yield
    except DataSetError as err:
        _err(str(err))
        raise typer.Exit(EXIT_FAILED) from None
    except (FileNotFoundError, ValueError, CheckpointError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None


def _check_training_run(device: str, out: Path) -> None:
    """UsageError (one line) for a device training cannot run on, or a run directory it cannot write checkpoints
    in: found before any data loads."""
    import re

    import torch

    from midisynth.jobs.plan import UsageError

    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise UsageError(f"--device {device!r}: training runs on cpu or cuda[:N]")
    if device != "cpu" and not torch.cuda.is_available():
        raise UsageError(f"--device {device} was asked for, but no CUDA GPU is available to torch")
    _check_run_directory(out, "last.pt")


TRAIN_EXAMPLES = """Examples:

midisynth train --config configs/default.toml --data data/mine --out runs/mine

torchrun --standalone --nproc_per_node=4 -m midisynth train --config configs/default.toml --data data/mine --out runs/mine --device cuda

Under torchrun the config's batch_size is the global batch: each of N processes trains on batch_size / N windows a step."""


@app.command(epilog=TRAIN_EXAMPLES)
def train(
    config: Annotated[list[Path] | None, typer.Option(help="TOML config with \\[model] and \\[train] tables (default: configs/default.toml). Given several times, a recipe: each config trains in OUT/<its name>, from the weights of the one before; a finished stage is skipped.")] = None,
    data: Annotated[Path, typer.Option(help="Data set directory from `midisynth dataset`.")] = Path("data/fluidr3"),
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints; re-running resumes).")] = Path("runs/default"),
    device: Annotated[str, typer.Option(help="cpu or cuda (under torchrun: each process its local rank's GPU).")] = "cpu",
    max_minutes: Annotated[float | None, typer.Option(help="Stop (with a checkpoint) after this many minutes.")] = None,
    init_from: Annotated[Path | None, typer.Option(help="Start from these weights (midisynth .safetensors).")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch (per process).")] = None,
) -> None:
    """Train a Spectrogram Diffusion model, or a recipe of several stages (resumable; Ctrl-C stops with a
    checkpoint). Started by torchrun, its processes train one model together (DistributedDataParallel)."""
    import torch
    from tqdm import tqdm

    from midisynth.jobs.plan import UsageError
    from midisynth.model.config import load_config
    from midisynth.training import ddp
    from midisynth.training.recipe import recipe_stages

    if threads:
        torch.set_num_threads(threads)
    configs = config or [Path("configs/default.toml")]
    ranks = ddp.torchrun_ranks()
    try:  # the same for every process: said once
        for path in configs:
            ranks.rows(load_config(path).train.batch_size)
        if len(configs) > 1:
            recipe_stages(configs, out)
        _check_training_run(device, out)
    except (FileNotFoundError, ValueError, UsageError) as err:
        if ranks.is_main:
            _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    bar = None

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    with _stop_cleanly_on_signals(f"the run resumes from its last checkpoint in {out}: run the same "
                                  "command to continue"), \
            ddp.process_group(ranks, device) as device:
        if len(configs) > 1:
            from midisynth.training.recipe import train_recipe

            def on_stage(stage, done: int, total: int) -> None:
                nonlocal bar
                if bar is not None:
                    bar.close()
                if done >= total and ranks.is_main:
                    typer.echo(f"{stage.run_dir.name}: finished ({done} steps), skipped", err=True)
                bar = tqdm(total=total, initial=done, desc=stage.run_dir.name, unit="step", dynamic_ncols=True,
                           disable=done >= total or not ranks.is_main)

            try:
                with _training_errors():
                    weights = train_recipe(configs, data, out, device=device, init_from=init_from,
                                           max_minutes=max_minutes, on_stage=on_stage, on_step=on_step, ranks=ranks)
            finally:  # before any line on a signal
                if bar is not None:
                    bar.close()
            if ranks.is_main:
                typer.echo(f"recipe done; weights: {weights}" if weights else "stopped (re-run to continue)", err=True)
            return

        from midisynth.training.diffusion import Trainer

        with _training_errors():
            trainer = Trainer(load_config(configs[0]), data, out, device=device, init_from=init_from, ranks=ranks)
        if trainer.tc.precision == "auto" and ranks.is_main:
            _err(_auto_precision_line(trainer.device))
        bar = tqdm(total=trainer.tc.max_steps, initial=trainer.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not ranks.is_main)
        try:
            trainer.train(max_minutes=max_minutes, on_step=on_step)
        finally:  # before any line on a signal
            bar.close()
    if ranks.is_main:
        typer.echo(f"stopped at step {trainer.step}; weights: {out / 'model.safetensors'}", err=True)


ADAPT_EXAMPLES = """Examples:

midisynth adapt my-recordings/ -o my-model          (each MIDI file with its .wav/.flac/.ogg beside it)

midisynth adapt --soundfont MySounds.sf2 -o my-model --minutes 20   (every instrument of the SoundFont)

midisynth adapt --soundfont MySounds.sf2 --midi songs/ -o my-model  (and songs/ rendered with it)

midisynth render song.mid -o song.wav --model my-model"""


@app.command(epilog=ADAPT_EXAMPLES)
def adapt(
    recordings: Annotated[list[Path] | None, typer.Argument(help="Folders of recordings: each MIDI file with an audio file of the same name beside it.", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The adapted model directory (created; re-running resumes).")] = ...,
    midi: Annotated[list[Path] | None, typer.Option(help="MIDI folders to render with --soundfont.")] = None,
    soundfont: Annotated[Path | None, typer.Option(help="A SoundFont whose sound to learn: it renders a survey of every GM instrument (about 11 minutes), and the --midi folders.")] = None,
    minutes: Annotated[float, typer.Option(min=0.0, help="Fine-tuning time in all, minutes (a resumed run has what is left).")] = 20.0,
    model: Annotated[Path | None, typer.Option(help="Model directory to start from.", show_default="the bundled default")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch.")] = None,
) -> None:
    """Adapt a model to your recordings or SoundFont: store them as a data set, hold out part of them, fit the
    partials model and fine-tune the network for --minutes, then write a model directory for `render --model` and
    report the held-out scores before and after. Interrupted, the same command resumes."""
    import math

    import torch
    from tqdm import tqdm

    from midisynth.jobs.plan import UsageError
    from midisynth.model.resolve import BUNDLED_DIR
    from midisynth.training.adapt import adapt as run_adapt
    from midisynth.training.adapt import gather_material

    if threads:
        torch.set_num_threads(threads)
    try:
        if not math.isfinite(minutes):
            raise UsageError(f"--minutes {minutes:g}: give a finite number of minutes")
        material = gather_material(list(recordings or []), list(midi or []), soundfont)
        _check_training_run(device, out)
    except (ValueError, UsageError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    bar = tqdm(desc="fine-tune", unit="step", dynamic_ncols=True, disable=True)

    def say(line: str) -> None:
        tqdm.write(f"midisynth: {line}", file=sys.stderr)

    def on_step(step: int, loss: float) -> None:
        nonlocal bar
        if bar.disable:
            bar = tqdm(desc="fine-tune", unit="step", initial=step - 1, dynamic_ncols=True)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    with _stop_cleanly_on_signals(f"what is done is kept in {out}: run the same command to continue"):
        try:
            with _training_errors():
                result = run_adapt(material, out, model or BUNDLED_DIR, minutes, device, say=say,
                                   on_skip=lambda line: say(f"{line} (skipped)"), on_step=on_step)
        finally:
            bar.close()
    typer.echo(f"adapted model: {result.directory} ({result.steps} steps, {result.minutes_trained:.1f} min)")
    for name, scores in (("base model", result.before), ("adapted", result.after)):
        typer.echo(f"  held-out {name}: {scores if scores else 'nothing held out'}")


@app.command()
def convert(
    source: Annotated[str, typer.Argument(help="A diffusers-layout checkpoint directory, a cached hub id (owner/name[@revision]), or a midisynth file.")],
    output: Annotated[Path, typer.Argument(help="The midisynth .safetensors file to write.")],
    half: Annotated[bool, typer.Option("--half/--full", help="Store weights as float16 (half the size).")] = False,
    allow_pickle: AllowPickle = False,
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="Replace an existing output file.")] = False,
) -> None:
    """Convert a checkpoint to midisynth's single-file format; prints its sha256."""
    from midisynth.jobs.output import OutputError, check_writable
    from midisynth.jobs.plan import UsageError, check_name_lengths

    try:
        check_name_lengths([output])
        check_writable(output, overwrite=True)  # no socket, a name the system can look up
        if output.is_file() and not overwrite:
            raise OutputError(f"{output}: already exists (pass --overwrite to replace it)")
    except (UsageError, OutputError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_FAILED) from None

    import torch

    from midisynth.model.checkpoints import CheckpointError, save_model
    from midisynth.model.hub import HubError
    from midisynth.model.resolve import resolve_model

    try:
        checkpoint = resolve_model(source, allow_pickle=allow_pickle)
    except (CheckpointError, HubError, ImportError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_FAILED) from None
    origin = checkpoint.metadata.get("hub_id") or Path(source).name  # hub id@commit, else the file's name
    try:
        with _stop_cleanly_on_signals():
            digest = save_model(checkpoint.model, output,
                                {"converted_from": origin, "sampling": checkpoint.sampling.to_json()},
                                dtype=torch.float16 if half else torch.float32, replace=overwrite)
    except OutputError as err:
        _err(str(err))
        raise typer.Exit(EXIT_FAILED) from None
    typer.echo(f"{digest}  {output}")


@app.command()
def download(
    model: Annotated[str, typer.Argument(help="Hub id: owner/name, optionally @revision.")] = OFFICIAL_MODEL,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit (the same as ID@REVISION).")] = None,
) -> None:
    """Fetch a checkpoint from the Hugging Face hub into its cache (only the files midisynth reads); prints where."""
    from dataclasses import replace

    from midisynth.model import hub

    hub_id = hub.parse_hub_id(model)
    if hub_id is None or revision and hub_id.revision not in (None, revision):
        _err(f"{model}: expected a hub id owner/name[@revision] (and no second, different --revision)")
        raise typer.Exit(EXIT_USAGE)
    try:
        snapshot = hub.download(replace(hub_id, revision=revision or hub_id.revision))
    except (hub.HubError, ImportError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_FAILED) from None
    typer.echo(str(snapshot))


@app.command()
def models(
    directories: Annotated[list[Path] | None, typer.Argument(help="Model directories to describe too (what `midisynth adapt` writes).", show_default=False)] = None,
) -> None:
    """List the bundled default model, its partials model and vocoder, the model directories given, and the
    checkpoints in the Hugging Face cache, each with the sampling it is rendered with unless --sampler, --steps or
    --guidance say otherwise; say what `--precision auto` computes in here."""
    import torch

    from midisynth.model.checkpoints import CheckpointError
    from midisynth.model.directory import describe
    from midisynth.model.hub import cache_dir, cached_models
    from midisynth.model.resolve import BUNDLED_DIR, bundled_manifest, hub_sampling

    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        typer.echo(_auto_precision_line(torch.device(device)))
    if bundled_manifest() is None:
        typer.echo("no bundled default model installed")
    else:
        typer.echo("\n".join(describe(BUNDLED_DIR)))
    unusable = []
    for directory in directories or []:
        try:
            typer.echo("\n".join([f"{directory}:"] + ["  " + line for line in describe(directory)]))
        except CheckpointError as err:
            unusable.append(str(err))
    try:
        cached = cached_models()
    except ImportError as err:
        typer.echo(f"hub checkpoints not listed: {err}")
        cached = None
    if cached == []:
        typer.echo(f"no Spectrogram Diffusion checkpoints in the Hugging Face cache ({cache_dir()})")
    for found in cached or []:
        name = f"{found.repo_id}@{found.refs[0] if found.refs else found.commit}"
        typer.echo(f"hub: {name}  commit={found.commit[:12]}  {found.size_bytes / 1e6:,.1f} MB  {found.path}")
        typer.echo(f"  sampling: {hub_sampling(found.repo_id)}")
    for line in unusable:
        _err(line)
    if unusable:
        raise typer.Exit(EXIT_USAGE)


@app.command("eval")
@_takes_synthesizer_options
def evaluate(
    midi_dir: Annotated[Path, typer.Argument(help="Folder of MIDI files (e.g. a data set's heldout_midi/).")],
    soundfont: Annotated[Path, typer.Option(help="SoundFont of the reference renders.")] = Path(
        "/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Write per-file and mean scores here.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N files.")] = None,
    transcription: Annotated[bool, typer.Option(
        help="Transcription F1 (basic-pitch; the eval extra, see README).")] = True,
    visqol: Annotated[bool, typer.Option(help="ViSQOL MOS-LQO (visqol-python; the eval extra).")] = True,
    synthesizer_options: SynthesizerOptions = SynthesizerOptions(),
) -> None:
    """Score renders against the SoundFont reference (log-mel L1, MR-STFT, onset correlation, level in the reference's
    silences, transcription F1, ViSQOL) beside the vocoder's ceiling and sine, noise and low-pass baselines. Files
    that fail are listed; the rest are scored."""
    from midisynth.data.fluidsynth import check_fluidsynth
    from midisynth.evaluation.evaluate import Scorers, format_table, strict_json
    from midisynth.evaluation.evaluate import evaluate as run_eval
    from midisynth.files import save_text_atomic
    from midisynth.jobs.output import OutputError, check_creatable
    from midisynth.score.midi_files import find_midi_files

    if not midi_dir.is_dir():
        _err(f"{midi_dir}: not a directory")
        raise typer.Exit(EXIT_USAGE)
    files = find_midi_files(midi_dir)[:limit]
    if not files:
        _err(f"{midi_dir}: no MIDI files")
        raise typer.Exit(EXIT_USAGE)
    try:
        if json_out is not None:
            check_creatable(json_out)
        check_fluidsynth(soundfont)
        scorers = Scorers.create(transcription, visqol)
    except (OutputError, FileNotFoundError, ValueError, ImportError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    synth = synthesizer_options.synthesizer()

    def on_file(path: Path, error: str | None, report_so_far: dict) -> None:
        if error:
            _err(f"{path}: {error}")
        else:
            typer.echo(f"evaluated {path.name}", err=True)
        if json_out is None:
            return
        try:  # after every file: a long evaluation keeps what it has scored if it is stopped
            save_text_atomic(json_out, strict_json(report_so_far))
        except OSError as err:
            _err(f"{json_out}: cannot write ({err.strerror or err})")
            raise typer.Exit(EXIT_FAILED) from None

    report = run_eval(synth, files, soundfont, scorers, on_file=on_file)
    typer.echo(format_table(report["summary"]))
    if report["failed"]:
        _err(f"{len(report['failed'])} of {len(files)} files failed: "
             + ", ".join(Path(f["file"]).name for f in report["failed"]))
        raise typer.Exit(EXIT_FAILED)


@app.command("fit-partials")
def fit_partials(
    data: Annotated[Path, typer.Option(help="Data set directory from `midisynth dataset`.")] = Path("data/fluidr3"),
    out: Annotated[Path, typer.Option(help="Where to write it; beside a model file as partials.safetensors, "
                                           "renders with that model use it.")] = Path("runs/default/partials.safetensors"),
    mix: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Its default share in renders.",
                                              show_default="0.85")] = None,
) -> None:
    """Fit the partials model (a spectral envelope per instrument, in closed form) to the data set's training pieces."""
    from tqdm import tqdm

    from midisynth.data.store import DataSetError
    from midisynth.files import OutputError, make_output_directory
    from midisynth.model.partials import DEFAULT_MIX, save_partials
    from midisynth.training.partials import fit_partials as fit

    bar = tqdm(desc="fit partials", unit="piece", dynamic_ncols=True)

    def on_piece(done: int, total: int) -> None:
        bar.total = total
        bar.update(1)

    try:
        partials = fit(data, mix=DEFAULT_MIX if mix is None else mix, on_piece=on_piece)
        bar.close()
        make_output_directory(out.parent, out)
        save_partials(partials, out)
    except DataSetError as err:
        bar.close()
        _err(str(err))
        raise typer.Exit(EXIT_FAILED) from None
    except (FileNotFoundError, OutputError) as err:
        bar.close()
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    typer.echo(f"partials model: {out}", err=True)


@app.command("train-vocoder")
def train_vocoder(
    data: Annotated[Path, typer.Option(help="Data set directory from `midisynth dataset`.")] = Path("data/fluidr3"),
    out: Annotated[Path, typer.Option(help="Run directory (re-running resumes).")] = Path("runs/vocoder"),
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    max_minutes: Annotated[float | None, typer.Option(help="Stop (with a checkpoint) after this many minutes.")] = None,
    max_steps: Annotated[int, typer.Option(min=0, help="Total steps.")] = 20_000,
) -> None:
    """Train the bundled Vocos-style vocoder on the data set's reference audio."""
    from tqdm import tqdm

    from midisynth.jobs.plan import UsageError
    from midisynth.training.vocoder import VocoderTrainConfig, VocoderTrainer

    try:
        _check_training_run(device, out)
    except UsageError as err:
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    with _training_errors():
        trainer = VocoderTrainer(data, out, VocoderTrainConfig(max_steps=max_steps), device=device)
    bar = tqdm(total=max_steps, initial=trainer.step, desc="vocoder", unit="step", dynamic_ncols=True)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    trainer.train(max_minutes=max_minutes, on_step=on_step)
    bar.close()
    typer.echo(f"stopped at step {trainer.step}; weights: {out / 'vocoder.safetensors'}", err=True)


def run() -> None:
    """The `midisynth` command: `app`, then an exit without the interpreter's teardown, which takes about half a
    second once torch is loaded (its C++ state and the hundreds of thousands of objects it made). Every command has
    written and closed its outputs before it returns, so nothing is lost but that time. Standard streams that are
    closed or fail (`midisynth.standard_streams`) end it with one line and status 1 (standard output), or are
    done without (standard error)."""
    from midisynth.standard_streams import StandardOutputError, guard_standard_streams

    guard_standard_streams()
    try:
        app(prog_name="midisynth")
        sys.stdout.flush()
        status = 0
    except SystemExit as stop:
        status = stop.code
    except StandardOutputError as err:
        status = _standard_output_failed(err)
    if status is not None and not isinstance(status, int):  # sys.exit("message") prints it and means failure
        print(status, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except StandardOutputError as err:
            status = status or _standard_output_failed(err)
    os._exit(status or 0)


def _standard_output_failed(err) -> int:
    """Say that standard output failed (not when its reader has gone: `| head` closes it on purpose); the exit
    status."""
    import errno

    if err.errno != errno.EPIPE:
        _err(str(err))
    return EXIT_FAILED


if __name__ == "__main__":
    run()
