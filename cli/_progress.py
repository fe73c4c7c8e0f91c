"""A rich progress bar on stderr that shows the iteration and the objective.

The reconstructions call ``callback(progress)`` after each iteration.
:class:`SolveProgress` builds such a callback: it advances the bar and shows the
objective carried by the progress object. Where the objective is computed on access
(:class:`convexrecon.recon.Progress`), it is read at most every ``refresh`` seconds
and at the last iteration, so the bar costs next to nothing.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["SolveProgress", "stderr_console", "stdout_console"]


def stderr_console() -> Console:
    """The console for progress output (stderr, so stdout stays clean)."""
    return Console(stderr=True)


def stdout_console() -> Console:
    """The console for tables: wide enough for them when stdout is not a terminal
    (rich would otherwise assume 80 columns and truncate the labels)."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 120))
    return console


def _objective_of(state: Any) -> float | None:
    """The latest objective carried by a solver state, if any."""
    for name in ("objective", "objective_value", "obj", "loss"):
        value = getattr(state, name, None)
        if value is None and isinstance(state, dict):
            value = state.get(name)
        if value is not None:
            try:
                val = float(value)
            except (TypeError, ValueError):
                continue
            return val
    history = getattr(state, "history", None)
    values = getattr(history, "objective", None)
    if values:
        return float(values[-1])
    return None


class SolveProgress:
    """Context manager: a progress bar for ``total`` iterations of one solve.

    Args:
        total: the number of iterations expected.
        description: the text before the bar (e.g. the method name).
        enabled: when False nothing is drawn (``--quiet``).
        console: where to draw (default: stderr).
        refresh: seconds between two reads of the objective.
    """

    def __init__(self, total: int | None, description: str, *, enabled: bool = True,
                 console: Console | None = None, refresh: float = 0.5) -> None:
        self.total = total
        self.description = description
        self.enabled = enabled
        self.console = console or stderr_console()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self.count = 0
        self.objective: float | None = None
        self.refresh = refresh
        self._last_read = -math.inf

    def __enter__(self) -> "SolveProgress":
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("objective {task.fields[objective]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, objective="-")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def update(self, *, iteration: int | None = None, objective: float | None = None) -> None:
        """Move the bar to ``iteration`` (or one step on) and show ``objective``."""
        self.count = int(iteration) if iteration is not None else self.count + 1
        if objective is not None and math.isfinite(objective):
            self.objective = objective
        if self._progress is not None and self._task is not None:
            shown = f"{self.objective:.5g}" if self.objective is not None else "-"
            self._progress.update(self._task, completed=self.count, objective=shown)

    def callback(self) -> Callable[[Any], None]:
        """A solver callback ``callback(state)`` that feeds this bar."""

        def _callback(state: Any) -> None:
            it = getattr(state, "it", None)
            total = getattr(state, "max_iter", None) or self.total
            if self._progress is None:
                self.update(iteration=int(it) if it is not None else None)
                return
            if total is not None and total != self.total and self._task is not None:
                self.total = int(total)
                self._progress.update(self._task, total=self.total)
            now = time.perf_counter()
            last = it is not None and total is not None and int(it) >= int(total)
            objective = None
            if last or now - self._last_read >= self.refresh:
                objective = _objective_of(state)
                self._last_read = time.perf_counter()
            self.update(iteration=int(it) if it is not None else None, objective=objective)

        return _callback
