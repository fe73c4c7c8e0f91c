"""Batches of samples: :func:`collate` and :class:`Batch` with its encoding operator.

``Batch.operator()`` is the scaled encoding operator of the whole batch, with the
per-sample maps, masks and operator scales as leading batch dimensions:

- Cartesian: one :class:`~convexrecon.operators.Sense` with maps ``(B, C, H, W)``
  (divided by each sample's ``op_scale``) and masks ``(B, H, W)``;
- radial with one shared trajectory: one
  :class:`~convexrecon.operators.NonCartesianSense` with batched maps;
- radial with several trajectories: :class:`PerSample`, one such
  ``NonCartesianSense`` per distinct trajectory, each applied to its samples.

In every case ``op.forward(batch.target) ~ batch.kspace`` with shapes
``(B, H, W) -> (B, *op.oshape)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch

from convexrecon.data._cache import noncartesian, with_maps
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.operators.sense import Sense

__all__ = ["Batch", "collate", "PerSample"]


@dataclass
class Batch:
    """Samples stacked along a leading batch dimension ``B`` (fields as
    :class:`~convexrecon.data.Sample`; ``op_scale``, ``data_scale``, ``noise_std``
    are float64 ``(B,)`` tensors, ``index`` int64 ``(B,)``, ``label`` a list,
    ``dcf`` ``(B, K)`` or None)."""

    target: torch.Tensor | None
    kspace: torch.Tensor
    maps: torch.Tensor
    mask: torch.Tensor | None
    traj: torch.Tensor | None
    index: torch.Tensor
    op_scale: torch.Tensor
    data_scale: torch.Tensor
    noise_std: torch.Tensor
    label: list[str]
    dcf: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.kspace.shape[0])

    def to(self, device: torch.device | str | None) -> "Batch":
        """A copy with every tensor on ``device``."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to(device) if isinstance(v, torch.Tensor) else v
        return Batch(**out)

    def scaled_maps(self) -> torch.Tensor:
        """The maps divided by each sample's operator scale, ``(B, C, H, W)``."""
        s = (1.0 / self.op_scale).to(device=self.maps.device, dtype=self.maps.real.dtype)
        return self.maps * s.reshape(-1, 1, 1, 1)

    def operator(self) -> Operator:
        """The scaled encoding operator of the batch (see the module docstring)."""
        maps = self.scaled_maps()
        if self.traj is None:
            return Sense(maps, self.mask)
        groups = _group_by_trajectory(self.traj)
        ops = [with_maps(noncartesian(self.maps[g[0]], self.traj[g[0]]), maps[g]) for g in groups]
        return ops[0] if len(groups) == 1 else PerSample(ops, groups)


class PerSample(Operator):
    """Operators of one shape applied to groups of samples: input
    ``(*lead, B, *ishape)``, output ``(*lead, B, *oshape)``; ``ops[g]`` maps the
    samples at batch positions ``groups[g]`` (taken as its own batch axis of
    ``len(groups[g])``). The groups partition ``range(B)``; default one sample each.
    """

    def __init__(self, ops: Sequence[Operator], groups: Sequence[Sequence[int]] | None = None) -> None:
        ops = list(ops)
        if not ops:
            raise InputError("ops: expected at least one operator, got none")
        for op in ops[1:]:
            if (op.ishape, op.oshape) != (ops[0].ishape, ops[0].oshape):
                raise InputError(f"ops: expected one ishape/oshape, got {op.ishape}/{op.oshape} "
                                 f"and {ops[0].ishape}/{ops[0].oshape}")
        groups = [[b] for b in range(len(ops))] if groups is None else [list(g) for g in groups]
        flat = sorted(b for g in groups for b in g)
        if len(groups) != len(ops) or flat != list(range(len(flat))) or any(not g for g in groups):
            raise InputError(f"groups: expected one non-empty group per operator partitioning "
                             f"range(B), got {groups!r} for {len(ops)} operators")
        super().__init__(ops[0].ishape, ops[0].oshape, dtype=ops[0].dtype)
        self.ops = ops
        self.groups = groups
        self.batch = len(flat)
        self._index = [torch.tensor(g, dtype=torch.int64) for g in groups]

    def _apply(self, t: torch.Tensor, tail_in: int, fn: str) -> torch.Tensor:
        axis = t.ndim - tail_in - 1
        if axis < 0 or t.shape[axis] != self.batch:
            raise InputError(f"PerSample: expected a batch axis of {self.batch} before the "
                             f"last {tail_in} axes, got shape {tuple(t.shape)}")
        out = None
        for op, idx in zip(self.ops, self._index):
            idx = idx.to(t.device)
            part = getattr(op, fn)(t.index_select(axis, idx))
            if out is None:
                shape = list(part.shape)
                shape[axis] = self.batch
                out = part.new_zeros(shape)
            out = out.index_copy(axis, idx, part)
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, len(self.ishape), "_forward")

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._apply(y, len(self.oshape), "_adjoint")

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, len(self.ishape), "_normal")


def _group_by_trajectory(traj: torch.Tensor) -> list[list[int]]:
    groups: list[list[int]] = []
    for b in range(traj.shape[0]):
        for g in groups:
            if torch.equal(traj[g[0]], traj[b]):
                g.append(b)
                break
        else:
            groups.append([b])
    return groups


def _stack_opt(values: list, name: str):
    kinds = {v is None for v in values}
    if len(kinds) > 1:
        raise InputError(f"samples: expected {name} on all samples or on none")
    return None if values[0] is None else torch.stack(values)


def collate(samples: Sequence) -> Batch:
    """Stack :class:`~convexrecon.data.Sample` objects into a :class:`Batch` (use as a
    DataLoader's ``collate_fn``).

    Raises:
        InputError: no samples, or samples of different shapes or kinds.
    """
    samples = list(samples)
    if not samples:
        raise InputError("samples: expected at least one sample, got none")
    try:
        return Batch(
            target=_stack_opt([s.target for s in samples], "target"),
            kspace=torch.stack([s.kspace for s in samples]),
            maps=torch.stack([s.maps for s in samples]),
            mask=_stack_opt([s.mask for s in samples], "mask"),
            traj=_stack_opt([s.traj for s in samples], "traj"),
            index=torch.tensor([s.index for s in samples], dtype=torch.int64),
            op_scale=torch.tensor([s.op_scale for s in samples], dtype=torch.float64),
            data_scale=torch.tensor([s.data_scale for s in samples], dtype=torch.float64),
            noise_std=torch.tensor([s.noise_std for s in samples], dtype=torch.float64),
            label=[s.label for s in samples],
            dcf=_stack_opt([getattr(s, "dcf", None) for s in samples], "dcf"),
        )
    except RuntimeError as exc:  # torch.stack on different shapes
        raise InputError(f"samples: expected equal shapes in a batch ({exc})") from exc
