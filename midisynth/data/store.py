"""On-disk layout of a data set and the torch dataset of training windows.

    OUT/pieces/ID.json          piece record (written last: its presence marks the piece complete)
    OUT/pieces/ID.features.npy  float16 [windows * 256, 128] log-mel
    OUT/pieces/ID.audio.npy     float16 [windows * 81920] 16 kHz reference audio (float: quiet renders keep detail)
    OUT/pieces/ID.tokens.npy    int16 flat tokens of all windows; the record holds the window offsets
    OUT/midi/ID.mid             the piece's MIDI (rendered, or the MIDI of a recording)
    OUT/heldout_midi/ID.mid     copies of the held-out pieces' MIDI (for `midisynth eval`)
    OUT/test_midi/ID.mid        copies of the test pieces' MIDI (collections with their own test split)
    OUT/manifest.json           summary of all complete pieces

Arrays are opened with `np.load(mmap_mode="r")`, so sampling random windows reads only those windows.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from midisynth.constants import HOP_LENGTH, MAX_INPUT_TOKENS, N_MELS, WINDOW_FRAMES, WINDOW_SAMPLES
from midisynth.files import write_atomic
from midisynth.model.config import ModelConfig
from midisynth.model.note_inputs import NoteInputs, apply_gain, song_note_inputs
from midisynth.score.midi import Song, read_midi
from midisynth.score.tokens import fit_window

HELDOUT_EVERY = 20  # one piece in 20 (by hash of its id) is held out
# Splits: "train", "heldout" (held-out loss, evaluation) and, for collections that have one, "test" (never used
# in training); the folder each non-training split's MIDI is copied to.
MIDI_COPIES = {"heldout": "heldout_midi", "test": "test_midi"}
# Batches pad tokens to a multiple of this. A new token length per batch makes CPU training slow down while its
# memory grows, as kernels are made and cached per shape (docs/training.md).
TOKEN_BUCKET = 64


class DataSetError(ValueError):
    """A data set file that cannot be read or does not hold what its piece's record says; the message names it."""


def split_of(piece_id: str) -> str:
    """'heldout' for a fixed ~5% of piece ids (by hash), else 'train'."""
    digest = int(hashlib.sha1(piece_id.encode()).hexdigest()[:8], 16)
    return "heldout" if digest % HELDOUT_EVERY == 0 else "train"


@dataclass
class PieceRecord:
    piece_id: str
    split: str
    seconds: float  # song duration
    windows: int
    token_offsets: list[int]  # windows + 1 offsets into the flat token array
    heldout_from: int | None = None  # a training piece whose windows from this one on are held out (`hold_out`)

    def split_windows(self, split: str) -> range:
        """The piece's windows in `split`: all of them in its own split, except the windows a training piece holds
        out (from `heldout_from` on), which are "heldout"."""
        if self.split == "train" and self.heldout_from is not None and split in ("train", "heldout"):
            return range(self.heldout_from) if split == "train" else range(self.heldout_from, self.windows)
        return range(self.windows) if split == self.split else range(0)

    def path(self, root: Path, kind: str) -> Path:
        return Path(root) / "pieces" / f"{self.piece_id}.{kind}.npy"

    def midi_path(self, root: Path) -> Path:
        return Path(root) / "midi" / f"{self.piece_id}.mid"

    def shape(self, kind: str) -> tuple[int, ...]:
        """The shape of the piece's stored array `kind`: features [windows * 256, 128], audio [windows * 81920],
        tokens [all windows' tokens]."""
        return {
            "features": (self.windows * WINDOW_FRAMES, N_MELS),
            "audio": (self.windows * WINDOW_SAMPLES,),
            "tokens": (self.token_offsets[-1],),
        }[kind]

    def check_files(self, root: Path, kinds: tuple[str, ...]) -> None:
        """DataSetError naming the first of the piece's arrays `kinds` that is missing, truncated or of another
        shape than the record says (only the .npy headers and the file sizes are read)."""
        for kind in kinds:
            check_array(self.path(root, kind), self.shape(kind))


REBUILD = "delete the piece's files and run `midisynth dataset` again to rebuild it"


def check_array(path: Path, shape: tuple[int, ...]) -> None:
    """DataSetError naming `path` unless it is a whole .npy file of an array of `shape`."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            stored_shape, _, dtype = read_header(f)
            size = f.tell() + int(np.prod(stored_shape)) * dtype.itemsize
            present = os.fstat(f.fileno()).st_size
    except (OSError, ValueError, EOFError) as err:
        raise DataSetError(
            f"{path}: unreadable array ({err.strerror if isinstance(err, OSError) else err}); {REBUILD}"
        ) from None
    if tuple(stored_shape) != shape:
        raise DataSetError(
            f"{path}: an array of shape {list(stored_shape)}, where its piece's record says {list(shape)}; {REBUILD}"
        )
    if present < size:
        raise DataSetError(f"{path}: truncated ({present:,} of {size:,} bytes); {REBUILD}")


def save_piece(root: Path, record: PieceRecord, features: np.ndarray, audio: np.ndarray, tokens: np.ndarray) -> None:
    for kind, array in (("features", features), ("audio", audio), ("tokens", tokens)):
        write_atomic(record.path(root, kind), lambda f, a=array: np.save(f, a))
    save_record(root, record)  # last: marks the piece complete


def piece_source(piece_id: str) -> str:
    """The source a piece came from: its id's prefix ("m21", "gen", "survey", "user"; recordings: "pair", "slakh",
    "maestro")."""
    return piece_id.split("-", 1)[0]


def load_records(root: Path, split: str | None = None) -> list[PieceRecord]:
    """Complete pieces of a data set, sorted by id, optionally those with windows in one split
    (`PieceRecord.split_windows`); DataSetError naming a record that cannot be read."""
    records = [_read_record(p) for p in sorted((Path(root) / "pieces").glob("*.json"))]
    return [r for r in records if split is None or r.split_windows(split)]


def _read_record(path: Path) -> PieceRecord:
    """The piece record stored at `path`; DataSetError naming it when it is not one (truncated, not JSON, fields
    missing)."""
    try:
        return PieceRecord(**json.loads(path.read_bytes()))
    except (OSError, ValueError, TypeError) as err:
        reason = err.strerror if isinstance(err, OSError) else str(err)
        raise DataSetError(f"{path}: unreadable piece record ({reason}); {REBUILD}") from None


def save_record(root: Path, record: PieceRecord) -> None:
    """Write a piece's record, the file whose presence marks the piece complete."""
    data = json.dumps(asdict(record)).encode()
    write_atomic(Path(root) / "pieces" / f"{record.piece_id}.json", lambda f: f.write(data))


def write_manifest(root: Path) -> dict:
    records = load_records(root)
    summary = {
        split: {
            "pieces": sum(r.split == split for r in records),
            "windows": sum(len(r.split_windows(split)) for r in records),
            "hours": round(sum(r.seconds for r in records if r.split == split) / 3600, 3),
        }
        for split in ("train", *MIDI_COPIES)
        if split != "test" or any(r.split == split for r in records)
    }
    manifest = {"format": "midisynth.dataset/1", "splits": summary, "pieces": [asdict(r) for r in records]}
    write_atomic(Path(root) / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return manifest


class WindowDataset(Dataset):
    """Training examples, one per (piece, window): the window's tokens, its features, and the previous window's.

    Items: tokens int64 [n <= max_tokens] ending with EOS, targets float32 [256, 128] log-mel, context float32
    [256, 128] (zeros for a piece's first window), context_mask bool [] (False for the first window).

    `model` is the config of the model the windows are for (default: the paper's). With `note_roll`, items also have
    note_cue float32 [256, cue_dims], the window's per-frame note cue; with `velocity_gain`, targets and contexts are
    velocity-normalised, each window's `velocity_gain` taken off it. Both come from the stored MIDI (see
    `midisynth.model.note_inputs`).
    """

    kinds = ("features", "tokens")  # the piece arrays items are made of

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        max_tokens: int = MAX_INPUT_TOKENS,
        model: ModelConfig | None = None,
    ):
        self.root = Path(root)
        self.max_tokens = max_tokens
        self.model = model or ModelConfig()
        self._note_inputs: dict[str, NoteInputs | None] = {}  # piece id -> its inputs, made on first use
        self.records = load_records(self.root, split)
        if not self.records:
            raise FileNotFoundError(f"{self.root}: no '{split}' pieces (build it with `midisynth dataset`)")
        for record in self.records:  # a damaged file is named now, not by a data loader mid-training
            record.check_files(self.root, self.kinds)
        self.index = [(r, w) for r in self.records for w in r.split_windows(split)]
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

    def _song(self, record: PieceRecord) -> Song:
        return read_midi(record.midi_path(self.root))

    def window_tokens(self, record: PieceRecord, window: int) -> list[int]:
        """A window's tokens as `tokenize` makes them (not cut to max_tokens)."""
        lo, hi = record.token_offsets[window], record.token_offsets[window + 1]
        return np.asarray(self._array(record, "tokens")[lo:hi], dtype=np.int64).tolist()

    def note_inputs(self, record: PieceRecord) -> NoteInputs | None:
        """The piece's per-frame note inputs for `model` (see `midisynth.model.note_inputs`)."""
        if not self.model.takes_note_inputs:
            return None
        if record.piece_id not in self._note_inputs:
            self._note_inputs[record.piece_id] = song_note_inputs(self._song(record), record.windows, self.model)
        return self._note_inputs[record.piece_id]

    def __len__(self) -> int:
        return len(self.index)

    def _array(self, record: PieceRecord, kind: str) -> np.ndarray:
        key = (record.piece_id, kind)
        if key not in self._arrays:
            self._arrays[key] = np.load(record.path(self.root, kind), mmap_mode="r")
        return self._arrays[key]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        record, window = self.index[i]
        features = self._array(record, "features")
        start = window * WINDOW_FRAMES
        target = torch.from_numpy(np.asarray(features[start : start + WINDOW_FRAMES], dtype=np.float32))
        if window > 0:
            context = torch.from_numpy(np.asarray(features[start - WINDOW_FRAMES : start], dtype=np.float32))
        else:
            context = torch.zeros(WINDOW_FRAMES, N_MELS)
        window_tokens = fit_window(self.window_tokens(record, window), self.max_tokens)
        item = {
            "tokens": torch.tensor(window_tokens, dtype=torch.long),
            "targets": target,
            "context": context,
            "context_mask": torch.tensor(window > 0),
        }
        inputs = self.note_inputs(record)
        cue = None if inputs is None else inputs.cue(window)
        if cue is not None:
            item["note_cue"] = torch.from_numpy(cue)
        if inputs is not None and inputs.gain is not None:  # velocity-normalised
            gain = torch.from_numpy(inputs.gain)  # [windows, 256]
            item["targets"] = apply_gain(target, -gain[window])
            if window > 0:  # the first window's context is empty
                item["context"] = apply_gain(context, -gain[window - 1])
        return item


def collate_windows(
    items: list[dict[str, torch.Tensor]], max_tokens: int = MAX_INPUT_TOKENS
) -> dict[str, torch.Tensor]:
    """Stack a batch, padding tokens with PAD = 0 to the batch's longest window rounded up to `TOKEN_BUCKET`
    (at most `max_tokens`)."""
    longest = max(item["tokens"].shape[0] for item in items)
    length = max(longest, min(max_tokens, -(-longest // TOKEN_BUCKET) * TOKEN_BUCKET))
    tokens = torch.zeros(len(items), length, dtype=torch.long)
    for row, item in enumerate(items):
        tokens[row, : item["tokens"].shape[0]] = item["tokens"]
    stacked = {key: torch.stack([item[key] for item in items]) for key in items[0] if key != "tokens"}
    return {"tokens": tokens, **stacked}


class AudioSegmentDataset(WindowDataset):
    """Vocoder training examples: a random segment of `frames` frames of one window, features and audio.

    Items: features float32 [frames, 128] log-mel, audio float32 [frames * 320] (the audio those frames analyse).
    """

    kinds = ("features", "audio")

    def __init__(self, root: str | Path, split: str = "train", frames: int = 64):
        super().__init__(root, split)
        self.frames = frames

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        record, window = self.index[i]
        first = window * WINDOW_FRAMES + int(torch.randint(0, WINDOW_FRAMES - self.frames + 1, ()))
        features = self._array(record, "features")[first : first + self.frames]
        audio = self._array(record, "audio")[first * HOP_LENGTH : (first + self.frames) * HOP_LENGTH]
        return {
            "features": torch.from_numpy(np.asarray(features, dtype=np.float32)),
            "audio": torch.from_numpy(np.asarray(audio, dtype=np.float32)),
        }
