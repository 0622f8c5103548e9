"""Progress bars (rich) on stderr for long loops; silent when stderr is not a terminal."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..distributed import world

T = TypeVar("T")
_console = Console(stderr=True)


def progress_bar(items: Iterable[T], *, desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` showing a transient bar (no output when not interactive)."""
    if not sys.stderr.isatty() or not world().is_main:  # under torchrun, rank 0's bars only
        yield from items
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_console, transient=True) as progress:
        task_id = progress.add_task(desc, total=total)
        for item in items:
            yield item
            progress.advance(task_id)
