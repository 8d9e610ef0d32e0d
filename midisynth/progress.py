"""Progress bars on standard error, with rich (which typer already brings): one display of one or more bars, each
`Progress.add_task(description, total=..., completed=...)`, with its extra fields (`update(task, loss="0.0123")`)
shown as name=value; lines written to standard error while it shows appear above it."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _Fields(ProgressColumn):
    """A bar's extra fields as name=value."""

    def render(self, task: Task) -> Text:
        return Text(" ".join(f"{name}={value}" for name, value in task.fields.items()))


class _Bars(Progress):
    """A Progress display that starts with its first bar: one that ends before any (a refused argument) shows
    nothing."""

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc) -> None:
        if self.live.is_started:
            self.stop()

    def add_task(self, *args, **kwargs) -> TaskID:
        if not self.live.is_started:
            self.start()
        return super().add_task(*args, **kwargs)


def progress_bars(enabled: bool = True) -> Progress:
    """A display of progress bars (a context manager); nothing is shown unless `enabled`."""
    return _Bars(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        _Fields(),
        console=Console(stderr=True),
        transient=False,
        disable=not enabled,
    )
