"""The package reads in the order the data flows: the lower packages import nothing from the ones above them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "midisynth"
LOWER = ("score", "model", "vocoders")
HIGHER = ("render", "jobs", "data", "training", "evaluation", "commands", "cli")


def imported_modules(path: Path) -> set[str]:
    """Every midisynth module `path` imports, at its top or inside a function (`from midisynth.x import y` gives
    both midisynth.x and midisynth.x.y, since y may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: relative import; midisynth imports by absolute names")
    return {name for name in found if name == "midisynth" or name.startswith("midisynth.")}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("package", LOWER)
def test_lower_packages_import_nothing_from_higher_ones(package):
    wrong = sorted(
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in (PACKAGE / package).rglob("*.py")
        for module in imported_modules(path)
        if _layer(module) in HIGHER
    )
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from midisynth.render.pipeline import Synthesizer\n")
    assert imported_modules(source) == {"midisynth.render.pipeline", "midisynth.render.pipeline.Synthesizer"}
