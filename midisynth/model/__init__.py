"""The model: its configuration, the encoder-decoder network, its noise schedule and the diffusion samplers on it,
its per-frame note inputs, and its checkpoints (files, the bundled model, the Hugging Face Hub)."""
