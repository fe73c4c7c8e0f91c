"""Functional, batched fixed-point solvers for ``z = f(z)``.

``picard``, ``anderson`` and ``broyden`` share one signature,
``solver(f, z0, *, max_iter, tol, stop, batch_dims, divergence, ...) -> (z, stats)``:
``z0`` carries ``batch_dims`` leading batch axes, every sample has its own residual
and stopping (a batched run equals one-by-one runs within rounding), and ``z`` is
every sample's lowest-residual iterate. ``stats`` is a
:class:`~convexrecon.fixedpoint.stats.FixedPointStats`. The solvers hold no state and
run without the tape; :mod:`convexrecon.implicit` supplies the gradients.
"""

from convexrecon.fixedpoint.anderson import AndersonMemory, anderson, anderson_coefficients
from convexrecon.fixedpoint.broyden import BroydenInverse, broyden
from convexrecon.fixedpoint.picard import picard
from convexrecon.fixedpoint.stats import REASONS, FixedPointStats

SOLVERS = {"picard": picard, "anderson": anderson, "broyden": broyden}

__all__ = ["picard", "anderson", "anderson_coefficients", "AndersonMemory", "broyden", "BroydenInverse",
           "FixedPointStats", "REASONS", "SOLVERS"]
