"""The rendering pipeline: window chaining, trimming, streaming, determinism, and parity with diffusers' pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from midisynth.constants import FRAME_RATE, HOP_LENGTH, WINDOW_FRAMES
from midisynth.model.checkpoints import load_checkpoint
from midisynth.model.config import load_config
from midisynth.model.networks import SpectrogramDiffusion
from midisynth.render.pipeline import RELEASE_TAIL_SECONDS, RenderOptions, Synthesizer, song_frames
from midisynth.score.midi import read_midi
from midisynth.score.tokens import tokenize
from midisynth.vocoders.vocoder import load_vocoder
from tests.conftest import ROOT
from tests.reference import save_reference_checkpoint


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from tests.conftest import ROOT

    torch.manual_seed(0)
    from midisynth.model.networks import SpectrogramDiffusion

    model = SpectrogramDiffusion(load_config(ROOT / "configs" / "tiny.toml").model)
    return Synthesizer(
        model,
        load_vocoder("griffin-lim", torch.device("cpu")),
        "cpu",
        RenderOptions(sampler="ddim", steps=3, guidance=2.0, seed=7),
    )


def test_render_length_is_song_plus_tail(synth, two_window_midi):
    song = read_midi(two_window_midi)
    audio = synth.render(song)
    expected_frames = int(np.ceil((6.0 + RELEASE_TAIL_SECONDS) * FRAME_RATE))
    assert len(tokenize(song)) == 2
    assert song_frames(song, 2) == expected_frames
    assert audio.shape == (expected_frames * HOP_LENGTH,)
    assert audio.dtype == np.float32
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-4


@pytest.mark.slow  # three guided renders (the CLI's same-seed bytes are tested fast)
def test_same_seed_is_bit_identical_and_seeds_differ(synth, short_midi):
    song = read_midi(short_midi)
    a = synth.render(song)
    b = synth.render(song)
    c = synth.with_options(seed=8).render(song)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_windows_chain_context(synth, two_window_midi):
    """The second window depends on the first: changing only the first window's tokens changes the second."""
    windows = tokenize(read_midi(two_window_midi))
    first = list(synth.spectrogram_windows(windows))
    altered = [windows[0][:-2] + windows[0][-1:], windows[1]]  # drop one event of window 0
    second = list(synth.spectrogram_windows(altered))
    assert first[0].shape == (WINDOW_FRAMES, 128)
    assert not np.allclose(first[1], second[1])


def test_song_without_notes_renders_silence_of_its_length(synth, tmp_path):
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.control_changes.append(pretty_midi.ControlChange(number=7, value=100, time=3.0))
    pm.instruments.append(inst)
    pm.write(str(tmp_path / "empty.mid"))
    song = read_midi(tmp_path / "empty.mid")
    audio = synth.render(song)
    assert audio.shape[0] == song_frames(song, len(tokenize(song))) * HOP_LENGTH
    assert np.abs(audio).max() < 1e-3


def test_ddpm_reproduces_diffusers_pipeline(tmp_path, two_window_midi):
    """--sampler ddpm --guidance 1 --seed S draws noise like diffusers' pipeline and gives its spectrogram."""
    diffusers = pytest.importorskip("diffusers", reason="parity test needs diffusers==0.35.2")
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "tiny.toml").model
    notes, cont, dec = save_reference_checkpoint(tmp_path / "ckpt", cfg, seed=5)
    windows = tokenize(read_midi(two_window_midi))
    padded = [w + [0] * (cfg.max_tokens - len(w)) for w in windows]
    pipe = diffusers.SpectrogramDiffusionPipeline(
        notes_encoder=notes,
        continuous_encoder=cont,
        decoder=dec,
        scheduler=diffusers.DDPMScheduler.from_pretrained(tmp_path / "ckpt" / "scheduler"),
        melgan=None,
    )
    pipe.set_progress_bar_config(disable=True)
    steps = 10
    ref = pipe(padded, generator=torch.Generator().manual_seed(11), num_inference_steps=steps, output_type="mel")
    ref_mel = ref.audios[0]  # [windows * 256, 128] log-mel
    model = load_checkpoint(tmp_path / "ckpt").model
    synth = Synthesizer(
        model,
        load_vocoder("griffin-lim", torch.device("cpu")),
        "cpu",
        RenderOptions(sampler="ddpm", steps=steps, guidance=1.0, seed=11, precision="fp32"),
    )
    ours = np.concatenate(list(synth.spectrogram_windows(windows)))
    assert ours.shape == ref_mel.shape
    assert np.abs(ours - ref_mel).max() <= 1e-3


def test_bf16_stays_close_to_fp32(synth):
    """bf16 autocast vs fp32 on the same seed: mean |Δ| < 0.03 and 99th percentile < 0.2 log-mel units.

    (Measured 0.008 and 0.047 on this tiny random model. The maximum is not bounded: a bin whose x0 sits at the
    clip edge can flip between the feature floor and ceiling.)
    """
    from tests.conftest import ROOT

    windows = tokenize(read_midi(ROOT / "tests" / "data" / "midi" / "dense_30s.mid"))[:2]
    options = RenderOptions(sampler="ddim", steps=5, guidance=1.0, seed=3, precision="fp32")
    fp32 = np.concatenate(list(synth.spectrogram_windows(windows, options)))
    bf16 = np.concatenate(
        list(
            synth.spectrogram_windows(
                windows, RenderOptions(sampler="ddim", steps=5, guidance=1.0, seed=3, precision="bf16")
            )
        )
    )
    diff = np.abs(fp32 - bf16)
    assert diff.mean() > 0  # two precisions really ran (the default precision is bf16 on some machines)
    assert diff.mean() < 0.03 and np.quantile(diff, 0.99) < 0.2


def test_bf16_weight_copy_equals_autocast_and_leaves_the_model_fp32(synth):
    """Rendering in bf16 uses a copy whose Linear weights are cast once; it must give exactly what autocast gives
    when it casts the fp32 weights itself, on the encoders and on the decoder."""
    from midisynth.model.low_precision import linear_weights_as

    model = synth.model
    cast = linear_weights_as(model, torch.bfloat16)
    assert cast.decoder.blocks[0].ff.wi_0.weight.dtype == torch.bfloat16
    assert cast.decoder.final_norm.weight.dtype == torch.float32  # norms and tables stay fp32
    assert model.decoder.blocks[0].ff.wi_0.weight.dtype == torch.float32  # the original is untouched
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 1391, (2, 50), generator=g)
    context = torch.rand(2, WINDOW_FRAMES, 128, generator=g) * 2 - 1
    x = torch.randn(2, WINDOW_FRAMES, 128, generator=g)
    t = torch.tensor([0.3, 0.8])
    has_context = torch.tensor([True, False])
    outputs = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for net in (model, cast):
            cache = net.encode(tokens, context, has_context)
            outputs.append(net.decoder(x, t, cache).float())
    torch.testing.assert_close(outputs[0], outputs[1], atol=0, rtol=0)


def _native_bf16() -> bool:
    from midisynth.precision import hardware, native_bf16

    return native_bf16(hardware("cpu"))


@pytest.mark.skipif(
    not _native_bf16(),
    reason="bf16 is emulated on this CPU (no AVX-512 BF16 or AMX): its batched "
    "products round otherwise than single ones",
)
def test_bf16_batches_render_what_each_song_renders_alone(two_window_midi, short_midi, tmp_path):
    """Issue 24 item 4: in a batch, a song's windows were padded to the batch's longest window; masked, but bf16
    rounds otherwise at another length, and the song sounded different (log-mel L1 0.04 with the bundled model). Each
    window is now padded to a length of its own, so with native bf16 a batch renders each song exactly as alone."""
    from tests.conftest import write_midi

    dense = write_midi(tmp_path / "dense.mid", [(40 + k % 40, k * 0.05, k * 0.05 + 0.3, 100) for k in range(60)])
    songs = [read_midi(path) for path in (short_midi, two_window_midi, dense)]
    assert {len(window) > 64 for song in songs for window in tokenize(song)} == {True, False}  # lengths differ
    torch.manual_seed(0)
    model = SpectrogramDiffusion(load_config(ROOT / "configs" / "tiny.toml").model)
    options = RenderOptions(sampler="ddim", steps=2, guidance=2.0, precision="bf16")
    synth = Synthesizer(model, load_vocoder("griffin-lim", torch.device("cpu")), "cpu", options)
    batched = {index: np.concatenate(list(parts)) for index, parts in synth.spectrogram_songs(songs)}
    for index, song in enumerate(songs):
        ((_, alone),) = synth.spectrogram_songs([song])
        np.testing.assert_array_equal(batched[index], np.concatenate(list(alone)))


def test_batching_changes_only_float_rounding(two_window_midi, short_midi):
    """A song rendered in a batch with others has the spectrogram it has alone, up to float rounding: in fp32,
    on any CPU, within 1e-3 (log-mel, largest difference; measured 1.1e-5), against differences of about 6.7 on
    average for another seed. (bf16 rounds every operation to 8 bits: a CPU that emulates it rounds differently in
    batches, which is why renders compared across batches use fp32.)"""
    torch.manual_seed(0)
    model = SpectrogramDiffusion(load_config(ROOT / "configs" / "tiny.toml").model)
    vocoder = load_vocoder("griffin-lim", torch.device("cpu"))
    options = RenderOptions(sampler="ddim", steps=2, guidance=1.0, precision="fp32")
    songs = [read_midi(short_midi), read_midi(two_window_midi), read_midi(short_midi).excerpt(0.5)]
    synth = Synthesizer(model, vocoder, "cpu", options)
    batched = {index: np.concatenate(list(parts)) for index, parts in synth.spectrogram_songs(songs)}
    other_seed = synth.with_options(seed=1)
    for index, song in enumerate(songs):
        ((_, alone),) = synth.spectrogram_songs([song])
        alone = np.concatenate(list(alone))
        assert batched[index].shape == alone.shape
        assert np.abs(batched[index] - alone).max() < 1e-3
        ((_, reseeded),) = other_seed.spectrogram_songs([song])
        assert np.abs(np.concatenate(list(reseeded)) - alone).mean() > 1.0
