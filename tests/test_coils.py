"""Coil maps and coil-domain preprocessing on real data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convexrecon.coils import (
    birdcage, coil_compress, espirit, lowres_maps, prewhiten, rss, whitening_matrix,
)
from convexrecon.errors import InputError
from convexrecon.operators.fft import fftc, ifftc
from convexrecon.operators.sense import Sense
from convexrecon.preprocess import center_crop, center_pad, remove_readout_oversampling
from convexrecon.problems._data import data_path


def _phantom() -> torch.Tensor:
    raw = np.load(data_path("phantom_32coil_full_raw.npy")).transpose(1, 0, 2)  # (C, RO, PE)
    return torch.from_numpy(np.ascontiguousarray(raw))


def _cg(normal, b, iters):
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = torch.vdot(r.reshape(-1), r.reshape(-1)).real
    for _ in range(iters):
        ap = normal(p)
        alpha = rs / torch.vdot(p.reshape(-1), ap.reshape(-1)).real
        x, r = x + alpha * p, r - alpha * ap
        new = torch.vdot(r.reshape(-1), r.reshape(-1)).real
        p, rs = r + (new / rs) * p, new
    return x


def _brain_support(ksp: torch.Tensor) -> torch.Tensor:
    """Signal support from the low-resolution image of the 24x24 calibration square."""
    h, w = ksp.shape[-2:]
    calib = torch.zeros_like(ksp)
    sl = (slice(h // 2 - 12, h // 2 + 12), slice(w // 2 - 12, w // 2 + 12))
    calib[:, sl[0], sl[1]] = ksp[:, sl[0], sl[1]]
    img = rss(ifftc(calib))
    return img > 0.2 * img.max()


def test_espirit_real_brain_maps_unit_norm():
    """ESPIRiT on the real brain k-space, cropped to its central 96x96 (low-resolution
    maps, a quarter of the cost): unit norm over coils inside the head, <= 1 everywhere."""
    ksp = torch.from_numpy(np.load(data_path("brain_8coil_poisson_ksp.npy")))
    low = center_crop(ksp, (96, 96))
    maps = espirit(low, max_iter=30)
    assert maps.shape == (8, 96, 96) and maps.dtype == torch.complex64
    power = (maps.abs() ** 2).sum(0)
    inside = _brain_support(low)
    assert inside.float().mean() > 0.2
    assert torch.allclose(power[inside], torch.ones(()), atol=0.02)
    assert float(power.max()) <= 1.0 + 1e-4


@pytest.mark.slow
def test_shipped_brain_maps_match_espirit():
    """The maps shipped for brain-real-8coil agree with a fresh full-size ESPIRiT."""
    ksp = np.load(data_path("brain_8coil_poisson_ksp.npy"))
    maps = espirit(ksp)
    shipped = torch.from_numpy(np.load(data_path("brain_8coil_espirit_maps.npy")))
    assert float((shipped - maps).norm() / shipped.norm()) < 1e-3
    power = (maps.abs() ** 2).sum(0)
    inside = _brain_support(torch.from_numpy(ksp))
    assert torch.allclose(power[inside], torch.ones(()), atol=0.02)


def test_espirit_batch_and_input_errors():
    ksp = torch.from_numpy(np.load(data_path("phantom32_cc8_espirit.npz"))["maps"][:3, :32, :32])
    k = fftc(ksp)
    two = espirit(torch.stack([k, 2 * k]), calib_width=12, kernel_width=4, max_iter=10)
    assert two.shape == (2, 3, 32, 32)
    with pytest.raises(InputError, match="calib_width"):
        espirit(k, calib_width=40)
    with pytest.raises(InputError, match="kspace"):
        espirit(k[0, 0])


def _phantom_cc8() -> tuple[torch.Tensor, torch.Tensor]:
    """The phantom compressed to 8 virtual coils with the shipped matrix, and the
    shipped ESPIRiT maps of it (checked against a fresh ESPIRiT in the slow test)."""
    with np.load(data_path("phantom32_cc8_espirit.npz")) as f:
        matrix, maps = torch.from_numpy(f["matrix"]), torch.from_numpy(f["maps"])
    return torch.einsum("vc,chw->vhw", matrix, _phantom()), maps


@pytest.mark.slow
def test_shipped_phantom_maps_match_espirit():
    full, maps = _phantom_cc8()
    _, matrix = coil_compress(_phantom(), 8)
    with np.load(data_path("phantom32_cc8_espirit.npz")) as f:
        assert torch.allclose(matrix, torch.from_numpy(f["matrix"]), atol=1e-5)
    fresh = espirit(full)
    assert float((fresh - maps).norm() / maps.norm()) < 1e-3


def test_sense_with_espirit_maps_removes_aliasing():
    """Phantom: ESPIRiT maps of the fully sampled data, 2x equispaced undersampling
    (every other line: pure half-FOV aliasing), CG-SENSE vs zero-filled."""
    full, maps = _phantom_cc8()
    truth = (maps.conj() * ifftc(full)).sum(0)
    support = (maps.abs() ** 2).sum(0) > 0.5
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[:, ::2] = True
    op = Sense(maps, mask)
    y = full * mask
    zero_filled = op.adjoint(y)
    recon = _cg(op.normal, op.adjoint(y), 30)

    def err(x):
        return float((x - truth)[support].norm() / truth[support].norm())

    assert err(zero_filled) > 0.3  # half-FOV aliasing
    assert err(recon) < 0.1 * err(zero_filled)


def test_birdcage_normalised_2d_3d():
    for shape in [(32, 48), (4, 16, 16)]:
        maps = birdcage(5, shape, dtype=torch.complex128)
        assert maps.shape == (5, *shape)
        assert torch.allclose((maps.abs() ** 2).sum(0), torch.ones(shape, dtype=torch.float64))
        # distinct, smooth coils: neighbouring pixels differ little
        assert float((maps[..., 1:] - maps[..., :-1]).abs().max()) < 0.5
        assert float((maps[0] - maps[1]).abs().mean()) > 0.05
    with pytest.raises(InputError, match="shape"):
        birdcage(4, (8,))
    with pytest.raises(InputError, match="n_coils"):
        birdcage(0, (8, 8))


def test_coil_compress_keeps_energy():
    k = _phantom()
    full, m32 = coil_compress(k, 32)
    assert torch.allclose(full.norm(), k.norm(), rtol=1e-3)
    assert torch.allclose(m32 @ m32.conj().T, torch.eye(32, dtype=m32.dtype), atol=1e-5)
    kc, m8 = coil_compress(k, 8)
    assert kc.shape == (8, 64, 64) and m8.shape == (8, 32)
    energy = float(kc.norm() ** 2 / k.norm() ** 2)
    assert 0.95 < energy <= 1.0 + 1e-6
    # ordered by energy
    e = (kc.abs() ** 2).sum((-2, -1))
    assert bool((e[:-1] >= e[1:] * (1 - 1e-5)).all())
    with pytest.raises(InputError, match="n_virtual"):
        coil_compress(k, 33)


def test_prewhiten_whitens():
    g = torch.Generator().manual_seed(0)
    c, n = 4, 20000
    mix = torch.randn(c, c, dtype=torch.complex128, generator=g) + 2 * torch.eye(c)
    white = torch.randn(c, n, dtype=torch.complex128, generator=g)
    noise = mix @ white
    out = prewhiten((mix @ torch.randn(c, 3 * n, dtype=torch.complex128, generator=g))
                    .reshape(c, 3, n).movedim(1, 0).unsqueeze(-1).squeeze(-1), noise)
    flat = out.movedim(1, 0).reshape(c, -1)
    cov = flat @ flat.conj().T / flat.shape[1]
    assert torch.allclose(cov, torch.eye(c, dtype=cov.dtype), atol=0.05)
    w = whitening_matrix(noise)
    assert torch.allclose(torch.tril(w), w)
    with pytest.raises(InputError, match="noise"):
        prewhiten(torch.zeros(4, 8, 8, dtype=torch.complex64), torch.zeros(3, 100))


@pytest.mark.parametrize("weights", ["ramp", pytest.param("pipe-menon", marks=pytest.mark.slow)])
def test_lowres_maps_radial(weights):
    from convexrecon.operators.nufft import NUFFT
    from convexrecon.sampling import radial

    n = 32
    truth = birdcage(4, (n, n), dtype=torch.complex64)
    yy, xx = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    img = ((yy ** 2 + xx ** 2) < (0.4 * n) ** 2).to(torch.complex64)
    traj = radial(48, 2 * n, mode="golden")
    y = NUFFT(traj, (n, n), toeplitz=False)(truth * img)
    dcf = torch.linalg.vector_norm(traj, dim=0).clamp_min(0.01) if weights == "ramp" else None
    maps = lowres_maps(y, traj, (n, n), calib_width=12, dcf=dcf)
    assert maps.shape == (4, n, n)
    inner = ((yy ** 2 + xx ** 2) < (0.3 * n) ** 2)
    power = (maps.abs() ** 2).sum(0)
    assert torch.allclose(power[inner], torch.ones(()), atol=1e-4)
    # same maps up to one common phase per pixel: compare the coil ratios
    ratio = (maps[1:] * maps[:1].conj())[:, inner]
    ref = (truth[1:] * truth[:1].conj())[:, inner]
    assert float((ratio - ref).norm() / ref.norm()) < 0.1


def test_readout_oversampling_and_crops():
    g = torch.Generator().manual_seed(1)
    img = torch.zeros(2, 16, 8, dtype=torch.complex64)
    img[:, 4:12] = torch.randn(2, 8, 8, dtype=torch.complex64, generator=g)
    k = fftc(img)
    out = remove_readout_oversampling(k, axis=-2, factor=2)
    assert out.shape == (2, 8, 8)
    assert torch.allclose(ifftc(out), img[:, 4:12], atol=1e-5)
    with pytest.raises(InputError, match="divisible"):
        remove_readout_oversampling(k[:, :15], factor=2)
    x = np.arange(7 * 6).reshape(7, 6)
    c = center_crop(x, (3, 4))
    np.testing.assert_array_equal(c, x[2:5, 1:5])
    t = torch.arange(36.0).reshape(6, 6)
    assert torch.equal(center_crop(center_pad(t, (9, 10)), (6, 6)), t)
    # centre of a centred FFT stays the centre
    assert center_crop(torch.arange(8), (4,))[4 // 2] == 8 // 2
    with pytest.raises(InputError, match="shape"):
        center_crop(t, (7, 2))
    assert math.isclose(float(out.norm()), float(img[:, 4:12].norm()), rel_tol=1e-5)
