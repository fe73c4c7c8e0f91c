"""The stochastic mode of a gated layer-wise step: ``--solver minibatch``.

:class:`BatchedLayerProgram` is the gated step of
:class:`~convexrecon.nets.layerwise_program.LayerProgram` (data consistency inside
the step, optional whitened coordinates) evaluated ``batch_size`` images at a time:
its data term is a sum over images, and the DC map ``M`` is one system per image,
so every piece (gradient, objective, duality-gap certificate, ``A^T Y``, the power
method of the Lipschitz constant) is accumulated batch by batch, with each batch's
own :class:`~convexrecon.nets.layerwise_program.DCMap`. The convolutions of all
images with all pattern filters are never held at once (the full-batch step holds
``N x P x C_out x H x W`` of them).

:class:`LayerMiniBatch` runs :class:`~convexrecon.solvers.minibatch_conv.MiniBatchConv`
(proximal SVRG) on it: the same passes, snapshots and exact nuclear-norm prox, with
the batch gradient of the composed data term. The certificate is the relative
duality gap of the whole step (the same number as the full-batch program's).

**Several processes** (``torchrun``): each process builds the step on its own share
of the training images (``images``: their indices among all ``n_total``; gates,
whitening and beta replicated). Every process draws the same batches of global
indices; each computes the gradient over the images of the batch it holds and the
sum is all-reduced (:func:`~convexrecon.collectives.all_reduce_sum`), as are the
snapshot gradients, ``A^T Y``, the power method and the certificate's sums. The
iterates are then those of one process holding every image (up to summation order).
Outside a process group the all-reduces are no-ops.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from convexrecon.collectives import all_reduce_sum
from convexrecon.operators.linalg import power_iteration
from convexrecon.errors import InputError
from convexrecon.nets.layerwise_program import DCMap, WhitenMap
from convexrecon.operators.conv import PatternConv
from convexrecon.programs.duality import best_scale, scale_limit
from convexrecon.programs.relu.conv import ConvGatedReLU, ConvNuclear, NuclearFilters
from convexrecon.solvers.minibatch_conv import MiniBatchConv, MiniBatchConvState

__all__ = ["BatchedLayerProgram", "LayerMiniBatch"]


class BatchedLayerProgram(NuclearFilters):
    """The gated layer-wise step, evaluated batch by batch (module docstring).

    Args:
        base: a ``ConvGatedReLU`` on the features and the target (its padded
            images, patterns and network recovery are used; nothing of it is
            evaluated on all images at once).
        dc_of: the DC map of the images ``idx`` (``None``: no data consistency).
        whiten: the whitening matrix, or ``None``.
        batch_size: images per batch (of all processes' images together).
        power_iters: iterations of the (batched) power method.
        images: the indices, among all processes' ``n_total`` images, of the images of
            ``base`` (``None``: ``base`` holds all of them).
        n_total: the number of images of all processes (``None``: ``base``'s).

    Collective with ``images`` in a process group: every process must make the same
    calls.
    """

    def __init__(self, base: ConvGatedReLU, *, dc_of: Callable[[torch.Tensor], DCMap] | None,
                 whiten: torch.Tensor | None, batch_size: int, power_iters: int = 60,
                 images: torch.Tensor | None = None, n_total: int | None = None) -> None:
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise InputError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        self.base, self.dc_of = base, dc_of
        self.op, self.Y, self.dtype = base.op, base.Y, base.dtype
        self.n_local = int(self.op.oshape[0])
        self.n = self.n_local if n_total is None else int(n_total)
        dev = self.Y.device
        images = torch.arange(self.n_local, device=dev) if images is None else images.to(dev).long()
        if images.shape != (self.n_local,) or self.n < self.n_local or \
                (self.n_local and (int(images.min()) < 0 or int(images.max()) >= self.n)) or \
                images.unique().numel() != self.n_local:
            raise InputError(f"images: expected {self.n_local} distinct indices in [0, {self.n}), "
                             f"got {tuple(images.shape)}")
        self._loc = torch.full((self.n,), -1, dtype=torch.long, device=dev)
        self._loc[images] = torch.arange(self.n_local, device=dev)
        self.batch_size = min(int(batch_size), self.n)
        self.wmap: WhitenMap | None = None
        self.shape = tuple(self.op.ishape)
        if whiten is not None:
            p, co, c, k, _ = self.op.ishape
            self.wmap = WhitenMap(whiten, n_patterns=p, c_out=co, c_in=c, kernel=k)
            self.shape = tuple(self.wmap.ishape)
        self.reg = ConvNuclear(base.reg.beta)
        self.power_iters = int(power_iters)
        self._lip: float | None = None
        self._aty: torch.Tensor | None = None
        self._warm: dict[int, torch.Tensor] = {}

    # -- variables (beta, check_x and zeros: NuclearFilters) ----------------------------
    def filters(self, x: torch.Tensor) -> torch.Tensor:
        """The filters ``U`` of the base program (``W U'`` when whitened)."""
        x = self.check_x(x)
        return self.wmap.forward(x) if self.wmap is not None else x

    def recover_network(self, x: torch.Tensor, **kwargs: Any):
        """The gated two-layer network of the solution (DC is not part of it)."""
        return self.base.recover_network(self.filters(x), **kwargs)

    # -- one batch ----------------------------------------------------------------------
    def batches(self) -> tuple[torch.Tensor, ...]:
        """Batches of this process's own images (local indices), for the sums."""
        return torch.arange(self.n_local, device=self.Y.device).split(self.batch_size)

    def _parts(self, idx: torch.Tensor) -> tuple[PatternConv, DCMap | None]:
        masks = self.op.maskf[idx, 0, :, 0] > 0
        op = PatternConv(self.op.x_padded[idx], masks, c_out=self.op.c_out)
        return op, (self.dc_of(idx) if self.dc_of is not None else None)

    def _dc(self, dc: DCMap | None, x: torch.Tensor, idx: torch.Tensor, slot: int) -> torch.Tensor:
        """``M_B x``, each image's CG warm started from its last solve in ``slot``
        (0: the forward map, 1: the adjoint; the solution does not depend on it)."""
        if dc is None:
            return x
        cache = self._warm.get(slot)
        out, sol = dc.solve(x, None if cache is None else cache[idx])
        if cache is None:
            cache = self._warm[slot] = torch.zeros(self.n_local, *sol.shape[1:], dtype=sol.dtype,
                                                   device=sol.device)
        cache[idx] = sol
        return out

    def _back(self, op: PatternConv, dc: DCMap | None, r: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``W^T K_B^T M_B r``."""
        g = op.adjoint(self._dc(dc, r, idx, 1))
        return self.wmap.adjoint(g) if self.wmap is not None else g

    def residual(self, x: torch.Tensor, idx: torch.Tensor):
        """``(r, op, dc)`` with ``r = M_B K_B W x - Y_B`` of the images ``idx``."""
        op, dc = self._parts(idx)
        pred = self._dc(dc, op.forward(self.filters(x)), idx, 0)
        return pred - self.Y[idx], op, dc

    def grad_batch(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The data term's gradient over the images ``idx`` (global indices; a sum,
        unscaled; all-reduced over the processes)."""
        loc = self._loc[idx.to(self._loc.device)]
        loc = loc[loc >= 0]
        if loc.numel() == 0:
            return all_reduce_sum(torch.zeros_like(x))
        r, op, dc = self.residual(x, loc)
        return all_reduce_sum(self._back(op, dc, r, loc))

    # -- the whole step, batch by batch -------------------------------------------------
    def _sweep(self, x: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        """``(f, <r, Y>, grad)`` of the data term over every batch."""
        f = c = 0.0
        grad = torch.zeros_like(x)
        for idx in self.batches():
            r, op, dc = self.residual(x, idx)
            f += 0.5 * float(r.pow(2).sum())
            c += float((r * self.Y[idx]).sum())
            grad += self._back(op, dc, r, idx)
        fc = all_reduce_sum(torch.tensor([f, c], dtype=torch.float64, device=x.device))
        return float(fc[0]), float(fc[1]), all_reduce_sum(grad)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """The data term's full gradient (batch by batch, all-reduced once)."""
        grad = torch.zeros_like(x)
        for idx in self.batches():
            r, op, dc = self.residual(x, idx)
            grad += self._back(op, dc, r, idx)
        return all_reduce_sum(grad)

    def aty(self) -> torch.Tensor:
        """``W^T K^T M Y`` (cached)."""
        if self._aty is None:
            total = torch.zeros(self.shape, dtype=self.dtype, device=self.Y.device)
            for idx in self.batches():
                op, dc = self._parts(idx)
                total += self._back(op, dc, self.Y[idx], idx)
            self._aty = all_reduce_sum(total)
        return self._aty

    def beta_max(self) -> float:
        """Smallest ``beta`` with ``0`` optimal: ``max_i ||(A^T Y)_i||_2``."""
        return float(self.reg.spectral_norms(self.aty()).max())

    def lipschitz(self) -> float:
        """``1.02 ||K W||^2`` by a power method on the batched normal (``||M|| <= 1``
        keeps it valid with DC), from a seeded start. Cached."""
        if self._lip is None:
            gen = torch.Generator(device="cpu").manual_seed(0)
            x = torch.randn(self.shape, generator=gen, dtype=self.dtype).to(self.Y.device)

            def normal(x: torch.Tensor) -> torch.Tensor:  # one sweep over the batches
                z = torch.zeros_like(x)
                for idx in self.batches():
                    op, _ = self._parts(idx)
                    u = op.adjoint(op.forward(self.filters(x)))
                    z += self.wmap.adjoint(u) if self.wmap is not None else u
                return all_reduce_sum(z)

            lam = power_iteration(normal, x, iters=self.power_iters, tol=1e-4)
            self._lip = 1.02 * max(lam, 1e-300)
        return self._lip

    def value(self, x: torch.Tensor) -> float:
        f, _, _ = self._sweep(self.check_x(x))
        return f + float(self.reg.value(x))

    def value_and_certificate(self, x: torch.Tensor) -> tuple[float, float]:
        """The objective and the relative duality gap (the dual point the best-scaled
        residual, as :meth:`~convexrecon.programs.relu.conv.NuclearConvProgram.certificate`)
        from one pass over the images."""
        f, c, grad = self._sweep(self.check_x(x))
        primal = f + float(self.reg.value(x))
        _, dual = best_scale(-c, 2.0 * f, scale_limit(self.reg.dual_norm(grad)))
        return primal, max(primal - dual, 0.0) / max(abs(primal), 1e-300)

    def certificate(self, x: torch.Tensor) -> float:
        """Relative duality gap (see :meth:`value_and_certificate`)."""
        return self.value_and_certificate(x)[1]


class LayerMiniBatch(MiniBatchConv):
    """Proximal SVRG (:class:`MiniBatchConv`) on a :class:`BatchedLayerProgram`.

    Args:
        program: the batched step (its ``batch_size`` is the solver's).
        epochs, lr, seed, tol, check_every: as for :class:`MiniBatchConv` (``lr``
            0.5: with a few heterogeneous images per batch, 1.0 diverged).
    """

    def __init__(self, program: BatchedLayerProgram, *, epochs: int = 10, lr: float = 0.5,
                 seed: int = 0, tol: float = 0.0, check_every: int = 0) -> None:
        if not isinstance(program, BatchedLayerProgram):
            raise InputError(f"program: expected a BatchedLayerProgram, got {type(program).__name__}")
        # the base only carries the data (padded images, patterns, target) here: give
        # it the step's own Lipschitz constant, so nothing runs on all images at once
        base = program.base
        base.smooth._lip = program.lipschitz()
        super().__init__(base, batch_size=program.batch_size, epochs=epochs, lr=lr, seed=seed,
                         tol=tol, check_every=check_every)
        self.program = program  # prox, objective and certificate of the composed step
        # batches of global indices (all processes' images; the same on every process)
        self.n, self.batch_size = program.n, program.batch_size
        self.steps_per_epoch = math.ceil(self.n / self.batch_size)
        self.max_iter = int(epochs) * self.steps_per_epoch

    def _grad(self, st: MiniBatchConvState, u: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.program.grad_batch(u, idx)

    def _full_grad(self, st: MiniBatchConvState, u: torch.Tensor) -> torch.Tensor:
        return self.program.gradient(u)
