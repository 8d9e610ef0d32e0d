"""`midisynth render` and `convert` under bad input, bad options and bad outputs: a malformed corpus in one batch,
disk full, stdout closed early, unusable output directories, signals, pipes, outputs that are the input or that
exist incomplete, over-long names, the song limits, and bit-identical output for the same seed."""

from __future__ import annotations

import io
import math
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from midisynth.constants import HOP_LENGTH, N_MELS, SAMPLE_RATE
from midisynth.model.checkpoints import file_sha256
from midisynth.render.pipeline import song_frames
from midisynth.score.midi import read_midi
from midisynth.score.tokens import num_windows
from tests.malformed import many_notes, smf, write_corpus
from tests.test_cli import FAST, run

# Low limits keep the corpus quick: at most 24 windows a file; the 3000-note file is refused.
CORPUS_LIMITS = ("--max-events", "2500", "--max-duration", "120")
FAILURE_LINE = re.compile(r"midisynth: (?P<file>\S+\.mid): (?P<message>\S.*)")


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", ["1", "8"])
def test_malformed_corpus_renders_or_fails_cleanly_in_one_batch(tiny_model_path, tmp_path, capsys, batch_size):
    corpus = write_corpus(tmp_path / "in", cuts=12, mutants=5)
    inputs = sorted((tmp_path / "in").iterdir())
    out = tmp_path / "out"
    result = run(
        "render",
        str(tmp_path / "in"),
        "-o",
        str(out),
        "--model",
        str(tiny_model_path),
        *FAST,
        *CORPUS_LIMITS,
        "--batch-size",
        batch_size,
    )

    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    failures = [FAILURE_LINE.fullmatch(line) for line in lines]
    assert all(failures), [line for line, m in zip(lines, failures, strict=True) if not m]  # nothing but failures
    failed = [Path(m["file"]) for m in failures]
    assert len(set(failed)) == len(failed), "a file reported twice"
    rendered = sorted(out.rglob("*"))
    assert [p.name for p in rendered] == sorted(p.with_suffix(".wav").name for p in set(inputs) - set(failed))
    assert sorted((tmp_path / "in").iterdir()) == inputs  # no temporary files beside the inputs either
    assert set(corpus["renders"]).isdisjoint(failed)
    assert set(corpus["refused"] + corpus["truncated"]) <= set(failed)
    for path in rendered:  # complete files of the song's length (plus the release tail)
        song = read_midi(tmp_path / "in" / path.with_suffix(".mid").name)
        audio, rate = sf.read(path)
        assert rate == SAMPLE_RATE and audio.shape == (song_frames(song, num_windows(song.duration)) * HOP_LENGTH,)
        if not song.notes:
            assert np.abs(audio).max() < 1e-3, f"{path.name}: a song without notes should be silent"
    messages = "\n".join(m["message"] for m in failures)
    for expected in (
        "--max-events",
        "--max-duration",
        "SMPTE",
        "tempo of 0",
        "not a MIDI file",
        "truncated",
        "empty file",
    ):
        assert expected in messages
    with capsys.disabled():
        print(
            f"\nmalformed corpus, --batch-size {batch_size}: {len(inputs)} files tried, {len(failed)} clear "
            f"one-line errors, {len(rendered)} rendered; no traceback, no partial or temporary file"
        )


def test_batch_summary_counts_failures(tiny_model_path, short_midi, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "good.mid").write_bytes(short_midi.read_bytes())
    (tmp_path / "in" / "bad.mid").write_bytes(b"MThd")
    result = run(
        "render",
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(tiny_model_path),
        *[arg for arg in FAST if arg != "-q"],
    )
    assert result.exit_code == 1
    assert "bad.mid: truncated header" in result.output
    assert "1 of 2 rendered, 1 failed" in result.output


def test_event_limit_is_checked_before_parsing(tiny_model_path, tmp_path, monkeypatch):
    import pretty_midi

    song = tmp_path / "dense.mid"
    song.write_bytes(smf(many_notes(3000)))  # 6001 events
    monkeypatch.setattr(pretty_midi, "PrettyMIDI", None)  # parsing would fail with a TypeError
    result = run(
        "render",
        str(song),
        "-o",
        str(tmp_path / "o.wav"),
        "--model",
        str(tiny_model_path),
        *FAST,
        "--max-events",
        "6000",
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"midisynth: {song}: over 6,000 MIDI events, the limit (raise it with --max-events N, or 0 for no limit)"
    )
    assert not (tmp_path / "o.wav").exists()


def test_same_seed_gives_identical_bytes(tiny_model_path, short_midi, tmp_path):
    def render(name: str, seed: str) -> bytes:
        result = run(
            "render",
            str(short_midi),
            "-o",
            str(tmp_path / name),
            "--model",
            str(tiny_model_path),
            *FAST,
            "--seed",
            seed,
        )
        assert result.exit_code == 0, result.output
        return (tmp_path / name).read_bytes()

    first = render("a.wav", "3")
    assert render("b.wav", "3") == first
    assert render("c.wav", "4") != first


# -- output errors -------------------------------------------------------------------------------------------------


def _render_process(midi: Path, output: str, model: Path, **popen_args) -> subprocess.Popen:
    args = ["render", str(midi), "-o", output, "--model", str(model), *FAST]
    return subprocess.Popen([sys.executable, "-m", "midisynth.cli", *args], stderr=subprocess.PIPE, **popen_args)


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # writes beyond 20 kB fail (EFBIG)


@pytest.mark.slow  # a fresh process
@pytest.mark.parametrize("extension", [".wav", ".flac"])
def test_write_error_gives_one_line_and_no_file(tiny_model_path, two_window_midi, tmp_path, extension):
    """A file size limit makes the OS refuse writes mid-render, as a full disk does."""
    out = tmp_path / f"out{extension}"
    proc = _render_process(two_window_midi, str(out), tiny_model_path, preexec_fn=_limit_file_size)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert stderr.decode() == f"midisynth: {two_window_midi}: {out}: write failed (File too large)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [two_window_midi.name]


@pytest.mark.slow  # a fresh process
def test_full_disk_behind_stdout(tiny_model_path, two_window_midi):
    with open("/dev/full", "wb") as full:
        proc = _render_process(two_window_midi, "-", tiny_model_path, stdout=full)
        _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert stderr.decode() == (
        f"midisynth: {two_window_midi}: standard output: write failed (No space left on device)\n"
    )


@pytest.mark.slow  # a fresh process
def test_stdout_closed_early(tiny_model_path, two_window_midi):
    """As `midisynth render song.mid -o - | head -c 100`: 7 s of audio (224 kB) overflow the pipe's buffer."""
    proc = _render_process(two_window_midi, "-", tiny_model_path, stdout=subprocess.PIPE)
    assert proc.stdout.read(100)[:4] == b"RIFF"
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert stderr.decode() == (
        f"midisynth: {two_window_midi}: standard output was closed before the audio was complete\n"
    )


def test_unusable_output_directories(tiny_model_path, short_midi, tmp_path):
    (tmp_path / "file").write_bytes(b"")
    in_the_way = tmp_path / "file" / "song.wav"
    result = run("render", str(short_midi), "-o", str(in_the_way), "--model", str(tiny_model_path), *FAST)
    assert result.exit_code == 1
    assert result.output == (
        f"midisynth: {short_midi}: {in_the_way}: cannot create the output directory "
        f"{in_the_way.parent} (a file has that name)\n"
    )
    created = tmp_path / "new" / "sub" / "song.wav"
    assert run("render", str(short_midi), "-o", str(created), "--model", str(tiny_model_path), *FAST).exit_code == 0
    assert sf.info(created).frames > 0


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux's /sys, where nobody may create files")
def test_unwritable_output_directory(tiny_model_path, short_midi):
    result = run("render", str(short_midi), "-o", "/sys/song.wav", "--model", str(tiny_model_path), *FAST)
    assert result.exit_code == 1
    assert result.output == f"midisynth: {short_midi}: /sys/song.wav: cannot write in /sys (Permission denied)\n"


# -- outputs that must not be lost ---------------------------------------------------------------------------------


def _slow_render(midi_dir: Path, model: Path, out: Path) -> subprocess.Popen:
    """A render that takes long enough to be signalled while it writes (a 2-minute song at 200 steps)."""
    from tests.conftest import write_midi

    song = write_midi(midi_dir / "song.mid", [(60 + k % 12, k * 0.5, k * 0.5 + 0.4, 90) for k in range(240)])
    cmd = [
        sys.executable,
        "-m",
        "midisynth.cli",
        "render",
        str(song),
        "-o",
        str(out),
        "--model",
        str(model),
        "--sampler",
        "ddim",
        "--steps",
        "200",
        "-q",
    ]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, preexec_fn=_default_signal_actions)


def _default_signal_actions() -> None:
    """In the child: the signals' default actions, as a terminal gives them (a test run under nohup, or started in
    the background by a shell, would pass SIGHUP or SIGINT on as ignored, and midisynth keeps ignored signals so)."""
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.slow  # a fresh process
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_termination_signals_leave_no_partial_file(tiny_model_path, tmp_path, signum):
    out = tmp_path / "out.wav"
    proc = _slow_render(tmp_path, tiny_model_path, out)
    try:
        deadline = time.monotonic() + 600  # a busy machine may take minutes to import torch
        while not list(tmp_path.glob(".*.part")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)  # wait until the render is writing
        assert list(tmp_path.glob(".*.part")), "the render never started writing"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, stderr
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    assert stderr.decode() == f"midisynth: {what}; no partial output was left behind\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.mid"]


def test_named_pipe_output_is_written_into_not_replaced(tiny_model_path, short_midi, tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()), daemon=True)
    reader.start()
    result = run(
        "render",
        str(short_midi),
        "-o",
        str(pipe),
        "--format",
        "wav",
        "--overwrite",
        "--model",
        str(tiny_model_path),
        *FAST,
    )
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(pipe.stat().st_mode)
    audio, rate = sf.read(io.BytesIO(received[0]))
    song = read_midi(short_midi)
    assert rate == SAMPLE_RATE and audio.shape == (song_frames(song, 1) * HOP_LENGTH,) and np.abs(audio).max() > 0
    flac = run("render", str(short_midi), "-o", str(pipe), "--format", "flac", "--model", str(tiny_model_path), *FAST)
    assert flac.exit_code == 1 and stat.S_ISFIFO(pipe.stat().st_mode)
    assert flac.output == (
        f"midisynth: {short_midi}: {pipe}: a named pipe takes a WAV stream only, not FLAC (use --format wav)\n"
    )


def test_skip_existing_renders_again_what_is_not_a_complete_output(tiny_model_path, short_midi, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("done", "empty", "cut", "text", "flac"):
        (src / f"{name}.mid").write_bytes(short_midi.read_bytes())
    args = ("render", str(src), "-o", str(out), "--model", str(tiny_model_path), *FAST)
    out.mkdir()
    assert run("render", str(src / "done.mid"), "-o", str(out / "done.wav"), *args[4:]).exit_code == 0
    complete = (out / "done.wav").read_bytes()
    (out / "empty.wav").write_bytes(b"")
    (out / "cut.wav").write_bytes(complete[: len(complete) // 2])
    (out / "text.wav").write_text("not audio")
    sf.write(out / "flac.wav", np.zeros(1600), SAMPLE_RATE, format="FLAC")
    result = run(*[arg for arg in args if arg != "-q"], "--skip-existing")
    assert result.exit_code == 0, result.output
    assert [line for line in result.output.splitlines() if line.startswith("midisynth: ")] == [
        f"midisynth: {out / 'cut.wav'}: exists but is truncated; rendering it again",
        f"midisynth: {out / 'empty.wav'}: exists but is empty (0 bytes); rendering it again",
        f"midisynth: {out / 'flac.wav'}: exists but is a FLAC file, not WAV; rendering it again",
        f"midisynth: {out / 'text.wav'}: exists but is not an audio file; rendering it again",
        "midisynth: 4 of 4 rendered",
    ]
    for name in ("done", "empty", "cut", "text", "flac"):
        assert (out / f"{name}.wav").read_bytes() == complete, name  # same seed, same audio


def _two_instruments(path: Path) -> Path:
    import pretty_midi

    midi = pretty_midi.PrettyMIDI()
    for program, pitch in ((0, 60), (40, 67)):
        instrument = pretty_midi.Instrument(program=program)
        instrument.notes = [pretty_midi.Note(velocity=90, pitch=pitch, start=0.0, end=1.0)]
        midi.instruments.append(instrument)
    midi.write(str(path))
    return path


@pytest.mark.slow  # renders a job with stems twice
def test_skip_existing_finishes_an_interrupted_stems_job(tiny_model_path, tmp_path):
    song = _two_instruments(tmp_path / "song.mid")
    out = tmp_path / "out" / "song.wav"
    args = ("render", str(song), "-o", str(out), "--stems", "--model", str(tiny_model_path), *FAST)
    assert run(*args).exit_code == 0
    outputs = {path: path.read_bytes() for path in out.parent.iterdir()}
    assert len(outputs) == 3  # the mix and two stems
    cut = out.with_name("song.stem-040-violin.wav")
    cut.unlink()  # stopped before its last stem
    resumed = run(*[arg for arg in args if arg != "-q"], "--skip-existing")
    assert resumed.exit_code == 0, resumed.output
    assert [line for line in resumed.output.splitlines() if line.startswith("midisynth: ")] == [
        f"midisynth: {out}: 1 of its 3 outputs not complete ({cut}: missing); rendering it again"
    ]
    assert {path: path.read_bytes() for path in out.parent.iterdir()} == outputs
    done = run(*[arg for arg in args if arg != "-q"], "--skip-existing")
    assert done.output == "midisynth: nothing to do: every output exists (--skip-existing)\n"


@pytest.mark.slow  # renders a job, then again with stems
def test_skip_existing_writes_stems_and_spectrogram_added_to_a_finished_job(tiny_model_path, tmp_path):
    song = _two_instruments(tmp_path / "song.mid")
    out, mel = tmp_path / "song.wav", tmp_path / "song.npy"
    args = ("render", str(song), "-o", str(out), "--model", str(tiny_model_path), *FAST, "--skip-existing")
    assert run(*args).exit_code == 0
    mix = out.read_bytes()
    result = run(*args, "--stems", "--mel-out", str(mel))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == mix
    assert sorted(p.name for p in tmp_path.glob("song.stem-*.wav")) == [
        "song.stem-000-acoustic_grand_piano.wav",
        "song.stem-040-violin.wav",
    ]
    assert np.load(mel).shape == (sf.info(out).frames // HOP_LENGTH, N_MELS)


def test_output_that_is_the_input_is_refused(tiny_model_path, short_midi, tmp_path):
    original = short_midi.read_bytes()
    for extra in (
        ["-o", str(short_midi), "--format", "wav", "--overwrite"],
        ["-o", str(tmp_path / "a.wav"), "--mel-out", str(short_midi)],
    ):
        result = run("render", str(short_midi), *extra, "--model", str(tiny_model_path), *FAST)
        assert result.exit_code == 2, result.output
        assert result.output == (
            f"midisynth: {short_midi}: this is the input file {short_midi}; write the output elsewhere\n"
        )
    assert short_midi.read_bytes() == original


@pytest.mark.parametrize("output", [[], ["-o", "out"], ["--overwrite"]], ids=["in-place", "to-a-folder", "overwrite"])
def test_inputs_that_map_to_one_output_are_refused_up_front(tiny_model_path, short_midi, tmp_path, output):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.mid", "a.midi", "a.MID", "b.mid"):
        (src / name).write_bytes(short_midi.read_bytes())
    where = [str(tmp_path / arg) if arg == "out" else arg for arg in output]
    result = run("render", str(src), *where, "--model", str(tiny_model_path), *FAST)
    target = (tmp_path / "out" if "-o" in output else src) / "a.wav"
    assert (result.exit_code, result.output) == (
        2,
        f"midisynth: {src / 'a.MID'}, {src / 'a.mid'} and {src / 'a.midi'} map to one output, {target}; rename all "
        "but one, or render them separately\n",
    )
    assert sorted(p.name for p in tmp_path.rglob("*.wav")) == []  # nothing rendered


def test_long_output_names(tiny_model_path, short_midi, tmp_path):
    longest = tmp_path / ("n" * 251 + ".wav")  # 255 bytes, the usual limit: the temporary name must still fit
    result = run("render", str(short_midi), "-o", str(longest), "--model", str(tiny_model_path), *FAST)
    assert result.exit_code == 0, result.output
    assert sf.info(longest).frames > 0
    too_long = tmp_path / ("n" * 252 + ".wav")
    result = run("render", str(short_midi), "-o", str(too_long), "--model", str(tiny_model_path), *FAST)
    assert result.exit_code == 2
    assert (
        result.output == f"midisynth: {too_long}: file name too long (256 bytes; the file system takes at most 255)\n"
    )
    into_dir = run("render", str(short_midi), str(short_midi), "-o", str(too_long / "x"), *FAST)
    assert into_dir.exit_code == 2 and into_dir.output.startswith(f"midisynth: {too_long / 'x'}")


# -- one-line errors -----------------------------------------------------------------------------------------------


def test_options_are_checked_before_any_model_loads(short_midi, tmp_path):
    """A model that does not exist shows the options are refused first."""
    missing_model = ("--model", str(tmp_path / "no-such-model.safetensors"))
    cases = {
        ("--seed", str(2**70)): f"midisynth: seed {2**70} does not fit in 64 bits; use 0 to {2**64 - 1}\n",
        ("--start", "10", "--end", "5"): "midisynth: --end 5 must be after --start 10 (seconds)\n",
    }
    for options, message in cases.items():
        result = run("render", str(short_midi), "-o", str(tmp_path / "o.wav"), *missing_model, *options)
        assert (result.exit_code, result.output) == (2, message)


def test_too_many_ddpm_steps_are_refused_before_the_model_loads(short_midi, tmp_path):
    from midisynth.model.samplers import DIFFUSERS_SAMPLING
    from midisynth.render.pipeline import RenderOptions

    message = "the ddpm sampler takes at most 1000 steps (one per training timestep), got 1001"
    result = run(
        "render",
        str(short_midi),
        "-o",
        str(tmp_path / "o.wav"),
        "--sampler",
        "ddpm",
        "--steps",
        "1001",
        "--model",
        str(tmp_path / "never-loaded"),
    )
    assert (result.exit_code, result.output) == (2, f"midisynth: {message}\n")
    with pytest.raises(ValueError, match=re.escape(message)):  # a model sampled with ddpm, with steps asked for
        RenderOptions(steps=1001).resolved(DIFFUSERS_SAMPLING)
    assert RenderOptions(sampler="ddpm", steps=1000).steps == 1000


def test_seed_range(tiny_model_path, short_midi, tmp_path):
    for seed in (str(2**64 - 1), "-1"):
        result = run(
            "render",
            str(short_midi),
            "-o",
            str(tmp_path / f"{seed}.wav"),
            "--model",
            str(tiny_model_path),
            *FAST,
            "--seed",
            seed,
        )
        assert result.exit_code == 0, result.output
    assert (tmp_path / "-1.wav").read_bytes() == (tmp_path / f"{2**64 - 1}.wav").read_bytes()  # torch wraps it


@pytest.mark.parametrize("content", [b"", bytes(range(256)) * 40], ids=["empty", "random"])
def test_unreadable_vocoder_file(tiny_model_path, short_midi, tmp_path, content):
    vocoder = tmp_path / "garbage.safetensors"
    vocoder.write_bytes(content)
    result = run(
        "render",
        str(short_midi),
        "-o",
        str(tmp_path / "o.wav"),
        "--model",
        str(tiny_model_path),
        "--vocoder",
        str(vocoder),
        *FAST,
    )
    assert result.exit_code == 2
    assert re.fullmatch(
        rf"midisynth: {re.escape(str(vocoder))}: not a readable safetensors vocoder \(.+\)\n", result.output
    ), result.output


def test_excerpt_and_length_messages(tiny_model_path, short_midi, tmp_path):
    from tests.conftest import write_midi

    args = ("-o", str(tmp_path / "o.wav"), "--model", str(tiny_model_path), *FAST)
    late = run("render", str(short_midi), *args, "--start", "10")
    assert (late.exit_code, late.output) == (
        1,
        f"midisynth: {short_midi}: the excerpt starts at 10 s, but the song ends at 1.50 s\n",
    )
    fifteen = write_midi(tmp_path / "fifteen.mid", [(60, 0.0, 15.0, 90)])
    over = run("render", str(fifteen), *args, "--max-duration", "1")
    assert (over.exit_code, over.output) == (
        1,
        f"midisynth: {fifteen}: song is 15.0 s long, over the 1.0 s limit (raise it with --max-duration "
        "SECONDS, or 0 for no limit)\n",
    )


def test_control_characters_in_file_names_cannot_forge_a_line(tiny_model_path, short_midi, tmp_path):
    bad = tmp_path / "evil\nmidisynth: forged.mid"
    bad.write_bytes(b"not MIDI")
    result = run("render", str(bad), "-o", str(tmp_path / "o.wav"), "--model", str(tiny_model_path), *FAST)
    assert result.exit_code == 1
    assert result.output.startswith(f"midisynth: {str(bad)!r}: ") and result.output.count("\n") == 1, result.output
    taken = tmp_path / "taken\r\x1b[2K.wav"
    taken.write_bytes(b"keep")
    result = run("render", str(short_midi), "-o", str(taken), "--model", str(tiny_model_path), *FAST)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert f"{str(taken)!r}"[1:-1] + ": already exists" in result.output


def test_spectrogram_to_standard_output_is_refused(short_midi, tmp_path):
    result = run(
        "render",
        str(short_midi),
        "-o",
        str(tmp_path / "o.wav"),
        "--mel-out",
        "-",
        "--model",
        str(tmp_path / "never-loaded"),
    )
    assert (result.exit_code, result.output) == (
        2,
        "midisynth: --mel-out -: the spectrogram is written to a .npy file, not to standard output; give a file name\n",
    )
    assert not Path("-").exists()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_is_not_a_model_file(short_midi, tmp_path):
    result = run("render", str(short_midi), "-o", str(tmp_path / "o.wav"), "--model", "/dev/zero")
    assert (result.exit_code, result.output) == (
        2,
        "midisynth: /dev/zero: not a model file (a device, pipe or socket, not a regular file)\n",
    )


def test_length_limit_message_tells_close_lengths_apart(tmp_path):
    from midisynth.score.midi import MidiError, SongLimits
    from tests.conftest import write_midi

    song = write_midi(tmp_path / "long.mid", [(60, 0.0, 1.0, 90), (62, 14_400.0, 14_401.0, 90)])
    with pytest.raises(MidiError, match=re.escape("song is 4.00 h (14,401 s) long, over the 4.00 h (14,400 s) limit")):
        read_midi(song, SongLimits(max_duration=14_400))


def test_shard_with_nothing_to_do(short_midi, tmp_path):
    result = run(
        "render",
        str(short_midi),
        "-o",
        str(tmp_path / "o.wav"),
        "--shard",
        "2/4",
        "--model",
        str(tmp_path / "never-loaded"),
    )
    assert (result.exit_code, result.output) == (
        0,
        "midisynth: shard 2/4 has nothing to do (1 input file for 4 shards)\n",
    )
    assert (
        run(
            "render",
            str(short_midi),
            "-o",
            str(tmp_path / "o.wav"),
            "--shard",
            "2/4",
            "-q",
            "--model",
            str(tmp_path / "never-loaded"),
        ).output
        == ""
    )


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux's /sys, where nobody may create files")
def test_unwritable_plot_or_spectrogram_path(tiny_model_path, short_midi, tmp_path):
    for option, path in (("--mel-out", "/sys/mel.npy"), ("--plot", "/sys/plot.png")):
        result = run(
            "render",
            str(short_midi),
            "-o",
            str(tmp_path / "o.wav"),
            option,
            path,
            "--model",
            str(tiny_model_path),
            *FAST,
        )
        assert (result.exit_code, result.output) == (
            1,
            f"midisynth: {short_midi}: {path}: cannot write in /sys (Permission denied)\n",
        )
        assert not (tmp_path / "o.wav").exists()  # refused before rendering


def test_convert_output_errors(tiny_model_path, tmp_path):
    (tmp_path / "file").write_bytes(b"")
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"keep")
    cases = {
        tmp_path
        / "file"
        / "m.safetensors": f"cannot create the output directory {tmp_path / 'file'} (a file has that name)",
        existing: "already exists (pass --overwrite to replace it)",
    }
    if Path("/sys/kernel").is_dir():
        cases[Path("/sys/m.safetensors")] = "cannot write in /sys (Permission denied)"
    for output, message in cases.items():
        result = run("convert", str(tiny_model_path), str(output))
        assert (result.exit_code, result.output) == (1, f"midisynth: {output}: {message}\n")
    assert existing.read_bytes() == b"keep"
    replaced = run("convert", str(tiny_model_path), str(existing), "--overwrite")
    assert replaced.exit_code == 0 and replaced.stdout.split()[0] == file_sha256(existing)


@pytest.mark.slow  # a fresh process
def test_convert_onto_a_full_disk(tiny_model_path, tmp_path):
    out = tmp_path / "m.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "midisynth.cli", "convert", str(tiny_model_path), str(out)],
        capture_output=True,
        preexec_fn=_limit_file_size,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert re.fullmatch(
        rf"midisynth: {re.escape(str(out))}: write failed \(.*File too large.*\)\n", proc.stderr.decode()
    ), proc.stderr
    assert list(tmp_path.iterdir()) == []


# -- warnings ------------------------------------------------------------------------------------------------------


def test_never_released_notes_are_reported_once(tiny_model_path, tmp_path):
    import mido

    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    track += [
        mido.Message("note_on", note=60, velocity=90, time=0),
        mido.Message("note_off", note=60, time=480),
        mido.Message("note_on", note=64, velocity=90, time=0),
        mido.Message("note_on", note=67, velocity=90),
        mido.MetaMessage("end_of_track", time=960),
    ]
    midi.tracks.append(track)
    song = tmp_path / "hanging.mid"
    midi.save(song)
    result = run(
        "render",
        str(song),
        "-o",
        str(tmp_path / "o.wav"),
        "--stems",
        "--model",
        str(tiny_model_path),
        *[arg for arg in FAST if arg != "-q"],
    )
    assert result.exit_code == 0, result.output
    assert [line for line in result.output.splitlines() if line.startswith("midisynth")] == [
        f"midisynth: {song}: 2 notes never released (a note-on without a note-off) left out, as the reference "
        "tokenizer leaves them out"
    ]


def test_window_truncation_is_one_line_naming_the_file_and_time(tiny_model_path, tmp_path):
    from tests.conftest import write_midi

    dense = write_midi(tmp_path / "dense.mid", [(36 + k % 60, 0.01 * k, 0.01 * k + 0.005, 90) for k in range(500)])
    result = run(
        "render",
        str(dense),
        "-o",
        str(tmp_path / "o.wav"),
        "--model",
        str(tiny_model_path),
        *[arg for arg in FAST if arg != "-q"],
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("midisynth")]
    assert len(lines) == 1 and "Warning" not in result.output, result.output
    # 2503 tokens, about 5 a note: token 2047 falls near the 410th note, at 4.09 s; the song ends at 5.00 s
    assert lines == [
        f"midisynth: {dense}: notes from 4.09 s to 5.00 s left out: that 5.12 s window has 2503 tokens, "
        "over the model's 2048"
    ]


# -- the library's limits ------------------------------------------------------------------------------------------


def test_song_limits_apply_to_library_renders(tiny_model_path, tmp_path):
    from midisynth.render.pipeline import RenderOptions, Synthesizer
    from midisynth.score.midi import MidiError, SongLimits
    from tests.conftest import write_midi

    long_song = write_midi(tmp_path / "long.mid", [(60, 0.0, 1.0, 90), (62, 5 * 3600.0, 5 * 3600.0 + 1, 90)])
    synth = Synthesizer.from_pretrained(
        str(tiny_model_path), device="cpu", vocoder="griffin-lim", options=RenderOptions(steps=1, precision="fp32")
    )
    with pytest.raises(MidiError, match=r"song is 5\.00 h long, over the 4\.00 h limit"):
        synth.render(long_song)
    with pytest.raises(MidiError, match=r"over 3 MIDI events"):
        read_midi(long_song, SongLimits(max_events=3))
    assert read_midi(long_song, SongLimits(max_duration=0)).duration == pytest.approx(5 * 3600.0 + 1)


# -- NaN and infinity ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [[], ["--batch-size", "2"]], ids=["one-by-one", "batched"])
def test_non_finite_render_is_an_error_and_never_a_file(tiny_model_path, short_midi, tmp_path, batch):
    """A guidance weight of 1e308 overflows float32: the spectrogram is NaN, which once became a full-scale DC file."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b"):
        (src / f"{name}.mid").write_bytes(short_midi.read_bytes())
    inputs = [str(src / "a.mid")] if not batch else [str(src)]
    extra = ["--mel-out", str(tmp_path / "mel.npy")] if not batch else []
    out = tmp_path / ("out.wav" if not batch else "out")
    result = run(
        "render", *inputs, "-o", str(out), "--model", str(tiny_model_path), *FAST, "--guidance", "1e308", *extra, *batch
    )
    assert result.exit_code == 1, result.output
    names = ["a.mid"] if not batch else ["a.mid", "b.mid"]
    assert result.output == "".join(
        f"midisynth: {src / name}: the rendered spectrogram holds NaN values (the model's weights or its guidance "
        "weight overflow); no audio is made from it\n"
        for name in names
    )
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [Path("in/a.mid"), Path("in/b.mid"), Path("short.mid")]


def test_non_finite_or_fractional_options_are_refused():
    from midisynth.render.pipeline import RenderOptions

    for guidance in (math.inf, math.nan):
        with pytest.raises(ValueError, match="guidance must be a finite number >= 1"):
            RenderOptions(guidance=guidance)
    with pytest.raises(TypeError, match="steps must be a whole number, got 2.5"):
        RenderOptions(steps=2.5)
    with pytest.raises(TypeError, match="seed must be a whole number, got 1.5"):
        RenderOptions(seed=1.5)
    assert RenderOptions(steps=np.int64(3), seed=np.uint64(2**64 - 1)).steps == 3  # numpy's integers are whole


def test_infinite_guidance_is_refused_before_the_model_loads(short_midi, tmp_path):
    result = run(
        "render",
        str(short_midi),
        "-o",
        str(tmp_path / "o.wav"),
        "--guidance",
        "inf",
        "--model",
        str(tmp_path / "never-loaded"),
    )
    assert (result.exit_code, result.output) == (
        2,
        "midisynth: guidance must be a finite number >= 1 (1 disables it), got inf\n",
    )


def test_non_finite_model_weights_metadata_and_partials_are_refused(tmp_path):
    import json

    import torch

    from midisynth.model import partials as P
    from midisynth.model.checkpoints import CheckpointError, load_model_file, save_model
    from midisynth.model.config import load_config
    from midisynth.model.networks import SpectrogramDiffusion
    from tests.conftest import ROOT

    model = SpectrogramDiffusion(load_config(ROOT / "configs" / "tiny.toml").model)
    config = model.cfg.to_dict()
    files = {
        "config.safetensors": {"model_config": json.dumps({**config, "max_decoder_noise_time": math.inf})},
        "sampling.safetensors": {"sampling": json.dumps({"sampler": "ddim", "steps": 3, "guidance": math.nan})},
    }
    for name, metadata in files.items():
        save_model(model, tmp_path / name, metadata)
    with pytest.raises(CheckpointError, match="max_decoder_noise_time must be a finite number > 0, got inf"):
        load_model_file(tmp_path / "config.safetensors")
    with pytest.raises(CheckpointError, match="sampling.safetensors: invalid sampling defaults .*finite guidance"):
        load_model_file(tmp_path / "sampling.safetensors")
    with torch.no_grad():
        model.decoder.output_proj.weight[3, 5] = math.nan
    save_model(model, tmp_path / "weights.safetensors")
    with pytest.raises(
        CheckpointError, match=r"weights.safetensors: decoder\.output_proj\.weight holds NaN or infinite"
    ):
        load_model_file(tmp_path / "weights.safetensors")

    gains = np.ones((N_MELS, P.COLUMNS), np.float32)
    gains[7, 2] = np.inf
    P.save_partials(P.Partials(gains), tmp_path / "partials.safetensors")
    with pytest.raises(ValueError, match="partials.safetensors: partials gains hold NaN or infinite values"):
        P.load_partials(tmp_path / "partials.safetensors")


# -- the library's inputs ------------------------------------------------------------------------------------------


def test_what_is_not_a_midi_source_is_refused_and_no_descriptor_is_closed(tiny_model_path, short_midi):
    """A number was taken for a file descriptor: `render(1)` read the caller's stdout and closed it."""
    from midisynth.render.pipeline import RenderOptions, Synthesizer

    synth = Synthesizer.from_pretrained(
        str(tiny_model_path), device="cpu", vocoder="griffin-lim", options=RenderOptions(steps=1, precision="fp32")
    )
    descriptor = os.open(short_midi, os.O_RDONLY)
    try:
        for source in (descriptor, 1.5, None, [str(short_midi)]):
            with pytest.raises(
                TypeError,
                match=r"read_midi takes a MIDI file's path \(str or os.PathLike\), its "
                r"bytes, a binary file object .*; got ",
            ):
                synth.render(source)
        os.fstat(descriptor)  # still open
    finally:
        os.close(descriptor)
    with pytest.raises(TypeError, match="device must be 'auto', 'cpu' or 'cuda\\[:N\\]', got None"):
        Synthesizer.from_pretrained(str(tiny_model_path), device=None)


def test_file_objects_and_parsed_midi_are_read(short_midi):
    import mido
    import pretty_midi

    expected = read_midi(short_midi)
    with open(short_midi, "rb") as f:
        assert read_midi(f) == expected
    assert read_midi(io.BytesIO(short_midi.read_bytes())) == expected
    assert read_midi(pretty_midi.PrettyMIDI(str(short_midi))) == expected
    assert read_midi(mido.MidiFile(short_midi)) == expected
    with (
        open(short_midi, encoding="latin-1") as f,
        pytest.raises(TypeError, match="gave str, not bytes; open it in binary mode"),
    ):
        read_midi(f)


# -- long commands stopped by a signal -----------------------------------------------------------------------------

# A `midisynth` process that sends itself `signum` once `module.function` (patched) has run `calls` times.
_SELF_SIGNALLING = """
import os, sys
import {module} as target
real, calls = target.{function}, []
def signalling(*args, **kwargs):
    result = real(*args, **kwargs)
    calls.append(1)
    if len(calls) == {calls}:
        os.kill(os.getpid(), {signum})
    return result
target.{function} = signalling
sys.argv = ["midisynth", *{args!r}]
from midisynth.cli import run
run()
"""


def _run_until_signal(signum: int, module: str, function: str, calls: int, args: list[str]):
    code = _SELF_SIGNALLING.format(module=module, function=function, calls=calls, signum=int(signum), args=args)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, preexec_fn=_default_signal_actions
    )


@pytest.mark.slow  # a fresh process
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_train_stopped_by_a_signal_saves_a_checkpoint_and_exits_128_plus_n(tmp_path, signum):
    import torch

    from tests.test_train import ROOT, _fake_dataset

    _fake_dataset(tmp_path / "ds")
    config = tmp_path / "long.toml"
    config.write_text(f'base = "{ROOT / "configs" / "tiny.toml"}"\n[train]\nmax_steps = 1000\ncheckpoint_every = 500\n')
    result = _run_until_signal(
        signum,
        "midisynth.training.diffusion",
        "Trainer.train_step",
        2,
        ["train", "--config", str(config), "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run")],
    )
    assert result.returncode == 128 + signum, result.stderr
    name = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    assert result.stderr.splitlines()[-1] == (
        f"midisynth: {name}; the run resumes from its last checkpoint in "
        f"{tmp_path / 'run'}: run the same command to continue"
    )
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 2


@pytest.mark.slow  # a fresh process, FluidSynth
@pytest.mark.skipif(not Path("/usr/share/sounds/sf2/FluidR3_GM.sf2").exists(), reason="renders with FluidSynth")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_dataset_stopped_by_a_signal_keeps_its_pieces_and_a_rerun_finishes(tmp_path, signum):
    import json

    from tests.conftest import write_midi

    (tmp_path / "midi").mkdir()
    for k in range(8):
        write_midi(tmp_path / "midi" / f"p{k}.mid", [(60 + k, 0.0, 1.0, 90)])
    root = tmp_path / "ds"
    args = ["dataset", str(root), "--midi", str(tmp_path / "midi"), "--no-generated", "--hours", "1"]
    result = _run_until_signal(signum, "midisynth.data.build", "finish_piece", 1, args)
    assert result.returncode == 128 + signum, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"midisynth: stopped by {signal.Signals(signum).name}; the pieces stored so far are kept and listed in "
        f"{root / 'manifest.json'}; run the same command to continue"
    )
    stored = sorted(p.stem for p in (root / "pieces").glob("*.json"))
    assert 1 <= len(stored) < 8
    assert sorted(piece["piece_id"] for piece in json.loads((root / "manifest.json").read_text())["pieces"]) == stored
    assert not list(root.rglob(".midisynth-*"))

    (root / "pieces" / ".midisynth-killed.part").write_bytes(b"half a piece")  # what a SIGKILL leaves
    assert run(*args).exit_code == 0
    assert not list(root.rglob(".midisynth-*"))
    assert len(json.loads((root / "manifest.json").read_text())["pieces"]) == 8


# -- reading MIDI: header first, bytes capped, one event limit -----------------------------------------------------


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, resource.getrlimit(resource.RLIMIT_AS)[1]))


@pytest.mark.slow  # a fresh process
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize("command", ["info", "tokens"])
@pytest.mark.parametrize("source", ["/dev/zero", "-"])
def test_an_endless_input_is_refused_at_its_header(command, source):
    """/dev/zero was read whole (without end: a MemoryError traceback once memory ran out)."""
    with open("/dev/zero", "rb") as zeros:
        result = subprocess.run(
            [sys.executable, "-m", "midisynth", command, source],
            stdin=zeros,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=_limit_memory,
        )
    assert (result.returncode, result.stderr) == (1, f"midisynth: {source}: not a MIDI file (bad header)\n")


def test_bytes_past_the_limit_are_not_read(tmp_path):
    from midisynth.score.midi import MidiError, SongLimits

    stream = io.BytesIO(smf(many_notes(10)) + bytes(10_000))
    with pytest.raises(
        MidiError,
        match=r"^over 640 bytes, the limit \(64 for each of the 10 MIDI events allowed: "
        r"raise it with --max-events N, or 0 for no limit\)$",
    ):
        read_midi(stream, SongLimits(max_events=10))
    assert stream.tell() == 641
    song = tmp_path / "song.mid"
    song.write_bytes(b"RIFX" + smf(many_notes(10)))
    with pytest.raises(MidiError, match=r"^not a MIDI file \(bad header\)$"):
        read_midi(song)


@pytest.mark.parametrize("command", ["info", "tokens"])
def test_info_and_tokens_have_the_event_limit_of_render(tmp_path, command):
    song = tmp_path / "dense.mid"
    song.write_bytes(smf(many_notes(3000)))  # 6001 events
    result = run(command, str(song), "--max-events", "6000")
    assert (result.exit_code, result.output) == (
        1,
        f"midisynth: {song}: over 6,000 MIDI events, the limit (raise it with --max-events N, or 0 for no limit)\n",
    )
    assert run(command, str(song)).exit_code == 0


# -- bounded batches -----------------------------------------------------------------------------------------------


def test_a_batch_size_past_the_most_is_lowered_with_a_notice(monkeypatch):
    """--batch-size 1000000 on 1 000 files rendered them all as one batch (7.4 GB)."""
    from midisynth.jobs import run as jobs_run
    from midisynth.jobs.output import audio_format
    from midisynth.jobs.plan import Job, RenderPlan

    batches = []
    monkeypatch.setattr(jobs_run, "_render_batch", lambda synth, plan, *args: batches.append(len(plan.jobs)))
    notices = []
    jobs = [Job(source=f"{k}.mid", target=f"{k}.wav", encoding=audio_format(f"{k}.wav")) for k in range(40)]
    jobs_run.run_jobs(None, RenderPlan(jobs), progress=False, batch_size=10**6, notify=notices.append)
    assert batches == [jobs_run.MAX_BATCH_SIZE, 40 - jobs_run.MAX_BATCH_SIZE] == [32, 8]
    assert notices == [
        "--batch-size 1000000 lowered to 32, the most songs generated together (each holds its song, "
        "spectrogram and open outputs in memory until the batch ends)"
    ]


# -- closed or full standard streams -------------------------------------------------------------------------------


def _midisynth(*args: str, close: int | None = None, **popen_args) -> subprocess.CompletedProcess:
    """`midisynth ARGS` in a fresh process, started with descriptor `close` closed (as `N>&-` does)."""
    return subprocess.run(
        [sys.executable, "-m", "midisynth", *args],
        text=True,
        timeout=120,
        preexec_fn=None if close is None else lambda: os.close(close),
        **popen_args,
    )


@pytest.mark.slow  # fresh processes
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["info"], ["tokens"], ["models"], ["--help"], ["info", "--help"]])
def test_a_full_standard_output_is_one_line_and_status_1(short_midi, args):
    args = [*args, str(short_midi)] if args in (["info"], ["tokens"]) else args
    with open("/dev/full", "w") as full:
        result = _midisynth(*args, stdout=full, stderr=subprocess.PIPE)
    assert (result.returncode, result.stderr) == (
        1,
        "midisynth: standard output: write failed (No space left on device)\n",
    )


@pytest.mark.slow  # fresh processes
def test_closed_standard_streams(short_midi, tmp_path):
    closed_out = _midisynth("info", str(short_midi), close=1, stderr=subprocess.PIPE)
    assert (closed_out.returncode, closed_out.stderr) == (
        1,
        "midisynth: standard output: write failed (standard output is closed)\n",
    )
    closed_err = _midisynth("info", str(short_midi), close=2, stdout=subprocess.PIPE)
    assert closed_err.returncode == 0 and closed_err.stdout.startswith(f"file: {short_midi}\n")
    assert _midisynth("info", str(tmp_path / "none.mid"), close=2, stdout=subprocess.PIPE).returncode == 1
    closed_in = _midisynth("info", "-", close=0, capture_output=True)
    assert (closed_in.returncode, closed_in.stderr) == (1, "midisynth: -: empty input (no bytes)\n")


# -- training's one-line errors ------------------------------------------------------------------------------------


@pytest.fixture
def training_data(tmp_path) -> Path:
    from tests.test_train import _fake_dataset

    _fake_dataset(tmp_path / "ds")
    return tmp_path / "ds"


def _train(data: Path, out: Path, *args: str):
    from tests.conftest import ROOT

    return run("train", "--config", str(ROOT / "configs" / "tiny.toml"), "--data", str(data), "--out", str(out), *args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "--device 'tpu': training runs on cpu or cuda[:N]"),
        (["--device", "cuda"], "--device cuda was asked for, but no CUDA GPU is available to torch"),
    ],
)
def test_training_devices_are_checked_up_front(training_data, tmp_path, args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    for command in (
        _train(training_data, tmp_path / "run", *args),
        run("train-vocoder", "--data", str(training_data), "--out", str(tmp_path / "voc"), *args),
    ):
        assert (command.exit_code, command.output) == (2, f"midisynth: {message}\n")


def test_training_arguments_that_cannot_work_are_one_line(training_data, tmp_path):
    from tests.conftest import ROOT

    assert _train(training_data, tmp_path / "run", "--threads", "-1").exit_code == 2
    tiny = str(ROOT / "configs" / "tiny.toml")
    twice = run("train", "--config", tiny, "--config", tiny, "--data", str(training_data), "--out", str(tmp_path))
    assert (twice.exit_code, twice.output) == (
        2,
        "midisynth: recipe: configs ['tiny'] appear twice; each stage needs its own run directory\n",
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    damaged = _train(training_data, tmp_path / "run")
    assert damaged.exit_code == 2 and damaged.output.count("\n") == 1
    assert damaged.output.startswith(f"midisynth: {tmp_path / 'run' / 'last.pt'}: unreadable checkpoint (")
    assert damaged.output.endswith("); restore it, or delete it to train from the start\n")


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux's /sys, where nobody may create files")
def test_an_unwritable_run_directory_is_found_before_training(training_data):
    result = _train(training_data, Path("/sys/kernel/run"))
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("midisynth: /sys/kernel/run: cannot create the output directory")


def _damage(data: Path, kind: str) -> Path:
    """Cut the first training piece's file of `kind` (features, audio, tokens or json) to half its bytes."""
    from midisynth.data.store import load_records

    first = load_records(data, "train")[0]
    path = data / "pieces" / f"{first.piece_id}.json" if kind == "json" else first.path(data, kind)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    ("kind", "command", "reason"),
    [
        ("features", "train", "truncated ("),
        ("tokens", "train", "unreadable array ("),  # cut inside its header
        ("json", "train", "unreadable piece record ("),
        ("audio", "train-vocoder", "truncated ("),
        ("json", "train-vocoder", "unreadable piece record ("),
        ("features", "fit-partials", "truncated ("),
    ],
)
def test_a_damaged_data_set_file_is_named_in_one_line_before_training(training_data, tmp_path, kind, command, reason):
    damaged = _damage(training_data, kind)
    if command == "train":
        result = _train(training_data, tmp_path / "run")
    elif command == "train-vocoder":
        result = run(command, "--data", str(training_data), "--out", str(tmp_path / "voc"), "--max-steps", "1")
    else:
        result = run(command, "--data", str(training_data), "--out", str(tmp_path / "partials.safetensors"))
    lines = [line for line in result.output.replace("\r", "\n").splitlines() if line.startswith("midisynth:")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith(f"midisynth: {damaged}: {reason}") and lines[0].endswith(
        "delete the piece's files and run `midisynth dataset` again to rebuild it"
    )
    assert not (tmp_path / "run" / "last.pt").exists()


def _config_with(tmp_path: Path, name: str, **changes: int) -> Path:
    """configs/tiny.toml with some of its whole-number fields changed, written as tmp_path/NAME.toml."""
    from tests.conftest import ROOT

    text = (ROOT / "configs" / "tiny.toml").read_text()
    for key, value in changes.items():
        text = re.sub(rf"(?m)^{key} = \d+$", f"{key} = {value}", text)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.mark.slow  # trains a run, then starts three more
def test_another_model_size_in_the_run_directory_or_init_from_is_one_line(training_data, tmp_path):
    assert _train(training_data, tmp_path / "run").exit_code == 0
    wider = str(_config_with(tmp_path, "wider", d_model=64))
    resumed = run("train", "--config", wider, "--data", str(training_data), "--out", str(tmp_path / "run"))
    assert resumed.exit_code == 2 and resumed.output.count("\n") == 1, resumed.output
    assert resumed.output.startswith(f"midisynth: {tmp_path / 'run' / 'last.pt'}: a checkpoint of another model (")
    assert "is [2048, 32] there, [2048, 64] in this model" in resumed.output
    weights = tmp_path / "run" / "model.safetensors"
    started = run(
        "train",
        "--config",
        wider,
        "--data",
        str(training_data),
        "--out",
        str(tmp_path / "wide"),
        "--init-from",
        str(weights),
    )
    assert started.exit_code == 2 and started.output.count("\n") == 1, started.output
    assert started.output.startswith(f"midisynth: {weights}: weights of another model size than the config's (")
    deeper = str(_config_with(tmp_path, "deeper", num_decoder_layers=3))
    started = run(
        "train",
        "--config",
        deeper,
        "--data",
        str(training_data),
        "--out",
        str(tmp_path / "deep"),
        "--init-from",
        str(weights),
    )
    assert started.exit_code == 0, started.output  # layers only the config has start from their initial values


def test_a_data_set_with_fewer_windows_than_a_batch_is_one_line(tmp_path):
    from midisynth.training.vocoder import VocoderTrainConfig, VocoderTrainer
    from tests.test_train import _fake_dataset

    _fake_dataset(tmp_path / "small", pieces=1)  # one training piece of 2 windows: a batch of 8 never fills
    with pytest.raises(ValueError, match="2 training windows, fewer than one batch of 8; add pieces or lower"):
        VocoderTrainer(tmp_path / "small", tmp_path / "voc", VocoderTrainConfig(max_steps=1))
    result = run("train-vocoder", "--data", str(tmp_path / "small"), "--out", str(tmp_path / "voc"), "--max-steps", "1")
    assert (result.exit_code, result.output) == (
        2,
        f"midisynth: {tmp_path / 'small'}: 2 training windows, fewer than "
        "one batch of 8; add pieces or lower batch_size\n",
    )
    big_batch = str(_config_with(tmp_path, "big_batch", batch_size=4))
    result = run("train", "--config", big_batch, "--data", str(tmp_path / "small"), "--out", str(tmp_path / "run"))
    assert (result.exit_code, result.output) == (
        2,
        f"midisynth: {tmp_path / 'small'}: 2 training windows, fewer than "
        "one batch of 4; add pieces or lower batch_size\n",
    )
    (tmp_path / "empty" / "pieces").mkdir(parents=True)
    result = run("train-vocoder", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "voc"))
    assert (result.exit_code, result.output) == (
        2,
        f"midisynth: {tmp_path / 'empty'}: no 'train' pieces (build it with `midisynth dataset`)\n",
    )
