"""Rendering a list of jobs with one progress display; a failed file is recorded and the batch goes on.

A job writes its mix and, when asked, one stem per instrument (each rendered from that instrument's notes alone),
the spectrogram (.npy) and a plot (.png). With a loudness target every audio output takes two passes: it is
rendered to a temporary 32-bit float file beside its target while the mix is measured, then copied into place
with the mix's gain (so stems keep their level relative to the mix) through a peak limiter (see midisynth.jobs.loudness).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from midisynth.audio import NonFiniteError, check_finite
from midisynth.constants import N_MELS, SAMPLE_RATE
from midisynth.files import is_special_file, make_output_directory, save_npy_atomic
from midisynth.jobs.loudness import LoudnessMeter, Normalization, limited_blocks, normalization
from midisynth.jobs.output import (
    OutputError,
    audio_file_problem,
    audio_format,
    check_creatable,
    check_writable,
    resample_stream,
    resampled_length,
    write_audio_file,
    write_wav_stream,
)
from midisynth.jobs.plan import STDIO, Job
from midisynth.render.pipeline import Synthesizer
from midisynth.score.midi import MidiError, Song
from midisynth.score.stems import instruments, stem_path, stem_song
from midisynth.score.tokens import num_windows


@dataclass(frozen=True)
class RenderFailure:
    name: str
    message: str


@dataclass(frozen=True)
class OutputSettings:
    """How every job's audio is written."""

    sample_rate: int = SAMPLE_RATE  # Hz (soxr resampling from the model's 16 kHz)
    container: str | None = None  # WAV, FLAC or OGG; None: each target's extension
    bit_depth: str | None = None  # 16, 24 or 32f; None: 16 (Vorbis for OGG)
    loudness_lufs: float | None = None  # integrated loudness to normalise to; None: as rendered
    stems: bool = False  # also one file per instrument beside the mix
    overwrite: bool = False


class JobOutputs:
    """Everything one job writes. `parts` lists (notes, target) of the mix and then its stems; call `write` for
    each part's audio, then `finish`. Used as a context manager, so temporary files go however the job ends."""

    def __init__(self, job: Job, song: Song, settings: OutputSettings, mel_out: Path | None = None,
                 plot: Path | None = None):
        self.song, self.settings, self.mel_out, self.plot = song, settings, mel_out, plot
        self.overwrite = settings.overwrite or job.redo
        self.parts: list[tuple[Song, str]] = [(song, job.target)]
        if settings.stems:
            self.parts += [(stem_song(song, inst), str(stem_path(job.target, inst))) for inst in instruments(song)]
        self._encodings = [audio_format(target, settings.container, settings.bit_depth) for _, target in self.parts]
        for (_, target), encoding in zip(self.parts, self._encodings, strict=True):  # fail before rendering
            if target != STDIO:
                check_writable(Path(target), self.overwrite, encoding)
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
        if self.settings.loudness_lufs is not None:
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
        target, encoding, rate = self.parts[part][1], self._encodings[part], self.settings.sample_rate
        if target == STDIO:
            write_wav_stream(chunks, num_samples, sample_rate=rate, subtype=encoding.subtype)
            return
        make_output_directory(Path(target).parent, target)
        write_audio_file(Path(target), chunks, overwrite=self.overwrite, sample_rate=rate, encoding=encoding,
                         num_samples=num_samples)

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


def unfinished(jobs: list[Job], settings: OutputSettings, notify: Callable[[str], None] | None = None,
               mel_out: Path | None = None, plots: Mapping[str, Path] | None = None,
               read_song: Callable[[str], Song] | None = None) -> list[Job]:
    """The jobs `--skip-existing` keeps: those writing to standard output, and those with an output not yet
    complete. A job's outputs are its mix, a complete audio file of the settings' format and rate; with
    `settings.stems` each of its song's stems, likewise (`read_song` reads the song to list them); its spectrogram
    `mel_out` (.npy [frames, 128]) and its plot (`plots`, by target). A job with some of its outputs there is kept
    to write them all again (the same seed gives the same audio), and `notify` hears why."""
    kept = []
    for job in jobs:
        if job.target == STDIO:
            kept.append(job)
            continue
        outputs = _job_outputs(job, settings, mel_out, (plots or {}).get(job.target), read_song)
        problems = [(path, problem) for path, problem in outputs.items() if problem is not None]
        if not problems:
            continue
        if not any(os.path.lexists(path) for path in outputs):
            kept.append(job)
            continue
        if notify is not None:
            (path, problem), count = problems[0], len(problems)
            if count == 1 and path == job.target:
                notify(f"{path}: {problem}; rendering it again")
            else:
                notify(f"{job.target}: {count} of its {len(outputs)} outputs not complete ({path}: {problem}); "
                       "rendering it again")
        kept.append(replace(job, redo=True))
    return kept


def _job_outputs(job: Job, settings: OutputSettings, mel_out: Path | None, plot: Path | None,
                 read_song: Callable[[str], Song] | None) -> dict[str, str | None]:
    """Each output of a job (mix, stems, spectrogram, plot) -> why it is not complete ("missing", "exists but is
    truncated", ...), or None for one that is. Stems are listed only from a song that can be read here: standard
    input cannot be read twice, and a file that cannot be read fails its render with the reason."""
    audio = [job.target]
    if settings.stems and job.source != STDIO and read_song is not None:
        try:
            audio += [str(stem_path(job.target, inst)) for inst in instruments(read_song(job.source))]
        except (MidiError, OSError):
            pass
    outputs = {}
    for target in audio:
        problem = audio_file_problem(target, audio_format(target, settings.container, settings.bit_depth),
                                     settings.sample_rate)
        outputs[target] = _missing_or(target, problem)
    if mel_out is not None:
        outputs[str(mel_out)] = _missing_or(mel_out, _spectrogram_problem(mel_out))
    if plot is not None:
        outputs[str(plot)] = None if os.path.isfile(plot) else "missing"
    return outputs


def _missing_or(path: str | Path, problem: str | None) -> str | None:
    """"missing" for a path that does not exist, else `problem` said of an existing file (None: none)."""
    if not os.path.lexists(path):
        return "missing"
    return None if problem is None else f"exists but is {problem}"


def _spectrogram_problem(path: Path) -> str | None:
    """Why `path` is not a spectrogram that `--mel-out` writes (.npy of [frames, 128]), or None when it is one."""
    try:
        features = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return "not a .npy array"
    if features.ndim != 2 or features.shape[1] != N_MELS:
        return f"an array of shape {features.shape}, not [frames, {N_MELS}]"
    return None


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=False,
    )


def _read(synth: Synthesizer, job: Job, read_song: Callable[[str], Song],
          notify: Callable[[str], None] | None) -> Song:
    """The job's song; what its render will leave out goes to `notify`, once per file."""
    song = read_song(job.source)
    if notify is not None:
        for notice in synth.notices(song):
            notify(f"{job.name}: {notice}")
    return song


# The most songs a batch renders together: each holds its score, spectrogram and open outputs until the batch
# ends (about 7 MB a song), and past a few dozen rows a network call is no faster per row.
MAX_BATCH_SIZE = 32


def _passed_to(into: list[np.ndarray], parts: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    for part in parts:
        into.append(part)
        yield part


def _render_batch(
    synth: Synthesizer,
    jobs: list[Job],
    read_song: Callable[[str], Song],
    settings: OutputSettings,
    mel_out: Path | None,
    plots: Mapping[str, Path],
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
        for job in jobs:
            try:
                outputs = JobOutputs(job, _read(synth, job, read_song, notify), settings, mel_out,
                                     plots.get(job.target))
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
                songs, on_window=lambda windows, _, before=done: on_window(before + windows, total)
            ):
                k, part = group[position]
                job, outputs = opened[k]
                if left[k] == 0:
                    continue
                try:
                    if part == 0 and outputs.wants_mel:
                        features = _passed_to(mix_mels[k], features)
                    outputs.write(part, synth.vocode(songs[position], features), synth.num_samples(songs[position]))
                    left[k] -= 1
                    if left[k] == 0:
                        _report(job, outputs.finish(mix_mels[k]), notify)
                        on_file()
                except (OutputError, NonFiniteError) as err:
                    left[k] = 0
                    fail(job, str(err))
            done += sum(num_windows(song.duration) for song in songs)


def _report(job: Job, result: Normalization | None, notify: Callable[[str], None] | None) -> None:
    if result is not None and result.warning and notify is not None:
        notify(f"{job.name}: {result.warning}")


def run_jobs(
    synth: Synthesizer,
    jobs: list[Job],
    read_song: Callable[[str], Song],
    settings: OutputSettings | None = None,
    mel_out: Path | None = None,
    plots: Mapping[str, Path] | None = None,
    progress: bool = True,
    batch_size: int = 1,
    notify: Callable[[str], None] | None = None,
) -> list[RenderFailure]:
    """Render every job; returns the failures (bad MIDI, unwritable output, NaN or infinite spectrogram or audio),
    each with a one-line reason.

    `plots` maps a job's target to its plot's path; `notify` receives warnings that are not failures (a loudness
    target missed to avoid clipping). With `batch_size` > 1 and several jobs, the songs of that many jobs are
    generated together (faster per song; audio is written when each song's spectrogram is complete rather than
    window by window), at most MAX_BATCH_SIZE jobs (a larger number is lowered to it, with a notice).
    """
    settings, plots = settings or OutputSettings(), plots or {}
    if batch_size > MAX_BATCH_SIZE:
        if notify is not None:
            notify(f"--batch-size {batch_size} lowered to {MAX_BATCH_SIZE}, the most songs generated together (each "
                   "holds its song, spectrogram and open outputs in memory until the batch ends)")
        batch_size = MAX_BATCH_SIZE
    if len(jobs) == 1:
        batch_size = 1  # its mix and stems one after another, each streamed
    failures: list[RenderFailure] = []
    with _progress() if progress else nullcontext() as bar:
        files_task = bar.add_task("files", total=len(jobs)) if bar and len(jobs) > 1 else None
        for first in range(0, len(jobs), batch_size):
            batch = jobs[first : first + batch_size]
            task = bar.add_task(Path(batch[0].name).name if batch_size == 1 else "windows", total=None) if bar else None

            def on_window(done: int, total: int, task=task) -> None:
                if bar is not None:
                    bar.update(task, completed=done, total=total)

            def on_file() -> None:
                if files_task is not None:
                    bar.update(files_task, advance=1)

            _render_batch(synth, batch, read_song, settings, mel_out, plots, batch_size > 1, failures, notify,
                          on_window, on_file)
            if files_task is not None:
                bar.remove_task(task)
    return failures
