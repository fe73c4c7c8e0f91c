"""Rich progress bars for :func:`~convexrecon.training.fit`: epochs, steps, the loss and the
step's extra metrics (what ``loss_fn`` returned beside the loss, e.g. a DEQ's forward
iterations and residual)."""

from __future__ import annotations

import math
import sys
from typing import Any, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as _Rich, TextColumn, TimeElapsedColumn

__all__ = ["Progress", "step_info"]


def step_info(loss: float, extras: Mapping[str, float] | None = None) -> str:
    """The step bar's text: ``loss 0.01 | fwd_iters 12 | fwd_residual 0.0009`` (or ``skipped``)."""
    if not math.isfinite(loss):
        return "skipped"
    return " | ".join([f"loss {loss:.4g}"] + [f"{k} {v:.3g}" for k, v in (extras or {}).items()])


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

    def advance(self, loss: float, extras: Mapping[str, float] | None = None) -> None:
        if self._rich is not None:
            info = step_info(loss, extras)
            self._rich.update(self._step_task, advance=1, info=info)

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        if self._rich is not None:
            parts = [f"{k} {v:.4g}" for k, v in metrics.items() if k.endswith("loss") and isinstance(v, float)]
            self._rich.update(self._epoch_task, advance=1, info=", ".join(parts))
