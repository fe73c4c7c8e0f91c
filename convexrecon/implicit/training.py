"""DEQ and unrolled training on :func:`convexrecon.training.fit`.

- :func:`recon_loss_fn`: ``loss_fn(model, batch)`` for any ``forward(y, A)`` model on
  a :class:`convexrecon.data.Batch`: the mean normalised squared error, plus the
  model's ``extra_loss()`` (a DEQ's Jacobian regularisation and ``rho`` hinge). With a
  :class:`WarmStartCache`, a DEQ starts each sample from its last fixed point, moved
  into the frame (low-resolution phase and norm) of the sample's new data (see
  :mod:`convexrecon.implicit.warmstart`). The DEQ's forward
  iterations, residual, ``rho``, divergences and warm-start hits are reported as
  extra metrics.
- :class:`DEQHooks`: the hooks of :func:`fit` for a DEQ. A batch whose forward
  diverged (blown-up or NaN residual, or measured ``rho >= 1``) or whose loss is not
  finite is rejected: no backward and no optimiser step, so the Adam state is
  untouched. After ``max_diverged`` rejected batches in a row, training stops with
  :class:`TrainingDiverged`. The warm-start cache and the counters are saved in
  every checkpoint and restored on resume.
- :func:`recon_val_fn`: validation loss and PSNR (dB, magnitudes).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from convexrecon.errors import InputError
from convexrecon.implicit.deq import DEQ
from convexrecon.implicit.warmstart import WarmStartCache
from convexrecon.training import Hooks
from convexrecon.training.distributed import unwrap

__all__ = ["recon_loss_fn", "recon_val_fn", "DEQHooks", "TrainingDiverged", "sample_nmse"]


class TrainingDiverged(InputError):
    """Training stopped after too many diverged batches in a row."""


def sample_nmse(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||x - t||^2 / ||t||^2`` (batch first)."""
    dims = tuple(range(1, x.ndim))
    err = (x - target).abs().pow(2).sum(dim=dims)
    ref = target.abs().pow(2).sum(dim=dims).clamp_min(torch.finfo(err.dtype).tiny)
    return err / ref


def _forward(model: nn.Module, batch: Any, warm: WarmStartCache | None) -> tuple[torch.Tensor, float | None]:
    """The model's output, and the fraction of warm-started samples (None without a cache)."""
    A = batch.operator()
    y = batch.kspace
    inner = unwrap(model)
    if isinstance(inner, DEQ) and warm is not None:
        aty = A.adjoint(y)
        frame = warm.frame(aty)  # one low-pass of A^H y for the lookup and the update
        z0, hit = warm.lookup(batch.index, aty, reference=frame)
        x = model(y, A, z0=z0)
        keep = ~inner.last_info.diverged.reshape(-1)
        warm.update(batch.index, x.detach(), keep=keep, reference=frame)
        return x, float(hit.to(torch.float64).mean())
    return model(y, A), None


def recon_loss_fn(*, warm: WarmStartCache | None = None) -> Callable[[nn.Module, Any], Any]:
    """``loss_fn(model, batch) -> (loss, extras)`` for :func:`convexrecon.training.fit`."""

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.target is None:
            raise InputError("batch: expected training samples with a target image")
        x, warm_hits = _forward(model, batch, warm)
        loss = sample_nmse(x, batch.target.to(x.dtype)).mean()
        inner = unwrap(model)
        extras: dict[str, float] = {}
        if isinstance(inner, DEQ) and inner.last_info is not None:
            info = inner.last_info
            reg = inner.extra_loss()
            if isinstance(reg, torch.Tensor):
                extras["stab_reg"] = float(reg.detach())  # Jacobian + rho-hinge terms
                loss = loss + reg
            extras["fwd_iters"] = float(info.forward.iterations.to(torch.float64).mean())
            extras["fwd_residual"] = float(info.forward.best_rel_residual.max())
            extras["diverged"] = float(info.diverged.to(torch.float64).mean())
            if info.rho is not None:
                extras["rho"] = float(info.rho.max())
            if warm_hits is not None:
                extras["warm_hits"] = warm_hits
        return loss, extras

    return loss_fn


def recon_val_fn(model: nn.Module, batch: Any) -> dict[str, float]:
    """Validation: mean NMSE (as ``loss``) and PSNR of magnitudes (dB)."""
    from convexrecon.metrics import psnr

    x = model(batch.kspace, batch.operator())
    target = batch.target.to(x.dtype)
    values = [psnr(x[i], target[i]) for i in range(x.shape[0])]
    return {"loss": float(sample_nmse(x, target).mean()), "psnr": sum(values) / len(values)}


class DEQHooks(Hooks):
    """Skip diverged batches, stop after ``max_diverged`` in a row, checkpoint the warm starts.

    Args:
        model: the DEQ being trained (or its DDP wrapper).
        warm: the warm-start cache, or None.
        max_diverged: consecutive rejected batches that end training.
    """

    def __init__(self, model: nn.Module, *, warm: WarmStartCache | None = None,
                 max_diverged: int = 5) -> None:
        if isinstance(max_diverged, bool) or not isinstance(max_diverged, int) or max_diverged < 1:
            raise InputError(f"max_diverged: expected an integer >= 1, got {max_diverged!r}")
        self.model, self.warm, self.max_diverged = model, warm, max_diverged
        self.streak = 0
        self.total = 0

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"diverged_streak": self.streak, "diverged_total": self.total}
        if self.warm is not None:
            state["warm_start"] = self.warm.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.streak = int(state.get("diverged_streak", 0))
        self.total = int(state.get("diverged_total", 0))
        if "warm_start" in state:
            if self.warm is None:
                raise InputError("checkpoint holds warm-start fixed points; resume with --warm-start")
            self.warm.load_state_dict(state["warm_start"])

    def accept(self, loss: torch.Tensor, *, epoch: int, step: int) -> bool:
        inner = unwrap(self.model)
        info = getattr(inner, "last_info", None)
        bad = not bool(torch.isfinite(loss).all()) or (info is not None and info.any_diverged)
        if not bad:
            self.streak = 0
            return True
        self.streak += 1
        self.total += 1
        if self.streak >= self.max_diverged:
            raise TrainingDiverged(
                f"training diverged: {self.streak} batches in a row (epoch {epoch}, step {step}) had a "
                f"diverged fixed point or a non-finite loss; try --spectral-norm, --jac-reg, a smaller "
                f"learning rate or more --max-iter")
        return False
