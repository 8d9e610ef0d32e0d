"""`midisynth dataset`: render MIDI with FluidSynth and store tokens, features and audio; re-running resumes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pretty_midi
import torch
from tqdm import tqdm

from midisynth.audio import log_mel
from midisynth.constants import WINDOW_SAMPLES
from midisynth.data.fluidsynth import DEFAULT_SOUNDFONT, render_midi
from midisynth.data.sources import folder_pieces, generated_pieces, interleave, music21_pieces
from midisynth.data.store import PieceRecord, load_records, save_piece, split_of, write_manifest
from midisynth.midi import MidiError, read_midi
from midisynth.output import write_atomic
from midisynth.tokens import tokenize


def build_piece(root: Path, piece_id: str, pm: pretty_midi.PrettyMIDI, soundfont: Path) -> PieceRecord | None:
    """Render and store one piece; None when it has no notes or cannot be read back."""
    midi_path = root / "midi" / f"{piece_id}.mid"
    write_atomic(midi_path, lambda f: pm.write(f))
    try:
        song = read_midi(midi_path)
    except MidiError:
        return None
    if not song.notes or song.duration <= 0:
        return None
    windows = tokenize(song)
    samples = len(windows) * WINDOW_SAMPLES
    rendered = render_midi(midi_path, soundfont)
    audio = np.zeros(samples, np.float32)
    audio[: min(samples, rendered.shape[0])] = rendered[:samples]
    features = log_mel(torch.from_numpy(audio)).numpy()  # [windows * 256, 128]
    offsets = np.cumsum([0] + [len(w) for w in windows]).tolist()
    record = PieceRecord(piece_id, split_of(piece_id), float(song.duration), len(windows), offsets)
    save_piece(root, record, features.astype(np.float16), audio.astype(np.float16),
               np.concatenate(windows).astype(np.int16))
    if record.split == "heldout":
        shutil.copyfile(midi_path, root / "heldout_midi" / f"{piece_id}.mid")
    return record


def _sources(
    midi_dirs: list[Path], seed: int, done: set[str], generated: bool
) -> Iterator[tuple[str, pretty_midi.PrettyMIDI]]:
    streams = [folder_pieces(d) for d in midi_dirs]
    if generated:
        streams += [music21_pieces(seed, skip=done.__contains__), generated_pieces(seed)]
    return interleave(*streams)


def build_dataset(
    out_dir: str | Path,
    soundfont: str | Path = DEFAULT_SOUNDFONT,
    midi_dirs: list[Path] | None = None,
    hours: float = 3.0,
    seed: int = 0,
    progress: bool = True,
    generated: bool = True,
) -> dict:
    """Render pieces until `hours` of audio are stored; returns the manifest. Finished pieces are kept and skipped.

    Sources, interleaved: the `midi_dirs` folders, then (with `generated`) music21's corpus and generated pieces.
    """
    root = Path(out_dir)
    soundfont = Path(soundfont)
    if not soundfont.is_file():
        raise FileNotFoundError(f"{soundfont}: no such SoundFont (Debian: apt-get install fluid-soundfont-gm)")
    for sub in ("pieces", "midi", "heldout_midi"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    records = load_records(root)
    done = {r.piece_id for r in records}
    total = sum(r.seconds for r in records)
    budget = hours * 3600.0
    bar = tqdm(total=round(budget), initial=round(min(total, budget)), unit="s", desc="dataset", disable=not progress)
    for piece_id, pm in _sources([Path(d) for d in midi_dirs or []], seed, done, generated):
        if total >= budget:
            break
        if piece_id in done:
            continue
        record = build_piece(root, piece_id, pm, soundfont)
        if record is None:
            continue
        done.add(piece_id)
        total += record.seconds
        bar.update(round(min(total, budget)) - bar.n)
    bar.close()
    return write_manifest(root)
