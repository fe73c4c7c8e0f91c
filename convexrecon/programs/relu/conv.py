"""The convex two-layer convolutional program (gated form), the step of greedy
layer-wise CNN training for MR reconstruction.

For images ``X (N, C, H, W)`` and targets ``Y (N, C_out, H, W)``, with frozen random
gate filters ``h_1..h_P`` and patterns ``D_i = 1[conv(X, h_i) >= 0]``:

    min_U  1/2 || sum_i D_i * conv(X, U_i) - Y ||^2  +  beta * sum_i ||U_i||_*

with ``U_i`` of shape ``(C_out, C, k, k)`` reshaped as ``(C_out, C k k)`` for the
nuclear norm. This is *exactly* the weight-decay training problem of a gated
two-layer CNN ``f(X) = sum_j 1[conv(X, h_g(j)) >= 0] * conv(X, u_j) z_j`` (first
layer ``k x k`` filters ``u_j``, second layer a ``1 x 1`` convolution ``z_j``) with
vector outputs: neurons come from the SVD of each ``U_i``
(:meth:`ConvGatedReLU.recover_network`). Each output pixel is a two-layer network
on its patch, so this is the patch-matrix program without forming the patches.

Conventions: real channels (complex MR images become real/imag channel pairs),
``padding`` ``"zeros"`` or ``"circular"``, a constant bias channel (``bias=True``),
odd kernels. ``beta`` is absolute; :meth:`ConvGatedReLU.beta_max` is the smallest
``beta`` with ``U = 0`` optimal, so ``beta = 0.1 * beta_max`` means the same on every
dataset.

Certificate: the relative duality gap, the dual point the best-scaled residual
``lam = s (Y - Y_hat)`` with ``max_i ||A_i^T lam||_2 <= beta`` (spectral norms),
all from ``A.N U`` (no forward pass), so the project's FISTA checks it for free.
:meth:`ConvGatedReLU.pattern_check` is the pattern-sufficiency check on fresh
gates. The cone-constrained ReLU form lives in :mod:`convexrecon.programs.relu.conv_cone`.

``ConvTwoLayerReLU``, this program's former name, is a deprecated alias (it warns
with a DeprecationWarning when built) kept for one release.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from convexrecon._checks import check_finite, check_positive
from convexrecon.errors import InputError
from convexrecon.operators.base import prod
from convexrecon.operators.conv import (PatternConv, _check_images, _check_kernel, pad_input,
                                        pattern_masks, random_gates)
from convexrecon.operators.linalg import power_method
from convexrecon.programs.composite import CompositeProgram, ProxTerm
from convexrecon.programs.duality import best_scale, scale_limit
from convexrecon.programs.l1 import gap_from_normal
from convexrecon.programs.relu.certificates import KKT
from convexrecon.programs.relu.limits import CVXPY_MAX_ROWS, CVXPY_MAX_UNKNOWNS
from convexrecon.programs.relu.networks import GatedConvNet
from convexrecon.programs.terms import LeastSquares, singular_value_threshold

__all__ = ["ConvGatedReLU", "ConvTwoLayerReLU", "ConvNuclear", "NuclearConvProgram", "NuclearFilters", "GatedConvNet"]


class ConvNuclear(ProxTerm):
    """``beta * sum_i ||U_i||_*`` over filters ``(*, P, C_out, C, k, k)``, each
    ``U_i`` taken as a ``(C_out, C k k)`` matrix; the prox is batched singular value
    thresholding (one batched SVD)."""

    def __init__(self, beta: float) -> None:
        self.beta = check_positive(beta, "beta")

    @staticmethod
    def _mats(u: torch.Tensor) -> torch.Tensor:
        return u.reshape(*u.shape[:-3], -1)

    def value(self, u: torch.Tensor) -> torch.Tensor:
        return self.beta * torch.linalg.svdvals(self._mats(u)).sum()

    def prox_with_value(self, u: torch.Tensor, step: float):
        """``(prox(u, step), value(prox(u, step)))`` from one SVD."""
        out, s = singular_value_threshold(self._mats(u), step * self.beta)
        return out.reshape(u.shape), self.beta * s.sum()

    def prox(self, u: torch.Tensor, step: float) -> torch.Tensor:
        return self.prox_with_value(u, step)[0]

    def spectral_norms(self, v: torch.Tensor) -> torch.Tensor:
        """``||V_i||_2`` of each block: ``(*, P, C_out, C, k, k) -> (*, P)``."""
        return torch.linalg.matrix_norm(self._mats(v), ord=2)

    def dual_norm(self, v: torch.Tensor) -> float:
        """``max_i ||V_i||_2 / beta`` (the penalty's dual norm)."""
        return float(self.spectral_norms(v).max()) / self.beta


class _ConvLeastSquares(LeastSquares):
    """``1/2 ||A U - Y||^2`` whose Lipschitz constant comes from the power method on a
    one-output-channel copy of ``A`` (``A^T A = G kron I_{C_out}``: same spectrum,
    half the cost), cached, times 1.01 for safety."""

    def __init__(self, A: PatternConv, y: torch.Tensor, *, lipschitz: float | None,
                 power_iters: int, power_tol: float) -> None:
        super().__init__(A, y, lipschitz=lipschitz, power_iters=power_iters)
        self.power_tol = power_tol

    def lipschitz(self) -> float:
        if self._lip is None:
            op = self.op
            single = PatternConv(op.x_padded, op.maskf[:, 0, :, 0] > 0, c_out=1)
            lam = power_method(single.N, iters=self.power_iters, tol=self.power_tol,
                               device=op.x_padded.device)
            self._lip = 1.01 * lam
        return self._lip


class NuclearFilters:
    """The variable side of the nuclear-norm conv programs: ``beta`` (of a
    :class:`ConvNuclear` ``reg``), the shape check and the zero start. Users set
    ``reg``, ``shape``, ``dtype`` and ``Y`` (for the device)."""

    reg: ConvNuclear

    @property
    def beta(self) -> float:
        return self.reg.beta

    def set_beta(self, beta: float) -> None:
        """Change the penalty weight (e.g. to a fraction of :meth:`beta_max`)."""
        self.reg.beta = check_positive(beta, "beta")

    def check_x(self, x: Any, what: str = "x") -> torch.Tensor:
        """Raise InputError unless ``x`` is a tensor of shape ``self.shape``."""
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != self.shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"{what}: expected a tensor of shape {self.shape}, got {got}")
        return x

    def zeros(self) -> torch.Tensor:
        """The zero variable (the default starting point)."""
        return torch.zeros(self.shape, dtype=self.dtype, device=self.Y.device)


class NuclearConvProgram(NuclearFilters, CompositeProgram):
    """``1/2 ||A U - Y||^2 + beta sum_i ||U_i||_*`` (a least-squares data term and
    :class:`ConvNuclear`): the value and relative-duality-gap certificate shared by
    :class:`ConvGatedReLU` and the programs that change its data operator (e.g. the
    layer-wise step with data consistency,
    :class:`convexrecon.nets.layerwise_program.LayerProgram`).

    Subclasses set ``smooth`` (a :class:`~convexrecon.programs.terms.LeastSquares`),
    ``reg`` (a :class:`ConvNuclear`), ``Y``, ``shape`` and ``dtype``.
    """

    smooth: LeastSquares

    def beta_max(self) -> float:
        """``max_i ||A_i^T Y||_2``: for ``beta >= beta_max`` the optimum is ``U = 0``."""
        return float(self.reg.spectral_norms(self.smooth.aty).max())

    # -- objective and certificates ---------------------------------------------------
    def value(self, x, *, normal_x: torch.Tensor | None = None,
              reg_value: float | torch.Tensor | None = None) -> float:
        """Objective; ``normal_x = A.N x`` (and ``reg_value``) skip recomputation."""
        x = self.check_x(x)
        nx = self.smooth.normal(x) if normal_x is None else normal_x
        rv = self.reg.value(x) if reg_value is None else reg_value
        return float(self.smooth.value_from_normal(x, nx)) + float(rv)

    def duality_gap(self, x, *, normal_x: torch.Tensor | None = None,
                    reg_value: float | torch.Tensor | None = None) -> tuple[float, float]:
        """``(primal, dual)``: the dual value of the best-scaled residual."""
        x = self.check_x(x)
        nx = self.smooth.normal(x) if normal_x is None else normal_x
        rv = float(self.reg.value(x) if reg_value is None else reg_value)
        return gap_from_normal(self.smooth, x, nx, rv, self.reg.dual_norm)

    def certificate(self, x, *, normal_x: torch.Tensor | None = None,
                    reg_value: float | torch.Tensor | None = None) -> float:
        """Relative duality gap ``(primal - dual) / primal`` (0 at the optimum)."""
        primal, dual = self.duality_gap(x, normal_x=normal_x, reg_value=reg_value)
        return max(primal - dual, 0.0) / max(abs(primal), 1e-300)


class ConvGatedReLU(NuclearConvProgram):
    """Gated convex two-layer CNN program (see the module docstring).

    Args:
        X: images ``(N, C, H, W)`` real (or complex: real/imag become channels).
        Y: targets ``(N, C_out, H, W)`` (complex likewise).
        kernel_size: odd ``k``.
        n_patterns: number ``P`` of random gates.
        beta: penalty weight > 0.
        seed / generator: randomness of the gates.
        padding: ``"zeros"`` or ``"circular"``.
        bias: append a constant input channel (the bias).
        gates: explicit gate filters ``(P, C + bias, k, k)`` (overrides sampling).
        dtype: float dtype (default: that of ``X``; float32 for speed, float64 for
            exactness).
        lipschitz: a known Lipschitz constant (skips the power method).
        power_iters / power_tol: power-method settings.

    Variable: ``U`` of shape ``(P, C_out, C + bias, k, k)``.
    """

    def __init__(self, X: Any, Y: Any, *, kernel_size: int = 3, n_patterns: int = 16,
                 beta: float, seed: int | None = 0, generator: torch.Generator | None = None,
                 padding: str = "zeros", bias: bool = True, gates: torch.Tensor | None = None,
                 dtype: torch.dtype | None = None, lipschitz: float | None = None,
                 power_iters: int = 100, power_tol: float = 1e-4) -> None:
        X = _check_images(X, "X")
        Y = _check_images(Y, "Y")
        if Y.shape[0] != X.shape[0] or Y.shape[-2:] != X.shape[-2:]:
            raise InputError(f"Y: expected (N={X.shape[0]}, C_out, {X.shape[-2]}, {X.shape[-1]}) "
                             f"to match X {tuple(X.shape)}, got {tuple(Y.shape)}")
        beta = check_positive(beta, "beta")
        k = _check_kernel(kernel_size)
        dtype = dtype if dtype is not None else X.dtype
        if dtype not in (torch.float32, torch.float64):
            raise InputError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        X, Y = X.to(dtype), Y.to(dtype=dtype, device=X.device)
        xp = pad_input(X, k, padding=padding, bias=bias)
        self.gate_bias_scale = float(X.pow(2).mean().sqrt()) or 1.0
        if gates is None:
            gates = random_gates(n_patterns, X.shape[1], k, bias=bias,
                                 bias_scale=self.gate_bias_scale, seed=seed,
                                 generator=generator, dtype=dtype, device=X.device)
        else:
            gates = check_finite(gates, "gates").to(device=X.device, dtype=dtype)
            if gates.ndim != 4 or tuple(gates.shape[1:]) != (xp.shape[1], k, k):
                raise InputError(f"gates: expected (P, {xp.shape[1]}, {k}, {k}), got {tuple(gates.shape)}")
        self.gates = gates
        self.op = PatternConv(xp, pattern_masks(xp, gates), c_out=Y.shape[1])
        self.padding, self.bias, self.kernel_size = padding, bool(bias), k
        self.n_channels_raw = X.shape[1]
        super().__init__(_ConvLeastSquares(self.op, Y, lipschitz=lipschitz,
                                           power_iters=power_iters, power_tol=power_tol),
                         ConvNuclear(beta))
        self.smooth: _ConvLeastSquares
        self.reg: ConvNuclear
        self.Y = self.smooth.y
        self.shape = self.op.ishape
        self.dtype = dtype

    # -- conveniences -----------------------------------------------------------------
    @property
    def masks(self) -> torch.Tensor:
        """Patterns, bool ``(N, P, H, W)``."""
        return self.op.maskf[:, 0, :, 0] > 0

    def predict(self, U: torch.Tensor) -> torch.Tensor:
        """The convex model's output ``sum_i D_i conv(X, U_i)``: ``(N, C_out, H, W)``."""
        return self.op.forward(self.check_x(U, "U"))

    def dual_point(self, U: torch.Tensor) -> torch.Tensor:
        """The dual-feasible point ``lam = s (Y - A U)`` of the certificate."""
        U = self.check_x(U, "U")
        r = self.Y - self.op.forward(U)
        s, _ = best_scale(float((r * self.Y).sum()), float(r.pow(2).sum()),
                          scale_limit(self.reg.dual_norm(self.op.adjoint(r))))
        return (s if s != float("inf") else 0.0) * r

    def kkt(self, x: torch.Tensor) -> KKT:
        """:class:`~convexrecon.programs.relu.certificates.KKT` with the relative
        duality gap (no constraints: ``violation = 0``)."""
        primal, dual = self.duality_gap(x)
        return KKT(violation=0.0, gap=max(primal - dual, 0.0) / max(abs(primal), 1e-300),
                   primal=primal, dual=dual)

    def pattern_check(self, U: torch.Tensor, *, n_fresh: int | None = None,
                      seed: int = 12345) -> float:
        """Pattern sufficiency: ``max_j ||A'_j^T lam||_2 / beta`` over fresh random gates.

        ``<= 1`` means no fresh pattern would enter: ``U`` (padded with zero filters)
        stays optimal with those patterns added. ``n_fresh`` defaults to ``P``.
        """
        lam = self.dual_point(U)
        return self.reg.dual_norm(self.fresh_operator(n_fresh, seed).adjoint(lam))

    def fresh_operator(self, n_fresh: int | None, seed: int) -> PatternConv:
        """The pattern operator of ``n_fresh`` (default ``P``) fresh random gates drawn
        like this program's, on the same images (for the pattern checks)."""
        n = self.op.n_patterns if n_fresh is None else int(n_fresh)
        xp = self.op.x_padded
        gates = random_gates(n, self.n_channels_raw, self.kernel_size, bias=self.bias,
                             bias_scale=self.gate_bias_scale, seed=seed, dtype=self.dtype,
                             device=xp.device)
        return PatternConv(xp, pattern_masks(xp, gates), c_out=self.op.c_out)

    # -- exports ----------------------------------------------------------------------
    def to_cvxpy(self, *, max_rows: int = CVXPY_MAX_ROWS, max_unknowns: int = CVXPY_MAX_UNKNOWNS):
        """``(problem, to_x)`` with the patch matrix; InputError beyond the limits
        (``N*H*W <= max_rows``, ``P*C_out*C*k*k <= max_unknowns``)."""
        import cvxpy as cp
        import numpy as np

        n_rows, n_unk = prod(self.op.oshape) // self.op.c_out, prod(self.shape)
        if n_rows > max_rows or n_unk > max_unknowns:
            raise InputError(
                f"{type(self).__name__}.to_cvxpy: expected N*H*W <= {max_rows} (CVXPY_MAX_ROWS) and "
                f"P*C_out*C*k*k <= {max_unknowns} (CVXPY_MAX_UNKNOWNS), got {n_rows} and {n_unk}; "
                "use N=2, 8x8 images, 3x3 kernels")
        xmat = self.op.patch_matrix().detach().cpu().double().numpy()
        dmat = self.op.mask_matrix().detach().cpu().double().numpy()
        ymat = self.Y.permute(0, 2, 3, 1).reshape(-1, self.op.c_out).detach().cpu().double().numpy()
        p, co = self.op.n_patterns, self.op.c_out
        us = [cp.Variable((co, xmat.shape[1])) for _ in range(p)]
        pred = sum(cp.multiply(dmat[:, i:i + 1], xmat @ us[i].T) for i in range(p))
        obj = 0.5 * cp.sum_squares(pred - ymat) + self.beta * sum(cp.normNuc(u) for u in us)
        problem = cp.Problem(cp.Minimize(obj))

        def to_x() -> torch.Tensor:
            arr = np.stack([u.value for u in us]).reshape(self.shape)
            return torch.as_tensor(arr, dtype=self.dtype, device=self.Y.device)

        return problem, to_x

    def recover_network(self, U: torch.Tensor, *, rtol: float = 1e-9) -> "GatedConvNet":
        """The gated CNN with the same output and ``loss + penalty`` as ``U``.

        Per pattern ``i`` and singular triple ``(sigma, a, b)`` of ``U_i`` (``a`` in
        ``R^{C_out}``, ``b`` in ``R^{C k k}``) above ``rtol * max sigma``: a neuron with
        first-layer filter ``sqrt(sigma) b``, second-layer weights ``sqrt(sigma) a``
        and gate ``h_i``. Its penalty ``beta/2 (||u||^2 + ||z||^2) = beta sigma``.
        """
        U = self.check_x(U, "U").detach()
        mats = U.reshape(U.shape[0], U.shape[1], -1)
        lft, s, vh = torch.linalg.svd(mats, full_matrices=False)  # (P,Co,r) (P,r) (P,r,Ckk)
        keep = s > rtol * float(s.max()) if float(s.max()) > 0 else torch.zeros_like(s, dtype=torch.bool)
        idx_p, idx_r = torch.nonzero(keep, as_tuple=True)
        root = s[idx_p, idx_r].sqrt()
        first = (root[:, None] * vh[idx_p, idx_r]).reshape(-1, *U.shape[2:])
        second = (root[None, :] * lft[idx_p, :, idx_r].T)[..., None, None]
        return GatedConvNet(self.gates, idx_p, first, second, padding=self.padding,
                            bias=self.bias)


class ConvTwoLayerReLU(ConvGatedReLU):
    """Deprecated alias of :class:`ConvGatedReLU` (its former name), kept for one
    release; building one emits a DeprecationWarning."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn("ConvTwoLayerReLU is deprecated; use ConvGatedReLU (the same program)",
                      DeprecationWarning, stacklevel=2)
        super().__init__(*args, **kwargs)
