"""Stochastic mini-batch solver for the convolutional two-layer programs.

For training sets too large for full-batch FISTA or the augmented Lagrangian (each
of their steps convolves every image with every pattern's filters at once):
:class:`MiniBatchConv` only ever convolves ``batch_size`` images at a time. It is
proximal SVRG (Xiao & Zhang, 2014): every epoch takes a snapshot ``u~`` and its
full gradient ``g~``, accumulated batch by batch, and each inner step uses the
variance-reduced gradient

    g = (N / |B|) (grad_B(u) - grad_B(u~)) + g~

followed by the exact prox of the penalty (nuclear norms of the gated form,
filter group norms of the cone form). The variance reduction lets a constant step
converge to the full-batch optimum, not to a noise ball.

The gated form (:class:`~convexrecon.programs.relu.ConvGatedReLU`) is minimised
directly. The cone form (:class:`~convexrecon.programs.relu.ConvTwoLayerReLUCone`)
runs a stochastic augmented Lagrangian: the cone constraints enter through
``1/(2 rho) ||(mu - rho (2 D - 1) conv(X, u))_+||^2`` (as in
:class:`~convexrecon.solvers.auglag.ConvReLUAugLag`), minimised by the same SVRG
passes; every ``inner_epochs`` passes the multipliers ``mu`` are updated image by
image, batch by batch, with a fixed ``rho`` (the inner solves are inexact, and a
growing ``rho`` shrinks the step until the passes stall). ``mu`` has one entry per
image, pixel, pattern, output channel and sign.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.operators.conv import PatternConv
from convexrecon.programs.relu import ConvGatedReLU, ConvTwoLayerReLUCone
from convexrecon.programs.relu.blocks import FILTER_DIMS, prox_group
from convexrecon.solvers.base import Solver, State

__all__ = ["MiniBatchConv", "MiniBatchConvState"]


@dataclass
class MiniBatchConvState(State):
    """``u`` the iterate (the cone form's ``(V, W)`` stacked), ``snap`` the epoch's
    snapshot and ``snap_grad`` its full gradient, ``perm`` the images left in this
    pass, ``gen`` the batches' random generator, ``epoch`` the passes done. Cone
    form: multipliers ``mu`` ``(N, 2, P, Co, H, W)``, penalty ``rho``, relative
    ``violation`` at the last multiplier update."""

    u: Any = None
    mu: Any = None
    rho: float = 0.0
    violation: float = math.inf
    snap: Any = None
    snap_grad: Any = None
    perm: Any = None
    gen: Any = None
    epoch: int = 0


class MiniBatchConv(Solver[MiniBatchConvState]):
    """Proximal SVRG over mini-batches of images (see the module docstring).

    Args:
        program: a ``ConvGatedReLU`` or ``ConvTwoLayerReLUCone``.
        batch_size: images per step.
        epochs: passes over the data (each pass also costs one full gradient,
            accumulated ``batch_size`` images at a time).
        lr: step, relative to ``1 / L`` (``L`` the full data term's Lipschitz
            constant, plus ``rho ||K||^2`` for the cone form, ``||K||`` the norm of
            the patch matrix).
        rho: augmented-Lagrangian penalty (cone form; default ``10 L / ||K||^2``).
        inner_epochs: passes per multiplier update (cone form).
        seed: randomness of the batches.
        tol, check_every: as for every solver; the certificate uses all the data
            (``check_every=0``, the default, evaluates it at the end only).
    """

    def __init__(self, program: ConvGatedReLU | ConvTwoLayerReLUCone, *, batch_size: int = 8,
                 epochs: int = 10, lr: float = 1.0, rho: float | None = None,
                 inner_epochs: int = 2, seed: int = 0, tol: float = 0.0,
                 check_every: int = 0) -> None:
        if not isinstance(program, (ConvGatedReLU, ConvTwoLayerReLUCone)):
            raise InputError("program: expected a ConvGatedReLU or ConvTwoLayerReLUCone, got "
                             f"{type(program).__name__}")
        if isinstance(batch_size, bool) or int(batch_size) < 1 or isinstance(epochs, bool) \
                or int(epochs) < 1:
            raise InputError(f"batch_size, epochs: expected integers >= 1, got "
                             f"{batch_size!r}, {epochs!r}")
        self.program = program
        self.cone = isinstance(program, ConvTwoLayerReLUCone)
        gated = program.gated if self.cone else program
        self.n = gated.op.oshape[0]
        self.batch_size = min(int(batch_size), self.n)
        self.steps_per_epoch = math.ceil(self.n / self.batch_size)
        super().__init__(max_iter=int(epochs) * self.steps_per_epoch, tol=tol,
                         check_every=check_every)
        self.lr = check_positive(lr, "lr")
        self.seed = int(seed)
        self.L = gated.smooth.lipschitz()
        if isinstance(inner_epochs, bool) or int(inner_epochs) < 1:
            raise InputError(f"inner_epochs: expected an integer >= 1, got {inner_epochs!r}")
        self.inner_epochs = int(inner_epochs)
        self.knorm = program.k_norm2() if self.cone else 0.0
        self.rho0 = None if rho is None else check_positive(rho, "rho")
        self._xp = gated.op.x_padded
        self._masks = gated.masks
        self._Y = gated.Y

    # -- data of one batch ------------------------------------------------------------
    def _op(self, idx: torch.Tensor) -> PatternConv:
        return PatternConv(self._xp[idx], self._masks[idx], c_out=self._Y.shape[1])

    def _grad(self, st: MiniBatchConvState, u: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Gradient of the batch's data (and augmented-Lagrangian) term, unscaled (a sum)."""
        op = self._op(idx)
        Y = self._Y[idx]
        if not self.cone:
            return op.adjoint(op.forward(u) - Y)
        z = op.conv_all(u)                                     # (B, 2, P, Co, H, W)
        e = ((z[:, 0] - z[:, 1]) * op.maskf[:, 0]).sum(dim=1) - Y
        sign = 2.0 * op.maskf - 1.0
        signs = torch.tensor([1.0, -1.0], dtype=z.dtype, device=z.device).view(1, 2, 1, 1, 1, 1)
        act = (st.mu[idx] - st.rho * sign * z).clamp(min=0.0)
        return op.conv_all_adjoint(e.unsqueeze(1).unsqueeze(2) * op.maskf * signs - sign * act)

    def _batches(self):
        return torch.arange(self.n, device=self._xp.device).split(self.batch_size)

    def _full_grad(self, st: MiniBatchConvState, u: torch.Tensor) -> torch.Tensor:
        """The full gradient, ``batch_size`` images at a time."""
        total = torch.zeros_like(u)
        for idx in self._batches():
            total += self._grad(st, u, idx)
        return total

    def _update_multipliers(self, st: MiniBatchConvState) -> None:
        """``mu = (mu - rho (2 D - 1) conv(X, u))_+`` batch by batch; records the
        relative violation."""
        bad = total = 0.0
        for idx in self._batches():
            op = self._op(idx)
            z = op.conv_all(st.u) * (2.0 * op.maskf - 1.0)
            st.mu[idx] = (st.mu[idx] - st.rho * z).clamp(min=0.0)
            bad += float(z.clamp(max=0.0).pow(2).sum())
            total += float(z.pow(2).sum())
        st.violation = math.sqrt(bad / total) if total > 0 else 0.0

    def _step_size(self, st: MiniBatchConvState) -> float:
        return self.lr / (self.L + st.rho * self.knorm)

    def _prox(self, st: MiniBatchConvState, z: torch.Tensor) -> torch.Tensor:
        step = self._step_size(st)
        if self.cone:
            return prox_group(z, step * self.program.beta, FILTER_DIMS)
        return self.program.reg.prox(z, step)

    def _x(self, u: torch.Tensor) -> Any:
        return (u[0], u[1]) if self.cone else u

    # -- protocol ---------------------------------------------------------------------
    def init(self, x0: Any = None) -> MiniBatchConvState:
        p = self.program
        if x0 is None:
            x0 = p.zeros()
        u = p._stack(x0).clone() if self.cone else p.check_x(x0, "x0").clone()
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        st = MiniBatchConvState(x=self._x(u), u=u, gen=gen, perm=torch.empty(0, dtype=torch.long))
        if self.cone:
            n, co, h, w = p.op.oshape
            st.mu = torch.zeros(n, 2, p.op.n_patterns, co, h, w, dtype=u.dtype, device=u.device)
            st.rho = self.rho0 if self.rho0 is not None else 10.0 * self.L / self.knorm
        return st

    def step(self, st: MiniBatchConvState) -> MiniBatchConvState:
        if st.perm.numel() == 0:  # a new pass: new order, new snapshot
            if self.cone and st.it > 0 and st.epoch % self.inner_epochs == 0:
                self._update_multipliers(st)
            st.perm = torch.randperm(self.n, generator=st.gen)
            st.snap = st.u.clone()
            st.snap_grad = self._full_grad(st, st.snap)
        idx, st.perm = st.perm[: self.batch_size], st.perm[self.batch_size:]
        idx = idx.to(self._xp.device)
        scale = self.n / idx.numel()
        g = scale * (self._grad(st, st.u, idx) - self._grad(st, st.snap, idx)) + st.snap_grad
        st.u = self._prox(st, st.u - self._step_size(st) * g)
        st.x, st.it = self._x(st.u), st.it + 1
        st.epoch = st.it // self.steps_per_epoch
        return st

    def objective(self, st: MiniBatchConvState) -> float:
        return self.program.value(st.x)

    def certificate(self, st: MiniBatchConvState) -> float:
        if self.cone:
            return self.program.certificate(st.x, multipliers=st.mu)
        return self.program.certificate(st.x)
