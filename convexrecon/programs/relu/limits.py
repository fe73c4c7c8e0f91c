"""Size limits of the cvxpy exports of the convex two-layer programs (one place).

cvxpy builds dense expressions; beyond these sizes an export would take minutes and
gigabytes, so ``to_cvxpy`` raises an InputError naming the limit instead.
"""

from __future__ import annotations

__all__ = ["CVXPY_SIZE_LIMIT", "CVXPY_MAX_ROWS", "CVXPY_MAX_UNKNOWNS"]

CVXPY_SIZE_LIMIT = 400_000
"""Data-matrix programs: scalar variables plus constraint rows."""
CVXPY_MAX_ROWS = 512
"""Convolutional programs: ``N * H * W`` (patch rows)."""
CVXPY_MAX_UNKNOWNS = 4096
"""Convolutional programs: scalar unknowns (``P * C_out * C * k * k``, twice that
for the cone form)."""
