"""The named problems: every one loads, with the documented shapes and scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.problems import describe, load, names
from convexrecon.problems import _data
from convexrecon.problems.registry import lambda_max

CONTRACT_NAMES = ["brain-sim-poisson-4x", "brain-sim-cartesian-1d-4x", "brain-real-8coil",
                  "phantom32-cartesian-1d-4x", "radial-golden", "stack-of-stars"]
_CACHE: dict[str, object] = {}


def _get(name):
    if name not in _CACHE:
        _CACHE[name] = load(name)
    return _CACHE[name]


def test_names_include_the_contract():
    assert set(CONTRACT_NAMES) <= set(names())
    assert {"tiny-cartesian", "tiny-radial", "radial-real-traj"} <= set(names())
    assert all(describe(n).startswith(n) for n in names())


_SLOW = {"radial-golden", "radial-real-traj"}  # NUFFTs at 128x128: seconds each on a CPU


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n
    for n in sorted(set(CONTRACT_NAMES) | {"tiny-cartesian", "tiny-radial", "radial-real-traj"})
])
def test_problem_loads_scaled(name):
    p = _get(name)
    op = p.operator
    assert p.name == name and p.split == "test" and len(p.slices) == 1
    assert p.kspace.shape == (1, *op.oshape) and p.kspace.dtype == torch.complex64
    assert bool(torch.isfinite(p.kspace).all())
    assert isinstance(p.reference, str) and p.reference and p.description
    assert p.op_scale > 0 and p.data_scale > 0
    # the operator scale: lambda_max(A.N) = 1
    lam = lambda_max(op.N, op.adjoint(p.kspace))
    assert math.isclose(lam, 1.0, rel_tol=5e-3), lam
    if p.mask is not None:
        assert p.mask.dtype == torch.bool and p.traj is None
        assert bool((p.kspace * ~p.mask.unsqueeze(1) == 0).all())  # nothing off the mask
    else:
        assert p.traj is not None and p.traj.shape[0] == 2
        pi32 = float(torch.tensor(math.pi, dtype=torch.float32))
        assert float(p.traj.min()) >= -pi32 and float(p.traj.max()) < pi32
    if p.ground_truth is None:
        assert name == "brain-real-8coil"
        return
    assert p.ground_truth.shape == (1, *op.ishape)
    # ground truth on the data scale: peaks at about 1
    assert 0.3 < float(torch.quantile(p.ground_truth.abs().reshape(-1), 0.99)) < 2.0
    res = float((op(p.ground_truth) - p.kspace).norm())
    if p.noise_std is not None:  # simulated: the residual is the noise
        n_meas = int(p.mask.expand(p.kspace.shape[0], *op.ishape).sum()) * op.oshape[0] \
            if p.mask is not None else p.kspace.numel()
        expected = p.noise_std * math.sqrt(n_meas)
        assert math.isclose(res, expected, rel_tol=0.1), (res, expected)
    else:  # real phantom: residual = data outside the SENSE model (noise, background)
        assert res < 0.05 * float(p.kspace.norm())


def test_brain_real_details():
    p = _get("brain-real-8coil")
    assert p.kspace.shape == (1, 8, 230, 180) and p.maps.shape == (8, 230, 180)
    assert torch.equal(p.mask, (p.kspace != 0).any(dim=1))
    assert 6 < p.mask.numel() / int(p.mask.sum()) < 10
    pad = p.meta["pad_shape"]
    assert all(s % 16 == 0 and s >= t for s, t in zip(pad, (230, 180)))
    power = (p.maps.abs() ** 2).sum(0)
    assert float(power.max()) <= 1 + 1e-4


def test_phantom_details():
    p = _get("phantom32-cartesian-1d-4x")
    assert p.maps.shape == (8, 64, 64) and p.meta["coil_compression"].shape == (8, 32)
    cols = p.mask[0, 0]
    assert bool((p.mask[0] == cols).all())  # 1-D: constant along the readout
    assert bool(cols[32 - 4:32 + 4].all())  # centre fraction 0.125
    assert 3.0 < cols.numel() / int(cols.sum()) < 5.0


def test_splits_disjoint_and_batches():
    train, test = set(_data.mni_split("train")), set(_data.mni_split("test"))
    assert not train & test and not (train | test) & set(_data.MNI_GUARD)
    tr = load("tiny-cartesian", split="train", n_slices=len(train))
    te = load("tiny-cartesian", split="test", n_slices=len(test), seed=3)
    assert set(tr.slices) == train and set(te.slices) == test
    assert te.kspace.shape == (len(test), 3, 16, 16) and te.mask.shape == (len(test), 16, 16)
    assert not torch.equal(te.mask[0], te.mask[1])  # one mask per slice
    assert math.isclose(lambda_max(te.operator.N, te.operator.adjoint(te.kspace)), 1.0,
                        rel_tol=5e-3)
    with pytest.raises(InputError, match="n_slices"):
        load("tiny-cartesian", split="test", n_slices=len(test) + 1)
    with pytest.raises(InputError, match="split"):
        load("brain-real-8coil", split="train")


def test_seeds_reproducible():
    a = load("tiny-cartesian", seed=5)
    b = load("tiny-cartesian", seed=5)
    c = load("tiny-cartesian", seed=6)
    assert torch.equal(a.kspace, b.kspace) and torch.equal(a.mask, b.mask)
    assert torch.equal(a.ground_truth, b.ground_truth)
    assert not torch.equal(a.kspace, c.kspace)
    r1, r2 = load("tiny-radial", seed=1), load("tiny-radial", seed=1)
    assert torch.equal(r1.kspace, r2.kspace)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_complex128_and_device(device):
    """complex128 on ``device``: the same problem as complex64 (to float32 rounding),
    an operator that computes in double precision there, and data that is the
    operator applied to the ground truth plus the stated noise."""
    from convexrecon.operators import dot_test

    p = load("tiny-cartesian", dtype=torch.complex128, device=device)
    q = load("tiny-cartesian")
    for t in (p.kspace, p.ground_truth, p.maps):
        assert t.dtype == torch.complex128 and t.device.type == device
    assert p.operator.dtype == torch.complex128
    assert dot_test(p.operator) < 1e-12  # double precision (complex64 gives ~1e-7)
    for a, b in ((p.kspace, q.kspace), (p.ground_truth, q.ground_truth), (p.maps, q.maps)):
        assert float((a.cpu() - b.to(a.dtype)).norm() / b.norm()) < 1e-6
    res = p.operator(p.ground_truth) - p.kspace
    assert res.device.type == device
    n = int(p.mask.sum()) * p.kspace.shape[-3]  # measured complex samples
    expected = p.noise_std * math.sqrt(n)
    assert abs(float(res.norm()) - expected) < 0.15 * expected
    # the noise is independent of the signal: |corr| ~ 1/sqrt(n), 4 sigma allowed
    signal = p.operator(p.ground_truth)
    corr = abs(complex(torch.vdot(res.flatten(), signal.flatten()))) / float(res.norm() * signal.norm())
    assert corr < 4 / math.sqrt(n)


def test_bad_arguments():
    with pytest.raises(InputError) as err:
        load("no-such-problem")
    msg = str(err.value)
    assert all(n in msg for n in CONTRACT_NAMES)
    with pytest.raises(InputError, match="dtype"):
        load("tiny-cartesian", dtype=torch.float32)
    with pytest.raises(InputError, match="seed"):
        load("tiny-cartesian", seed=-1)
    with pytest.raises(TypeError):
        load("tiny-cartesian", slices=2)  # keyword-only options, unknown ones rejected


def test_data_files_and_licences():
    files = {p.name for p in _data.DATA_DIR.iterdir()}
    assert {"LICENSE.dipy", "LICENSE.mni", "LICENSE.pulseq", "LICENSE.sigpy-mri-tutorial",
            "README.md", "SHA256SUMS"} <= files
    total = sum(p.stat().st_size for p in _data.DATA_DIR.iterdir())
    assert total < 15e6
    import hashlib

    for line in (_data.DATA_DIR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((_data.DATA_DIR / name).read_bytes()).hexdigest() == digest, name
