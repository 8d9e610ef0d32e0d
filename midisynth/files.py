"""Writing files atomically: a temporary file beside the target, renamed onto it once complete, so that a reader
never sees a half-written file and an interrupted write leaves the previous file (or none). Unless replacing is
asked for, the rename never replaces a file that appeared meanwhile (another program writing the same output);
a target that is not a regular file (a device such as /dev/null, a named pipe) is never replaced: it is written
into."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


class OutputError(OSError):
    """An output that cannot be written; the message says which and why."""


def _default_file_mode() -> int:
    """The permissions open() would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


TEMPORARY_PREFIX, TEMPORARY_SUFFIX = ".midisynth-", ".part"  # short, so any legal output name has a temporary name


def is_special_file(path: str | Path) -> bool:
    """Whether `path` exists and is neither a regular file nor a directory (a device, a named pipe, a socket)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        raise OutputError(f"{path}: {err.strerror or err}") from None
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _publish(tmp: Path, path: Path, replace: bool) -> None:
    """Move the finished `tmp` onto `path`; without `replace`, fail rather than replace a file that exists now.

    The no-replace move is a hard link (atomic: it fails if the name exists), then the temporary name is removed.
    File systems without hard links fall back to a check followed by a rename."""
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputError(
            f"{path}: already exists (written by another program meanwhile? pass --overwrite to replace it)"
        ) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        if path.exists():
            raise OutputError(f"{path}: already exists (pass --overwrite to replace it)") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def make_output_directory(directory: Path, target: str | Path) -> None:
    """Create `directory` and its parents (a batch mirrors its input tree); OutputError naming `target` if not."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = "a file has that name" if isinstance(err, FileExistsError) else err.strerror or err
        raise OutputError(f"{target}: cannot create the output directory {directory} ({reason})") from None


def check_creatable(path: Path) -> None:
    """Raise OutputError unless a file can be written at `path` (its directory exists and takes new files, and
    `path` is not a directory): checked before long work whose result would otherwise be lost."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    if not directory.is_dir():
        raise OutputError(f"{path}: {directory} {'is a file' if directory.exists() else 'does not exist'}")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".midisynth-", suffix=".part")
    except OSError as err:
        raise OutputError(f"{path}: cannot write in {directory} ({err.strerror or err})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_directory(directory: Path, probe: str) -> None:
    """OutputError unless `directory` exists or can be made (it is made), and a file `probe` can be written in it:
    checked before long work that writes there (a data set, a training run)."""
    make_output_directory(directory, directory)
    check_creatable(Path(directory) / probe)


@contextmanager
def atomic_path(path: Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` if the block succeeds, delete it otherwise.

    `replace=False` refuses (OutputError) to replace a file that exists when the block ends. A `path` that is a
    device or a named pipe is yielded itself, to be written into, never replaced.
    The finished file gets the permissions a plain open() would give, so it is readable like any other output
    rather than private to its owner (mkstemp's 0600), even when the writer replaced the temporary file with its
    own (safetensors' save_file does, with 0600).
    """
    path = Path(path)
    if is_special_file(path):
        yield path
        return
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX)
    except OSError as err:
        raise OutputError(f"{path}: cannot write in {directory} ({err.strerror or err})") from None
    tmp = Path(tmp_name)
    try:
        os.close(fd)
        yield tmp
        os.chmod(tmp, _default_file_mode())
        _publish(tmp, path, replace)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, write, replace: bool = True) -> None:
    """Call write(binary file) on a temporary file beside `path`, then move it into place (OutputError naming
    `path` if that fails; without `replace`, also if `path` exists by then)."""
    try:
        with atomic_path(path, replace) as tmp, open(tmp, "wb") as f:
            write(f)
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(f"{path}: write failed ({err.strerror or err})") from None


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """np.save through a temporary file and a rename."""
    write_atomic(path, lambda f: np.save(f, array))


def save_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))
