"""Data and linear maps shared by the convex two-layer programs on data matrices.

* :class:`Patterns` and :func:`sample_patterns`: activation patterns
  ``D_i = 1[X g_i >= 0]`` from Gaussian gates, duplicates and all-zero ones dropped.
* :func:`gate_shift`: how far to move blocks along their gates into their cones.
* ``_PatternData``: the checked ``X``, ``Y``, ``beta`` and patterns, with the maps
  ``A U = sum_i D_i X U_i`` and ``A^T`` that :mod:`convexrecon.programs.relu.dense`
  builds its programs on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from convexrecon._checks import as_tensor, check_finite, check_positive
from convexrecon.errors import InputError

__all__ = ["Patterns", "sample_patterns", "gate_shift"]


# --------------------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------------------
@dataclass
class Patterns:
    """Activation patterns ``D`` (bool ``(n, P)``) and the gates that made them.

    ``gates`` is ``(d, P)``: column ``i`` is the gate vector ``g_i`` with
    ``D[:, i] = X g_i >= 0``. It may be ``None`` for user-given patterns, in which
    case gated networks cannot be recovered.
    """

    D: torch.Tensor
    gates: torch.Tensor | None


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    return torch.Generator(device="cpu").manual_seed(int(seed if seed is not None else 0))


def sample_patterns(X: torch.Tensor, n_patterns: int, *, seed: int | None = 0,
                    generator: torch.Generator | None = None,
                    drop_zero: bool = True) -> Patterns:
    """Sample ``n_patterns`` Gaussian gates and the distinct patterns they induce.

    Duplicate patterns are dropped (first occurrence kept) and, with ``drop_zero``,
    so are all-zero patterns. The result may therefore hold fewer than
    ``n_patterns`` patterns; InputError if none is left.
    """
    if not isinstance(X, torch.Tensor) or X.ndim != 2:
        raise InputError(f"X: expected a 2-D tensor (n, d), got {getattr(X, 'shape', type(X))}")
    n_patterns = int(n_patterns)
    if n_patterns < 1:
        raise InputError(f"n_patterns: expected an integer >= 1, got {n_patterns}")
    gen = _generator(seed, generator)
    d = X.shape[1]
    gates = torch.randn(d, n_patterns, generator=gen, dtype=torch.float64).to(
        device=X.device, dtype=X.dtype)
    D = X @ gates >= 0
    return _dedupe(D, gates, drop_zero=drop_zero)


def _dedupe(D: torch.Tensor, gates: torch.Tensor | None, *, drop_zero: bool) -> Patterns:
    n, P = D.shape
    keep: list[int] = []
    seen: set[bytes] = set()
    cols = D.T.contiguous().cpu().numpy()
    for i in range(P):
        if drop_zero and not cols[i].any():
            continue
        key = cols[i].tobytes()
        if key in seen:
            continue
        seen.add(key)
        keep.append(i)
    if not keep:
        raise InputError("patterns: expected at least one non-zero pattern, got none "
                         f"(from {P} sampled gates on n={n} rows)")
    idx = torch.tensor(keep, device=D.device)
    return Patterns(D=D[:, idx].contiguous(),
                    gates=None if gates is None else gates[:, idx].contiguous())


# --------------------------------------------------------------------------------------
# Cone feasibility along the gates
# --------------------------------------------------------------------------------------
def gate_shift(slack: torch.Tensor, gate_slack: torch.Tensor,
               margin: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """How far to move each block along its gate to satisfy its cone constraints.

    ``slack`` ``(n, N, ...)`` is ``(2 D_j - I) X u_j`` and ``gate_slack`` (broadcast
    against it) ``(2 D_j - I) X g_j = |X g_j| >= 0``, so ``u_j + tau_j g_j`` is
    feasible for ``tau_j = max_k (-slack_jk)_+ / gate_slack_jk`` (times ``1 +
    margin``). A block with a violated row where ``gate_slack = 0`` cannot be moved
    into its cone that way: it is ``stuck`` and gets ``tau = 0``.

    Returns ``(tau, stuck)``, each of the shape of ``slack`` without its first axis.
    """
    viol = torch.clamp(-slack, min=0.0)
    usable = (gate_slack > 0).expand_as(viol)
    stuck = ((viol > 0) & ~usable).any(0)
    tau = (viol / torch.where(usable, gate_slack, torch.ones_like(gate_slack))).amax(0)
    return torch.where(stuck, torch.zeros_like(tau), tau) * (1.0 + margin), stuck


# --------------------------------------------------------------------------------------
# Shared data handling and linear maps
# --------------------------------------------------------------------------------------
class _PatternData:
    """Checked data ``X (n, d)``, ``Y (n, c)``, patterns and the maps over blocks."""

    def __init__(self, X: Any, y: Any, *, n_patterns: int | None, beta: float,
                 seed: int | None, generator: torch.Generator | None,
                 patterns: Patterns | None) -> None:
        X = as_tensor(X, "X")
        y = as_tensor(y, "y")
        if X.is_complex() or y.is_complex():
            raise InputError("X, y: expected real tensors (split complex targets into "
                             f"real/imag columns), got {X.dtype} and {y.dtype}")
        if X.ndim != 2:
            raise InputError(f"X: expected shape (n, d), got {tuple(X.shape)}")
        if y.ndim not in (1, 2):
            raise InputError(f"y: expected shape (n,) or (n, c), got {tuple(y.shape)}")
        if y.shape[0] != X.shape[0]:
            raise InputError(f"y: expected {X.shape[0]} rows to match X {tuple(X.shape)}, "
                             f"got {tuple(y.shape)}")
        if X.shape[0] == 0 or X.shape[1] == 0 or (y.ndim == 2 and y.shape[1] == 0):
            raise InputError(f"X, y: expected non-empty data, got X {tuple(X.shape)}, "
                             f"y {tuple(y.shape)}")
        dtype = X.dtype if X.is_floating_point() else torch.float64
        if y.is_floating_point() and X.is_floating_point():
            dtype = torch.promote_types(X.dtype, y.dtype)
        X = check_finite(X.to(dtype), "X")
        y = check_finite(y.to(device=X.device, dtype=dtype), "y")
        self.beta = check_positive(beta, "beta")
        self.scalar_output = y.ndim == 1
        self.X = X
        self.Y = y.reshape(y.shape[0], -1)
        if patterns is None:
            if n_patterns is None:
                raise InputError("n_patterns: expected an integer >= 1 (or patterns=), got None")
            patterns = sample_patterns(X, n_patterns, seed=seed, generator=generator)
        else:
            if not isinstance(patterns, Patterns):
                raise InputError(f"patterns: expected a Patterns, got {type(patterns).__name__}")
            Dp = patterns.D
            if Dp.dtype != torch.bool or Dp.ndim != 2 or Dp.shape[0] != X.shape[0]:
                raise InputError(f"patterns.D: expected a bool tensor ({X.shape[0]}, P), "
                                 f"got {Dp.dtype} {tuple(Dp.shape)}")
            if Dp.shape[1] == 0 or not bool(Dp.any(dim=0).all()):
                raise InputError("patterns.D: expected P >= 1 patterns, none all-zero, "
                                 f"got {Dp.shape[1]} with {int((~Dp.any(dim=0)).sum())} zero")
            g = patterns.gates
            if g is not None and (g.ndim != 2 or g.shape != (X.shape[1], Dp.shape[1])):
                raise InputError(f"patterns.gates: expected shape ({X.shape[1]}, "
                                 f"{Dp.shape[1]}), got {tuple(g.shape)}")
            patterns = Patterns(D=Dp.to(X.device),
                                gates=None if g is None else g.to(X.device, dtype))
        self.patterns = patterns
        self.D = patterns.D
        self.Dm = patterns.D.to(dtype)
        self._lip: float | None = None

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "_PatternData":
        """A copy with the data moved to ``device`` and/or cast to real ``dtype``."""
        if dtype is not None and not dtype.is_floating_point:
            raise InputError(f"dtype: expected a real floating dtype, got {dtype}")
        new = copy.copy(self)
        dev = device if device is not None else self.X.device
        dt = dtype if dtype is not None else self.X.dtype
        new.X = self.X.to(dev, dt)
        new.Y = self.Y.to(dev, dt)
        new.D = self.D.to(dev)
        new.Dm = self.Dm.to(dev, dt)
        g = self.patterns.gates
        new.patterns = Patterns(D=new.D, gates=None if g is None else g.to(dev, dt))
        new._lip = self._lip
        new._kernel_eig = None
        return new

    def column(self, j: int) -> "_PatternData":
        """A copy holding output column ``j`` only (same ``X`` and patterns)."""
        if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < self.c:
            raise InputError(f"j: expected an output column in [0, {self.c}), got {j!r}")
        new = copy.copy(self)
        new.Y = self.Y[:, j:j + 1].contiguous()
        new.scalar_output = True
        new._kernel_eig = None
        return new

    # sizes
    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def c(self) -> int:
        return self.Y.shape[1]

    @property
    def P(self) -> int:
        return self.D.shape[1]

    @property
    def block_shape(self) -> tuple[int, int, int]:
        """Shape ``(P, d, c)`` of one block variable."""
        return (self.P, self.d, self.c)

    # maps
    def xu(self, U: torch.Tensor) -> torch.Tensor:
        """``X U_i`` for every block: ``(P, d, c) -> (n, P, c)``."""
        P, d, c = U.shape
        return (self.X @ U.permute(1, 0, 2).reshape(d, P * c)).reshape(self.n, P, c)

    def xt(self, Z: torch.Tensor) -> torch.Tensor:
        """``X^T Z_i`` for every block: ``(n, P, c) -> (P, d, c)``."""
        n, P, c = Z.shape
        return (self.X.T @ Z.reshape(n, P * c)).reshape(self.d, P, c).permute(1, 0, 2)

    def apply(self, U: torch.Tensor) -> torch.Tensor:
        """``sum_i D_i X U_i``: ``(P, d, c) -> (n, c)``."""
        return (self.xu(U) * self.Dm.unsqueeze(-1)).sum(dim=1)

    def adjoint(self, R: torch.Tensor) -> torch.Tensor:
        """``X^T D_i R`` for every ``i``: ``(n, c) -> (P, d, c)``."""
        return self.xt(self.Dm.unsqueeze(-1) * R.unsqueeze(1))

    def kernel(self) -> torch.Tensor:
        """``sum_i D_i X X^T D_i = (X X^T) * (D D^T)``, the ``n x n`` Gram of ``apply``."""
        return (self.X @ self.X.T) * (self.Dm @ self.Dm.T)

    def lipschitz_ls(self) -> float:
        """Largest eigenvalue of ``apply^T apply`` (cached)."""
        if self._lip is None:
            if self.n <= 2000:
                self._lip = float(torch.linalg.eigvalsh(self.kernel())[-1])
            else:
                g = torch.Generator(device="cpu").manual_seed(0)
                U = torch.randn(self.block_shape, generator=g, dtype=self.X.dtype).to(self.X.device)
                lam = 0.0
                for _ in range(100):
                    Z = self.adjoint(self.apply(U))
                    new = float(torch.linalg.vector_norm(Z))
                    U = Z / max(new, 1e-300)
                    if abs(new - lam) <= 1e-6 * new:
                        break
                    lam = new
                self._lip = new
        return self._lip

    def check_blocks(self, U: Any, name: str) -> torch.Tensor:
        """Check one block variable of shape ``(P, d, c)``."""
        if not isinstance(U, torch.Tensor) or tuple(U.shape) != self.block_shape:
            raise InputError(f"{name}: expected a tensor of shape {self.block_shape}, "
                             f"got {tuple(getattr(U, 'shape', ())) or type(U).__name__}")
        return U

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.block_shape, dtype=self.X.dtype, device=self.X.device)

    def output(self, F: torch.Tensor) -> torch.Tensor:
        """Return ``(n, c)`` predictions as ``(n,)`` when ``y`` was a vector."""
        return F[:, 0] if self.scalar_output else F
