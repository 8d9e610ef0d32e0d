"""`midisynth render` under bad input and bad outputs: a malformed corpus in one batch, disk full, stdout closed
early, unusable output directories, the event limit, and bit-identical output for the same seed."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from midisynth.constants import HOP_LENGTH, SAMPLE_RATE
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
    result = run("render", str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model_path), *FAST,
                 *CORPUS_LIMITS, "--batch-size", batch_size)

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
    for expected in ("--max-events", "--max-duration", "SMPTE", "tempo of 0", "not a MIDI file", "truncated",
                     "empty file"):
        assert expected in messages
    with capsys.disabled():
        print(f"\nmalformed corpus, --batch-size {batch_size}: {len(inputs)} files tried, {len(failed)} clear "
              f"one-line errors, {len(rendered)} rendered; no traceback, no partial or temporary file")


def test_batch_summary_counts_failures(tiny_model_path, short_midi, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "good.mid").write_bytes(short_midi.read_bytes())
    (tmp_path / "in" / "bad.mid").write_bytes(b"MThd")
    result = run("render", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path),
                 *[arg for arg in FAST if arg != "-q"])
    assert result.exit_code == 1
    assert "bad.mid: truncated header" in result.output
    assert "1 of 2 rendered, 1 failed" in result.output


def test_event_limit_is_checked_before_parsing(tiny_model_path, tmp_path, monkeypatch):
    import pretty_midi

    song = tmp_path / "dense.mid"
    song.write_bytes(smf(many_notes(3000)))  # 6001 events
    monkeypatch.setattr(pretty_midi, "PrettyMIDI", None)  # parsing would fail with a TypeError
    result = run("render", str(song), "-o", str(tmp_path / "o.wav"), "--model", str(tiny_model_path), *FAST,
                 "--max-events", "6000")
    assert result.exit_code == 1
    assert result.output.strip() == (f"midisynth: {song}: over 6,000 MIDI events, the limit (raise it with "
                                     "--max-events N, or 0 for no limit)")
    assert not (tmp_path / "o.wav").exists()


def test_same_seed_gives_identical_bytes(tiny_model_path, short_midi, tmp_path):
    def render(name: str, seed: str) -> bytes:
        result = run("render", str(short_midi), "-o", str(tmp_path / name), "--model", str(tiny_model_path), *FAST,
                     "--seed", seed)
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


@pytest.mark.parametrize("extension", [".wav", ".flac"])
def test_write_error_gives_one_line_and_no_file(tiny_model_path, two_window_midi, tmp_path, extension):
    """A file size limit makes the OS refuse writes mid-render, as a full disk does."""
    out = tmp_path / f"out{extension}"
    proc = _render_process(two_window_midi, str(out), tiny_model_path, preexec_fn=_limit_file_size)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert stderr.decode() == f"midisynth: {two_window_midi}: {out}: write failed (File too large)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [two_window_midi.name]


def test_full_disk_behind_stdout(tiny_model_path, two_window_midi):
    with open("/dev/full", "wb") as full:
        proc = _render_process(two_window_midi, "-", tiny_model_path, stdout=full)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert stderr.decode() == (f"midisynth: {two_window_midi}: standard output: write failed "
                               "(No space left on device)\n")


def test_stdout_closed_early(tiny_model_path, two_window_midi):
    """As `midisynth render song.mid -o - | head -c 100`: 7 s of audio (224 kB) overflow the pipe's buffer."""
    proc = _render_process(two_window_midi, "-", tiny_model_path, stdout=subprocess.PIPE)
    assert proc.stdout.read(100)[:4] == b"RIFF"
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert stderr.decode() == (f"midisynth: {two_window_midi}: standard output was closed before the audio was "
                               "complete\n")


def test_unusable_output_directories(tiny_model_path, short_midi, tmp_path):
    (tmp_path / "file").write_bytes(b"")
    in_the_way = tmp_path / "file" / "song.wav"
    result = run("render", str(short_midi), "-o", str(in_the_way), "--model", str(tiny_model_path), *FAST)
    assert result.exit_code == 1
    assert result.output == (f"midisynth: {short_midi}: {in_the_way}: cannot create the output directory "
                             f"{in_the_way.parent} (a file has that name)\n")
    created = tmp_path / "new" / "sub" / "song.wav"
    assert run("render", str(short_midi), "-o", str(created), "--model", str(tiny_model_path), *FAST).exit_code == 0
    assert sf.info(created).frames > 0


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux's /sys, where nobody may create files")
def test_unwritable_output_directory(tiny_model_path, short_midi):
    result = run("render", str(short_midi), "-o", "/sys/song.wav", "--model", str(tiny_model_path), *FAST)
    assert result.exit_code == 1
    assert result.output == f"midisynth: {short_midi}: /sys/song.wav: write failed (Permission denied)\n"

