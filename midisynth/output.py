"""Writing audio progressively and atomically.

Files are written to a temporary file in the destination's directory and renamed into place only when complete,
so an interrupted or failed render never leaves a partial file. Standard output gets a WAV stream whose header
carries the exact length, known before the first sample is generated.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from midisynth.constants import SAMPLE_RATE

FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


class OutputError(OSError):
    """An output that cannot be written; the message says which and why."""


def output_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise OutputError(f"{path}: unsupported output extension; use one of {', '.join(FORMATS)}") from None


def resample_stream(chunks: Iterable[np.ndarray], rate: int) -> Iterator[np.ndarray]:
    """16 kHz chunks resampled to `rate` Hz with soxr's high-quality streaming resampler (same chunks if equal)."""
    if rate == SAMPLE_RATE:
        yield from chunks
        return
    import soxr

    stream = soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="float32", quality="HQ")
    for chunk in chunks:
        yield stream.resample_chunk(np.asarray(chunk, np.float32))
    yield stream.resample_chunk(np.zeros(0, np.float32), last=True)


def resampled_length(num_samples: int, rate: int) -> int:
    """Samples of a 16 kHz signal of `num_samples` samples after resampling to `rate` Hz."""
    return round(num_samples * rate / SAMPLE_RATE)


def _pcm16(chunk: np.ndarray) -> bytes:
    return (np.clip(chunk, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def wav_header(num_samples: int, sample_rate: int = SAMPLE_RATE) -> bytes:
    """RIFF header of a mono 16-bit PCM WAV with `num_samples` samples."""
    data_bytes = num_samples * 2
    return b"".join([
        b"RIFF", struct.pack("<I", 36 + data_bytes), b"WAVE",
        b"fmt ", struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16),
        b"data", struct.pack("<I", data_bytes),
    ])


def write_wav_stream(chunks: Iterable[np.ndarray], num_samples: int, stream: BinaryIO | None = None,
                     sample_rate: int = SAMPLE_RATE) -> int:
    """Write a WAV of exactly `num_samples` samples to a byte stream (default: stdout); returns samples written.

    Chunks beyond `num_samples` are cut and a short stream is padded with silence, so the header stays true.
    """
    out = stream if stream is not None else sys.stdout.buffer
    try:
        out.write(wav_header(num_samples, sample_rate))
        written = 0
        for chunk in chunks:
            part = chunk[: num_samples - written]
            out.write(_pcm16(part))
            written += part.shape[0]
        if written < num_samples:
            out.write(bytes(2 * (num_samples - written)))
        out.flush()
    except BrokenPipeError:
        if stream is None:  # keep Python from failing again when it flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise OutputError("standard output was closed before the audio was complete") from None
    return num_samples


def _default_file_mode() -> int:
    """The permissions open() would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds, delete it otherwise.

    The temporary file is created (empty) with the permissions a plain open() would give, so the finished file
    is readable like any other output rather than private to its owner.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, _default_file_mode())
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_audio_file(path: Path, chunks: Iterable[np.ndarray], overwrite: bool = False,
                     sample_rate: int = SAMPLE_RATE) -> int:
    """Write audio chunks (float32, mono, `sample_rate` Hz) to `path` atomically; returns the samples written."""
    path = Path(path)
    fmt = output_format(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists (pass --overwrite to replace it, or --skip-existing)")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(f"{path}: output directory {directory} does not exist")
    written = 0
    try:
        with atomic_path(path) as tmp, sf.SoundFile(
            tmp, mode="w", samplerate=sample_rate, channels=1, format=fmt,
            subtype="PCM_16" if fmt in ("WAV", "FLAC") else None,
        ) as f:
            for chunk in chunks:
                f.write(np.clip(chunk, -1.0, 1.0))
                written += chunk.shape[0]
    except (OSError, sf.SoundFileRuntimeError) as err:
        raise OutputError(f"{path}: write failed ({getattr(err, 'strerror', None) or err})") from None
    return written


def write_atomic(path: Path, write) -> None:
    """Call write(binary file) on a temporary file beside `path`, then rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """np.save through a temporary file and a rename."""
    write_atomic(path, lambda f: np.save(f, array))


def save_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))
