"""Sampling patterns: accelerations, centre fractions, seeds, radial angles and the
trajectory unit converters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.sampling import (
    acceleration, equispaced_1d, grid_to_radians, poisson_disc, radial, radians_to_grid,
    random_1d, stack_of_stars,
)


@pytest.mark.parametrize("shape,calib", [((128, 128), (24, 24)), ((96, 80), (16, 16))])
@pytest.mark.parametrize("accel", [2, 4, 6, 8])
@pytest.mark.parametrize("seed", [0, 3])
def test_poisson_acceleration_within_5_percent(shape, calib, accel, seed):
    m = poisson_disc(shape, accel, calib=calib, seed=seed)
    assert m.dtype == torch.bool and m.shape == shape
    assert abs(acceleration(m) - accel) / accel < 0.05
    h, w = shape
    assert bool(m[h // 2 - calib[0] // 2:h // 2 + calib[0] // 2,
                  w // 2 - calib[1] // 2:w // 2 + calib[1] // 2].all())


def test_poisson_variable_density_and_seeds():
    a = poisson_disc((128, 128), 6, seed=1)
    assert torch.equal(a, poisson_disc((128, 128), 6, seed=1))
    assert not torch.equal(a, poisson_disc((128, 128), 6, seed=2))
    assert torch.equal(a, poisson_disc((128, 128), 6, seed=np.random.default_rng(1)))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(random_1d((8, 64), 4, seed=g1), random_1d((8, 64), 4, seed=g2))
    centre = a[40:88, 40:88].float().mean()
    edge = torch.cat([a[:16].flatten(), a[-16:].flatten()]).float().mean()
    assert centre > 2 * edge


def test_poisson_does_not_touch_global_rng():
    torch.manual_seed(5)
    np.random.seed(5)
    t0, n0 = torch.get_rng_state(), np.random.get_state()[1].copy()
    poisson_disc((64, 64), 4, calib=(8, 8), seed=0)
    random_1d((64, 64), 4, seed=0)
    assert torch.equal(t0, torch.get_rng_state())
    assert np.array_equal(n0, np.random.get_state()[1])


def test_random_1d():
    shape, accel, cf = (320, 368), 4, 0.08
    masks = [random_1d(shape, accel, center_fraction=cf, seed=s) for s in range(20)]
    m = masks[0]
    assert m.dtype == torch.bool and m.shape == shape
    assert bool((m == m[:1]).all())  # constant along rows (axis -2)
    n_low = round(368 * cf)
    start = (368 - n_low + 1) // 2
    assert bool(m[0, start:start + n_low].all())
    mean_accel = 368 / np.mean([float(mm[0].sum()) for mm in masks])
    assert abs(mean_accel - accel) / accel < 0.05
    assert torch.equal(m, random_1d(shape, accel, center_fraction=cf, seed=0))
    assert not torch.equal(m, masks[1])


def test_random_1d_center_fraction_exact_when_nothing_else():
    m = random_1d((4, 100), 10, center_fraction=0.1, seed=0)
    assert int(m[0].sum()) == 10 and bool(m[0, 45:55].all())


@pytest.mark.parametrize("accel", [4, 8])
def test_equispaced_1d(accel):
    m = equispaced_1d((320, 368), accel, center_fraction=0.08)
    assert bool((m == m[:1]).all())
    assert abs(acceleration(m) - accel) / accel < 0.05
    n_low = round(368 * 0.08)
    start = (368 - n_low + 1) // 2
    assert bool(m[0, start:start + n_low].all())
    outside = torch.cat([m[0, :start], m[0, start + n_low:]]).nonzero().flatten()
    gaps = torch.diff(torch.cat([m[0, :start].nonzero().flatten()]))
    assert outside.numel() > 0 and int(gaps.max() - gaps.min()) <= 1
    assert torch.equal(m, equispaced_1d((320, 368), accel))


def test_acceleration_and_bad_input():
    m = torch.zeros(4, 6, dtype=torch.bool)
    m[:, ::2] = True
    assert acceleration(m) == 2.0
    with pytest.raises(InputError, match="mask"):
        acceleration(torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(InputError, match="accel"):
        poisson_disc((32, 32), 4, calib=(24, 24))
    with pytest.raises(InputError, match="accel"):
        random_1d((32, 32), 0.5)
    with pytest.raises(InputError, match="shape"):
        random_1d((32,), 4)
    with pytest.raises(InputError, match="seed"):
        random_1d((32, 32), 4, seed=-1)


def _angles(traj, n_readout):
    spokes = traj.double().reshape(2, -1, n_readout)
    last = spokes[:, :, -1]  # r = pi - 2 pi / n_readout > 0
    return torch.remainder(torch.atan2(last[1], last[0]), math.pi)


@pytest.mark.parametrize("mode", ["golden", "equiangular", "every_nth"])
def test_radial_angles_and_range(mode):
    traj = radial(55, 32, mode=mode, every=3 if mode == "every_nth" else 1)
    assert traj.shape == (2, 55 * 32) and traj.dtype == torch.float32
    pi32 = torch.tensor(math.pi, dtype=torch.float32)
    assert bool((traj >= -pi32).all()) and bool((traj < pi32).all())
    theta = _angles(traj, 32)
    assert bool((theta >= 0).all()) and bool((theta < math.pi).all())
    spoke0 = traj[:, :32].double()
    r = torch.linalg.vector_norm(spoke0, dim=0)
    assert float(r[16]) == 0.0  # centre sampled
    assert float(r.max()) == pytest.approx(math.pi, rel=1e-6)  # full diameter


def test_golden_angle_increment():
    theta = _angles(radial(40, 16), 16)
    inc = torch.remainder(torch.diff(theta), math.pi)
    assert torch.allclose(inc, torch.full_like(inc, math.radians(111.25)), atol=1e-5)
    eq = _angles(radial(8, 16, mode="equiangular"), 16)
    assert torch.allclose(eq, torch.arange(8, dtype=torch.float64) * math.pi / 8, atol=1e-5)


def test_every_nth_is_subset_of_golden():
    full = radial(60, 16).reshape(2, 60, 16)
    sub = radial(20, 16, mode="every_nth", every=3).reshape(2, 20, 16)
    assert torch.equal(sub, full[:, ::3])
    with pytest.raises(InputError, match="every"):
        radial(10, 16, mode="golden", every=2)
    with pytest.raises(InputError, match="mode"):
        radial(10, 16, mode="spiral")


def test_stack_of_stars_shares_in_plane_trajectory():
    assert torch.equal(stack_of_stars(13, 32, 8), radial(13, 32))
    with pytest.raises(InputError, match="nz"):
        stack_of_stars(13, 32, 0)


def test_converters_hand_example():
    coord = torch.tensor([[2.0, -4.0], [1.0, 0.0]])  # ours: (ndim=2, K=2), grid units
    rad = grid_to_radians(coord, (8, 16))
    assert torch.allclose(rad, torch.tensor([[math.pi / 2, -math.pi], [math.pi / 8, 0.0]]))
    sig = torch.tensor([[2.0, 1.0], [-4.0, 0.0]])  # sigpy: (K, ndim)
    assert torch.allclose(grid_to_radians(sig, (8, 16), layout="sigpy"), rad)
    bart = torch.tensor([[2.0, -4.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.complex64)
    assert torch.allclose(grid_to_radians(bart, (8, 16), layout="bart"), rad)


@pytest.mark.parametrize("layout", ["ours", "sigpy", "bart"])
@pytest.mark.parametrize("im_size", [(8, 16), (6, 8, 10)])
def test_converters_round_trip(layout, im_size):
    g = torch.Generator().manual_seed(0)
    traj = (torch.rand(len(im_size), 50, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    grid = radians_to_grid(traj, im_size, layout=layout)
    shape = {"ours": (len(im_size), 50), "sigpy": (50, len(im_size)), "bart": (3, 50)}[layout]
    assert grid.shape == shape
    assert torch.allclose(grid_to_radians(grid, im_size, layout=layout), traj, atol=1e-12)


def test_converters_keep_sigpy_leading_dims_flat_and_reject_bad():
    coord = torch.zeros(4, 5, 2)  # (spokes, readout, ndim)
    assert grid_to_radians(coord, (8, 8), layout="sigpy").shape == (2, 20)
    with pytest.raises(InputError, match="coord"):
        grid_to_radians(torch.zeros(3, 5), (8, 8), layout="ours")
    with pytest.raises(InputError, match="coord"):
        grid_to_radians(torch.ones(3, 5), (8, 8), layout="bart")
    with pytest.raises(InputError, match="layout"):
        grid_to_radians(torch.zeros(2, 5), (8, 8), layout="matlab")
