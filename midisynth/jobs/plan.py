"""The plan of a render, made before any model loads: command-line inputs (files, directories, '-') expanded into
(input, output) jobs that mirror the input tree, each output's format and the extra outputs checked once."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from midisynth.extras import import_extra
from midisynth.jobs.output import EXTENSIONS, STDIO, AudioFormat, OutputSettings, audio_format
from midisynth.jobs.resume import unfinished
from midisynth.score.midi import DEFAULT_LIMITS, Song, SongLimits, read_midi
from midisynth.score.midi_files import MIDI_SUFFIXES, find_midi_files


class UsageError(ValueError):
    """Inputs and outputs that do not fit together; the CLI exits with status 2."""


@dataclass(frozen=True)
class Job:
    source: str  # a path, or '-' for standard input
    target: str  # a path, or '-' for standard output
    encoding: AudioFormat  # the target's format (`audio_format`), also its stems'
    redo: bool = False  # the target exists but is not a complete output: the job replaces it

    @property
    def name(self) -> str:
        """The input as error lines name it (see `shown`)."""
        return _source_name(self.source)


def _source_name(source: str) -> str:
    return "<stdin>" if source == STDIO else shown(source)


def shown(name: str) -> str:
    """`name` as error lines show it: itself, or quoted as repr() quotes it when it holds a character that is not
    printable (a newline in a file name would otherwise start a forged line of its own)."""
    return name if name.isprintable() else repr(name)


def _kind(path: Path) -> str | None:
    """'dir', 'file' (anything else that exists) or None; UsageError for a name the system cannot look up."""
    try:
        return "dir" if path.is_dir() else "file" if path.exists() else None
    except OSError as err:  # a name over the file system's limit, a loop of links
        raise UsageError(f"{path}: {err.strerror or err}") from None


def name_limit(path: Path) -> int:
    """The longest file name (bytes) the file system of `path`'s nearest existing folder takes."""
    folder = path.parent
    while not os.path.isdir(folder) and folder != folder.parent:  # isdir: False for a name too long to look up
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_name_lengths(paths: Iterable[str | Path]) -> None:
    """UsageError naming the first path with a file or folder name longer than its file system takes."""
    for path in map(Path, paths):
        longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
        limit = name_limit(path)
        if longest > limit:
            raise UsageError(f"{path}: file name too long ({longest} bytes; the file system takes at most {limit})")


def check_not_inputs(sources: Iterable[str], outputs: Iterable[str | Path]) -> None:
    """UsageError if one of `outputs` is one of the input files `sources` ('-' for standard input is none)."""
    inputs = [Path(source) for source in sources if source != STDIO]
    for output in map(str, outputs):
        if output == STDIO or not os.path.exists(output):
            continue
        for source in inputs:
            if os.path.samefile(source, output):
                raise UsageError(f"{output}: this is the input file {source}; write the output elsewhere")


def parse_shard(spec: str) -> tuple[int, int]:
    """'I/N' (1-based I of N shards) -> (I, N)."""
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard wants I/N with integers, e.g. 2/8; got {spec!r}") from None
    if not 1 <= index <= count:
        raise UsageError(f"--shard {spec}: I must be between 1 and N")
    return index, count


def shard(jobs: list[Job], index: int, count: int) -> list[Job]:
    """Every count-th job starting at the index-th (1-based): N job-array tasks cover all jobs exactly once."""
    return jobs[index - 1 :: count]


def plan_jobs(
    inputs: list[str],
    output: str | None,
    container: str | None = None,
    bit_depth: str | None = None,
    extension: str | None = None,
) -> list[Job]:
    """Map inputs to outputs, each of the audio format `audio_format` gives it for `container` and `bit_depth`
    (OutputError for one that cannot hold them).

    - one file (or '-') and OUT a file path or '-': that file;
    - several inputs or a directory: OUT is a directory; a directory input's tree is mirrored below it;
    - no OUT: each output lands beside its input.
    Outputs made from input names take `extension` (None: the container's, else .wav).
    """
    if not inputs:
        raise UsageError("no input given")
    if inputs.count(STDIO) > 1:
        raise UsageError("'-' (standard input) can be given only once")
    extension = extension or (EXTENSIONS[container] if container else ".wav")
    expanded: list[tuple[str, Path]] = []  # (source, path relative to the output directory)
    for item in inputs:
        if item == STDIO:
            expanded.append((STDIO, Path("stdin" + extension)))
            continue
        path = Path(item)
        kind = _kind(path)
        if kind == "dir":
            files = find_midi_files(path)
            if not files:
                raise UsageError(f"{path}: directory holds no MIDI files ({', '.join(MIDI_SUFFIXES)})")
            expanded.extend((str(f), f.relative_to(path).with_suffix(extension)) for f in files)
        elif kind == "file":
            expanded.append((item, Path(path.name).with_suffix(extension)))
        else:
            raise UsageError(f"{path}: no such file or directory")
    if output not in (None, STDIO):
        check_name_lengths([output])
    pairs = _map_outputs(inputs, expanded, output, extension)
    check_distinct_targets(pairs)
    check_name_lengths(target for _, target in pairs if target != STDIO)
    check_not_inputs([source for source, _ in pairs], [target for _, target in pairs])
    formats = {target: audio_format(target, container, bit_depth) for target in dict.fromkeys(t for _, t in pairs)}
    return [Job(source, target, formats[target]) for source, target in pairs]


def _map_outputs(
    inputs: list[str], expanded: list[tuple[str, Path]], output: str | None, extension: str
) -> list[tuple[str, str]]:
    """(source, target) of each input."""
    single = len(inputs) == 1 and _kind(Path(inputs[0])) != "dir"
    if output == STDIO:
        if not single:
            raise UsageError("'-o -' (standard output) takes exactly one input file")
        return [(expanded[0][0], STDIO)]
    if output is None:
        if any(src == STDIO for src, _ in expanded):
            raise UsageError("reading standard input needs -o (a file, or '-' for standard output)")
        return [(src, str(Path(src).with_suffix(extension))) for src, _ in expanded]
    out = Path(output)
    out_kind = _kind(out)
    if single and out_kind != "dir" and not output.endswith(("/", "\\")):
        return [(expanded[0][0], output)]
    if out_kind == "file":
        raise UsageError(f"{out}: several inputs need an output directory, but this is a file")
    return [(src, str(out / rel)) for src, rel in expanded]


def check_distinct_targets(pairs: list[tuple[str, str]]) -> None:
    """UsageError naming the inputs of the first output that several inputs would write (a.mid, a.midi and a.MID
    in one folder all make a.wav), before any of them renders; `pairs`: (source, target) of each input."""
    by_target: dict[str, list[tuple[str, str]]] = {}
    for source, target in pairs:
        if target != STDIO:
            by_target.setdefault(os.path.abspath(target), []).append((source, target))
    for same in by_target.values():
        if len(same) > 1:
            names = [_source_name(source) for source, _ in same]
            raise UsageError(
                f"{', '.join(names[:-1])} and {names[-1]} map to one output, {same[0][1]}; "
                "rename all but one, or render them separately"
            )


def plot_paths(jobs: list[Job], plot: str) -> dict[str, Path]:
    """Where each job's plot goes (target -> .png path).

    One job: `plot` itself, unless it is a directory. Several jobs: `plot` is a directory (created when missing)
    that mirrors the targets below their common folder, each target's name with .png.
    """
    where = Path(plot)
    if len(jobs) == 1 and not where.is_dir() and not plot.endswith(("/", "\\")):
        return {jobs[0].target: where}
    if where.is_file() or (not where.exists() and where.suffix.lower() == ".png"):
        raise UsageError(f"--plot {plot}: the plots of several inputs go in a directory, and this names a file")
    targets = {job.target: Path(os.path.abspath("stdout.wav" if job.target == STDIO else job.target)) for job in jobs}
    common = Path(os.path.commonpath([path.parent for path in targets.values()]))
    return {target: where / path.relative_to(common).with_suffix(".png") for target, path in targets.items()}


def read_source(source: str, limits: SongLimits = DEFAULT_LIMITS, start: float = 0.0, end: float | None = None) -> Song:
    """Read a MIDI file, or standard input for '-', within `limits` (header first, at most `limits.max_bytes`
    read), cut to [start, end] seconds when asked."""
    return read_midi(sys.stdin.buffer if source == STDIO else source, limits, start, end)


@dataclass(frozen=True)
class RenderPlan:
    """What a render does: its jobs, how their audio is written, the extra outputs, and how songs are read."""

    jobs: list[Job]
    settings: OutputSettings = field(default_factory=OutputSettings)
    mel_out: Path | None = None  # the spectrogram [frames, 128] (.npy) of the only job
    plots: dict[str, Path] = field(default_factory=dict)  # a job's target -> its plot (.png)
    limits: SongLimits = DEFAULT_LIMITS  # songs refused
    start: float = 0.0  # seconds: each song is cut to [start, end]
    end: float | None = None  # None: the song's end
    planned: int = 0  # jobs the inputs made, before a shard was taken (`plan_render`)
    skipped: int = 0  # jobs left out because their outputs are complete (`plan_render`'s skip_existing)

    def read_song(self, source: str) -> Song:
        """A job's song (`read_source`, with this plan's limits and cut)."""
        return read_source(source, self.limits, self.start, self.end)


def check_excerpt(start: float, end: float | None) -> None:
    """UsageError unless the excerpt [start, end] seconds of a song (end None: its end) is not empty."""
    if end is not None and end <= start:
        raise UsageError(f"--end {end:g} must be after --start {start:g} (seconds)")


def plan_render(
    inputs: list[str],
    output: str | None,
    settings: OutputSettings | None = None,
    mel_out: Path | None = None,
    plot: str | None = None,
    shard_spec: str | None = None,
    limits: SongLimits = DEFAULT_LIMITS,
    start: float = 0.0,
    end: float | None = None,
    skip_existing: bool = False,
    notify: Callable[[str], None] | None = None,
    extension: str | None = None,
) -> RenderPlan:
    """Plan a render (what `midisynth render` checks before any model loads): `inputs` and `output` as `plan_jobs`
    maps them, each target's format checked once; the shard `shard_spec` ("I/N") of them; the extra outputs
    (`mel_out`, `plot`) and the optional packages the settings need. Raises UsageError, OutputError or ImportError
    (the missing extra named) for what cannot work. With `skip_existing` the jobs whose outputs are all complete are
    left out (`midisynth.jobs.resume`; `notify` hears why a job with some of them is rendered again). An empty shard
    gives a plan without jobs, and nothing else is checked."""
    settings = settings or OutputSettings()
    check_excerpt(start, end)
    if settings.overwrite and skip_existing:
        raise UsageError("--overwrite and --skip-existing contradict each other")
    jobs = plan_jobs(inputs, output, settings.container, settings.bit_depth, extension)
    planned = len(jobs)
    if shard_spec is not None:
        jobs = shard(jobs, *parse_shard(shard_spec))
        if not jobs:
            return RenderPlan([], settings, planned=planned)
    if settings.stems and any(job.target == STDIO for job in jobs):
        raise UsageError("--stems writes files beside the mix: give -o FILE or a directory, not '-'")
    if mel_out is not None and str(mel_out) == STDIO:
        raise UsageError(
            "--mel-out -: the spectrogram is written to a .npy file, not to standard output; give a file name"
        )
    if mel_out is not None and len(jobs) != 1:
        raise UsageError("--mel-out takes exactly one input")
    if settings.loudness_lufs is not None:
        import_extra("pyloudnorm", "loudness", "--loudness")
    plots = {}
    if plot is not None:
        import_extra("matplotlib", "plot", "--plot")
        plots = plot_paths(jobs, plot)
    extra_outputs = [*plots.values(), *([mel_out] if mel_out is not None else [])]
    check_name_lengths(extra_outputs)
    check_not_inputs([job.source for job in jobs], extra_outputs)
    plan = RenderPlan(jobs, settings, mel_out, plots, limits, start, end, planned)
    if not skip_existing:
        return plan
    todo = unfinished(plan, notify)
    return replace(plan, jobs=todo, skipped=len(jobs) - len(todo))
