"""The best-scaled dual point, shared by every duality-gap certificate.

Norm-regularised least squares ``min 1/2 ||A x - y||^2 + beta R(x)`` has the dual
``max <lam, y> - 1/2 ||lam||^2`` over ``R*(A^T lam) <= beta``. A candidate
direction ``w`` (usually the residual ``y - A x``) is turned into a feasible dual
point ``t w`` by the best scale ``t``: the dual value ``t a - t^2 b / 2`` with
``a = <w, y>``, ``b = ||w||^2`` is a concave quadratic in ``t``, maximised in
closed form over the feasible interval ``[0, t_max]`` (or ``[-t_max, t_max]``),
``t_max = beta / R*(A^T w)``.
"""

from __future__ import annotations

import math

__all__ = ["best_scale", "scale_limit"]


def scale_limit(dual_norm: float, radius: float = 1.0) -> float:
    """``radius / dual_norm``: the largest feasible scale (``inf`` for a zero norm)."""
    return radius / dual_norm if dual_norm > 0 else math.inf


def best_scale(a: float, b: float, t_max: float, *,
               symmetric: bool = False) -> tuple[float, float]:
    """``(t, t a - t^2 b / 2)`` at the best ``t`` in ``[0, t_max]`` (``symmetric``:
    ``[-t_max, t_max]``); ``(0, 0)`` when ``b <= 0`` (a zero direction)."""
    if not b > 0:
        return 0.0, 0.0
    lo = -t_max if symmetric else 0.0
    t = min(max(a / b, lo), t_max)
    return t, t * a - 0.5 * t * t * b
