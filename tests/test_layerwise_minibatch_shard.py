"""The stochastic (minibatch) layer-wise step with its training images sharded across
2 gloo processes (all-reduced batch gradients) follows the one-process run: the same
iterates, objective and certificate within floating-point summation error."""

from __future__ import annotations

import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.nets.layerwise import ReconData, make_gates
from convexrecon.nets.layerwise_minibatch import BatchedLayerProgram, LayerMiniBatch
from convexrecon.nets.layerwise_program import DCMap, data_consistency, whitening_matrix
from convexrecon.operators.conv import complex_to_channels

N_IMAGES, WORLD, MU, KERNEL, PATTERNS, BATCH, EPOCHS = 4, 2, 0.1, 3, 4, 2, 3


def _data(ranks: list[int]) -> ReconData:
    from convexrecon.data import collate, from_problem

    ds = from_problem("tiny-cartesian", split="train", size=16)
    return ReconData.from_batch(collate([ds[i] for i in ranks]))


def _program(data: ReconData, gates, wmat, *, images=None) -> BatchedLayerProgram:
    import convexrecon.programs as P

    h = complex_to_channels(data.x0)
    Y = complex_to_channels(data.target - data_consistency(data.operator, data.x0, data.x0, mu=MU)).to(h.dtype)
    base = P.ConvGatedReLU(h, Y, kernel_size=KERNEL, n_patterns=PATTERNS, beta=1.0, gates=gates)

    def dc_of(idx):
        return DCMap(data.operator_of(idx), n=int(idx.numel()), mu=MU)

    return BatchedLayerProgram(base, dc_of=dc_of, whiten=wmat, batch_size=BATCH, images=images,
                               n_total=N_IMAGES)


def _replicated():
    """Gates and whitening from all images (identical on every process; beta comes
    from each run's own beta_max, all-reduced in the process group)."""
    import convexrecon.programs as P

    full = _data(list(range(N_IMAGES)))
    h = complex_to_channels(full.x0)
    gates = make_gates(h, PATTERNS, KERNEL, seed=3)
    xp = P.ConvGatedReLU(h, h[:, :2], kernel_size=KERNEL, n_patterns=PATTERNS, beta=1.0, gates=gates).op.x_padded
    return full, gates, whitening_matrix(xp, KERNEL)


def _solve(prog: BatchedLayerProgram):
    prog.set_beta(0.05 * prog.beta_max())
    res = LayerMiniBatch(prog, epochs=EPOCHS, lr=0.5, seed=7).run()
    return res.x, prog.value(res.x), prog.certificate(res.x)


def minibatch_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """torch.multiprocessing.spawn target: the step on images ``rank::world``."""
    from convexrecon.training import distributed as D

    torch.set_num_threads(1)
    D.init_process_group(rank=rank, world_size=world, init_method=f"file://{init_file}", backend="gloo")
    try:
        _, gates, wmat = _replicated()
        mine = list(range(rank, N_IMAGES, world))
        prog = _program(_data(mine), gates, wmat, images=torch.tensor(mine))
        bmax = prog.beta_max()
        x, obj, cert = _solve(prog)
        torch.save(dict(x=x, obj=obj, cert=cert, bmax=bmax), f"{out_dir}/rank{rank}.pt")
    finally:
        D.cleanup()


@pytest.mark.distributed  # about 40 s on the loaded 2-core machine (two spawned interpreters)
def test_two_gloo_processes_follow_the_one_process_minibatch_run(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(minibatch_worker, args=(WORLD, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    full, gates, wmat = _replicated()
    one = _program(full, gates, wmat)
    bmax = one.beta_max()
    x1, obj1, cert1 = _solve(one)
    for r in range(WORLD):
        got = torch.load(tmp_path / f"rank{r}.pt")
        assert got["bmax"] == pytest.approx(bmax, rel=1e-5)  # the all-reduced A^T Y
        assert got["obj"] == pytest.approx(obj1, rel=1e-4)
        assert got["cert"] == pytest.approx(cert1, rel=1e-2, abs=1e-5)
        assert float((got["x"] - x1).norm()) <= 1e-3 * float(x1.norm())


def test_bad_image_indices():
    full, gates, wmat = _replicated()
    part = _data([0, 1])
    with pytest.raises(InputError, match="images"):
        _program(part, gates, wmat, images=torch.tensor([0, 0]))
    with pytest.raises(InputError, match="images"):
        _program(part, gates, wmat, images=torch.tensor([0, 9]))


# -- the whole trainer with its training images sharded ------------------------------------

TRAIN_TOL = 1e-4


def _config(solver: str):
    from convexrecon.nets.layerwise import LayerwiseConfig

    return LayerwiseConfig(layers=2, kernel=KERNEL, patterns=PATTERNS, dc_mu=MU, beta=0.05, solver=solver,
                           batch_size=BATCH, epochs=EPOCHS, max_iter=3000, tol=TRAIN_TOL if solver == "fista" else 0.0,
                           check_every=10)


def _val() -> ReconData:
    from convexrecon.data import collate, from_problem

    ds = from_problem("tiny-cartesian", split="val", size=16)
    return ReconData.from_batch(collate([ds[i] for i in range(2)]))


def _train(data: ReconData, solver: str, images=None):
    from convexrecon.nets.layerwise import train_layerwise

    net, reps = train_layerwise(data, _val(), config=_config(solver), images=images,
                                n_total=None if images is None else N_IMAGES)
    val = _val()
    with torch.no_grad():
        out = net(val.kspace, val.operator)
    return dict(out=out, obj=[r.objective for r in reps], cert=[r.certificate for r in reps],
                train_psnr=[r.train_psnr for r in reps], width=net.widths())


def train_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """torch.multiprocessing.spawn target: train_layerwise on images ``rank::world``."""
    from convexrecon.training import distributed as D

    torch.set_num_threads(1)
    D.init_process_group(rank=rank, world_size=world, init_method=f"file://{init_file}", backend="gloo")
    try:
        mine = list(range(rank, N_IMAGES, world))
        got = {s: _train(_data(mine), s, images=torch.tensor(mine)) for s in ("fista", "minibatch")}
        torch.save(got, f"{out_dir}/train{rank}.pt")
    finally:
        D.cleanup()


@pytest.mark.distributed  # about a minute on the loaded 2-core machine
def test_two_gloo_processes_train_the_one_process_network(tmp_path):
    """Both solvers: the certified objectives agree within the tolerance (FISTA), the
    minibatch run follows the one-process iterates, the training PSNR is that of all
    images."""
    import torch.multiprocessing as mp

    mp.spawn(train_worker, args=(WORLD, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    full = _data(list(range(N_IMAGES)))
    for solver in ("fista", "minibatch"):
        one = _train(full, solver)
        for r in range(WORLD):
            got = torch.load(tmp_path / f"train{r}.pt")[solver]
            assert got["width"] == one["width"]
            rel = 2 * TRAIN_TOL if solver == "fista" else 1e-4
            for a, b in zip(got["obj"], one["obj"]):
                assert a == pytest.approx(b, rel=rel)
            for a, b in zip(got["train_psnr"], one["train_psnr"]):
                assert a == pytest.approx(b, abs=0.01)
            if solver == "fista":
                assert max(got["cert"]) <= TRAIN_TOL
            else:
                diff = float((got["out"] - one["out"]).abs().norm())
                assert diff <= 1e-3 * float(one["out"].abs().norm())


@pytest.mark.distributed  # two torchrun processes of the CLI
def test_torchrun_cli_trains_the_one_process_network(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    from convexrecon.cli.main import app
    from convexrecon.training import load_model

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun not found")
    args = ["train-layerwise", "--preset", "tiny", "--problem", "tiny-cartesian", "--solver", "minibatch",
            "--batch-size", "2", "--passes", "3", "-q"]
    cmd = [str(torchrun if torchrun.exists() else "torchrun"), "--nproc_per_node", "2", "-m",
           "convexrecon.cli.main", *args[:-1], "--out", str(tmp_path / "two")]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.count("this process trains on 2 of the 4 training slices") == 2  # sharded
    assert res.stdout.count("layer-wise training") == 1  # only the main process prints
    one = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    a = load_model(tmp_path / "one" / "checkpoint.pt").state_dict()
    b = load_model(tmp_path / "two" / "checkpoint.pt").state_dict()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=1e-4 * float(a[k].abs().max()) + 1e-8), k
