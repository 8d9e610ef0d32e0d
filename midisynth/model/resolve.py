"""Finding a model: the bundled default, a midisynth `.safetensors` file, a midisynth model directory (what
`midisynth adapt` writes), a diffusers-layout directory, or a hub id (`owner/name[@revision]`, resolved in the Hugging
Face cache; see `midisynth.model.hub`).

The bundled default is a midisynth model directory (`midisynth.model.directory`) inside the package."""

from __future__ import annotations

from pathlib import Path

from midisynth.model.checkpoints import Checkpoint, CheckpointError, load_checkpoint
from midisynth.model.directory import PARTIALS_FILE, load_model_directory, read_manifest
from midisynth.model.hub import OFFICIAL_MODEL, cached_snapshot, parse_hub_id
from midisynth.render.samplers import DIFFUSERS_SAMPLING, SamplingDefaults

# Sampling of known diffusers-layout checkpoints on the hub (others get diffusers' own, DIFFUSERS_SAMPLING).
HUB_SAMPLING: dict[str, SamplingDefaults] = {OFFICIAL_MODEL: DIFFUSERS_SAMPLING}

BUNDLED_DIR = Path(__file__).parents[1] / "assets" / "default"


class NoDefaultModel(CheckpointError):
    """Raised when no model is given and none is bundled."""


def bundled_manifest() -> dict | None:
    """The bundled default model's manifest (files and sha256 hashes), or None when none is installed."""
    return read_manifest(BUNDLED_DIR)


def hub_sampling(repo_id: str) -> SamplingDefaults:
    """The sampling defaults of a diffusers-layout checkpoint on the hub (`HUB_SAMPLING`, else diffusers')."""
    return HUB_SAMPLING.get(repo_id, DIFFUSERS_SAMPLING)


def resolve_model(model: str | Path | None = None, allow_pickle: bool = False) -> Checkpoint:
    """Load the named model: a path when it exists, else a hub id from the Hugging Face cache (never downloads;
    raises `hub.HubError`, or ImportError without huggingface_hub); None means the bundled default, verified against
    its manifest hashes."""
    if model is not None:
        path = Path(model).expanduser()
        if path.is_dir() and read_manifest(path) is not None:
            return load_model_directory(path)
        if path.exists():
            checkpoint = load_checkpoint(path, allow_pickle=allow_pickle)
            partials = path.parent / PARTIALS_FILE
            if path.is_file() and partials.is_file():
                checkpoint.partials_path = partials
            return checkpoint
        hub_id = parse_hub_id(str(model))
        if hub_id is None:
            raise CheckpointError(f"{path}: no such model file or directory (nor a hub id like {OFFICIAL_MODEL})")
        snapshot = cached_snapshot(hub_id)
        checkpoint = load_checkpoint(snapshot, allow_pickle=allow_pickle)
        checkpoint.metadata["hub_id"] = f"{hub_id.repo_id}@{snapshot.name}"  # the commit actually loaded
        checkpoint.sampling = hub_sampling(hub_id.repo_id)
        return checkpoint
    if bundled_manifest() is None:
        raise NoDefaultModel(
            "no default model is installed yet: pass --model PATH (a midisynth .safetensors file or a "
            f"diffusers-layout checkpoint directory) or a hub id such as {OFFICIAL_MODEL} (`midisynth download`)"
        )
    return load_model_directory(BUNDLED_DIR, fix="reinstall midisynth")
