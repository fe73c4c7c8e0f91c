"""Tiny MRI problems for the exactness tests of programs and solvers.

Uses the real operators (Sense, NonCartesianSense, Wavelet, FiniteDifference) when
they exist, and small explicit stand-ins otherwise (same conventions: centred
orthonormal FFT, coil maps ``(C, H, W)``, k-space ``(C, ...)``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from convexrecon.operators.base import Operator

DT = torch.complex128


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def crandn(*shape, seed=0, dtype=DT):
    g = _gen(seed)
    rdt = torch.float64 if dtype == torch.complex128 else torch.float32
    return torch.complex(torch.randn(*shape, generator=g, dtype=rdt), torch.randn(*shape, generator=g, dtype=rdt))


def fftc(x, dims=(-2, -1)):
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho"), dim=dims)


def ifftc(x, dims=(-2, -1)):
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho"), dim=dims)


class SenseStandIn(Operator):
    """``mask * F(maps * x)``: Cartesian multi-coil stand-in."""

    def __init__(self, maps, mask):
        super().__init__(maps.shape[-2:], maps.shape[-3:], dtype=maps.dtype)
        self.maps, self.mask = maps, mask

    def _forward(self, x):
        return self.mask * fftc(self.maps * x.unsqueeze(-3))

    def _adjoint(self, y):
        return torch.sum(self.maps.conj() * ifftc(self.mask * y), dim=-3)


class NUDFTSenseStandIn(Operator):
    """Explicit non-uniform DFT per coil (traj in radians, (2, K))."""

    def __init__(self, maps, traj):
        c, h, w = maps.shape[-3:]
        super().__init__((h, w), (c, traj.shape[1]), dtype=maps.dtype)
        gy = torch.arange(h, dtype=torch.float64) - h // 2
        gx = torch.arange(w, dtype=torch.float64) - w // 2
        yy, xx = torch.meshgrid(gy, gx, indexing="ij")
        phase = traj[0].double()[:, None] * yy.reshape(1, -1) + traj[1].double()[:, None] * xx.reshape(1, -1)
        self.E = (torch.exp(-1j * phase) / math.sqrt(h * w)).to(maps.dtype)
        self.maps = maps

    def _forward(self, x):
        z = (self.maps * x.unsqueeze(-3)).flatten(-2)
        return z @ self.E.T

    def _adjoint(self, y):
        z = y @ self.E.conj()
        return torch.sum(self.maps.conj() * z.reshape(*z.shape[:-1], *self.ishape), dim=-3)


class Unitary2D(Operator):
    """A random orthogonal (unitary) transform of (H, W) images (wavelet stand-in)."""

    def __init__(self, shape, *, seed=0, dtype=DT):
        super().__init__(shape, shape, dtype=dtype)
        n = shape[0] * shape[1]
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=_gen(seed), dtype=torch.float64))
        self.Q = q.to(dtype)

    def _forward(self, x):
        return (x.flatten(-2) @ self.Q.T).reshape(x.shape)

    def _adjoint(self, y):
        return (y.flatten(-2) @ self.Q.conj()).reshape(y.shape)


class FDStandIn(Operator):
    """Circular forward differences along the last two axes, oshape (2, H, W)."""

    def __init__(self, shape, *, dtype=DT):
        super().__init__(shape, (2, *shape), dtype=dtype)

    def _forward(self, x):
        return torch.stack([torch.roll(x, -1, -2) - x, torch.roll(x, -1, -1) - x], dim=-3)

    def _adjoint(self, y):
        a, b = y.unbind(-3)
        return (torch.roll(a, 1, -2) - a) + (torch.roll(b, 1, -1) - b)


def birdcage_maps(c, h, w, dtype=DT):
    """Smooth, normalised coil maps (sum |S|^2 = 1)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64),
                            torch.linspace(-1, 1, w, dtype=torch.float64), indexing="ij")
    maps = []
    for k in range(c):
        ang = 2 * math.pi * k / c
        cy, cx = 1.5 * math.sin(ang), 1.5 * math.cos(ang)
        mag = 1.0 / torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        maps.append(mag * torch.exp(1j * (ang + yy * xx)))
    m = torch.stack(maps)
    return (m / torch.sqrt((m.abs() ** 2).sum(0))).to(dtype)


def phantom(h, w, dtype=DT):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64),
                            torch.linspace(-1, 1, w, dtype=torch.float64), indexing="ij")
    img = ((yy / 0.8) ** 2 + (xx / 0.6) ** 2 <= 1).double()
    img = img - 0.5 * (((yy - 0.2) / 0.3) ** 2 + (xx / 0.2) ** 2 <= 1).double()
    img = img + 0.3 * (((yy + 0.3) / 0.15) ** 2 + ((xx - 0.2) / 0.15) ** 2 <= 1).double()
    return (img * torch.exp(1j * 0.3 * xx)).to(dtype)


def cartesian_mask(h, w, *, accel=2.0, center=4, seed=0):
    g = np.random.default_rng(seed)
    cols = g.random(w) < 1.0 / accel
    cols[w // 2 - center // 2: w // 2 + center // 2] = True
    return torch.from_numpy(np.broadcast_to(cols, (h, w)).copy())


def radial_traj(n_spokes, n_read):
    ang = (torch.arange(n_spokes, dtype=torch.float64) * math.radians(111.25)) % math.pi
    r = (torch.arange(n_read, dtype=torch.float64) - n_read / 2) * (2 * math.pi / n_read)
    ky = r[None, :] * torch.sin(ang)[:, None]
    kx = r[None, :] * torch.cos(ang)[:, None]
    return torch.stack([ky.reshape(-1), kx.reshape(-1)])
