"""The `midisynth` command: a thin Typer layer over the library. Heavy imports (torch) happen inside commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from midisynth.constants import DEFAULT_PRECISION, MAX_SONG_EVENTS, MAX_SONG_SECONDS, MIN_DATASET_HOURS
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


# The options of the commands that render (render, eval): which model and vocoder run where, and how they sample.
ModelOption = Annotated[str | None, typer.Option(
    help="Model: midisynth .safetensors file, diffusers checkpoint dir, or cached hub id (owner/name[@revision]).",
    show_default="the bundled model",
    envvar="MIDISYNTH_MODEL")]
DeviceOption = Annotated[Device, typer.Option(help="Where to run the networks.", envvar="MIDISYNTH_DEVICE")]
SamplerOption = Annotated[str | None, typer.Option(help="ddpm (diffusers), paper, ddim or dpmpp.", show_default="the model's (midisynth models)")]
StepsOption = Annotated[int | None, typer.Option(min=1, help="Denoising steps per window.", show_default="the model's for its sampler, else the sampler's usual")]
GuidanceOption = Annotated[float | None, typer.Option(min=1.0, help="Classifier-free guidance weight; 1 disables it.", show_default="the model's")]
SeedOption = Annotated[int, typer.Option(help="Random seed (same seed, model and device: same audio).")]
VocoderOption = Annotated[str | None, typer.Option(help="griffin-lim, PATH.onnx or PATH.safetensors (neural vocoder).", show_default="the model's, else griffin-lim")]
PrecisionOption = Annotated[str, typer.Option(
    help="Network arithmetic: auto (bf16 where the hardware computes it natively: CUDA compute capability 8.0+, "
    "CPUs with AVX-512 BF16 or AMX; else int8 on x86 CPUs, fp32 elsewhere), fp32, bf16, fp16 (CUDA only) or int8 "
    "(CPU only: int8 Linear layers). `midisynth models` shows what auto picks on this machine.")]
PartialsOption = Annotated[float | None, typer.Option(
    min=0.0, max=1.0, help="Share of the partials model (each note's partials placed from the score, with its "
    "instrument's fitted spectral envelope) in the spectrogram; 0 renders the network alone.",
    show_default="the model's (0 for a model without partials.safetensors)")]


def _synthesizer(model: str | None, device: Device, vocoder: str | None, options, allow_pickle: bool = False):
    """`Synthesizer.from_pretrained`, or exit with status 2 and one line for a bad model, option or device."""
    from midisynth.model.checkpoints import CheckpointError
    from midisynth.render.pipeline import Synthesizer

    try:
        return Synthesizer.from_pretrained(model, device=device.value, vocoder=vocoder, options=options,
                                           allow_pickle=allow_pickle)
    except (CheckpointError, ValueError, FileNotFoundError, ImportError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None


def _auto_precision_line(device) -> str:
    """What `--precision auto` computes in on `device` (a torch.device), and why: "precision auto = fp32 on cpu (...)"."""
    from midisynth.precision import explain, hardware

    return f"precision {explain(hardware(device.type, device.index))}"


def _describe_limits(max_events: int):
    """The limits of commands that describe a file rather than render it: events (and so bytes), not length."""
    from midisynth.score.midi import SongLimits

    return SongLimits(max_duration=0.0, max_events=max_events)


MAX_EVENTS_HELP = "Refuse MIDI files of more events than this, before parsing (0: no limit)."


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


@app.command(epilog=RENDER_EXAMPLES)
def render(
    inputs: Annotated[list[str], typer.Argument(help="MIDI files, directories (recursive), or '-' for stdin.")],
    output: Annotated[str | None, typer.Option("-o", "--output", help="Output file, directory, or '-' (WAV on stdout).")] = None,
    model: ModelOption = None,
    device: DeviceOption = Device.auto,
    sampler: SamplerOption = None,
    steps: StepsOption = None,
    guidance: GuidanceOption = None,
    seed: SeedOption = 0,
    vocoder: VocoderOption = None,
    precision: PrecisionOption = DEFAULT_PRECISION,
    partials: PartialsOption = None,
    mel_out: Annotated[Path | None, typer.Option("--mel-out", help="Also save the spectrogram [frames, 128] (.npy).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="Replace existing outputs.")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip inputs whose outputs (mix, stems, --mel-out, --plot) are all complete; render the others again whole (resume a batch).")] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Allow pickle-based .bin weights (weights_only).")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Songs generated together (faster; each song's audio is what it gets alone, up to float rounding at fp32, see docs/usage.md); at most 32, a larger number is lowered to it.")] = 1,
    max_duration: Annotated[float, typer.Option(min=0.0, help="Refuse songs longer than this many seconds (0: no limit).")] = MAX_SONG_SECONDS,
    max_events: Annotated[int, typer.Option(min=0, help=MAX_EVENTS_HELP)] = MAX_SONG_EVENTS,
    shard_spec: Annotated[str | None, typer.Option("--shard", help="Render only shard I of N (e.g. 3/8) for job arrays.")] = None,
    sample_rate: Annotated[int, typer.Option("--sample-rate", "-r", min=8000, max=192000, help="Output rate in Hz (soxr resampling from 16 kHz).")] = 16000,
    start: Annotated[float, typer.Option(min=0.0, help="Render from this time (seconds).")] = 0.0,
    end: Annotated[float | None, typer.Option(min=0.0, help="Render up to this time (seconds).")] = None,
    output_format: Annotated[AudioContainer | None, typer.Option("--format", help="Audio format.", show_default="the output's extension; wav for directories")] = None,
    bit_depth: Annotated[BitDepth | None, typer.Option(help="Sample format: WAV 16, 24 or 32f (float); FLAC 16 or 24; OGG none (Vorbis).", show_default="16")] = None,
    loudness: Annotated[float | None, typer.Option(min=-70.0, max=0.0, metavar="LUFS", help="Normalise to this integrated loudness, e.g. -14 (two passes; gain stops at a -1 dBFS peak).")] = None,
    stems: Annotated[bool, typer.Option("--stems", help="Also write one file per instrument beside the mix: NAME.stem-000-acoustic_grand_piano.wav, NAME.stem-drums.wav.")] = False,
    plot: Annotated[str | None, typer.Option(metavar="PNG", help="Save a picture of the spectrogram over instrument lanes (a directory for several inputs).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Render MIDI to audio: WAV, FLAC or OGG (by extension or --format), optionally loudness-normalised, with
    per-instrument stems and a spectrogram plot."""
    from midisynth.jobs.output import OutputError, OutputSettings
    from midisynth.jobs.plan import UsageError, parse_shard, plan_render
    from midisynth.render.pipeline import RenderOptions
    from midisynth.score.midi import SongLimits

    notify = None if quiet else _err
    try:
        options = RenderOptions(sampler=sampler, steps=steps, guidance=guidance, seed=seed, precision=precision,
                                partials=partials)
        settings = OutputSettings(sample_rate=sample_rate, container=output_format.value.upper() if output_format else None,
                                  bit_depth=bit_depth.value if bit_depth else None, loudness_lufs=loudness, stems=stems,
                                  overwrite=overwrite)
        plan = plan_render(inputs, output, settings, mel_out, plot, shard_spec,
                           SongLimits(max_duration=max_duration, max_events=max_events), start, end, skip_existing,
                           notify)
    except (UsageError, OutputError, ImportError, ValueError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    if not plan.jobs:
        if notify is not None and plan.skipped:
            notify("nothing to do: every output exists (--skip-existing)")
        elif notify is not None and shard_spec is not None:
            notify(f"shard {shard_spec} has nothing to do ({plan.planned} input file{'s' * (plan.planned != 1)} for "
                   f"{parse_shard(shard_spec)[1]} shards)")
        return

    from midisynth.jobs.run import run_jobs

    synth = _synthesizer(model, device, vocoder, options, allow_pickle)
    if notify is not None and precision == "auto":
        notify(_auto_precision_line(synth.device))
    with _stop_cleanly_on_signals():
        failures = run_jobs(synth, plan, progress=not quiet, batch_size=batch_size, notify=notify)
    for failure in failures:
        _err(f"{failure.name}: {failure.message}")
    if len(plan.jobs) > 1 and notify is not None:
        notify(f"{len(plan.jobs) - len(failures)} of {len(plan.jobs)} rendered"
               + (f", {len(failures)} failed" if failures else ""))
    if failures:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def tokens(
    midi: Annotated[str, typer.Argument(help="A MIDI file, or '-' for stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list of token lists (one per 5.12 s window).")] = False,
    max_events: Annotated[int, typer.Option(min=0, help=MAX_EVENTS_HELP)] = MAX_SONG_EVENTS,
) -> None:
    """Print the event tokens of each 5.12 s window (padding removed; each ends with EOS = 1)."""
    from midisynth.jobs.plan import read_source
    from midisynth.score.midi import MidiError
    from midisynth.score.tokens import tokenize

    try:
        windows = tokenize(read_source(midi, _describe_limits(max_events)))
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
    max_events: Annotated[int, typer.Option(min=0, help=MAX_EVENTS_HELP)] = MAX_SONG_EVENTS,
) -> None:
    """Describe a MIDI file: duration, windows, instruments and note counts."""
    from midisynth.constants import WINDOW_SECONDS
    from midisynth.jobs.plan import read_source
    from midisynth.score.midi import MidiError, type2_notice

    try:
        song = read_source(midi, _describe_limits(max_events))
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
    from midisynth.data.build import build_dataset, check_request
    from midisynth.data.pairs import paired_sources
    from midisynth.files import OutputError

    try:
        check_request(out_dir, hours, list(midi or []))
    except (ValueError, OutputError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    recordings = [list(pairs or []), list(slakh or []), list(maestro or [])]

    def skip(line: str) -> None:
        _err(f"{line} (skipped)")  # above the progress bar

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

    from midisynth.files import OutputError
    from midisynth.model.config import load_config
    from midisynth.progress import progress_bars
    from midisynth.training import ddp
    from midisynth.training.diffusion import Trainer
    from midisynth.training.recipe import WEIGHTS, Stage, recipe_stages, train_recipe, trained_steps

    if threads:
        torch.set_num_threads(threads)
    configs = config or [Path("configs/default.toml")]
    ranks = ddp.torchrun_ranks()
    try:  # the same for every process: said once
        train_configs = [load_config(path).train for path in configs]
        for train_config in train_configs:
            ranks.rows(train_config.batch_size)
        stages = recipe_stages(configs, out)
        Trainer.check_run(device, out)
    except (FileNotFoundError, ValueError, OutputError) as err:
        if ranks.is_main:
            _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    stage: Stage = stages[0]  # the one training

    with _stop_cleanly_on_signals(f"the run resumes from its last checkpoint in {out}: run the same "
                                  "command to continue"), \
            ddp.process_group(ranks, device) as device, progress_bars(ranks.is_main) as bars:
        if ranks.is_main and any(train_config.precision == "auto" for train_config in train_configs):
            _err(_auto_precision_line(torch.device(device)))
        task = None

        def on_stage(started: Stage, done: int, total: int) -> None:
            nonlocal stage, task
            stage = started
            if done >= total and ranks.is_main:
                typer.echo(f"{stage.run_dir.name}: finished ({done} steps), skipped", err=True)
            task = bars.add_task(stage.run_dir.name, total=total, completed=done, visible=done < total)

        def on_step(step: int, loss: float) -> None:
            bars.update(task, advance=1, loss=f"{loss:.4f}")

        with _training_errors():
            weights = train_recipe(configs, data, out, device=device, init_from=init_from, max_minutes=max_minutes,
                                   on_stage=on_stage, on_step=on_step, ranks=ranks)
    if ranks.is_main:
        typer.echo(f"stopped at step {trained_steps(stage.run_dir)}; weights: {stage.run_dir / WEIGHTS}"
                   + ("" if weights else " (re-run to continue)"), err=True)


@app.command()
def convert(
    source: Annotated[str, typer.Argument(help="A diffusers-layout checkpoint directory, a cached hub id (owner/name[@revision]), or a midisynth file.")],
    output: Annotated[Path, typer.Argument(help="The midisynth .safetensors file to write.")],
    half: Annotated[bool, typer.Option("--half/--full", help="Store weights as float16 (half the size).")] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Allow pickle-based .bin weights (weights_only).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="Replace an existing output file.")] = False,
) -> None:
    """Convert a checkpoint to midisynth's single-file format; prints its sha256."""
    from midisynth.jobs.output import OutputError, check_writable
    from midisynth.jobs.plan import UsageError, check_name_lengths

    try:
        check_name_lengths([output])
        check_writable(output, overwrite)
    except (UsageError, OutputError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_FAILED) from None

    from midisynth.model.checkpoints import CheckpointError
    from midisynth.model.hub import HubError
    from midisynth.model.resolve import convert_model

    try:
        with _stop_cleanly_on_signals():
            digest = convert_model(source, output, half, allow_pickle, overwrite)
    except (CheckpointError, HubError, ImportError, OutputError) as err:
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
def models() -> None:
    """List the bundled default model, its partials model and vocoder, and the checkpoints in the Hugging Face cache, each with
    the sampling it is rendered with unless --sampler, --steps or --guidance say otherwise; say what
    `--precision auto` computes in here."""
    import torch

    from midisynth.model.hub import cache_dir, cached_models
    from midisynth.model.resolve import BUNDLED_DIR, bundled_manifest, bundled_sampling, hub_sampling

    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        typer.echo(_auto_precision_line(torch.device(device)))
    manifest = bundled_manifest()
    if manifest is None:
        typer.echo("no bundled default model installed")
    for role, entry in (manifest or {}).items():
        details = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("file", "sha256", "sampling"))
        typer.echo(f"{role}: {BUNDLED_DIR / entry['file']}  sha256={entry['sha256'][:16]}…  {details}")
        if role == "model":
            typer.echo(f"  sampling: {bundled_sampling(manifest) or 'by its prediction type'}")
        if role == "partials":
            from midisynth.model.partials import load_partials

            typer.echo(f"  share in renders: {load_partials(BUNDLED_DIR / entry['file']).mix:g} (--partials)")
    try:
        cached = cached_models()
    except ImportError as err:
        typer.echo(f"hub checkpoints not listed: {err}")
        return
    if not cached:
        typer.echo(f"no Spectrogram Diffusion checkpoints in the Hugging Face cache ({cache_dir()})")
    for found in cached:
        name = f"{found.repo_id}@{found.refs[0] if found.refs else found.commit}"
        typer.echo(f"hub: {name}  commit={found.commit[:12]}  {found.size_bytes / 1e6:,.1f} MB  {found.path}")
        typer.echo(f"  sampling: {hub_sampling(found.repo_id)}")


@app.command("eval")
def evaluate(
    midi_dir: Annotated[Path, typer.Argument(help="Folder of MIDI files (e.g. a data set's heldout_midi/).")],
    soundfont: Annotated[Path, typer.Option(help="SoundFont of the reference renders.")] = Path(
        "/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Write per-file and mean scores here.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N files.")] = None,
    transcription: Annotated[bool, typer.Option(
        help="Transcription F1 (basic-pitch; the eval extra, see README).")] = True,
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
) -> None:
    """Score renders against the SoundFont reference (log-mel L1, MR-STFT, onset correlation, level in the reference's
    silences, transcription F1, ViSQOL) beside the vocoder's ceiling and sine, noise and low-pass baselines. Files
    that fail are listed; the rest are scored."""
    from midisynth.evaluation.evaluate import Scorers, evaluation_files, format_table
    from midisynth.evaluation.evaluate import evaluate as run_eval
    from midisynth.files import OutputError
    from midisynth.render.pipeline import RenderOptions

    try:
        options = RenderOptions(sampler=sampler, steps=steps, guidance=guidance, seed=seed, precision=precision,
                                partials=partials)
        files = evaluation_files(midi_dir, soundfont, json_out, limit)
        scorers = Scorers.create(transcription, visqol)
    except (OutputError, FileNotFoundError, ValueError, ImportError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    synth = _synthesizer(model, device, vocoder, options)

    def on_file(path: Path, error: str | None, report_so_far: dict) -> None:
        if error:
            _err(f"{path}: {error}")
        else:
            typer.echo(f"evaluated {path.name}", err=True)

    try:
        report = run_eval(synth, files, soundfont, scorers, on_file, json_out)
    except OutputError as err:
        _err(str(err))
        raise typer.Exit(EXIT_FAILED) from None
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
    from midisynth.data.store import DataSetError
    from midisynth.files import OutputError, make_output_directory
    from midisynth.model.partials import DEFAULT_MIX, save_partials
    from midisynth.progress import progress_bars
    from midisynth.training.partials import fit_partials as fit

    with progress_bars() as bars:
        task = bars.add_task("fit partials", total=None)
        try:
            partials = fit(data, mix=DEFAULT_MIX if mix is None else mix,
                           on_piece=lambda done, total: bars.update(task, completed=done, total=total))
            make_output_directory(out.parent, out)
            save_partials(partials, out)
        except DataSetError as err:
            _err(str(err))
            raise typer.Exit(EXIT_FAILED) from None
        except (FileNotFoundError, OutputError) as err:
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
    """Train a Vocos-style neural vocoder on the data set's reference audio."""
    from midisynth.files import OutputError
    from midisynth.progress import progress_bars
    from midisynth.training.vocoder import VocoderTrainConfig, VocoderTrainer

    try:
        VocoderTrainer.check_run(device, out)
    except (ValueError, OutputError) as err:
        _err(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    with _training_errors():
        trainer = VocoderTrainer(data, out, VocoderTrainConfig(max_steps=max_steps), device=device)
    with progress_bars() as bars:
        task = bars.add_task("vocoder", total=max_steps, completed=trainer.step)
        trainer.train(max_minutes=max_minutes,
                      on_step=lambda step, loss: bars.update(task, advance=1, loss=f"{loss:.4f}"))
    typer.echo(f"stopped at step {trainer.step}; weights: {out / 'vocoder.safetensors'}", err=True)


def run() -> None:
    """The `midisynth` command (`midisynth.standard_streams.run_and_exit`)."""
    from midisynth.standard_streams import run_and_exit

    run_and_exit(lambda: app(prog_name="midisynth"), "midisynth")


if __name__ == "__main__":
    run()
