"""The one-line reconstructions on tiny simulated problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convexrecon import metrics, recon, sampling
from convexrecon.coils import birdcage
from convexrecon.errors import InputError
from convexrecon.operators.fft import fftc

N = 48


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one thread avoids OpenMP stalls on a busy shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _image(n: int = N, shift: int = 0) -> torch.Tensor:
    """A smooth-phase piecewise-constant phantom (ellipses)."""
    y, x = np.mgrid[:n, :n] / n - 0.5
    img = 1.0 * ((x / 0.42) ** 2 + (y / 0.46) ** 2 < 1)
    img -= 0.4 * (((x - 0.08) / 0.18) ** 2 + ((y + shift / n) / 0.28) ** 2 < 1)
    img += 0.3 * (((x + 0.15) / 0.08) ** 2 + ((y - 0.1) / 0.12) ** 2 < 1)
    img += 0.2 * (((x + 0.05) / 0.05) ** 2 + ((y + 0.2) / 0.05) ** 2 < 1)
    phase = np.exp(1j * (0.8 * x + 0.5 * y))
    return torch.tensor(img * phase, dtype=torch.complex64)


def _maps(n: int = N, coils: int = 6) -> torch.Tensor:
    m = birdcage(coils, (n, n))
    return m / metrics.rss(m).clamp_min(1e-6)


def _kspace(img: torch.Tensor, maps: torch.Tensor, sigma: float = 0.003, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    k = fftc(maps * img.unsqueeze(-3))
    return k + sigma * torch.randn(k.shape, generator=g, dtype=k.dtype)


@pytest.fixture(scope="module")
def sim():
    img, maps = _image(), _maps()
    mask = sampling.poisson_disc((N, N), 4, calib=(12, 12), seed=0)
    return img, maps, mask, _kspace(img, maps) * mask


def test_zero_filled_cartesian_matches_adjoint(sim):
    img, maps, mask, ksp = sim
    zf = recon.zero_filled(ksp, maps, mask)
    expect = (maps.conj() * torch.fft.fftshift(torch.fft.ifft2(
        torch.fft.ifftshift(ksp, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))).sum(-3)
    torch.testing.assert_close(zf, expect, rtol=1e-5, atol=1e-6)
    rss = recon.zero_filled(ksp)
    assert not rss.is_complex() and rss.shape == (N, N)


def test_l1_wavelet_beats_zero_filled(sim):
    img, maps, mask, ksp = sim
    zf = recon.zero_filled(ksp, maps, mask)
    x = recon.l1_wavelet(ksp, maps, mask, lam=0.005, max_iter=60)
    assert x.shape == (N, N) and x.is_complex()
    assert metrics.psnr(x, img) > metrics.psnr(zf, img) + 3.0


def test_sense_beats_zero_filled():
    img, maps = _image(), _maps()
    mask = sampling.equispaced_1d((N, N), 2, center_fraction=0.1)
    ksp = _kspace(img, maps, sigma=0.001) * mask
    zf = recon.zero_filled(ksp, maps, mask)
    x = recon.sense(ksp, maps, mask, mu=1e-3, max_iter=30)
    assert metrics.psnr(x, img) > metrics.psnr(zf, img) + 5.0


def test_tv_beats_zero_filled(sim):
    img, maps, mask, ksp = sim
    zf = recon.zero_filled(ksp, maps, mask)
    x = recon.tv(ksp, maps, mask, lam=0.005, max_iter=80)
    assert metrics.psnr(x, img) > metrics.psnr(zf, img) + 3.0


def test_output_at_input_scale(sim):
    img, maps, mask, ksp = sim
    a = recon.l1_wavelet(ksp, maps, mask, lam=0.005, max_iter=20)
    b = recon.l1_wavelet(1000.0 * ksp, maps, mask, lam=0.005, max_iter=20)
    torch.testing.assert_close(b, 1000.0 * a, rtol=1e-3, atol=1e-2)


def test_padded_grid_for_odd_sizes():
    h, w = 46, 36  # not divisible by 2**levels: padded grid, crop in the operator
    img = _image(48)[1:47, 6:42]
    maps = birdcage(4, (h, w))
    mask = sampling.poisson_disc((h, w), 3, calib=(10, 10), seed=1)
    ksp = _kspace(img, maps, sigma=0.002) * mask
    x = recon.l1_wavelet(ksp, maps, mask, lam=0.005, max_iter=40, levels=3)
    assert x.shape == (h, w)
    assert metrics.psnr(x, img) > metrics.psnr(recon.zero_filled(ksp, maps, mask), img)


def test_batch_equals_per_slice_and_numpy_input():
    imgs = torch.stack([_image(32), _image(32, shift=3)])
    maps = _maps(32, 4)
    masks = torch.stack([sampling.poisson_disc((32, 32), 3, calib=(8, 8), seed=s) for s in (0, 1)])
    ksp = _kspace(imgs, maps) * masks.unsqueeze(-3)
    # lam 0.02, 30 iterations: the slices restart their momentum at different
    # iterations (a global restart test differs here by ~1e-3); with tol (on the fixed
    # transform: cycle-spun runs do not reach it) the slices stop at different checks;
    # cycle spinning (the default) draws the same seeded shifts for every slice
    for opts in (dict(lam=0.02, max_iter=30), dict(lam=0.02, max_iter=30, cycle_spin=False),
                 dict(lam=0.02, max_iter=200, tol=1e-3, cycle_spin=False, wavelet="db4")):
        both = recon.l1_wavelet(ksp, maps, masks, **opts)
        assert both.shape == (2, 32, 32)
        stops = []
        for i in range(2):
            seen: list[int] = []
            one = recon.l1_wavelet(ksp[i].numpy(), maps.numpy(), masks[i].numpy(),
                                   callback=lambda p: seen.append(p.it), **opts)
            stops.append(seen[-1])
            # every slice is its own FISTA system (step, momentum, restarts, stopping):
            # the batch gives the per-slice results up to float32 rounding
            assert float((one - both[i]).norm() / one.norm()) < 1e-5
        if "tol" in opts:
            assert stops[0] != stops[1] and max(stops) < opts["max_iter"]
    # CG-SENSE solves every slice as its own system, stopping at its own tolerance:
    # the batch gives the per-slice results up to float32 rounding
    s_both = recon.sense(ksp, maps, masks, mu=1e-2, max_iter=100, tol=1e-4)
    for i in range(2):
        s_one = recon.sense(ksp[i].numpy(), maps.numpy(), masks[i].numpy(), mu=1e-2,
                            max_iter=100, tol=1e-4)
        assert float((s_one - s_both[i]).norm() / s_one.norm()) < 1e-5


def test_callback_progress(sim):
    img, maps, mask, ksp = sim
    seen = []
    recon.l1_wavelet(ksp, maps, mask, lam=0.005, max_iter=5,
                     callback=lambda p: seen.append((p.it, p.max_iter, p.objective)))
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5]
    assert all(s[1] == 5 for s in seen)
    assert seen[-1][2] < seen[0][2]


def test_choose_lambda_in_grid_and_reproducible(sim):
    img, maps, mask, ksp = sim
    grid = (1e-3, 1e-2, 1e-1)
    a = recon.choose_lambda(ksp, maps, mask, grid=grid, max_iter=15, seed=3)
    b = recon.choose_lambda(ksp, maps, mask, grid=grid, max_iter=15, seed=3)
    assert a.lam in grid and a == b
    assert len(a.scores) == 3 and a.n_heldout > 0
    assert a.scores[grid.index(a.lam)] == min(a.scores)


def test_l1_wavelet_auto(sim, monkeypatch):
    img, maps, mask, ksp = sim
    from convexrecon.recon import lam as lam_mod

    monkeypatch.setitem(lam_mod.DEFAULT_GRIDS, "l1_wavelet", (1e-3, 1e-2))
    x = recon.l1_wavelet(ksp, maps, mask, lam="auto", max_iter=15)
    assert metrics.psnr(x, img) > metrics.psnr(recon.zero_filled(ksp, maps, mask), img)


def test_grappa_equispaced():
    img, maps = _image(), _maps(coils=8)
    full = _kspace(img, maps, sigma=0.0)
    cols = torch.zeros(N, dtype=torch.bool)
    cols[::3] = True  # regular R = 3 plus a fully sampled centre of 12 columns
    cols[N // 2 - 6:N // 2 + 6] = True
    ksp = full * cols
    ref = metrics.rss(full, kspace=True)
    g = recon.grappa(ksp)
    assert not g.is_complex() and g.shape == (N, N)
    zf = metrics.rss(ksp, kspace=True)
    assert metrics.nmse(g, ref) < 0.1 * metrics.nmse(zf, ref)
    filled = recon.grappa_kspace(ksp, recon.find_calibration(ksp))
    torch.testing.assert_close(filled[..., cols], ksp[..., cols])  # data kept
    assert recon.grappa(ksp, maps=maps).is_complex()


@pytest.mark.parametrize("axis", [-2, -1])
def test_partial_fourier(axis):
    img, maps = _image(), _maps(coils=4)
    full = _kspace(img, maps, sigma=0.0)
    ksp = full.clone()
    if axis == -2:
        ksp[..., : N * 3 // 8, :] = 0  # asymmetric echo: 5/8 of the readout
    else:
        ksp[..., N * 5 // 8:] = 0
    ref = metrics.rss(full, kspace=True)
    zf = metrics.nmse(metrics.rss(ksp, kspace=True), ref)
    assert metrics.nmse(recon.pocs(ksp, axis=axis), ref) < 0.3 * zf
    assert metrics.nmse(recon.homodyne(ksp, axis=axis), ref) < 0.5 * zf
    assert recon.pocs(ksp, axis=axis, maps=maps).is_complex()


def test_noncartesian_l1_and_gridding():
    n = 32
    img, maps = _image(n), _maps(n, 4)
    traj = sampling.radial(24, 2 * n)
    from convexrecon.operators.noncartesian import NonCartesianSense

    y = NonCartesianSense(maps, traj)(img)
    grid = recon.zero_filled(y, maps, traj)
    assert grid.shape == (n, n)
    x = recon.l1_wavelet(y, maps, traj, lam=0.002, max_iter=40)
    assert metrics.psnr(x, img) > metrics.psnr(grid, img)
    rss = recon.zero_filled(y, None, traj, im_size=(n, n))
    assert rss.shape == (n, n) and not rss.is_complex()


@pytest.mark.parametrize("call", [
    lambda k, m, s: recon.l1_wavelet(k[..., :-1], m, s),                        # shapes
    lambda k, m, s: recon.l1_wavelet(k, m[:3], s),                               # coils
    lambda k, m, s: recon.sense(torch.where(k.abs() > 0, k / 0, k), m, s),       # non-finite
    lambda k, m, s: recon.sense(k, m, torch.zeros_like(s)),                      # empty mask
    lambda k, m, s: recon.tv(k, m, s[:-2]),                                      # mask shape
    lambda k, m, s: recon.l1_wavelet(k, m, s, lam=-1.0),
    lambda k, m, s: recon.l1_wavelet(k, m, s, lam="best"),
    lambda k, m, s: recon.l1_wavelet(k, m, s, max_iter=0),
    lambda k, m, s: recon.zero_filled(k[0, 0], m, s),                           # too few dims
    lambda k, m, s: recon.zero_filled(k[:, 0], None, torch.zeros(2, N)),         # traj w/o size
    lambda k, m, s: recon.choose_lambda(k, m, s, holdout=0.7),
    lambda k, m, s: recon.choose_lambda(k, m, s, method="magic"),
    lambda k, m, s: recon.grappa(k, kernel=(4, 2)),
    lambda k, m, s: recon.grappa(k, mask=s),                                     # 2-D mask
    lambda k, m, s: recon.pocs(k, axis=0),
    lambda k, m, s: recon.homodyne(k * (torch.arange(N) % 2 == 0)[:, None]),     # gaps
])
def test_bad_input(sim, call):
    img, maps, mask, ksp = sim
    with pytest.raises(InputError):
        call(ksp, maps, mask)


@pytest.mark.slow  # sigpy's ESPIRiT compiles numba kernels on first use (~15 s)
def test_default_espirit_maps(sim):
    img, maps, mask, ksp = sim
    x = recon.l1_wavelet(ksp, None, mask, lam=0.005, max_iter=40)
    zf = metrics.rss(ksp, kspace=True)
    # maps are defined up to a phase: compare magnitudes
    assert metrics.psnr(x.abs(), img.abs()) > metrics.psnr(zf, img.abs()) + 1.5


def test_cycle_spin_option(sim):
    img, maps, mask, ksp = sim
    spun = recon.l1_wavelet(ksp, maps, mask, lam=0.005, max_iter=20)
    fixed = recon.l1_wavelet(ksp, maps, mask, lam=0.005, max_iter=20, cycle_spin=False)
    assert float((spun - fixed).norm() / fixed.norm()) > 1e-3  # the default shifts the grid
    again = recon.l1_wavelet(ksp, maps, mask, lam=0.005, max_iter=20)
    assert torch.equal(spun, again)  # seeded
    with pytest.raises(InputError, match="cycle_spin"):
        recon.l1_wavelet(ksp, maps, mask, cycle_spin="yes")
