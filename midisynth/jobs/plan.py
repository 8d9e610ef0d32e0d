"""Expanding command-line inputs (files, directories, '-') into (input, output) jobs that mirror the input tree."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from midisynth.score.midi_files import MIDI_SUFFIXES, find_midi_files

STDIO = "-"


class UsageError(ValueError):
    """Inputs and outputs that do not fit together; the CLI exits with status 2."""


@dataclass(frozen=True)
class Job:
    source: str  # a path, or '-' for standard input
    target: str  # a path, or '-' for standard output
    redo: bool = False  # the target exists but is not a complete output: the job replaces it

    @property
    def name(self) -> str:
        """The input as error lines name it (see `shown`)."""
        return "<stdin>" if self.source == STDIO else shown(self.source)


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


def check_not_inputs(jobs: list[Job], outputs: Iterable[str | Path] = ()) -> None:
    """UsageError if an output (each job's target, and `outputs`) is one of the input files."""
    sources = [Path(job.source) for job in jobs if job.source != STDIO]
    for output in [job.target for job in jobs if job.target != STDIO] + [str(path) for path in outputs]:
        if not os.path.exists(output):
            continue
        for source in sources:
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


def plan_jobs(inputs: list[str], output: str | None, extension: str = ".wav") -> list[Job]:
    """Map inputs to outputs.

    - one file (or '-') and OUT a file path or '-': that file;
    - several inputs or a directory: OUT is a directory; a directory input's tree is mirrored below it;
    - no OUT: each output lands beside its input with `extension`.
    """
    if not inputs:
        raise UsageError("no input given")
    if inputs.count(STDIO) > 1:
        raise UsageError("'-' (standard input) can be given only once")
    expanded: list[tuple[str, Path | None]] = []  # (source, path relative to the output directory)
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
    jobs = _map_outputs(inputs, expanded, output, extension)
    check_distinct_targets(jobs)
    check_name_lengths(job.target for job in jobs if job.target != STDIO)
    check_not_inputs(jobs)
    return jobs


def _map_outputs(inputs: list[str], expanded: list[tuple[str, Path]], output: str | None,
                 extension: str) -> list[Job]:
    single = len(inputs) == 1 and _kind(Path(inputs[0])) != "dir"
    if output == STDIO:
        if not single:
            raise UsageError("'-o -' (standard output) takes exactly one input file")
        return [Job(expanded[0][0], STDIO)]
    if output is None:
        if any(src == STDIO for src, _ in expanded):
            raise UsageError("reading standard input needs -o (a file, or '-' for standard output)")
        return [Job(src, str(Path(src).with_suffix(extension))) for src, _ in expanded]
    out = Path(output)
    out_kind = _kind(out)
    if single and out_kind != "dir" and not output.endswith(("/", "\\")):
        return [Job(expanded[0][0], output)]
    if out_kind == "file":
        raise UsageError(f"{out}: several inputs need an output directory, but this is a file")
    return [Job(src, str(out / rel)) for src, rel in expanded]


def check_distinct_targets(jobs: list[Job]) -> None:
    """UsageError naming the inputs of the first output that several inputs would write (a.mid, a.midi and a.MID
    in one folder all make a.wav), before any of them renders."""
    by_target: dict[str, list[Job]] = {}
    for job in jobs:
        if job.target != STDIO:
            by_target.setdefault(os.path.abspath(job.target), []).append(job)
    for same in by_target.values():
        if len(same) > 1:
            names = [job.name for job in same]
            raise UsageError(f"{', '.join(names[:-1])} and {names[-1]} map to one output, {same[0].target}; "
                             "rename all but one, or render them separately")
