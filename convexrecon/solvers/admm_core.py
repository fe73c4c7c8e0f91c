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
        return U if self.Mih is None else self.Mih @ U

    def solve(self, R: torch.Tensor, rho: float) -> torch.Tensor:
        """``U = (A^T A + rho (I (x) M))^{-1} R`` for ``R`` of shape ``(N, d, c)``."""
        Rt = self._mih(R)  # M^{-1/2} R, system in the whitened variable
        if self.woodbury:
            Z = self.apply(self._mih(Rt))
            W = self.Q @ ((self.QT @ Z) / (rho + self.lam).unsqueeze(-1))
            Ut = (Rt - self._mih(self.adjoint(W))) / rho
        else:
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


class Anderson:
    """Type-II Anderson acceleration with memory ``m`` on flat vectors.

    Feed accepted pairs ``(x_k, g_k)`` with ``g_k = T(x_k) - x_k`` through
    :meth:`push`; :meth:`extrapolate` returns the mixed point
    ``x_k + g_k - (dX + dG) gamma`` with ``gamma`` the (Tikhonov-regularised)
    least-squares fit of ``g_k`` by ``dG``, or ``None`` while the memory is empty.
    The caller safeguards (accepts the point only if the residual decreases).
    """

    def __init__(self, memory: int = 8, *, reg: float = 1e-10) -> None:
        if int(memory) < 1:
            raise InputError(f"memory: expected an integer >= 1, got {memory!r}")
        self.m = int(memory)
        self.reg = float(reg)
        self.reset()

    def reset(self) -> None:
        """Forget the history (after a change of the map, e.g. of ``rho``)."""
        self.dX: list[torch.Tensor] = []
        self.dG: list[torch.Tensor] = []
        self.x: torch.Tensor | None = None
        self.g: torch.Tensor | None = None

    def push(self, x: torch.Tensor, g: torch.Tensor) -> None:
        """Record the accepted iterate ``x`` and its residual ``g``."""
        if self.x is not None:
            self.dX.append(x - self.x)
            self.dG.append(g - self.g)
            if len(self.dX) > self.m:
                self.dX.pop(0)
                self.dG.pop(0)
        self.x, self.g = x, g

    def extrapolate(self) -> torch.Tensor | None:
        """The Anderson point from the stored history, or ``None``."""
        if not self.dG or self.x is None:
            return None
        dG = torch.stack(self.dG, dim=1)  # (len, k)
        H = dG.T @ dG
        rhs = dG.T @ self.g
        scale = float(H.diagonal().max())
        if not scale > 0:
            return None
        H = H + (self.reg * scale) * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
        try:
            gamma = torch.linalg.solve(H, rhs)
        except RuntimeError:
            return None
        if not bool(torch.isfinite(gamma).all()):
            return None
        dX = torch.stack(self.dX, dim=1)
        return self.x + self.g - (dX + dG) @ gamma
