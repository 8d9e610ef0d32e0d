"""The command's standard streams when they are closed or fail: no traceback, a sensible exit status.

- A stream the command was started without (`<&-`, `>&-`, `2>&-`) has its descriptor taken by /dev/null, so no file
  the command opens gets descriptor 0, 1 or 2 and receives what was meant for the stream.
- Standard input closed reads as empty (`info -` says the input is empty).
- Standard output closed or failing (a full disk, `>/dev/full`): the first write or flush that fails raises
  `StandardOutputError`, which the command line reports in one line and exits with status 1.
- Standard error closed or failing: the messages it would carry are dropped; the command's work and exit status
  are unchanged (there is nowhere to report to).
"""

from __future__ import annotations

import errno
import io
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn


class StandardOutputError(Exception):
    """Standard output could not be written; the message says why, `errno` its cause (EPIPE: the reader is gone)."""

    def __init__(self, message: str, errno_: int | None):
        super().__init__(message)
        self.errno = errno_


class _ClosedDescriptor(io.RawIOBase):
    """What standard output writes to when the command was started without it: every write fails (EBADF)."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(errno.EBADF, "standard output is closed")


class _GuardedStream:
    """A text stream whose failing writes and flushes raise StandardOutputError (`strict`, standard output) or are
    dropped (standard error); everything else is the stream's own."""

    def __init__(self, stream: Any, strict: bool):
        self._stream = stream
        self._strict = strict

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _call(self, method, *args) -> Any:
        try:
            return method(*args)
        except (OSError, ValueError) as err:  # ValueError: a stream already closed
            if self._strict:
                reason = getattr(err, "strerror", None) or err
                raise StandardOutputError(
                    f"standard output: write failed ({reason})", getattr(err, "errno", None)
                ) from None
            return None

    def write(self, text: str) -> int | None:
        return self._call(self._stream.write, text)

    def flush(self) -> None:
        self._call(self._stream.flush)


def _occupy_closed_descriptors() -> None:
    """Open /dev/null on each of descriptors 0, 1 and 2 that is closed (lowest free descriptor first)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)


def guard_standard_streams() -> None:
    """Set up sys.stdin, sys.stdout and sys.stderr as the module docstring says, first thing (again: no change)."""
    _occupy_closed_descriptors()
    if sys.stdin is None:
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 (open for the life of the process)
    if not isinstance(sys.stdout, _GuardedStream):
        closed = sys.stdout is None
        stdout = io.TextIOWrapper(io.BufferedWriter(_ClosedDescriptor()), encoding="utf-8") if closed else sys.stdout
        sys.stdout = _GuardedStream(stdout, strict=True)
    if not isinstance(sys.stderr, _GuardedStream):
        stderr = open(os.devnull, "w", encoding="utf-8") if sys.stderr is None else sys.stderr  # noqa: SIM115
        sys.stderr = _GuardedStream(stderr, strict=False)


def run_and_exit(main: Callable[[], object], name: str) -> NoReturn:
    """Run a command's `main` with guarded standard streams (`guard_standard_streams`), then end the process with
    the status it meant, without the interpreter's teardown: once torch is loaded that teardown (its C++ state and
    the many objects it made) costs a noticeable part of a short command's time, and every command has written and
    closed its outputs before it returns. A failure of standard output ends it with one line ("NAME: reason") and
    status 1, unless its reader has gone (`| head` closes it on purpose: no line)."""
    guard_standard_streams()
    status: object
    try:
        main()
        sys.stdout.flush()
        status = 0
    except SystemExit as stop:
        status = stop.code
    except StandardOutputError as err:
        status = _output_failed(err, name)
    if status is not None and not isinstance(status, int):  # sys.exit("message") prints it and means failure
        print(status, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except StandardOutputError as err:
            status = status or _output_failed(err, name)
    os._exit(status or 0)


def _output_failed(err: StandardOutputError, name: str) -> int:
    """Say that standard output failed (not when its reader has gone); the exit status."""
    if err.errno != errno.EPIPE:
        print(f"{name}: {err}", file=sys.stderr)
    return 1
