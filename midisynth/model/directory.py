"""A midisynth model directory: a model file with what renders it, listed in a manifest.

    DIR/manifest.json          {"model": {"file", "sha256", "sampling", ...}, "partials": {"file", "sha256"},
                               "refiner": {...}, "vocoder": {...}}; only "model" is required
    DIR/model.safetensors      the model, fp16 (`midisynth.model.checkpoints`)
    DIR/partials.safetensors   its partials model (`midisynth.model.partials`), if it has one
    DIR/refiner.safetensors    its refiner (`midisynth.model.refiner`), if it has one
    DIR/vocoder.safetensors    its vocoder, if it has one

The bundled default model is one (`midisynth.model.resolve.BUNDLED_DIR`); `midisynth adapt` writes one. Every file is
checked against its sha256 when the model loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from midisynth.files import atomic_path, save_text_atomic
from midisynth.model.checkpoints import Checkpoint, CheckpointError, file_sha256, load_model_file, save_model
from midisynth.model.networks import SpectrogramDiffusion
from midisynth.model.samplers import SamplingDefaults

MANIFEST_NAME = "manifest.json"
MODEL_FILE = "model.safetensors"
PARTIALS_FILE = "partials.safetensors"  # also beside a single model file, a partials model found there is used
REFINER_FILE = "refiner.safetensors"  # likewise
VOCODER_FILE = "vocoder.safetensors"


def read_manifest(directory: Path) -> dict | None:
    """A model directory's manifest, or None when it has none; CheckpointError naming it when it cannot be read."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable model manifest ({err})") from None
    if not (
        isinstance(manifest, dict)
        and isinstance(manifest.get("model"), dict)
        and isinstance(manifest["model"].get("file"), str)
    ):
        raise CheckpointError(f"{path}: not a midisynth model manifest (no model file listed)")
    return manifest


def manifest_sampling(manifest: dict) -> SamplingDefaults | None:
    """The model's sampling defaults a manifest states (None when it states none)."""
    entry = manifest["model"].get("sampling")
    return None if entry is None else SamplingDefaults.from_json(json.dumps(entry))


def load_model_directory(directory: Path, fix: str = "restore it, or write the model again") -> Checkpoint:
    """The model of a model directory, with its partials model, refiner and vocoder, each verified against the
    manifest's sha256; CheckpointError naming a missing or altered file, with `fix` (what the user can do about it)."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise CheckpointError(f"{directory}: no {MANIFEST_NAME} (not a midisynth model directory)")
    entry = manifest["model"]
    checkpoint = load_model_file(Path(directory) / entry["file"], expected_sha256=entry.get("sha256"))
    checkpoint.sampling = manifest_sampling(manifest) or checkpoint.sampling
    checkpoint.vocoder_path = _listed_file(directory, manifest, "vocoder", fix)
    checkpoint.partials_path = _listed_file(directory, manifest, "partials", fix)
    checkpoint.refiner_path = _listed_file(directory, manifest, "refiner", fix)
    return checkpoint


def _listed_file(directory: Path, manifest: dict, kind: str, fix: str) -> Path | None:
    """The file of `kind` ("vocoder", "partials", "refiner") a manifest lists, verified against its sha256."""
    entry = manifest.get(kind)
    if entry is None:
        return None
    path = Path(directory) / entry["file"]
    if not path.is_file() or file_sha256(path) != entry.get("sha256"):
        raise CheckpointError(f"{path}: {kind} missing or corrupted (sha256 mismatch); {fix}")
    return path


def describe(directory: Path) -> list[str]:
    """Lines for a user about a model directory: each file with its hash and details, the model's sampling and the
    partials model's share in renders; CheckpointError when it is not a model directory."""
    from midisynth.model.partials import load_partials
    from midisynth.model.refiner import load_refiner

    manifest = read_manifest(directory)
    if manifest is None:
        raise CheckpointError(f"{directory}: no {MANIFEST_NAME} (not a midisynth model directory)")
    lines = []
    for role, entry in manifest.items():
        details = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("file", "sha256", "sampling"))
        lines.append(f"{role}: {Path(directory) / entry['file']}  sha256={str(entry.get('sha256'))[:16]}…  {details}")
        if role == "model":
            lines.append(f"  sampling: {manifest_sampling(manifest) or 'by its prediction type'}")
        if role == "partials":
            lines.append(f"  share in renders: {load_partials(Path(directory) / entry['file']).mix:g} (--partials)")
        if role == "refiner":
            shape = load_refiner(Path(directory) / entry["file"]).shape
            lines.append(f"  {shape.hidden} channels, sees {shape.reach_frames} frames either way (--no-refiner: off)")
    return lines


def write_model_directory(
    directory: Path,
    model: SpectrogramDiffusion,
    metadata: dict[str, str],
    partials: Path | None = None,
    vocoder: Path | None = None,
    refiner: Path | None = None,
) -> dict:
    """Write a model directory: the model in fp16 with `metadata` (its "sampling", a `SamplingDefaults.to_json()`,
    goes to the manifest too), copies of the `partials`, `refiner` and `vocoder` files, then the manifest, each file
    atomically; returns the manifest."""
    directory = Path(directory)
    digest = save_model(model, directory / MODEL_FILE, metadata, dtype=torch.float16)
    info = {k: v for k, v in metadata.items() if k not in ("format", "model_config", "sampling")}
    manifest: dict = {"model": {"file": MODEL_FILE, "sha256": digest, **info}}
    if "sampling" in metadata:
        manifest["model"]["sampling"] = json.loads(metadata["sampling"])
    files = (
        ("partials", partials, PARTIALS_FILE),
        ("refiner", refiner, REFINER_FILE),
        ("vocoder", vocoder, VOCODER_FILE),
    )
    for kind, source, name in files:
        if source is not None:
            if Path(source).resolve() != (directory / name).resolve():
                with atomic_path(directory / name) as tmp:
                    shutil.copyfile(source, tmp)
            manifest[kind] = {"file": name, "sha256": file_sha256(directory / name)}
    save_text_atomic(directory / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
    return manifest
