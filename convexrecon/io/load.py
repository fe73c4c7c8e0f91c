"""One entry point for k-space files: :func:`load_kspace` dispatches on the suffix
(and, for HDF5, on the content: fastMRI or ISMRMRD)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from convexrecon.errors import InputError
from convexrecon.io._common import atomic_path, check_array_finite, existing_file, to_numpy
from convexrecon.io.cfl import BartLayoutWarning, bart_layout, bart_to_package, cfl_paths, read_cfl
from convexrecon.io.fastmri import _indices, read_fastmri
from convexrecon.io.ismrmrd import is_ismrmrd, read_ismrmrd

__all__ = ["KspaceData", "load_kspace", "read_npy", "write_npy"]

SUFFIXES = (".h5", ".hdf5", ".cfl", ".hdr", ".npy")


@dataclass
class KspaceData:
    """What :func:`load_kspace` returns.

    Attributes:
        kspace: complex64, always with a leading slice dimension: ``(S, C, H, W)``
            (Cartesian 2-D), ``(S, C, D, H, W)`` (3-D) or ``(S, C, K)`` (non-Cartesian).
        mask: bool sampling mask broadcastable to ``(S, *spatial)``: the file's own mask
            if it has one, otherwise the samples that are nonzero in any coil; None for
            non-Cartesian data.
        reference: reference images ``(S, h, w)`` (fastMRI files) or None.
        traj: ``(D, K)`` trajectory as stored (non-Cartesian ISMRMRD) or None.
        source: ``"fastmri"``, ``"ismrmrd"``, ``"cfl"`` or ``"npy"``.
        attrs: extra metadata (fastMRI attributes, the ISMRMRD XML header).
    """

    kspace: torch.Tensor
    mask: torch.Tensor | None
    reference: torch.Tensor | None
    traj: torch.Tensor | None
    source: str
    attrs: dict[str, Any] = field(default_factory=dict)


def read_npy(path: str | os.PathLike, *, slices: Any = None) -> torch.Tensor:
    """Read a complex ``.npy`` array (memory-mapped, so a slice selection on the
    first axis reads only those rows). No pickles."""
    p = existing_file(path)
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"path: expected a readable .npy array, got {str(p)!r} "
                         f"(truncated or not .npy: {exc})") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.fields is not None:
        raise InputError(f"path: expected a plain numeric array in {str(p)!r}")
    if slices is not None:
        if arr.ndim < 1:
            raise InputError(f"slices: expected an array with a slice axis, got shape {arr.shape}")
        arr = arr[_indices(slices, arr.shape[0])]
    arr = np.array(arr)
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"path: expected a numeric array, got dtype {arr.dtype}")
    check_array_finite(arr, str(p))
    return torch.from_numpy(arr)


def write_npy(path: str | os.PathLike, array: Any) -> Path:
    """Write ``array`` to ``path`` (``.npy``) atomically."""
    arr = to_numpy(array, "array")
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
    return Path(path)


def _nonzero_mask(ksp: torch.Tensor, n_spatial: int) -> torch.Tensor:
    return (ksp != 0).any(dim=-1 - n_spatial)


def load_kspace(path: str | os.PathLike, *, slices: int | slice | Sequence[int] | None = None
                ) -> KspaceData:
    """Load k-space from ``.h5``/``.hdf5`` (fastMRI or ISMRMRD, told apart by content),
    ``.cfl``/``.hdr`` (BART, any 2-D or 3-D layout; see :func:`convexrecon.io.cfl.bart_layout`:
    the two lowest-numbered non-singleton spatial dimensions are ``H`` and ``W``, COIL
    the coils, SLICE x TIME the slices, the first set of MAPS; ``attrs["bart_layout"]``
    records where each axis came from) or ``.npy`` (already in the package layout
    ``(C, H, W)`` or ``(S, C, H, W)``).

    Args:
        path: the file.
        slices: slices to load (None: all). fastMRI and ``.npy`` files read only those.

    Raises:
        InputError: unknown suffix, missing or malformed file (see the readers).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"path: expected a suffix in {SUFFIXES}, got {str(p)!r}")
    if suffix in (".cfl", ".hdr"):
        raw = read_cfl(p, squeeze_trailing=False)
        layout = bart_layout(raw.shape)
        ksp = bart_to_package(raw, layout)
        notes = []
        if layout.maps > 1:
            notes.append(f"dimension 4 (MAPS) holds {layout.maps} sets of maps; the first is used")
            warnings.warn(f"{p}: {notes[-1]}", BartLayoutWarning, stacklevel=2)
        if slices is not None:
            ksp = ksp[_indices(slices, ksp.shape[0])]
        dims = [int(n) for n in raw.shape]
        while len(dims) > 4 and dims[-1] == 1:
            dims.pop()
        attrs = {"files": [str(q) for q in cfl_paths(p)], "bart_layout": layout,
                 "bart_dims": dims, "notes": notes}
        return KspaceData(ksp, _nonzero_mask(ksp, ksp.ndim - 2), None, None, "cfl", attrs)
    if suffix == ".npy":
        arr = read_npy(p)
        if not arr.is_complex():
            raise InputError(f"kspace: expected a complex array in {str(p)!r}, got dtype {arr.dtype}")
        if arr.ndim == 3:
            arr = arr.unsqueeze(0)
        if arr.ndim != 4:
            raise InputError(f"kspace: expected (C, H, W) or (S, C, H, W) in {str(p)!r}, "
                             f"got shape {tuple(arr.shape)}")
        if slices is not None:
            arr = arr[_indices(slices, arr.shape[0])]
        arr = arr.to(torch.complex64)
        return KspaceData(arr, _nonzero_mask(arr, 2), None, None, "npy")
    existing_file(p)
    if is_ismrmrd(p):
        ksp, traj, xml = read_ismrmrd(p)
        if slices is not None:
            ksp = ksp[_indices(slices, ksp.shape[0])]
        mask = None if traj is not None else _nonzero_mask(ksp, ksp.ndim - 2)
        return KspaceData(ksp, mask, None, traj, "ismrmrd", {"ismrmrd_header": xml})
    data = read_fastmri(p, slices=slices)
    mask = data.mask if data.mask is not None else _nonzero_mask(data.kspace, 2)
    return KspaceData(data.kspace, mask, data.reference, None, "fastmri", data.attrs)
