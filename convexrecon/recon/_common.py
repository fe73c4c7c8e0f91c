"""Input parsing and small shared helpers of the one-line reconstructions.

Nothing here is public API; the builders in :mod:`convexrecon.recon` call it.

Validate once: user input is checked where it enters (:func:`parse`,
:func:`complex_kspace`, :func:`parse_maps`), and the typed :class:`Data` (or the
checked tensor) is passed on; internal steps do not re-check it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from convexrecon._checks import as_tensor, check_finite, complex_dtype_of
from convexrecon.errors import InputError

__all__ = ["Data", "parse", "complex_kspace", "checked_cartesian", "parse_maps", "combine",
           "sampled_columns"]


@dataclass
class Data:
    """Parsed input of a reconstruction.

    Attributes:
        kspace: ``(*batch, C, H, W)`` (Cartesian) or ``(*batch, C, K)`` complex.
        mask: Cartesian bool sampling mask ``(*batch or 1s, H, W)``, else None.
        traj: non-Cartesian ``(2, K)`` radians, else None.
        im_size: image size ``(H, W)``.
        batch: the leading batch shape of ``kspace``.
    """

    kspace: torch.Tensor
    mask: torch.Tensor | None
    traj: torch.Tensor | None
    im_size: tuple[int, int]
    batch: tuple[int, ...]

    @property
    def cartesian(self) -> bool:
        return self.traj is None

    @property
    def ncoils(self) -> int:
        return int(self.kspace.shape[-3] if self.cartesian else self.kspace.shape[-2])


def checked_cartesian(k: torch.Tensor, mask: torch.Tensor | None = None) -> Data:
    """The :class:`Data` of Cartesian k-space that :func:`complex_kspace` (or
    :func:`parse`) has already validated: no second pass over the data."""
    return Data(kspace=k, mask=mask, traj=None, im_size=(int(k.shape[-2]), int(k.shape[-1])),
                batch=tuple(k.shape[:-3]))


def complex_kspace(kspace: Any, *, min_ndim: int, device=None, layout: str) -> torch.Tensor:
    """k-space as a finite complex tensor (complex64 unless given in double precision)."""
    k = as_tensor(kspace, "kspace")
    if not (k.is_complex() or k.is_floating_point()):
        raise InputError(f"kspace: expected a complex array {layout}, got dtype {k.dtype}")
    if k.ndim < min_ndim:
        raise InputError(f"kspace: expected shape {layout}, got {tuple(k.shape)}")
    k = k.to(complex_dtype_of(k.dtype))
    if device is not None:
        k = k.to(device)
    check_finite(k, "kspace")
    if k.numel() == 0:
        raise InputError(f"kspace: expected a non-empty array {layout}, got shape {tuple(k.shape)}")
    return k


def _is_traj(t: torch.Tensor, kspace: torch.Tensor) -> bool:
    return (t.dtype != torch.bool and t.is_floating_point() and t.ndim == 2
            and t.shape[0] == 2 and t.shape[1] == kspace.shape[-1] and t.shape[1] > 2)


def parse(kspace: Any, mask_or_traj: Any = None, *, im_size: Sequence[int] | None = None,
          maps_shape: Sequence[int] | None = None, device=None) -> Data:
    """Classify and check k-space and the sampling description.

    ``mask_or_traj`` is None (Cartesian; the mask is where k-space is nonzero in any
    coil), a bool (or 0/1) mask broadcastable to ``(*batch, H, W)`` (Cartesian), or a
    float ``(2, K)`` trajectory in radians (non-Cartesian, ``kspace`` is
    ``(*batch, C, K)``; the image size comes from ``im_size`` or the maps' shape).
    """
    raw = as_tensor(kspace, "kspace")
    traj = None
    if mask_or_traj is not None:
        t = as_tensor(mask_or_traj, "mask_or_traj")
        if raw.ndim >= 2 and _is_traj(t, raw):
            traj = t
    if traj is not None:
        k = complex_kspace(kspace, min_ndim=2, device=device, layout="(*batch, C, K)")
        if im_size is None and maps_shape is not None:
            im_size = tuple(maps_shape)[-2:]
        if im_size is None:
            raise InputError("im_size: expected (H, W) for non-Cartesian data without maps, got None")
        size = tuple(int(s) for s in im_size)
        if len(size) != 2 or min(size) < 1:
            raise InputError(f"im_size: expected (H, W) with positive sizes, got {im_size!r}")
        from convexrecon.operators.nufft import check_traj

        traj = check_traj(traj, size, "mask_or_traj").to(k.device)
        traj = traj.to(torch.float64 if k.dtype == torch.complex128 else torch.float32)
        return Data(kspace=k, mask=None, traj=traj, im_size=size, batch=tuple(k.shape[:-2]))

    k = complex_kspace(kspace, min_ndim=3, device=device, layout="(*batch, C, H, W)")
    size = (int(k.shape[-2]), int(k.shape[-1]))
    if mask_or_traj is None:
        mask = (k != 0).any(dim=-3)
    else:
        from convexrecon.operators.elementwise import as_bool_mask

        m = as_tensor(mask_or_traj, "mask_or_traj")
        if m.is_floating_point() and m.ndim == 2 and m.shape[0] == 2 and m.shape != size:
            raise InputError(
                f"mask_or_traj: expected a (2, K={k.shape[-1]}) trajectory for k-space "
                f"(*batch, C, K), or a bool mask (*batch, H, W); got shape {tuple(m.shape)} "
                f"with k-space {tuple(k.shape)}"
            )
        mask = as_bool_mask(m, "mask_or_traj", device=k.device)
        if mask.ndim >= 2 and all(a in (1, b) for a, b in zip(mask.shape[-2:], size)):
            # A 1-D mask stored as (1, W) (fastMRI) broadcasts along the readout.
            mask = mask.expand(*mask.shape[:-2], *size)
        if mask.ndim < 2 or tuple(mask.shape[-2:]) != size:
            raise InputError(
                f"mask_or_traj: expected a bool mask (*batch, {size[0]}, {size[1]}) or a "
                f"(2, K) trajectory, got shape {tuple(mask.shape)} for k-space {tuple(k.shape)}"
            )
        try:
            torch.broadcast_shapes(tuple(mask.shape[:-2]), tuple(k.shape[:-3]))
        except RuntimeError as exc:
            raise InputError(
                f"mask_or_traj: expected batch dims broadcastable to {tuple(k.shape[:-3])}, "
                f"got mask shape {tuple(mask.shape)}"
            ) from exc
    if not bool(mask.any()):
        raise InputError("mask_or_traj: expected at least one sampled k-space location, got none")
    flat = mask.reshape(-1, *size)
    if not bool(flat.any(dim=(-2, -1)).all()):
        raise InputError("mask_or_traj: expected every slice to have a sampled location, "
                         "got an empty mask for at least one slice")
    return Data(kspace=k, mask=mask, traj=None, im_size=size, batch=tuple(k.shape[:-3]))


def parse_maps(maps: Any, data: Data) -> torch.Tensor:
    """Check coil maps against parsed data: ``(*batch, C, H, W)`` complex, finite."""
    m = as_tensor(maps, "maps")
    if not (m.is_complex() or m.is_floating_point()):
        raise InputError(f"maps: expected a complex array (*batch, C, H, W), got dtype {m.dtype}")
    want = (data.ncoils, *data.im_size)
    if m.ndim < 3 or tuple(m.shape[-3:]) != want:
        raise InputError(
            f"maps: expected shape (*batch, {', '.join(map(str, want))}) to match the k-space "
            f"{tuple(data.kspace.shape)}, got {tuple(m.shape)}"
        )
    try:
        torch.broadcast_shapes(tuple(m.shape[:-3]), data.batch)
    except RuntimeError as exc:
        raise InputError(
            f"maps: expected batch dims broadcastable to {data.batch}, got {tuple(m.shape)}"
        ) from exc
    m = m.to(device=data.kspace.device, dtype=data.kspace.dtype)
    return check_finite(m, "maps")


def combine(coil_images: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
    """Coil combination over axis ``-3``: ``sum_c conj(S_c) x_c`` with maps, else RSS (real)."""
    if maps is None:
        return torch.sqrt((coil_images.real ** 2 + coil_images.imag ** 2).sum(dim=-3))
    return (maps.conj() * coil_images).sum(dim=-3)


def sampled_columns(kspace: torch.Tensor, mask: Any, *, axis: int, name: str = "mask"
                    ) -> torch.Tensor:
    """Which indices along ``axis`` (-2 or -1 of ``(*batch, C, H, W)``) are sampled.

    Returns a bool ``(*batch, N)`` profile: from ``mask`` (which must be constant along
    the other image axis) or, with ``mask=None``, from the nonzero k-space entries.
    """
    other = -1 if axis == -2 else -2
    if mask is None:
        return (kspace != 0).any(dim=-3).any(dim=other)
    from convexrecon.operators.elementwise import as_bool_mask

    m = as_bool_mask(mask, name, device=kspace.device)
    size = tuple(kspace.shape[-2:])
    if m.ndim == 1:
        m = m.unsqueeze(other)
    if m.ndim < 2 or any(s not in (1, n) for s, n in zip(m.shape[-2:], size)):
        raise InputError(f"{name}: expected a bool mask broadcastable to (*batch, {size[0]}, {size[1]}), "
                         f"got shape {tuple(m.shape)}")
    full = torch.broadcast_to(m, (*m.shape[:-2], *size))
    prof = full.any(dim=other)
    if not bool((full == prof.unsqueeze(other)).all()):
        raise InputError(f"{name}: expected sampling constant along axis {other} (1-D undersampling "
                         f"along {axis}), got a mask that varies along it")
    batch = tuple(kspace.shape[:-3])
    try:
        return torch.broadcast_to(prof, (*batch, size[axis]))
    except RuntimeError as exc:
        raise InputError(f"{name}: expected batch dims broadcastable to {batch}, got {tuple(m.shape)}") from exc
