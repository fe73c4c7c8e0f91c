"""fastMRI HDF5 files: lazy per-slice reading, atomic writing.

Layout of a fastMRI file (and of what :func:`write_fastmri` writes):

- ``kspace``: ``(slices, coils, H, W)`` complex64 (multi-coil) or ``(slices, H, W)``
  (single-coil); the readout is ``H``, the phase encode ``W``.
- ``reconstruction_rss`` / ``reconstruction_esc``: reference magnitude images
  ``(slices, h, w)``, usually cropped to 320x320 (``reconstruction`` for submissions).
- ``mask``: optional sampling mask, ``(W,)`` in the fastMRI test sets.
- ``ismrmrd_header``: optional XML string; file attributes (``acquisition``, ``max``,
  ``norm``, ``patient_id``, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import torch

from convexrecon.errors import InputError
from convexrecon.io._common import atomic_path, check_array_finite, existing_file, to_numpy

__all__ = ["FastMRIData", "read_fastmri", "write_fastmri", "write_reconstruction",
           "REFERENCE_KEYS"]

REFERENCE_KEYS = ("reconstruction_rss", "reconstruction_esc", "reconstruction")

Slices = int | slice | Sequence[int] | None


@dataclass
class FastMRIData:
    """What :func:`read_fastmri` returns.

    Attributes:
        kspace: ``(S, C, H, W)`` complex64 tensor (single-coil files get ``C = 1``).
        mask: bool tensor broadcastable to ``(S, H, W)`` (``(1, W)`` for a fastMRI
            ``(W,)`` mask), or None when the file has none.
        reference: ``(S, h, w)`` float32 reference images, or None.
        attrs: file attributes, plus ``"reference_key"`` (the dataset the reference came
            from), ``"ismrmrd_header"`` (XML) when present and ``"slices"`` (the indices read).
    """

    kspace: torch.Tensor
    mask: torch.Tensor | None
    reference: torch.Tensor | None
    attrs: dict[str, Any] = field(default_factory=dict)


def _open(path: str | os.PathLike) -> h5py.File:
    p = existing_file(path)
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        raise InputError(f"path: expected a readable HDF5 file, got {str(p)!r} "
                         f"(truncated or not HDF5: {exc})") from exc


def _indices(slices: Slices, n: int) -> list[int]:
    if slices is None:
        return list(range(n))
    if isinstance(slices, slice):
        return list(range(n))[slices]
    if isinstance(slices, (int, np.integer)) and not isinstance(slices, bool):
        idx = [int(slices)]
    else:
        try:
            idx = [int(s) for s in slices]  # type: ignore[union-attr]
        except (TypeError, ValueError) as exc:
            raise InputError(f"slices: expected None, an int, a slice or a sequence of ints, "
                             f"got {slices!r}") from exc
    out = []
    for i in idx:
        if not -n <= i < n:
            raise InputError(f"slices: expected indices in [-{n}, {n}), got {i}")
        out.append(i % n)
    return out


def _read_rows(dset: h5py.Dataset, idx: list[int], name: str) -> np.ndarray:
    """Read ``dset[i]`` for each ``i`` (only those rows are read from disk)."""
    try:
        if idx and idx == list(range(idx[0], idx[-1] + 1)):
            return np.asarray(dset[idx[0]: idx[-1] + 1])
        return np.stack([np.asarray(dset[i]) for i in idx]) if idx else np.asarray(dset[0:0])
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"{name}: expected readable data, the file is truncated or corrupt "
                         f"({exc})") from exc


def _attr_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_fastmri(path: str | os.PathLike, *, slices: Slices = None) -> FastMRIData:
    """Read a fastMRI HDF5 file, loading only the requested slices.

    Args:
        path: the ``.h5`` file.
        slices: None (all), an int, a ``slice`` or a sequence of ints. The slice
            dimension is always kept (an int gives ``S = 1``).

    Raises:
        InputError: missing or unreadable file, no ``kspace`` dataset, wrong
            dimensions or dtype, non-finite values, slice index out of range.
    """
    with _open(path) as f:
        if "kspace" not in f or not isinstance(f["kspace"], h5py.Dataset):
            raise InputError(f"path: expected a 'kspace' dataset in {str(path)!r}, "
                             f"got datasets {sorted(f.keys())}")
        dset = f["kspace"]
        if dset.ndim not in (3, 4):
            raise InputError(f"kspace: expected (slices, coils, H, W) or (slices, H, W), "
                             f"got shape {dset.shape}")
        if not np.issubdtype(dset.dtype, np.complexfloating):
            raise InputError(f"kspace: expected a complex dataset, got dtype {dset.dtype}")
        idx = _indices(slices, dset.shape[0])
        ksp = _read_rows(dset, idx, "kspace").astype(np.complex64, copy=False)
        check_array_finite(ksp, "kspace")
        if ksp.ndim == 3:
            ksp = ksp[:, None]

        ref = None
        attrs: dict[str, Any] = {k: _attr_value(v) for k, v in f.attrs.items()}
        for key in REFERENCE_KEYS:
            if key in f and isinstance(f[key], h5py.Dataset):
                rd = f[key]
                if rd.ndim != 3 or rd.shape[0] != dset.shape[0]:
                    raise InputError(f"{key}: expected shape ({dset.shape[0]}, h, w), got {rd.shape}")
                ref_np = _read_rows(rd, idx, key)
                if np.iscomplexobj(ref_np):
                    ref = torch.from_numpy(ref_np.astype(np.complex64, copy=False))
                else:
                    ref = torch.from_numpy(ref_np.astype(np.float32, copy=False))
                check_array_finite(ref_np, key)
                attrs["reference_key"] = key
                break

        mask = None
        if "mask" in f and isinstance(f["mask"], h5py.Dataset):
            m = np.asarray(f["mask"])
            if m.ndim == 1:
                if m.shape[0] != ksp.shape[-1]:
                    raise InputError(f"mask: expected shape ({ksp.shape[-1]},), got {m.shape}")
                mask = torch.from_numpy(m.astype(bool)).reshape(1, -1)
            elif m.ndim == 2:
                mask = torch.from_numpy(m.astype(bool))
            elif m.ndim == 3 and m.shape[0] == dset.shape[0]:
                mask = torch.from_numpy(m[idx].astype(bool))
            else:
                raise InputError(f"mask: expected (W,), (H, W) or (slices, H, W), got {m.shape}")
        if "ismrmrd_header" in f:
            hdr = f["ismrmrd_header"][()]
            attrs["ismrmrd_header"] = hdr.decode("utf-8", "replace") if isinstance(hdr, bytes) else str(hdr)
        attrs["slices"] = idx
    return FastMRIData(kspace=torch.from_numpy(np.ascontiguousarray(ksp)), mask=mask,
                       reference=ref, attrs=attrs)


def write_fastmri(path: str | os.PathLike, kspace: Any, *, reference: Any = None,
                  mask: Any = None, attrs: dict[str, Any] | None = None,
                  reference_key: str = "reconstruction_rss") -> Path:
    """Write a fastMRI-layout HDF5 file atomically (temporary file, then rename).

    Args:
        path: target ``.h5`` path.
        kspace: ``(S, C, H, W)`` or ``(S, H, W)`` complex.
        reference: optional ``(S, h, w)`` reference images (written as float32
            magnitude if real, complex64 otherwise).
        mask: optional mask, ``(W,)``, ``(H, W)`` or ``(S, H, W)``, stored as uint8.
        attrs: optional file attributes (strings and numbers).
        reference_key: dataset name of the reference (one of ``REFERENCE_KEYS``).

    Returns:
        the path written.
    """
    ksp = to_numpy(kspace, "kspace")
    if ksp.ndim not in (3, 4):
        raise InputError(f"kspace: expected (S, C, H, W) or (S, H, W), got shape {ksp.shape}")
    if not np.iscomplexobj(ksp):
        raise InputError(f"kspace: expected a complex array, got dtype {ksp.dtype}")
    check_array_finite(ksp, "kspace")
    if reference_key not in REFERENCE_KEYS:
        raise InputError(f"reference_key: expected one of {REFERENCE_KEYS}, got {reference_key!r}")
    ref = None
    if reference is not None:
        ref = to_numpy(reference, "reference")
        if ref.ndim != 3 or ref.shape[0] != ksp.shape[0]:
            raise InputError(f"reference: expected shape ({ksp.shape[0]}, h, w), got {ref.shape}")
        check_array_finite(ref, "reference")
        ref = ref.astype(np.complex64 if np.iscomplexobj(ref) else np.float32)
    m = None
    if mask is not None:
        m = to_numpy(mask, "mask")
        ok = (m.ndim == 1 and m.shape[0] == ksp.shape[-1]) or \
             (m.ndim == 2 and m.shape == ksp.shape[-2:]) or \
             (m.ndim == 3 and m.shape == (ksp.shape[0], *ksp.shape[-2:]))
        if not ok:
            raise InputError(f"mask: expected (W,), (H, W) or (S, H, W) matching kspace {ksp.shape}, "
                             f"got {m.shape}")
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("kspace", data=ksp.astype(np.complex64), chunks=(1, *ksp.shape[1:]))
            if ref is not None:
                f.create_dataset(reference_key, data=ref, chunks=(1, *ref.shape[1:]))
            if m is not None:
                f.create_dataset("mask", data=m.astype(np.uint8))
            for key, val in (attrs or {}).items():
                f.attrs[key] = val
    return Path(path)


def write_reconstruction(path: str | os.PathLike, recon: Any, *, magnitude: bool = True) -> Path:
    """Write reconstructions ``(S, H, W)`` to dataset ``reconstruction`` (fastMRI
    submission layout), atomically. Complex input is stored as its magnitude
    (float32) unless ``magnitude=False`` (then complex64)."""
    rec = to_numpy(recon, "recon")
    if rec.ndim == 2:
        rec = rec[None]
    if rec.ndim != 3:
        raise InputError(f"recon: expected (S, H, W) or (H, W), got shape {rec.shape}")
    check_array_finite(rec, "recon")
    if np.iscomplexobj(rec):
        rec = np.abs(rec).astype(np.float32) if magnitude else rec.astype(np.complex64)
    else:
        rec = rec.astype(np.float32)
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("reconstruction", data=rec)
    return Path(path)
