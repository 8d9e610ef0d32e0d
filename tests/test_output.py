"""Atomic, progressive outputs: finished files only, ordinary permissions, exact WAV stream headers."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest
import soundfile as sf

from midisynth.constants import SAMPLE_RATE
from midisynth.files import save_text_atomic
from midisynth.jobs.output import OutputError, write_audio_file, write_wav_stream
from midisynth.model.checkpoints import save_model
from midisynth.model.config import load_config
from midisynth.model.networks import SpectrogramDiffusion
from tests.conftest import ROOT


def _chunks(num_chunks: int, size: int = 1600):
    for i in range(num_chunks):
        yield np.full(size, 0.01 * (i + 1), dtype=np.float32)


def test_finished_file_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_audio_file(tmp_path / "a.wav", _chunks(2))
        save_text_atomic(tmp_path / "a.json", "{}")
        save_model(SpectrogramDiffusion(load_config(ROOT / "configs" / "tiny.toml").model), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    for name in ("a.wav", "a.json", "m.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_failure_mid_write_leaves_nothing(tmp_path):
    def failing():
        yield from _chunks(2)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_audio_file(tmp_path / "a.flac", failing())
    assert list(tmp_path.iterdir()) == []


def test_existing_file_kept_and_missing_directory_reported(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"keep")
    with pytest.raises(OutputError, match="--overwrite"):
        write_audio_file(tmp_path / "a.wav", _chunks(1))
    assert (tmp_path / "a.wav").read_bytes() == b"keep"
    with pytest.raises(OutputError, match="does not exist"):
        write_audio_file(tmp_path / "nope" / "a.wav", _chunks(1))
    with pytest.raises(OutputError, match="unsupported output extension"):
        write_audio_file(tmp_path / "a.xyz", _chunks(1))


def test_wav_stream_header_matches_samples():
    buffer = io.BytesIO()
    written = write_wav_stream(_chunks(3), 3 * 1600, stream=buffer)
    audio, rate = sf.read(io.BytesIO(buffer.getvalue()), dtype="float32")
    assert written == 3 * 1600 and rate == SAMPLE_RATE and audio.shape == (3 * 1600,)
    np.testing.assert_allclose(audio[1600:1605], 0.02, atol=1 / 32768)
