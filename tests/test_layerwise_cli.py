"""``convexrecon train-layerwise`` / ``evaluate`` / ``recon --method learned``: a tiny
run, resume without loss, and bad input (one line, exit 2, no partial output)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convexrecon.cli.main import app
from convexrecon.nets.layerwise import LayerwiseConfig
from convexrecon.nets.layerwise_run import Sizes, run_layerwise
from convexrecon.training import load_model
from tests.layerwise_helpers import TINY
from tests.cli_helpers import ok as _ok
from tests.cli_helpers import one_line_error as _bad

TINY_ARGS = ["--preset", "tiny", "--problem", "tiny-cartesian", "-q"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lw") / "run"
    result = CliRunner().invoke(app, ["train-layerwise", *TINY_ARGS, "--layers", "2", "--out", str(out),
                                      "--tensorboard"])
    _ok(result)
    assert "layer-wise training" in result.stdout and "gain vs l1-wavelet" in result.stdout
    return out


def test_tiny_run_writes_checkpoint_metrics_figures(trained):
    for name in ("checkpoint.pt", "metrics.json", "psnr_per_layer.png", "reconstructions.png"):
        assert (trained / name).is_file(), name
    assert any((trained / "tensorboard").iterdir())
    metrics = json.loads((trained / "metrics.json").read_text())
    assert [r["layer"] for r in metrics["layers"]] == [1, 2]
    assert len(metrics["per_layer"]) == 2 and "l1_wavelet" in metrics
    net = load_model(trained / "checkpoint.pt")
    assert net.depth == 2 and net.widths() == metrics["widths"]


def test_evaluate_saved_model(trained):
    result = CliRunner().invoke(app, ["evaluate", str(trained / "checkpoint.pt"), "--problem",
                                      "tiny-cartesian", "--size", "16", "--n", "3"])
    _ok(result)
    assert "gain vs zero-filled" in result.stdout


def _run(out, layers, resume=False):
    cfg = LayerwiseConfig(layers=layers, kernel=3, patterns=4, beta=0.05, max_iter=30)
    return run_layerwise(config=cfg, data=TINY, sizes=Sizes(n_train=3, n_val=2, n_test=2),
                         out_dir=out, resume=resume, fista_reference=False)


def test_resume_after_a_layer_equals_uninterrupted(tmp_path):
    full = _run(tmp_path / "full", 2)
    _run(tmp_path / "part", 1)
    resumed = _run(tmp_path / "part", 2, resume=True)
    a, b = full.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=1e-6), k
    assert [r["layer"] for r in resumed.reports] == [1, 2]


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    cmd = [sys.executable, "-m", "convexrecon.cli.main", "train-layerwise", *TINY_ARGS, "--layers", "3"]
    ref = subprocess.run(cmd + ["--out", str(tmp_path / "ref")], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (out / "checkpoint.pt").exists() and time.time() - t0 < 300:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    res = subprocess.run(cmd + ["--out", str(out), "--resume"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    a = load_model(tmp_path / "ref" / "checkpoint.pt").state_dict()
    b = load_model(out / "checkpoint.pt").state_dict()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=1e-6), k


def test_bad_unknown_problem(tmp_path):
    out = tmp_path / "o"
    _bad(CliRunner().invoke(app, ["train-layerwise", "--preset", "tiny", "--problem", "nope",
                                  "--out", str(out)]), "problem")
    assert not out.exists()


@pytest.mark.parametrize("args,word", [(["--form", "relu", "--solver", "minibatch"], "minibatch"),
                                       (["--solver", "sgd"], "--solver"), (["--form", "mlp"], "form"),
                                       (["--memory-budget", "0"], "--memory-budget"),
                                       (["--beta", "2"], "--beta"), (["--mask", "radial"], "mask")])
def test_bad_options_default_preset(tmp_path, args, word):
    out = tmp_path / "o"
    _bad(CliRunner().invoke(app, ["train-layerwise", *args, "--out", str(out)]), word)
    assert not out.exists()


def test_bad_empty_data_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "o"
    _bad(CliRunner().invoke(app, ["train-layerwise", "--preset", "tiny", "--data", str(tmp_path / "empty"),
                                  "--out", str(out)]), ".h5")
    assert not out.exists()


def test_bad_non_h5_file_in_data(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    out = tmp_path / "o"
    _bad(CliRunner().invoke(app, ["train-layerwise", "--preset", "tiny", "--data", str(d),
                                  "--out", str(out)]), "notes.txt")
    assert not out.exists()


def test_bad_kernel(tmp_path):
    out = tmp_path / "o"
    _bad(CliRunner().invoke(app, ["train-layerwise", *TINY_ARGS, "--kernel", "4", "--out", str(out)]),
         "kernel")
    assert not out.exists()


def test_bad_kernel_mismatch_on_resume(trained):
    before = (trained / "checkpoint.pt").read_bytes()
    _bad(CliRunner().invoke(app, ["train-layerwise", *TINY_ARGS, "--kernel", "5", "--out", str(trained),
                                  "--resume"]), "kernel")
    assert (trained / "checkpoint.pt").read_bytes() == before


def test_bad_existing_out_without_resume(trained):
    _bad(CliRunner().invoke(app, ["train-layerwise", *TINY_ARGS, "--out", str(trained)]), "--resume")


def test_bad_model_not_a_checkpoint(tmp_path):
    f = tmp_path / "model.pt"
    f.write_bytes(b"definitely not a checkpoint")
    _bad(CliRunner().invoke(app, ["evaluate", str(f), "--problem", "tiny-cartesian", "--size", "16"]),
         "model.pt")


@pytest.fixture(scope="module")
def kspace_file(tmp_path_factory) -> Path:
    import numpy as np

    from convexrecon.nets.layerwise_data import DataSpec, load_split

    data = load_split(DataSpec(size=64, mask="cartesian-1d", center_fraction=0.25), "test", n=2)
    f = tmp_path_factory.mktemp("k") / "k.npy"
    np.save(f, data.kspace.numpy())
    return f


def test_recon_learned_applies_a_saved_model(trained, kspace_file, tmp_path):
    import numpy as np

    out = tmp_path / "x.npy"
    result = CliRunner().invoke(app, ["recon", str(kspace_file), "--method", "learned", "--model",
                                      str(trained / "checkpoint.pt"), "--out", str(out), "-q"])
    _ok(result)
    x = np.load(out)
    assert x.shape == (2, 64, 64) and np.isfinite(x).all() and np.abs(x).max() > 0


def test_recon_learned_bad_model(kspace_file, tmp_path):
    bad = tmp_path / "m.pt"
    bad.write_text("nope")
    out = tmp_path / "x.npy"
    _bad(CliRunner().invoke(app, ["recon", str(kspace_file), "--method", "learned", "--model", str(bad),
                                  "--out", str(out)]), "m.pt")
    assert not out.exists()
    _bad(CliRunner().invoke(app, ["recon", str(kspace_file), "--method", "learned", "--out", str(out)]),
         "--model")
    assert not out.exists()


@pytest.mark.parametrize("arch", ["gated", "unet"])
def test_train_e2e_tiny(trained, tmp_path, arch):
    out = tmp_path / arch
    args = ["train-e2e", *TINY_ARGS, "--arch", arch, "--epochs", "1", "--out", str(out)]
    if arch == "gated":
        args += ["--like", str(trained / "checkpoint.pt")]
    _ok(CliRunner().invoke(app, args))
    net = load_model(out / "checkpoint.pt")
    if arch == "gated":
        assert net.widths() == load_model(trained / "checkpoint.pt").widths()
    assert json.loads((out / "metrics.json").read_text())["epochs"]


@pytest.fixture(scope="module")
def relu_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("relu") / "run"
    _ok(CliRunner().invoke(app, ["train-layerwise", *TINY_ARGS, "--layers", "1", "--form", "relu",
                                 "--out", str(out)]))
    return out


def _check_run(out: Path, solver: str) -> None:
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["layers"][0]["solver"] == solver and metrics["layers"][0]["certificate"] >= 0
    net = load_model(out / "checkpoint.pt")
    assert net.depth == 1 and net.widths() == metrics["widths"]


def test_tiny_run_relu_form(relu_run):
    _check_run(relu_run, "auglag")
    assert not hasattr(load_model(relu_run / "checkpoint.pt").blocks[0], "gates")  # ReLU layers


def test_tiny_run_minibatch_solver(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train-layerwise", *TINY_ARGS, "--layers", "1", "--solver", "minibatch",
                                      "--batch-size", "2", "--passes", "2", "--out", str(out)])
    _ok(result)
    assert "layer-wise training" in result.stdout
    _check_run(out, "minibatch/2")


def test_bad_like_relu_checkpoint(relu_run, tmp_path):
    e2e = tmp_path / "e2e"
    _bad(CliRunner().invoke(app, ["train-e2e", *TINY_ARGS, "--like", str(relu_run / "checkpoint.pt"),
                                  "--epochs", "1", "--out", str(e2e)]), "relu")
    assert not e2e.exists()
