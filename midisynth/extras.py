"""Optional dependencies: imported when a feature needs them, with an install hint when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_extra(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module`, or raise ImportError saying which pip extra provides it for `feature`."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{feature} needs {module.split('.')[0]}: pip install 'midisynth[{extra}]'") from None
