"""Rendering MIDI with the FluidSynth command-line synthesizer (the reference the default model imitates)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from midisynth.constants import SAMPLE_RATE

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
FRAME_BYTES = 4  # FluidSynth writes interleaved stereo, 16-bit little-endian
POLL_SECONDS = 0.05  # how often a bounded render's output size is checked


def fluidsynth_binary() -> str:
    """The fluidsynth program's path; FileNotFoundError (one line, how to install it) when it is not on PATH."""
    path = shutil.which("fluidsynth")
    if path is None:
        raise FileNotFoundError("the fluidsynth program is not installed (Debian: apt-get install fluidsynth)")
    return path


def check_soundfont(soundfont: Path) -> None:
    """Raise FileNotFoundError unless `soundfont` is a file, ValueError unless it starts as a SoundFont does
    (a RIFF file of form 'sfbk'; given anything else, FluidSynth silently renders with another SoundFont)."""
    if not Path(soundfont).is_file():
        raise FileNotFoundError(f"{soundfont}: no such SoundFont (Debian: apt-get install fluid-soundfont-gm)")
    try:
        with open(soundfont, "rb") as f:
            header = f.read(12)
    except OSError as err:
        raise FileNotFoundError(f"{soundfont}: cannot read the SoundFont ({err.strerror or err})") from None
    if header[:4] != b"RIFF" or header[8:12] != b"sfbk":
        raise ValueError(f"{soundfont}: not a SoundFont (.sf2/.sf3 files start with a RIFF 'sfbk' header)")


def check_fluidsynth(soundfont: Path) -> None:
    """What rendering references needs, checked before anything renders: the fluidsynth program installed
    (`fluidsynth_binary`) and `soundfont` a SoundFont (`check_soundfont`)."""
    fluidsynth_binary()
    check_soundfont(soundfont)


def render_midi(
    midi_path: Path, soundfont: Path, timeout_s: float = 600.0, max_seconds: float | None = None
) -> np.ndarray:
    """Render a MIDI file at FluidSynth's default settings, 16 kHz; returns mono float32 audio [samples].

    Sample 0 is MIDI time zero (a note-on at t seconds sounds from about sample 16000 t, after the instrument's
    attack); FluidSynth keeps rendering a few seconds past the last note-off, so release tails are included.
    With `max_seconds`, FluidSynth is stopped once it has written that much audio and the first `max_seconds`
    are returned: it renders up to the file's End of Track, which may lie hours past the last note.
    Both files are given to FluidSynth as absolute paths (a name such as `-x.mid` is not read as an option).
    RuntimeError if FluidSynth fails or runs longer than `timeout_s` seconds.
    """
    check_soundfont(soundfont)
    limit_bytes = None if max_seconds is None else int(max_seconds * SAMPLE_RATE) * FRAME_BYTES
    with tempfile.TemporaryDirectory() as tmp:
        raw, log = Path(tmp) / "render.raw", Path(tmp) / "fluidsynth.log"
        cmd = [
            fluidsynth_binary(),
            "-ni",
            "-T",
            "raw",
            "-O",
            "s16",
            "-E",
            "little",
            "-F",
            str(raw),
            "-r",
            str(SAMPLE_RATE),
            str(Path(soundfont).absolute()),
            str(Path(midi_path).absolute()),
        ]
        with open(log, "wb") as messages, subprocess.Popen(cmd, stdout=messages, stderr=messages) as process:
            try:
                stopped = _wait(process, raw, limit_bytes, timeout_s)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"fluidsynth took more than {timeout_s:g} s on {midi_path}") from None
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if not stopped and (process.returncode != 0 or not raw.exists()):
            raise RuntimeError(f"fluidsynth failed on {midi_path}: {log.read_bytes().decode(errors='replace')[-500:]}")
        frames = raw.stat().st_size // FRAME_BYTES
        if limit_bytes is not None:
            frames = min(frames, limit_bytes // FRAME_BYTES)
        pcm = np.fromfile(raw, "<i2", count=2 * frames).reshape(frames, 2)  # [frames, 2]
    return (pcm.astype(np.float32) / 32768.0).mean(axis=1)


def _wait(process: subprocess.Popen, output: Path, limit_bytes: int | None, timeout_s: float) -> bool:
    """Wait for FluidSynth to finish; kill it and return True once `output` holds `limit_bytes`.
    subprocess.TimeoutExpired after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            process.wait(timeout=POLL_SECONDS if limit_bytes is not None else timeout_s)
            return False
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise
        if limit_bytes is not None and output.exists() and output.stat().st_size >= limit_bytes:
            process.kill()
            process.wait()
            return True
