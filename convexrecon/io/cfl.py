"""BART's ``.cfl`` / ``.hdr`` pair: raw complex64 samples in column-major (Fortran)
order, and a text header ``# Dimensions`` followed by the sizes on one line.

``base`` may be given with or without the ``.cfl`` / ``.hdr`` suffix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convexrecon.errors import InputError
from convexrecon.io._common import atomic_path, check_array_finite, to_numpy

__all__ = ["read_cfl", "write_cfl", "cfl_paths"]


def cfl_paths(base: str | os.PathLike) -> tuple[Path, Path]:
    """``(header, data)`` paths for ``base`` with or without a suffix."""
    p = Path(base)
    if p.suffix in (".cfl", ".hdr"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".hdr"), p.with_name(p.name + ".cfl")


def _read_dims(hdr: Path) -> list[int]:
    try:
        lines = hdr.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"base: expected a readable BART header {str(hdr)!r} ({exc})") from exc
    for i, line in enumerate(lines):
        if line.strip() == "# Dimensions" and i + 1 < len(lines):
            try:
                dims = [int(t) for t in lines[i + 1].split()]
            except ValueError as exc:
                raise InputError(f"{hdr}: expected integer dimensions after '# Dimensions', "
                                 f"got {lines[i + 1]!r}") from exc
            if not dims or min(dims) < 0:
                raise InputError(f"{hdr}: expected non-negative dimensions, got {dims}")
            return dims
    raise InputError(f"{hdr}: expected a '# Dimensions' line followed by the sizes")


def read_cfl(base: str | os.PathLike, *, squeeze_trailing: bool = True) -> torch.Tensor:
    """Read a BART ``.cfl``/``.hdr`` pair into a complex64 tensor.

    Args:
        base: path with or without the ``.cfl``/``.hdr`` suffix.
        squeeze_trailing: drop trailing singleton dimensions (BART writes up to 16
            dimensions); at least one dimension is kept.

    Raises:
        InputError: a missing file, a malformed header, a data file whose size does
            not match the header (truncated), non-finite values.
    """
    hdr, cfl = cfl_paths(base)
    for p in (hdr, cfl):
        if not p.is_file():
            raise InputError(f"base: expected an existing file {str(p)!r}")
    dims = _read_dims(hdr)
    n = int(np.prod(dims))
    itemsize = np.dtype(np.complex64).itemsize
    size = cfl.stat().st_size
    if size != n * itemsize:
        raise InputError(f"{cfl}: expected {n * itemsize} bytes for dimensions {dims}, got {size} "
                         "(truncated or mismatched header)")
    data = np.fromfile(cfl, dtype=np.complex64, count=n)
    if squeeze_trailing:
        while len(dims) > 1 and dims[-1] == 1:
            dims = dims[:-1]
    arr = data.reshape(dims, order="F")
    check_array_finite(arr, "cfl data")
    return torch.from_numpy(np.ascontiguousarray(arr))


def write_cfl(base: str | os.PathLike, array: Any) -> tuple[Path, Path]:
    """Write ``array`` (tensor or numpy, cast to complex64) as a BART pair.

    Both files go to temporary names first and are renamed into place (data, then
    header); a reader checks that the data size matches the header.

    Returns:
        ``(header path, data path)``.
    """
    arr = to_numpy(array, "array")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)):
        raise InputError(f"array: expected a numeric array, got dtype {arr.dtype}")
    check_array_finite(arr, "array")
    arr = np.asarray(arr, dtype=np.complex64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    hdr, cfl = cfl_paths(base)
    text = "# Dimensions\n" + " ".join(str(d) for d in arr.shape) + "\n"
    with atomic_path(hdr) as tmp_hdr, atomic_path(cfl) as tmp_cfl:  # data renamed first
        arr.ravel(order="F").tofile(tmp_cfl)
        tmp_hdr.write_text(text)
    return hdr, cfl
