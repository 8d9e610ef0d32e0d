"""`midisynth dataset`: render MIDI with FluidSynth and store tokens, features and audio; re-running resumes.

Pieces are chosen in source order on the calling thread (MIDI written, read back and tokenized, so the song's
duration is known before rendering); rendering, features and storage run on at most `jobs` threads, each driving
one FluidSynth process. Which pieces a build holds therefore depends only on the sources, the seed and `hours`.
"""

from __future__ import annotations

import shutil
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import torch
from tqdm import tqdm

from midisynth.audio import log_mel
from midisynth.constants import WINDOW_SAMPLES
from midisynth.data.fluidsynth import DEFAULT_SOUNDFONT, check_soundfont, render_midi
from midisynth.data.sources import folder_pieces, generated_pieces, interleave, music21_pieces
from midisynth.data.store import PieceRecord, load_records, save_piece, split_of, write_manifest
from midisynth.files import write_atomic
from midisynth.score.midi import MidiError, read_midi
from midisynth.score.tokens import tokenize


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
    windows = tokenize(song)
    offsets = np.cumsum([0] + [len(w) for w in windows]).tolist()
    record = PieceRecord(piece_id, split_of(piece_id), float(song.duration), len(windows), offsets)
    return PreparedPiece(record, midi_path, np.concatenate(windows).astype(np.int16))


def finish_piece(root: Path, piece: PreparedPiece, soundfont: Path) -> PieceRecord:
    """Render the piece, cut or pad the audio to its windows, compute features and store everything."""
    samples = piece.record.windows * WINDOW_SAMPLES
    rendered = render_midi(piece.midi_path, soundfont)  # [samples rendered], MIDI time zero at sample 0
    audio = np.zeros(samples, np.float32)
    audio[: min(samples, rendered.shape[0])] = rendered[:samples]
    features = log_mel(torch.from_numpy(audio)).numpy()  # [windows * 256, 128]
    save_piece(root, piece.record, features.astype(np.float16), audio.astype(np.float16), piece.tokens)
    if piece.record.split == "heldout":
        shutil.copyfile(piece.midi_path, root / "heldout_midi" / piece.midi_path.name)
    return piece.record


def _sources(
    midi_dirs: list[Path], seed: int, done: set[str], generated: bool
) -> Iterator[tuple[str, pretty_midi.PrettyMIDI]]:
    streams = [folder_pieces(d) for d in midi_dirs]
    if generated:
        streams += [music21_pieces(seed, skip=done.__contains__), generated_pieces(seed)]
    return interleave(*streams)


def _plan(
    root: Path, sources: Iterator[tuple[str, pretty_midi.PrettyMIDI]], done: set[str], seconds: float, budget: float
) -> Iterator[PreparedPiece]:
    """New pieces in source order while the stored plus planned song seconds stay below `budget`."""
    for piece_id, pm in sources:
        if seconds >= budget:
            return
        if piece_id in done:
            continue
        piece = prepare_piece(root, piece_id, pm)
        if piece is not None:
            seconds += piece.record.seconds
            yield piece


def _render_all(
    root: Path, pieces: Iterator[PreparedPiece], soundfont: Path, jobs: int, on_done: Callable[[PieceRecord], None]
) -> None:
    """Finish pieces on `jobs` threads, preparing the next ones meanwhile; pending work is dropped on error."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: deque[Future] = deque()
        try:
            for piece in pieces:
                pending.append(pool.submit(finish_piece, root, piece, soundfont))
                while len(pending) >= jobs:
                    on_done(pending.popleft().result())
            while pending:
                on_done(pending.popleft().result())
        finally:
            for future in pending:
                future.cancel()


def build_dataset(
    out_dir: str | Path,
    soundfont: str | Path = DEFAULT_SOUNDFONT,
    midi_dirs: list[Path] | None = None,
    hours: float = 3.0,
    seed: int = 0,
    progress: bool = True,
    generated: bool = True,
    jobs: int = 2,
) -> dict:
    """Render pieces until `hours` of songs are stored; returns the manifest. Finished pieces are kept and skipped.

    Sources, interleaved: the `midi_dirs` folders, then (with `generated`) music21's corpus and generated pieces.
    The last piece may overshoot `hours` by its own length. `jobs` FluidSynth renders run at once. An interrupted
    build loses only the pieces in progress (the manifest is still written); run it again to continue.
    """
    root = Path(out_dir)
    soundfont = Path(soundfont)
    check_soundfont(soundfont)
    for sub in ("pieces", "midi", "heldout_midi"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    records = load_records(root)
    done = {r.piece_id for r in records}
    stored = sum(r.seconds for r in records)
    budget = hours * 3600.0
    bar = tqdm(total=round(budget), initial=round(min(stored, budget)), unit="s", desc="dataset", disable=not progress)
    sources = _sources([Path(d) for d in midi_dirs or []], seed, done, generated)
    try:
        _render_all(root, _plan(root, sources, done, stored, budget), soundfont, jobs,
                    lambda record: bar.update(min(round(record.seconds), bar.total - bar.n)))
    finally:
        bar.close()
        manifest = write_manifest(root)
    return manifest
