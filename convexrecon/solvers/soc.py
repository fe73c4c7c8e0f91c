"""Second-order-cone algebra for interior-point methods, on batches of cones.

A batch of ``N`` second-order (Lorentz) cones of dimension ``m`` is stored as a
tensor ``(N, m)``; component ``0`` of each row is the scalar part ``v0`` and the
rest the vector part ``v1``:

    Q = {(v0, v1) : v0 >= ||v1||}.

With the Jordan product ``a o b = (a^T b, a0 b1 + b0 a1)`` the identity is
``e = (1, 0)`` and ``det(v) = v0^2 - ||v1||^2`` (``> 0`` in the interior).

Nesterov-Todd scaling: for interior ``s, z`` there is a unique ``W`` (symmetric,
``W Q = Q``) with ``W^-1 s = W z = lambda``; :func:`nt_scaling` returns it as a
scalar ``eta`` and a unit hyperbolic vector ``wbar`` (``det(wbar) = 1``), so that

    W = eta [[w0, w1^T], [w1, I + w1 w1^T / (1 + w0)]],
    W^-1 = eta^-1 [[w0, -w1^T], [-w1, I + w1 w1^T / (1 + w0)]].

Step lengths (:func:`soc_step`, :func:`lin_step`) are the largest ``a >= 0`` with
``v + a dv`` in the cone (respectively the non-negative orthant), minimised over
the batch; ``inf`` when the direction never leaves the cone.
"""

from __future__ import annotations

import math

import torch

__all__ = ["jdet", "identity", "nt_scaling", "w_apply", "jprod", "jsolve",
           "soc_step", "lin_step"]


def jdet(v: torch.Tensor) -> torch.Tensor:
    """``det(v) = v0^2 - ||v1||^2`` of each cone: ``(N, m) -> (N,)``."""
    return v[:, 0] ** 2 - (v[:, 1:] ** 2).sum(1)


def identity(like: torch.Tensor) -> torch.Tensor:
    """The Jordan identity ``e = (1, 0)`` for every cone, shaped like ``like``."""
    e = torch.zeros_like(like)
    e[:, 0] = 1.0
    return e


def nt_scaling(s: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nesterov-Todd scaling of interior pairs ``(s, z)`` (each ``(N, m)``).

    Returns ``(eta, wbar)``: ``eta = (det s / det z)^(1/4)`` ``(N,)`` and the unit
    hyperbolic vector ``wbar = (s/sqrt(det s) + J z/sqrt(det z)) / (2 gamma)``
    ``(N, m)``, ``J = diag(1, -I)``, ``gamma^2 = (1 + <sbar, zbar>) / 2``. Then
    ``w_apply(eta, wbar, z) == w_apply(eta, wbar, s, inverse=True)``.
    """
    sd = torch.sqrt(jdet(s))
    zd = torch.sqrt(jdet(z))
    sb = s / sd[:, None]
    zb = z / zd[:, None]
    gam = torch.sqrt((1 + (sb * zb).sum(1)) / 2)
    Jz = torch.cat([zb[:, :1], -zb[:, 1:]], 1)
    wbar = (sb + Jz) / (2 * gam[:, None])
    return torch.sqrt(sd / zd), wbar


def w_apply(eta: torch.Tensor, wbar: torch.Tensor, v: torch.Tensor, *,
            inverse: bool = False) -> torch.Tensor:
    """``W v`` (or ``W^-1 v``) for every cone, ``W`` as in :func:`nt_scaling`."""
    w0, w1 = wbar[:, 0], wbar[:, 1:]
    v0, v1 = v[:, 0], v[:, 1:]
    sgn = -1.0 if inverse else 1.0
    w1v1 = (w1 * v1).sum(1)
    out0 = w0 * v0 + sgn * w1v1
    out1 = (sgn * v0)[:, None] * w1 + v1 + (w1v1 / (1 + w0))[:, None] * w1
    out = torch.cat([out0[:, None], out1], 1)
    return out / eta[:, None] if inverse else out * eta[:, None]


def jprod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Jordan product ``a o b = (a^T b, a0 b1 + b0 a1)`` of every cone."""
    out0 = (a * b).sum(1)
    out1 = a[:, :1] * b[:, 1:] + b[:, :1] * a[:, 1:]
    return torch.cat([out0[:, None], out1], 1)


def jsolve(lam: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The ``x`` with ``lam o x = r`` (``lam`` interior), for every cone.

    Closed form of the arrow-matrix inverse:
    ``x0 = (l0 r0 - l1^T r1) / det``,
    ``x1 = (-r0 l1 + (det / l0) r1 + (l1^T r1 / l0) l1) / det``.
    """
    l0, l1 = lam[:, 0], lam[:, 1:]
    det = jdet(lam)
    r0, r1 = r[:, 0], r[:, 1:]
    l1r1 = (l1 * r1).sum(1)
    x0 = (l0 * r0 - l1r1) / det
    x1 = (-r0[:, None] * l1 + (det / l0)[:, None] * r1 + (l1r1 / l0)[:, None] * l1) / det[:, None]
    return torch.cat([x0[:, None], x1], 1)


def soc_step(v: torch.Tensor, dv: torch.Tensor) -> float:
    """Largest ``a >= 0`` with ``v + a dv`` in every cone (``v`` interior).

    Solves ``det(v + a dv) = 0`` (a quadratic in ``a``) for its smallest positive
    root, and also bounds ``a`` by the scalar part staying positive (which keeps
    the iterate on the cone's branch, not in ``-Q``). ``inf`` if unbounded.
    Call it on NT-scaled vectors (``v = lambda``) for a well-conditioned test.
    """
    c0 = jdet(v)
    c1 = 2 * (v[:, 0] * dv[:, 0] - (v[:, 1:] * dv[:, 1:]).sum(1))
    c2 = jdet(dv)
    disc = c1 * c1 - 4 * c2 * c0
    sq = torch.sqrt(torch.clamp(disc, min=0))
    inf = torch.full_like(c0, math.inf)
    one = torch.ones_like(c0)
    quad = c2 != 0
    safe2 = torch.where(quad, c2, one)
    lin_root = torch.where(c1 < 0, -c0 / torch.where(c1 != 0, c1, one), inf)
    r1 = torch.where(quad, (-c1 - sq) / (2 * safe2), lin_root)
    r2 = torch.where(quad, (-c1 + sq) / (2 * safe2), inf)
    cand = torch.stack([r1, r2])
    cand = torch.where((cand > 0) & torch.isfinite(cand), cand, torch.full_like(cand, math.inf))
    a = torch.where(disc >= 0, cand.min(0).values, inf)
    a_t = torch.where(dv[:, 0] < 0, -v[:, 0] / torch.where(dv[:, 0] < 0, dv[:, 0], -one), inf)
    return float(torch.minimum(a, a_t).min())


def lin_step(v: torch.Tensor, dv: torch.Tensor) -> float:
    """Largest ``a >= 0`` with ``v + a dv >= 0`` elementwise (``v > 0``); ``inf`` if unbounded."""
    neg = dv < 0
    ratio = torch.where(neg, -v / torch.where(neg, dv, -torch.ones_like(dv)),
                        torch.full_like(v, math.inf))
    return float(ratio.min())
