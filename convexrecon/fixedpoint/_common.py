"""Shared machinery of the fixed-point solvers (internal).

The solvers work on a flat real view ``(n, d)`` of the batch: ``n`` samples of ``d``
real numbers (a complex ``z`` contributes its real and imaginary parts), so that
mixing coefficients stay real and ``f`` may be only real-linear. :class:`_Run`
converts between the two views, evaluates ``f``, applies the stopping rule per
sample and keeps the lowest-residual iterate of every sample.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from convexrecon._checks import check_choice
from convexrecon.errors import InputError
from convexrecon.fixedpoint.stats import FixedPointStats

__all__ = ["STOP_MODES", "check_common", "_Run"]

STOP_MODES = ("rel", "abs")


def _pos_float(value: float, name: str, *, strict: bool = True) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (strict and v == 0):
        raise InputError(f"{name}: expected a finite number {'>' if strict else '>='} 0, got {value!r}")
    return v


def _int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def check_common(f: Callable, z0: torch.Tensor, *, max_iter: int, tol: float, stop: str,
                 batch_dims: int, divergence: float) -> None:
    """Validate the options all solvers share."""
    if not callable(f):
        raise InputError(f"f: expected a callable z -> f(z), got {type(f).__name__}")
    if not isinstance(z0, torch.Tensor) or not (z0.is_floating_point() or z0.is_complex()):
        raise InputError(f"z0: expected a float or complex tensor, got "
                         f"{getattr(z0, 'dtype', type(z0).__name__)}")
    _int(max_iter, "max_iter", 0)
    _pos_float(tol, "tol", strict=False)
    check_choice(stop, STOP_MODES, "stop")
    _int(batch_dims, "batch_dims", 0)
    if batch_dims > z0.ndim:
        raise InputError(f"batch_dims: expected at most z0.ndim = {z0.ndim}, got {batch_dims}")
    _pos_float(divergence, "divergence")
    if divergence <= 1:
        raise InputError(f"divergence: expected a factor > 1, got {divergence!r}")


class _Run:
    """One batched solve: views, evaluations, stopping and best-iterate tracking."""

    def __init__(self, solver: str, f: Callable, z0: torch.Tensor, *, tol: float, stop: str,
                 batch_dims: int, divergence: float) -> None:
        self.solver, self.f, self.z0 = solver, f, z0
        self.shape, self.dtype = z0.shape, z0.dtype
        self.batch_shape = z0.shape[:batch_dims]
        self.n = int(math.prod(self.batch_shape))
        self.tol, self.stop, self.div = float(tol), stop, float(divergence)
        self.res_trace: list[torch.Tensor] = []
        self.rel_trace: list[torch.Tensor] = []
        self.nfe = 0
        dev = z0.device
        self.iterations = torch.zeros(self.n, dtype=torch.long, device=dev)
        self.done = torch.zeros(self.n, dtype=torch.bool, device=dev)
        self.reason = ["max_iter"] * self.n
        self.r0: torch.Tensor | None = None

    # -- views -----------------------------------------------------------------
    def flat(self, z: torch.Tensor) -> torch.Tensor:
        """``(*batch, ...)`` -> real ``(n, d)``."""
        z = z.detach()
        if z.is_complex():
            z = torch.view_as_real(z.resolve_conj())
        return z.reshape(self.n, -1)

    def unflat(self, x: torch.Tensor) -> torch.Tensor:
        """Real ``(n, d)`` -> ``(*batch, ...)`` of the input's dtype."""
        if self.dtype.is_complex:
            return torch.view_as_complex(x.reshape(*self.shape, 2).contiguous())
        return x.reshape(self.shape)

    # -- evaluation and bookkeeping ---------------------------------------------
    def evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f`` at flat ``x``: returns flat ``f(x)`` and the residual ``g = f(x) - x``."""
        fz = self.f(self.unflat(x))
        if not isinstance(fz, torch.Tensor) or fz.shape != self.shape:
            raise InputError(f"f: expected to return a tensor of shape {tuple(self.shape)}, "
                             f"got {getattr(fz, 'shape', type(fz).__name__)}")
        self.nfe += 1
        fx = self.flat(fz.to(self.dtype))
        return fx, fx - x

    def record(self, x: torch.Tensor, fx: torch.Tensor, g: torch.Tensor, k: int) -> None:
        """Residuals of the live samples, their best iterate, and their stopping."""
        res = torch.linalg.vector_norm(g, dim=1)
        fnorm = torch.linalg.vector_norm(fx, dim=1)
        rel = res / torch.clamp(fnorm, min=torch.finfo(res.dtype).tiny)
        live = ~self.done
        nan = torch.full_like(res, float("nan"))
        self.res_trace.append(torch.where(live, res, nan))
        self.rel_trace.append(torch.where(live, rel, nan))
        if self.r0 is None:  # first evaluation: every sample's starting point
            self.r0 = res.clone()
            self.best_res, self.best_rel = res.clone(), rel.clone()
            self.best_x = x.clone()
            self.best_iter = torch.zeros_like(self.iterations)
            self.improved = torch.isfinite(res)
        else:
            better = live & torch.isfinite(res) & ((res < self.best_res) | ~torch.isfinite(self.best_res))
            self.improved = better
            self.best_res = torch.where(better, res, self.best_res)
            self.best_rel = torch.where(better, rel, self.best_rel)
            self.best_iter = torch.where(better, self.iterations, self.best_iter)
            self.best_x = torch.where(better[:, None], x, self.best_x)
        measure = rel if self.stop == "rel" else res
        conv = live & (measure <= self.tol)
        blown = live & ~conv & (~torch.isfinite(res) | (res > self.div * torch.clamp(self.r0, min=self.tol)))
        self._finish(conv, "converged")
        self._finish(blown, "diverged")

    def _finish(self, which: torch.Tensor, reason: str) -> None:
        if bool(which.any()):
            for i in torch.nonzero(which).flatten().tolist():
                self.reason[i] = reason
            self.done |= which

    def stagnate(self, which: torch.Tensor) -> None:
        """Stop the live samples in ``which`` (no progress possible)."""
        self._finish(which & ~self.done, "stagnated")

    @property
    def live(self) -> torch.Tensor:
        return ~self.done

    def advance(self, live: torch.Tensor) -> None:
        self.iterations += live.to(torch.long)

    def iterate(self, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
                max_iter: int) -> tuple[torch.Tensor, FixedPointStats]:
        """The loop of the one-step methods: ``step(x, g)`` gives every sample's next
        iterate from ``x`` and its residual ``g``; the samples still running take it."""
        with torch.no_grad():
            x = self.flat(self.z0).clone()
            fx, g = self.evaluate(x)
            self.record(x, fx, g, 0)
            for k in range(max_iter):
                live = self.live
                if not bool(live.any()):
                    break
                x = torch.where(live[:, None], step(x, g), x)
                self.advance(live)
                fx, g = self.evaluate(x)
                self.record(x, fx, g, k + 1)
        return self.result()

    def result(self, inverse_jacobian=None) -> tuple[torch.Tensor, FixedPointStats]:
        bs = self.batch_shape
        stats = FixedPointStats(
            solver=self.solver,
            residuals=torch.stack(self.res_trace).reshape(-1, *bs),
            rel_residuals=torch.stack(self.rel_trace).reshape(-1, *bs),
            iterations=self.iterations.reshape(bs),
            reason=tuple(self.reason),
            best_iter=self.best_iter.reshape(bs),
            best_residual=self.best_res.reshape(bs),
            best_rel_residual=self.best_rel.reshape(bs),
            nfe=self.nfe,
            inverse_jacobian=inverse_jacobian,
        )
        return self.unflat(self.best_x), stats
