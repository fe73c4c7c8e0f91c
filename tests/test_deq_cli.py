"""DEQ / MoDL training wiring: the CLI commands on tiny sizes, bad input, resume with
the warm-start cache, and diverged batches (no optimiser step, abort after k)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from convexrecon.cli.main import app
from convexrecon.implicit import DEQ, ProxGradMap, WarmStartCache
from convexrecon.implicit.training import DEQHooks, TrainingDiverged, recon_loss_fn
from convexrecon.nets.denoisers import ResidualCNN
from convexrecon.training import fit, load_checkpoint, load_model
from tests.cli_helpers import ok as _ok
from tests.cli_helpers import one_line_error as _bad

TINY = ["--problem", "tiny-cartesian", "--size", "16", "--limit", "2", "--val-limit", "1",
        "--features", "4", "--depth", "2", "--skip", "0.8", "--batch-size", "2", "--quiet",
        "--threads", "1"]


def test_train_deq_writes_a_loadable_checkpoint_and_resumes_with_warm_starts(tmp_path):
    out = tmp_path / "deq"
    runner = CliRunner()
    args = ["train-deq", *TINY, "--solver", "broyden", "--backward", "shine", "--warm-start",
            "--max-iter", "15", "--rho-reg", "1", "--out", str(out)]
    _ok(runner.invoke(app, args + ["--epochs", "1"]))
    for name in ("checkpoint.pt", "metrics.json", "loss.png"):
        assert (out / name).is_file()
    ck = load_checkpoint(out / "checkpoint.pt")
    warm = ck["hook_state"]["warm_start"]
    assert sorted(warm["ids"]) == [0, 1] and warm["z"][0].shape == (16, 16)
    # a second epoch resumes from the checkpoint (the warm starts come back)
    _ok(runner.invoke(app, args + ["--epochs", "2", "--resume"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and "train_fwd_iters" in metrics["epochs"][1]
    assert "train_rho" in metrics["epochs"][1]  # the hinge measures rho in every step
    # an existing run is not overwritten without --resume
    _bad(runner.invoke(app, args + ["--epochs", "2"]), "--resume")
    model = load_model(out / "checkpoint.pt")
    assert isinstance(model, DEQ) and model.backward == "shine" and model.rho_reg == 1.0
    # the recon command applies the trained DEQ to a k-space file (forward(y, A) protocol)
    import numpy as np

    from convexrecon.data import MaskSpec, SliceDataset

    sample = SliceDataset(split="test", size=96, coils=4, mask=MaskSpec("poisson", 4.0))[0]
    np.save(tmp_path / "k.npy", sample.kspace.numpy())
    result = runner.invoke(app, ["recon", str(tmp_path / "k.npy"), "--method", "learned", "--model",
                                 str(out / "checkpoint.pt"), "--out", str(tmp_path / "x.npy"), "-q"])
    _ok(result)
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (1, 96, 96) and np.isfinite(x).all()


def test_train_deq_shine_opa_feeds_the_outer_gradient(tmp_path):
    out = tmp_path / "opa"
    args = ["train-deq", *TINY, "--solver", "broyden", "--backward", "shine-opa", "--opa-every", "2",
            "--max-iter", "15", "--epochs", "1", "--out", str(out)]
    _ok(CliRunner().invoke(app, args))
    metrics = json.loads((out / "metrics.json").read_text())
    # the forward made outer-problem-aware updates (it was given the loss's gradient)
    assert metrics["epochs"][0]["train_opa_vjps"] > 0
    model = load_model(out / "checkpoint.pt")
    assert model.backward == "shine-opa" and model.opa_every == 2


def test_train_unrolled_modl(tmp_path):
    out = tmp_path / "modl"
    result = CliRunner().invoke(app, ["train-unrolled", "--model", "modl", "--iterations", "2", *TINY,
                                      "--epochs", "1", "--out", str(out)])
    _ok(result)
    assert "val_psnr" in result.stdout
    model = load_model(out / "checkpoint.pt")
    assert model.iterations == 2


@pytest.mark.parametrize("extra, words", [
    (["--solver", "anderson", "--backward", "shine"], ("--solver broyden",)),
    (["--solver", "anderson", "--backward", "shine-opa"], ("--solver broyden",)),
    (["--solver", "broyden", "--backward", "shine-opa", "--opa-every", "0"], ("--opa-every",)),
    (["--solver", "newton"], ("--solver",)),
    (["--backward", "bptt"], ("--backward",)),
    (["--epochs", "0"], ("--epochs",)),
    (["--problem", "nope"], ("--problem",)),
    (["--mask", "spiral"], ("--mask",)),
    (["--jac-reg", "-1"], ("--jac-reg",)),
    (["--rho-reg", "-1"], ("--rho-reg",)),
    (["--rho-target", "1.5"], ("--rho-target",)),
    (["--skip", "-1"], ("--skip",)),
    (["--device", "tpu"], ()),
])
def test_train_deq_bad_input_exits_2(tmp_path, extra, words):
    out = tmp_path / "bad"
    args = ["train-deq", *TINY, "--epochs", "1", "--out", str(out)]
    _bad(CliRunner().invoke(app, args + extra), *words)
    assert not (out / "checkpoint.pt").exists()


def test_train_unrolled_bad_model_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["train-unrolled", "--model", "varnet", *TINY,
                                      "--out", str(tmp_path / "x")])
    _bad(result, "--model")
    result = CliRunner().invoke(app, ["train-unrolled", "--iterations", "0", *TINY,
                                      "--out", str(tmp_path / "x")])
    _bad(result, "--iterations")


def _tiny_data():
    from convexrecon.data import from_problem

    return from_problem("tiny-cartesian", split="train", size=16)


def test_diverged_batches_take_no_step_and_training_aborts_after_k(tmp_path):
    from torch.utils.data import Subset

    from convexrecon.data import collate

    data = Subset(_tiny_data(), [0, 1, 2, 3])
    torch.manual_seed(0)
    net = ResidualCNN(features=4, depth=2, out_scale=0.5, skip=4.0)  # an expansive map
    model = DEQ(ProxGradMap(net), solver="picard", max_iter=100, tol=1e-8, divergence=1e2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    hooks = DEQHooks(model, max_diverged=3)
    with pytest.raises(TrainingDiverged, match="3 batches in a row"):
        fit(model, loss_fn=recon_loss_fn(), dataset=data, optimizer=opt, epochs=5,
            out_dir=tmp_path / "run", batch_size=1, collate_fn=collate, hooks=hooks,
            progress=False)
    assert hooks.total == 3 and hooks.streak == 3
    assert not opt.state  # Adam never stepped
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_hooks_skip_only_diverged_batches_and_reset_the_streak():
    class Info:
        def __init__(self, bad):
            self.any_diverged = bad

    class Model(torch.nn.Module):
        last_info = None

    m = Model()
    hooks = DEQHooks(m, warm=WarmStartCache(), max_diverged=2)
    m.last_info = Info(True)
    assert hooks.accept(torch.tensor(1.0), epoch=0, step=1) is False
    m.last_info = Info(False)
    assert hooks.accept(torch.tensor(1.0), epoch=0, step=2) is True
    assert hooks.streak == 0 and hooks.total == 1
    assert hooks.accept(torch.tensor(float("nan")), epoch=0, step=3) is False
    m.last_info = Info(True)
    with pytest.raises(TrainingDiverged):
        hooks.accept(torch.tensor(1.0), epoch=0, step=4)
    state = hooks.state_dict()
    other = DEQHooks(m, warm=WarmStartCache(), max_diverged=2)
    other.load_state_dict(state)
    assert other.total == 3
    with pytest.raises(Exception, match="--warm-start"):
        DEQHooks(m, max_diverged=2).load_state_dict(state)


def test_train_deq_progress_and_metrics_carry_forward_iterations_and_residual(tmp_path):
    """The step bar shows each batch's forward iterations and residual (the loss_fn's
    extras), and metrics.json holds their epoch means."""
    out = tmp_path / "deq"
    max_iter = 10
    args = ["train-deq", *[a for a in TINY if a != "--quiet"], "--max-iter", str(max_iter),
            "--epochs", "2", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    _ok(result)
    assert "fwd_iters" in result.stderr and "fwd_residual" in result.stderr, result.stderr
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    assert len(epochs) == 2
    for e in epochs:
        assert 1 <= e["train_fwd_iters"] <= max_iter
        assert 0 <= e["train_fwd_residual"] < 1


def test_step_info_lists_the_extras():
    from convexrecon.training.progress import step_info

    text = step_info(0.5, {"fwd_iters": 12.0, "fwd_residual": 1e-3})
    assert text.startswith("loss 0.5") and "fwd_iters 12" in text and "fwd_residual 0.001" in text
    assert step_info(float("nan"), {"fwd_iters": 3.0}) == "skipped"


@pytest.mark.parametrize("max_iter, warned", [(1, True), (200, False)])
def test_learned_recon_warns_when_a_deq_stops_short_of_its_tolerance(capsys, max_iter, warned):
    from convexrecon.cli.recon_cmd import _learned
    from convexrecon.data import MaskSpec, SliceDataset

    s = SliceDataset(split="test", size=16, coils=2, mask=MaskSpec("poisson", 4.0))[0]
    torch.manual_seed(0)
    net = ResidualCNN(features=4, depth=2, skip=0.5)
    model = DEQ(ProxGradMap(net), solver="anderson", max_iter=max_iter, tol=1e-4).eval()
    x = _learned(model, s.kspace, s.mask, lam=None, iters=None, device=torch.device("cpu"), maps=s.maps)
    assert x.shape[-2:] == (16, 16) and torch.isfinite(x).all()
    err = capsys.readouterr().err
    assert ("stopped short of its tolerance" in err) == warned, err
    if warned:
        assert err.count("\n") == 1 and "1 of 1 slices" in err
