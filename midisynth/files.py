"""Writing files atomically: a temporary file beside the target, renamed onto it once complete, so that a reader
never sees a half-written file and an interrupted write leaves the previous file (or none)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def _default_file_mode() -> int:
    """The permissions open() would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds, delete it otherwise.

    The finished file gets the permissions a plain open() would give, so it is readable like any other output
    rather than private to its owner (mkstemp's 0600), even when the writer replaced the temporary file with its
    own (safetensors' save_file does, with 0600).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        os.close(fd)
        yield tmp
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, write) -> None:
    """Call write(binary file) on a temporary file beside `path`, then rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """np.save through a temporary file and a rename."""
    write_atomic(path, lambda f: np.save(f, array))


def save_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))
