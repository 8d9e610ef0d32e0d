"""Install trained weights as the bundled default model: fp16 copy + manifest with sha256 hashes, with the partials
model and the refiner found beside the weights (`midisynth fit-partials`, partials.safetensors; `midisynth
fit-refiner`, refiner.safetensors) and a vocoder if given.

    python scripts/ship_default_model.py runs/default/note_roll/model.safetensors [--vocoder runs/vocoder/vocoder.safetensors]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from midisynth.model.checkpoints import load_model_file
from midisynth.model.directory import PARTIALS_FILE, REFINER_FILE, write_model_directory
from midisynth.model.resolve import BUNDLED_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="trained midisynth .safetensors (EMA weights)")
    parser.add_argument("--vocoder", type=Path, help="trained vocoder .safetensors to bundle beside it")
    args = parser.parse_args()
    checkpoint = load_model_file(args.model)
    partials, refiner = (args.model.parent / name for name in (PARTIALS_FILE, REFINER_FILE))
    meta = {k: v for k, v in checkpoint.metadata.items() if k not in ("format", "model_config")}
    manifest = write_model_directory(
        BUNDLED_DIR,
        checkpoint.model,
        meta,
        partials=partials if partials.is_file() else None,
        vocoder=args.vocoder,
        refiner=refiner if partials.is_file() and refiner.is_file() else None,
    )
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
