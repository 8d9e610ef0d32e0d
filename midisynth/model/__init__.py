"""The model: its configuration, the encoder-decoder network and its noise schedule, its per-frame note inputs, and
its checkpoints (files, the bundled model, the Hugging Face Hub)."""
