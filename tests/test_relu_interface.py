"""One interface for the convex two-layer ReLU family: the package's import graph,
the members all four programs share, the deprecated alias, the conv cone form's
recovered network, the solvers' protocol (state on the State, warm starts through
init, Columnwise) and the stochastic mode of the conv programs."""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import convexrecon
from convexrecon.errors import InputError
from convexrecon.operators.conv import pad_input
from convexrecon.programs import ConvTwoLayerReLU as AliasFromPrograms
from convexrecon.programs.relu import (KKT, ConvGatedReLU, ConvTwoLayerReLU, ConvTwoLayerReLUCone,
                                       GatedReLU, ReLUConvNet, TwoLayerReLU, gate_shift,
                                       recover_network)
from convexrecon.solvers import (ADMMGated, Columnwise, ConvReLUAugLag, FISTA, MiniBatchConv,
                                 Solver, solve)
from convexrecon.solvers.solve import Entry, register
from test_relu import make_data
from test_relu_conv import _data, _one_thread  # noqa: F401  (the autouse fixture applies here)

D64 = torch.float64
ROOT = Path(convexrecon.__file__).resolve().parent


def _images(n=4, c=1, co=1, seed=0):
    return _data(n=n, c=c, co=co, seed=seed)


# -- import graph ------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every convexrecon module that ``path`` imports (also inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names
                    if f"{node.module}.{a.name}" in known}
    return out


def test_programs_and_solvers_import_one_way():
    files = sorted((ROOT / "programs").rglob("*.py")) + sorted((ROOT / "solvers").rglob("*.py"))
    names = {_module_name(f): f for f in files}
    known = set(names) | {_module_name(f) for f in ROOT.rglob("*.py")}
    graph = {m: _imports(f, known) & set(names) for m, f in names.items()}
    assert "convexrecon.programs.relu.conv_cone" in graph and len(graph) > 20
    for m, deps in graph.items():
        if m.startswith("convexrecon.programs"):
            bad = sorted(d for d in _imports(names[m], known) if d.startswith("convexrecon.solvers"))
            assert not bad, f"{m} imports {bad}"
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [m, d]))
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
    assert not any(f.name.startswith("relu_") for f in (ROOT / "programs").glob("*.py"))


def test_lower_layers_do_not_import_the_model_layers():
    """operators -> programs -> solvers -> models / trainers: nothing below imports
    data, training, nets or implicit (the collectives they share sit in
    convexrecon.collectives)."""
    upper = ("convexrecon.training", "convexrecon.nets", "convexrecon.implicit", "convexrecon.data")
    known = {_module_name(f) for f in ROOT.rglob("*.py")}
    for layer in ("operators", "programs", "solvers", "fixedpoint"):
        for f in sorted((ROOT / layer).rglob("*.py")):
            bad = sorted(d for d in _imports(f, known) if d.startswith(upper)
                         and d != "convexrecon.data.transforms")  # complex <-> channels, torch only
            assert not bad, f"{_module_name(f)} imports {bad}"


# -- the four programs -------------------------------------------------------------------
def _four():
    X, y = make_data(40, 4, seed=1)
    x, yi = _images()
    kw = dict(kernel_size=3, n_patterns=3, beta=1.0, seed=0)
    return [GatedReLU(X, y, n_patterns=6, beta=1.0, seed=0),
            TwoLayerReLU(X, y, n_patterns=6, beta=1.0, seed=0),
            ConvGatedReLU(x, yi, **kw), ConvTwoLayerReLUCone(x, yi, **kw)]


@pytest.mark.parametrize("k", range(4))
def test_shared_members(k):
    prog = _four()[k]
    assert prog.gates is not None and prog.gates.shape[0] == 3 + 3 * (k < 2)
    bmax = prog.beta_max()
    prog.set_beta(bmax)  # at beta_max zero is optimal ...
    assert prog.beta == pytest.approx(bmax)
    zero = prog.zeros()
    info = prog.kkt(zero)
    assert isinstance(info, KKT) and info.max == pytest.approx(prog.certificate(zero), abs=1e-12)
    assert prog.certificate(zero) <= 1e-9
    prog.set_beta(0.5 * bmax)  # ... and below it, it is not
    assert prog.certificate(zero) > 1e-3
    assert prog.pattern_check(zero) == pytest.approx(2.0 * prog.pattern_check(zero) / 2.0)
    assert math.isfinite(prog.pattern_check(zero)) and prog.pattern_check(zero) > 0
    with pytest.raises(InputError, match="beta"):
        prog.set_beta(0.0)
    net = recover_network(prog, zero)
    assert isinstance(net, torch.nn.Module)


def test_conv_gated_alias_is_deprecated():
    x, y = _images()
    assert AliasFromPrograms is ConvTwoLayerReLU
    with pytest.warns(DeprecationWarning, match="ConvGatedReLU"):
        old = ConvTwoLayerReLU(x, y, n_patterns=2, beta=1.0)
    assert isinstance(old, ConvGatedReLU)
    assert solve(old, max_iter=3).method == "fista"


def _feasible_cone_point(prog: ConvTwoLayerReLUCone, seed: int = 0):
    """A random filter set moved along its gates into the cones (exactly feasible)."""
    U = torch.randn(prog.shape, generator=torch.Generator().manual_seed(seed), dtype=D64)
    op = prog.op
    sign = (2.0 * op.maskf[:, 0, :, 0] - 1.0).unsqueeze(2)          # (N, P, 1, H, W)
    slack = (sign * op.conv_all(U)).permute(0, 3, 4, 1, 2).reshape(-1, *U.shape[:2])
    gate_slack = op.conv_all(prog.gates).abs().permute(0, 2, 3, 1).reshape(-1, U.shape[0], 1)
    tau, stuck = gate_shift(slack, gate_slack)
    assert not bool(stuck.any())
    shift = tau[..., None, None, None] * prog.gates[:, None]
    return U + shift, shift


@pytest.mark.parametrize("padding,bias", [("zeros", True), ("circular", False)])
def test_cone_recovered_relu_network_reproduces_predictions(padding, bias):
    x, y = _images(co=2, seed=3)
    prog = ConvTwoLayerReLUCone(x, y, kernel_size=3, n_patterns=3, beta=0.7, seed=1,
                                padding=padding, bias=bias)
    V, W = _feasible_cone_point(prog)
    assert prog.violation((V, W)) <= 1e-12
    net = prog.recover_network((V, W))
    assert isinstance(net, ReLUConvNet) and net.first.shape[0] == 2 * 3 * 2
    with torch.no_grad():
        out = net(x)
        feats = net.features(x)
        total = 0.5 * (out - prog.Y).pow(2).sum() + net.penalty(prog.beta)
    assert torch.allclose(out, prog.predict((V, W)), rtol=1e-10, atol=1e-10)
    assert torch.allclose(F.conv2d(feats, net.second), out, rtol=1e-12, atol=1e-12)
    assert bool((feats >= 0).all())
    assert float(total) == pytest.approx(prog.value((V, W)), rel=1e-10)
    # an infeasible point is not reproduced: the ReLU clips what the pattern keeps
    U = V - 2 * W
    with torch.no_grad():
        assert not torch.allclose(prog.recover_network((U, W))(x), prog.predict((U, W)))
    xp = pad_input(x, 3, padding=padding, bias=bias)
    j = 0
    assert torch.allclose(feats[:, j:j + 1], torch.relu(F.conv2d(xp, net.first[j:j + 1].detach())))


# -- solvers on the protocol -------------------------------------------------------------
def test_admm_state_lives_on_the_state():
    X, y = make_data(60, 5, seed=2)
    prog = GatedReLU(X, y, n_patterns=8, beta=5e-2, seed=0)
    solver = ADMMGated(prog, tol=1e-8)
    first = solver.run()
    again = solver.run()  # same solver object, fresh run: nothing carried over
    # a run that inherited the first one's memory would start at its solution and stop
    # at once; rounding may move the last iteration, so the counts agree within one
    assert first.state.it > 3 and abs(again.state.it - first.state.it) <= 1
    assert torch.allclose(again.x, first.x, rtol=1e-6, atol=1e-9)
    assert first.state.aa is not None and not hasattr(solver, "aa")
    dual = solver.dual(first.state)
    warm = solver.init(first.x, dual=dual)  # warm start through init
    assert warm.certificate == math.inf and solver.certificate(warm) <= 1e-7
    warm_run = solver.run(first.x, dual=dual)
    assert warm_run.converged and warm_run.state.it <= 2 * solver.check_every
    res = solve(prog, x0=first.x, dual=dual, tol=1e-8)
    assert res.converged and res.state.it <= 2 * solver.check_every


def test_auglag_warm_start_through_init():
    x, y = _images(n=2, seed=4)
    prog = ConvTwoLayerReLUCone(x, y, kernel_size=3, n_patterns=2, beta=1.0, seed=0)
    prog.set_beta(0.2 * prog.beta_max())
    solver = ConvReLUAugLag(prog, tol=1e-3, max_outer=20, inner_iter=50)
    cold = solver.run()
    assert not hasattr(solver, "multipliers_") and solver.multipliers(cold.state) is cold.state.mu
    # the multipliers of the cold run certify its point; zero multipliers do not
    with_mu = solver.certificate(solver.init(cold.x, multipliers=cold.state.mu))
    assert with_mu <= 1e-3 < solver.certificate(solver.init(cold.x))
    warm = solver.run(cold.x, multipliers=cold.state.mu)
    assert warm.converged and prog.value(warm.x) == pytest.approx(prog.value(cold.x), rel=1e-2)
    with pytest.raises(InputError, match="multipliers"):
        solver.init(None, multipliers=torch.zeros(3))


def test_columnwise_is_a_solver():
    X, Y = make_data(40, 4, seed=7, c=2)
    prog = TwoLayerReLU(X, Y, n_patterns=6, beta=1e-1, seed=0)
    cw = Columnwise(prog, tol=1e-6)
    assert isinstance(cw, Solver)
    st = cw.init()
    steps = 0
    while not cw.done(st):
        st = cw.step(st)
        steps += 1
    # bookkeeping within this one run (steps taken, the state's count, its columns' sum),
    # not a comparison with another run's iteration count
    assert steps == st.it == sum(c.it for c in st.columns) and len(st.columns) == 2
    assert cw.converged(st) and st.certificate <= 1e-6
    assert prog.value(st.x) == pytest.approx(prog.value(cw.run().x), rel=1e-10)


def test_solve_dispatches_by_program_type():
    class MyGated(GatedReLU):
        pass

    X, y = make_data(30, 3, seed=3)
    prog = MyGated(X, y, n_patterns=4, beta=1e-1, seed=0)
    assert solve(prog, tol=1e-6).method == "admm"  # a subclass inherits its entry
    register(MyGated, Entry(methods={"fista": FISTA}, auto=lambda p: "fista"))
    try:
        res = solve(prog, max_iter=5)
        assert res.method == "fista" and math.isnan(res.pattern_ratio)
        with pytest.raises(InputError, match="applicable"):
            solve(prog, method="admm")
    finally:
        del sys.modules["convexrecon.solvers.solve"]._REGISTRY[MyGated]
    assert solve(prog, tol=1e-6).method == "admm"


# -- stochastic mode for the conv programs ----------------------------------------------
def test_minibatch_conv_reaches_the_full_batch_optimum():
    x, y = _images(n=8, seed=0)
    prog = ConvGatedReLU(x, y, kernel_size=3, n_patterns=4, beta=1.0, seed=0)
    prog.set_beta(0.1 * prog.beta_max())
    ref = FISTA(prog, tol=1e-10, max_iter=20000, check_every=10).run()
    p_star = prog.value(ref.x)
    res = solve(prog, method="minibatch", batch_size=2, epochs=50, seed=0)
    assert res.method == "minibatch" and len(res.history) == 1
    assert abs(prog.value(res.x) - p_star) <= 1e-5 * p_star
    assert prog.certificate(res.x) <= 1e-3
    assert res.pattern_ratio > 0 and math.isfinite(res.pattern_ratio)
    assert math.isfinite(solve(prog, max_iter=10).pattern_ratio)  # FISTA too


def test_minibatch_conv_cone_approaches_the_cvxpy_optimum():
    x, y = _images(n=2, seed=1)
    prog = ConvTwoLayerReLUCone(x, y, kernel_size=3, n_patterns=3, beta=1.0, seed=0)
    prog.set_beta(0.1 * prog.beta_max())
    problem, _ = prog.to_cvxpy()
    problem.solve(solver="CLARABEL")
    p_star = float(problem.value)
    res = solve(prog, method="minibatch", batch_size=1, epochs=120, seed=0)
    info = prog.kkt(res.x, multipliers=res.state.mu)
    assert abs(info.primal - p_star) <= 1e-2 * p_star  # stochastic augmented Lagrangian
    assert info.violation <= 1e-2 and info.dual <= p_star * (1 + 1e-9)
    assert math.isfinite(res.pattern_ratio)
    with pytest.raises(InputError, match="ConvGatedReLU"):
        MiniBatchConv(GatedReLU(*make_data(20, 3), n_patterns=3, beta=1.0))
    with pytest.raises(InputError, match="batch_size"):
        MiniBatchConv(prog, batch_size=0)
