"""`midisynth dataset`, `train`, `fit-partials`, `fit-refiner` and `train-vocoder`: data sets and training
(`midisynth.data`, `midisynth.training`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from midisynth.commands import (
    EXIT_FAILED,
    EXIT_USAGE,
    auto_precision_line,
    exits,
    print_error,
    stop_cleanly_on_signals,
)
from midisynth.constants import MIN_DATASET_HOURS

DATASET_EXAMPLES = """Examples:

midisynth dataset data/fluidr3 --hours 3

midisynth dataset data/mine --pairs recordings/ --slakh slakh2100/ --maestro maestro-v3.0.0/

midisynth dataset data/mixed --pairs recordings/ --generated --hours 1"""


def dataset(
    out_dir: Annotated[Path, typer.Argument(help="Data set directory (created; re-running resumes).")],
    soundfont: Annotated[Path, typer.Option(help="SoundFont (.sf2) of the reference synthesizer.")] = Path(
        "/usr/share/sounds/sf2/FluidR3_GM.sf2"
    ),
    midi: Annotated[list[Path] | None, typer.Option(help="Extra MIDI directories to render.")] = None,
    pairs: Annotated[
        list[Path] | None,
        typer.Option(
            help="Directory of recordings: each MIDI file (.mid, .midi) with an audio file of the same name beside it (.wav, .flac, .ogg)."
        ),
    ] = None,
    slakh: Annotated[
        list[Path] | None,
        typer.Option(help="Slakh2100 root (train/, validation/, test/ of TrackNNNNN/all_src.mid + mix.flac)."),
    ] = None,
    maestro: Annotated[
        list[Path] | None, typer.Option(help="MAESTRO v3 root (maestro-v3.0.0.csv and its year folders).")
    ] = None,
    generated: Annotated[
        bool | None,
        typer.Option(
            "--generated/--no-generated",
            help="Render music21's corpus and generated pieces.",
            show_default="only without recordings",
        ),
    ] = None,
    hours: Annotated[
        float,
        typer.Option(
            help=f"Rendered audio to store, hours, at least {MIN_DATASET_HOURS:g} (recordings are all taken)."
        ),
    ] = 3.0,
    seed: Annotated[int, typer.Option(help="Seed of the generated material and instrument choices.")] = 0,
) -> None:
    """Build a training data set: recordings with their MIDI, and MIDI rendered with FluidSynth; tokens, log-mel
    features, manifest. A recording or MIDI file that cannot be used is reported (one line) and left out."""
    from midisynth.data.build import build_dataset, check_request
    from midisynth.data.pairs import paired_sources
    from midisynth.files import OutputError

    with exits(EXIT_USAGE, ValueError, OutputError):
        check_request(out_dir, hours, list(midi or []))
    recordings = [list(pairs or []), list(slakh or []), list(maestro or [])]

    def skip(line: str) -> None:
        print_error(f"{line} (skipped)")  # above the progress bar

    with (
        stop_cleanly_on_signals(
            f"the pieces stored so far are kept and listed in {out_dir / 'manifest.json'}; "
            "run the same command to continue"
        ),
        exits(EXIT_FAILED, OSError, ValueError, RuntimeError),
    ):
        found = list(paired_sources(*recordings))
        manifest = build_dataset(
            out_dir,
            soundfont=soundfont,
            midi_dirs=list(midi or []),
            hours=hours,
            seed=seed,
            generated=not any(recordings) if generated is None else generated,
            pairs=found,
            on_skip=skip,
        )
    stored = len({piece["piece_id"] for piece in manifest["pieces"]} & {pair.piece_id for pair in found})
    if stored < len(found):
        print_error(f"{stored} of {len(found)} recordings stored, {len(found) - stored} skipped")


@contextmanager
def training_errors() -> Iterator[None]:
    """One line for what stops training before its first step: a damaged data set file (exit 1); a data set, config,
    checkpoint or --init-from that does not fit the run (exit 2)."""
    from midisynth.data.store import DataSetError
    from midisynth.model.checkpoints import CheckpointError

    with exits(EXIT_USAGE, FileNotFoundError, ValueError, CheckpointError), exits(EXIT_FAILED, DataSetError):
        yield


TRAIN_EXAMPLES = """Examples:

midisynth train --config configs/default.toml --data data/mine --out runs/mine

torchrun --standalone --nproc_per_node=4 -m midisynth train --config configs/default.toml --data data/mine --out runs/mine --device cuda

Under torchrun the config's batch_size is the global batch: each of N processes trains on batch_size / N windows a step."""


def train(
    config: Annotated[
        list[Path] | None,
        typer.Option(
            help="TOML config with \\[model] and \\[train] tables (default: configs/default.toml). Given several times, a recipe: each config trains in OUT/<its name>, from the weights of the one before; a finished stage is skipped."
        ),
    ] = None,
    data: Annotated[Path, typer.Option(help="Data set directory from `midisynth dataset`.")] = Path("data/fluidr3"),
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints; re-running resumes).")] = Path("runs/default"),
    device: Annotated[
        str, typer.Option(help="cpu or cuda (under torchrun: each process its local rank's GPU).")
    ] = "cpu",
    max_minutes: Annotated[float | None, typer.Option(help="Stop (with a checkpoint) after this many minutes.")] = None,
    init_from: Annotated[Path | None, typer.Option(help="Start from these weights (midisynth .safetensors).")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch (per process).")] = None,
) -> None:
    """Train a Spectrogram Diffusion model, or a recipe of several stages (resumable; Ctrl-C stops with a
    checkpoint). Started by torchrun, its processes train one model together (DistributedDataParallel)."""
    import torch
    from rich.progress import TaskID

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
            print_error(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    stage: Stage = stages[0]  # the one training

    with (
        stop_cleanly_on_signals(f"the run resumes from its last checkpoint in {out}: run the same command to continue"),
        ddp.process_group(ranks, device) as device,
        progress_bars(ranks.is_main) as bars,
    ):
        if ranks.is_main and any(train_config.precision == "auto" for train_config in train_configs):
            print_error(auto_precision_line(torch.device(device)))
        task: TaskID | None = None

        def on_stage(started: Stage, done: int, total: int) -> None:
            nonlocal stage, task
            stage = started
            if done >= total and ranks.is_main:
                typer.echo(f"{stage.run_dir.name}: finished ({done} steps), skipped", err=True)
            task = bars.add_task(stage.run_dir.name, total=total, completed=done, visible=done < total)

        def on_step(step: int, loss: float) -> None:
            if task is not None:
                bars.update(task, advance=1, loss=f"{loss:.4f}")

        with training_errors():
            weights = train_recipe(
                configs,
                data,
                out,
                device=device,
                init_from=init_from,
                max_minutes=max_minutes,
                on_stage=on_stage,
                on_step=on_step,
                ranks=ranks,
            )
    if ranks.is_main:
        typer.echo(
            f"stopped at step {trained_steps(stage.run_dir)}; weights: {stage.run_dir / WEIGHTS}"
            + ("" if weights else " (re-run to continue)"),
            err=True,
        )


def fit_partials(
    data: Annotated[Path, typer.Option(help="Data set directory from `midisynth dataset`.")] = Path("data/fluidr3"),
    out: Annotated[
        Path,
        typer.Option(
            help="Where to write it; beside a model file as partials.safetensors, renders with that model use it."
        ),
    ] = Path("runs/default/partials.safetensors"),
    mix: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Its default share in renders.", show_default="0.85")
    ] = None,
) -> None:
    """Fit the partials model (a spectral envelope per instrument, in closed form) to the data set's training pieces."""
    from midisynth.data.store import DataSetError
    from midisynth.files import OutputError, make_output_directory
    from midisynth.model.partials import DEFAULT_MIX, save_partials
    from midisynth.progress import progress_bars
    from midisynth.training.partials import fit_partials as fit

    with exits(EXIT_USAGE, FileNotFoundError, OutputError), exits(EXIT_FAILED, DataSetError), progress_bars() as bars:
        task = bars.add_task("fit partials", total=None)
        partials = fit(
            data,
            mix=DEFAULT_MIX if mix is None else mix,
            on_piece=lambda done, total: bars.update(task, completed=done, total=total),
        )
        make_output_directory(out.parent, out)
        save_partials(partials, out)
    typer.echo(f"partials model: {out}", err=True)


REFINER_EXAMPLES = """Examples:

midisynth fit-refiner --data data/fluidr3 --model runs/default/note_roll/model.safetensors --out runs/default/note_roll/refiner.safetensors"""


def fit_refiner(
    data: Annotated[
        list[Path] | None,
        typer.Option(
            help="Data sets to fit to (`midisynth dataset`): their training pieces, as the model renders them."
        ),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model to refine (with its partials model).", show_default="the bundled default")
    ] = None,
    run: Annotated[Path, typer.Option(help="Work directory: renders and checkpoints (re-running resumes).")] = Path(
        "runs/refiner"
    ),
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where to copy the fitted refiner; beside a model file as refiner.safetensors, renders with that model use it.",
            show_default="RUN/refiner.safetensors only",
        ),
    ] = None,
    config: Annotated[Path, typer.Option(help="TOML config: [refiner] shape, [train] fitting.")] = Path(
        "configs/refiner.toml"
    ),
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch.")] = None,
) -> None:
    """Fit a refiner (a small network that corrects the mix of the diffusion network and the partials model) to the
    model's own renders of a data set's training pieces (resumable; Ctrl-C stops with what is done kept)."""
    import shutil

    import torch

    from midisynth.files import OutputError, atomic_path, make_output_directory
    from midisynth.model.directory import REFINER_FILE
    from midisynth.progress import progress_bars
    from midisynth.render.pipeline import RenderOptions, Synthesizer
    from midisynth.training.refiner import RefinerTrainConfig, RefinerTrainer, make_examples

    if threads:
        torch.set_num_threads(threads)
    with training_errors(), exits(EXIT_USAGE, OutputError):
        tc = RefinerTrainConfig.from_file(config)
        RefinerTrainer.check_run(device, run)
        sets = data or [Path("data/fluidr3")]
        synth = Synthesizer.from_pretrained(model, device=device, options=RenderOptions(refine=False))
    with stop_cleanly_on_signals(f"what was done is kept in {run}; run it again to continue"), progress_bars() as bars:
        task = bars.add_task("render examples", total=None)
        with training_errors():
            files = make_examples(
                synth, sets, run, on_piece=lambda done, total: bars.update(task, completed=done, total=total)
            )
            del synth
            trainer = RefinerTrainer(files, run, tc, device=device)
        task = bars.add_task("fit refiner", total=tc.max_steps, completed=trainer.step)
        trainer.train(on_step=lambda step, loss: bars.update(task, completed=step, loss=f"{loss:.4f}"))
    fitted = run / REFINER_FILE
    if out is not None:
        with exits(EXIT_USAGE, OutputError):
            make_output_directory(out.parent, out)
            with atomic_path(out) as tmp:
                shutil.copyfile(fitted, tmp)
    typer.echo(f"refiner: {out or fitted} ({trainer.windows} windows, {trainer.step} steps)", err=True)


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

    with exits(EXIT_USAGE, ValueError, OutputError):
        VocoderTrainer.check_run(device, out)
    with training_errors():
        trainer = VocoderTrainer(data, out, VocoderTrainConfig(max_steps=max_steps), device=device)
    with progress_bars() as bars:
        task = bars.add_task("vocoder", total=max_steps, completed=trainer.step)
        trainer.train(
            max_minutes=max_minutes, on_step=lambda step, loss: bars.update(task, advance=1, loss=f"{loss:.4f}")
        )
    typer.echo(f"stopped at step {trainer.step}; weights: {out / 'vocoder.safetensors'}", err=True)


ADAPT_EXAMPLES = """Examples:

midisynth adapt my-recordings/ -o my-model          (each MIDI file with its .wav/.flac/.ogg beside it)

midisynth adapt --soundfont MySounds.sf2 -o my-model --minutes 20   (every instrument of the SoundFont)

midisynth adapt --soundfont MySounds.sf2 --midi songs/ -o my-model  (and songs/ rendered with it)

midisynth render song.mid -o song.wav --model my-model"""


def adapt(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The adapted model directory (created; re-running resumes).")
    ],
    recordings: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Folders of recordings: each MIDI file with an audio file of the same name beside it.",
            show_default=False,
        ),
    ] = None,
    midi: Annotated[list[Path] | None, typer.Option(help="MIDI folders to render with --soundfont.")] = None,
    soundfont: Annotated[
        Path | None,
        typer.Option(
            help="A SoundFont whose sound to learn: it renders a survey of every GM instrument and drum grooves (12 minutes), and the --midi folders."
        ),
    ] = None,
    minutes: Annotated[
        float, typer.Option(min=0.0, help="Fine-tuning time in all, minutes (a resumed run has what is left).")
    ] = 20.0,
    model: Annotated[
        Path | None, typer.Option(help="Model directory to start from.", show_default="the bundled default")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch.")] = None,
) -> None:
    """Adapt a model to your recordings or SoundFont: store them as a data set, hold out part of them, fit the
    partials model and fine-tune the network for --minutes, then write a model directory for `render --model` and
    report the held-out scores before and after. Interrupted, the same command resumes."""
    import math

    import torch

    from midisynth.files import OutputError
    from midisynth.model.resolve import BUNDLED_DIR
    from midisynth.progress import progress_bars
    from midisynth.training.adapt import adapt as run_adapt
    from midisynth.training.adapt import gather_material
    from midisynth.training.diffusion import Trainer

    if threads:
        torch.set_num_threads(threads)
    with exits(EXIT_USAGE, ValueError, OutputError):
        if not math.isfinite(minutes):
            raise ValueError(f"--minutes {minutes:g}: give a finite number of minutes")
        material = gather_material(list(recordings or []), list(midi or []), soundfont)
        Trainer.check_run(device, out)
    with (
        stop_cleanly_on_signals(f"what is done is kept in {out}: run the same command to continue"),
        progress_bars() as bars,
    ):
        task = None

        def on_step(step: int, loss: float) -> None:
            nonlocal task
            if task is None:
                task = bars.add_task("fine-tune", total=None, completed=step - 1)
            bars.update(task, advance=1, loss=f"{loss:.4f}")

        with training_errors():
            result = run_adapt(
                material,
                out,
                model or BUNDLED_DIR,
                minutes,
                device,
                say=print_error,
                on_skip=lambda line: print_error(f"{line} (skipped)"),
                on_step=on_step,
            )
    typer.echo(f"adapted model: {result.directory} ({result.steps} steps, {result.minutes_trained:.1f} min)")
    for name, scores in (("base model", result.before), ("adapted", result.after)):
        typer.echo(f"  held-out {name}: {scores if scores else 'nothing held out'}")
