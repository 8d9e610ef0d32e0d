"""`render --skip-existing`: which jobs of a plan still have an output to write, so that a batch resumes."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from midisynth.constants import N_MELS
from midisynth.jobs.output import STDIO, audio_file_problem
from midisynth.score.midi import MidiError
from midisynth.score.stems import instruments, stem_path

if TYPE_CHECKING:
    from midisynth.jobs.plan import Job, RenderPlan


def unfinished(plan: RenderPlan, notify: Callable[[str], None] | None = None) -> list[Job]:
    """The jobs `--skip-existing` keeps: those writing to standard output, and those with an output not yet
    complete. A job's outputs are its mix, a complete audio file of its format and the settings' rate; with
    `settings.stems` each of its song's stems, likewise (the song is read to list them); the plan's spectrogram
    `mel_out` (.npy [frames, 128]) and the job's plot. A job with some of its outputs there is kept to write them all
    again (the same seed gives the same audio), and `notify` hears why."""
    kept = []
    for job in plan.jobs:
        if job.target == STDIO:
            kept.append(job)
            continue
        outputs = _job_outputs(job, plan)
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
                notify(
                    f"{job.target}: {count} of its {len(outputs)} outputs not complete ({path}: {problem}); "
                    "rendering it again"
                )
        kept.append(replace(job, redo=True))
    return kept


def _job_outputs(job: Job, plan: RenderPlan) -> dict[str, str | None]:
    """Each output of a job (mix, stems, spectrogram, plot) -> why it is not complete ("missing", "exists but is
    truncated", ...), or None for one that is. Stems are listed only from a song that can be read here: standard
    input cannot be read twice, and a file that cannot be read fails its render with the reason."""
    audio = [job.target]
    if plan.settings.stems and job.source != STDIO:
        try:
            audio += [str(stem_path(job.target, inst)) for inst in instruments(plan.read_song(job.source))]
        except (MidiError, OSError):
            pass
    outputs = {}
    for target in audio:
        outputs[target] = _missing_or(target, audio_file_problem(target, job.encoding, plan.settings.sample_rate))
    if plan.mel_out is not None:
        outputs[str(plan.mel_out)] = _missing_or(plan.mel_out, _spectrogram_problem(plan.mel_out))
    plot = plan.plots.get(job.target)
    if plot is not None:
        outputs[str(plot)] = None if os.path.isfile(plot) else "missing"
    return outputs


def _missing_or(path: str | Path, problem: str | None) -> str | None:
    """ "missing" for a path that does not exist, else `problem` said of an existing file (None: none)."""
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
