"""Building blocks of the ADMM solvers of the convex two-layer programs.

* :class:`BlockSystem`: the factorised ``u``-step ``(A^T A + rho (I (x) M)) u = r``
  for block variables, with ``A u = sum_j s_j D_j X u_j``; one eigendecomposition
  serves every ``rho``. It also gives least-squares dual points ``w`` with
  ``A^T w ~ Z`` (the dual certificate of the gated form).
* :class:`Anderson`: safeguarded type-II Anderson acceleration of a fixed-point
  map on a flat vector (the Douglas-Rachford variable of ADMM).
"""

from __future__ import annotations

import torch

from convexrecon.errors import InputError

__all__ = ["BlockSystem", "Anderson"]


class BlockSystem:
    """Factorised solver of ``(A^T A + rho (I (x) M)) U = R`` for blocks ``(N, d, c)``.

    The eigendecomposition is of the ``n x n`` matrix ``A (I (x) M^-1) A^T =
    (X M^-1 X^T) * (Ds Ds^T)`` (Woodbury) when ``n <= N d``, else of the primal
    ``N d x N d`` matrix.

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
            K = (Xw @ Xw.T) * (Ds @ Ds.T)
        else:
            Amat = (Ds.unsqueeze(-1) * Xw.unsqueeze(1)).reshape(n, N * d)
            K = Amat.T @ Amat
        lam, self.Q = torch.linalg.eigh(K)
        self.lam = torch.clamp(lam, min=0.0)
        self.QT = self.Q.T.contiguous()
        self.Minv = None if M is None else self.Mih @ self.Mih
        self.XMiT = self.Xt_ if M is None else (X @ self.Minv).T.contiguous()

    @property
    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of the factorised Gram (nonzero part of ``A M^-1 A^T``)."""
        return self.lam

    def apply(self, U: torch.Tensor) -> torch.Tensor:
        """``A U = sum_j s_j D_j X U_j``: ``(N, d, c) -> (n, c)``."""
        N, d, c = U.shape
        if c == 1:
            return ((self.X @ U[:, :, 0].T) * self.Ds).sum(dim=1, keepdim=True)
        XU = (self.X @ U.permute(1, 0, 2).reshape(d, N * c)).reshape(-1, N, c)
        return (XU * self.Ds.unsqueeze(-1)).sum(dim=1)

    def adjoint(self, R: torch.Tensor) -> torch.Tensor:
        """``A^T R``: ``(n, c) -> (N, d, c)``."""
        n, c = R.shape
        N, d = self.Ds.shape[1], self.X.shape[1]
        if c == 1:
            return (self.Xt_ @ (self.Ds * R)).T.unsqueeze(-1)
        Z = (self.Ds.unsqueeze(-1) * R.unsqueeze(1)).reshape(n, N * c)
        return (self.Xt_ @ Z).reshape(d, N, c).permute(1, 0, 2)

    def _mih(self, U: torch.Tensor) -> torch.Tensor:
        return U if self.Mih is None else _left(self.Mih, U)

    def solve(self, R: torch.Tensor, rho: float) -> torch.Tensor:
        """``U = (A^T A + rho (I (x) M))^{-1} R`` for ``R`` of shape ``(N, d, c)``.

        Woodbury: ``U = (V - M^-1 A^T Q (rho + Lambda)^-1 Q^T A V) / rho`` with
        ``V = M^-1 R`` and ``A M^-1 A^T = Q Lambda Q^T``.
        """
        if self.woodbury:
            V = R if self.Minv is None else _left(self.Minv, R)
            W = self.Q @ ((self.QT @ self.apply(V)) / (rho + self.lam).unsqueeze(-1))
            n, c = W.shape
            N = self.Ds.shape[1]
            if c == 1:
                AtW = (self.XMiT @ (self.Ds * W)).T.unsqueeze(-1)
            else:
                Z = (self.Ds.unsqueeze(-1) * W.unsqueeze(1)).reshape(n, N * c)
                AtW = (self.XMiT @ Z).reshape(-1, N, c).permute(1, 0, 2)
            return (V - AtW) / rho
        Rt = self._mih(R)  # M^{-1/2} R, system in the whitened variable
        N, d, c = Rt.shape
        flat = Rt.reshape(N * d, c)
        Ut = (self.Q @ ((self.QT @ flat) / (rho + self.lam).unsqueeze(-1))).reshape(N, d, c)
        return self._mih(Ut)

    def least_squares_dual(self, Z: torch.Tensor, *, rcond: float = 1e-10) -> torch.Tensor:
        """``w = argmin ||A^T w - Z||`` (minimum norm; identity metric only).

        ``(N, d, c) -> (n, c)``; eigenvalues below ``rcond * max`` are dropped.
        """
        if self.Mih is not None:
            raise InputError("least_squares_dual: expected a system with M = I")
        cut = rcond * float(self.lam.max())
        inv = torch.where(self.lam > cut, 1.0 / torch.clamp(self.lam, min=cut),
                          torch.zeros_like(self.lam)).unsqueeze(-1)
        if self.woodbury:
            return self.Q @ ((self.QT @ self.apply(Z)) * inv)
        N, d, c = Z.shape
        V = (self.Q @ ((self.QT @ Z.reshape(N * d, c)) * inv)).reshape(N, d, c)
        return self.apply(V)


def _left(M: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """``M @ U_j`` for every block of ``U`` ``(N, d, c)``, as one matmul."""
    N, d, c = U.shape
    return (M @ U.permute(1, 0, 2).reshape(d, N * c)).reshape(d, N, c).permute(1, 0, 2)


class Anderson:
    """Type-II Anderson acceleration with memory ``m`` on flat vectors.

    Feed accepted pairs ``(x_k, g_k)`` with ``g_k = T(x_k) - x_k`` through
    :meth:`push`; :meth:`extrapolate` returns the mixed point
    ``x_k + g_k - (dX + dG) gamma`` with ``gamma`` the (Tikhonov-regularised)
    least-squares fit of ``g_k`` by ``dG``, or ``None`` while the memory is empty.
    The differences live in preallocated ring buffers and their Gram matrix is
    updated one row per push, so a step costs ``O(m N)``. The caller safeguards
    (accepts the point only if the residual decreases).
    """

    def __init__(self, memory: int = 8, *, reg: float = 1e-10) -> None:
        if int(memory) < 1:
            raise InputError(f"memory: expected an integer >= 1, got {memory!r}")
        self.m = int(memory)
        self.reg = float(reg)
        self.dX: torch.Tensor | None = None
        self.dG: torch.Tensor | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the history (after a change of the map, e.g. of ``rho``)."""
        self.count = 0
        self.head = 0
        self.x: torch.Tensor | None = None
        self.g: torch.Tensor | None = None

    def push(self, x: torch.Tensor, g: torch.Tensor) -> None:
        """Record the accepted iterate ``x`` and its residual ``g``."""
        if self.x is not None:
            if self.dX is None or self.dX.shape[1] != x.numel() or self.dX.dtype != x.dtype:
                self.dX = x.new_zeros(self.m, x.numel())
                self.dG = x.new_zeros(self.m, x.numel())
                self.H = x.new_zeros(self.m, self.m)
            k = self.head
            torch.sub(x, self.x, out=self.dX[k])
            torch.sub(g, self.g, out=self.dG[k])
            self.count = min(self.count + 1, self.m)
            self.head = (k + 1) % self.m
            row = self.dG[: self.count] @ self.dG[k]
            self.H[k, : self.count] = row
            self.H[: self.count, k] = row
        self.x, self.g = x, g

    def extrapolate(self) -> torch.Tensor | None:
        """The Anderson point from the stored history, or ``None``."""
        if not self.count or self.x is None:
            return None
        c = self.count
        dG, dX = self.dG[:c], self.dX[:c]
        H = self.H[:c, :c]
        rhs = dG @ self.g
        scale = float(H.diagonal().max())
        if not scale > 0:
            return None
        H = H + (self.reg * scale) * torch.eye(c, dtype=H.dtype, device=H.device)
        try:
            gamma = torch.linalg.solve(H, rhs)
        except RuntimeError:
            return None
        if not bool(torch.isfinite(gamma).all()):
            return None
        return self.x + self.g - gamma @ dX - gamma @ dG
