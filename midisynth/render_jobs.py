"""Rendering a list of jobs with one progress display; a failed file is recorded and the batch goes on."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midisynth.batch import STDIO, Job
from midisynth.midi import MidiError, Song
from midisynth.output import OutputError, save_npy_atomic, write_audio_file, write_wav_stream
from midisynth.pipeline import Synthesizer


@dataclass(frozen=True)
class RenderFailure:
    name: str
    message: str


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=False,
    )


def render_job(
    synth: Synthesizer,
    job: Job,
    song: Song,
    overwrite: bool,
    mel_out: Path | None,
    on_window: Callable[[int, int], None] | None,
) -> None:
    """Render one song to its target (file or stdout), streaming window by window."""
    mel_parts: list[np.ndarray] = []
    sink = mel_parts.append if mel_out is not None else None
    chunks = synth.stream(song, on_window=on_window, mel_sink=sink)
    if job.target == STDIO:
        write_wav_stream(chunks, synth.num_samples(song))
    else:
        target = Path(job.target)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_audio_file(target, chunks, overwrite=overwrite)
    if mel_out is not None:
        save_npy_atomic(mel_out, np.concatenate(mel_parts).astype(np.float32))


def run_jobs(
    synth: Synthesizer,
    jobs: list[Job],
    overwrite: bool,
    mel_out: Path | None,
    read_song: Callable[[str], Song],
    progress: bool,
) -> list[RenderFailure]:
    """Render every job; returns the failures (bad MIDI, unwritable output), each with a one-line reason."""
    failures: list[RenderFailure] = []
    with _progress() if progress else nullcontext() as bar:
        files_task = bar.add_task("files", total=len(jobs)) if bar and len(jobs) > 1 else None
        for job in jobs:
            window_task = bar.add_task(Path(job.name).name, total=None) if bar else None

            def on_window(done: int, total: int, task=window_task) -> None:
                if bar is not None:
                    bar.update(task, completed=done, total=total)

            try:
                render_job(synth, job, read_song(job.source), overwrite, mel_out, on_window)
            except (MidiError, OutputError) as err:
                failures.append(RenderFailure(job.name, str(err)))
            except OSError as err:
                failures.append(RenderFailure(job.name, f"cannot read input ({err.strerror or err})"))
            if bar is not None:
                if files_task is not None:
                    bar.update(files_task, advance=1)
                    bar.remove_task(window_task)
    return failures
