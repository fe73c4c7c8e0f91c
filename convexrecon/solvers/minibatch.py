"""Stochastic mini-batch proximal solver for the convex two-layer programs.

For datasets too large for the exact (factorised) solvers, e.g. inside the
layer-wise trainer. Each step draws a batch of rows ``B``, takes the unbiased
gradient ``(n/|B|) A_B^T (A_B U - y_B)`` and applies the *exact* prox of the block
penalty with a per-block step (an Adam-style scalar second moment per block keeps
the prox exact: a scalar metric per group). The ReLU form adds the quadratic
penalty ``penalty/2 * (n/|B|) sum_B ||((2D-I) X u)_-||^2`` for the cone
constraints; its violation is reported by the full-data certificate at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.programs.relu import GatedReLU, TwoLayerReLU, prox_group, prox_nuclear
from convexrecon.solvers.base import Solver, State

__all__ = ["MiniBatchProx", "MiniBatchState"]


@dataclass
class MiniBatchState(State):
    """Blocks ``u`` ((P, d, c) or stacked (2P, d, c)), second moments, epoch count,
    the rows ``perm`` left in this pass and the batches' generator ``gen``."""

    u: Any = None
    v2: Any = None
    epoch: int = 0
    perm: Any = None
    gen: Any = None


class MiniBatchProx(Solver[MiniBatchState]):
    """Proximal stochastic gradient with per-block adaptive steps.

    Args:
        program: a ``GatedReLU`` or ``TwoLayerReLU``.
        batch_size: rows per step.
        epochs: passes over the data (``max_iter = epochs * ceil(n / batch_size)``).
        lr: base step, relative to ``1 / L`` of the full least-squares term.
        beta2: decay of the per-block second moment (Adam-style steps; ``0``, the
            default, is plain proximal SGD).
        decay: the step is ``lr / (1 + t / (decay * steps_per_epoch))``.
        penalty: cone-violation penalty weight (ReLU form; default ``L / ||X||_2^2``,
            the largest that keeps the step ``1/L`` stable).
        seed: randomness of the batches.
        tol, check_every: as for every solver; the certificate uses all the data.
    """

    def __init__(self, program: GatedReLU | TwoLayerReLU, *, batch_size: int = 256,
                 epochs: int = 10, lr: float = 1.0, beta2: float = 0.0, decay: float = 10.0,
                 penalty: float | None = None, seed: int = 0, tol: float = 0.0,
                 check_every: int = 0) -> None:
        if not isinstance(program, (GatedReLU, TwoLayerReLU)):
            raise InputError("program: expected a GatedReLU or TwoLayerReLU, got "
                             f"{type(program).__name__}")
        if int(batch_size) < 1 or int(epochs) < 1:
            raise InputError(f"batch_size, epochs: expected integers >= 1, got "
                             f"{batch_size!r}, {epochs!r}")
        data = program.data
        self.steps_per_epoch = math.ceil(data.n / int(batch_size))
        super().__init__(max_iter=int(epochs) * self.steps_per_epoch, tol=tol,
                         check_every=check_every)
        self.program = program
        self.relu = isinstance(program, TwoLayerReLU)
        self.batch_size = min(int(batch_size), data.n)
        self.lr = check_positive(lr, "lr")
        if not 0.0 <= float(beta2) < 1.0:
            raise InputError(f"beta2: expected a number in [0, 1), got {beta2!r}")
        self.beta2 = float(beta2)
        self.decay = check_positive(decay, "decay")
        self.L = data.lipschitz_ls()
        if penalty is None:
            self.penalty = self.L / float(torch.linalg.matrix_norm(data.X, ord=2)) ** 2
        else:
            self.penalty = check_positive(penalty, "penalty")
        self.seed = int(seed)
        self.prox = prox_group if (self.relu or data.c == 1) else prox_nuclear

    def _batch(self, st: MiniBatchState) -> torch.Tensor:
        if st.perm.numel() < self.batch_size:
            st.perm = torch.randperm(self.program.data.n, generator=st.gen)
        idx, st.perm = st.perm[: self.batch_size], st.perm[self.batch_size:]
        return idx.to(self.program.data.X.device)

    def init(self, x0: Any = None) -> MiniBatchState:
        p = self.program
        if x0 is None:
            u = torch.cat(p.zeros(), 0) if self.relu else p.zeros()
        elif self.relu:
            u = torch.cat(p._check(x0), 0).clone()
        else:
            u = p.data.check_blocks(x0, "x0").clone()
        v2 = torch.zeros(u.shape[0], 1, u.shape[2], dtype=u.dtype, device=u.device)
        return MiniBatchState(x=self._x(u), u=u, v2=v2, perm=torch.empty(0, dtype=torch.long),
                              gen=torch.Generator(device="cpu").manual_seed(self.seed))

    def _x(self, u: torch.Tensor):
        if self.relu:
            P = self.program.data.P
            return u[:P], u[P:]
        return u

    def _grad(self, u: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        data = self.program.data
        X, Dm, Y = data.X[idx], data.Dm[idx], data.Y[idx]
        N, d, c = u.shape
        XU = (X @ u.permute(1, 0, 2).reshape(d, N * c)).reshape(-1, N, c)
        scale = data.n / idx.numel()
        if self.relu:
            P = data.P
            Ds = torch.cat([Dm, -Dm], dim=1)
            E2 = torch.cat([2 * Dm - 1, 2 * Dm - 1], dim=1).unsqueeze(-1)
            R = (XU * Ds.unsqueeze(-1)).sum(1) - Y
            Z = Ds.unsqueeze(-1) * R.unsqueeze(1) + self.penalty * E2 * torch.clamp(E2 * XU, max=0.0)
            del P
        else:
            R = (XU * Dm.unsqueeze(-1)).sum(1) - Y
            Z = Dm.unsqueeze(-1) * R.unsqueeze(1)
        G = (X.T @ Z.reshape(idx.numel(), N * c)).reshape(d, N, c).permute(1, 0, 2)
        return scale * G

    def step(self, st: MiniBatchState) -> MiniBatchState:
        g = self._grad(st.u, self._batch(st))
        base = self.lr / (self.L * (1.0 + st.it / (self.decay * self.steps_per_epoch)))
        if self.beta2 > 0:
            st.v2 = self.beta2 * st.v2 + (1 - self.beta2) * g.pow(2).mean(dim=1, keepdim=True)
            ref = st.v2.mean().clamp(min=1e-300)
            step = base * torch.sqrt(ref / (st.v2 + 1e-12 * ref))
            step = torch.clamp(step, max=base * 10.0)
        else:
            step = torch.full_like(st.v2, base)
        z = st.u - step * g
        if self.prox is prox_group:
            u = prox_group(z, step * self.program.beta)
        else:
            u = torch.stack([prox_nuclear(z[i:i + 1], float(step[i].max()) * self.program.beta)[0]
                             for i in range(z.shape[0])])
        st.u, st.x, st.it = u, self._x(u), st.it + 1
        st.epoch = st.it // self.steps_per_epoch
        return st

    def objective(self, st: MiniBatchState) -> float:
        return self.program.value(st.x)

    def certificate(self, st: MiniBatchState) -> float:
        return self.program.certificate(st.x)
