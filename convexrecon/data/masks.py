"""Sampling specifications of a dataset: a fresh Cartesian mask or radial trajectory
per sample, drawn from a given generator.

Cartesian kinds (a bool ``(H, W)`` mask, :mod:`convexrecon.sampling`):

- ``"poisson"``: variable-density Poisson disc with a ``calib x calib`` centre;
- ``"random_1d"``: random phase-encode columns with ``center_fraction`` of the centre;
- ``"equispaced"``: equispaced columns with a random offset, plus the centre.

Radial kinds (a trajectory ``(2, n_spokes * n_readout)`` in radians):

- ``"every_nth"``: every ``every``-th spoke of a golden-angle series, starting at a
  random offset in ``[0, every)`` (one of the ``every`` interleaves);
- ``"golden"``: ``n_spokes`` consecutive golden-angle spokes starting at a random
  spoke in ``[0, n_rotations)`` of the series;
- ``"equiangular"``: ``n_spokes`` spokes ``180 / n_spokes`` degrees apart, rotated by
  ``k / n_rotations`` of that spacing, ``k`` random in ``[0, n_rotations)``.

The radial draws come from a finite set, so that the operators (NUFFT tables,
Toeplitz kernels, scales) of a dataset can be cached. With ``rotate=False`` the
trajectory is the same for every sample (one shared operator per batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from convexrecon.errors import InputError
from convexrecon.sampling import GOLDEN_ANGLE_DEG, equispaced_1d, poisson_disc, radial, random_1d

__all__ = ["MaskSpec", "CARTESIAN_KINDS", "RADIAL_KINDS", "draw_sampling"]

CARTESIAN_KINDS = ("poisson", "random_1d", "equispaced")
RADIAL_KINDS = ("every_nth", "golden", "equiangular")


@dataclass(frozen=True)
class MaskSpec:
    """How to sample k-space (see the module docstring).

    Attributes:
        kind: one of :data:`CARTESIAN_KINDS` or :data:`RADIAL_KINDS`.
        accel: acceleration of a Cartesian mask (``total / sampled``).
        center_fraction: fully sampled centre columns of the 1-D masks.
        calib: side of the fully sampled centre square of a Poisson-disc mask, in
            pixels at 256 x 256; scaled with the image size (at least 2).
        n_spokes: radial spokes.
        every: the spoke stride of ``"every_nth"``.
        n_readout: samples per spoke; None: twice the image size (2x oversampling).
        rotate: draw a fresh radial rotation per sample (Cartesian masks are always
            drawn per sample).
        n_rotations: number of distinct rotations of ``"golden"`` and ``"equiangular"``.
    """

    kind: str = "poisson"
    accel: float = 4.0
    center_fraction: float = 0.08
    calib: int = 24
    n_spokes: int = 32
    every: int = 4
    n_readout: int | None = None
    rotate: bool = True
    n_rotations: int = 8

    def __post_init__(self) -> None:
        if self.kind not in CARTESIAN_KINDS + RADIAL_KINDS:
            raise InputError(f"kind: expected one of {', '.join(CARTESIAN_KINDS + RADIAL_KINDS)}, "
                             f"got {self.kind!r}")
        if not (isinstance(self.accel, (int, float)) and self.accel >= 1):
            raise InputError(f"accel: expected a number >= 1, got {self.accel!r}")
        if not 0 <= self.center_fraction <= 1:
            raise InputError(f"center_fraction: expected a number in [0, 1], got {self.center_fraction!r}")
        for name in ("calib", "n_spokes", "every", "n_rotations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "calib" else 1):
                raise InputError(f"{name}: expected a positive int, got {v!r}")
        if self.n_readout is not None and (isinstance(self.n_readout, bool)
                                           or not isinstance(self.n_readout, int)
                                           or self.n_readout < 2):
            raise InputError(f"n_readout: expected None or an int >= 2, got {self.n_readout!r}")

    @property
    def radial(self) -> bool:
        """Whether this spec gives a radial trajectory (else a Cartesian mask)."""
        return self.kind in RADIAL_KINDS


def _rotate(traj: torch.Tensor, theta: float) -> torch.Tensor:
    t = traj.to(torch.float64)
    c, s = math.cos(theta), math.sin(theta)
    out = torch.stack([c * t[0] - s * t[1], s * t[0] + c * t[1]])
    out = torch.remainder(out + math.pi, 2 * math.pi) - math.pi  # [-pi, pi)
    out32 = out.to(torch.float32)
    pi32 = torch.tensor(math.pi, dtype=torch.float32)
    return torch.where(out32 >= pi32, out32 - 2 * pi32, out32)


def _equispaced(size: int, spec: MaskSpec, rng: np.random.Generator) -> torch.Tensor:
    m = equispaced_1d((size, size), spec.accel, center_fraction=spec.center_fraction)
    n_low = int(round(size * spec.center_fraction))
    start = (size - n_low + 1) // 2
    centre = torch.zeros(size, dtype=torch.bool)
    centre[start:start + n_low] = True
    cols = m[0] & ~centre
    cols = torch.roll(cols, int(rng.integers(0, max(1, int(round(spec.accel))))))
    return (cols | centre).expand(size, size).clone()


def draw_sampling(spec: MaskSpec, size: int,
                  rng: np.random.Generator) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One draw of ``spec`` for a ``size x size`` image: ``(mask, None)`` for a
    Cartesian kind, ``(None, traj)`` for a radial kind."""
    if spec.kind == "poisson":
        c = max(2, int(round(spec.calib * size / 256)))
        return poisson_disc((size, size), spec.accel, calib=(c, c), seed=rng), None
    if spec.kind == "random_1d":
        return random_1d((size, size), spec.accel, center_fraction=spec.center_fraction,
                         seed=rng), None
    if spec.kind == "equispaced":
        return _equispaced(size, spec, rng), None
    n_readout = spec.n_readout or 2 * size
    if spec.kind == "equiangular":
        traj = radial(spec.n_spokes, n_readout, mode="equiangular")
        k = int(rng.integers(0, spec.n_rotations)) if spec.rotate else 0
        theta = k * math.pi / (spec.n_spokes * spec.n_rotations)
    else:
        every = spec.every if spec.kind == "every_nth" else 1
        traj = radial(spec.n_spokes, n_readout, mode="every_nth", every=every)
        n = every if spec.kind == "every_nth" else spec.n_rotations
        start = int(rng.integers(0, n)) if spec.rotate else 0
        theta = math.radians((start * GOLDEN_ANGLE_DEG) % 180.0)
    return None, (traj if theta == 0.0 else _rotate(traj, theta))
