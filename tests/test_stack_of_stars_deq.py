"""Stack-of-stars with fully sampled kz separates into 2-D radial partitions: the
per-partition problems give the 3-D operator's A^H y, and a 2-D model reconstructs
the volume partition by partition."""

from __future__ import annotations

import pytest
import torch

from convexrecon.data import SliceDataset
from convexrecon.errors import InputError
from convexrecon.implicit import build_deq
from convexrecon.implicit.stack_of_stars import (partition_kspace, partition_operator, reconstruct_partitions,
                                                 simulate_stack_of_stars)
from convexrecon.nets.unrolled import build_modl
from convexrecon.operators import StackOfStars
from convexrecon.operators.noncartesian import NonCartesianSense
from convexrecon.sampling import radial


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _problem(seed: int = 0, *, c: int = 3, z: int = 4, n: int = 12):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(c, z, n, n, dtype=torch.complex128, generator=g)  # maps vary along z
    traj = radial(6, 2 * n, mode="equiangular")
    y = torch.randn(c, z, traj.shape[1], dtype=torch.complex128, generator=g)
    return maps, traj, y


def test_partition_problems_give_the_3d_adjoint_and_normal():
    maps, traj, y = _problem()
    op3 = StackOfStars(maps, traj)
    op2 = partition_operator(maps, traj)
    yz = partition_kspace(y)
    assert yz.shape == (4, 3, y.shape[-1])
    assert _rel(op2.adjoint(yz), op3.adjoint(y)) < 1e-10
    # one partition alone: its own 2-D NonCartesianSense
    one = NonCartesianSense(maps[:, 2], traj)
    assert _rel(one.adjoint(yz[2]), op3.adjoint(y)[2]) < 1e-10
    # A^H A is block-diagonal in z: the 3-D normal equals the per-partition normals
    x = torch.randn(4, 12, 12, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    assert _rel(op2.N(x), op3.N(x)) < 1e-8


def _tiny_volume():
    ds = SliceDataset(split="test", size=16, coils=3, trajectory="equiangular", noise_rel=0.05)
    return simulate_stack_of_stars(ds, start=5, partitions=3, seed=0)


@pytest.mark.parametrize("kind", ["modl", "deq"])
def test_reconstruct_partitions_equals_one_partition_at_a_time(kind):
    vol = _tiny_volume()
    torch.manual_seed(0)
    den = {"features": 4, "depth": 2, "skip": 0.8}
    if kind == "modl":
        model = build_modl(iterations=2, denoiser_options=den, cg_iter=20, cg_tol=1e-8)
    else:
        model = build_deq(denoiser="cnn", denoiser_options=den, dc="prox-grad", solver="anderson",
                          backward="jfb", max_iter=100, tol=1e-6)
    x = reconstruct_partitions(model, vol.kspace, vol.scaled_maps(), vol.traj, batch_size=2)
    assert x.shape == vol.target.shape
    yz = partition_kspace(vol.kspace)
    model.eval()
    with torch.no_grad():
        for z in range(x.shape[0]):
            op = NonCartesianSense(vol.scaled_maps()[:, z][None], vol.traj)
            xz = model(yz[z][None], op)[0]
            assert _rel(x[z], xz) < 1e-4


def test_simulated_volume_is_consistent_with_its_operator():
    vol = _tiny_volume()
    assert vol.kspace.shape[:2] == (3, 3) and vol.target.shape == (3, 16, 16)
    assert vol.labels == ["mni:z=89", "mni:z=90", "mni:z=91"]
    # the data are the operator's image of the target plus ~5% noise
    r = _rel(vol.operator()(vol.target), vol.kspace)
    assert 0.01 < r < 0.2


def test_bad_input():
    maps, traj, y = _problem()
    model = build_modl(iterations=1, denoiser_options={"features": 4, "depth": 2})
    with pytest.raises(InputError, match="maps"):
        reconstruct_partitions(model, y, maps[:2], traj)
    with pytest.raises(InputError, match="batch_size"):
        reconstruct_partitions(model, y, maps, traj, batch_size=0)
    ds = SliceDataset(split="test", size=16, coils=3)
    with pytest.raises(InputError, match="radial"):
        simulate_stack_of_stars(ds, start=0, partitions=2)
