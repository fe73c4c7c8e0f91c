"""convexrecon: convex-first MR image reconstruction.

Layers, one direction of dependency::

    operators -> programs -> solvers -> models / trainers -> cli, problems
"""

from convexrecon.errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
