"""The full-batch convex solve of a layer-wise step (with data consistency and
whitening) with its training images sharded across 2 gloo processes gives the
one-process solution within the solver tolerance."""

from __future__ import annotations

import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.nets.layerwise import ReconData, make_gates
from convexrecon.nets.layerwise_program import DCMap, LayerProgram, data_consistency, whitening_matrix
from convexrecon.operators.conv import complex_to_channels
from convexrecon.solvers.fista import FISTA
from convexrecon.solvers.sharded import shard_program

TOL = 1e-4  # relative duality gap of the solves
N_IMAGES, WORLD, MU, KERNEL, PATTERNS = 4, 2, 0.1, 3, 4


def _samples():
    from convexrecon.data import from_problem

    ds = from_problem("tiny-cartesian", split="train", size=16)
    return [ds[i] for i in range(N_IMAGES)]


def _data(samples) -> ReconData:
    from convexrecon.data import collate

    return ReconData.from_batch(collate(samples))


def _step(data: ReconData, gates: torch.Tensor, wmat: torch.Tensor) -> LayerProgram:
    """The first layer-wise step (features ``x_0``) on ``data``'s images, with DC."""
    import convexrecon.programs as P

    h = complex_to_channels(data.x0)
    base_out = data_consistency(data.operator, data.x0, data.x0, mu=MU)
    Y = complex_to_channels(data.target - base_out).to(h.dtype)
    base = P.ConvGatedReLU(h, Y, kernel_size=KERNEL, n_patterns=PATTERNS, beta=1.0, gates=gates,
                           padding="zeros", bias=True)
    dc = DCMap(data.operator, n=len(data), mu=MU, dtype=h.dtype)
    return LayerProgram(base, Y, dc=dc, whiten=wmat)


def _replicated(full: ReconData) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Gates, whitening and beta from all images (identical on every process)."""
    h = complex_to_channels(full.x0)
    gates = make_gates(h, PATTERNS, KERNEL, seed=3)
    prog = _step(full, gates, None)
    wmat = whitening_matrix(prog.base.op.x_padded, KERNEL)
    prog = _step(full, gates, wmat)
    return gates, wmat, 0.05 * prog.beta_max()


def _solve(prog: LayerProgram, beta: float):
    prog.set_beta(beta)
    res = FISTA(prog, max_iter=3000, tol=TOL, check_every=10).run()
    return res.x, prog.value(res.x), prog.certificate(res.x)


def shard_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """torch.multiprocessing.spawn target: solve on images ``rank::world``."""
    from convexrecon.training import distributed as D

    torch.set_num_threads(1)
    D.init_process_group(rank=rank, world_size=world, init_method=f"file://{init_file}", backend="gloo")
    try:
        samples = _samples()
        gates, wmat, beta = _replicated(_data(samples))
        prog = shard_program(_step(_data(samples[rank::world]), gates, wmat))
        bmax = prog.beta_max()
        U, obj, cert = _solve(prog, beta)
        torch.save(dict(U=U, obj=obj, cert=cert, bmax=bmax), f"{out_dir}/rank{rank}.pt")
    finally:
        D.cleanup()


def test_two_gloo_processes_solve_the_one_process_step(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(shard_worker, args=(WORLD, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    full = _data(_samples())
    gates, wmat, beta = _replicated(full)
    one = _step(full, gates, wmat)
    bmax = one.beta_max()
    U1, obj1, cert1 = _solve(one, beta)
    assert cert1 <= TOL
    for r in range(WORLD):
        got = torch.load(tmp_path / f"rank{r}.pt")
        assert got["bmax"] == pytest.approx(bmax, rel=1e-5)  # the all-reduced A^T Y
        assert got["cert"] <= TOL  # its own (all-reduced) certificate
        # optimal for the one-process program, with its objective
        assert one.certificate(got["U"]) <= 2 * TOL
        assert got["obj"] == pytest.approx(obj1, rel=2 * TOL)
        assert float(one.value(got["U"])) == pytest.approx(obj1, rel=2 * TOL)
        assert float((got["U"] - U1).norm()) <= 1e-2 * float(U1.norm())
        # the two processes fitted the same outputs on the shared images
        with torch.no_grad():
            assert torch.allclose(one.predict(got["U"]), one.predict(U1),
                                  atol=1e-2 * float(one.predict(U1).abs().max()))


def test_single_process_sharding_is_the_plain_program():
    full = _data(_samples()[:2])
    gates, wmat, beta = _replicated(full)
    prog = _step(full, gates, wmat)
    sharded = shard_program(prog)
    assert sharded.smooth is not prog.smooth and sharded.base is prog.base
    x = torch.randn(prog.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sharded.smooth.normal(x), prog.smooth.normal(x))
    prog.set_beta(beta)
    assert sharded.value(x) == pytest.approx(prog.value(x), rel=1e-5)
    assert sharded.certificate(x) == pytest.approx(prog.certificate(x), rel=1e-4)
    with pytest.raises(InputError, match="LeastSquares"):
        shard_program(object())
