"""Training and test data: simulated multi-coil slices of the bundled MNI volume
(train / val / test slabs with guard gaps), out-of-distribution sets and fastMRI
folders, with a fresh mask per sample and epoch.

- :class:`SliceDataset`, :class:`Sample`, :func:`from_problem` (datasets.py);
- :func:`collate`, :class:`Batch` (``Batch.operator()``), :class:`PerSample` (batch.py);
- :class:`MaskSpec` (masks.py);
- :func:`mni_volume`, :data:`SPLITS`, :class:`FastMRIFolder`, the OOD sources
  (sources.py); :func:`real_brain_sample` (ood.py);
- :func:`complex_to_channels`, :func:`channels_to_complex` and the image transforms
  (transforms.py).

The names are imported lazily, so that ``convexrecon.data.transforms`` (imported by
:mod:`convexrecon.operators.conv`) pulls in no operator module.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SliceDataset": "datasets", "Sample": "datasets", "from_problem": "datasets",
    "PROBLEM_SPECS": "datasets",
    "Batch": "batch", "collate": "batch", "PerSample": "batch",
    "MaskSpec": "masks", "CARTESIAN_KINDS": "masks", "RADIAL_KINDS": "masks",
    "mni_volume": "sources", "mni_slice": "sources", "SPLITS": "sources", "BRAIN_Z": "sources",
    "GUARD": "sources", "PROBLEM_TEST_Z": "sources", "OOD_SPLITS": "sources",
    "MNISlices": "sources", "DipyT1Coronal": "sources", "DipyB0": "sources",
    "FastMRIFolder": "sources",
    "real_brain_sample": "ood",
    "complex_to_channels": "transforms", "channels_to_complex": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'convexrecon.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"convexrecon.data.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
