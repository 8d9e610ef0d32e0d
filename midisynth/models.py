"""Finding a model: the bundled default, a midisynth `.safetensors` file, or a diffusers-layout directory."""

from __future__ import annotations

import json
from pathlib import Path

from midisynth.checkpoints import Checkpoint, CheckpointError, file_sha256, load_checkpoint, load_model_file

BUNDLED_DIR = Path(__file__).parent / "assets" / "default"
MANIFEST = BUNDLED_DIR / "manifest.json"


class NoDefaultModel(CheckpointError):
    """Raised when no model is given and none is bundled."""


def bundled_manifest() -> dict | None:
    """The bundled default model's manifest (files and sha256 hashes), or None when none is installed."""
    if not MANIFEST.exists():
        return None
    return json.loads(MANIFEST.read_text())


def resolve_model(model: str | Path | None = None, allow_pickle: bool = False) -> Checkpoint:
    """Load the named model; None means the bundled default, verified against its manifest hashes."""
    if model is not None:
        path = Path(model).expanduser()
        if not path.exists():
            raise CheckpointError(f"{path}: no such model file or directory")
        return load_checkpoint(path, allow_pickle=allow_pickle)
    manifest = bundled_manifest()
    if manifest is None:
        raise NoDefaultModel(
            "no default model is installed yet: pass --model PATH (a midisynth .safetensors file or a "
            "diffusers-layout checkpoint directory such as google/music-spectrogram-diffusion)"
        )
    entry = manifest["model"]
    checkpoint = load_model_file(BUNDLED_DIR / entry["file"], expected_sha256=entry["sha256"])
    vocoder = manifest.get("vocoder")
    if vocoder is not None:
        path = BUNDLED_DIR / vocoder["file"]
        if not path.is_file() or file_sha256(path) != vocoder["sha256"]:
            raise CheckpointError(f"{path}: bundled vocoder missing or corrupted (sha256 mismatch); reinstall midisynth")
        checkpoint.vocoder_path = path
    return checkpoint
