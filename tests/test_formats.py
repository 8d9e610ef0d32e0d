"""Output formats and bit depths, loudness normalisation, stems, plots, and the render command's help."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
from typer.testing import CliRunner

from midisynth.cli import app
from midisynth.constants import SAMPLE_RATE
from midisynth.jobs.loudness import PEAK_CEILING_DBFS, LoudnessMeter, limited_blocks
from midisynth.jobs.output import OutputError, OutputSettings, audio_format, wav_header
from midisynth.jobs.plan import Job
from midisynth.jobs.plot import AXIS_INCHES, DPI, LANE_INCHES, SPECTROGRAM_INCHES, WIDTH_INCHES
from midisynth.jobs.run import JobOutputs
from midisynth.score.midi import Song, read_midi
from midisynth.score.stems import instruments, stem_path
from tests.conftest import FAST, SHORT_NOTES, write_midi

pyloudnorm = pytest.importorskip("pyloudnorm")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUANTUM = {"PCM_16": 2**-15, "PCM_24": 2**-23, "FLOAT": 0.0}  # one step of each sample format (full scale 1.0)


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def render(midi: Path, out: str | Path, model: Path, *extra: str):
    result = run("render", str(midi), "-o", str(out), "--model", str(model), *FAST, *extra)
    assert result.exit_code == 0, result.output
    return result


def lufs(path: Path) -> float:
    audio, rate = sf.read(path)
    return pyloudnorm.Meter(rate).integrated_loudness(audio)


def _reference(tiny_model_path: Path, folder: Path, rate: int) -> Path:
    """conftest's short_midi rendered at `rate` Hz as 32-bit float WAV: what every format holds, to its precision."""
    midi = write_midi(folder / "short.mid", SHORT_NOTES)
    render(midi, folder / "reference.wav", tiny_model_path, "-r", str(rate), "--bit-depth", "32f")
    return folder / "reference.wav"


@pytest.fixture(scope="module")
def reference_16000(tiny_model_path, tmp_path_factory) -> Path:
    return _reference(tiny_model_path, tmp_path_factory.mktemp("reference"), 16000)


@pytest.fixture(scope="module")
def reference_22050(tiny_model_path, tmp_path_factory) -> Path:
    return _reference(tiny_model_path, tmp_path_factory.mktemp("reference"), 22050)


@pytest.fixture
def band_midi(tmp_path) -> Path:
    """Piano (program 0, 0-2.5 s), fingered bass (program 33) and drums: three instruments, 2.5 s."""
    pm = pretty_midi.PrettyMIDI()
    parts = [
        (0, False, [(60, 0.0, 1.0), (64, 0.5, 1.5), (67, 1.0, 2.5)]),
        (33, False, [(36, 0.0, 2.0)]),
        (0, True, [(36, 0.0, 0.1), (38, 0.5, 0.6), (42, 1.0, 1.1)]),
    ]
    for program, is_drum, notes in parts:
        inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
        inst.notes = [pretty_midi.Note(velocity=100, pitch=p, start=s, end=e) for p, s, e in notes]
        pm.instruments.append(inst)
    path = tmp_path / "band.mid"
    pm.write(str(path))
    return path


# -- formats -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "extra", "container", "subtype"),
    [
        ("a.wav", [], "WAV", "PCM_16"),
        ("a.wav", ["--bit-depth", "24"], "WAV", "PCM_24"),
        ("a.wav", ["--bit-depth", "32f"], "WAV", "FLOAT"),
        ("a.flac", [], "FLAC", "PCM_16"),
        ("a.flac", ["--bit-depth", "24"], "FLAC", "PCM_24"),
        ("a.ogg", [], "OGG", "VORBIS"),
        ("a.audio", ["--format", "flac"], "FLAC", "PCM_16"),  # an unknown extension takes --format's container
    ],
)
def test_formats_round_trip(tiny_model_path, short_midi, tmp_path, reference_22050, name, extra, container, subtype):
    reference = reference_22050
    out = tmp_path / name
    render(short_midi, out, tiny_model_path, "-r", "22050", *extra)
    info, expected = sf.info(out), sf.info(reference)
    assert (info.format, info.subtype, info.samplerate, info.frames) == (container, subtype, 22050, expected.frames)
    audio, ref = sf.read(out)[0], sf.read(reference)[0]
    if subtype == "VORBIS":  # lossy: the same sound, not the same samples
        assert np.corrcoef(audio, ref)[0, 1] > 0.9
    else:
        np.testing.assert_allclose(audio, ref, atol=QUANTUM[subtype] + 1e-6)


def test_format_names_the_extension_of_directory_outputs(tiny_model_path, short_midi, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.mid").write_bytes(short_midi.read_bytes())
    render(src, tmp_path / "out", tiny_model_path, "--format", "flac", "--bit-depth", "24")
    assert sf.info(tmp_path / "out" / "x.flac").subtype == "PCM_24"


@pytest.mark.parametrize(("depth", "subtype"), [("16", "PCM_16"), ("24", "PCM_24"), ("32f", "FLOAT")])
def test_stdout_stream_takes_the_bit_depth(tiny_model_path, short_midi, reference_16000, depth, subtype):
    piped = run(
        "render",
        "-",
        "-o",
        "-",
        "--model",
        str(tiny_model_path),
        *FAST,
        "--bit-depth",
        depth,
        input=short_midi.read_bytes(),
    )
    assert piped.exit_code == 0
    streamed, rate = sf.read(io.BytesIO(piped.stdout_bytes))
    assert sf.info(io.BytesIO(piped.stdout_bytes)).subtype == subtype and rate == SAMPLE_RATE
    # the same samples, to one step of the sample format
    np.testing.assert_allclose(streamed, sf.read(reference_16000)[0], atol=QUANTUM[subtype] + 1e-6)


@pytest.mark.parametrize(
    ("out", "extra", "message"),
    [
        ("a.ogg", ["--bit-depth", "24"], "OGG cannot hold --bit-depth 24"),
        ("a.flac", ["--bit-depth", "32f"], "FLAC cannot hold --bit-depth 32f"),
        ("a.wav", ["--format", "flac"], "does not fit"),
        ("-", ["--format", "ogg"], "standard output is a WAV stream"),
        ("a.mp3", [], "unsupported output extension"),
        ("-", ["--stems"], "--stems"),
        ("a.wav", ["--loudness", "3"], "--loudness"),
        ("a.wav", ["--bit-depth", "8"], "--bit-depth"),
    ],
)
def test_impossible_output_options_exit_2(tiny_model_path, short_midi, tmp_path, out, extra, message):
    target = out if out == "-" else str(tmp_path / out)
    result = run("render", str(short_midi), "-o", target, "--model", str(tiny_model_path), *extra)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.mid"]


def test_wav_stream_refuses_more_than_riff_can_hold():
    assert len(wav_header(SAMPLE_RATE, subtype="FLOAT")) == 44
    with pytest.raises(OutputError, match="at most 4 GiB"):
        wav_header(4 * 3600 * 96000, 96000, "FLOAT")  # 4 h of 96 kHz float: 5.1 GiB


def test_missing_extras_are_usage_errors_that_name_the_extra(tiny_model_path, short_midi, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyloudnorm", None)  # importing it now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = str(tmp_path / "a.wav")
    loud = run("render", str(short_midi), "-o", out, "--loudness", "-14", "--model", str(tiny_model_path))
    assert loud.exit_code == 2 and "pip install 'midisynth[loudness]'" in loud.output
    plot = run("render", str(short_midi), "-o", out, "--plot", str(tmp_path / "p.png"))
    assert plot.exit_code == 2 and "pip install 'midisynth[plot]'" in plot.output


# -- loudness ----------------------------------------------------------------------------------------------------------
def test_meter_measures_as_pyloudnorm_in_chunks():
    rate = 44100
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(7 * rate) * 0.1
    audio[: 2 * rate] *= 0.01  # a quiet start, gated out
    meter = LoudnessMeter(rate)
    for chunk in np.array_split(audio.astype(np.float32), 13):
        meter.add(chunk)
    assert meter.integrated_lufs() == pytest.approx(pyloudnorm.Meter(rate).integrated_loudness(audio), abs=0.01)
    assert LoudnessMeter(rate).integrated_lufs() == -math.inf


def _sine(seconds: float, amplitude: float, clicks: float = 0.0) -> np.ndarray:
    """A 440 Hz sine at 16 kHz, with a one-sample click of height `clicks` at each whole second."""
    audio = amplitude * np.sin(2 * np.pi * 440 * np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE)
    audio[::SAMPLE_RATE] += clicks
    return audio.astype(np.float32)


def _normalise(path: Path, audio: np.ndarray, settings: OutputSettings):
    """Both passes through JobOutputs, the audio arriving in 10 chunks."""
    job = Job("a.mid", str(path), audio_format(path, settings.container, settings.bit_depth))
    with JobOutputs(job, Song([], len(audio) / SAMPLE_RATE), settings) as outputs:
        outputs.write(0, np.array_split(audio, 10), len(audio))
        return outputs.finish([])


def test_normalisation_reaches_the_target_at_another_rate(tmp_path):
    """-14 LUFS from a quiet sine, written at 48 kHz, as pyloudnorm measures the file."""
    out = tmp_path / "a.wav"
    result = _normalise(out, _sine(3.0, 0.02), OutputSettings(sample_rate=48000, bit_depth="24", loudness_lufs=-14.0))
    assert result.warning is None and result.gain > 10
    assert lufs(out) == pytest.approx(-14.0, abs=0.5) and result.reached_lufs == pytest.approx(lufs(out), abs=0.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]  # the unscaled pass-one file is gone


def test_limiter_holds_peaks_at_the_ceiling_and_leaves_the_rest(tmp_path):
    out = tmp_path / "a.wav"
    audio = _sine(3.0, 0.02, clicks=0.9)  # the clicks would reach 20 (+26 dBFS) at the target
    result = _normalise(out, audio, OutputSettings(bit_depth="32f", loudness_lufs=-10.0))
    written = sf.read(out, dtype="float32")[0]
    assert np.abs(written).max() <= 10 ** (PEAK_CEILING_DBFS / 20) + 1e-6
    assert lufs(out) == pytest.approx(-10.0, abs=0.5) and result.warning is None
    since_click = np.arange(len(audio)) % SAMPLE_RATE
    away = np.minimum(since_click, SAMPLE_RATE - since_click) > 0.05 * SAMPLE_RATE  # over 1.5 limiter windows off
    np.testing.assert_allclose(written[away], audio[away] * np.float32(result.gain), rtol=1e-5, atol=1e-6)
    unscaled = tmp_path / "unscaled.wav"
    sf.write(unscaled, audio, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(
        np.concatenate(list(limited_blocks(unscaled, result.gain, block_samples=1000))),
        np.concatenate(list(limited_blocks(unscaled, result.gain))),
    )


def test_limiter_warns_when_it_takes_off_the_target():
    result = _normalise(
        Path(tempfile.mkdtemp()) / "a.wav", _sine(3.0, 0.02), OutputSettings(loudness_lufs=0.0)
    )  # a sine at 0 LUFS would peak at +3 dBFS
    assert result.reached_lufs < -0.5 and "peak limiter" in result.warning
    silent = _normalise(
        Path(tempfile.mkdtemp()) / "b.wav", np.zeros(SAMPLE_RATE, np.float32), OutputSettings(loudness_lufs=-14.0)
    )
    assert silent.gain == 1.0 and "too quiet" in silent.warning


@pytest.mark.slow  # two loudness passes over a mix and its stems through the CLI (JobOutputs' passes are tested alone)
def test_loudness_option_with_stems(tiny_model_path, band_midi, tmp_path):
    """The mix meets the target; the stems get the mix's gain; no pass-one file stays behind."""
    louder, quieter = tmp_path / "louder", tmp_path / "quieter"
    common = ("--stems", "--bit-depth", "32f")
    render(band_midi, louder / "band.wav", tiny_model_path, *common, "--loudness", "-20")
    render(band_midi, quieter / "band.wav", tiny_model_path, *common, "--loudness", "-26")
    assert lufs(louder / "band.wav") == pytest.approx(-20.0, abs=0.5)
    assert lufs(quieter / "band.wav") == pytest.approx(-26.0, abs=0.5)

    def gain_db(name: str) -> float:
        """Level of the quieter render relative to the louder one, but where the limiter held a peak."""
        loud, quiet = sf.read(louder / name)[0], sf.read(quieter / name)[0]
        assert np.abs(loud).max() <= 10 ** (PEAK_CEILING_DBFS / 20) + 1e-6
        audible = np.abs(loud) > 1e-3
        return float(np.median(20 * np.log10(quiet[audible] / loud[audible])))

    mix_gain_db = gain_db("band.wav")
    assert mix_gain_db == pytest.approx(-6.0, abs=0.5)
    stems = sorted(p.name for p in louder.glob("band.stem-*.wav"))
    assert len(stems) == 3
    for name in stems:
        assert gain_db(name) == pytest.approx(mix_gain_db, abs=0.01)
    assert not [p for p in [*louder.iterdir(), *quieter.iterdir()] if p.name.startswith(".")]


def test_unreachable_loudness_is_limited_with_a_warning(tiny_model_path, short_midi, tmp_path):
    out = tmp_path / "a.wav"
    result = run(
        "render",
        str(short_midi),
        "-o",
        str(out),
        "--model",
        str(tiny_model_path),
        *[a for a in FAST if a != "-q"],
        "--loudness",
        "0",
        "--bit-depth",
        "32f",
    )
    assert result.exit_code == 0 and "the peak limiter (ceiling -1 dBFS) allows no more" in result.output
    assert np.abs(sf.read(out)[0]).max() <= 10 ** (PEAK_CEILING_DBFS / 20) + 1e-6


# -- stems -------------------------------------------------------------------------------------------------------------
def test_instruments_group_by_program_with_drums_last(band_midi):
    groups = instruments(read_midi(band_midi))
    assert [(i.program, i.name, len(i.notes)) for i in groups] == [
        (0, "Acoustic Grand Piano", 3),
        (33, "Electric Bass (finger)", 1),
        (None, "Drums", 3),
    ]
    assert stem_path("out/band.flac", groups[1]) == Path("out/band.stem-033-electric_bass_finger.flac")
    assert stem_path("band.wav", groups[2]) == Path("band.stem-drums.wav")


def test_stems_one_file_per_instrument_rendered_from_its_notes(tiny_model_path, band_midi, tmp_path):
    render(band_midi, tmp_path / "band.wav", tiny_model_path, "--stems")
    mix, _ = sf.read(tmp_path / "band.wav")
    stems = sorted(p.name for p in tmp_path.glob("band.stem-*.wav"))
    assert stems == [
        "band.stem-000-acoustic_grand_piano.wav",
        "band.stem-033-electric_bass_finger.wav",
        "band.stem-drums.wav",
    ]
    for name in stems:
        audio, rate = sf.read(tmp_path / name)
        assert rate == SAMPLE_RATE and audio.shape == mix.shape
        assert np.sqrt(np.mean(audio**2)) > 1e-3 and not np.array_equal(audio, mix)
    # The piano ends with the song, so its stem is exactly the render of a file holding only the piano.
    pm = pretty_midi.PrettyMIDI(str(band_midi))
    pm.instruments = pm.instruments[:1]
    pm.write(str(tmp_path / "piano.mid"))
    render(tmp_path / "piano.mid", tmp_path / "piano.wav", tiny_model_path)
    np.testing.assert_array_equal(sf.read(tmp_path / stems[0])[0], sf.read(tmp_path / "piano.wav")[0])


@pytest.mark.slow  # renders a batch with stems, and each song alone, through the CLI
def test_stems_in_batches_match_one_by_one(tiny_model_path, band_midi, short_midi, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "band.mid").write_bytes(band_midi.read_bytes())
    (src / "short.mid").write_bytes(short_midi.read_bytes())
    render(src, tmp_path / "single", tiny_model_path, "--stems")
    render(src, tmp_path / "batched", tiny_model_path, "--stems", "--batch-size", "2")
    names = sorted(p.name for p in (tmp_path / "single").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "batched").iterdir()) and len(names) == 2 + 3 + 1
    for name in names:
        batched, single = sf.read(tmp_path / "batched" / name)[0], sf.read(tmp_path / "single" / name)[0]
        assert np.corrcoef(batched, single)[0, 1] > 0.999  # float rounding differs between batch shapes


# -- plots -------------------------------------------------------------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_is_a_png_with_one_lane_per_instrument(tiny_model_path, band_midi, tmp_path):
    from matplotlib.image import imread

    render(band_midi, tmp_path / "band.wav", tiny_model_path, "--plot", str(tmp_path / "band.png"))
    lanes = 3
    height = round((SPECTROGRAM_INCHES + lanes * LANE_INCHES + AXIS_INCHES) * DPI)
    assert png_size(tmp_path / "band.png") == (WIDTH_INCHES * DPI, height)
    spectrogram = imread(tmp_path / "band.png")[: height // 2, : int(WIDTH_INCHES * DPI * 0.8)]
    assert spectrogram.std() > 0.1  # an image, not a blank canvas
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.slow  # renders a batch to plot it (one plot is tested alone)
def test_plot_for_a_batch_is_a_directory(tiny_model_path, band_midi, short_midi, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "band.mid").write_bytes(band_midi.read_bytes())
    (src / "sub" / "short.mid").write_bytes(short_midi.read_bytes())
    render(src, tmp_path / "out", tiny_model_path, "--plot", str(tmp_path / "plots"), "--batch-size", "2")
    assert png_size(tmp_path / "plots" / "band.png")[1] > png_size(tmp_path / "plots" / "sub" / "short.png")[1]
    result = run("render", str(src), "-o", str(tmp_path / "out2"), "--plot", str(tmp_path / "one.png"))
    assert result.exit_code == 2 and "directory" in result.output


# -- the command -------------------------------------------------------------------------------------------------------
def test_version_examples_and_environment_in_help():
    from midisynth import __version__

    assert run("--version").stdout.strip() == f"midisynth {__version__}"
    help_text = run("render", "--help").stdout
    for expected in ("Examples", "--loudness -14", "--stems --plot", "MIDISYNTH_MODEL", "MIDISYNTH_DEVICE"):
        assert expected in help_text


def test_help_imports_no_optional_extra():
    code = (
        "import sys, midisynth.cli; heavy = {'matplotlib', 'pyloudnorm', 'soundfile', 'torch'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
