"""Full-batch splits for the layer-wise trainer and its baselines, from
:mod:`convexrecon.data` (bundled MNI slabs, out-of-distribution sets, fastMRI folders).

A convex step sees its whole training split at once, so a split is materialised as
one :class:`~convexrecon.nets.layerwise.ReconData` (k-space, the batch's encoding
operator, targets). ``n`` slices are taken evenly spread over the split (all when
``n`` is None); ``epochs > 1`` stacks that many augmented draws (fresh masks, noise,
phases, flips and crops) of the training split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from convexrecon.errors import InputError
from convexrecon.nets.layerwise import ReconData

__all__ = ["DataSpec", "load_split", "MASK_KINDS"]

MASK_KINDS = {"poisson": "poisson", "cartesian-1d": "random_1d"}


@dataclass(frozen=True)
class DataSpec:
    """Where the slices come from and how k-space is simulated.

    ``problem`` names a registered problem (its coils and sampling; MNI slabs), else
    the options below apply; ``data_dir`` is a folder of fastMRI ``.h5`` files (its
    slices are split 80 / 10 / 10 in file order).
    """

    problem: str | None = None
    data_dir: str | None = None
    size: int = 64
    coils: int = 8
    mask: str = "poisson"
    accel: float = 4.0
    center_fraction: float = 0.08
    noise: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.problem is not None and self.data_dir is not None:
            raise InputError("problem/data: expected at most one of --problem and --data, got both")
        if self.mask not in MASK_KINDS:
            raise InputError(f"mask: expected one of {', '.join(MASK_KINDS)}, got {self.mask!r}")
        if self.problem is not None:
            from convexrecon.data import PROBLEM_SPECS
            if self.problem not in PROBLEM_SPECS or self.problem.startswith("radial"):
                names = [p for p in PROBLEM_SPECS if not p.startswith("radial")]
                raise InputError(f"problem: expected one of {', '.join(names)} (Cartesian "
                                 f"simulations), got {self.problem!r}")


def _dataset(spec: DataSpec, split: str):
    from convexrecon.data import MaskSpec, SliceDataset, from_problem
    from convexrecon.data.sources import FastMRIFolder

    if spec.problem is not None:
        return from_problem(spec.problem, split=split if split in ("train", "val", "test") else "test",
                            size=spec.size, noise_rel=spec.noise, seed=spec.seed)
    mask = MaskSpec(MASK_KINDS[spec.mask], float(spec.accel), center_fraction=spec.center_fraction)
    if spec.data_dir is not None:
        if not Path(spec.data_dir).is_dir():
            raise InputError(f"data: expected a folder of fastMRI .h5 files, got {spec.data_dir!r}")
        src = FastMRIFolder(spec.data_dir)
        return SliceDataset(split=None, source=src, size=spec.size, coils=spec.coils, mask=mask,
                            noise_rel=spec.noise, seed=spec.seed, augment=split == "train",
                            vary_per_epoch=split == "train")
    return SliceDataset(split=split, size=spec.size, coils=spec.coils, mask=mask,
                        noise_rel=spec.noise, seed=spec.seed)


def _indices(total: int, n: int | None, split: str, folder: bool) -> list[int]:
    idx = list(range(total))
    if folder:  # one folder: 80 / 10 / 10 in file order
        a, b = int(0.8 * total), int(0.9 * total)
        idx = {"train": idx[:a], "val": idx[a:b], "test": idx[b:]}.get(split, idx)
        if not idx:
            raise InputError(f"data: expected enough slices for a {split!r} split, got {total}")
    if n is None or n >= len(idx):
        return idx
    step = len(idx) / n
    return [idx[int(step * k + step / 2)] for k in range(n)]


def load_split(spec: DataSpec, split: str, *, n: int | None = None, epochs: int = 1,
               device: torch.device | str | None = None) -> ReconData:
    """One split as a :class:`ReconData` (see the module docstring).

    Args:
        spec: the data source and simulation.
        split: ``"train"``, ``"val"``, ``"test"`` or an out-of-distribution set
            (``"dipy-t1-coronal"``, ``"dipy-b0"``; not with ``--data``).
        n: slices per draw (evenly spread; None: all).
        epochs: augmented draws of the training split (1 otherwise).
        device: where the tensors go.
    """
    from convexrecon.data import collate

    ds = _dataset(spec, split)
    idx = _indices(len(ds), n, split, spec.data_dir is not None)
    samples = []
    for e in range(max(1, int(epochs)) if split == "train" else 1):
        ds.set_epoch(e)
        samples.extend(ds[i] for i in idx)
    batch = collate(samples)
    if device is not None:
        batch = batch.to(device)
    if batch.target is None:
        raise InputError(f"{split}: expected reference images for training/evaluation, got none")
    return ReconData.from_batch(batch)
