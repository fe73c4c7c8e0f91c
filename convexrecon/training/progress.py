"""Rich progress bars for :func:`~convexrecon.training.fit`: epochs, steps and the loss."""

from __future__ import annotations

import math
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as _Rich, TextColumn, TimeElapsedColumn

__all__ = ["Progress"]


class Progress:
    """Two bars (epochs, steps of the current epoch) with the running loss; a no-op when disabled."""

    def __init__(self, *, enabled: bool, epochs: int) -> None:
        self.enabled = enabled
        self.epochs = epochs
        self._rich: _Rich | None = None
        self._epoch_task: Any = None
        self._step_task: Any = None

    def __enter__(self) -> "Progress":
        if self.enabled:
            self._rich = _Rich(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=Console(file=sys.stderr),
            )
            self._rich.__enter__()
            self._epoch_task = self._rich.add_task("epoch", total=self.epochs, info="")
            self._step_task = self._rich.add_task("step", total=1, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)
            self._rich = None

    def start_epoch(self, epoch: int, *, total: int, done: int) -> None:
        if self._rich is not None:
            self._rich.update(self._epoch_task, completed=epoch, description=f"epoch {epoch + 1}/{self.epochs}")
            self._rich.reset(self._step_task, total=total, completed=done, info="")

    def advance(self, loss: float) -> None:
        if self._rich is not None:
            info = f"loss {loss:.4g}" if math.isfinite(loss) else "skipped"
            self._rich.update(self._step_task, advance=1, info=info)

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        if self._rich is not None:
            parts = [f"{k} {v:.4g}" for k, v in metrics.items() if k.endswith("loss") and isinstance(v, float)]
            self._rich.update(self._epoch_task, advance=1, info=", ".join(parts))
