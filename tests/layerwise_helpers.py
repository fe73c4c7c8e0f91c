"""Tiny data for the layer-wise tests: the ``tiny-cartesian`` simulation (3 coils,
16x16, random 1-D 2x) of MNI slices through :mod:`convexrecon.nets.layerwise_data`."""

from __future__ import annotations

from convexrecon.nets.layerwise import ReconData
from convexrecon.nets.layerwise_data import DataSpec, load_split

TINY = DataSpec(problem="tiny-cartesian", size=16)


def tiny_split(split: str, n: int) -> ReconData:
    return load_split(TINY, split, n=n)
