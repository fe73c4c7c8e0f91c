"""convexrecon.data: splits, simulation, determinism, masks, batches, fastMRI folders."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from convexrecon.data import (BRAIN_Z, GUARD, PROBLEM_TEST_Z, SPLITS, Batch, FastMRIFolder,
                              MaskSpec, PerSample, SliceDataset, collate, from_problem,
                              mni_slice, mni_volume)
from convexrecon.data import transforms as T
from convexrecon.errors import InputError
from convexrecon.operators import NonCartesianSense, Sense, dot_test, power_method
from convexrecon.sampling import acceleration

SIZE = 32


def _ds(**kw) -> SliceDataset:
    kw.setdefault("split", "train")
    kw.setdefault("size", SIZE)
    kw.setdefault("coils", 4)
    return SliceDataset(**kw)


# -- splits ----------------------------------------------------------------------------
def test_splits_disjoint_with_guard_gaps():
    names = list(SPLITS)
    assert set(names) == {"train", "val", "test"}
    for i, a in enumerate(names):
        assert len(set(SPLITS[a])) == len(SPLITS[a])
        assert set(SPLITS[a]) <= set(BRAIN_Z)
        for b in names[i + 1:]:
            gap = min(abs(za - zb) for za in SPLITS[a] for zb in SPLITS[b])
            assert gap > GUARD >= 2, (a, b, gap)
    # every brain slice is offered, apart from the guard slices
    used = set().union(*map(set, SPLITS.values()))
    guards = set(BRAIN_Z) - used
    assert len(guards) <= 3 * GUARD


def test_test_slab_contains_the_problems_test_slices():
    # read the z of the problems' test slices from the problems' own data
    from convexrecon.problems import _data as D

    _, z = D.mni_slices(D.mni_split("test"))
    assert set(int(v) for v in z) == set(PROBLEM_TEST_Z)
    assert set(PROBLEM_TEST_Z) <= set(SPLITS["test"])
    _, ztrain = D.mni_slices(D.mni_split("train"))
    assert not set(int(v) for v in ztrain) & set(SPLITS["test"])


def test_bundled_volume_matches_the_axial24_slices_and_brain_range():
    from convexrecon.problems import _data as D

    vol = mni_volume()
    assert vol.shape == (197, 233, 189) and vol.dtype == np.uint8
    sl, z = D.mni_slices(tuple(range(24)))
    for k in (0, 11, 23):
        np.testing.assert_array_equal(mni_slice(int(z[k])), sl[k])
    cover = np.array([(vol[:, :, k] > 0.1 * vol.max()).mean() for k in range(vol.shape[2])])
    assert list(np.flatnonzero(cover >= 0.01)) == list(BRAIN_Z)


def test_test_split_images_equal_the_problems_images():
    from convexrecon.problems import load

    p = load("tiny-cartesian", split="test", n_slices=1)
    ds = from_problem("tiny-cartesian", split="test")
    i = SPLITS["test"].index(94)
    assert ds.source.label(i) == "mni:z=94"
    gt = p.ground_truth[0].abs().numpy()
    img = ds.image(i)
    np.testing.assert_allclose(img / img.max(), gt / gt.max(), atol=1e-5)
    # same scaling rule: both targets peak at about 1
    assert 0.5 < float(ds[i].target.abs().max()) < 2.0


# -- simulation and scaling -----------------------------------------------------------
@pytest.mark.parametrize("kind", ["poisson", "random_1d", "equispaced"])
def test_cartesian_acceleration_scale_and_noise(kind):
    ds = _ds(mask=MaskSpec(kind, 4.0, center_fraction=0.08), noise_rel=0.05)
    b = collate([ds[i] for i in range(0, 40, 10)])
    if kind == "random_1d":  # random column counts: check the mean over many draws
        from convexrecon.data.masks import draw_sampling

        rng = np.random.default_rng(0)
        masks = torch.stack([draw_sampling(ds.mask, SIZE, rng)[0] for _ in range(100)])
        assert 3.6 < acceleration(masks) < 4.4
    else:
        assert 3.6 < acceleration(b.mask) < 4.4
    op = b.operator()
    assert isinstance(op, Sense)
    lam = power_method(op.N, batch=(len(b),), iters=200)
    assert abs(lam - 1) < 0.02
    vn = torch.linalg.vector_norm
    resid = vn(op(b.target) - b.kspace, dim=(-3, -2, -1)) / vn(b.kspace, dim=(-3, -2, -1))
    assert torch.all((resid > 0.035) & (resid < 0.065)), resid
    # the recorded noise level: E|n|^2 per measured sample
    n_meas = b.mask.sum(dim=(-2, -1)) * ds.coils
    est = (op(b.target) - b.kspace).abs().square().sum(dim=(-3, -2, -1)) / n_meas
    np.testing.assert_allclose(est.sqrt().numpy(), b.noise_std.numpy(), rtol=0.15)


def test_noise_free_data_are_the_operator_of_the_target():
    b = collate([_ds(noise_rel=0.0)[i] for i in (3, 50)])
    op = b.operator()
    rel = float((op(b.target) - b.kspace).norm() / b.kspace.norm())
    assert rel < 1e-5
    # the data scale: p99 of the zero-filled image is 1
    zf = op.adjoint(b.kspace).abs().reshape(2, -1)
    np.testing.assert_allclose(torch.quantile(zf.double(), 0.99, dim=1).numpy(), 1.0, rtol=1e-3)


@pytest.mark.parametrize("kind", ["every_nth", "equiangular", "golden"])
def test_radial_operator(kind):
    spec = MaskSpec(kind, n_spokes=8, every=4)
    ds = _ds(trajectory=spec, noise_rel=0.0)
    samples = [ds[i] for i in range(6)]
    k = samples[0].kspace.shape[-1]
    assert k == 8 * 2 * SIZE and samples[0].mask is None
    trajs = {s.traj.numpy().tobytes() for s in samples}
    assert len(trajs) > 1  # rotated per sample
    b = collate(samples)
    op = b.operator()
    assert isinstance(op, PerSample)
    if kind == "every_nth":  # 4 interleaves: samples sharing one are grouped
        assert len(op.ops) <= 4
    for i, s in enumerate(samples):
        torch.testing.assert_close(op(b.target)[i], s.operator()(s.target))
    assert dot_test(op, batch=(6,)) < 1e-4
    assert dot_test(op.N, batch=(6,)) < 1e-4
    rel = float((op(b.target) - b.kspace).norm() / b.kspace.norm())
    assert rel < 1e-4
    assert abs(power_method(op.N, batch=(6,), iters=100) - 1) < 0.03
    # data scale: p99 of the unscaled operator's density-compensated gridding image
    # of the scaled data is 1 / op_scale (registry rule)
    grid = op.adjoint(b.kspace * b.dcf.unsqueeze(1)).abs().reshape(6, -1)
    p99 = torch.quantile(grid.double(), 0.99, dim=1) * b.op_scale
    np.testing.assert_allclose(p99.numpy(), 1.0 / b.op_scale.numpy(), rtol=1e-3)
    # one shared trajectory: one NonCartesianSense with batched maps
    fixed = _ds(trajectory=MaskSpec(kind, n_spokes=8, rotate=False), noise_rel=0.0)
    b2 = collate([fixed[i] for i in range(3)])
    op2 = b2.operator()
    assert isinstance(op2, NonCartesianSense)
    assert dot_test(op2, batch=(3,)) < 1e-4
    assert float((op2(b2.target) - b2.kspace).norm() / b2.kspace.norm()) < 1e-4


def test_sample_operator_matches_batch_operator():
    s = _ds()[5]
    b = collate([s])
    torch.testing.assert_close(s.operator()(s.target), b.operator()(b.target)[0])


# -- determinism and epochs -----------------------------------------------------------
def _equal(a, b) -> bool:
    return (torch.equal(a.kspace, b.kspace) and torch.equal(a.target, b.target)
            and torch.equal(a.mask, b.mask) and a.op_scale == b.op_scale)


def test_deterministic_across_recreation_epochs_and_order():
    a = _ds(seed=3)
    a.set_epoch(2)
    first = [a[i] for i in (4, 9)]
    b = _ds(seed=3)
    b.set_epoch(0)
    _ = b[9]
    b.set_epoch(2)
    second = [b[i] for i in (9, 4)][::-1]
    assert all(_equal(x, y) for x, y in zip(first, second))
    c = _ds(seed=4)
    c.set_epoch(2)
    assert not torch.equal(c[4].kspace, first[0].kspace)


def test_masks_differ_per_epoch_in_training_only():
    ds = _ds(mask="random_1d")
    m0 = ds[7].mask
    ds.set_epoch(1)
    m1 = ds[7].mask
    assert not torch.equal(m0, m1)
    assert not torch.equal(ds[7].mask, ds[8].mask)  # and per sample
    val = _ds(split="val", mask="random_1d")
    v0 = val[2]
    val.set_epoch(5)
    assert _equal(v0, val[2])
    assert not val.augment and _ds().augment


def test_augmentation_changes_the_image():
    plain = _ds(augment=False).image(30)
    aug = _ds(augment=True)
    imgs = []
    for e in range(4):
        aug.set_epoch(e)
        imgs.append(aug.image(30))
    assert any(np.abs(im - plain).max() > 0.05 for im in imgs)
    assert all(im.shape == (SIZE, SIZE) for im in imgs)


def test_dataloader_collates_batches():
    ds = _ds(noise_rel=0.01)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False, collate_fn=collate)
    b = next(iter(loader))
    assert isinstance(b, Batch) and len(b) == 3
    assert b.target.shape == (3, SIZE, SIZE) and b.kspace.shape == (3, 4, SIZE, SIZE)
    assert b.maps.shape == (3, 4, SIZE, SIZE) and b.mask.shape == (3, SIZE, SIZE)
    assert b.target.dtype == torch.complex64 and b.index.tolist() == [0, 1, 2]
    assert b.to("cpu").kspace.shape == b.kspace.shape


def test_worker_processes_give_the_same_batches():
    ds = _ds(mask="equispaced")
    ds.set_epoch(1)
    kw = dict(batch_size=2, shuffle=False, collate_fn=collate)
    one = list(torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(4)), **kw))
    two = list(torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(4)),
                                           num_workers=2, **kw))
    for a, b in zip(one, two):
        assert torch.equal(a.kspace, b.kspace) and torch.equal(a.mask, b.mask)


@pytest.mark.parametrize("name", ["brain-sim-poisson-4x", "brain-sim-cartesian-1d-4x",
                                  "radial-golden", "radial-real-traj", "tiny-cartesian",
                                  "tiny-radial"])
def test_from_problem_follows_the_problem(name):
    from convexrecon.problems import load

    size = 16 if name.startswith("tiny") else SIZE
    ds = from_problem(name, split="val", size=size)
    s = ds[0]
    p = load(name, split="test", n_slices=1) if name.startswith("tiny") else None
    n_coils = 3 if name.startswith("tiny") else 8
    assert s.maps.shape == (n_coils, size, size) and ds.noise_rel == 0.05
    if p is not None:  # same layout as the problem at its own size
        assert s.kspace.shape == p.kspace.shape[1:]
    assert 0.3 < float(s.target.abs().max()) < 5.0


# -- other sources ----------------------------------------------------------------------
@pytest.mark.parametrize("split,n", [("dipy-t1-coronal", 1), ("dipy-b0", 10)])
def test_out_of_distribution_image_sets(split, n):
    ds = _ds(split=split)
    assert len(ds) == n and not ds.augment and not ds.vary_per_epoch
    s = ds[n - 1]
    assert s.target.shape == (SIZE, SIZE) and s.label.startswith(split)


def test_real_brain_sample_matches_the_problem():
    from convexrecon.data import real_brain_sample
    from convexrecon.problems import load

    s = real_brain_sample()
    p = load("brain-real-8coil")
    assert s.target is None and s.kspace.shape == (8, 230, 180)
    x = torch.randn(230, 180, dtype=torch.complex64)
    torch.testing.assert_close(s.operator()(x), p.operator(x)[0], rtol=1e-5, atol=1e-6)


def test_fastmri_folder_is_read_lazily(tmp_path, monkeypatch):
    from convexrecon.io import fastmri
    from convexrecon.io.fastmri import write_fastmri
    from convexrecon.operators.fft import ifftc

    g = torch.Generator().manual_seed(1)
    ksp_a = torch.randn(3, 2, 24, 24, dtype=torch.complex64, generator=g)
    ksp_b = torch.randn(2, 2, 24, 24, dtype=torch.complex64, generator=g)
    ref_b = torch.rand(2, 20, 20, generator=g) + 0.1
    write_fastmri(tmp_path / "a.h5", ksp_a)
    write_fastmri(tmp_path / "b.h5", ksp_b, reference=ref_b)
    calls = []
    real = fastmri.read_fastmri
    monkeypatch.setattr(fastmri, "read_fastmri",
                        lambda path, **kw: calls.append((path.name, kw)) or real(path, **kw))
    import h5py

    reads = []
    getitem = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__",
                        lambda self, key: reads.append(self.name) or getitem(self, key))
    src = FastMRIFolder(tmp_path)
    assert len(src) == 5 and calls == [] and reads == []  # shapes only
    img = src.image(1)
    assert calls == [("a.h5", {"slices": [1]})]
    rss = ifftc(ksp_a[1], dims=(-2, -1)).abs().square().sum(0).sqrt()
    np.testing.assert_allclose(img, (rss / rss.max()).numpy(), rtol=1e-5, atol=1e-6)
    ref = src.image(4)
    np.testing.assert_allclose(ref, (ref_b[1] / ref_b[1].max()).numpy(), rtol=1e-6)
    assert src.label(4) == "fastmri:b.h5:1"
    ds = SliceDataset(split=None, source=src, size=16, coils=2)
    assert ds.vary_per_epoch and ds[4].target.shape == (16, 16)


# -- transforms --------------------------------------------------------------------------
def test_channels_live_in_transforms_and_conv_reexports_without_a_cycle():
    from convexrecon.operators import conv

    assert conv.complex_to_channels is T.complex_to_channels
    assert conv.channels_to_complex is T.channels_to_complex
    z = torch.randn(2, 3, 5, 4, dtype=torch.complex64)
    assert torch.equal(T.channels_to_complex(T.complex_to_channels(z)), z)
    code = ("import sys, convexrecon.operators.conv; "
            "print(sorted(m for m in sys.modules if m.startswith('convexrecon.data')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['convexrecon.data', 'convexrecon.data.transforms']"


def test_flips_and_crops():
    img = np.arange(20.0).reshape(4, 5)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(T.random_flip(img, rng, prob=1.0), img[::-1, ::-1])
    np.testing.assert_array_equal(T.random_flip(img, rng, prob=0.0), img)
    sq = np.arange(100.0).reshape(10, 10)
    for _ in range(5):
        c = T.random_crop(sq, rng, scale=(0.5, 0.8))
        assert 5 <= c.shape[0] == c.shape[1] <= 8
        r, k = divmod(int(c[0, 0]), 10)  # a contiguous window of the original
        np.testing.assert_array_equal(c, sq[r:r + c.shape[0], k:k + c.shape[1]])


def test_resize_area_is_block_mean_for_integer_factors():
    from convexrecon.problems._data import block_mean

    img = np.random.default_rng(0).random((64, 64))
    np.testing.assert_allclose(T.resize_area(img, 16), block_mean(img, 4), atol=1e-12)
    assert T.resize_area(img, 24).shape == (24, 24)
    assert T.pad_to_square(np.ones((3, 5))).shape == (5, 5)


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(split="holdout"), "split"),
    (dict(size=3), "size"),
    (dict(coils=0), "coils"),
    (dict(noise_rel=-0.1), "noise_rel"),
    (dict(mask="spiral"), "kind"),
    (dict(trajectory="poisson"), "trajectory"),
    (dict(mask="poisson", trajectory="golden"), "mask/trajectory"),
    (dict(split=None), "split/source"),
    (dict(source=object(), split=None), "source"),
    (dict(crop_scale=(0.5, 1.5)), "crop_scale"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(InputError, match=match):
        _ds(**kwargs)


def test_bad_input_elsewhere(tmp_path):
    with pytest.raises(InputError, match="name"):
        from_problem("brain-real-8coil")
    with pytest.raises(InputError, match="accel"):
        MaskSpec("poisson", accel=0.5)
    with pytest.raises(InputError, match="samples"):
        collate([])
    with pytest.raises(InputError, match="folder"):
        FastMRIFolder(tmp_path)
    with pytest.raises(InputError, match="epoch"):
        _ds().set_epoch(-1)
    with pytest.raises(InputError, match="z"):
        mni_slice(500)
