"""Data consistency inside the convex step of greedy layer-wise training.

The data-consistency (DC) step of a reconstruction network is affine in the network
output ``x_net``:

    x_dc = (A^H A + mu I)^-1 (A^H y + mu x_net) = M x_net + c,
    M = mu (A^H A + mu I)^-1,      c = (A^H A + mu I)^-1 A^H y,

with ``M`` self-adjoint, ``0 < M <= I`` (``||M|| <= 1``). A convex step that fits
``x_gt`` with ``x_net = x_0 + f(U)`` (``f`` linear in the filters ``U``) after DC is
therefore the least-squares fit of the target ``x_gt - DC(x_0)`` by ``M f(U)``:
the program's data operator becomes ``M o PatternConv``. It stays convex, and the
Lipschitz constant of the plain conv program stays a valid one (``||M K|| <= ||K||``).

:class:`DCMap` is ``M`` as a real operator on channel images ``(N, 2, H, W)`` (real
and imaginary parts), applied by per-sample conjugate gradients (any encoder: Sense,
non-Cartesian). :class:`LayerProgram` is the gated conv program with that data
operator (and optionally whitened filter coordinates), with the same
relative-duality-gap certificate as the plain program.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.operators.base import Compose, Operator
from convexrecon.operators.conv import channels_to_complex, complex_to_channels
from convexrecon.operators.linalg import power_method
from convexrecon.programs.relu.conv import NuclearConvProgram
from convexrecon.programs.terms import LeastSquares
from convexrecon.solvers.cg import CG, cg_solve

__all__ = ["data_consistency", "DCMap", "LayerProgram", "WhitenMap", "whitening_matrix", "patch_gram"]

DC_TOL = 1e-6
"""Relative residual at which the CG solves of the DC step stop."""
DC_MAX_ITER = 200


def data_consistency(A: Operator, aty: torch.Tensor, x_net: torch.Tensor, *, mu: float,
                     tol: float = DC_TOL, max_iter: int = DC_MAX_ITER) -> torch.Tensor:
    """``(A^H A + mu I)^-1 (A^H y + mu x_net)``, one system per leading index.

    Differentiable in ``x_net`` (:func:`cg_solve`). ``aty`` and ``x_net`` are complex
    ``(*B, *A.ishape)``.
    """
    mu = check_positive(mu, "mu")
    bd = x_net.ndim - len(A.ishape)
    return cg_solve(A.N, aty + mu * x_net, mu=mu, batch_dims=bd, tol=tol, max_iter=max_iter)


class DCMap(Operator):
    """``M = mu (A^H A + mu I)^-1`` on real channel images ``(N, 2, H, W)``.

    Args:
        A: the encoding operator of the ``N`` samples (``ishape`` ``(H, W)``, batch
            ``N`` of per-sample masks / maps broadcast against the images).
        n: the number of samples.
        mu: DC weight > 0.
        dtype: the real dtype of the channel images.
        tol, max_iter: CG settings (one system per sample).

    Self-adjoint: the adjoint is the forward map and the normal applies it twice.
    The CG solves of successive calls are warm-started from the previous solution
    of the same slot (forward, or the second application of the normal), which the
    solution does not depend on (only its iteration count).
    """

    def __init__(self, A: Operator, *, n: int, mu: float, dtype: torch.dtype = torch.float32,
                 tol: float = 1e-5, max_iter: int = DC_MAX_ITER) -> None:
        if not isinstance(A, Operator) or len(A.ishape) != 2:
            raise InputError(f"A: expected an Operator with 2-D images, got {A!r}")
        h, w = A.ishape
        super().__init__((n, 2, h, w), (n, 2, h, w), dtype=dtype)
        self.A, self.mu = A, check_positive(mu, "mu")
        self.tol, self.max_iter = float(tol), int(max_iter)
        self._warm: dict[int, torch.Tensor] = {}
        self.cg_iters = 0

    def reset(self) -> None:
        """Forget the warm starts."""
        self._warm.clear()

    def apply(self, x: torch.Tensor, *, slot: int) -> torch.Tensor:
        """``M x``, warm started from the last solve of the same ``slot`` (callers
        that apply ``M`` to two alternating sequences give each its own slot; 0 and
        1 are those of ``forward`` and ``normal``)."""
        return self._solve(x, slot)

    def solve(self, x: torch.Tensor, x0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M x, v)`` with ``v = (A^H A + mu I)^-1 x`` (complex ``(N, H, W)``), the CG
        started from ``x0`` (a previous ``v``; ``None``: zero)."""
        if x.shape != (*self.ishape,):
            raise InputError(f"DCMap: expected {self.ishape}, got {tuple(x.shape)}")
        b = channels_to_complex(x)[:, 0].to(self.A.dtype)
        cg = CG(self.A.N, b, mu=self.mu, batch_dims=1, tol=self.tol, max_iter=self.max_iter,
                check_every=0)
        res = cg.run(x0)
        self.cg_iters += res.state.it
        return complex_to_channels(self.mu * res.x).to(x.dtype), res.x

    def _solve(self, x: torch.Tensor, slot: int) -> torch.Tensor:
        out, self._warm[slot] = self.solve(x, self._warm.get(slot))
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._solve(x, 0)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._solve(y, 0)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return self._solve(self._solve(x, 0), 1)


def patch_gram(x_padded: torch.Tensor, kernel: int) -> tuple[torch.Tensor, int]:
    """``(sum of P^T P over the images, rows)`` in float64: the ``(C k k)`` square Gram
    matrix of every ``k x k`` patch of the padded images, and the number of patches."""
    d = x_padded.shape[1] * kernel * kernel
    gram = torch.zeros(d, d, dtype=torch.float64, device=x_padded.device)
    rows = 0
    for img in x_padded.split(1):
        cols = F.unfold(img, kernel)[0].double()  # (C k k, H W)
        gram += cols @ cols.T
        rows += cols.shape[1]
    return gram, rows


def whitening_matrix(x_padded: torch.Tensor, kernel: int, *, eps: float = 1e-4,
                     collective: bool = False) -> torch.Tensor:
    """``W = V (Sigma + floor)^-1/2`` of the patch covariance ``V Sigma V^T`` of the
    padded images (``(C k k)`` square); eigenvalues are floored at ``eps`` times the
    largest, so near-constant directions are not blown up. ``collective``: the images
    are this process's share, and the covariance is summed over the processes."""
    gram, rows = patch_gram(x_padded, kernel)
    if collective:
        from convexrecon.collectives import all_reduce_sum

        gram = all_reduce_sum(gram)
        rows = int(all_reduce_sum(torch.tensor([rows], dtype=torch.float64, device=gram.device)))
    evals, vecs = torch.linalg.eigh(gram / max(rows, 1))
    floor = eps * float(evals.max().clamp_min(1e-300))
    return (vecs * evals.clamp_min(floor).rsqrt()).to(x_padded.dtype)


class WhitenMap(Operator):
    """Whitened filters ``U' (P, Co, D, 1, 1)`` -> filters ``U = W U'`` ``(P, Co, C, k, k)``."""

    def __init__(self, W: torch.Tensor, *, n_patterns: int, c_out: int, c_in: int, kernel: int) -> None:
        d = W.shape[0]
        super().__init__((n_patterns, c_out, d, 1, 1), (n_patterns, c_out, c_in, kernel, kernel),
                         dtype=W.dtype)
        self.W = W

    def _forward(self, u: torch.Tensor) -> torch.Tensor:
        lead = u.shape[: u.ndim - 5]
        flat = u.reshape(*lead, *self.ishape[:2], -1) @ self.W.T
        return flat.reshape(*lead, *self.oshape)

    def _adjoint(self, v: torch.Tensor) -> torch.Tensor:
        lead = v.shape[: v.ndim - 5]
        flat = v.reshape(*lead, *self.oshape[:2], -1) @ self.W
        return flat.reshape(*lead, *self.ishape)


class LayerProgram(NuclearConvProgram):
    """One layer-wise step: the gated conv program of ``base`` with an optional
    DC map ``M`` on its output and optional whitened filter coordinates ``U = W U'``.

        min_U' 1/2 || M (sum_i D_i conv(H, W U'_i)) - Y ||^2 + beta sum_i ||U'_i||_*

    Without DC and whitening it is ``base``'s program. With whitening the penalty is
    the nuclear norm of the whitened filters (a different regulariser, in exchange for
    a much better conditioned problem); the patterns are ``base``'s in every case.

    Args:
        base: a gated conv program (``ConvGatedReLU``) on the features (patterns,
            penalty class, Lipschitz constant and network recovery are reused).
        target: ``(N, 2, H, W)``: ``x_gt - x_0`` or, with DC, ``x_gt - DC(x_0)``.
        dc: the :class:`DCMap` of the training samples, or ``None``.
        whiten: the whitening matrix ``W`` (:func:`whitening_matrix`), or ``None``.
    """

    def __init__(self, base: Any, target: torch.Tensor, *, dc: DCMap | None = None,
                 whiten: torch.Tensor | None = None) -> None:
        op: Operator = base.op
        self.wmap: WhitenMap | None = None
        if whiten is not None:
            p, co, c, k, _ = base.op.ishape
            self.wmap = WhitenMap(whiten, n_patterns=p, c_out=co, c_in=c, kernel=k)
            op = Compose(op, self.wmap)
            lip = 1.02 * power_method(op.N, iters=60, tol=1e-4, device=target.device)
        else:
            lip = base.smooth.lipschitz()
        if dc is not None:
            op = Compose(dc, op)  # ||M|| <= 1: the Lipschitz constant stays valid
        reg = type(base.reg)(base.reg.beta)
        super().__init__(LeastSquares(op, target.to(base.dtype), lipschitz=lip), reg)
        self.smooth: LeastSquares
        self.base, self.dc = base, dc
        self.Y = self.smooth.y
        self.shape = tuple(op.ishape)
        self.dtype = base.dtype

    @property
    def gates(self) -> torch.Tensor:
        return self.base.gates

    def filters(self, x: torch.Tensor) -> torch.Tensor:
        """The filters ``U`` of the base program (``W U'`` when whitened)."""
        x = self.check_x(x)
        return self.wmap.forward(x) if self.wmap is not None else x

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The fitted change of the output ``(N, 2, H, W)`` (after ``M`` with DC)."""
        return self.smooth.op.forward(self.check_x(x, "U"))

    def recover_network(self, x: torch.Tensor, **kwargs: Any):
        """The gated two-layer network of the solution (DC is not part of it)."""
        return self.base.recover_network(self.filters(x), **kwargs)
