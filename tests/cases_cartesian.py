"""Registry cases for the Cartesian operators (FFT, elementwise, SENSE, wavelet, TV)."""

from __future__ import annotations

import torch

from registry import register
from convexrecon.operators.elementwise import Crop, Mask, Multiply, Pad
from convexrecon.operators.fft import FFT
from convexrecon.operators.finite_diff import FiniteDifference
from convexrecon.operators.sense import Sense
from convexrecon.operators.wavelet import Wavelet


def rand_complex(shape, dtype, seed: int) -> torch.Tensor:
    """Seeded standard complex normal tensor."""
    g = torch.Generator().manual_seed(seed)
    rdt = torch.float64 if dtype == torch.complex128 else torch.float32
    return torch.complex(torch.randn(*shape, generator=g, dtype=rdt),
                         torch.randn(*shape, generator=g, dtype=rdt))


def variable_density_mask(shape, *, accel: float = 3.0, calib: int = 2, seed: int = 0) -> torch.Tensor:
    """A Poisson-like random 2-D mask: density falling off from the centre, full centre."""
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    ky = (torch.arange(h) - h // 2).abs().float() / max(h // 2, 1)
    kx = (torch.arange(w) - w // 2).abs().float() / max(w // 2, 1)
    r = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    p = (1 - r / r.max()) ** 2 * (3.0 / accel) + 0.05
    m = torch.rand(h, w, generator=g) < p
    m[h // 2 - calib // 2: h // 2 + calib - calib // 2, w // 2 - calib // 2: w // 2 + calib - calib // 2] = True
    return m


def phase_encode_mask(shape, *, accel: float = 3.0, seed: int = 0) -> torch.Tensor:
    """A 1-D random phase-encode mask (columns, last axis), constant along the readout."""
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    cols = torch.rand(w, generator=g) < 1.0 / accel
    cols[w // 2] = True
    return cols.expand(h, w).clone()


def maps_for(ncoils, im, dtype, seed=0) -> torch.Tensor:
    """Random smooth-ish coil maps (not normalised; the operator does not need it)."""
    return rand_complex((ncoils, *im), dtype, seed)


@register("fft-2d")
def _fft(dtype):
    return FFT((3, 8, 6), dtype=dtype)


@register("fft-odd-1d")
def _fft_odd(dtype):
    return FFT((5, 7), dims=(0,), dtype=dtype)


@register("multiply-coils")
def _multiply(dtype):
    return Multiply((1, 6, 5), rand_complex((3, 6, 5), dtype, 1))


@register("multiply-real")
def _multiply_real(dtype):
    rdt = torch.float64 if dtype == torch.complex128 else torch.float32
    return Multiply((4, 5), torch.rand(4, 5, generator=torch.Generator().manual_seed(2), dtype=rdt),
                    dtype=dtype)


@register("mask")
def _mask(dtype):
    return Mask((6, 5), variable_density_mask((6, 5), seed=3), dtype=dtype)


@register("crop")
def _crop(dtype):
    return Crop((9, 8), (6, 5), dtype=dtype)


@register("pad")
def _pad(dtype):
    return Pad((5, 4), (8, 7), dtype=dtype)


@register("sense-2d-poisson")
def _sense2d(dtype):
    return Sense(maps_for(3, (8, 8), dtype), variable_density_mask((8, 8), seed=4))


@register("sense-2d-1dmask")
def _sense1d(dtype):
    return Sense(maps_for(3, (16, 12), dtype), phase_encode_mask((16, 12), seed=5))


@register("sense-2d-full")
def _sense_full(dtype):
    return Sense(maps_for(3, (6, 10), dtype))


@register("sense-2d-odd")
def _sense_odd(dtype):
    return Sense(maps_for(3, (9, 7), dtype), variable_density_mask((9, 7), seed=6))


@register("sense-2d-odd-1dmask")
def _sense_odd1d(dtype):
    return Sense(maps_for(2, (10, 7), dtype), phase_encode_mask((10, 7), seed=7))


@register("sense-3d")
def _sense3d(dtype):
    m = torch.rand(4, 1, 6, generator=torch.Generator().manual_seed(8)) < 0.5
    return Sense(maps_for(3, (4, 6, 6), dtype), m, ndim=3)


@register("wavelet-pywt")
def _wavelet(dtype):
    return Wavelet((16, 8), wavelet="db4", levels=2, dtype=dtype, backend="pywt")


@register("wavelet-torch")
def _wavelet_torch(dtype):
    return Wavelet((16, 8), wavelet="db4", levels=2, dtype=dtype, backend="torch")


@register("wavelet-3d-haar")
def _wavelet3d(dtype):
    return Wavelet((4, 8, 8), wavelet="haar", axes=(-3, -2, -1), dtype=dtype)


@register("finite-difference")
def _fd(dtype):
    return FiniteDifference((5, 6), dtype=dtype)


@register("finite-difference-3d")
def _fd3(dtype):
    return FiniteDifference((3, 4, 5), dims=(0, 1, 2), dtype=dtype)
