"""The command line: outputs, exit codes, stdout streaming, batches, and that --help stays light."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from midisynth.audio import log_mel
from midisynth.cli import app
from midisynth.constants import HOP_LENGTH, SAMPLE_RATE
from midisynth.jobs.plan import UsageError, plan_jobs
from tests.conftest import FAST


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def test_help_does_not_import_torch():
    code = "import sys, midisynth.cli; assert 'torch' not in sys.modules, 'torch imported at start-up'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_render_file(tiny_model_path, short_midi, tmp_path):
    out = tmp_path / "out.wav"
    result = run("render", str(short_midi), "-o", str(out), "--model", str(tiny_model_path), *FAST)
    assert result.exit_code == 0, result.output
    audio, rate = sf.read(out)
    assert rate == SAMPLE_RATE
    assert audio.shape[0] % HOP_LENGTH == 0 and audio.shape[0] >= int(1.5 * SAMPLE_RATE)
    assert np.abs(audio).max() > 0


def test_render_stdin_to_stdout(tiny_model_path, short_midi):
    result = run("render", "-", "-o", "-", "--model", str(tiny_model_path), *FAST, input=short_midi.read_bytes())
    assert result.exit_code == 0
    audio, rate = sf.read(io.BytesIO(result.stdout_bytes))
    assert rate == SAMPLE_RATE and audio.shape[0] > SAMPLE_RATE


def test_mel_out(tiny_model_path, short_midi, tmp_path):
    mel = tmp_path / "mel.npy"
    result = run(
        "render",
        str(short_midi),
        "-o",
        str(tmp_path / "a.wav"),
        "--mel-out",
        str(mel),
        "--model",
        str(tiny_model_path),
        *FAST,
    )
    assert result.exit_code == 0, result.output
    features = np.load(mel)
    assert features.shape[1] == 128
    assert features.shape[0] * HOP_LENGTH == sf.info(tmp_path / "a.wav").frames


def test_batch_directory_mirrors_tree_and_survives_bad_file(tiny_model_path, short_midi, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "a.mid").write_bytes(short_midi.read_bytes())
    (src / "sub" / "b.mid").write_bytes(short_midi.read_bytes())
    (src / "sub" / "bad.mid").write_bytes(b"this is not a MIDI file")
    out = tmp_path / "out"
    result = run("render", str(src), "-o", str(out), "--model", str(tiny_model_path), *FAST)
    assert result.exit_code == 1
    assert (out / "a.wav").exists() and (out / "sub" / "b.wav").exists()
    assert not (out / "sub" / "bad.wav").exists()
    assert "bad.mid" in result.output and "Traceback" not in result.output
    assert not list(out.rglob("*.part"))


def test_existing_output_needs_overwrite_or_skip(tiny_model_path, short_midi, tmp_path):
    out = tmp_path / "x.wav"
    out.write_bytes(b"keep me")
    args = ("render", str(short_midi), "-o", str(out), "--model", str(tiny_model_path), *FAST)
    result = run(*args)
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert out.read_bytes() == b"keep me"
    assert run(*args, "--overwrite").exit_code == 0 and sf.info(out).samplerate == SAMPLE_RATE
    rendered = out.read_bytes()
    skipped = run(*[arg for arg in args if arg != "-q"], "--skip-existing")
    assert skipped.exit_code == 0 and out.read_bytes() == rendered
    assert skipped.output == "midisynth: nothing to do: every output exists (--skip-existing)\n"


def test_usage_errors_exit_2(tmp_path, short_midi):
    assert run("render", str(tmp_path / "missing.mid"), "-o", str(tmp_path / "o.wav")).exit_code == 2
    assert (
        run("render", str(short_midi), "-o", str(tmp_path / "o.wav"), "--model", str(tmp_path / "nope")).exit_code == 2
    )
    assert run("render", str(short_midi), "--sampler", "magic", "-o", str(tmp_path / "o.wav")).exit_code == 2


def test_tokens_json_and_info(two_window_midi):
    result = run("tokens", str(two_window_midi), "--json")
    assert result.exit_code == 0
    windows = json.loads(result.stdout)
    assert len(windows) == 2 and all(w[-1] == 1 for w in windows)
    info = run("info", str(two_window_midi))
    assert info.exit_code == 0
    assert "duration: 6.00 s" in info.stdout and "windows: 2" in info.stdout and "Acoustic Grand Piano" in info.stdout


def test_bad_midi_one_line_exit_1(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00")
    result = run("tokens", str(bad))
    assert result.exit_code == 1
    assert "bad.mid" in result.output and "Traceback" not in result.output


def test_plan_jobs(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/x.mid", "d/e/y.MIDI", "d/skip.txt", "z.mid"):
        (tmp_path / name).write_bytes(b"")
    jobs = plan_jobs([str(tmp_path / "d"), str(tmp_path / "z.mid")], str(tmp_path / "out"))
    assert [Path(j.target).relative_to(tmp_path / "out").as_posix() for j in jobs] == ["e/y.wav", "x.wav", "z.wav"]
    assert plan_jobs([str(tmp_path / "z.mid")], None)[0].target == str(tmp_path / "z.wav")
    for bad in (([str(tmp_path / "d")], "-"), (["-"], None), (["-", "-"], "o")):
        try:
            plan_jobs(*bad)
        except UsageError:
            continue
        raise AssertionError(f"no UsageError for {bad}")


def test_one_function_finds_midi_files_for_render_eval_and_datasets(tmp_path):
    """Batches, `midisynth eval` and user data sets all take a directory's MIDI files from `find_midi_files`:
    the four suffixes in any case, at any depth, files only, sorted."""
    from midisynth.data.sources import folder_pieces
    from midisynth.score.midi_files import find_midi_files
    from tests.conftest import write_midi

    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "folder.mid").mkdir()  # a directory with a MIDI suffix is not a file
    for name in ("d/a.mid", "d/e/b.MIDI", "d/c.smf", "d/e/d.KAR", "d/notes.txt", "d/x.midi.bak"):
        write_midi(tmp_path / name, [(60, 0.0, 0.5, 90)])
    found = [p.relative_to(tmp_path / "d").as_posix() for p in find_midi_files(tmp_path / "d")]
    assert found == ["a.mid", "c.smf", "e/b.MIDI", "e/d.KAR"]
    assert [
        Path(j.source).relative_to(tmp_path / "d").as_posix() for j in plan_jobs([str(tmp_path / "d")], "o")
    ] == found
    assert [name for name, _ in folder_pieces(tmp_path / "d")] == ["user-a", "user-c", "user-e-b", "user-e-d"]


def test_batch_size_renders_every_file(tiny_model_path, short_midi, two_window_midi, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for k, midi in enumerate([short_midi, two_window_midi]):
        (src / f"s{k}.mid").write_bytes(midi.read_bytes())
    (src / "broken.mid").write_bytes(b"MThd junk")
    single, batched = tmp_path / "single", tmp_path / "batched"
    common = ("--model", str(tiny_model_path), *FAST)
    assert run("render", str(src), "-o", str(single), *common).exit_code == 1
    result = run("render", str(src), "-o", str(batched), "--batch-size", "3", *common)
    assert result.exit_code == 1 and "broken.mid" in result.output
    for k in range(2):
        a, _ = sf.read(single / f"s{k}.wav", dtype="float32")
        b, _ = sf.read(batched / f"s{k}.wav", dtype="float32")
        assert a.shape == b.shape
        # Batching changes float rounding only (see test_batching_changes_only_float_rounding); Griffin-Lim can
        # turn a 1e-5 spectrogram difference into a few 1e-3 on single samples, so the audio is compared as heard:
        # the log-mel spectra of the two files (measured: 5e-6 mean difference).
        heard_a, heard_b = log_mel(torch.from_numpy(a)), log_mel(torch.from_numpy(b))
        assert (heard_a - heard_b).abs().mean() < 1e-3


def test_overlong_song_is_refused_with_the_flag_named(tiny_model_path, tmp_path):
    from tests.conftest import write_midi

    long_song = write_midi(tmp_path / "long.mid", [(60, 0.0, 1.0, 90), (62, 7199.0, 7200.0, 90)])
    result = run(
        "render",
        str(long_song),
        "-o",
        str(tmp_path / "o.wav"),
        "--model",
        str(tiny_model_path),
        "--max-duration",
        "3600",
        *FAST,
    )
    assert result.exit_code == 1
    assert "--max-duration" in result.output and "2.00 h" in result.output
    assert not (tmp_path / "o.wav").exists()


def test_shard_splits_jobs_exactly(tmp_path):
    from midisynth.jobs.plan import parse_shard, shard

    (tmp_path / "d").mkdir()
    for k in range(7):
        (tmp_path / "d" / f"{k}.mid").write_bytes(b"")
    jobs = plan_jobs([str(tmp_path / "d")], str(tmp_path / "o"))
    parts = [shard(jobs, *parse_shard(f"{i}/3")) for i in (1, 2, 3)]
    assert sorted(j.source for p in parts for j in p) == sorted(j.source for j in jobs)
    assert [len(p) for p in parts] == [3, 2, 2]
    for bad in ("0/3", "4/3", "x/3", "3"):
        try:
            parse_shard(bad)
        except UsageError:
            continue
        raise AssertionError(bad)


def test_convert_diffusers_checkpoint(tmp_path):
    import pytest

    pytest.importorskip("diffusers", reason="needs diffusers==0.35.2 to write the source checkpoint")
    from midisynth.model.checkpoints import file_sha256, load_model_file
    from midisynth.model.config import load_config
    from tests.conftest import ROOT
    from tests.reference import save_reference_checkpoint

    save_reference_checkpoint(tmp_path / "ckpt", load_config(ROOT / "configs" / "tiny.toml").model)
    result = run("convert", str(tmp_path / "ckpt"), str(tmp_path / "m.safetensors"))
    assert result.exit_code == 0, result.output
    digest = result.stdout.split()[0]
    assert digest == file_sha256(tmp_path / "m.safetensors")
    assert load_model_file(tmp_path / "m.safetensors", expected_sha256=digest).model.cfg.d_model == 32
    assert run("convert", str(tmp_path / "nothing"), str(tmp_path / "x.safetensors")).exit_code == 1


def test_sample_rate_and_excerpt(tiny_model_path, two_window_midi, tmp_path):
    out = tmp_path / "o.flac"
    result = run(
        "render",
        str(two_window_midi),
        "-o",
        str(out),
        "--model",
        str(tiny_model_path),
        "-r",
        "44100",
        "--start",
        "1.0",
        "--end",
        "3.0",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    info = sf.info(out)
    assert info.samplerate == 44100 and info.format == "FLAC"
    # 2 s excerpt + 1 s release tail at 50 frames/s, resampled: 150 frames * 320 samples * 44100 / 16000
    assert info.frames == round(150 * HOP_LENGTH * 44100 / 16000)
    piped = run(
        "render",
        "-",
        "-o",
        "-",
        "--model",
        str(tiny_model_path),
        "-r",
        "22050",
        *FAST,
        input=two_window_midi.read_bytes(),
    )
    audio, rate = sf.read(io.BytesIO(piped.stdout_bytes))
    assert rate == 22050 and audio.shape[0] == round(350 * HOP_LENGTH * 22050 / 16000)


def test_the_console_command_exits_with_the_commands_status_after_flushing(monkeypatch, capsys, tmp_path):
    """`midisynth` (cli.run) skips the interpreter's teardown with os._exit, with the status the command meant:
    0 for success, 2 for a usage error, 1 for an unreadable input; what the command printed is flushed first."""
    from midisynth import cli, standard_streams

    class Exited(Exception):
        pass

    def fake_exit(status):
        raise Exited(status)

    monkeypatch.setattr(standard_streams.os, "_exit", fake_exit)
    for argv, status, printed in (
        (["--version"], 0, "midisynth "),
        (["render"], 2, "Missing argument"),
        (["info", str(tmp_path / "missing.mid")], 1, "missing.mid"),
    ):
        monkeypatch.setattr(sys, "argv", ["midisynth", *argv])
        with pytest.raises(Exited) as exited:
            cli.run()
        assert exited.value.args == (status,)
        out = capsys.readouterr()
        assert printed in out.out + out.err
