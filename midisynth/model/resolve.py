"""Finding a model: the bundled default, a midisynth `.safetensors` file, a midisynth model directory (what
`midisynth adapt` writes), a diffusers-layout directory, or a hub id (`owner/name[@revision]`, resolved in the Hugging
Face cache; see `midisynth.model.hub`).

The bundled default is a midisynth model directory (`midisynth.model.directory`) inside the package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from midisynth.model.checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_model
from midisynth.model.directory import PARTIALS_FILE, REFINER_FILE, describe, load_model_directory, read_manifest
from midisynth.model.hub import OFFICIAL_MODEL, cache_dir, cached_models, cached_snapshot, parse_hub_id
from midisynth.model.samplers import DIFFUSERS_SAMPLING, SamplingDefaults

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
            partials, refiner = path.parent / PARTIALS_FILE, path.parent / REFINER_FILE
            if path.is_file() and partials.is_file():
                checkpoint.partials_path = partials
                if refiner.is_file():  # the refiner corrects a mix with the partials model: none without one
                    checkpoint.refiner_path = refiner
            return checkpoint
        hub_id = parse_hub_id(str(model))
        if hub_id is None:
            raise CheckpointError(f"{path}: no such model file or directory (nor a hub id like {OFFICIAL_MODEL})")
        snapshot = cached_snapshot(hub_id)
        checkpoint = load_checkpoint(snapshot, allow_pickle=allow_pickle)
        checkpoint.metadata["hub_id"] = f"{hub_id.repo_id}@{snapshot.name}"  # the commit actually loaded
        checkpoint.sampling = hub_sampling(hub_id.repo_id)
        return checkpoint
    manifest = bundled_manifest()
    if manifest is None:
        raise NoDefaultModel(
            "no default model is installed yet: pass --model PATH (a midisynth .safetensors file or a "
            f"diffusers-layout checkpoint directory) or a hub id such as {OFFICIAL_MODEL} (`midisynth download`)"
        )
    return load_model_directory(BUNDLED_DIR, fix="reinstall midisynth")


def model_listing(directories: list[Path] | None = None) -> Iterator[str]:
    """What `midisynth models` prints, line by line: what `--precision auto` computes in on this machine's devices,
    the bundled model and the files beside it (with the sampling and partials share renders take by default), the
    model `directories` given (CheckpointError for one that is not a model directory), and the Spectrogram Diffusion
    checkpoints in the Hugging Face cache with their sampling."""
    import torch

    from midisynth.precision import explain, hardware

    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        yield f"precision {explain(hardware(device))}"
    if bundled_manifest() is None:
        yield "no bundled default model installed"
    else:
        yield from describe(BUNDLED_DIR)
    for directory in directories or []:
        lines = describe(directory)
        yield f"{directory}:"
        yield from ("  " + line for line in lines)
    try:
        cached = cached_models()
    except ImportError as err:
        yield f"hub checkpoints not listed: {err}"
        return
    if not cached:
        yield f"no Spectrogram Diffusion checkpoints in the Hugging Face cache ({cache_dir()})"
    for found in cached:
        name = f"{found.repo_id}@{found.refs[0] if found.refs else found.commit}"
        yield f"hub: {name}  commit={found.commit[:12]}  {found.size_bytes / 1e6:,.1f} MB  {found.path}"
        yield f"  sampling: {hub_sampling(found.repo_id)}"


def convert_model(
    source: str | Path, output: str | Path, half: bool = False, allow_pickle: bool = False, overwrite: bool = False
) -> str:
    """Write the model `source` names (`resolve_model`: a diffusers-layout directory, a cached hub id, a midisynth
    file) to `output` in midisynth's single-file format, with its sampling defaults and where it came from (the hub
    id and commit, else the file's name); float16 weights with `half`. Returns the file's sha256; OutputError without
    `overwrite` for a file that exists when it is complete."""
    import torch

    checkpoint = resolve_model(source, allow_pickle=allow_pickle)
    origin = checkpoint.metadata.get("hub_id") or Path(source).name
    metadata = {"converted_from": origin, "sampling": checkpoint.sampling.to_json()}
    return save_model(
        checkpoint.model, output, metadata, dtype=torch.float16 if half else torch.float32, replace=overwrite
    )
