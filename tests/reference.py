"""Builders for diffusers' reference modules (optional test dependency), shared by the parity tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from midisynth.model.config import ModelConfig


def import_diffusers():
    """Import diffusers' Spectrogram Diffusion classes, or skip the test with the reason."""
    pytest.importorskip("transformers", reason="parity tests need transformers==4.44.2 (pip install -e '.[test]')")
    diffusers = pytest.importorskip(
        "diffusers", reason="parity tests need diffusers==0.35.2 (pip install -e '.[test]')"
    )
    from diffusers.pipelines.deprecated.spectrogram_diffusion.continuous_encoder import SpectrogramContEncoder
    from diffusers.pipelines.deprecated.spectrogram_diffusion.notes_encoder import SpectrogramNotesEncoder

    return diffusers, SpectrogramNotesEncoder, SpectrogramContEncoder


def build_reference_modules(cfg: ModelConfig, seed: int = 0):
    """diffusers' three modules with random weights (position tables and norms randomised too), in eval mode."""
    diffusers, notes_cls, cont_cls = import_diffusers()
    torch.manual_seed(seed)
    common = dict(
        d_model=cfg.d_model,
        dropout_rate=cfg.dropout_rate,
        num_heads=cfg.num_heads,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
    )
    notes = notes_cls(
        max_length=cfg.max_tokens,
        vocab_size=cfg.vocab_size,
        num_layers=cfg.num_notes_layers,
        feed_forward_proj="gated-gelu",
        **common,
    )
    cont = cont_cls(
        input_dims=cfg.input_dims,
        targets_context_length=cfg.targets_length,
        num_layers=cfg.num_context_layers,
        feed_forward_proj="gated-gelu",
        **common,
    )
    dec = diffusers.T5FilmDecoder(
        input_dims=cfg.input_dims,
        targets_length=cfg.targets_length,
        max_decoder_noise_time=cfg.max_decoder_noise_time,
        num_layers=cfg.num_decoder_layers,
        **common,
    )
    with torch.no_grad():
        for module in (notes, cont, dec):
            for name, p in module.named_parameters():
                if "norm" in name:  # norms start at 1: perturb them so a swapped norm cannot pass unnoticed
                    p.add_(0.1 * torch.randn_like(p))
                else:
                    p.normal_(0.0, 0.05 if "position" not in name and "embedder" not in name else 0.5)
    return notes.eval(), cont.eval(), dec.eval()


def save_reference_checkpoint(root: Path, cfg: ModelConfig, seed: int = 0, safe: bool = True):
    """Write a diffusers-layout checkpoint with random weights; returns the reference modules."""
    diffusers, _, _ = import_diffusers()
    notes, cont, dec = build_reference_modules(cfg, seed)
    notes.save_pretrained(root / "notes_encoder", safe_serialization=safe)
    cont.save_pretrained(root / "continuous_encoder", safe_serialization=safe)
    dec.save_pretrained(root / "decoder", safe_serialization=safe)
    diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large").save_pretrained(
        root / "scheduler"
    )
    return notes, cont, dec
