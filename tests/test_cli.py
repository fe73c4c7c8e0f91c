"""The command line: help, recon on every format and method, info, demo, bad input.

Tiny data (2 slices, 4 coils, 48 x 64, 1-D 2x mask with a 24-column fully
sampled centre so ESPIRiT and GRAPPA can calibrate) is written once per module with
the package's own writers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from convexrecon.cli.main import app
from tests.cli_helpers import ok as _ok
from tests.cli_helpers import one_line_error as _one_line_error

H, W = 48, 64
COILS = 4
SLICES = 2
ITERS = "8"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ONE = ("--threads", "1")  # one thread: a busy shared machine stalls multi-threaded BLAS


def _phantom() -> torch.Tensor:
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    outer = ((yy - H / 2) / (0.38 * H)) ** 2 + ((xx - W / 2) / (0.3 * W)) ** 2 < 1
    inner = ((yy - H / 2 + 4) ** 2 + (xx - W / 2) ** 2) < 40
    img = outer * 1.0 + inner * 0.6
    phase = np.exp(1j * 0.3 * xx / W)
    both = np.stack([img * phase, np.flip(img, 1) * phase])
    return torch.from_numpy(both).to(torch.complex64)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """k.npy (S, C, H, W), k.h5 (fastMRI with mask and reference), k.cfl (1 slice)
    and broken files."""
    from convexrecon.coils import birdcage
    from convexrecon.io import write_cfl, write_fastmri, write_npy
    from convexrecon.metrics import rss
    from convexrecon.operators.sense import Sense
    from convexrecon.sampling import equispaced_1d

    d = tmp_path_factory.mktemp("cli_data")
    x = _phantom()
    full = Sense(birdcage(COILS, (H, W)))(x)
    mask = equispaced_1d((H, W), 2, center_fraction=0.375)
    k = full * mask
    write_npy(d / "k.npy", k)
    write_fastmri(d / "k.h5", k, reference=rss(full, kspace=True), mask=mask[0])
    write_cfl(d / "k", k[0].permute(1, 2, 0)[:, :, None, :])  # BART (X, Y, Z, C)
    bad = k.numpy().copy()
    bad[0, 1, 3, 3] = np.nan
    np.save(d / "nonfinite.npy", bad)
    np.save(d / "wrongdims.npy", k[0, 0].numpy())
    raw = (d / "k.npy").read_bytes()
    (d / "truncated.npy").write_bytes(raw[: len(raw) // 2])
    (d / "garbage.h5").write_bytes(b"not an hdf5 file")
    return d


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """``--threads`` sets torch's threads for the (test) process; restore them."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# -- help ----------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", [[], ["recon"], ["demo"], ["info"], ["problems"], ["version"]])
def test_help(runner, cmd):
    result = runner.invoke(app, [*cmd, "--help"])
    _ok(result)
    assert "Usage" in result.stdout


def test_recon_help_teaches(runner):
    result = runner.invoke(app, ["recon", "--help"], env={"COLUMNS": "120"})
    _ok(result)
    for word in ("Conventions", "Examples", "--method", "--lam", "--slice", "--device", "--png",
                 "l1-wavelet", "zero-filled", "readout"):
        assert word in result.stdout, word


def test_no_arguments_shows_help(runner):
    """No arguments: the full help on stdout, exit code 0 (a defined behaviour, not the
    click version's), nothing on stderr."""
    result = runner.invoke(app, [])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout == runner.invoke(app, ["--help"]).stdout
    for command in ("recon", "demo", "info", "problems", "version"):
        assert command in result.stdout


def test_version(runner):
    from convexrecon import __version__

    result = runner.invoke(app, ["version"])
    _ok(result)
    assert result.stdout.strip() == __version__


# -- recon ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["l1-wavelet", "sense", "tv", "grappa", "zero-filled"])
def test_recon_h5_each_method(runner, data_dir, tmp_path, method):
    out, png = tmp_path / "r.h5", tmp_path / "r.png"
    args = ["recon", str(data_dir / "k.h5"), "--method", method, "--out", str(out),
            "--png", str(png), "--threads", "1", "-q"]
    if method not in ("grappa", "zero-filled"):
        args += ["--iters", ITERS]
    result = runner.invoke(app, args)
    _ok(result)
    with h5py.File(out, "r") as f:
        rec = f["reconstruction"][()]
    assert rec.shape == (SLICES, H, W) and rec.dtype == np.float32
    assert np.isfinite(rec).all() and rec.max() > 0
    assert png.read_bytes()[:8] == PNG_MAGIC
    for word in ("PSNR", "SSIM", "NMSE", "zero-filled"):
        assert word in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5", "r.png"]  # no temp files


def test_recon_npy_in_npy_out_no_reference(runner, data_dir, tmp_path):
    out = tmp_path / "r.npy"
    result = runner.invoke(app, ["recon", str(data_dir / "k.npy"), "--out", str(out),
                                 "--iters", ITERS, "--lam", "0.005", "-q", *ONE])
    _ok(result)
    rec = np.load(out)
    assert rec.shape == (SLICES, H, W) and np.iscomplexobj(rec)
    assert "PSNR" not in result.stdout  # no reference, no metrics


def test_recon_cfl_with_png(runner, data_dir, tmp_path):
    out, png = tmp_path / "r.npy", tmp_path / "r.png"
    result = runner.invoke(app, ["recon", str(data_dir / "k.cfl"), "--method", "sense",
                                 "--iters", ITERS, "--out", str(out), "--png", str(png), "-q", *ONE])
    _ok(result)
    assert np.load(out).shape == (1, H, W)
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_recon_slice_selection_and_progress(runner, data_dir, tmp_path):
    out = tmp_path / "r.npy"
    result = runner.invoke(app, ["recon", str(data_dir / "k.h5"), "--slice", "1",
                                 "--iters", ITERS, "--out", str(out), *ONE])
    _ok(result)
    assert np.load(out).shape == (1, H, W)
    assert "objective" in result.stderr  # the progress bar goes to stderr
    assert "objective" not in result.stdout


def test_recon_auto_lambda(runner, data_dir, tmp_path):
    """--lam auto is the library's k-space cross-validated weight: the image equals
    l1_wavelet with the weight choose_lambda picks, not the default weight's image,
    and a choice at the edge of the weights tried is reported on stderr."""
    import warnings

    from convexrecon import recon

    out = tmp_path / "r.npy"
    result = runner.invoke(app, ["recon", str(data_dir / "k.npy"), "--slice", "0", "--lam",
                                 "auto", "--iters", "4", "--out", str(out), "-q", *ONE])
    _ok(result)
    got = torch.from_numpy(np.load(out))
    k = torch.from_numpy(np.load(data_dir / "k.npy"))[:1]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        choice = recon.choose_lambda(k, max_iter=4)
    want = recon.l1_wavelet(k, lam=choice.lam, max_iter=4)
    default = recon.l1_wavelet(k, max_iter=4)
    assert float((got - want).norm() / want.norm()) < 1e-5
    assert float((got - default).norm() / default.norm()) > 1e-3
    assert ("warning: lam='auto'" in result.stderr) == choice.at_edge


# -- bad input -----------------------------------------------------------------------
BAD_CASES = {
    "nonfinite": (["nonfinite.npy"], "finite"),
    "wrong-dims": (["wrongdims.npy"], "expected"),
    "truncated": (["truncated.npy"], "truncated"),
    "not-hdf5": (["garbage.h5"], "HDF5"),
    "missing-file": (["missing.npy"], "no such file"),
    "unknown-suffix": (["k.txt"], "INPUT"),
    "unknown-method": (["k.npy", "--method", "magic"], "--method"),
    "lam-abc": (["k.npy", "--lam", "abc"], "--lam"),
    "lam-negative": (["k.npy", "--lam", "-1"], "--lam"),
    "lam-with-zero-filled": (["k.npy", "--method", "zero-filled", "--lam", "0.1"], "--lam"),
    "iters-zero": (["k.npy", "--iters", "0"], "--iters"),
    "bad-device": (["k.npy", "--device", "gpu"], "--device"),
    "slice-out-of-range": (["k.npy", "--slice", "7"], "slice"),
    "slice-garbage": (["k.npy", "--slice", "a-b"], "--slice"),
    "threads-zero": (["k.npy", "--threads", "0"], "--threads"),
    "grappa-2d-mask-ok-but-bad-png": (["k.npy", "--png", "x.jpg"], "--png"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_recon_bad_input_one_line_exit_2(runner, data_dir, tmp_path, case):
    args, needle = BAD_CASES[case]
    src = args[0] if args[0] in ("missing.npy", "k.txt") else None
    path = str(tmp_path / src) if src else str(data_dir / args[0])
    out = tmp_path / "out.npy"
    result = runner.invoke(app, ["recon", path, *args[1:], "--out", str(out), "-q"])
    line = _one_line_error(result)
    assert needle in line
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial or temporary output


def test_recon_cuda_without_cuda(runner, data_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out.npy"
    result = runner.invoke(app, ["recon", str(data_dir / "k.npy"), "--device", "cuda",
                                 "--out", str(out)])
    assert "CUDA" in _one_line_error(result)
    assert not out.exists()


def test_recon_output_folder_missing(runner, data_dir, tmp_path):
    result = runner.invoke(app, ["recon", str(data_dir / "k.npy"), "--out",
                                 str(tmp_path / "nope" / "r.npy")])
    assert "--out" in _one_line_error(result)


def test_recon_refuses_to_overwrite_input(runner, data_dir, tmp_path):
    src = tmp_path / "k.npy"
    shutil.copy(data_dir / "k.npy", src)
    before = src.read_bytes()
    result = runner.invoke(app, ["recon", str(src), "--out", str(src)])
    _one_line_error(result)
    assert src.read_bytes() == before


def test_grappa_needs_1d_sampling(runner, data_dir, tmp_path):
    from convexrecon.io import write_npy
    from convexrecon.sampling import poisson_disc

    k = torch.from_numpy(np.load(data_dir / "k.npy"))
    mask = poisson_disc((H, W), 2, calib=(12, 12), seed=0)
    write_npy(tmp_path / "p.npy", k * mask)
    out = tmp_path / "r.npy"
    result = runner.invoke(app, ["recon", str(tmp_path / "p.npy"), "--method", "grappa",
                                 "--out", str(out)])
    _one_line_error(result)
    assert not out.exists()


# -- info ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, fmt, coils, slices, has_ref", [
    ("k.h5", "fastMRI", COILS, SLICES, True),
    ("k.npy", "numpy", COILS, SLICES, False),
    ("k.cfl", "BART", COILS, 1, False),
    ("k.hdr", "BART", COILS, 1, False),
])
def test_info_each_format(runner, data_dir, name, fmt, coils, slices, has_ref):
    result = runner.invoke(app, ["info", str(data_dir / name)], env={"COLUMNS": "150"})
    _ok(result)
    text = result.stdout
    assert fmt in text
    assert f"({slices}, {coils}, {H}, {W})" in text
    assert "complex64" in text
    assert "acceleration" in text and "x " in text
    assert ("reference     yes" in text) == has_ref, text


@pytest.mark.parametrize("name", ["truncated.npy", "garbage.h5", "missing.h5", "wrongdims.npy"])
def test_info_bad_file(runner, data_dir, name):
    _one_line_error(runner.invoke(app, ["info", str(data_dir / name)]))


def test_problems_lists_names(runner):
    result = runner.invoke(app, ["problems"], env={"COLUMNS": "200"})
    _ok(result)
    for name in ("brain-sim-poisson-4x", "brain-real-8coil"):
        assert name in result.stdout


# -- demo ----------------------------------------------------------------------------
def test_demo_quick(runner, tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--quick", "--out-dir", str(out), "--threads", "1", "-q"],
                           env={"COLUMNS": "160"})
    _ok(result)
    pngs = sorted(p.name for p in out.iterdir())
    assert pngs == ["brain-real-8coil.png", "brain-sim-poisson-4x.png"]
    for name in pngs:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    for word in ("PSNR", "SSIM", "NMSE", "residual", "l1-wavelet", "brain-sim-poisson-4x"):
        assert word in result.stdout


def test_demo_unknown_problem(runner, tmp_path):
    out = tmp_path / "demo"
    line = _one_line_error(runner.invoke(app, ["demo", "--problem", "nope", "--out-dir", str(out)]))
    assert "--problem" in line and "brain-sim-poisson-4x" in line
    assert not out.exists()


def test_demo_out_dir_is_a_file(runner, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert "--out-dir" in _one_line_error(runner.invoke(app, ["demo", "--out-dir", str(f)]))


# -- console script ------------------------------------------------------------------
def test_console_script_help():
    exe = Path(sys.executable).parent / "convexrecon"
    found = str(exe) if exe.exists() else shutil.which("convexrecon")
    if found is None:
        pytest.skip("the convexrecon console script is not installed")
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.run([found, "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "recon" in proc.stdout and "demo" in proc.stdout


def test_console_script_bad_input_exit_2(tmp_path):
    exe = Path(sys.executable).parent / "convexrecon"
    found = str(exe) if exe.exists() else shutil.which("convexrecon")
    if found is None:
        pytest.skip("the convexrecon console script is not installed")
    proc = subprocess.run([found, "info", str(tmp_path / "missing.h5")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")


# -- viz and the error wrapper ---------------------------------------------------------
def test_viz_figure_atomic(tmp_path):
    from convexrecon import viz
    from convexrecon.errors import InputError

    x = _phantom()
    path = viz.reconstruction_figure(tmp_path / "f.png", x, zero_filled=x * 0.5,
                                     reference=x.abs()[:, 4:-4, 4:-4], scores={"reconstruction": "x"})
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]
    with pytest.raises(InputError):
        viz.reconstruction_figure(tmp_path / "f.jpg", x)
    with pytest.raises(InputError):
        viz.reconstruction_figure(tmp_path / "missing" / "f.png", x)


def test_error_wrapper_maps_os_errors(capsys):
    import typer

    from convexrecon.cli._errors import cli_errors

    @cli_errors
    def boom() -> None:
        raise PermissionError(13, "Permission denied", "/root/x")

    with pytest.raises(typer.Exit) as info:
        boom()
    assert info.value.exit_code == 2
    err = capsys.readouterr().err
    assert err == "error: /root/x: permission denied\n"
