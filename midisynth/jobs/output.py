"""Writing audio progressively and atomically.

Files are written to a temporary file in the destination's directory and renamed into place only when complete,
so an interrupted or failed render never leaves a partial file; unless replacing is asked for, the rename never
replaces a file that appeared meanwhile (another program writing the same output). Outputs that are not regular
files (a device such as /dev/null, a named pipe) are never replaced: they are written into. Standard output and
pipes get a WAV stream whose header carries the exact length, known before the first sample is generated.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from midisynth.constants import SAMPLE_RATE
from midisynth.files import (
    OutputError,
    atomic_path,
    is_special_file,
)
from midisynth.signals import signals_deferred

STDIO = "-"  # an input or output that is the standard stream
FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}  # extension -> soundfile container
EXTENSIONS = {container: extension for extension, container in FORMATS.items()}
BIT_DEPTHS = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}  # --bit-depth -> soundfile subtype
CONTAINER_DEPTHS = {"WAV": ("16", "24", "32f"), "FLAC": ("16", "24"), "OGG": ()}  # OGG is always Vorbis
DEFAULT_BIT_DEPTH = "16"


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
    named = "WAV" if str(target) == STDIO else FORMATS.get(Path(target).suffix.lower())
    if container is not None and named is not None and named != container:
        where = "standard output is a WAV stream" if str(target) == STDIO else f"its extension means {named}"
        raise OutputError(f"{target}: --format {container.lower()} does not fit ({where})")
    container = container or named
    if container is None:
        raise OutputError(f"{target}: unsupported output extension; use one of {', '.join(FORMATS)} (or --format)")
    if bit_depth is None:
        return AudioFormat(container, BIT_DEPTHS[DEFAULT_BIT_DEPTH] if CONTAINER_DEPTHS[container] else "VORBIS")
    if bit_depth not in CONTAINER_DEPTHS[container]:
        allowed = ", ".join(CONTAINER_DEPTHS[container]) or "none (Vorbis is lossy)"
        raise OutputError(f"{target}: {container} cannot hold --bit-depth {bit_depth}; bit depths it takes: {allowed}")
    return AudioFormat(container, BIT_DEPTHS[bit_depth])


@dataclass(frozen=True)
class OutputSettings:
    """How every job's audio is written."""

    sample_rate: int = SAMPLE_RATE  # Hz (soxr resampling from the model's 16 kHz)
    container: str | None = None  # WAV, FLAC or OGG; None: each target's extension
    bit_depth: str | None = None  # 16, 24 or 32f; None: 16 (Vorbis for OGG)
    loudness_lufs: float | None = None  # integrated loudness to normalise to; None: as rendered
    stems: bool = False  # also one file per instrument beside the mix
    overwrite: bool = False


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
        raise OutputError(
            f"a WAV stream holds at most 4 GiB, and this one would be {data_bytes / 2**30:.1f} GiB; "
            "lower --sample-rate or --bit-depth, or write a FLAC file"
        )
    return b"".join(
        [
            b"RIFF",
            struct.pack("<I", 36 + data_bytes),
            b"WAVE",
            b"fmt ",
            struct.pack(
                "<IHHIIHH",
                16,
                encoding.format_tag,
                1,
                sample_rate,
                sample_rate * encoding.sample_bytes,
                encoding.sample_bytes,
                8 * encoding.sample_bytes,
            ),
            b"data",
            struct.pack("<I", data_bytes),
        ]
    )


def write_wav_stream(
    chunks: Iterable[np.ndarray],
    num_samples: int,
    stream: BinaryIO | None = None,
    sample_rate: int = SAMPLE_RATE,
    subtype: str = "PCM_16",
    name: str = "standard output",
) -> int:
    """Write a WAV of exactly `num_samples` samples to a byte stream (default: stdout); returns samples written.

    Chunks beyond `num_samples` are cut and a short stream is padded with silence, so the header stays true.
    `subtype` is PCM_16, PCM_24 or FLOAT (32-bit float); `name` is how errors call the stream.
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
            raise OutputError(f"{name} was closed before the audio was complete") from None
        raise OutputError(f"{name}: write failed ({err.strerror or err})") from None
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


def check_writable(
    path: Path, overwrite: bool, encoding: AudioFormat | None = None, hint: str = "pass --overwrite to replace it"
) -> None:
    """Raise OutputError if `path` exists and may not be replaced (the message ends with `hint`), or is something a
    file cannot be written into.

    Devices and named pipes are written into (no --overwrite needed); a pipe takes only a WAV stream (`encoding`),
    since FLAC and OGG headers are completed last."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        if path.is_symlink() and not overwrite:  # a link to nothing: the render would find it in the way at the end
            raise OutputError(
                f"{path}: is a symbolic link to {os.readlink(path)}, which does not exist (pass "
                "--overwrite to replace the link, or remove it)"
            ) from None
        return
    except OSError as err:  # a name over the file system's limit, a loop of links
        raise OutputError(f"{path}: {err.strerror or err}") from None
    if stat.S_ISSOCK(mode):
        raise OutputError(f"{path}: is a socket; outputs are files, devices or named pipes")
    if stat.S_ISFIFO(mode) and encoding is not None and encoding.container != "WAV":
        raise OutputError(f"{path}: a named pipe takes a WAV stream only, not {encoding.container} (use --format wav)")
    if stat.S_ISREG(mode) and not overwrite:
        raise OutputError(f"{path}: already exists ({hint})")


def _write_into(
    path: Path, chunks: Iterable[np.ndarray], num_samples: int | None, sample_rate: int, encoding: AudioFormat
) -> int:
    """Write audio into an existing device or named pipe (never replacing it): seekable devices with libsndfile,
    pipes as a WAV stream of `num_samples` samples."""
    try:
        with open(path, "wb", buffering=0) as raw:
            if raw.seekable():
                return _encode(raw, chunks, sample_rate, encoding)
            if encoding.container != "WAV" or num_samples is None:
                raise OutputError(
                    f"{path}: a pipe takes a WAV stream only, not {encoding.container} (use --format wav)"
                )
            return write_wav_stream(chunks, num_samples, raw, sample_rate, encoding.subtype, str(path))
    except OutputError:
        raise
    except (OSError, sf.SoundFileRuntimeError) as err:
        raise OutputError(f"{path}: write failed ({getattr(err, 'strerror', None) or err})") from None


def _encode(raw: io.FileIO, chunks: Iterable[np.ndarray], sample_rate: int, encoding: AudioFormat) -> int:
    """Encode audio chunks into a seekable binary file with libsndfile; returns the samples written.

    libsndfile writes through Python callbacks, so its calls run with signals deferred (see midisynth.signals)."""
    written = 0
    sink = _ErrorKeepingFile(raw)
    try:
        with signals_deferred():
            audio = sf.SoundFile(
                sink, mode="w", samplerate=sample_rate, channels=1, format=encoding.container, subtype=encoding.subtype
            )
        try:
            for chunk in chunks:
                with signals_deferred():
                    audio.write(np.clip(chunk, -1.0, 1.0))
                written += chunk.shape[0]
        finally:
            with signals_deferred():
                audio.close()
    finally:
        if sink.error is not None:  # the operating system's reason rather than libsndfile's
            raise sink.error
    return written


def write_audio_file(
    path: Path,
    chunks: Iterable[np.ndarray],
    encoding: AudioFormat,
    overwrite: bool = False,
    sample_rate: int = SAMPLE_RATE,
    num_samples: int | None = None,
) -> int:
    """Write audio chunks (float32, mono, `sample_rate` Hz) to `path` in `encoding` (`audio_format`) atomically;
    returns the samples written. Samples are clipped to [-1, 1].

    Without `overwrite`, an existing file is kept (OutputError once the audio is written, also for one that appears
    meanwhile): callers check `path` with `check_writable` before they make the audio. A device or named pipe at
    `path` is written into (a pipe gets a WAV stream of `num_samples` samples).
    """
    path = Path(path)
    if is_special_file(path):
        return _write_into(path, chunks, num_samples, sample_rate, encoding)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(f"{path}: output directory {directory} does not exist")
    try:
        with atomic_path(path, replace=overwrite) as tmp, open(tmp, "r+b", buffering=0) as raw:
            return _encode(raw, chunks, sample_rate, encoding)
    except OutputError:
        raise
    except (OSError, sf.SoundFileRuntimeError) as err:
        raise OutputError(f"{path}: write failed ({getattr(err, 'strerror', None) or err})") from None


def _ends_complete(path: Path, container: str, frames: int) -> bool:
    """Whether an audio file's end is where its header says: the RIFF size is all there (WAV), the last frame
    decodes (FLAC), the last page ends the stream (OGG)."""
    with open(path, "rb") as f:
        if container == "WAV":
            head = f.read(12)
            riff_bytes = struct.unpack("<I", head[4:8])[0] if head[:4] == b"RIFF" else 0
            return riff_bytes == 0xFFFF_FFFF or os.fstat(f.fileno()).st_size >= 8 + riff_bytes  # RF64: size elsewhere
        if container == "OGG":
            f.seek(max(0, os.fstat(f.fileno()).st_size - 65_307))  # the longest Ogg page
            tail = f.read()
            last_page = tail.rfind(b"OggS")
            return last_page >= 0 and len(tail) > last_page + 5 and bool(tail[last_page + 5] & 0x04)  # end of stream
    try:
        with sf.SoundFile(path) as audio:
            audio.seek(frames - 1)
            return audio.read(1).shape[0] == 1
    except (sf.LibsndfileError, RuntimeError):
        return False


def audio_file_problem(path: str | Path, encoding: AudioFormat, sample_rate: int) -> str | None:
    """Why `path` is not a complete mono audio file of `encoding` at `sample_rate` Hz, or None when it is one
    (what `render --skip-existing` counts as done)."""
    path = Path(path)
    try:
        mode, size = os.stat(path).st_mode, os.stat(path).st_size
    except OSError as err:
        return err.strerror or str(err)
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if size == 0:
        return "empty (0 bytes)"
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return "not an audio file"
    if info.format != encoding.container:
        return f"a {info.format} file, not {encoding.container}"
    if info.samplerate != sample_rate or info.channels != 1:
        channels = "mono" if info.channels == 1 else f"{info.channels}-channel"
        return f"{channels} at {info.samplerate} Hz audio, not mono at {sample_rate} Hz"
    if encoding.container != "OGG" and info.subtype != encoding.subtype:
        return f"audio of {info.subtype} samples, not {encoding.subtype}"
    if info.frames <= 0 or not _ends_complete(path, info.format, info.frames):
        return "truncated"
    return None
