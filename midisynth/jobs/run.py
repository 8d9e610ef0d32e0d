"""Rendering a list of jobs with one progress display; a failed file is recorded and the batch goes on.

A job writes its mix and, when asked, one stem per instrument (each rendered from that instrument's notes alone),
the spectrogram (.npy) and a plot (.png). With a loudness target every audio output takes two passes: it is
rendered to a temporary 32-bit float file beside its target while the mix is measured, then copied into place
with the mix's gain (so stems keep their level relative to the mix) through a peak limiter (see midisynth.jobs.loudness).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
from rich.progress import TaskID

from midisynth.audio import NonFiniteError, check_finite
from midisynth.files import check_creatable, is_special_file, make_output_directory, save_npy_atomic
from midisynth.jobs.loudness import LoudnessMeter, Normalization, limited_blocks, normalization
from midisynth.jobs.output import (
    STDIO,
    OutputError,
    OutputSettings,
    check_writable,
    resample_stream,
    resampled_length,
    write_audio_file,
    write_wav_stream,
)
from midisynth.jobs.plan import Job, RenderPlan
from midisynth.progress import progress_bars
from midisynth.render.pipeline import Synthesizer
from midisynth.score.midi import MidiError, Song
from midisynth.score.stems import instruments, stem_path, stem_song
from midisynth.score.tokens import num_windows


@dataclass(frozen=True)
class RenderFailure:
    name: str
    message: str


class JobOutputs:
    """Everything one job writes. `parts` lists (notes, target) of the mix and then its stems; call `write` for
    each part's audio, then `finish`. Used as a context manager, so temporary files go however the job ends."""

    def __init__(
        self, job: Job, song: Song, settings: OutputSettings, mel_out: Path | None = None, plot: Path | None = None
    ):
        self.song, self.settings, self.mel_out, self.plot = song, settings, mel_out, plot
        self.overwrite = settings.overwrite or job.redo
        self.parts: list[tuple[Song, str]] = [(song, job.target)]
        if settings.stems:
            self.parts += [(stem_song(song, inst), str(stem_path(job.target, inst))) for inst in instruments(song)]
        self.encoding = job.encoding  # the mix's and its stems' (their names end as the mix's)
        for _, target in self.parts:  # fail before rendering
            if target != STDIO:
                check_writable(
                    Path(target), self.overwrite, self.encoding, "pass --overwrite to replace it, or --skip-existing"
                )
        for extra in (mel_out, plot):  # a plot's missing folders are made when it is saved
            if extra is not None and not is_special_file(extra) and (extra == mel_out or Path(extra).parent.is_dir()):
                check_creatable(Path(extra))
        self._unscaled: dict[int, tuple[Path, int]] = {}  # part -> (temporary float file, samples), for loudness
        self._mix_meter: LoudnessMeter | None = None  # the mix's loudness, measured in the first pass
        self._cleanup = ExitStack()

    def __enter__(self) -> JobOutputs:
        return self

    def __exit__(self, *exc) -> None:
        self._cleanup.close()

    @property
    def wants_mel(self) -> bool:
        """Whether `finish` needs the mix's spectrogram."""
        return self.mel_out is not None or self.plot is not None

    def write(self, part: int, chunks: Iterable[np.ndarray], num_samples: int) -> None:
        """Write a part's audio: 16 kHz chunks, `num_samples` samples in all (at 16 kHz). A chunk holding NaN or
        infinity raises NonFiniteError, and the file being written is removed."""
        rate = self.settings.sample_rate
        chunks = (check_finite(chunk, "the rendered audio") for chunk in chunks)
        chunks, num_samples = resample_stream(chunks, rate), resampled_length(num_samples, rate)
        if self.settings.loudness_lufs is None:
            self._write_final(part, chunks, num_samples)
            return
        if part == 0:
            self._mix_meter = LoudnessMeter(rate)
            chunks = self._mix_meter.metered(chunks)
        target = self.parts[part][1]
        unscaled = self._temporary_file(target)
        try:
            with sf.SoundFile(unscaled, "w", rate, 1, format="RF64", subtype="FLOAT") as f:  # RF64: over 4 GB
                for chunk in chunks:
                    f.write(chunk)
        except (OSError, sf.SoundFileRuntimeError) as err:
            raise OutputError(f"{target}: writing the unscaled audio for --loudness failed ({err})") from None
        self._unscaled[part] = (unscaled, num_samples)

    def finish(self, mel_parts: list[np.ndarray]) -> Normalization | None:
        """Second loudness pass (if any), then the spectrogram and plot from the mix's `mel_parts` [frames, 128]."""
        result = None
        if self.settings.loudness_lufs is not None and self._mix_meter is not None:
            result = normalization(self._unscaled[0][0], self._mix_meter.integrated_lufs(), self.settings.loudness_lufs)
            for part, (unscaled, num_samples) in sorted(self._unscaled.items()):
                self._write_final(part, limited_blocks(unscaled, result.gain), num_samples)
        if self.wants_mel:
            features = np.concatenate(mel_parts).astype(np.float32)
            if self.mel_out is not None:
                save_npy_atomic(self.mel_out, features)
            if self.plot is not None:
                from midisynth.jobs.plot import save_plot

                save_plot(self.plot, features, self.song)
        return result

    def _write_final(self, part: int, chunks: Iterable[np.ndarray], num_samples: int) -> None:
        target, rate = self.parts[part][1], self.settings.sample_rate
        if target == STDIO:
            write_wav_stream(chunks, num_samples, sample_rate=rate, subtype=self.encoding.subtype)
            return
        make_output_directory(Path(target).parent, target)
        write_audio_file(
            Path(target), chunks, self.encoding, overwrite=self.overwrite, sample_rate=rate, num_samples=num_samples
        )

    def _temporary_file(self, target: str) -> Path:
        """An empty file beside `target` (the system's temporary folder for stdout), deleted on exit."""
        directory = None if target == STDIO else Path(target).parent
        if directory is not None:
            make_output_directory(directory, target)
        try:
            fd, name = tempfile.mkstemp(dir=directory, prefix=".midisynth-", suffix=".unscaled.wav")
        except OSError as err:
            raise OutputError(f"{target}: cannot create a temporary file ({err.strerror or err})") from None
        os.close(fd)
        self._cleanup.callback(Path(name).unlink, missing_ok=True)
        return Path(name)


def _read(synth: Synthesizer, job: Job, read_song: Callable[[str], Song], notify: Callable[[str], None] | None) -> Song:
    """The job's song; what its render will leave out goes to `notify`, once per file."""
    song = read_song(job.source)
    if notify is not None:
        for notice in synth.notices(song):
            notify(f"{job.name}: {notice}")
    return song


# The most songs a batch renders together: each holds its score, spectrogram and open outputs until the batch
# ends (about 7 MB a song), and past a few dozen rows a network call is no faster per row.
MAX_BATCH_SIZE = 32


def _render_batch(
    synth: Synthesizer,
    plan: RenderPlan,
    together: bool,
    failures: list[RenderFailure],
    notify: Callable[[str], None] | None,
    on_window: Callable[[int, int], None],
    on_file: Callable[[], None],
) -> None:
    """Render jobs: their songs (each mix, and its stems) generated `together` in one batch (a song's audio is
    written when its spectrogram is complete), or one song after another, each written window by window."""

    def fail(job: Job, message: str) -> None:
        failures.append(RenderFailure(job.name, message))
        on_file()

    with ExitStack() as stack:
        opened: list[tuple[Job, JobOutputs]] = []
        for job in plan.jobs:
            try:
                outputs = JobOutputs(
                    job,
                    _read(synth, job, plan.read_song, notify),
                    plan.settings,
                    plan.mel_out,
                    plan.plots.get(job.target),
                )
                opened.append((job, stack.enter_context(outputs)))
            except (MidiError, OutputError) as err:
                fail(job, str(err))
            except OSError as err:  # reading standard input
                fail(job, f"{err.filename or 'input'}: {err.strerror or err}")
        parts = [(k, part) for k, (_, outputs) in enumerate(opened) for part in range(len(outputs.parts))]
        left = [len(outputs.parts) for _, outputs in opened]  # parts still to write; 0 once failed or done
        mix_mels: list[list[np.ndarray]] = [[] for _ in opened]
        total = sum(num_windows(opened[k][1].parts[part][0].duration) for k, part in parts)
        done = 0  # windows of the groups already rendered
        for group in [parts] if together else [[one] for one in parts]:
            group = [(k, part) for k, part in group if left[k] > 0]
            songs = [opened[k][1].parts[part][0] for k, part in group]
            for position, features in synth.spectrogram_songs(
                songs, on_window=partial(_offset, on_window, done, total)
            ):
                k, part = group[position]
                job, outputs = opened[k]
                if left[k] == 0:
                    continue
                try:
                    sink = mix_mels[k].append if part == 0 and outputs.wants_mel else None
                    outputs.write(
                        part, synth.vocode(songs[position], features, sink), synth.num_samples(songs[position])
                    )
                    left[k] -= 1
                    if left[k] == 0:
                        _report(job, outputs.finish(mix_mels[k]), notify)
                        on_file()
                except (OutputError, NonFiniteError) as err:
                    left[k] = 0
                    fail(job, str(err))
            done += sum(num_windows(song.duration) for song in songs)


def _offset(on_window: Callable[[int, int], None], before: int, total: int, done: int, _: int) -> None:
    """`on_window` told of `done` windows after `before` others, of `total` in all."""
    on_window(before + done, total)


def _report(job: Job, result: Normalization | None, notify: Callable[[str], None] | None) -> None:
    if result is not None and result.warning and notify is not None:
        notify(f"{job.name}: {result.warning}")


def run_jobs(
    synth: Synthesizer,
    plan: RenderPlan,
    progress: bool = True,
    batch_size: int = 1,
    notify: Callable[[str], None] | None = None,
) -> list[RenderFailure]:
    """Render every job of `plan` (`midisynth.jobs.plan.plan_render`); returns the failures (bad MIDI, unwritable
    output, NaN or infinite spectrogram or audio), each with a one-line reason.

    `notify` receives warnings that are not failures (a loudness target missed to avoid clipping). With
    `batch_size` > 1 and several jobs, the songs of that many jobs are generated together (faster per song; audio is
    written when each song's spectrogram is complete rather than window by window), at most MAX_BATCH_SIZE jobs (a
    larger number is lowered to it, with a notice).
    """
    jobs = plan.jobs
    if batch_size > MAX_BATCH_SIZE:
        if notify is not None:
            notify(
                f"--batch-size {batch_size} lowered to {MAX_BATCH_SIZE}, the most songs generated together (each "
                "holds its song, spectrogram and open outputs in memory until the batch ends)"
            )
        batch_size = MAX_BATCH_SIZE
    if len(jobs) == 1:
        batch_size = 1  # its mix and stems one after another, each streamed
    failures: list[RenderFailure] = []
    with progress_bars(progress) as bars:
        files_task = bars.add_task("files", total=len(jobs)) if len(jobs) > 1 else None
        for first in range(0, len(jobs), batch_size):
            batch = jobs[first : first + batch_size]
            task = bars.add_task(Path(batch[0].name).name if batch_size == 1 else "windows", total=None)

            def on_window(done: int, total: int, task: TaskID = task) -> None:
                bars.update(task, completed=done, total=total)

            def on_file() -> None:
                if files_task is not None:
                    bars.update(files_task, advance=1)

            _render_batch(synth, replace(plan, jobs=batch), batch_size > 1, failures, notify, on_window, on_file)
            if files_task is not None:
                bars.remove_task(task)
    return failures
