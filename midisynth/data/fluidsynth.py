"""Rendering MIDI with the FluidSynth command-line synthesizer (the reference the default model imitates)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from midisynth.constants import SAMPLE_RATE

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def fluidsynth_binary() -> str:
    path = shutil.which("fluidsynth")
    if path is None:
        raise FileNotFoundError("the fluidsynth program is not installed (Debian: apt-get install fluidsynth)")
    return path


def check_soundfont(soundfont: Path) -> None:
    """Raise FileNotFoundError unless `soundfont` is a file."""
    if not Path(soundfont).is_file():
        raise FileNotFoundError(f"{soundfont}: no such SoundFont (Debian: apt-get install fluid-soundfont-gm)")


def render_midi(midi_path: Path, soundfont: Path, timeout_s: float = 600.0) -> np.ndarray:
    """Render a MIDI file at FluidSynth's default settings, 16 kHz; returns mono float32 audio [samples].

    Sample 0 is MIDI time zero (a note-on at t seconds sounds from about sample 16000 t, after the instrument's
    attack); FluidSynth keeps rendering a few seconds past the last note-off, so release tails are included.
    """
    check_soundfont(soundfont)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "render.wav"
        cmd = [fluidsynth_binary(), "-ni", "-F", str(wav), "-r", str(SAMPLE_RATE), str(soundfont), str(midi_path)]
        try:
            result = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"fluidsynth took more than {timeout_s:g} s on {midi_path}") from None
        if result.returncode != 0 or not wav.exists():
            raise RuntimeError(f"fluidsynth failed on {midi_path}: {result.stderr.decode(errors='replace')[-500:]}")
        audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise RuntimeError(f"fluidsynth wrote {rate} Hz, expected {SAMPLE_RATE}")
    return audio.mean(axis=1)
