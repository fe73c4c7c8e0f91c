"""Full-batch convex solves with the training images sharded across processes.

A least-squares data term is a sum over images: with the images split across the
``W`` processes of a ``torch.distributed`` group,

    A.N x = sum_r A_r.N x,   A^H y = sum_r A_r^H y_r,   ||y||^2 = sum_r ||y_r||^2.

:class:`ShardedLeastSquares` wraps one process's term (its own images) and sums
these three pieces over the processes with
:func:`~convexrecon.collectives.all_reduce_sum`. Everything FISTA needs
(gradient, objective, duality-gap certificate, Lipschitz constant) is built from
them, so the variable, the regulariser and its prox stay replicated: every process
holds the same iterate and takes the same steps, and the solve equals the
one-process solve of all images (up to floating-point summation order).

:func:`shard_program` puts the wrapper into a copy of a composite program (e.g. a
:class:`~convexrecon.nets.layerwise_program.LayerProgram` built on this process's
images, with its gates and whitening computed from all of them) for
:class:`~convexrecon.solvers.fista.FISTA`, which runs unchanged. Each ``normal``
costs one all-reduce of the variable's size. Outside a process group the
all-reduces are no-ops and the wrapper is the plain term.
"""

from __future__ import annotations

import copy

import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.programs.composite import CompositeProgram
from convexrecon.programs.least_squares import LeastSquares
from convexrecon.collectives import all_reduce_sum
from convexrecon.operators.linalg import power_iteration

__all__ = ["ShardedLeastSquares", "shard_program"]


class ShardedLeastSquares(LeastSquares):
    """``sum_r 1/2 ||A_r x - y_r||^2 + mu/2 ||x||^2`` over the processes' shards.

    Args:
        local: this process's term (its images; one system, no batch axes).
        lipschitz: a Lipschitz constant of the summed normal (``None``: a power method
            on it, started from the same seeded vector on every process).
        power_iters: iterations of that power method.

    Collective: every process must construct it and call ``normal`` (hence FISTA's
    steps) together.
    """

    def __init__(self, local: LeastSquares, *, lipschitz: float | None = None,
                 power_iters: int = 60) -> None:
        if not isinstance(local, LeastSquares):
            raise InputError(f"local: expected a LeastSquares term, got {type(local).__name__}")
        if local.batch_shape:
            raise InputError("local: expected a term without batch axes (one system), got batch "
                             f"shape {local.batch_shape}")
        self.local = local
        self.op, self.y, self.mu = local.op, local.y, local.mu
        self.batch_shape, self.shape = (), local.shape
        with torch.no_grad():
            self.aty = all_reduce_sum(local.aty)
            self.y_norm2 = float(all_reduce_sum(torch.tensor(  # on the data's device: NCCL
                [local.y_norm2], dtype=torch.float64, device=local.aty.device)))
        self._lip = None if lipschitz is None else check_positive(lipschitz, "lipschitz")
        self.power_iters = int(power_iters)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``sum_r A_r.N x`` (one all-reduce); ``value`` and ``grad`` of the base term
        go through it."""
        return all_reduce_sum(self.local.normal(x))

    def y_norm2_per_system(self, batch_dims: int) -> torch.Tensor:
        if batch_dims:
            raise InputError(f"batch_dims: expected 0 for a sharded term, got {batch_dims!r}")
        return torch.tensor(self.y_norm2, dtype=torch.float64)

    def lipschitz(self) -> float:
        """``1.01 lambda_max(sum_r A_r.N) + mu`` (cached), or the given constant ``+ mu``."""
        if self._lip is None:
            self._lip = 1.01 * self._power_method()
        return self._lip + self.mu

    def lipschitz_per_system(self, batch_dims: int) -> torch.Tensor:
        if batch_dims:
            raise InputError(f"batch_dims: expected 0 for a sharded term, got {batch_dims!r}")
        return torch.tensor(self.lipschitz(), dtype=torch.float64)

    def _power_method(self) -> float:
        gen = torch.Generator(device="cpu").manual_seed(0)  # the same start on every process
        x = torch.randn(self.shape, generator=gen, dtype=self.aty.real.dtype)
        if self.aty.is_complex():
            x = torch.complex(x, torch.randn(self.shape, generator=gen, dtype=x.dtype))
        x = x.to(self.aty.device, self.aty.dtype)
        return max(power_iteration(self.normal, x, iters=self.power_iters, tol=1e-6), 1e-300)

    def to_cvxpy(self, expr, shape, *, basis=None):
        raise InputError("to_cvxpy: not available for a sharded data term (solve it on one process)")


def shard_program(program: CompositeProgram, *, lipschitz: float | None = None) -> CompositeProgram:
    """A shallow copy of ``program`` whose least-squares data term sums over the
    processes (:class:`ShardedLeastSquares`); ``program`` is left as it is.

    ``program`` must be built on this process's images, with everything else (the
    variable's shape, the regulariser, gates, whitening) identical on every process.
    Collective: call it on every process.
    """
    if not isinstance(program, CompositeProgram) or not isinstance(program.smooth, LeastSquares):
        raise InputError("program: expected a CompositeProgram with a LeastSquares data term, got "
                         f"{type(program).__name__}")
    out = copy.copy(program)
    out.smooth = ShardedLeastSquares(program.smooth, lipschitz=lipschitz)
    return out
