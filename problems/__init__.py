"""Named, seeded, ready-made reconstruction problems (installed as
``convexrecon.problems``): real data shipped in ``data/`` (see ``data/README.md``),
an operator, k-space and, where one exists, a ground truth, all scaled alike.

>>> from convexrecon.problems import load, names
>>> p = load("brain-sim-poisson-4x", split="test", n_slices=1, seed=0)
"""

from convexrecon.problems.registry import Problem, describe, load, names

__all__ = ["Problem", "load", "names", "describe"]
