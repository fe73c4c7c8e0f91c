"""Convex two-layer ReLU programs on data matrices: values, certificates, cvxpy
export, network recovery and input checks."""

from __future__ import annotations

import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.programs.relu import (GatedNet, GatedReLU, Patterns, TwoLayerNet, TwoLayerReLU,
                                       cone_decomposition, min_norm_cone_decomposition,
                                       network_objective, recover_network, sample_patterns)


def make_data(n: int, d: int, *, seed: int = 0, c: int = 1, noise: float = 0.1):
    """Seeded Gaussian ``X (n, d)``; ``y`` from a planted 8-neuron ReLU net plus noise."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    W1 = torch.randn(d, 8, generator=g, dtype=torch.float64) / d ** 0.5
    W2 = torch.randn(8, c, generator=g, dtype=torch.float64)
    y = torch.relu(X @ W1) @ W2 + noise * torch.randn(n, c, generator=g, dtype=torch.float64)
    return X, (y[:, 0] if c == 1 else y)


def cvx_solve(prog):
    problem, to_x = prog.to_cvxpy()
    problem.solve(solver="CLARABEL", tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9)
    return problem, to_x()


CASES = [(60, 5, 0, 1e-2), (120, 12, 1, 1e-2), (150, 8, 2, 1e-3)]


def test_patterns_are_distinct_nonzero_bool():
    X, _ = make_data(80, 6)
    pats = sample_patterns(X, 40, seed=3)
    D = pats.D
    assert D.dtype == torch.bool and D.shape[0] == 80
    assert bool(D.any(dim=0).all())
    assert len({tuple(col.tolist()) for col in D.T}) == D.shape[1]
    assert torch.equal(X @ pats.gates >= 0, D)
    again = sample_patterns(X, 40, seed=3)
    assert torch.equal(again.D, D)


@pytest.mark.parametrize("n,d,seed,beta", CASES)
def test_gated_value_and_gap_at_cvxpy_optimum(n, d, seed, beta):
    X, y = make_data(n, d, seed=seed)
    prog = GatedReLU(X, y, n_patterns=15, beta=beta, seed=seed)
    problem, x = cvx_solve(prog)
    assert prog.value(x) == pytest.approx(problem.value, rel=1e-7)
    assert prog.certificate(x) < 1e-6
    assert prog.certificate(prog.zeros()) > 0.5


@pytest.mark.parametrize("n,d,seed,beta", CASES[:2])
def test_relu_value_and_kkt_at_cvxpy_optimum(n, d, seed, beta):
    X, y = make_data(n, d, seed=seed)
    prog = TwoLayerReLU(X, y, n_patterns=12, beta=beta, seed=seed)
    problem, x = cvx_solve(prog)
    assert prog.value(x) == pytest.approx(problem.value, rel=1e-7)
    kkt = prog.kkt(x)
    assert kkt.violation < 1e-8
    assert kkt.max < 1e-3
    assert prog.certificate(prog.zeros()) > 1.0
    # a feasible but poor point: scaled optimum
    far = tuple(0.5 * t for t in x)
    assert prog.certificate(far) > 1e-2


def test_vector_outputs_gated_and_relu():
    X, Y = make_data(70, 6, seed=4, c=2)
    gated = GatedReLU(X, Y, n_patterns=10, beta=1e-2, seed=1)
    problem, U = cvx_solve(gated)
    assert U.shape == (gated.D.shape[1], 6, 2)
    assert gated.value(U) == pytest.approx(problem.value, rel=1e-6)
    assert gated.certificate(U) < 1e-5
    relu = TwoLayerReLU(X, Y, n_patterns=10, beta=1e-2, seed=1)
    problem, x = cvx_solve(relu)
    # one scalar program per output column
    total = 0.0
    for k in range(2):
        single = TwoLayerReLU(X, Y[:, k], patterns=relu.data.patterns, beta=1e-2)
        p_k, _ = cvx_solve(single)
        total += p_k.value
    assert relu.value(x) == pytest.approx(total, rel=1e-6)


@pytest.mark.parametrize("c", [1, 2])
def test_recovered_relu_network_reproduces_optimum(c):
    X, y = make_data(80, 6, seed=5, c=c)
    prog = TwoLayerReLU(X, y, n_patterns=12, beta=1e-2, seed=2)
    problem, x = cvx_solve(prog)
    net = recover_network(prog, x)
    assert isinstance(net, TwoLayerNet) and not isinstance(net, GatedNet)
    assert network_objective(net, X, y, prog.beta) == pytest.approx(prog.value(x), rel=1e-6)
    with torch.no_grad():
        assert torch.allclose(net(X), prog.predict(x), atol=1e-7)


@pytest.mark.parametrize("c", [1, 2])
def test_recovered_gated_network_reproduces_optimum(c):
    X, y = make_data(80, 6, seed=6, c=c)
    prog = GatedReLU(X, y, n_patterns=12, beta=1e-2, seed=2)
    problem, U = cvx_solve(prog)
    net = recover_network(prog, U)
    assert isinstance(net, GatedNet)
    assert network_objective(net, X, y, prog.beta) == pytest.approx(prog.value(U), rel=1e-6)
    with torch.no_grad():
        assert torch.allclose(net(X), prog.predict(U), atol=1e-7)


@pytest.mark.parametrize("c", [1, 2])
def test_cone_decomposition_gives_a_relu_network_with_the_gated_outputs(c):
    X, y = make_data(80, 6, seed=6, c=c)
    prog = GatedReLU(X, y, n_patterns=12, beta=1e-2, seed=2)
    _, U = cvx_solve(prog)
    relu, x = cone_decomposition(prog, U)
    assert isinstance(relu, TwoLayerReLU) and torch.equal(relu.D, prog.D)
    assert relu.violation(x) <= 1e-12  # feasible up to the rounding of X u
    assert torch.allclose(relu.predict(x), prog.predict(U), atol=1e-10)
    net = recover_network(relu, x)
    assert isinstance(net, TwoLayerNet) and not isinstance(net, GatedNet)
    with torch.no_grad():
        assert torch.allclose(net(X), prog.predict(U), atol=1e-8)
    assert network_objective(net, X, y, prog.beta) == pytest.approx(relu.value(x), rel=1e-6)
    assert relu.value(x) >= prog.value(U) - 1e-12  # the decomposition costs penalty
    # the smallest-penalty decomposition: same outputs, feasible, between the two
    relu2, x2 = min_norm_cone_decomposition(prog, U)
    assert relu2.violation(x2) <= 1e-12  # cvxpy's point, shifted along the gates
    assert torch.allclose(relu2.predict(x2), prog.predict(U), atol=1e-10)
    assert prog.value(U) - 1e-12 <= relu2.value(x2) <= relu.value(x) + 1e-9
    _, xr = cvx_solve(relu)
    assert relu2.value(x2) >= relu.value(xr) * (1 - 1e-6)  # a ReLU point: not below p*


def test_cone_decomposition_bad_input():
    X, y = make_data(20, 3, seed=1)
    with pytest.raises(InputError, match="GatedReLU"):
        cone_decomposition(TwoLayerReLU(X, y, n_patterns=4, beta=1e-2), None)
    D = X @ torch.eye(3, dtype=X.dtype) >= 0
    with pytest.raises(InputError, match="gates"):
        cone_decomposition(GatedReLU(X, y, beta=1e-2, patterns=Patterns(D, None)),
                           torch.zeros(3, 3, 1, dtype=X.dtype))
    X = X.clone()
    X[0] = torch.tensor([0.0, 1.0, 0.0])  # on the boundary of gate e_1: X_0 g_0 = 0
    gates = torch.eye(3, dtype=X.dtype)
    prog = GatedReLU(X, y, beta=1e-2, patterns=Patterns(X @ gates >= 0, gates))
    U = torch.zeros(prog.data.block_shape, dtype=X.dtype)
    U[0, 1, 0] = -1.0  # violates row 0 of pattern 0, which the gate cannot fix
    with pytest.raises(InputError, match="pattern 0"):
        cone_decomposition(prog, U)


def test_pattern_check_flags_too_few_patterns():
    """Above 1 when fresh patterns lower the optimum; at most 1 once they are in."""
    from convexrecon.programs import GatedReLU as Gated, Patterns as Pats
    from convexrecon.programs import sample_patterns as sample

    X, y = make_data(100, 8, seed=7)
    few = Gated(X, y, n_patterns=2, beta=1e-3, seed=0)
    problem, U = cvx_solve(few)
    ratio = few.pattern_check(U, n_fresh=64, seed=1)
    assert ratio > 1.1
    # the check's fresh gates (the same draw): the ratio is max_j ||X^T D_j r|| / beta
    # with r the residual at the optimum (the dual point, up to the solver's accuracy)
    fresh = sample(few.data.X, 64, seed=1)
    r = (few.data.Y - few.data.apply(U)).reshape(-1)
    norms = torch.linalg.vector_norm(few.data.X.T @ (fresh.D.to(r.dtype) * r[:, None]), dim=0)
    assert abs(float(norms.max()) / few.beta - ratio) <= 1e-3 * ratio
    # added to the program, they lower the optimum, and at the new optimum the same
    # check finds nothing new
    union = Gated(X, y, beta=1e-3, patterns=Pats(
        D=torch.cat([few.D, fresh.D], 1),
        gates=torch.cat([few.data.patterns.gates, fresh.gates], 1)))
    problem_u, U2 = cvx_solve(union)
    assert problem_u.value < 0.5 * problem.value
    assert union.pattern_check(U2, n_fresh=64, seed=1) <= 1 + 1e-5


def test_float32_program_and_to():
    X, y = make_data(50, 5)
    prog = GatedReLU(X.float(), y.float(), n_patterns=8, beta=1e-2)
    assert prog.data.X.dtype == torch.float32
    p64 = prog.to(dtype=torch.float64)
    assert p64.data.X.dtype == torch.float64 and torch.equal(p64.D, prog.D)
    with pytest.raises(InputError, match="dtype"):
        prog.to(dtype=torch.int32)


@pytest.mark.parametrize("cls", [GatedReLU, TwoLayerReLU])
def test_bad_input(cls):
    X, y = make_data(40, 4)
    with pytest.raises(InputError, match="y: expected 40 rows"):
        cls(X, y[:30], n_patterns=5, beta=1.0)
    bad = X.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InputError, match="X: expected finite"):
        cls(bad, y, n_patterns=5, beta=1.0)
    yb = y.clone()
    yb[3] = float("inf")
    with pytest.raises(InputError, match="y: expected finite"):
        cls(X, yb, n_patterns=5, beta=1.0)
    for beta in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="beta"):
            cls(X, y, n_patterns=5, beta=beta)
    with pytest.raises(InputError, match="n_patterns"):
        cls(X, y, n_patterns=0, beta=1.0)
    seed = next(s for s in range(50) if float(torch.randn(
        1, 1, generator=torch.Generator().manual_seed(s), dtype=torch.float64)) > 0)
    with pytest.raises(InputError, match="non-zero pattern"):
        cls(-torch.ones(40, 1, dtype=torch.float64), y, n_patterns=1, beta=1.0, seed=seed)
    zero = Patterns(D=torch.zeros(40, 3, dtype=torch.bool), gates=None)
    with pytest.raises(InputError, match="patterns.D"):
        cls(X, y, patterns=zero, beta=1.0)
    with pytest.raises(InputError, match="complex"):
        cls(X, y.to(torch.complex128), n_patterns=5, beta=1.0)
    prog = cls(X, y, n_patterns=5, beta=1.0)
    with pytest.raises(InputError, match="max_size=10"):
        prog.to_cvxpy(max_size=10)
    with pytest.raises(InputError, match="x"):
        prog.value(torch.zeros(3))


def test_to_cvxpy_size_limit_default_names_limit():
    X, y = make_data(2000, 40)
    prog = TwoLayerReLU(X, y, n_patterns=200, beta=1.0)
    with pytest.raises(InputError, match="the limit is max_size=400000"):
        prog.to_cvxpy()
