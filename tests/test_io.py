"""Readers and writers: round trips, lazy slice reads, bad files -> InputError."""

from __future__ import annotations

import shutil
import subprocess

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


# -- BART's dimension convention ----------------------------------------------------------
def _bart_file(tmp_path, name, pkg, spatial, *, n_slice=1, n_time=1, extra=None):
    """Write package k-space ``pkg`` (S, C, H, W), S = n_slice * n_time (SLICE outer),
    as a 16-dimensional BART file with H, W in the BART dimensions ``spatial``
    (ascending), coils in dim 3, slices in 13 and time in 10; filled entry by entry."""
    s_all, n_coils, h, w = pkg.shape
    dims = [1] * 16
    dims[spatial[0]], dims[spatial[1]], dims[3], dims[10], dims[13] = h, w, n_coils, n_time, n_slice
    for d, n in (extra or {}).items():
        dims[d] = n
    arr = np.zeros(dims, np.complex64)
    for s in range(n_slice):
        for t in range(n_time):
            for c in range(n_coils):
                idx = [0] * 16
                idx[3], idx[10], idx[13] = c, t, s
                idx[spatial[0]] = idx[spatial[1]] = slice(None)
                arr[tuple(idx)] = pkg[s * n_time + t, c]
    write_cfl(tmp_path / name, arr)
    return arr


ORIENTATIONS = [(0, 1), (0, 2), (1, 2)]
NAMES = ("READ", "PHS1", "PHS2")


@pytest.mark.parametrize("batch", [(1, 1), (3, 1), (1, 2), (2, 3)], ids=["one", "slices", "time", "both"])
@pytest.mark.parametrize("spatial", ORIENTATIONS, ids=["read-phs1", "read-phs2", "phs1-phs2"])
def test_bart_every_2d_layout_round_trip(tmp_path, spatial, batch):
    """Any two spatial dimensions make a 2-D problem (the lower-numbered is H), SLICE
    and TIME become slices; the image written back lands in the same dimensions."""
    from convexrecon.io import write_bart_image

    n_slice, n_time = batch
    pkg = _ksp((n_slice * n_time, 3, 5, 7), seed=1)
    _bart_file(tmp_path, "k", pkg, spatial, n_slice=n_slice, n_time=n_time)
    data = load_kspace(tmp_path / "k.cfl")
    assert data.kspace.shape == pkg.shape
    np.testing.assert_array_equal(data.kspace.numpy(), pkg)
    layout = data.attrs["bart_layout"]
    assert layout.spatial == spatial
    # the image goes back to the same BART dimensions
    image = pkg[:, 0] * 2 + 1
    write_bart_image(tmp_path / "x.cfl", image, layout)
    dims = [int(n) for n in (tmp_path / "x.hdr").read_text().splitlines()[1].split()]
    assert len(dims) == 16 and dims[3] == 1
    assert dims[spatial[0]] == 5 and dims[spatial[1]] == 7
    assert dims[13] == n_slice and dims[10] == n_time
    raw = read_cfl(tmp_path / "x", squeeze_trailing=False).numpy()
    for s in range(n_slice):
        for t in range(n_time):
            idx = [0] * 16
            idx[10], idx[13] = t, s
            idx[spatial[0]] = idx[spatial[1]] = slice(None)
            np.testing.assert_array_equal(raw[tuple(idx)], image[s * n_time + t])
    # and it reads back as the same (slices, H, W) image
    back = load_kspace(tmp_path / "x.cfl")
    np.testing.assert_array_equal(back.kspace[:, 0].numpy(), image)


def test_bart_maps_3d_and_refused_dimensions(tmp_path):
    pkg = _ksp((1, 2, 4, 6), seed=2)
    arr = _bart_file(tmp_path, "m", pkg, (1, 2), extra={4: 2})  # two sets of maps
    arr[:, :, :, :, 1] = 99  # the second set differs
    write_cfl(tmp_path / "m", arr)
    from convexrecon.io.cfl import BartLayoutWarning

    with pytest.warns(BartLayoutWarning, match="MAPS"):
        data = load_kspace(tmp_path / "m.cfl")
    np.testing.assert_array_equal(data.kspace.numpy(), pkg)  # the first set
    assert any("first" in n for n in data.attrs["notes"])
    for dim, name in ((5, "TE"), (14, "AVG"), (6, "COEFF")):
        _bart_file(tmp_path, f"bad{dim}", pkg, (0, 1), extra={dim: 2})
        with pytest.raises(InputError, match=f"dimension {dim} \\({name}\\)"):
            load_kspace(tmp_path / f"bad{dim}.cfl")
    write_cfl(tmp_path / "line", _ksp((1, 9, 1, 4)))  # one spatial dimension
    with pytest.raises(InputError, match="2-D or 3-D"):
        load_kspace(tmp_path / "line.cfl")
    # three spatial dimensions: 3-D, H = READ, W = PHS1, D = PHS2
    vol = _ksp((4, 5, 3, 2), seed=3)
    write_cfl(tmp_path / "v", vol)
    data = load_kspace(tmp_path / "v.hdr")
    assert data.kspace.shape == (1, 2, 3, 4, 5)
    np.testing.assert_array_equal(data.kspace[0].numpy(), vol.transpose(3, 2, 0, 1))


def test_bart_workshop_layout_info_and_recon_cfl(tmp_path):
    """A slice stored as 1 x H x W x C (readout transformed away, PHS1-PHS2 plane) is
    read as 2-D; `info` says so and `recon --out x.cfl` writes 1 x H x W."""
    from typer.testing import CliRunner

    from convexrecon.cli.main import app

    pkg = _ksp((1, 4, 12, 10), seed=4)
    pkg[..., ::2] = 0  # every other phase-encode column unsampled
    _bart_file(tmp_path, "brain", pkg, (1, 2))
    runner = CliRunner()
    res = runner.invoke(app, ["info", str(tmp_path / "brain.cfl")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "(1, 4, 12, 10)" in text and "H x W = PHS1 x PHS2" in text and "12 x 10" in text
    res = runner.invoke(app, ["recon", str(tmp_path / "brain.cfl"), "--method", "zero-filled",
                              "--out", str(tmp_path / "x.cfl"), "--quiet"])
    assert res.exit_code == 0, res.output
    dims = (tmp_path / "x.hdr").read_text().splitlines()[1].split()
    assert dims[:4] == ["1", "12", "10", "1"] and set(dims[4:]) == {"1"}
    img = read_cfl(tmp_path / "x").numpy()
    assert img.shape == (1, 12, 10) and np.isfinite(img).all() and np.abs(img).max() > 0
    # several sets of maps: the first is used, and the CLI says so on one line
    _bart_file(tmp_path, "maps2", pkg, (1, 2), extra={4: 2})
    res = runner.invoke(app, ["info", str(tmp_path / "maps2.cfl")])
    assert res.exit_code == 0 and "first is used" in " ".join(res.output.split())
    res = runner.invoke(app, ["recon", str(tmp_path / "maps2.cfl"), "--method", "zero-filled",
                              "--out", str(tmp_path / "y.cfl"), "--quiet"])
    assert res.exit_code == 0 and "warning: " in res.output and "MAPS" in res.output
    # refuse to overwrite the input pair through the other suffix
    res = runner.invoke(app, ["recon", str(tmp_path / "brain.hdr"), "--method", "zero-filled",
                              "--out", str(tmp_path / "brain.cfl")])
    assert res.exit_code == 2 and "overwrite" in res.output


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


@pytest.mark.skipif(shutil.which("bart") is None, reason="BART (Debian package bart) not on PATH")
def test_bart_itself_writes_what_we_read_and_reads_what_we_write(tmp_path):
    """With the real `bart`: its phantom k-space, transposed into the PHS1-PHS2 plane,
    is read as 2-D; our `recon --out x.cfl` is read back by `bart` with the same
    orientation and the values we wrote."""
    from typer.testing import CliRunner

    from convexrecon.cli.main import app

    def bart(*args: str) -> str:
        return subprocess.run(["bart", *args], cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout

    bart("phantom", "-x", "32", "-k", "-s", "4", "ksp")
    bart("transpose", "0", "2", "ksp", "ksp_phs")  # READ -> PHS2: the workshop layout
    res = CliRunner().invoke(app, ["recon", str(tmp_path / "ksp_phs.cfl"), "--method",
                                   "zero-filled", "--out", str(tmp_path / "out.cfl"), "--quiet"])
    assert res.exit_code == 0, res.output
    dims = bart("show", "-m", "out").split("AoD:")[1].split()
    assert dims[:4] == ["1", "32", "32", "1"] and set(dims[4:]) == {"1"}
    bart("scale", "2", "out", "out2")  # bart reads our values: 2 x ours, read back
    assert np.allclose(read_cfl(tmp_path / "out2").numpy(), 2 * read_cfl(tmp_path / "out").numpy())
