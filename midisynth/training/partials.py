"""Fitting the partials model's gains (`midisynth.model.partials`) to a data set, in closed form.

The estimate is linear in its gains, so each mel bin is a non-negative least-squares problem: the estimate against
the training features' mel magnitude, each frame's error weighted by 1 / (target + RELATIVE_FLOOR): relative errors,
so that the fit follows the log spectrum down to the features' floor rather than only its loudest frames. The normal equations are summed piece by piece (one
pass over the data, memory independent of its size), then solved: families first (the program columns summed by GM
family), then every column with a ridge pull (RIDGE of the bin's median Gram diagonal) toward its family's gains,
so that a program with little data borrows from its family and one without any takes its family's; a family
without data takes the mean family.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from midisynth.constants import MIN_LOG_MEL, N_MELS
from midisynth.data.store import load_records
from midisynth.model.partials import (
    COLUMNS,
    DEFAULT_MIX,
    DRUM_COLUMN,
    DRUM_DECAY_SECONDS,
    FAMILIES,
    FIRST_DRUM_KEY,
    FLOOR_COLUMN,
    HELD_COLUMNS,
    LAST_DRUM_KEY,
    Partials,
    drum_column,
    drum_group,
    note_columns,
)
from midisynth.score.midi import read_midi

RELATIVE_FLOOR = math.exp(MIN_LOG_MEL)  # mel magnitude added to each target in the fit's error weights
RIDGE = 0.005  # pull of each program's gains toward its family's, relative to the bin's median Gram diagonal


def family_matrix() -> np.ndarray:
    """[COLUMNS, FAMILIES + drum kinds + other columns]: sums the held columns by GM family and the drum keys by
    kind of drum (DRUM_GROUPS), keeps the other columns."""
    kinds = len(DRUM_DECAY_SECONDS)
    others = [c for c in range(HELD_COLUMNS, COLUMNS) if not DRUM_COLUMN <= c < FLOOR_COLUMN]
    matrix = np.zeros((COLUMNS, FAMILIES + kinds + len(others)))
    matrix[np.arange(HELD_COLUMNS), np.arange(HELD_COLUMNS) // (HELD_COLUMNS // FAMILIES)] = 1.0
    for key in range(FIRST_DRUM_KEY, LAST_DRUM_KEY + 2):
        matrix[DRUM_COLUMN + drum_column(key), FAMILIES + drum_group(key)] = 1.0
    matrix[others, FAMILIES + kinds + np.arange(len(others))] = 1.0
    return matrix


def nonnegative_least_squares(gram: np.ndarray, target: np.ndarray, sweeps: int = 300) -> np.ndarray:
    """argmin over g >= 0 of g' A g - 2 b' g for each of a batch of problems, by cyclic coordinate descent:
    gram A [batch, n, n] (positive definite), target b [batch, n]; returns g [batch, n]."""
    diagonal = np.einsum("bii->bi", gram)
    solution = np.zeros_like(target)
    gradient = -target.copy()  # A g - b
    for _ in range(sweeps):
        for i in range(target.shape[1]):
            new = np.maximum(solution[:, i] - gradient[:, i] / diagonal[:, i], 0.0)
            delta = new - solution[:, i]
            if np.any(delta):
                solution[:, i] = new
                gradient += gram[:, :, i] * delta[:, None]
    return solution


def _ridge_fit(gram: np.ndarray, target: np.ndarray, prior: np.ndarray, pull: np.ndarray) -> np.ndarray:
    """Non-negative g [bins, n] minimising g' A g - 2 b' g + sum pull (g - prior)², per bin."""
    return nonnegative_least_squares(gram + pull[:, :, None] * np.eye(gram.shape[1]), target + pull * prior)


def solve_gains(gram: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Gains [128 bins, COLUMNS] from the fit's normal equations (gram [bins, COLUMNS, COLUMNS], target [bins,
    COLUMNS]): families first (a column without data gets none), then every column shrunk toward its family's."""
    matrix = family_matrix()
    family_gram = np.einsum("ki,bkl,lj->bij", matrix, gram, matrix)
    family_target = target @ matrix
    has_data = np.einsum("bii->bi", family_gram) > 0
    families = _ridge_fit(family_gram, family_target, np.zeros_like(family_target),
                          np.where(has_data, 1e-6, 1.0) * _diagonal_scale(family_gram))
    for row, seen in zip(families, has_data[:, :FAMILIES], strict=True):  # families without data: the mean family
        if seen.any():
            row[:FAMILIES][~seen] = np.exp(np.mean(np.log(row[:FAMILIES][seen] + 1e-6)))
    return _ridge_fit(gram, target, families @ matrix.T,
                      np.full_like(target, RIDGE) * _diagonal_scale(gram)).astype(np.float32)


def _diagonal_scale(gram: np.ndarray) -> np.ndarray:
    """[bins, 1]: each bin's median positive Gram diagonal (1 where none is), the unit of its ridge pulls."""
    diagonal = np.einsum("bii->bi", gram)
    return np.array([np.median(d[d > 0]) if (d > 0).any() else 1.0 for d in diagonal])[:, None]


def fit_partials(root: str | Path, split: str = "train", mix: float = DEFAULT_MIX,
                 on_piece: Callable[[int, int], None] | None = None) -> Partials:
    """Fit the gains to a data set's `split` pieces (their MIDI and stored log-mel features); `on_piece(done,
    total)` after each piece."""
    records = load_records(Path(root), split)
    if not records:
        raise FileNotFoundError(f"{root}: no '{split}' pieces (build it with `midisynth dataset`)")
    gram = np.zeros((N_MELS, COLUMNS, COLUMNS))
    target = np.zeros((N_MELS, COLUMNS))
    for done, record in enumerate(records, start=1):
        song = read_midi(record.midi_path(root))
        features = np.load(record.path(Path(root), "features"), mmap_mode="r")  # [frames, 128] log-mel
        design, columns = note_columns(song, 0, features.shape[0]).design()  # [frames, bins, n]
        magnitude = np.exp(features.astype(np.float64))  # [frames, bins]
        weight = 1.0 / (magnitude + RELATIVE_FLOOR)
        weighted = torch.from_numpy(design * weight[:, :, None].astype(np.float32)).permute(1, 0, 2).double()
        index = np.ix_(range(N_MELS), columns, columns)
        gram[index] += (weighted.transpose(1, 2) @ weighted).numpy()
        target[:, columns] += np.einsum("fbn,fb->bn", weighted.permute(1, 0, 2).numpy(), magnitude * weight)
        if on_piece is not None:
            on_piece(done, len(records))
    return Partials(solve_gains(gram, target), mix)
