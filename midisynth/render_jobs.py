"""Rendering a list of jobs with one progress display; a failed file is recorded and the batch goes on."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midisynth.batch import STDIO, Job
from midisynth.constants import SAMPLE_RATE
from midisynth.midi import MidiError, Song
from midisynth.output import (
    OutputError,
    resample_stream,
    resampled_length,
    save_npy_atomic,
    write_audio_file,
    write_wav_stream,
)
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


def _write(job: Job, chunks: Iterable[np.ndarray], num_samples: int, overwrite: bool, rate: int) -> None:
    """Write 16 kHz chunks to the job's target (file or stdout), resampled to `rate` Hz."""
    chunks = resample_stream(chunks, rate)
    if job.target == STDIO:
        write_wav_stream(chunks, resampled_length(num_samples, rate), sample_rate=rate)
    else:
        target = Path(job.target)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_audio_file(target, chunks, overwrite=overwrite, sample_rate=rate)


def render_job(
    synth: Synthesizer,
    job: Job,
    song: Song,
    overwrite: bool,
    mel_out: Path | None,
    on_window: Callable[[int, int], None] | None,
    rate: int = SAMPLE_RATE,
) -> None:
    """Render one song to its target (file or stdout), streaming window by window."""
    mel_parts: list[np.ndarray] = []
    sink = mel_parts.append if mel_out is not None else None
    _write(job, synth.stream(song, on_window=on_window, mel_sink=sink), synth.num_samples(song), overwrite, rate)
    if mel_out is not None:
        save_npy_atomic(mel_out, np.concatenate(mel_parts).astype(np.float32))


def _batched(
    synth: Synthesizer,
    jobs: list[Job],
    overwrite: bool,
    read_song: Callable[[str], Song],
    failures: list[RenderFailure],
    on_window: Callable[[int, int], None],
    on_file: Callable[[], None],
    rate: int,
) -> None:
    """Render jobs as one batch of songs (windows of different songs share network calls)."""
    loaded: list[tuple[Job, Song]] = []
    for job in jobs:
        try:
            loaded.append((job, read_song(job.source)))
        except MidiError as err:
            failures.append(RenderFailure(job.name, str(err)))
            on_file()
    for index, features in synth.spectrogram_songs([song for _, song in loaded], on_window=on_window):
        job, song = loaded[index]
        try:
            _write(job, synth.vocoder.stream(features), synth.num_samples(song), overwrite, rate)
        except OutputError as err:
            failures.append(RenderFailure(job.name, str(err)))
        on_file()


def run_jobs(
    synth: Synthesizer,
    jobs: list[Job],
    overwrite: bool,
    mel_out: Path | None,
    read_song: Callable[[str], Song],
    progress: bool,
    batch_size: int = 1,
    sample_rate: int = SAMPLE_RATE,
) -> list[RenderFailure]:
    """Render every job; returns the failures (bad MIDI, unwritable output), each with a one-line reason.

    With `batch_size` > 1, that many songs are generated together (faster per song; audio is written when each
    song's spectrogram is complete rather than window by window).
    """
    failures: list[RenderFailure] = []
    with _progress() if progress else nullcontext() as bar:
        files_task = bar.add_task("files", total=len(jobs)) if bar and len(jobs) > 1 else None
        if batch_size > 1 and len(jobs) > 1:
            windows_task = bar.add_task("windows", total=None) if bar else None
            for first in range(0, len(jobs), batch_size):
                _batched(
                    synth, jobs[first : first + batch_size], overwrite, read_song, failures,
                    on_window=lambda done, total: bar and bar.update(windows_task, completed=done, total=total),
                    on_file=lambda: bar and bar.update(files_task, advance=1),
                    rate=sample_rate,
                )
            return failures
        for job in jobs:
            window_task = bar.add_task(Path(job.name).name, total=None) if bar else None

            def on_window(done: int, total: int, task=window_task) -> None:
                if bar is not None:
                    bar.update(task, completed=done, total=total)

            try:
                render_job(synth, job, read_song(job.source), overwrite, mel_out, on_window, sample_rate)
            except (MidiError, OutputError) as err:
                failures.append(RenderFailure(job.name, str(err)))
            except OSError as err:
                failures.append(RenderFailure(job.name, f"cannot read input ({err.strerror or err})"))
            if bar is not None:
                if files_task is not None:
                    bar.update(files_task, advance=1)
                    bar.remove_task(window_task)
    return failures
