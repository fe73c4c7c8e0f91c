"""BART's ``.cfl`` / ``.hdr`` pair: raw complex64 samples in column-major (Fortran)
order, and a text header ``# Dimensions`` followed by the sizes on one line.

``base`` may be given with or without the ``.cfl`` / ``.hdr`` suffix.

BART's dimension convention (:data:`BART_DIM_NAMES`): 0, 1, 2 READ, PHS1, PHS2;
3 COIL; 4 MAPS; 5 TE; 10 TIME; 13 SLICE. :func:`bart_layout` maps a file onto the
package layout: any two non-singleton spatial dimensions make a 2-D problem (the
lower-numbered one is ``H``, axis -2), three a 3-D one; SLICE and TIME become the
leading slice axis; only the first set of maps is used; any other non-singleton
dimension is an ``InputError`` naming it. :func:`write_bart_image` writes an image
back in the same convention.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from convexrecon.errors import InputError
from convexrecon.io._common import atomic_path, check_array_finite, to_numpy

__all__ = ["read_cfl", "write_cfl", "cfl_paths", "BartLayout", "BART_DIM_NAMES", "bart_layout",
           "bart_to_package", "package_to_bart", "default_layout", "write_bart_image", "full_dims",
           "BartLayoutWarning"]


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


# -- BART's dimension convention ---------------------------------------------------------
BART_NDIM = 16
#: BART's names of its 16 dimensions (``mri.h``).
BART_DIM_NAMES = ("READ", "PHS1", "PHS2", "COIL", "MAPS", "TE", "COEFF", "COEFF2", "ITER",
                  "CSHIFT", "TIME", "TIME2", "LEVEL", "SLICE", "AVG", "BATCH")
SPATIAL_DIMS = (0, 1, 2)
COIL_DIM, MAPS_DIM, TIME_DIM, SLICE_DIM = 3, 4, 10, 13
BATCH_DIMS = (SLICE_DIM, TIME_DIM)  # flattened into the package's slice axis, SLICE outer


class BartLayoutWarning(UserWarning):
    """A BART file was read with a simplification (e.g. only the first set of maps)."""


@dataclass(frozen=True)
class BartLayout:
    """Where the package's axes sit among BART's 16 dimensions.

    Attributes:
        spatial: BART dimensions of the package's spatial axes in package order:
            ``(H, W)`` for 2-D, ``(D, H, W)`` for 3-D. ``H`` and ``W`` are the two
            lowest-numbered non-singleton spatial dimensions (``H`` the lower one);
            for 3-D, ``D`` is the remaining (highest-numbered) one.
        batch: ``((dim, size), ...)`` of SLICE and TIME, flattened in this order
            (SLICE outer) into the package's leading slice axis.
        maps: the number of sets of maps in dimension 4 of the file (only the first
            is read).
    """

    spatial: tuple[int, ...]
    batch: tuple[tuple[int, int], ...] = ()
    maps: int = 1

    def describe(self) -> str:
        """E.g. ``"H = PHS1, W = PHS2, slices = SLICE(4)"``."""
        names = ("D", "H", "W")[-len(self.spatial):]
        parts = [f"{n} = {BART_DIM_NAMES[d]}" for n, d in zip(names, self.spatial)]
        if self.batch:
            parts.append("slices = " + " x ".join(f"{BART_DIM_NAMES[d]}({n})" for d, n in self.batch))
        return ", ".join(parts)


def full_dims(dims: Sequence[int]) -> list[int]:
    """Pad a BART dimension list with trailing ones to 16 entries."""
    dims = [int(d) for d in dims]
    if len(dims) > BART_NDIM:
        extra = [d for d in dims[BART_NDIM:] if d != 1]
        if extra:
            raise InputError(f"cfl dimensions: expected at most {BART_NDIM} BART dimensions, "
                             f"got {len(dims)}: {dims}")
        dims = dims[:BART_NDIM]
    return dims + [1] * (BART_NDIM - len(dims))


def _trim(dims: Sequence[int]) -> list[int]:
    d = list(dims)
    while len(d) > 1 and d[-1] == 1:
        d.pop()
    return d


def bart_layout(dims: Sequence[int], *, has_coils: bool = True) -> BartLayout:
    """The layout of a BART k-space (``has_coils``) or image array of shape ``dims``.

    Two non-singleton spatial dimensions make a 2-D problem, three a 3-D one; SLICE
    and TIME become batch dimensions; MAPS may hold several sets (the first is used).

    Raises:
        InputError: fewer than two non-singleton spatial dimensions, or any other
            non-singleton dimension (named), e.g. TE or a coil dimension in an image.
    """
    d = full_dims(dims)
    spatial = tuple(i for i in SPATIAL_DIMS if d[i] > 1)
    if len(spatial) < 2:
        raise InputError(
            f"cfl dimensions {_trim(d)}: expected a 2-D or 3-D image, i.e. at least two "
            "non-singleton dimensions among READ, PHS1 and PHS2 (0, 1, 2); got "
            f"{len(spatial)}")
    allowed = set(SPATIAL_DIMS) | set(BATCH_DIMS) | {MAPS_DIM}
    if has_coils:
        allowed.add(COIL_DIM)
    for i, n in enumerate(d):
        if n > 1 and i not in allowed:
            raise InputError(
                f"cfl dimension {i} ({BART_DIM_NAMES[i]}) has size {n}: expected it singleton "
                f"(supported: READ, PHS1, PHS2, {'COIL, ' if has_coils else ''}MAPS (first set "
                "used), TIME and SLICE (batch))")
    order = spatial if len(spatial) == 2 else (spatial[2], spatial[0], spatial[1])
    batch = tuple((i, d[i]) for i in BATCH_DIMS if d[i] > 1)
    return BartLayout(order, batch, d[MAPS_DIM])


def bart_to_package(arr: torch.Tensor, layout: BartLayout, *, has_coils: bool = True) -> torch.Tensor:
    """A BART array (any number of leading dims up to 16) to the package layout:
    ``(S, C, *spatial)`` for k-space (``has_coils``) or ``(S, *spatial)`` for images,
    ``S`` the flattened SLICE x TIME (1 if both are singleton)."""
    a = arr.reshape(full_dims(arr.shape))
    a = a.narrow(MAPS_DIM, 0, 1)  # the first set of maps
    front = [d for d, _ in layout.batch] + ([COIL_DIM] if has_coils else []) + list(layout.spatial)
    rest = [i for i in range(BART_NDIM) if i not in front]
    a = a.permute(*front, *rest)
    n_batch = int(np.prod([n for _, n in layout.batch])) if layout.batch else 1
    keep = a.shape[len(layout.batch):len(front)]
    return a.reshape(n_batch, *keep)


def package_to_bart(x: Any, layout: BartLayout) -> np.ndarray:
    """An image ``(S, *spatial)`` to a 16-dimensional BART array of ``layout``.

    ``S`` must equal the product of the layout's batch sizes; otherwise the slices
    go to the SLICE dimension alone.
    """
    arr = to_numpy(x, "image")
    nsp = len(layout.spatial)
    if arr.ndim != nsp + 1:
        raise InputError(f"image: expected (slices, {', '.join('DHW'[-nsp:])}), got shape {arr.shape}")
    batch = layout.batch
    if int(np.prod([n for _, n in batch])) != arr.shape[0]:
        batch = ((SLICE_DIM, arr.shape[0]),) if arr.shape[0] > 1 else ()
    src = arr.reshape(*[n for _, n in batch], *arr.shape[1:])
    dims = [1] * BART_NDIM
    for (d, n) in batch:
        dims[d] = n
    for d, n in zip(layout.spatial, arr.shape[1:]):
        dims[d] = n
    order = [d for d, _ in batch] + list(layout.spatial)
    rest = [i for i in range(BART_NDIM) if i not in order]
    full = src.reshape(*src.shape, *([1] * len(rest)))
    # axis k of `full` is BART dimension order[k] (then the singleton rest)
    return np.ascontiguousarray(np.moveaxis(full, range(BART_NDIM), order + rest)).reshape(dims)


def default_layout(ndim: int) -> BartLayout:
    """Layout for data that did not come from BART: ``H = READ``, ``W = PHS1`` (and
    ``D = PHS2`` in 3-D), slices in SLICE."""
    return BartLayout((0, 1) if ndim == 2 else (2, 0, 1))


def write_bart_image(base: str | os.PathLike, image: Any, layout: BartLayout | None = None
                     ) -> tuple[Path, Path]:
    """Write an image ``(S, H, W)`` / ``(S, D, H, W)`` (or without ``S``) in BART's
    convention: spatial axes back in the dimensions they were read from (``layout``,
    default :func:`default_layout`), slices in SLICE (and TIME), 16 dimensions."""
    arr = to_numpy(image, "image")
    if arr.ndim in (2, 3) and (layout is None or len(layout.spatial) == arr.ndim):
        arr = arr[None]
    if arr.ndim not in (3, 4):
        raise InputError(f"image: expected (slices, H, W) or (slices, D, H, W), got shape {arr.shape}")
    layout = layout or default_layout(arr.ndim - 1)
    return write_cfl(base, package_to_bart(arr, layout))
