"""Broyden's (good) method for ``g(z) = f(z) - z = 0``, batched, limited memory.

The inverse-Jacobian estimate of ``g`` is kept as ``B = -I + U V^T`` (``U, V`` of
``m`` columns per sample), which starts at ``-I`` (``J_f = 0``) and approaches
``(J_f - I)^-1``. A step is ``z <- z - B g``; after it, with ``dz`` and ``dg``, the
Sherman-Morrison form of Broyden's update appends::

    u = (dz - B dg) / (dz^T B dg),   v = B^T dz

Guards, per sample: an update with a vanishing denominator is skipped; a step that
no longer moves ``z`` stops the sample as ``"stagnated"``; a blown-up or NaN residual
stops it as ``"diverged"``. The pairs are stored one per iteration (only as many as
the iterations run, not ``memory`` preallocated slots); once there are ``memory`` of
them the oldest drops out.

The solver returns the lowest-residual iterate, and ``stats.inverse_jacobian`` is
the ``B`` held *at that iterate* (a :class:`BroydenInverse` holding only the pairs in
effect there, since the backward pass keeps it alive): SHINE uses
``-B^T g`` in place of the IFT solve ``(I - J_f^T)^-1 g``.

Outer-problem awareness (``opa``, the SHINE paper's OPA): every ``opa_every``
iterations the caller returns a pair ``(sigma, w)`` at the current iterate with
``w = J_g^T sigma`` (one VJP), and an extra rank-one (adjoint-Broyden) update makes
``B^T w = sigma`` exact. With ``sigma = B^T dL/dz`` the vector ``w`` approaches the
outer gradient, so ``B^T`` becomes accurate in the direction SHINE uses::

    u = -B sigma / (sigma^T B^T w),   v = B^T w - sigma
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from convexrecon.errors import InputError
from convexrecon.fixedpoint._common import _Run, check_common
from convexrecon.fixedpoint.stats import FixedPointStats

__all__ = ["broyden", "BroydenInverse"]


@dataclass
class BroydenInverse:
    """``B = -I + U V^T`` per sample, on the flat real view of the iterates.

    ``U, V`` are ``(n, m, d)``: ``n`` samples, ``m`` memory slots (unused slots are
    zero), ``d`` real numbers per sample (a complex sample counts real and imaginary
    parts). ``shape`` and ``dtype`` are those of the solver's ``z``.
    """

    U: torch.Tensor
    V: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        self._check()
        if tuple(x.shape) != tuple(self.shape):
            raise InputError(f"x: expected shape {tuple(self.shape)}, got {tuple(x.shape)}")
        x = x.to(self.dtype)
        if x.is_complex():
            x = torch.view_as_real(x.resolve_conj())
        return x.reshape(self.U.shape[0], -1)

    def _unflat(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype.is_complex:
            return torch.view_as_complex(x.reshape(*self.shape, 2).contiguous())
        return x.reshape(self.shape)

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``B x`` (``x`` shaped like ``z``)."""
        v = self._flat(x)
        return self._unflat(-v + torch.einsum("nmd,nm->nd", self.U, torch.einsum("nmd,nd->nm", self.V, v)))

    def rmatvec(self, x: torch.Tensor) -> torch.Tensor:
        """``B^T x`` (``x`` shaped like ``z``): SHINE's ``-B^T g``."""
        v = self._flat(x)
        return self._unflat(-v + torch.einsum("nmd,nm->nd", self.V, torch.einsum("nmd,nd->nm", self.U, v)))

    def to_dense(self) -> torch.Tensor:
        """``(n, d, d)`` dense ``B`` (tiny problems and tests only)."""
        self._check()
        n, _, d = self.U.shape
        eye = torch.eye(d, dtype=self.U.dtype, device=self.U.device).expand(n, d, d)
        return -eye + torch.einsum("nmd,nme->nde", self.U, self.V)

    @property
    def nbytes(self) -> int:
        return 0 if self.released else self.U.numel() * self.U.element_size() * 2

    @property
    def released(self) -> bool:
        """Whether :meth:`release` has dropped ``U, V``."""
        return self.U is None

    def release(self) -> None:
        """Drop ``U, V`` (their memory is freed once nothing else holds them); the
        estimate cannot be applied afterwards."""
        self.U = self.V = None  # type: ignore[assignment]

    def _check(self) -> None:
        if self.released:
            raise InputError("BroydenInverse: U, V were released (a SHINE backward frees them after "
                             "its one use)")


class _Pairs:
    """The ``(u, v)`` pairs of ``B = -I + sum_k u_k v_k^T``, one ``(n, d)`` pair per
    iteration (zero rows where a sample's update was skipped), so a sample's ``B``
    depends on its own updates only. The last ``memory`` pairs are active; older ones
    are kept only while some sample's best ``B`` still uses them."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.next_id = 0

    @property
    def active_lo(self) -> int:
        return max(0, self.next_id - self.memory)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``B x`` on flat ``(n, d)``."""
        out = -x
        for k in range(self.active_lo, self.next_id):
            u, v = self.store[k]
            out = out + u * (v * x).sum(dim=1, keepdim=True)
        return out

    def apply_t(self, x: torch.Tensor) -> torch.Tensor:
        """``B^T x`` on flat ``(n, d)``."""
        out = -x
        for k in range(self.active_lo, self.next_id):
            u, v = self.store[k]
            out = out + v * (u * x).sum(dim=1, keepdim=True)
        return out

    def append(self, u: torch.Tensor, v: torch.Tensor, keep_from: int) -> None:
        self.store[self.next_id] = (u, v)
        self.next_id += 1
        for k in [k for k in self.store if k < min(self.active_lo, keep_from)]:
            del self.store[k]

    def gather(self, lo: torch.Tensor, hi: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, m, d)`` ``U, V`` of each sample's pairs ``[lo_i, hi_i)`` (zero-padded)."""
        n, d = like.shape
        lo_l, hi_l = lo.tolist(), hi.tolist()
        m = max([1] + [h - l for l, h in zip(lo_l, hi_l)])
        U = like.new_zeros(n, m, d)
        V = like.new_zeros(n, m, d)
        for i, (l, h) in enumerate(zip(lo_l, hi_l)):
            for j, k in enumerate(range(l, h)):
                U[i, j] = self.store[k][0][i]
                V[i, j] = self.store[k][1][i]
        return U, V


def broyden(f: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor, *, max_iter: int = 50,
            tol: float = 1e-4, stop: str = "rel", memory: int = 30, batch_dims: int = 1,
            divergence: float = 1e4,
            opa: Callable[[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]],
                          tuple[torch.Tensor, torch.Tensor]] | None = None,
            opa_every: int = 1) -> tuple[torch.Tensor, FixedPointStats]:
    """Solve ``z = f(z)`` by Broyden's method, per sample.

    Args:
        f, z0, max_iter, tol, stop, batch_dims, divergence: as
            :func:`~convexrecon.fixedpoint.picard.picard`.
        memory: the number of ``(u, v)`` pairs in effect (the oldest drops out).
        opa: outer-problem-aware updates: ``opa(z, bt) -> (sigma, w)`` at the current
            iterate ``z``, given ``bt(x) = B^T x`` (both shaped like ``z``); ``w`` must
            be ``J_g(z)^T sigma = J_f(z)^T sigma - sigma``. None: plain Broyden.
        opa_every: call ``opa`` after every ``opa_every``-th iteration.

    Returns:
        ``(z, stats)``: the lowest-residual iterate of every sample, and stats whose
        ``inverse_jacobian`` is the :class:`BroydenInverse` at that iterate.
        Runs without the tape.
    """
    check_common(f, z0, max_iter=max_iter, tol=tol, stop=stop, batch_dims=batch_dims,
                 divergence=divergence)
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
        raise InputError(f"memory: expected an integer >= 1, got {memory!r}")
    if opa is not None and not callable(opa):
        raise InputError(f"opa: expected a callable (z, bt) -> (sigma, w) or None, got {type(opa).__name__}")
    if isinstance(opa_every, bool) or not isinstance(opa_every, int) or opa_every < 1:
        raise InputError(f"opa_every: expected an integer >= 1, got {opa_every!r}")
    run = _Run("broyden", f, z0, tol=tol, stop=stop, batch_dims=batch_dims, divergence=divergence)
    with torch.no_grad():
        x = run.flat(z0).clone()
        n, d = x.shape
        pairs = _Pairs(memory)
        best_lo = torch.zeros(n, dtype=torch.long)
        best_hi = torch.zeros(n, dtype=torch.long)
        fx, g = run.evaluate(x)
        run.record(x, fx, g, 0)
        eps = torch.finfo(x.dtype).eps
        for k in range(max_iter):
            live = run.live
            if not bool(live.any()):
                break
            dx = -pairs.apply(g)
            xnorm = torch.linalg.vector_norm(x, dim=1)
            tiny = live & (torch.linalg.vector_norm(dx, dim=1) <= 10 * eps * torch.clamp(xnorm, min=1.0))
            run.stagnate(tiny)
            live = run.live
            dx = torch.where(live[:, None], dx, torch.zeros_like(dx))
            x_new = x + dx
            run.advance(live)
            fx, g_new = run.evaluate(x_new)
            dg = g_new - g
            bdg = pairs.apply(dg)
            denom = (dx * bdg).sum(dim=1)
            scale = torch.linalg.vector_norm(dx, dim=1) * torch.linalg.vector_norm(bdg, dim=1)
            ok = live & torch.isfinite(denom) & (denom.abs() > 1e-12 * scale) & (scale > 0) \
                & torch.isfinite(g_new).all(dim=1)
            safe = torch.where(ok, denom, torch.ones_like(denom))
            okc = ok[:, None]
            u = torch.where(okc, (dx - bdg) / safe[:, None], torch.zeros_like(dx))
            v = torch.where(okc, pairs.apply_t(dx), torch.zeros_like(dx))
            pairs.append(u, v, keep_from=int(best_lo.min()))
            x = torch.where(live[:, None], x_new, x)
            g = torch.where(live[:, None], g_new, g)
            run.record(x, fx, g, k + 1)
            if opa is not None and (k + 1) % opa_every == 0:
                _opa_update(opa, run, pairs, x, live, keep_from=int(best_lo.min()))
            imp = run.improved.cpu()
            best_lo = torch.where(imp, torch.full_like(best_lo, pairs.active_lo), best_lo)
            best_hi = torch.where(imp, torch.full_like(best_hi, pairs.next_id), best_hi)
        U, V = pairs.gather(best_lo, best_hi, x)
    z, stats = run.result()
    stats.inverse_jacobian = BroydenInverse(U, V, z.shape, z.dtype)
    return z, stats


def _opa_update(opa: Callable, run: _Run, pairs: _Pairs, x: torch.Tensor, live: torch.Tensor, *,
                keep_from: int) -> None:
    """One outer-problem-aware (adjoint-Broyden) pair: afterwards ``B^T w = sigma``."""
    sigma, w = opa(run.unflat(x), lambda v: run.unflat(pairs.apply_t(run.flat(v))))
    sigma, w = run.flat(sigma), run.flat(w)
    bw = pairs.apply_t(w)
    bs = pairs.apply(sigma)
    denom = (sigma * bw).sum(dim=1)
    scale = torch.linalg.vector_norm(sigma, dim=1) * torch.linalg.vector_norm(bw, dim=1)
    ok = live & torch.isfinite(denom) & (denom.abs() > 1e-12 * scale) & (scale > 0) \
        & torch.isfinite(bs).all(dim=1) & torch.isfinite(bw).all(dim=1)
    safe = torch.where(ok, denom, torch.ones_like(denom))
    okc = ok[:, None]
    u = torch.where(okc, -bs / safe[:, None], torch.zeros_like(bs))
    v = torch.where(okc, bw - sigma, torch.zeros_like(bw))
    pairs.append(u, v, keep_from=keep_from)
