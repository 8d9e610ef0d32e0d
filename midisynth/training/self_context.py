"""The model's own free-running spectrograms of the training pieces, used as context in training.

At inference each window is conditioned on the previous *generated* window; in training, on the previous
*reference* window. The gap compounds: on the held-out set the bundled model scored log-mel L1 1.546 when fed the
reference's previous window and 1.720 when fed its own (README: training). Training on a mix of both (scheduled
sampling, Bengio et al. 2015) teaches the model to correct its own drift. The generated contexts are rendered once,
at the start of a run, by the model being trained, exactly as `midisynth render` would (same sampler, steps,
precision and seed), and stored per piece:

    RUN_DIR/self_context/ID.npy   float16 [windows * 256, 128] log-mel, the piece's free-running render
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from midisynth.data.store import WindowDataset, self_context_path
from midisynth.files import write_atomic
from midisynth.model.dynamics import apply_gain
from midisynth.model.networks import SpectrogramDiffusion
from midisynth.render.pipeline import RenderOptions, Synthesizer
from midisynth.vocoders.vocoder import load_vocoder

SONGS_PER_BATCH = 16  # pieces generated together (their k-th windows form one batch)


def generate_contexts(
    model: SpectrogramDiffusion,
    data: WindowDataset,
    folder: Path,
    options: RenderOptions | None = None,
    progress: bool = True,
) -> None:
    """Render every piece of `data` without a stored context file, free-running (`data` must be for this model's
    config: its tokens and velocity inputs), and store its features [windows * 256, 128].

    Resumable: pieces already in `folder` are skipped. The model is used in eval mode and left as it was.
    """
    folder.mkdir(parents=True, exist_ok=True)
    todo = [r for r in data.records if not self_context_path(folder, r.piece_id).exists()]
    if not todo:
        return
    was_training = model.training
    device = next(model.parameters()).device
    synth = Synthesizer(model, load_vocoder("griffin-lim", device), device, options)
    bar = tqdm(total=sum(r.windows for r in todo), unit="window", desc="self-context", disable=not progress)
    try:
        for start in range(0, len(todo), SONGS_PER_BATCH):
            group = todo[start : start + SONGS_PER_BATCH]
            songs = [[data.window_tokens(r, w) for w in range(r.windows)] for r in group]
            dynamics = [data.song_dynamics(r) for r in group]
            parts: list[list[np.ndarray]] = [[] for _ in group]
            for step in synth.spectrogram_batch(songs, dynamics=dynamics):
                for row, features in step:
                    parts[row].append(features.astype(np.float16))
                bar.update(len(step))
            for record, piece_parts in zip(group, parts, strict=True):
                array = np.concatenate(piece_parts)  # [windows * 256, 128]
                write_atomic(self_context_path(folder, record.piece_id), lambda f, a=array: np.save(f, a))
    finally:
        bar.close()
        model.train(was_training)


def mix_contexts(
    reference: torch.Tensor, generated: torch.Tensor, probability: float, generator: torch.Generator
) -> torch.Tensor:
    """Per row, the generated context [B, 256, 128] with `probability`, else the reference context."""
    use_generated = torch.rand(reference.shape[0], generator=generator) < probability  # [B]
    return torch.where(use_generated.to(reference.device)[:, None, None], generated, reference)


def jitter_context_level(context: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Each row's context [B, 256, 128] log-mel made louder or softer by one random gain, N(0, std) log units; bins
    at the floor (silence) stay there.

    A model trained on true contexts learns to copy their level, so at inference a window rendered slightly too soft
    makes the next one softer: the bundled model's render of a held-out note survey fell from -2.8 to -7.8 in frame
    log-energy over 9 windows while the reference stayed between -0.5 and -4.3. Trained on contexts whose level is
    off, a model must take the level from the notes (and their dynamics) instead.
    """
    gain = torch.randn(context.shape[0], generator=generator).to(context.device) * std  # [B]
    return apply_gain(context, gain[:, None].expand(context.shape[:2]))
