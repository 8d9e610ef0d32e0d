"""Fitting the partials model's gains (`midisynth.model.partials`) to a data set, in closed form.

The estimate is linear in its gains, so each mel bin is a non-negative least-squares problem: the estimate against
the training features' mel magnitude, each frame's error weighted by 1 / (target + RELATIVE_FLOOR): relative errors,
so that the fit follows the log spectrum down to the features' floor rather than only its loudest frames. The normal
equations are summed piece by piece (one pass over the data, memory independent of its size), then solved: families
first (the program columns summed by GM family), then every column with a ridge pull (RIDGE of the bin's median Gram
diagonal) toward its family's gains, so that a program with little data borrows from its family and one without any
takes its family's; a family without data takes the mean family.

Relative errors weigh a frame by its target, so an estimate that misses a varying target (beating partials, the
noise between them, a release the columns shape only roughly) is pulled below it: that fit leaves the estimate below
the features and releases that stop at the note-off (docs/experiments.md, "The partials fit on the log error").
LOG_PASSES Gauss-Newton passes on the error of the log magnitude follow it (each one more pass over the data,
weighted by 1 / (estimate + RELATIVE_FLOOR) around the gains before it), which the evaluation's log-mel distance
measures. The broadband columns (`broadband_columns`: onset noise, reverb, drums, floor) keep the first fit's gains
in those passes: on the log error they grow to fill the gaps between the partials and wash over the notes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from midisynth.constants import MIN_LOG_MEL, N_MELS, WINDOW_FRAMES
from midisynth.data.store import DataSetError, PieceRecord, load_records
from midisynth.model.partials import (
    ATTACK_COLUMN,
    COLUMNS,
    DEFAULT_MIX,
    DRUM_COLUMN,
    DRUM_DECAY_SECONDS,
    FADE_COLUMN,
    FAMILIES,
    FIRST_DRUM_KEY,
    FLOOR_COLUMN,
    FUNDAMENTAL_COLUMN,
    HELD_COLUMNS,
    LAST_DRUM_KEY,
    NOISE_COLUMN,
    RELEASE_COLUMN,
    REVERB_COLUMN,
    STICK_COLUMN,
    Partials,
    drum_column,
    drum_group,
    note_columns,
)
from midisynth.score.midi import MidiError, Song, read_midi

RELATIVE_FLOOR = math.exp(MIN_LOG_MEL)  # mel magnitude added to each target in the fit's error weights
RIDGE = 0.005  # pull of each program's gains toward its family's, relative to the bin's median Gram diagonal
SEEN = 0.01  # a column's data reach a mel bin where its Gram diagonal is at least this share of the bin's median
LOG_PASSES = 1  # Gauss-Newton passes on the log magnitude's error after the relative-error fit


def broadband_columns() -> np.ndarray:
    """[COLUMNS] bool: the columns that are the same pattern in every mel bin or follow no one note (onset noise,
    body, reverb, drum bodies and sticks, floor): they keep the relative-error fit's gains in the log passes."""
    broadband = np.zeros(COLUMNS, bool)
    broadband[NOISE_COLUMN:RELEASE_COLUMN] = True  # onset noise and body
    broadband[REVERB_COLUMN:] = True  # the reverb, then the drums, their sticks and the floor
    return broadband


# The first columns of the blocks with a column per program and register (held, attack, fundamental): in
# `family_matrix` each block's families are FAMILIES groups of their own, in this order, before the drums'.
PROGRAM_BLOCKS = (0, ATTACK_COLUMN, FUNDAMENTAL_COLUMN)


def family_matrix() -> np.ndarray:
    """[COLUMNS, groups]: sums the columns that share their family's envelope: the held, the attack and the
    fundamental columns of a GM family's programs (each kind apart, `PROGRAM_BLOCKS`), the drum keys and the drum
    sticks by kind of drum (DRUM_GROUPS); every other column is a group of its own."""
    kinds = len(DRUM_DECAY_SECONDS)
    group = np.empty(COLUMNS, np.int64)
    programs = np.arange(HELD_COLUMNS)
    for index, first in enumerate(PROGRAM_BLOCKS):
        group[first + programs] = index * FAMILIES + programs // (HELD_COLUMNS // FAMILIES)
    pitched_groups = len(PROGRAM_BLOCKS) * FAMILIES
    keys = np.array([drum_column(key) for key in range(FIRST_DRUM_KEY, LAST_DRUM_KEY + 2)])
    kind = np.array([drum_group(key) for key in range(FIRST_DRUM_KEY, LAST_DRUM_KEY + 2)])
    group[DRUM_COLUMN + keys] = pitched_groups + kind
    group[STICK_COLUMN + keys] = pitched_groups + kinds + kind
    others = [c for c in range(COLUMNS) if not (c < FADE_COLUMN or DRUM_COLUMN <= c < FLOOR_COLUMN)]
    group[others] = pitched_groups + 2 * kinds + np.arange(len(others))
    matrix = np.zeros((COLUMNS, int(group.max()) + 1))
    matrix[np.arange(COLUMNS), group] = 1.0
    return matrix


def nonnegative_least_squares(gram: np.ndarray, target: np.ndarray, sweeps: int = 300) -> np.ndarray:
    """argmin over g >= 0 of g' A g - 2 b' g for each of a batch of problems, by cyclic coordinate descent:
    gram A [batch, n, n] (symmetric positive definite), target b [batch, n]; returns g [batch, n]. A coordinate's
    step updates the gradient by its row of A, which (A being symmetric) is its column, read contiguously."""
    diagonal = np.einsum("bii->bi", gram)
    solution = np.zeros_like(target)
    gradient = -target.copy()  # A g - b
    for _ in range(sweeps):
        for i in range(target.shape[1]):
            new = np.maximum(solution[:, i] - gradient[:, i] / diagonal[:, i], 0.0)
            delta = new - solution[:, i]
            if np.any(delta):
                solution[:, i] = new
                gradient += gram[:, i, :] * delta[:, None]
    return solution


def _ridge_fit(gram: np.ndarray, target: np.ndarray, prior: np.ndarray, pull: np.ndarray) -> np.ndarray:
    """Non-negative g [bins, n] minimising g' A g - 2 b' g + sum pull (g - prior)², per bin."""
    return nonnegative_least_squares(gram + pull[:, :, None] * np.eye(gram.shape[1]), target + pull * prior)


def solve_gains(gram: np.ndarray, target: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Gains [128 bins, COLUMNS] from the fit's normal equations (gram [bins, COLUMNS, COLUMNS], target [bins,
    COLUMNS]): families first (a column without data gets none), then every column shrunk toward its family's, then
    capped in the bins its data do not reach (`capped_to_seen_bins`; `seen` [bins, COLUMNS], `seen_bins` of the
    relative-error fit's gram)."""
    matrix = family_matrix()
    family_gram = matrix.T @ gram @ matrix  # [bins, groups, groups]
    family_target = target @ matrix
    has_data = np.einsum("bii->bi", family_gram) > 0
    families = _ridge_fit(
        family_gram,
        family_target,
        np.zeros_like(family_target),
        np.where(has_data, 1e-6, 1.0) * _diagonal_scale(family_gram),
    )
    for index in range(len(PROGRAM_BLOCKS)):  # family_matrix's held, attack and fundamental families
        block = slice(index * FAMILIES, (index + 1) * FAMILIES)
        for row, fitted in zip(families[:, block], has_data[:, block], strict=True):  # families without data: the mean
            if fitted.any():
                row[~fitted] = np.exp(np.mean(np.log(row[fitted] + 1e-6)))
    gains = _ridge_fit(gram, target, families @ matrix.T, np.full_like(target, RIDGE) * _diagonal_scale(gram))
    return capped_to_seen_bins(gains, seen).astype(np.float32)


def seen_bins(diagonal: np.ndarray) -> np.ndarray:
    """[bins, COLUMNS] bool: where a column's data reach a bin, from the relative-error fit's Gram diagonal
    `diagonal` [bins, COLUMNS]: at least SEEN of the bin's median. Every bin for the broadband columns. (A log pass's
    weights, 1 / estimate, would count bins where the estimate is faint as reached.)"""
    seen = diagonal >= SEEN * _median_positive(diagonal)
    seen[:, broadband_columns()] = True
    return seen


def capped_to_seen_bins(gains: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """`gains` [bins, COLUMNS] with each column's gains, in the bins its data hardly reach (not `seen`, see
    `seen_bins`), capped at its largest gain in the bins they do reach.

    A program's notes reach a bin below their fundamentals only through the analysis window's leakage, so there its
    gains are what the ridge pull and a few faint frames make them, up to several times its gains elsewhere, and a
    note pitched below the data's range, whose fundamental lands in such a bin, is rendered far too loud (a tuba at
    pitch 29: docs/experiments.md, "Pre-echo, the last fade, and gains where a program's data do not reach"). A
    column without data (seen nowhere) keeps its family's gains."""
    largest = np.where(seen, gains, 0.0).max(axis=0)  # [COLUMNS]
    return np.where(seen | ~seen.any(axis=0), gains, np.minimum(gains, largest))


def log_pass_gains(gram: np.ndarray, target: np.ndarray, gains: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Gains [128 bins, COLUMNS] from a log pass's normal equations (`normal_equations` around `gains`): the
    `broadband_columns` keep `gains`, their share of the estimate taken out of the target; the others are solved as
    `solve_gains` solves them, capped where the first fit's data do not reach (`seen`, `seen_bins`)."""
    fixed = broadband_columns()
    bins, free, kept = np.arange(N_MELS), np.flatnonzero(~fixed), np.flatnonzero(fixed)
    gram, target = gram.copy(), target.copy()
    target[:, free] -= _kept_share(gram, gains, free, kept)
    gram[np.ix_(bins, free, kept)] = 0.0  # the kept columns drop out of the free ones' equations
    gram[np.ix_(bins, kept, free)] = 0.0
    solved = solve_gains(gram, target, seen)
    return np.where(fixed[None, :], gains, solved).astype(np.float32)


def _kept_share(gram: np.ndarray, gains: np.ndarray, free: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """[bins, free columns]: what the `kept` columns at `gains` contribute to the `free` columns' normal-equation
    targets, to be taken out of them when only the free columns are solved."""
    return np.einsum("bij,bj->bi", gram[np.ix_(np.arange(N_MELS), free, kept)], gains[:, kept])


def _diagonal_scale(gram: np.ndarray) -> np.ndarray:
    """[bins, 1]: each bin's median positive Gram diagonal (1 where none is), the unit of its ridge pulls."""
    return _median_positive(np.einsum("bii->bi", gram))


def _median_positive(diagonal: np.ndarray) -> np.ndarray:
    """[bins, 1]: the median of each row's positive entries (1 where none is)."""
    return np.array([np.median(d[d > 0]) if (d > 0).any() else 1.0 for d in diagonal])[:, None]


def normal_equations(
    root: str | Path,
    split: str = "train",
    on_piece: Callable[[int, int], None] | None = None,
    gains: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The fit's weighted normal equations summed over a data set's `split` windows (their MIDI and stored log-mel
    features): (gram [128 bins, COLUMNS, COLUMNS], target [128 bins, COLUMNS]), float64; `on_piece(done, total)`
    after each piece. DataSetError naming a damaged file: the feature files are checked before the fit starts.

    Without `gains`, those of the relative-error fit; with `gains` [128 bins, COLUMNS], those of a Gauss-Newton step
    on the log magnitude's error from them: log(m + floor) - log(e + floor) ~ (x - e) / (e + floor) for an estimate
    x near e, so x is fitted with weight 1 / (e + floor) to e + (e + floor) log((m + floor) / (e + floor))."""
    records = load_records(Path(root), split)
    if not records:
        raise FileNotFoundError(f"{root}: no '{split}' pieces (build it with `midisynth dataset`)")
    for record in records:
        record.check_files(Path(root), ("features",))
    gram = np.zeros((N_MELS, COLUMNS, COLUMNS))
    target = np.zeros((N_MELS, COLUMNS))
    for done, record in enumerate(records, start=1):
        song = _piece_song(Path(root), record)
        windows = record.split_windows(split)
        first, stop = windows.start * WINDOW_FRAMES, windows.stop * WINDOW_FRAMES
        features = np.load(record.path(Path(root), "features"), mmap_mode="r")[first:stop]  # [frames, 128] log-mel
        design, columns = note_columns(song, first, stop).design()  # [frames, bins, n]
        magnitude = np.exp(features.astype(np.float64))  # [frames, bins]
        if gains is None:
            weight, fitted = 1.0 / (magnitude + RELATIVE_FLOOR), magnitude
        else:
            around = np.einsum("fbn,bn->fb", design, gains[:, columns], dtype=np.float64) + RELATIVE_FLOOR
            weight = 1.0 / around
            fitted = around * (1.0 + np.log((magnitude + RELATIVE_FLOOR) / around)) - RELATIVE_FLOOR  # the step's aim
        weighted = torch.from_numpy(design * weight[:, :, None].astype(np.float32)).permute(1, 0, 2)  # [bins, f, n]
        index = np.ix_(range(N_MELS), columns, columns)
        gram[index] += (weighted.transpose(1, 2).double() @ weighted.double()).numpy()
        target[:, columns] += (
            (weighted.transpose(1, 2).double() @ torch.from_numpy(fitted * weight).T[:, :, None]).squeeze(2).numpy()
        )
        if on_piece is not None:
            on_piece(done, len(records))
    return gram, target


def _piece_song(root: Path, record: PieceRecord) -> Song:
    """The song of a piece's stored MIDI; DataSetError naming the file when it cannot be read."""
    try:
        return read_midi(record.midi_path(root))
    except MidiError as err:
        raise DataSetError(f"{record.midi_path(root)}: {err}") from None


def adapted_columns() -> np.ndarray:
    """[COLUMNS] bool: the columns `adapt_gains` refits, an instrument's spectra: each program's held and
    fundamental columns and each drum key's body and stick. The rest (attack, fade, swell, hard attack, onset noise,
    body, releases, reverb, floor), how a family's notes change over their life, keep the starting model's gains:
    minutes of material cannot tell them apart from the spectra, and refitted they cost songs their attacks
    (docs/training.md)."""
    adapted = np.zeros(COLUMNS, bool)
    adapted[:HELD_COLUMNS] = True
    adapted[FUNDAMENTAL_COLUMN:FADE_COLUMN] = True
    adapted[DRUM_COLUMN:FLOOR_COLUMN] = True
    return adapted


def adapt_gains(gram: np.ndarray, target: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Gains [128 bins, COLUMNS] from the fit's normal equations, starting from a fitted model's gains `prior`
    [128, COLUMNS]: the `adapted_columns` the data holds follow it, each shrunk toward `prior` (RIDGE of the bin's
    median Gram diagonal), with the other columns' share of the estimate held at `prior`'s gains; every other column
    keeps `prior`'s."""
    gains = prior.astype(np.float64).copy()
    adapted = adapted_columns()
    free = np.flatnonzero(adapted & np.einsum("bii->bi", gram).any(axis=0))  # adapted columns with data
    kept = np.flatnonzero(~adapted)  # the time structure, at `prior`'s gains
    bins = np.arange(N_MELS)
    rest = _kept_share(gram, gains, free, kept)
    pull = np.full((N_MELS, free.size), RIDGE) * _diagonal_scale(gram)
    gains[:, free] = _ridge_fit(gram[np.ix_(bins, free, free)], target[:, free] - rest, gains[:, free], pull)
    return gains.astype(np.float32)


def fit_partials(
    root: str | Path,
    split: str = "train",
    mix: float = DEFAULT_MIX,
    on_piece: Callable[[int, int], None] | None = None,
    prior: Partials | None = None,
) -> Partials:
    """Fit the gains to a data set's `split` windows (see `normal_equations`), from nothing (`solve_gains`, then
    LOG_PASSES log passes, `log_pass_gains`) or, given a fitted model `prior`, adapting its gains (`adapt_gains`);
    `on_piece(done, total)` after each piece of each pass over the data."""
    passes = 1 if prior is not None else 1 + LOG_PASSES

    def progress(number: int) -> Callable[[int, int], None] | None:
        if on_piece is None:
            return None
        return lambda done, total: on_piece(number * total + done, passes * total)

    gram, target = normal_equations(root, split, progress(0))
    if prior is not None:
        return Partials(adapt_gains(gram, target, prior.gains), mix)
    seen = seen_bins(np.einsum("bii->bi", gram))
    gains = solve_gains(gram, target, seen)
    for number in range(1, passes):
        gram, target = normal_equations(root, split, progress(number), gains)
        gains = log_pass_gains(gram, target, gains, seen)
    return Partials(gains, mix)
