"""Playing as it renders (midisynth.jobs.play) through a stand-in sound card that records what it is given
(tests/clocked_output.py), the `play` command and its one-line errors, and, where sounddevice and ALSA are
installed, playback through ALSA's null device."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from midisynth.cli import app
from midisynth.constants import SAMPLE_RATE
from midisynth.jobs import sound_card
from midisynth.jobs.play import PlaybackError, play, play_song
from midisynth.model.resolve import bundled_manifest
from midisynth.render.pipeline import RenderOptions, Synthesizer
from midisynth.score.midi import read_midi
from tests.clocked_output import ClockedOutput, StandInCard
from tests.conftest import FAST, ROOT, write_midi

EXAMPLE_SONG = ROOT / "midisynth" / "assets" / "examples" / "example.mid"  # the README's Quickstart renders it


def noise_chunks(count: int, samples: int = 8000, seed: int = 0) -> list[np.ndarray]:
    """`count` chunks of noise (never exactly 0, so the song's samples can be told from inserted silence)."""
    rng = np.random.default_rng(seed)
    return [(rng.random(samples, np.float32) + 0.1) for _ in range(count)]


def slowly(chunks: list[np.ndarray], seconds: float):
    """The chunks, each after `seconds` of 'rendering'."""
    for chunk in chunks:
        time.sleep(seconds)
        yield chunk


def test_plays_every_sample_in_order_then_silence():
    chunks = noise_chunks(5)
    out = ClockedOutput(speed=50)
    report = play(iter(chunks), out)
    song = np.concatenate(chunks)
    assert report.samples == len(song) and report.underruns == 0 and report.silence_seconds == 0
    assert np.array_equal(out.audio[: len(song)], song) and not out.audio[len(song) :].any()
    assert out.drained is True and not out.active


def test_playback_starts_with_the_first_chunk_not_the_last():
    chunks = noise_chunks(4, samples=SAMPLE_RATE)  # 1 s each, the pre-roll and more
    out = ClockedOutput(speed=10)
    began = time.monotonic()
    report = play(slowly(chunks, 0.05), out)
    assert out.blocks[0][0] - began < 0.1  # the first chunk's 0.05 s, not the four chunks' 0.2 s
    assert report.start_seconds < 0.1 and report.underruns == 0
    assert report.min_headroom_seconds is not None and report.min_headroom_seconds > 0


def test_a_render_that_falls_behind_leaves_counted_gaps_and_the_song_goes_on():
    chunks = noise_chunks(4, samples=SAMPLE_RATE // 2)  # 0.5 s each, played in 0.05 s
    out = ClockedOutput(speed=10)
    report = play(slowly(chunks, 0.15), out)
    assert report.underruns == 3 and report.silence_seconds > 0 and report.min_headroom_seconds == 0
    audio = out.audio
    assert np.array_equal(audio[audio != 0], np.concatenate(chunks))  # every sample, in order, around the gaps
    assert "ran out of rendered audio 3 times" in report.warning


def test_the_render_waits_while_enough_audio_is_buffered():
    chunk = SAMPLE_RATE // 10  # 0.1 s
    out = ClockedOutput(speed=5)
    ahead = []  # samples buffered when each chunk was made

    def endless():
        made = 0
        while made < 40 * chunk:
            ahead.append(made - sum(len(block) for _, block in list(out.blocks)))
            made += chunk
            yield np.ones(chunk, np.float32)

    play(endless(), out, preroll_seconds=0.1, ahead_seconds=0.5)
    assert max(ahead) <= 0.5 * SAMPLE_RATE + chunk


def test_an_exception_in_the_render_stops_the_output_at_once_and_leaves_no_thread():
    threads = threading.active_count()

    def interrupted():
        yield from noise_chunks(2)
        raise KeyboardInterrupt

    out = ClockedOutput(speed=1)
    with pytest.raises(KeyboardInterrupt):
        play(interrupted(), out)
    assert out.drained is False and not out.active and threading.active_count() == threads


def test_ctrl_c_while_waiting_for_the_output_stops_it_promptly():
    """SIGINT may reach any thread; the render thread, waiting on the buffer, still hears it within a poll."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = ClockedOutput(speed=1)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        began = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            play(iter(noise_chunks(100)), out, ahead_seconds=1.0)  # 50 s of audio: waits on the output
        assert time.monotonic() - began < 0.6
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert out.drained is False and not out.active


def test_an_output_that_stops_before_the_end_is_an_error_not_a_hang():
    class Silent:
        sample_rate, active = SAMPLE_RATE, False

        def start(self, fill):
            pass

        def stop(self, drain):
            self.drained = drain

    output = Silent()
    with pytest.raises(PlaybackError, match="stopped before the song ended"):
        play(iter(noise_chunks(2)), output)
    assert output.drained is False


@pytest.fixture
def tiny_synth(tiny_model_path) -> Synthesizer:
    options = RenderOptions(sampler="ddim", steps=2, guidance=1.0, precision="fp32")
    return Synthesizer.from_pretrained(str(tiny_model_path), device="cpu", options=options)


def test_play_song_plays_exactly_what_render_renders(tiny_synth, two_window_midi):
    song = read_midi(two_window_midi)
    rendered = tiny_synth.render(song)
    out = ClockedOutput(speed=50)
    report = play_song(tiny_synth, song, out, preroll_seconds=60)  # starts once rendered: no gap can come
    assert report.samples == len(rendered)
    assert np.array_equal(out.audio[: len(rendered)], rendered)


def test_play_song_resamples_to_the_output_rate(tiny_synth, short_midi):
    song = read_midi(short_midi)
    out = ClockedOutput(sample_rate=48_000, speed=50)
    report = play_song(tiny_synth, song, out, preroll_seconds=60)
    assert report.samples == round(tiny_synth.num_samples(song) * 3)


@pytest.mark.slow  # plays the example song at real-time pace: 10 s
@pytest.mark.skipif(bundled_manifest() is None, reason="no bundled model installed")
def test_example_song_starts_within_a_second_without_underrun_at_default_settings():
    synth = Synthesizer.from_pretrained()
    song = read_midi(EXAMPLE_SONG)
    rendered = synth.render(song)  # also the warm-up a loaded model has had
    out = ClockedOutput()
    began = time.monotonic()
    report = play_song(synth, song, out)
    assert out.blocks[0][0] - began < 1.0
    assert report.underruns == 0, report.warning
    assert np.array_equal(out.audio[: report.samples], rendered)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_the_play_command_plays_what_render_writes(tiny_model_path, short_midi, tmp_path, monkeypatch):
    monkeypatch.setattr(sound_card, "SoundCard", StandInCard)
    monkeypatch.setattr(StandInCard, "speed", 8.0)
    monkeypatch.setattr(StandInCard, "opened", [])
    result = run("play", str(short_midi), "--model", str(tiny_model_path), *FAST[:-1])  # not -q
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"midisynth: playing {short_midi} (1.5 s) on a stand-in at 16000 Hz\n")
    wav = tmp_path / "song.wav"
    assert (
        run(
            "render", str(short_midi), "-o", str(wav), "--bit-depth", "32f", "--model", str(tiny_model_path), *FAST
        ).exit_code
        == 0
    )
    rendered, _ = sf.read(wav, dtype="float32")
    played = np.clip(StandInCard.opened[0].audio, -1.0, 1.0)  # as the file (and a sound card) hold them
    # The same samples in the same order; a machine too busy to keep ahead of the stand-in puts silence between.
    assert np.array_equal(played[played != 0], rendered[rendered != 0])


def fake_sounddevice(query_devices) -> types.ModuleType:
    module = types.ModuleType("sounddevice")
    module.PortAudioError = type("PortAudioError", (Exception,), {})
    module.query_devices = query_devices
    return module


def test_a_device_that_refuses_16_khz_mono_gets_stereo_at_its_own_rate(monkeypatch):
    class Stream:
        def __init__(self, **settings):
            self.settings, self.active = settings, False

        def start(self):
            self.active = True

    def check_output_settings(device, channels, dtype, samplerate):
        if (samplerate, channels) != (48_000, 2):
            raise sounddevice.PortAudioError("Invalid sample rate")

    sounddevice = fake_sounddevice(
        lambda device=None, kind=None: {"name": "hw:0,0", "index": 3, "hostapi": 0, "default_samplerate": 48_000.0}
    )
    sounddevice.query_hostapis = lambda index: {"name": "ALSA"}
    sounddevice.check_output_settings, sounddevice.OutputStream = check_output_settings, Stream
    monkeypatch.setitem(sys.modules, "sounddevice", sounddevice)
    card = sound_card.SoundCard()
    assert (card.name, card.sample_rate) == ("hw:0,0 (ALSA)", 48_000)
    settings = card._stream.settings
    assert (settings["device"], settings["channels"], settings["samplerate"]) == (3, 2, 48_000)
    card.start(lambda block: block.__setitem__(slice(None), np.arange(len(block))))
    stereo = np.zeros((4, 2), np.float32)
    settings["callback"](stereo, 4, None, None)  # as PortAudio's thread calls it
    assert card.active and np.array_equal(stereo, [[0, 0], [1, 1], [2, 2], [3, 3]])


def test_no_audio_device_is_one_line_and_exit_1(short_midi, monkeypatch):
    def no_device(device=None, kind=None):
        raise sounddevice.PortAudioError("Error querying device -1")

    sounddevice = fake_sounddevice(no_device)
    monkeypatch.setitem(sys.modules, "sounddevice", sounddevice)
    result = run("play", str(short_midi))
    assert result.exit_code == 1
    assert result.output == (
        "midisynth: no audio output device to play on (PortAudio finds none); render to a file "
        "instead: midisynth render SONG -o song.wav\n"
    )


def test_an_unknown_audio_device_is_one_line(short_midi, monkeypatch):
    def named(device=None, kind=None):
        raise ValueError(f"No output device matching {device!r}")

    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice(named))
    result = run("play", str(short_midi), "--audio-device", "speakers")
    assert result.exit_code == 1
    assert result.output == (
        "midisynth: No output device matching 'speakers' (python -m sounddevice lists the devices)\n"
    )


def test_without_sounddevice_play_says_what_to_install(short_midi, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails
    result = run("play", str(short_midi))
    assert result.exit_code == 2
    assert result.output == "midisynth: play needs sounddevice: pip install 'midisynth[play]'\n"


def test_without_portaudio_play_says_what_to_install(short_midi, monkeypatch):
    def no_library(module, extra, feature):
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(sound_card, "import_extra", no_library)
    result = run("play", str(short_midi))
    assert result.exit_code == 2
    assert result.output.startswith(
        "midisynth: play needs the PortAudio library (PortAudio library not found): apt-get install libportaudio2"
    )
    assert result.output.count("\n") == 1


def test_play_refuses_bad_input_before_opening_a_sound_card(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # would fail, if it were reached
    assert run("play", str(tmp_path / "missing.mid")).output == f"midisynth: {tmp_path / 'missing.mid'}: no such file\n"
    song = write_midi(tmp_path / "song.mid", [(60, 0.0, 1.0, 100)])
    result = run("play", str(song), "--start", "2", "--end", "1")
    assert result.exit_code == 2 and "must be after --start" in result.output


def test_play_help_loads_neither_torch_nor_sounddevice():
    code = (
        "import sys\nfrom midisynth.cli import app\ntry:\n    app(['play', '--help'])\nexcept SystemExit:\n    pass\n"
        "loaded = {'torch', 'sounddevice'} & set(sys.modules)\nassert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=ROOT)


# ALSA's null device takes every block at once, at no pace: it shows that playback opens, runs and closes a real
# PortAudio stream, not that it keeps time.
ALSA_NULL_CONFIG = "</usr/share/alsa/alsa.conf>\npcm.!default { type null }\n"


def real_sounddevice() -> types.ModuleType:
    """The sounddevice module, or a skip where it (the play extra) or the PortAudio library is missing."""
    try:
        import sounddevice
    except (ImportError, OSError) as err:
        pytest.skip(f"no sounddevice on PortAudio here ({err})")
    return sounddevice


def alsa_null(tmp_path: Path) -> dict[str, str]:
    """The environment of a process whose default ALSA output is the null device."""
    real_sounddevice()
    if not sys.platform.startswith("linux") or not Path("/usr/share/alsa/alsa.conf").is_file():
        pytest.skip("ALSA is not installed (its null device is the test's sound card)")
    config = tmp_path / "asound.conf"
    config.write_text(ALSA_NULL_CONFIG)
    return {**os.environ, "ALSA_CONFIG_PATH": str(config)}


def play_process(midi: Path, model: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "midisynth.cli", "play", str(midi), "--model", str(model), *args],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.slow  # a fresh process
def test_plays_through_the_alsa_null_device(tiny_model_path, short_midi, tmp_path):
    proc = play_process(short_midi, tiny_model_path, *FAST, env=alsa_null(tmp_path))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and stderr == "", stderr


@pytest.mark.slow  # a fresh process
def test_ctrl_c_stops_play_with_status_130(tiny_model_path, tmp_path):
    song = write_midi(tmp_path / "long.mid", [(60 + i % 12, i * 0.5, i * 0.5 + 0.4, 100) for i in range(240)])
    proc = play_process(song, tiny_model_path, "--steps", "200", "--precision", "fp32", env=alsa_null(tmp_path))
    assert proc.stderr.readline().startswith(f"midisynth: playing {song}")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT
    assert stderr == "midisynth: interrupted; playback stopped\n"


@pytest.mark.slow  # a fresh process
def test_no_sound_card_is_one_line_with_real_portaudio(short_midi, tmp_path):
    if any(device["max_output_channels"] for device in real_sounddevice().query_devices()):
        pytest.skip("this machine has an audio output device")
    proc = subprocess.run(
        [sys.executable, "-m", "midisynth.cli", "play", str(short_midi)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "no audio output device" in proc.stderr
