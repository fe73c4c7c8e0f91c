"""A small in-process cache of non-Cartesian SENSE operators and their scales.

Building a :class:`~convexrecon.operators.NonCartesianSense` computes NUFFT tables and
a Toeplitz kernel (a tenth of a second at 64 x 64 on one CPU core), and its largest
eigenvalue takes tens of products more. The radial samples of a dataset draw their
trajectories from a finite set (:mod:`convexrecon.data.masks`) and share their coil
maps, so both are cached here, keyed by the content of the maps and the trajectory.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections import OrderedDict

import torch

from convexrecon.errors import InputError
from convexrecon.operators.noncartesian import NonCartesianSense

__all__ = ["noncartesian", "noncartesian_scale", "with_maps"]

_MAX = 64
_OPS: OrderedDict = OrderedDict()
_SCALES: OrderedDict = OrderedDict()


def _digest(t: torch.Tensor) -> str:
    a = t.detach().to("cpu").contiguous()
    if a.is_complex():
        a = torch.view_as_real(a)
    return hashlib.sha1(a.numpy().tobytes()).hexdigest() + str(tuple(t.shape)) + str(t.dtype)


def _key(maps: torch.Tensor, traj: torch.Tensor) -> tuple:
    return (str(maps.device), _digest(maps), _digest(traj))


def _put(cache: OrderedDict, key, value) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _MAX:
        cache.popitem(last=False)


def noncartesian(maps: torch.Tensor, traj: torch.Tensor) -> NonCartesianSense:
    """``NonCartesianSense(maps, traj)``, built once per distinct (maps, traj)."""
    key = _key(maps, traj)
    op = _OPS.get(key)
    if op is None:
        op = NonCartesianSense(maps, traj)
    _put(_OPS, key, op)
    return op


def noncartesian_scale(maps: torch.Tensor, traj: torch.Tensor) -> float:
    """``sqrt(lambda_max(A^H A))`` of ``NonCartesianSense(maps, traj)`` (Lanczos from a
    fixed start), computed once per distinct (maps, traj)."""
    from convexrecon.problems.registry import lambda_max

    key = _key(maps, traj)
    s = _SCALES.get(key)
    if s is None:
        op = noncartesian(maps, traj)
        g = torch.Generator().manual_seed(0)
        x0 = torch.randn(op.ishape, dtype=op.dtype, generator=g).to(maps.device)
        s = math.sqrt(lambda_max(op.N, x0))
    _put(_SCALES, key, s)
    return s


def with_maps(op: NonCartesianSense, maps: torch.Tensor) -> NonCartesianSense:
    """A copy of ``op`` with other coil maps ``(*batch, C, *im)`` of the same coil
    count and image size, sharing ``op``'s NUFFT (tables and Toeplitz kernel, which
    do not depend on the maps)."""
    tail = tuple(op.maps.shape[-len(op.ishape) - 1:])
    if maps.ndim < len(tail) or tuple(maps.shape[-len(tail):]) != tail:
        raise InputError(f"maps: expected (*batch, {', '.join(map(str, tail))}), "
                         f"got {tuple(maps.shape)}")
    new = copy.copy(op)
    new.maps = maps.to(device=op.maps.device, dtype=op.dtype)
    return new
