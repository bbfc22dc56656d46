"""The progress bar of a sweep (rich, on stderr, with ETA)."""

from __future__ import annotations

__all__ = ["UnitProgress"]


class UnitProgress:
    """A rich progress bar with ETA over images × conditions (no-op when disabled)."""

    def __init__(self, enabled: bool, console, total: int):
        self.enabled = enabled and total > 0
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.p = Progress(
                TextColumn("[bold]{task.description:<28}"),
                BarColumn(bar_width=None),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console or Console(stderr=True),
                transient=False,
                expand=True,
            )
            self.task = self.p.add_task("evaluating", total=total)

    def __enter__(self):
        if self.enabled:
            self.p.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.p.__exit__(*exc)

    def describe(self, text: str) -> None:
        if self.enabled:
            self.p.update(self.task, description=text[:28])

    def advance(self, n: int) -> None:
        if self.enabled:
            self.p.advance(self.task, n)
