"""`midisynth dataset`: store tokens, features and audio of training pieces; re-running resumes.

Two kinds of piece, which can be mixed in one data set:

- aligned pairs (`midisynth.data.pairs`): MIDI with its recording, all of them, processed on at most `jobs` threads;
- rendered pieces: MIDI rendered with FluidSynth until `hours` of them are stored. They are chosen in source order
  on the calling thread (MIDI written, read back and tokenized, so the song's duration is known before rendering);
  rendering, features and storage run on at most `jobs` threads, each driving one FluidSynth process. Which
  pieces a build holds therefore depends only on the sources, the seed and `hours`.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import torch

from midisynth.audio import log_mel
from midisynth.constants import MIN_DATASET_HOURS, WINDOW_SAMPLES
from midisynth.data.fluidsynth import DEFAULT_SOUNDFONT, check_soundfont, render_midi
from midisynth.data.pairs import PAIRED_SOURCES, AlignedPair, PairError, check_alignment, read_recording
from midisynth.data.sources import folder_pieces, generated_pieces, interleave, music21_pieces
from midisynth.data.store import (
    MIDI_COPIES,
    PieceRecord,
    load_records,
    piece_source,
    save_piece,
    split_of,
    write_manifest,
)
from midisynth.files import (
    TEMPORARY_PREFIX,
    TEMPORARY_SUFFIX,
    check_output_directory,
    make_output_directory,
    write_atomic,
)
from midisynth.jobs.plan import name_limit
from midisynth.progress import progress_bars
from midisynth.score.midi import MidiError, Song, read_midi
from midisynth.score.tokens import tokenize

LONGEST_PIECE_SUFFIX = ".features.npy"  # the longest ending of a piece's file names (`store.PieceRecord.path`)


def piece_name_problem(root: Path, piece_id: str) -> str | None:
    """Why the files of `piece_id` cannot be stored under `root` (a file name longer than the file system of its
    pieces/ folder takes), or None."""
    length = len(os.fsencode(piece_id + LONGEST_PIECE_SUFFIX))
    limit = name_limit(root / "pieces" / LONGEST_PIECE_SUFFIX)
    if length <= limit:
        return None
    return (
        f"its piece's file names would be {length} bytes long, over the {limit} the file system takes "
        "(shorten its file or folder names)"
    )


@dataclass
class PreparedPiece:
    """A piece whose MIDI is written and tokenized, waiting to be rendered."""

    record: PieceRecord
    midi_path: Path
    tokens: np.ndarray  # int16 [total tokens] of all windows, split by record.token_offsets


def prepare_piece(root: Path, piece_id: str, pm: pretty_midi.PrettyMIDI) -> PreparedPiece | None:
    """Write the piece's MIDI and tokenize it as inference will; None when it has no notes or cannot be read."""
    midi_path = root / "midi" / f"{piece_id}.mid"
    write_atomic(midi_path, lambda f: pm.write(f))
    try:
        song = read_midi(midi_path)
    except MidiError:
        return None
    if not song.notes or song.duration <= 0:
        return None
    return _tokenized(piece_id, split_of(piece_id), song, midi_path)


def _tokenized(piece_id: str, split: str, song: Song, midi_path: Path) -> PreparedPiece:
    windows = tokenize(song)
    offsets = np.cumsum([0] + [len(w) for w in windows]).tolist()
    record = PieceRecord(piece_id, split, float(song.duration), len(windows), offsets)
    return PreparedPiece(record, midi_path, np.concatenate(windows).astype(np.int16))


def _store(root: Path, piece: PreparedPiece, audio: np.ndarray) -> PieceRecord:
    """Cut or pad 16 kHz `audio` (MIDI time zero at sample 0) to the piece's windows, compute features, store."""
    samples = piece.record.windows * WINDOW_SAMPLES
    fitted = np.zeros(samples, np.float32)
    fitted[: min(samples, audio.shape[0])] = audio[:samples]
    features = log_mel(torch.from_numpy(fitted)).numpy()  # [windows * 256, 128]
    save_piece(root, piece.record, features.astype(np.float16), fitted.astype(np.float16), piece.tokens)
    if piece.record.split in MIDI_COPIES:
        shutil.copyfile(piece.midi_path, root / MIDI_COPIES[piece.record.split] / piece.midi_path.name)
    return piece.record


def finish_piece(root: Path, piece: PreparedPiece, soundfont: Path) -> PieceRecord:
    """Render the piece, cut or pad the audio to its windows, compute features and store everything."""
    return _store(root, piece, render_midi(piece.midi_path, soundfont))


def store_pair(root: Path, pair: AlignedPair) -> PieceRecord:
    """Read and check an aligned pair, then store it as a piece (its MIDI copied as it is); raises PairError."""
    try:
        song = read_midi(pair.midi_path)
    except MidiError as err:
        raise PairError(f"{pair.midi_path}: unreadable MIDI ({err})") from None
    if not song.notes or song.duration <= 0:
        raise PairError(f"{pair.midi_path}: no notes")
    audio = read_recording(pair.audio_path)  # [samples] 16 kHz
    check_alignment(pair.audio_path, audio, song.duration)
    midi_path = root / "midi" / f"{pair.piece_id}.mid"
    data = pair.midi_path.read_bytes()
    write_atomic(midi_path, lambda f: f.write(data))
    return _store(root, _tokenized(pair.piece_id, pair.split or split_of(pair.piece_id), song, midi_path), audio)


def _sources(
    midi_dirs: list[Path], seed: int, done: set[str], generated: bool, on_skip: Callable[[str], None]
) -> Iterator[tuple[str, pretty_midi.PrettyMIDI]]:
    streams = [folder_pieces(d, on_skip) for d in midi_dirs]
    if generated:
        streams += [music21_pieces(seed, skip=done.__contains__), generated_pieces(seed)]
    return interleave(*streams)


def _plan(
    root: Path,
    sources: Iterator[tuple[str, pretty_midi.PrettyMIDI]],
    done: set[str],
    seconds: float,
    budget: float,
    on_skip: Callable[[str], None],
) -> Iterator[PreparedPiece]:
    """New pieces in source order while the stored plus planned song seconds stay below `budget`; a piece whose
    files cannot be named is reported to `on_skip` and left out."""
    for piece_id, pm in sources:
        if seconds >= budget:
            return
        if piece_id in done:
            continue
        problem = piece_name_problem(root, piece_id)
        if problem is not None:
            on_skip(f"{piece_id}: {problem}")
            continue
        piece = prepare_piece(root, piece_id, pm)
        if piece is not None:
            seconds += piece.record.seconds
            yield piece


def _run_all(items: Iterable, work: Callable, jobs: int, on_done: Callable) -> None:
    """`on_done(work(item))` for each item in order, `work` running on `jobs` threads while the next items are
    taken; pending work is dropped on error."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                while len(pending) >= jobs:
                    on_done(pending.popleft().result())
            while pending:
                on_done(pending.popleft().result())
        finally:
            for future in pending:
                future.cancel()


def _store_pairs(
    root: Path, pairs: list[AlignedPair], done: set[str], jobs: int, progress: bool, on_skip: Callable[[str], None]
) -> None:
    """Store the pairs not yet stored; each refused pair is reported to `on_skip` (one line) and left out."""
    ids = [pair.piece_id for pair in pairs]
    refused = {i: "another pair has the same piece id " + repr(i) for i in ids if ids.count(i) > 1}
    refused |= {i: problem for i in ids if (problem := piece_name_problem(root, i)) is not None}
    for pair in pairs:
        if pair.piece_id in refused:
            on_skip(f"{pair.midi_path}: {refused[pair.piece_id]}")
    todo = [pair for pair in pairs if pair.piece_id not in done and pair.piece_id not in refused]

    def attempt(pair: AlignedPair) -> PieceRecord | PairError:
        try:
            return store_pair(root, pair)
        except PairError as err:
            return err

    with progress_bars(progress) as bars:
        task = bars.add_task("pairs", total=len(pairs), completed=len(pairs) - len(todo))

        def finished(outcome: PieceRecord | PairError) -> None:
            if isinstance(outcome, PairError):
                on_skip(str(outcome))
            bars.update(task, advance=1)

        _run_all(todo, attempt, jobs, finished)


def check_request(out_dir: Path, hours: float, midi_dirs: list[Path]) -> None:
    """What `build_dataset` is asked, checked before anything is read: ValueError for `hours` that is not a finite
    number of at least MIN_DATASET_HOURS or a MIDI folder that is not a directory, OutputError for an output
    directory that cannot be made or written in."""
    if not (math.isfinite(hours) and hours >= MIN_DATASET_HOURS):
        raise ValueError(f"--hours {hours:g}: give a finite number of hours, at least {MIN_DATASET_HOURS:g}")
    for folder in midi_dirs:
        if not folder.is_dir():
            raise ValueError(f"--midi {folder}: {'not a directory' if folder.exists() else 'no such directory'}")
    check_output_directory(out_dir, "manifest.json")


def build_dataset(
    out_dir: str | Path,
    soundfont: str | Path = DEFAULT_SOUNDFONT,
    midi_dirs: list[Path] | None = None,
    hours: float = 3.0,
    seed: int = 0,
    progress: bool = True,
    generated: bool = True,
    jobs: int = 2,
    pairs: list[AlignedPair] | None = None,
    on_skip: Callable[[str], None] = lambda line: None,
) -> dict:
    """Store every aligned pair, then render pieces until `hours` of rendered songs are stored (`math.inf`: every
    piece of the sources); returns the manifest. Finished pieces are kept and skipped.

    `pairs` (see `midisynth.data.pairs`) are all taken; a refused one, like an unreadable MIDI file of `midi_dirs`,
    is reported to `on_skip` as one line and left out. Rendered sources, interleaved: the `midi_dirs` folders, then (with `generated`) music21's corpus and
    generated pieces; none means no rendering (and no SoundFont needed). The last rendered piece may overshoot
    `hours` by its own length. `jobs` pairs or FluidSynth renders are processed at once. An interrupted build
    (an error, or a signal under `midisynth.signals.exit_on_signals`) keeps the pieces stored and those being stored,
    and writes the manifest; run it again to continue (it first deletes the temporary files of a killed one).
    """
    root = Path(out_dir)
    soundfont = Path(soundfont)
    rendering = bool(midi_dirs) or generated
    if rendering:
        check_soundfont(soundfont)
    for sub in ("pieces", "midi", *MIDI_COPIES.values()):
        make_output_directory(root / sub, root)
        _remove_unfinished_files(root / sub)
    records = load_records(root)
    done = {r.piece_id for r in records}
    try:
        if pairs:
            _store_pairs(root, pairs, done, jobs, progress, on_skip)
        if rendering:
            _render(
                root,
                soundfont,
                [Path(d) for d in midi_dirs or []],
                hours,
                seed,
                progress,
                generated,
                jobs,
                records,
                done,
                on_skip,
            )
    finally:
        manifest = write_manifest(root)
    return manifest


def _remove_unfinished_files(folder: Path) -> None:
    """Delete the temporary files (`midisynth.files.atomic_path`) a build killed mid-write left in `folder`: a build
    resumes only from complete files (one build at a time writes into a data set)."""
    for leftover in folder.glob(f"{TEMPORARY_PREFIX}*{TEMPORARY_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def _render(
    root: Path,
    soundfont: Path,
    midi_dirs: list[Path],
    hours: float,
    seed: int,
    progress: bool,
    generated: bool,
    jobs: int,
    records: list[PieceRecord],
    done: set[str],
    on_skip: Callable[[str], None],
) -> None:
    """Render pieces until the stored rendered songs reach `hours`; pieces left out are reported to `on_skip`."""
    stored = sum(r.seconds for r in records if piece_source(r.piece_id) not in PAIRED_SOURCES)
    budget = hours * 3600.0
    sources = _sources(midi_dirs, seed, done, generated, on_skip)
    whole = math.isinf(budget)  # every piece of the sources
    with progress_bars(progress) as bars:
        task = bars.add_task(
            "dataset seconds",
            total=None if whole else round(budget),
            completed=0 if whole else round(min(stored, budget)),
        )
        _run_all(
            _plan(root, sources, done, stored, budget, on_skip),
            lambda piece: finish_piece(root, piece, soundfont),
            jobs,
            lambda record: bars.update(task, advance=record.seconds),
        )
