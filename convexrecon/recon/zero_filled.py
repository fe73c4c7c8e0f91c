"""The zero-filled (Cartesian) and gridding (non-Cartesian) reconstructions.

- Cartesian: the centred orthonormal inverse FFT of the masked k-space per coil.
- Non-Cartesian: density-compensated gridding, the adjoint NUFFT of ``w * y`` per coil
  with Pipe-Menon weights ``w`` (normalised so that the point-spread function peaks
  at 1, see :func:`convexrecon.operators.nufft.pipe_menon_dcf`).

The coil images are combined with the maps (``sum_c conj(S_c) x_c``, a complex image)
when given, otherwise by root-sum-of-squares (a real image). No scaling is applied:
the result is at the input's scale.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from convexrecon._checks import as_tensor, check_finite
from convexrecon.errors import InputError
from convexrecon.operators.fft import ifftc
from convexrecon.recon._common import combine, parse, parse_maps

__all__ = ["zero_filled"]


def zero_filled(kspace: Any, maps: Any = None, mask_or_traj: Any = None, *,
                im_size: Sequence[int] | None = None, dcf: Any = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Zero-filled (Cartesian) or density-compensated gridding (non-Cartesian) image.

    Args:
        kspace: ``(*batch, C, H, W)`` or ``(*batch, C, K)``, tensor or numpy array.
        maps: optional coil maps ``(*batch, C, H, W)``; without them the coils are
            combined by root-sum-of-squares.
        mask_or_traj: ``None`` (Cartesian, sampled where nonzero), a bool mask
            broadcastable to ``(*batch, H, W)``, or a ``(2, K)`` trajectory in radians.
        im_size: image size for non-Cartesian data without maps.
        dcf: optional ``(K,)`` density-compensation weights (non-Cartesian; default
            Pipe-Menon).
        device: where to compute.

    Returns:
        ``(*batch, H, W)``: complex with maps, real (RSS) without.
    """
    maps_shape = None if maps is None else tuple(getattr(maps, "shape", ()))
    data = parse(kspace, mask_or_traj, im_size=im_size, maps_shape=maps_shape, device=device)
    m = None if maps is None else parse_maps(maps, data)
    if data.cartesian:
        coil_images = ifftc(data.kspace * data.mask.unsqueeze(-3), (-2, -1))
        return combine(coil_images, m)
    from convexrecon.operators.nufft import NUFFT, pipe_menon_dcf

    rdt = data.traj.dtype
    if dcf is None:
        w = pipe_menon_dcf(data.traj, data.im_size).to(rdt)
    else:
        w = as_tensor(dcf, "dcf")
        k = data.traj.shape[1]
        if w.is_complex() or tuple(w.shape) != (k,):
            raise InputError(f"dcf: expected real weights of shape ({k},), got {tuple(w.shape)} {w.dtype}")
        w = check_finite(w.to(device=data.kspace.device, dtype=rdt), "dcf")
        if bool((w < 0).any()):
            raise InputError(f"dcf: expected non-negative weights, got minimum {float(w.min()):.3g}")
    op = NUFFT(data.traj, data.im_size, toeplitz=False, dtype=data.kspace.dtype)
    coil_images = op.adjoint(data.kspace * w.to(data.kspace.dtype))
    return combine(coil_images, m)
