"""Building blocks of the ADMM solvers of the convex two-layer programs.

* :class:`BlockSystem`: the factorised ``u``-step ``(A^T A + rho (I (x) M)) u = r``
  for block variables, with ``A u = sum_j s_j D_j X u_j``: a Cholesky factor of
  the ``n x n`` Woodbury kernel (or the primal Gram), cached per ``rho``.

The Anderson acceleration of the ADMM iterate is
:class:`convexrecon.fixedpoint.AndersonMemory`, shared with the fixed-point solvers.
"""

from __future__ import annotations

import torch

from convexrecon.errors import InputError

__all__ = ["BlockSystem", "cholesky_solve"]


class BlockSystem:
    """Factorised solver of ``(A^T A + rho (I (x) M)) U = R`` for blocks ``(N, d, c)``.

    The factorised matrix is the ``n x n`` kernel ``K = A (I (x) M^-1) A^T =
    (X M^-1 X^T) * (Ds Ds^T)`` (Woodbury) when ``n <= N d``, else the primal
    ``N d x N d`` Gram. ``K + rho I`` is Cholesky-factored once per ``rho`` (the
    last factor is cached), and solves are two triangular solves.

    Args:
        X: data ``(n, d)``.
        Ds: signed patterns ``(n, N)``: column ``j`` is ``s_j * diag(D_j)``.
        M: SPD ``(d, d)`` metric of the penalty, or ``None`` for the identity.
    """

    def __init__(self, X: torch.Tensor, Ds: torch.Tensor, M: torch.Tensor | None = None) -> None:
        self.X, self.Ds = X, Ds
        self.Xt_ = X.T.contiguous()
        n, d = X.shape
        N = Ds.shape[1]
        if M is None:
            self.Mih = None  # M^{-1/2} = I
        else:
            ev, Q = torch.linalg.eigh(M)
            self.Mih = (Q * ev.rsqrt()) @ Q.T
        self.woodbury = n <= N * d
        Xw = X if self.Mih is None else X @ self.Mih
        if self.woodbury:
            # Ds holds 0 and +-1, so Ds Ds^T (pattern overlap counts) is exact in float32
            D32 = Ds.to(torch.float32)
            self.K = (Xw @ Xw.T).mul_(D32 @ D32.T)
        else:
            Amat = (Ds.unsqueeze(-1) * Xw.unsqueeze(1)).reshape(n, N * d)
            self.K = Amat.T @ Amat
        self.Minv = None if M is None else self.Mih @ self.Mih
        self.XMiT = self.Xt_ if M is None else (X @ self.Minv).T.contiguous()
        self._rho: float | None = None
        self._L: torch.Tensor | None = None

    @property
    def mean_eigenvalue(self) -> float:
        """``trace(K) / dim K``: the mean eigenvalue of the factorised matrix."""
        return float(self.K.diagonal().mean())

    def factor(self, rho: float) -> torch.Tensor:
        """The lower Cholesky factor of ``K + rho I`` (cached for the last ``rho``)."""
        if self._L is None or rho != self._rho:
            self._L, self._rho = _shifted_cholesky(self.K, float(rho)), float(rho)
        return self._L

    def kernel_solve(self, B: torch.Tensor, rho: float) -> torch.Tensor:
        """``(K + rho I)^{-1} B`` for ``B`` of shape ``(dim K, c)``."""
        return cholesky_solve(self.factor(rho), B)

    def rough_kernel_solve(self, B: torch.Tensor, rho: float) -> torch.Tensor:
        """``(K + rho I)^{-1} B`` in single precision (twice as fast, not cached), for
        estimates such as a starting penalty; ``rho`` is raised where float32 needs it."""
        K32 = self.K.to(torch.float32)
        rho = max(float(rho), 1e-6 * max(self.mean_eigenvalue, 1e-300))
        return cholesky_solve(_shifted_cholesky(K32, rho), B.to(torch.float32)).to(B.dtype)

    def apply(self, U: torch.Tensor) -> torch.Tensor:
        """``A U = sum_j s_j D_j X U_j``: ``(N, d, c) -> (n, c)``."""
        N, d, c = U.shape
        if c == 1:
            return ((self.X @ U[:, :, 0].T) * self.Ds).sum(dim=1, keepdim=True)
        XU = (self.X @ U.permute(1, 0, 2).reshape(d, N * c)).reshape(-1, N, c)
        return (XU * self.Ds.unsqueeze(-1)).sum(dim=1)

    def adjoint(self, R: torch.Tensor) -> torch.Tensor:
        """``A^T R``: ``(n, c) -> (N, d, c)``."""
        return self._adjoint(R, self.Xt_)

    def _adjoint(self, R: torch.Tensor, XT: torch.Tensor) -> torch.Tensor:
        n, c = R.shape
        N = self.Ds.shape[1]
        if c == 1:  # (Ds R)^T X^T^T: the (N, d) result comes out contiguous
            return ((self.Ds * R).T @ XT.T).unsqueeze(-1)
        Z = (self.Ds.unsqueeze(-1) * R.unsqueeze(1)).reshape(n, N * c)
        return (XT @ Z).reshape(-1, N, c).permute(1, 0, 2)

    def _mih(self, U: torch.Tensor) -> torch.Tensor:
        return U if self.Mih is None else _left(self.Mih, U)

    def solve(self, R: torch.Tensor, rho: float) -> torch.Tensor:
        """``U = (A^T A + rho (I (x) M))^{-1} R`` for ``R`` of shape ``(N, d, c)``.

        Woodbury: ``U = (V - M^-1 A^T (K + rho I)^-1 A V) / rho`` with ``V = M^-1 R``.
        """
        if self.woodbury:
            V = R if self.Minv is None else _left(self.Minv, R)
            W = self.kernel_solve(self.apply(V), rho)
            return (V - self._adjoint(W, self.XMiT)) / rho
        Rt = self._mih(R)  # M^{-1/2} R, system in the whitened variable
        N, d, c = Rt.shape
        return self._mih(self.kernel_solve(Rt.reshape(N * d, c), rho).reshape(N, d, c))

    def target(self, Y: torch.Tensor) -> torch.Tensor:
        """What :meth:`least_squares_step` precomputes of ``Y``: ``K Y`` (Woodbury)
        or ``A^T Y``."""
        if self.woodbury:
            return self.K @ Y
        return self.adjoint(Y)

    def least_squares_step(self, V: torch.Tensor, rho: float, Y: torch.Tensor,
                           pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``U = argmin 1/2 ||A U - Y||^2 + rho/2 ||U - V||^2`` (identity metric);
        ``pre = target(Y)``.

        Returns ``(U, A U, A^T (Y - A U))``. With Woodbury it costs one ``A``, one
        ``A^T`` and one kernel solve: ``A U = (K + rho I)^-1 (K Y + rho A V)`` and
        ``U = V + A^T (Y - A U) / rho``.
        """
        if self.Mih is not None:
            raise InputError("least_squares_step: expected a system with M = I")
        if self.woodbury:
            AU = self.kernel_solve(pre + rho * self.apply(V), rho)
            G = self.adjoint(Y - AU)
            return V + G / rho, AU, G
        U = self.solve(pre + rho * V, rho)
        AU = self.apply(U)
        return U, AU, self.adjoint(Y - AU)


def _shifted_cholesky(K: torch.Tensor, shift: float) -> torch.Tensor:
    """Lower Cholesky factor of ``K + shift I`` for a symmetric PSD ``K``; a shift too
    small for a numerically singular ``K`` is raised tenfold until it succeeds
    (starting from ``1e-14`` of the mean diagonal)."""
    floor = 1e-14 * max(float(K.diagonal().mean()), 1e-300)
    for _ in range(32):
        S = K.clone()
        S.diagonal().add_(max(shift, floor))
        L, info = torch.linalg.cholesky_ex(S)
        if int(info) == 0:
            return L
        shift = 10.0 * max(shift, floor)
    raise InputError("kernel: expected a finite positive semi-definite matrix; its "
                     "Cholesky factorisation failed at every shift up to "
                     f"{shift:.3g} (non-finite data?)")


def cholesky_solve(L: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``(L L^T)^{-1} B`` by two triangular solves (much faster than
    ``torch.cholesky_solve`` for a few right-hand sides)."""
    return torch.linalg.solve_triangular(
        L.mT, torch.linalg.solve_triangular(L, B, upper=False), upper=True)


def _left(M: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """``M @ U_j`` for every block of ``U`` ``(N, d, c)``, as one matmul."""
    N, d, c = U.shape
    return (M @ U.permute(1, 0, 2).reshape(d, N * c)).reshape(d, N, c).permute(1, 0, 2)
