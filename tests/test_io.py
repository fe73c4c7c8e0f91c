"""Readers and writers: round trips, lazy slice reads, bad files -> InputError."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.io import (
    load_kspace, read_cfl, read_fastmri, read_ismrmrd, read_npy, write_cfl, write_fastmri,
    write_npy, write_reconstruction,
)


def _ksp(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


# -- fastMRI -------------------------------------------------------------------------------
def test_fastmri_round_trip(tmp_path):
    ksp = _ksp((3, 4, 8, 6))
    ref = np.abs(_ksp((3, 5, 5), 1)).astype(np.float32)
    mask = np.array([1, 0, 1, 1, 0, 1], bool)
    path = write_fastmri(tmp_path / "a.h5", ksp, reference=ref, mask=mask,
                         attrs={"acquisition": "CORPD_FBK", "max": 2.5})
    data = read_fastmri(path)
    np.testing.assert_array_equal(data.kspace.numpy(), ksp)
    np.testing.assert_array_equal(data.reference.numpy(), ref)
    assert data.mask.shape == (1, 6) and data.mask.dtype == torch.bool
    np.testing.assert_array_equal(data.mask.numpy()[0], mask)
    assert data.attrs["acquisition"] == "CORPD_FBK" and data.attrs["max"] == 2.5
    assert data.attrs["reference_key"] == "reconstruction_rss"
    # single-coil files get a coil axis; load_kspace dispatches on content
    write_fastmri(tmp_path / "s.h5", ksp[:, 0])
    got = load_kspace(tmp_path / "s.h5")
    assert got.source == "fastmri" and got.kspace.shape == (3, 1, 8, 6)
    assert bool(got.mask.all())


def test_fastmri_lazy_slices(tmp_path, monkeypatch):
    ksp = _ksp((5, 2, 4, 4))
    write_fastmri(tmp_path / "a.h5", ksp, reference=np.abs(ksp[:, 0]))
    requested = []
    orig = h5py.Dataset.__getitem__

    def spy(self, key):
        if self.name == "/kspace":
            requested.append(key)
        return orig(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    one = read_fastmri(tmp_path / "a.h5", slices=3)
    assert one.kspace.shape == (1, 2, 4, 4) and one.reference.shape == (1, 4, 4)
    np.testing.assert_array_equal(one.kspace.numpy()[0], ksp[3])
    assert requested == [slice(3, 4)]  # never the whole volume
    two = read_fastmri(tmp_path / "a.h5", slices=[4, 0])
    np.testing.assert_array_equal(two.kspace.numpy(), ksp[[4, 0]])
    with pytest.raises(InputError, match="slices"):
        read_fastmri(tmp_path / "a.h5", slices=9)


def test_fastmri_bad_files(tmp_path):
    path = write_fastmri(tmp_path / "a.h5", _ksp((2, 2, 16, 16)))
    raw = path.read_bytes()
    (tmp_path / "trunc.h5").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(InputError, match="HDF5|truncated"):
        read_fastmri(tmp_path / "trunc.h5")
    with h5py.File(tmp_path / "nok.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((2, 3, 3)))
    with pytest.raises(InputError, match="'kspace'"):
        read_fastmri(tmp_path / "nok.h5")
    with h5py.File(tmp_path / "dims.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((3, 3), np.complex64))
    with pytest.raises(InputError, match="expected"):
        read_fastmri(tmp_path / "dims.h5")
    bad = _ksp((1, 1, 4, 4))
    bad[0, 0, 1, 1] = np.nan
    with h5py.File(tmp_path / "nan.h5", "w") as f:
        f.create_dataset("kspace", data=bad)
    with pytest.raises(InputError, match="finite"):
        read_fastmri(tmp_path / "nan.h5")
    with pytest.raises(InputError, match="existing file"):
        read_fastmri(tmp_path / "missing.h5")
    with pytest.raises(InputError, match="finite"):
        write_fastmri(tmp_path / "w.h5", bad)
    assert not (tmp_path / "w.h5").exists()


def test_write_reconstruction_is_atomic(tmp_path):
    rec = torch.randn(2, 4, 4, dtype=torch.complex64)
    path = write_reconstruction(tmp_path / "r.h5", rec)
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f["reconstruction"][()], rec.abs().numpy(), rtol=1e-6)
    # a failing write leaves neither a partial file nor a temporary one behind
    with pytest.raises(InputError):
        write_reconstruction(tmp_path / "q.h5", torch.full((2, 2), float("nan")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


# -- BART cfl ----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", ".cfl", ".hdr"])
def test_cfl_round_trip(tmp_path, suffix):
    arr = _ksp((5, 3, 2))
    write_cfl(str(tmp_path / "x") + suffix, arr)
    assert (tmp_path / "x.cfl").stat().st_size == arr.size * 8
    assert (tmp_path / "x.hdr").read_text().splitlines()[1] == "5 3 2"
    # column-major on disk: the first axis varies fastest
    raw = np.fromfile(tmp_path / "x.cfl", np.complex64)
    np.testing.assert_array_equal(raw[:5], arr[:, 0, 0])
    back = read_cfl(tmp_path / "x")
    np.testing.assert_array_equal(back.numpy(), arr)
    np.testing.assert_array_equal(read_cfl(tmp_path / "x.hdr").numpy(), arr)


def test_cfl_bart_layout_and_errors(tmp_path):
    bart = _ksp((6, 4, 1, 3))  # (X, Y, Z, C), as BART writes with trailing singletons
    (tmp_path / "k.hdr").write_text("# Dimensions\n6 4 1 3 1 1 1 1 1 1 1 1 1 1 1 1\n")
    bart.ravel(order="F").tofile(tmp_path / "k.cfl")
    assert read_cfl(tmp_path / "k").shape == (6, 4, 1, 3)
    data = load_kspace(tmp_path / "k.cfl")
    assert data.source == "cfl" and data.kspace.shape == (1, 3, 6, 4)
    np.testing.assert_array_equal(data.kspace[0].numpy(), bart[:, :, 0, :].transpose(2, 0, 1))
    (tmp_path / "t.hdr").write_text("# Dimensions\n6 4\n")
    (tmp_path / "t.cfl").write_bytes(b"\0" * 40)
    with pytest.raises(InputError, match="truncated"):
        read_cfl(tmp_path / "t")
    (tmp_path / "h.hdr").write_text("no dims here\n")
    (tmp_path / "h.cfl").write_bytes(b"")
    with pytest.raises(InputError, match="Dimensions"):
        read_cfl(tmp_path / "h")
    with pytest.raises(InputError, match="existing file"):
        read_cfl(tmp_path / "none")


# -- npy and the dispatcher --------------------------------------------------------------
def test_npy_round_trip_and_dispatch(tmp_path):
    ksp = _ksp((3, 2, 4, 4))
    write_npy(tmp_path / "k.npy", ksp)
    np.testing.assert_array_equal(read_npy(tmp_path / "k.npy").numpy(), ksp)
    data = load_kspace(tmp_path / "k.npy", slices=[1])
    assert data.source == "npy" and data.kspace.shape == (1, 2, 4, 4)
    np.testing.assert_array_equal(data.kspace.numpy()[0], ksp[1])
    write_npy(tmp_path / "c.npy", ksp[0])
    assert load_kspace(tmp_path / "c.npy").kspace.shape == (1, 2, 4, 4)
    raw = (tmp_path / "k.npy").read_bytes()
    (tmp_path / "tr.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated|npy"):
        load_kspace(tmp_path / "tr.npy")
    write_npy(tmp_path / "r.npy", np.zeros((2, 3, 3)))
    with pytest.raises(InputError, match="complex"):
        load_kspace(tmp_path / "r.npy")
    with pytest.raises(InputError, match="suffix"):
        load_kspace(tmp_path / "k.mat")


# -- ISMRMRD -----------------------------------------------------------------------------
def _write_ismrmrd(path, ksp, *, traj=None, noise=True):
    """Write (C, RO, E1) k-space as one acquisition per line (or radial spokes)."""
    import ismrmrd
    from ismrmrd import xsd

    n_coils, n_ro, n_e1 = ksp.shape
    space = xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=n_ro, y=n_e1, z=1),
                                  fieldOfView_mm=xsd.fieldOfViewMm(x=200.0, y=200.0, z=5.0))
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=n_e1 - 1, center=n_e1 // 2),
        slice=xsd.limitType(minimum=0, maximum=0, center=0))
    kind = xsd.trajectoryType.CARTESIAN if traj is None else xsd.trajectoryType.RADIAL
    enc = xsd.encodingType(encodedSpace=space, reconSpace=space, encodingLimits=limits,
                           trajectory=kind)
    header = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63500000),
        encoding=[enc])
    dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    dset.write_xml_header(xsd.ToXML(header))
    if noise:
        acq = ismrmrd.Acquisition.from_array(np.full((n_coils, n_ro), 1e3, np.complex64))
        acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        dset.append_acquisition(acq)
    for e1 in np.random.default_rng(0).permutation(n_e1):  # any order: counters place lines
        tr = None if traj is None else np.ascontiguousarray(traj[:, :, e1].T, np.float32)
        acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(ksp[:, :, e1]), tr)
        acq.idx.kspace_encode_step_1 = int(e1)
        dset.append_acquisition(acq)
    dset.close()


def test_ismrmrd_cartesian_round_trip(tmp_path):
    ksp = _ksp((3, 8, 6))
    _write_ismrmrd(tmp_path / "raw.h5", ksp)
    got, traj, xml = read_ismrmrd(tmp_path / "raw.h5")
    assert traj is None and "ismrmrdHeader" in xml
    assert got.shape == (1, 3, 8, 6)  # (slices, coils, readout, phase encode)
    np.testing.assert_array_equal(got[0].numpy(), ksp)  # the noise scan is skipped
    data = load_kspace(tmp_path / "raw.h5")
    assert data.source == "ismrmrd" and data.mask.all()


def test_ismrmrd_trajectory(tmp_path):
    ksp = _ksp((2, 5, 4))
    traj = np.random.default_rng(1).uniform(-3, 3, size=(2, 5, 4))  # (D, readout, spoke)
    _write_ismrmrd(tmp_path / "rad.h5", ksp, traj=traj, noise=False)
    got, tr, _ = read_ismrmrd(tmp_path / "rad.h5")
    order = np.random.default_rng(0).permutation(4)
    assert got.shape == (1, 2, 20) and tr.shape == (2, 20)
    np.testing.assert_array_equal(got[0].numpy(), np.concatenate([ksp[:, :, e] for e in order], 1))
    np.testing.assert_allclose(tr.numpy(), np.concatenate([traj[:, :, e] for e in order], 1),
                               rtol=1e-6)


def test_ismrmrd_bad_files(tmp_path):
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(InputError, match="ISMRMRD"):
        read_ismrmrd(tmp_path / "plain.h5")
    with pytest.raises(InputError, match="existing file"):
        read_ismrmrd(tmp_path / "none.h5")
