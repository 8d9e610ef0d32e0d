"""Expanding command-line inputs (files, directories, '-') into (input, output) jobs that mirror the input tree."""

from __future__ import annotations

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

    @property
    def name(self) -> str:
        return "<stdin>" if self.source == STDIO else self.source


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
        if path.is_dir():
            files = find_midi_files(path)
            if not files:
                raise UsageError(f"{path}: directory holds no MIDI files ({', '.join(MIDI_SUFFIXES)})")
            expanded.extend((str(f), f.relative_to(path).with_suffix(extension)) for f in files)
        elif path.exists():
            expanded.append((item, Path(path.name).with_suffix(extension)))
        else:
            raise UsageError(f"{path}: no such file or directory")
    single = len(inputs) == 1 and not Path(inputs[0]).is_dir()
    if output == STDIO:
        if not single:
            raise UsageError("'-o -' (standard output) takes exactly one input file")
        return [Job(expanded[0][0], STDIO)]
    if output is None:
        if any(src == STDIO for src, _ in expanded):
            raise UsageError("reading standard input needs -o (a file, or '-' for standard output)")
        return [Job(src, str(Path(src).with_suffix(extension))) for src, _ in expanded]
    out = Path(output)
    if single and not out.is_dir() and not output.endswith(("/", "\\")):
        return [Job(expanded[0][0], output)]
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: several inputs need an output directory, but this is a file")
    jobs = [Job(src, str(out / rel)) for src, rel in expanded]
    targets = [j.target for j in jobs]
    if len(set(targets)) != len(targets):
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        raise UsageError(f"several inputs would write the same output: {', '.join(dupes[:3])}")
    return jobs


def unfinished(jobs: list[Job]) -> list[Job]:
    """The jobs whose output file does not exist yet (standard output always counts): what --skip-existing keeps."""
    return [j for j in jobs if j.target == STDIO or not Path(j.target).exists()]
