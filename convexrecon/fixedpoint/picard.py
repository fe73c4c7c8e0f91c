"""Picard (damped fixed-point) iteration ``z <- z + damping * (f(z) - z)``."""

from __future__ import annotations

from typing import Callable

import torch

from convexrecon.errors import InputError
from convexrecon.fixedpoint._common import _Run, check_common
from convexrecon.fixedpoint.stats import FixedPointStats

__all__ = ["picard"]


def picard(f: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor, *, max_iter: int = 50,
           tol: float = 1e-4, stop: str = "rel", damping: float = 1.0, batch_dims: int = 1,
           divergence: float = 1e4) -> tuple[torch.Tensor, FixedPointStats]:
    """Solve ``z = f(z)`` by damped Picard iteration, per sample.

    Args:
        f: the map, applied to a whole batch ``(*batch, ...)``; it must treat the
            samples independently (so that a batched run equals one-by-one runs).
        z0: the start, real or complex, with ``batch_dims`` leading batch axes.
        max_iter: the most updates per sample.
        tol: stop a sample when its residual ``||f(z) - z||`` (``stop="abs"``) or
            ``||f(z) - z|| / ||f(z)||`` (``stop="rel"``) is at most ``tol``.
        damping: the step ``0 < damping <= 1`` (1: plain Picard).
        batch_dims: leading axes of ``z0`` that index samples (0: one sample).
        divergence: a sample whose residual exceeds ``divergence`` times its first
            one, or turns NaN/Inf, stops as ``"diverged"``.

    Returns:
        ``(z, stats)``: the lowest-residual iterate of every sample and a
        :class:`~convexrecon.fixedpoint.stats.FixedPointStats`. Runs without the tape.
    """
    check_common(f, z0, max_iter=max_iter, tol=tol, stop=stop, batch_dims=batch_dims,
                 divergence=divergence)
    if not 0 < float(damping) <= 1:
        raise InputError(f"damping: expected a number in (0, 1], got {damping!r}")
    run = _Run("picard", f, z0, tol=tol, stop=stop, batch_dims=batch_dims, divergence=divergence)
    damping = float(damping)
    return run.iterate(lambda x, g: x + damping * g, max_iter=max_iter)
