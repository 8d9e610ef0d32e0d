"""`midisynth adapt`: a model adapted to a user's recordings or SoundFont, from a model directory (by default the
bundled one), in minutes on a CPU.

Everything lives in the output directory, and each step resumes from what an earlier run left there:

    OUT/survey_midi/    with a SoundFont: the instrument survey, MIDI rendered with it beside the MIDI folders given
    OUT/data/           the data set (`midisynth.data.build`): the recordings, and the MIDI rendered with the SoundFont
    OUT/run/            the fine-tuning run (`midisynth.training.diffusion.Trainer`), from the base model's weights
    OUT/adapt.json      the state: minutes trained, the data set the partials model was fitted to (its manifest's
                        sha256: a resumed run that adds nothing does not fit it again), the held-out scores of the
                        base model and of the adapted one
    OUT/manifest.json, OUT/model.safetensors, OUT/partials.safetensors
                        the adapted model, a model directory (`midisynth.model.directory`) that `render --model OUT`
                        and `models OUT` read

Steps: store the material; choose what it holds out (`midisynth.data.holdout`); score the base model on it; fit the
partials model's spectra, starting from the base's gains (`midisynth.training.partials.adapt_gains`); fine-tune the
network for what is left of `minutes` (ADAPT_TRAIN); write the model directory; score it. The scores are log-mel L1
and onset-strength correlation (`midisynth.evaluation.metrics`) of whole renders against the held-out recordings.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from midisynth.constants import WINDOW_SAMPLES
from midisynth.data.build import build_dataset
from midisynth.data.holdout import HeldOut, hold_out
from midisynth.data.pairs import AlignedPair
from midisynth.data.store import load_records
from midisynth.files import save_text_atomic
from midisynth.model.checkpoints import file_sha256
from midisynth.model.config import Config, TrainConfig
from midisynth.model.directory import PARTIALS_FILE, load_model_directory, write_model_directory
from midisynth.score.midi import read_midi

# Fine-tuning from a trained model: a tenth of the bundled recipe's learning rate, held constant (the run's length is
# a time, not a number of steps); an EMA that averages the last few hundred steps; velocity-gain contexts jittered as
# in the recipe's later stages, so the level still comes from the notes.
ADAPT_TRAIN = TrainConfig(
    batch_size=8,
    learning_rate=5e-5,
    warmup_steps=20,
    max_steps=10**9,
    lr_schedule="constant",
    ema_decay=0.99,
    context_level_jitter=1.0,
    checkpoint_every=50,
    eval_every=50,
    eval_batches=4,
    log_every=10,
)
STATE_FILE = "adapt.json"


SURVEY_DIR = "survey_midi"  # OUT/SURVEY_DIR: the instrument survey's MIDI, rendered with the SoundFont
SURVEY_SEED = 0


@dataclass(frozen=True)
class Material:
    """What to adapt to: folders of aligned recordings (`midisynth.data.pairs`), and a SoundFont, which renders
    the instrument survey (`midisynth.data.sources.instrument_survey`: every GM program and the drum kit, then drum
    grooves: 12 minutes) and the MIDI folders given."""

    pairs: list[AlignedPair] = field(default_factory=list)
    midi_dirs: list[Path] = field(default_factory=list)
    soundfont: Path | None = None


def gather_material(recordings: list[Path], midi_dirs: list[Path], soundfont: Path | None) -> Material:
    """The material of the command line: folders of recordings (each MIDI file with its audio beside it), and a
    SoundFont with the MIDI folders to render with it (the instrument survey is rendered too); ValueError (one line)
    for a folder that is missing or holds no pair, MIDI without a SoundFont, or nothing at all."""
    from midisynth.data.fluidsynth import check_fluidsynth
    from midisynth.data.pairs import folder_pairs

    if midi_dirs and soundfont is None:
        raise ValueError("--midi needs --soundfont: the SoundFont whose sound to learn")
    if not recordings and soundfont is None:
        raise ValueError(
            "nothing to adapt to: give folders of recordings (MIDI files with their audio beside them), "
            "or a --soundfont"
        )
    for folder in midi_dirs:
        if not folder.is_dir():
            raise ValueError(f"--midi {folder}: {'not a directory' if folder.exists() else 'no such directory'}")
    if soundfont is not None:
        try:
            check_fluidsynth(soundfont)
        except FileNotFoundError as err:
            raise ValueError(str(err)) from None
    try:
        pairs = [pair for folder in recordings for pair in folder_pairs(folder)]
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    return Material(pairs, list(midi_dirs), soundfont)


@dataclass
class Scores:
    """Held-out scores of a model: mean log-mel L1 (lower is better) and onset-strength correlation (higher)."""

    log_mel_l1: float
    onset_corr: float

    def __str__(self) -> str:
        return f"log-mel L1 {self.log_mel_l1:.3f}, onset correlation {self.onset_corr:.3f}"


@dataclass
class AdaptResult:
    directory: Path
    heldout: HeldOut
    steps: int
    minutes_trained: float
    before: Scores | None
    after: Scores | None


def _read_state(out: Path) -> dict:
    path = out / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_state(out: Path, state: dict) -> None:
    save_text_atomic(out / STATE_FILE, json.dumps(state, indent=1))


def _write_survey(folder: Path) -> Path:
    """The instrument survey's pieces as MIDI files in `folder` (each written atomically, once)."""
    from midisynth.data.sources import instrument_survey
    from midisynth.files import make_output_directory, write_atomic

    make_output_directory(folder, folder)
    for name, pm in instrument_survey(SURVEY_SEED):
        path = folder / f"{name}.mid"
        if not path.is_file():
            write_atomic(path, lambda f, pm=pm: pm.write(f))
    return folder


def heldout_scores(model: str | Path | None, data_dir: Path, device: str = "cpu") -> Scores | None:
    """Render the held-out material of a data set with a model (a path, or None: the bundled default) and score it
    against the stored audio, over the held-out windows only; None when nothing is held out."""
    from midisynth.evaluation.metrics import log_mel_l1, onset_correlation, scale_to_rms
    from midisynth.render.pipeline import RenderOptions, Synthesizer

    parts = [(record, record.split_windows("heldout")) for record in load_records(data_dir, "heldout")]
    if not parts:
        return None
    synth = Synthesizer.from_pretrained(model, device=device, options=RenderOptions(seed=0))
    l1, onsets = [], []
    for record, windows in parts:
        rendered = synth.render(read_midi(record.midi_path(data_dir)))
        stored = np.load(record.path(data_dir, "audio"), mmap_mode="r")
        lo, hi = windows.start * WINDOW_SAMPLES, min(windows.stop * WINDOW_SAMPLES, rendered.shape[0])
        reference = np.asarray(stored[lo:hi], np.float32)
        candidate = scale_to_rms(rendered[lo:hi], reference)
        l1.append(log_mel_l1(candidate, reference))
        onsets.append(onset_correlation(candidate, reference)[0])
    return Scores(float(np.mean(l1)), float(np.nanmean(onsets)) if not np.all(np.isnan(onsets)) else math.nan)


def adapt(
    material: Material,
    out: Path,
    base: Path,
    minutes: float,
    device: str = "cpu",
    say: Callable[[str], None] = lambda line: None,
    on_skip: Callable[[str], None] = lambda line: None,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> AdaptResult:
    """Adapt the model directory `base` to `material` within `minutes` of fine-tuning (in all, over every run that
    resumes it), writing the adapted model directory to `out`; see the module's docstring. `say` gets a line per
    step, `on_skip` a line per recording or MIDI file left out, `on_step(step, loss)` follows the fine-tuning.
    A terminating signal (under `midisynth.signals.exit_on_signals`) stops it with what is done kept."""
    from midisynth.model.partials import DEFAULT_MIX, load_partials, save_partials
    from midisynth.training.diffusion import Trainer
    from midisynth.training.partials import fit_partials

    out = Path(out)
    data_dir, run_dir = out / "data", out / "run"
    base_checkpoint = load_model_directory(base)
    state = _read_state(out)

    midi_dirs = list(material.midi_dirs)
    if material.soundfont is not None:
        midi_dirs.append(_write_survey(out / SURVEY_DIR))
    say(f"data set: {data_dir}")
    build_dataset(
        data_dir,
        soundfont=material.soundfont or Path(),
        midi_dirs=midi_dirs,
        hours=math.inf,
        generated=False,
        pairs=material.pairs,
        on_skip=on_skip,
        progress=progress,
    )
    if not load_records(data_dir):
        raise ValueError(f"{data_dir}: no usable recording or MIDI file to adapt to")
    heldout = hold_out(data_dir)
    say(heldout.describe())
    train_windows = sum(len(r.split_windows("train")) for r in load_records(data_dir))

    if "before" not in state:
        say("scoring the base model on the held-out material")
        before = heldout_scores(base, data_dir, device)
        state["before"] = None if before is None else vars(before)
        _write_state(out, state)

    partials_path = run_dir / PARTIALS_FILE
    fitted_to = file_sha256(data_dir / "manifest.json")  # the pieces, their splits and held-out windows
    if state.get("partials_fitted_to") != fitted_to or not partials_path.is_file():
        say("fitting the partials model")
        prior = None if base_checkpoint.partials_path is None else load_partials(base_checkpoint.partials_path)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_partials(fit_partials(data_dir, prior=prior, mix=prior.mix if prior else DEFAULT_MIX), partials_path)
        state["partials_fitted_to"] = fitted_to
        _write_state(out, state)

    config = Config(
        model=base_checkpoint.model.cfg,
        train=replace(ADAPT_TRAIN, batch_size=min(ADAPT_TRAIN.batch_size, train_windows)),
    )
    trainer = Trainer(config, data_dir, run_dir, device=device, init_from=base_checkpoint.source)
    left = minutes - state.get("minutes_trained", 0.0)
    say(f"fine-tuning for {max(left, 0):.1f} min from step {trainer.step} ({train_windows} training windows)")
    started = time.monotonic()
    try:
        if left > 0:
            trainer.train(max_minutes=left, on_step=on_step)
    finally:
        state["minutes_trained"] = state.get("minutes_trained", 0.0) + (time.monotonic() - started) / 60
        state["steps"] = trainer.step
        _write_state(out, state)

    metadata = {
        "step": str(trainer.step),
        "adapted_from": str(base_checkpoint.source),
        "sampling": base_checkpoint.sampling.to_json(),
    }
    write_model_directory(out, trainer.ema or trainer.model, metadata, partials=partials_path)  # one process: the EMA
    say(f"model: {out}")
    after = heldout_scores(out, data_dir, device)
    state["after"] = None if after is None else vars(after)
    _write_state(out, state)
    before = state["before"]
    return AdaptResult(
        out, heldout, trainer.step, state["minutes_trained"], None if before is None else Scores(**before), after
    )
