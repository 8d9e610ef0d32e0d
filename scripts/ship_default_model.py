"""Install trained weights as the bundled default model: fp16 copy + manifest with sha256 hashes, with the partials
model found beside the weights (`midisynth fit-partials`, partials.safetensors) and a vocoder if given.

    python scripts/ship_default_model.py runs/default/note_roll/model.safetensors [--vocoder runs/vocoder/vocoder.safetensors]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from midisynth.model.checkpoints import file_sha256, load_model_file, save_model
from midisynth.model.resolve import BUNDLED_DIR, MANIFEST, PARTIALS_FILE


def bundle(source: Path, name: str) -> dict:
    """Copy `source` into the bundle as `name`; its manifest entry."""
    shutil.copyfile(source, BUNDLED_DIR / name)
    return {"file": name, "sha256": file_sha256(BUNDLED_DIR / name)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="trained midisynth .safetensors (EMA weights)")
    parser.add_argument("--vocoder", type=Path, help="trained vocoder .safetensors to bundle beside it")
    args = parser.parse_args()
    checkpoint = load_model_file(args.model)
    BUNDLED_DIR.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in checkpoint.metadata.items() if k not in ("format", "model_config")}
    digest = save_model(checkpoint.model, BUNDLED_DIR / "model.safetensors", meta, dtype=torch.float16)
    manifest = {"model": {"file": "model.safetensors", "sha256": digest, **meta}}
    if (args.model.parent / PARTIALS_FILE).is_file():
        manifest["partials"] = bundle(args.model.parent / PARTIALS_FILE, PARTIALS_FILE)
    if args.vocoder:
        manifest["vocoder"] = bundle(args.vocoder, "vocoder.safetensors")
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
