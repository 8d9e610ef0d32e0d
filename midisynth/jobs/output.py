"""Writing audio progressively and atomically.

Files are written to a temporary file in the destination's directory and renamed into place only when complete,
so an interrupted or failed render never leaves a partial file. Standard output gets a WAV stream whose header
carries the exact length, known before the first sample is generated.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from midisynth.constants import SAMPLE_RATE
from midisynth.files import atomic_path

FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}  # extension -> soundfile container
EXTENSIONS = {container: extension for extension, container in FORMATS.items()}
BIT_DEPTHS = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}  # --bit-depth -> soundfile subtype
CONTAINER_DEPTHS = {"WAV": ("16", "24", "32f"), "FLAC": ("16", "24"), "OGG": ()}  # OGG is always Vorbis
DEFAULT_BIT_DEPTH = "16"


class OutputError(OSError):
    """An output that cannot be written; the message says which and why."""


@dataclass(frozen=True)
class AudioFormat:
    """How an audio output is encoded: soundfile container and sample subtype."""

    container: str  # WAV, FLAC or OGG
    subtype: str  # PCM_16, PCM_24, FLOAT (32-bit float) or VORBIS


def audio_format(target: str | Path, container: str | None = None, bit_depth: str | None = None) -> AudioFormat:
    """The encoding of `target` (a path, or '-' for standard output, which is always a WAV stream).

    The container is `container` when given, else the one the extension names; `bit_depth` is 16, 24 or 32f
    (None: 16, or Vorbis for OGG). Raises OutputError for an unknown extension, an extension that names another
    container, or a bit depth the container cannot hold (FLAC has no float samples; OGG Vorbis has no bit depth).
    """
    named = "WAV" if str(target) == "-" else FORMATS.get(Path(target).suffix.lower())
    if container is not None and named is not None and named != container:
        where = "standard output is a WAV stream" if str(target) == "-" else f"its extension means {named}"
        raise OutputError(f"{target}: --format {container.lower()} does not fit ({where})")
    container = container or named
    if container is None:
        raise OutputError(f"{target}: unsupported output extension; use one of {', '.join(FORMATS)} "
                          "(or --format)")
    if bit_depth is None:
        return AudioFormat(container, BIT_DEPTHS[DEFAULT_BIT_DEPTH] if CONTAINER_DEPTHS[container] else "VORBIS")
    if bit_depth not in CONTAINER_DEPTHS[container]:
        allowed = ", ".join(CONTAINER_DEPTHS[container]) or "none (Vorbis is lossy)"
        raise OutputError(f"{target}: {container} cannot hold --bit-depth {bit_depth}; bit depths it takes: {allowed}")
    return AudioFormat(container, BIT_DEPTHS[bit_depth])


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


def _pcm(chunk: np.ndarray, sample_bytes: int) -> bytes:
    """Little-endian signed PCM of `sample_bytes` bytes per sample, scaled as libsndfile scales: -1.0 is the
    lowest integer, +1.0 is clipped to the highest."""
    full_scale = 2 ** (8 * sample_bytes - 1)
    ints = np.clip((np.asarray(chunk, np.float64) * full_scale).round(), -full_scale, full_scale - 1).astype("<i4")
    return ints.view(np.uint8).reshape(-1, 4)[:, :sample_bytes].tobytes()


def _float32(chunk: np.ndarray) -> bytes:
    return np.clip(chunk, -1.0, 1.0).astype("<f4").tobytes()


@dataclass(frozen=True)
class _WavEncoding:
    format_tag: int  # 1: integer PCM, 3: IEEE float
    sample_bytes: int
    encode: Callable[[np.ndarray], bytes]


_WAV_ENCODINGS = {
    "PCM_16": _WavEncoding(1, 2, lambda chunk: _pcm(chunk, 2)),
    "PCM_24": _WavEncoding(1, 3, lambda chunk: _pcm(chunk, 3)),
    "FLOAT": _WavEncoding(3, 4, _float32),
}


def wav_header(num_samples: int, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> bytes:
    """RIFF header of a mono WAV with `num_samples` samples of `subtype` (PCM_16, PCM_24 or FLOAT).

    Raises OutputError past RIFF's 4 GiB limit."""
    encoding = _WAV_ENCODINGS[subtype]
    data_bytes = num_samples * encoding.sample_bytes
    if 36 + data_bytes > 0xFFFF_FFFF:
        raise OutputError(f"a WAV stream holds at most 4 GiB, and this one would be {data_bytes / 2**30:.1f} GiB; "
                          "lower --sample-rate or --bit-depth, or write a FLAC file")
    return b"".join([
        b"RIFF", struct.pack("<I", 36 + data_bytes), b"WAVE",
        b"fmt ", struct.pack("<IHHIIHH", 16, encoding.format_tag, 1, sample_rate,
                             sample_rate * encoding.sample_bytes, encoding.sample_bytes, 8 * encoding.sample_bytes),
        b"data", struct.pack("<I", data_bytes),
    ])


def write_wav_stream(chunks: Iterable[np.ndarray], num_samples: int, stream: BinaryIO | None = None,
                     sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> int:
    """Write a WAV of exactly `num_samples` samples to a byte stream (default: stdout); returns samples written.

    Chunks beyond `num_samples` are cut and a short stream is padded with silence, so the header stays true.
    `subtype` is PCM_16, PCM_24 or FLOAT (32-bit float).
    """
    out = stream if stream is not None else sys.stdout.buffer
    encoding = _WAV_ENCODINGS[subtype]
    header = wav_header(num_samples, sample_rate, subtype)
    try:
        out.write(header)
        written = 0
        for chunk in chunks:
            part = chunk[: num_samples - written]
            out.write(encoding.encode(part))
            written += part.shape[0]
        if written < num_samples:
            out.write(bytes(encoding.sample_bytes * (num_samples - written)))
        out.flush()
    except OSError as err:  # the reader went away (head), or the disk behind a redirection is full
        if stream is None:  # keep Python from failing again when it flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(err, BrokenPipeError):
            raise OutputError("standard output was closed before the audio was complete") from None
        raise OutputError(f"standard output: write failed ({err.strerror or err})") from None
    return num_samples


class _ErrorKeepingFile:
    """A file for soundfile's virtual I/O that keeps the first write error (disk full, file too large) and reports
    the write as failed: an exception cannot cross libsndfile's C callbacks, and libsndfile would only say
    "System error."."""

    def __init__(self, raw: io.FileIO):
        self.raw = raw
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        """Write all of `data`; returns its length, or 0 once a write has failed."""
        if self.error is not None:
            return 0
        view = memoryview(data)
        try:
            while view:
                view = view[self.raw.write(view) :]
        except OSError as err:
            self.error = err
            return 0
        return len(data)

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


def make_output_directory(directory: Path, target: str | Path) -> None:
    """Create `directory` and its parents (a batch mirrors its input tree); OutputError naming `target` if not."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = "a file has that name" if isinstance(err, FileExistsError) else err.strerror or err
        raise OutputError(f"{target}: cannot create the output directory {directory} ({reason})") from None


def check_writable(path: Path, overwrite: bool) -> None:
    """Raise OutputError if `path` exists and may not be replaced."""
    if Path(path).exists() and not overwrite:
        raise OutputError(f"{path}: already exists (pass --overwrite to replace it, or --skip-existing)")


def check_creatable(path: Path) -> None:
    """Raise OutputError unless a file can be written at `path` (its directory exists and takes new files, and
    `path` is not a directory): checked before long work whose result would otherwise be lost."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    if not directory.is_dir():
        raise OutputError(f"{path}: {directory} {'is a file' if directory.exists() else 'does not exist'}")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".midisynth-", suffix=".part")
    except OSError as err:
        raise OutputError(f"{path}: cannot write in {directory} ({err.strerror or err})") from None
    os.close(fd)
    os.unlink(probe)


def write_audio_file(path: Path, chunks: Iterable[np.ndarray], overwrite: bool = False,
                     sample_rate: int = SAMPLE_RATE, encoding: AudioFormat | None = None) -> int:
    """Write audio chunks (float32, mono, `sample_rate` Hz) to `path` atomically; returns the samples written.

    `encoding` defaults to the extension's container at 16 bits; samples are clipped to [-1, 1].
    """
    path = Path(path)
    encoding = encoding or audio_format(path)
    check_writable(path, overwrite)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(f"{path}: output directory {directory} does not exist")
    written = 0
    try:
        with atomic_path(path) as tmp, open(tmp, "r+b", buffering=0) as raw:
            sink = _ErrorKeepingFile(raw)
            try:
                with sf.SoundFile(sink, mode="w", samplerate=sample_rate, channels=1, format=encoding.container,
                                  subtype=encoding.subtype) as f:
                    for chunk in chunks:
                        f.write(np.clip(chunk, -1.0, 1.0))
                        written += chunk.shape[0]
            finally:
                if sink.error is not None:  # the operating system's reason rather than libsndfile's
                    raise sink.error
    except (OSError, sf.SoundFileRuntimeError) as err:
        raise OutputError(f"{path}: write failed ({getattr(err, 'strerror', None) or err})") from None
    return written
