"""Atomic, progressive outputs: finished files only, ordinary permissions, exact WAV stream headers."""

from __future__ import annotations

import io
import os
import signal
import stat

import numpy as np
import pytest
import soundfile as sf

from midisynth.constants import SAMPLE_RATE
from midisynth.files import save_text_atomic
from midisynth.jobs.output import (
    OutputError,
    audio_file_problem,
    audio_format,
    check_writable,
    write_audio_file,
    write_wav_stream,
)
from midisynth.model.checkpoints import save_model
from midisynth.model.config import load_config
from midisynth.model.networks import SpectrogramDiffusion
from midisynth.signals import Terminated, exit_on_signals
from tests.conftest import ROOT

WAV = audio_format("a.wav")


def _chunks(num_chunks: int, size: int = 1600):
    for i in range(num_chunks):
        yield np.full(size, 0.01 * (i + 1), dtype=np.float32)


def test_finished_file_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_audio_file(tmp_path / "a.wav", _chunks(2), WAV)
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
        write_audio_file(tmp_path / "a.flac", failing(), audio_format("a.flac"))
    assert list(tmp_path.iterdir()) == []


def test_existing_file_kept_and_missing_directory_reported(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"keep")
    with pytest.raises(OutputError, match="--overwrite"):
        write_audio_file(tmp_path / "a.wav", _chunks(1), WAV)
    assert (tmp_path / "a.wav").read_bytes() == b"keep"
    with pytest.raises(OutputError, match="does not exist"):
        write_audio_file(tmp_path / "nope" / "a.wav", _chunks(1), WAV)
    with pytest.raises(OutputError, match="unsupported output extension"):
        audio_format(tmp_path / "a.xyz")


def test_a_dangling_link_as_output_is_named_before_rendering(tmp_path):
    """A symbolic link to nothing is refused up front as what it is (it used to be found in the way only when the
    render was done, blamed on "another program"); with --overwrite the link itself is replaced."""
    link = tmp_path / "out.wav"
    link.symlink_to(tmp_path / "missing" / "x.wav")
    with pytest.raises(OutputError, match="is a symbolic link to .*missing.*which does not exist"):
        check_writable(link, overwrite=False)
    check_writable(link, overwrite=True)
    write_audio_file(link, _chunks(1), WAV, overwrite=True)
    assert not link.is_symlink() and sf.info(link).frames > 0


def test_wav_stream_header_matches_samples():
    buffer = io.BytesIO()
    written = write_wav_stream(_chunks(3), 3 * 1600, stream=buffer)
    audio, rate = sf.read(io.BytesIO(buffer.getvalue()), dtype="float32")
    assert written == 3 * 1600 and rate == SAMPLE_RATE and audio.shape == (3 * 1600,)
    np.testing.assert_allclose(audio[1600:1605], 0.02, atol=1 / 32768)


def test_a_file_written_meanwhile_is_not_replaced(tmp_path):
    """Another program (a second render of the same output) finishes first: this one fails, that file stays."""
    out = tmp_path / "a.wav"

    def chunks():
        yield np.zeros(1600, np.float32)
        out.write_bytes(b"the other render's")
        yield np.zeros(1600, np.float32)

    with pytest.raises(OutputError, match="already exists"):
        write_audio_file(out, chunks(), WAV)
    assert out.read_bytes() == b"the other render's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]
    write_audio_file(out, _chunks(1), WAV, overwrite=True)  # asked to replace: replaced
    assert sf.info(out).frames == 1600


def test_a_device_is_written_into_not_replaced(tmp_path):
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    for extension, overwrite in (("WAV", False), ("FLAC", True)):
        written = write_audio_file(device, _chunks(2), audio_format("x", extension), overwrite=overwrite)
        assert written == 3200 and stat.S_ISCHR(device.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


@pytest.mark.parametrize("container", ["WAV", "FLAC", "OGG"])
def test_incomplete_audio_files_are_told_apart(tmp_path, container):
    path = tmp_path / f"a.{container.lower()}"
    encoding = audio_format(path)
    write_audio_file(
        path, (np.sin(np.arange(n, n + 16000) / 9.0).astype(np.float32) * 0.3 for n in range(0, 96000, 16000)), encoding
    )
    assert audio_file_problem(path, encoding, SAMPLE_RATE) is None
    assert audio_file_problem(path, encoding, 44100) == "mono at 16000 Hz audio, not mono at 44100 Hz"
    complete = path.read_bytes()
    path.write_bytes(complete[: len(complete) * 2 // 3])
    assert audio_file_problem(path, encoding, SAMPLE_RATE) == "truncated"
    path.write_bytes(b"")
    assert audio_file_problem(path, encoding, SAMPLE_RATE) == "empty (0 bytes)"
    other = audio_format("x.wav", bit_depth="24") if container != "WAV" else audio_format("x.flac")
    path.write_bytes(complete)
    assert audio_file_problem(path, other, SAMPLE_RATE).startswith(f"a {container} file, not ")


def test_a_terminating_signal_unwinds_the_write(tmp_path):
    """Under exit_on_signals, SIGHUP mid-write raises Terminated (exit status 129): no file, no temporary file."""
    inherited = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a terminal leaves it (under nohup it is ignored,
    previous = signal.getsignal(signal.SIGHUP)  # and exit_on_signals rightly keeps it so)

    def chunks():
        yield np.zeros(1600, np.float32)
        os.kill(os.getpid(), signal.SIGHUP)
        yield np.zeros(1600, np.float32)

    with pytest.raises(Terminated) as stop, exit_on_signals():
        write_audio_file(tmp_path / "a.wav", chunks(), WAV)
    assert stop.value.code == 128 + signal.SIGHUP and stop.value.signal_name == "SIGHUP"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGHUP) == previous
    signal.signal(signal.SIGHUP, inherited)
