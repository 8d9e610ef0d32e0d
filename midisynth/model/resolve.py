"""Finding a model: the bundled default, a midisynth `.safetensors` file, a diffusers-layout directory, or a hub id
(`owner/name[@revision]`, resolved in the Hugging Face cache; see `midisynth.model.hub`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from midisynth.model.checkpoints import (
    Checkpoint,
    CheckpointError,
    file_sha256,
    load_checkpoint,
    load_model_file,
    save_model,
)
from midisynth.model.hub import OFFICIAL_MODEL, cache_dir, cached_models, cached_snapshot, parse_hub_id
from midisynth.model.samplers import DIFFUSERS_SAMPLING, SamplingDefaults

# Sampling of known diffusers-layout checkpoints on the hub (others get diffusers' own, DIFFUSERS_SAMPLING).
HUB_SAMPLING: dict[str, SamplingDefaults] = {OFFICIAL_MODEL: DIFFUSERS_SAMPLING}

BUNDLED_DIR = Path(__file__).parents[1] / "assets" / "default"
MANIFEST = BUNDLED_DIR / "manifest.json"
PARTIALS_FILE = "partials.safetensors"  # a model file's partials model (midisynth.model.partials) sits beside it


class NoDefaultModel(CheckpointError):
    """Raised when no model is given and none is bundled."""


def bundled_manifest() -> dict | None:
    """The bundled default model's manifest (files and sha256 hashes), or None when none is installed."""
    if not MANIFEST.exists():
        return None
    return json.loads(MANIFEST.read_text())


def bundled_sampling(manifest: dict) -> SamplingDefaults | None:
    """The bundled model's sampling defaults from its manifest (None when the manifest states none)."""
    entry = manifest["model"].get("sampling")
    return None if entry is None else SamplingDefaults.from_json(json.dumps(entry))


def hub_sampling(repo_id: str) -> SamplingDefaults:
    """The sampling defaults of a diffusers-layout checkpoint on the hub (`HUB_SAMPLING`, else diffusers')."""
    return HUB_SAMPLING.get(repo_id, DIFFUSERS_SAMPLING)


def resolve_model(model: str | Path | None = None, allow_pickle: bool = False) -> Checkpoint:
    """Load the named model: a path when it exists, else a hub id from the Hugging Face cache (never downloads;
    raises `hub.HubError`, or ImportError without huggingface_hub); None means the bundled default, verified against
    its manifest hashes."""
    if model is not None:
        path = Path(model).expanduser()
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
    manifest = bundled_manifest()
    if manifest is None:
        raise NoDefaultModel(
            "no default model is installed yet: pass --model PATH (a midisynth .safetensors file or a "
            f"diffusers-layout checkpoint directory) or a hub id such as {OFFICIAL_MODEL} (`midisynth download`)"
        )
    entry = manifest["model"]
    checkpoint = load_model_file(BUNDLED_DIR / entry["file"], expected_sha256=entry["sha256"])
    checkpoint.sampling = bundled_sampling(manifest) or checkpoint.sampling
    checkpoint.vocoder_path = _bundled_file(manifest, "vocoder")
    checkpoint.partials_path = _bundled_file(manifest, "partials")
    return checkpoint


def model_listing() -> Iterator[str]:
    """What `midisynth models` prints, line by line: what `--precision auto` computes in on this machine's devices,
    the bundled model and the files beside it (with the sampling and partials share renders take by default), and
    the Spectrogram Diffusion checkpoints in the Hugging Face cache with their sampling."""
    import torch

    from midisynth.model.partials import load_partials
    from midisynth.precision import explain, hardware

    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        yield f"precision {explain(hardware(device))}"
    manifest = bundled_manifest() or {}
    if not manifest:
        yield "no bundled default model installed"
    for role, entry in manifest.items():
        details = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("file", "sha256", "sampling"))
        yield f"{role}: {BUNDLED_DIR / entry['file']}  sha256={entry['sha256'][:16]}…  {details}"
        if role == "model":
            yield f"  sampling: {bundled_sampling(manifest) or 'by its prediction type'}"
        if role == "partials":
            yield f"  share in renders: {load_partials(BUNDLED_DIR / entry['file']).mix:g} (--partials)"
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


def convert_model(source: str | Path, output: str | Path, half: bool = False, allow_pickle: bool = False,
                  overwrite: bool = False) -> str:
    """Write the model `source` names (`resolve_model`: a diffusers-layout directory, a cached hub id, a midisynth
    file) to `output` in midisynth's single-file format, with its sampling defaults and where it came from (the hub
    id and commit, else the file's name); float16 weights with `half`. Returns the file's sha256; OutputError without
    `overwrite` for a file that exists when it is complete."""
    import torch

    checkpoint = resolve_model(source, allow_pickle=allow_pickle)
    origin = checkpoint.metadata.get("hub_id") or Path(source).name
    metadata = {"converted_from": origin, "sampling": checkpoint.sampling.to_json()}
    return save_model(checkpoint.model, output, metadata, dtype=torch.float16 if half else torch.float32,
                      replace=overwrite)


def _bundled_file(manifest: dict, kind: str) -> Path | None:
    """The bundled file of `kind` ("vocoder", "partials") the manifest lists, verified against its sha256."""
    entry = manifest.get(kind)
    if entry is None:
        return None
    path = BUNDLED_DIR / entry["file"]
    if not path.is_file() or file_sha256(path) != entry["sha256"]:
        raise CheckpointError(f"{path}: bundled {kind} missing or corrupted (sha256 mismatch); reinstall midisynth")
    return path
