"""The convex two-layer CNN programs: operator, gated program vs cvxpy, certificates,
recovered networks, the ReLU (cone) form and bad input. float64 throughout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convexrecon.errors import InputError
from convexrecon.operators import dot_test
from convexrecon.operators.conv import (PatternConv, channels_to_complex, complex_to_channels,
                                        pad_input, pattern_masks, random_gates)
from convexrecon.programs.relu import ConvGatedReLU, ConvTwoLayerReLUCone
from convexrecon.solvers.auglag import ConvReLUAugLag
from convexrecon.solvers.fista import FISTA

ConvTwoLayerReLU = ConvGatedReLU  # the program's former name (a deprecated alias now)

D64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convolutions run fastest on one thread (and the machine is shared)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _data(n=2, c=2, co=2, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, h, w, generator=g, dtype=D64),
            torch.randn(n, co, h, w, generator=g, dtype=D64))


def _reference_forward(x, gates, u, padding, bias):
    """Sum over patterns of mask * conv, written with padded conv2d calls."""
    k = gates.shape[-1]
    r = k // 2
    xp = F.pad(x, (r,) * 4, mode="circular") if padding == "circular" else F.pad(x, (r,) * 4)
    if bias:
        xp = torch.cat([xp, torch.full_like(xp[:, :1], 1.0 / k)], dim=1)
    out = 0
    for i in range(gates.shape[0]):
        d = (F.conv2d(xp, gates[i:i + 1]) >= 0).to(x.dtype)
        out = out + d * F.conv2d(xp, u[i])
    return out


# -- operator ----------------------------------------------------------------------------
@pytest.mark.parametrize("padding,bias", [("zeros", True), ("circular", False), ("circular", True)])
def test_operator_matches_reference_and_adjoint(padding, bias):
    x, _ = _data(c=2, h=7, w=6)
    gates = random_gates(5, 2, 3, bias=bias, seed=1, dtype=D64)
    op = PatternConv.from_images(x, gates, c_out=3, padding=padding, bias=bias)
    u = torch.randn(op.ishape, dtype=D64)
    ref = _reference_forward(x, gates, u, padding, bias)
    assert torch.allclose(op(u), ref, rtol=1e-12, atol=1e-12)
    # adjoint: the filter-gradient correlation of each masked pattern
    y = torch.randn(op.oshape, dtype=D64)
    xp = pad_input(x, 3, padding=padding, bias=bias)
    masks = pattern_masks(xp, gates).to(D64)
    adj = torch.stack([torch.nn.grad.conv2d_weight(xp, u[i].shape, masks[:, i:i + 1] * y)
                       for i in range(5)])
    assert torch.allclose(op.adjoint(y), adj, rtol=1e-12, atol=1e-12)
    assert dot_test(op) < 1e-12
    assert dot_test(op, batch=(2, 3), seed=1) < 1e-12


def test_operator_equals_patch_matrix_form():
    x, _ = _data(c=1, h=5, w=5)
    gates = random_gates(3, 1, 3, seed=2, dtype=D64)
    op = PatternConv.from_images(x, gates, c_out=2)
    u = torch.randn(op.ishape, dtype=D64)
    xm, dm = op.patch_matrix(), op.mask_matrix()
    pred = sum(dm[:, i:i + 1] * (xm @ u[i].reshape(2, -1).T) for i in range(3))
    out = op(u).permute(0, 2, 3, 1).reshape(-1, 2)
    assert torch.allclose(out, pred, rtol=1e-12, atol=1e-12)


def test_bias_channel_is_a_true_bias():
    """The constant channel is constant after padding, also at the borders."""
    x = torch.zeros(1, 1, 6, 6, dtype=D64)
    xp = pad_input(x, 5, padding="zeros", bias=True)
    assert torch.all(xp[:, 1] == 0.2)
    gates = random_gates(2, 1, 5, seed=0, dtype=D64)
    op = PatternConv(xp, torch.ones(1, 2, 6, 6, dtype=torch.bool), c_out=1)
    u = torch.zeros(op.ishape, dtype=D64)
    u[0, 0, 1] = 1.0  # bias taps of pattern 0: bias = 25 * 0.2 = 5
    assert torch.allclose(op(u), torch.full((1, 1, 6, 6), 5.0, dtype=D64))
    assert gates.shape == (2, 2, 5, 5)


def test_complex_images_become_channels():
    z = torch.randn(3, 2, 4, 4, dtype=torch.complex128)
    ch = complex_to_channels(z)
    assert ch.shape == (3, 4, 4, 4) and torch.equal(ch[:, 0], z[:, 0].real)
    assert torch.equal(ch[:, 3], z[:, 1].imag)
    assert torch.equal(channels_to_complex(ch), z)
    prog = ConvTwoLayerReLU(z[:, :1], z[:, 1:], beta=1.0, n_patterns=2)
    assert prog.shape == (2, 2, 3, 3, 3)


# -- gated program vs cvxpy ---------------------------------------------------------------
@pytest.fixture(scope="module")
def solved():
    """The N=2, 8x8, 3x3 gated program solved by cvxpy (CLARABEL) and by FISTA."""
    x, y = _data()
    prog = ConvTwoLayerReLU(x, y, kernel_size=3, n_patterns=8, beta=1.0, seed=0)
    prog.set_beta(0.1 * prog.beta_max())
    problem, to_x = prog.to_cvxpy()
    problem.solve(solver="CLARABEL")
    res = FISTA(prog, tol=1e-9, max_iter=5000, check_every=10).run()
    return prog, float(problem.value), to_x(), res


def test_fista_reaches_cvxpy_optimum(solved):
    prog, opt, u_cvx, res = solved
    assert res.converged
    assert abs(prog.value(res.x) - opt) <= 1e-4 * opt
    assert abs(prog.value(u_cvx) - opt) <= 1e-6 * opt


def test_certificate_near_zero_at_optimum_large_away(solved):
    prog, _, u_cvx, res = solved
    assert prog.certificate(u_cvx) < 1e-6
    assert prog.certificate(res.x) < 1e-8
    assert prog.certificate(prog.zeros()) > 0.1
    assert prog.certificate(res.x + 0.1 * torch.randn(prog.shape, dtype=D64)) > 1e-2


def test_pattern_check(solved):
    """<= 1 on the program's own gates; above 1 exactly when a fresh pattern lowers
    the objective (its filter block's directional derivative is beta - sigma_max)."""
    from convexrecon.operators.conv import random_gates as gates_of

    prog, _, u, res = solved
    assert prog.pattern_check(res.x, seed=0) <= 1 + 1e-6  # the same gates: nothing new
    ratio = prog.pattern_check(u, n_fresh=16, seed=7)
    assert ratio > 1.5  # 8 patterns at 0.1 beta_max are too few
    fresh = gates_of(16, prog.n_channels_raw, prog.kernel_size, bias=prog.bias,
                     bias_scale=prog.gate_bias_scale, seed=7, dtype=D64)
    x, y = _data()
    union = type(prog)(x, y, kernel_size=3, beta=prog.beta, gates=torch.cat([prog.gates, fresh]))
    r = union.Y - union.predict(torch.cat([u, torch.zeros_like(u[:1]).expand(16, *u.shape[1:])]))
    blocks = union.op.adjoint(r)[8:].reshape(16, 2, -1)  # fresh blocks, (C_out, C k k)
    sig = torch.linalg.matrix_norm(blocks, ord=2)
    assert abs(float(sig.max()) / prog.beta - ratio) <= 1e-6 * ratio
    # a step along the worst block's top singular pair lowers the objective
    j = int(sig.argmax())
    left, _, right = torch.linalg.svd(blocks[j])
    v = torch.zeros(union.shape, dtype=D64)
    v[8 + j] = (left[:, :1] @ right[:1]).reshape(union.shape[1:])
    u0 = torch.cat([u, torch.zeros(16, *u.shape[1:], dtype=D64)])
    t = (float(sig[j]) - prog.beta) / float(union.predict(v).pow(2).sum())
    assert union.value(u0 + t * v) < union.value(u0) - 0.1 * t * (float(sig[j]) - prog.beta)


def test_warm_start_converges_at_once(solved):
    prog, _, _, res = solved
    again = FISTA(prog, tol=1e-8, max_iter=100, check_every=1).run(res.x)
    assert again.converged and again.state.it <= 1


def test_recovered_network_reproduces_optimum(solved):
    prog, opt, _, res = solved
    net = prog.recover_network(res.x)
    x = prog.op.x_padded[:, :2, 1:-1, 1:-1]  # the raw images
    with torch.no_grad():
        out = net(x)
        total = 0.5 * (out - prog.Y).pow(2).sum() + net.penalty(prog.beta)
    assert torch.allclose(out, prog.predict(res.x), rtol=1e-10, atol=1e-10)
    assert abs(float(total) - prog.value(res.x)) <= 1e-6 * prog.value(res.x)
    assert abs(float(total) - opt) <= 1e-4 * opt


def test_module_level_recover_network_dispatches(solved):
    from convexrecon.programs import recover_network

    prog, _, _, res = solved
    x = prog.op.x_padded[:, :2, 1:-1, 1:-1]
    with torch.no_grad():
        assert torch.allclose(recover_network(prog, res.x)(x), prog.recover_network(res.x)(x))


@pytest.mark.parametrize("padding,bias", [("zeros", True), ("circular", False)])
def test_features_are_the_gated_hidden_layer(padding, bias):
    """features(x) is one channel per neuron (gate indicator times first-layer
    response); the second layer on it is forward(x) and the program's prediction."""
    x, y = _data(co=2, seed=5)
    prog = ConvTwoLayerReLU(x, y, kernel_size=3, n_patterns=3, beta=1.0, seed=2,
                            padding=padding, bias=bias)
    U = torch.randn(prog.shape, generator=torch.Generator().manual_seed(0), dtype=D64)
    net = prog.recover_network(U)
    with torch.no_grad():
        feats = net.features(x)
        out = net(x)
    m = net.first.shape[0]
    assert m == 3 * 2  # every singular component of every pattern (rank C_out = 2)
    assert feats.shape == (2, m, 8, 8)
    assert torch.allclose(F.conv2d(feats, net.second), out, rtol=1e-12, atol=1e-12)
    assert torch.allclose(out, prog.predict(U), rtol=1e-10, atol=1e-10)
    xp = pad_input(x, 3, padding=padding, bias=bias)
    for j in range(m):
        gate = (F.conv2d(xp, net.gates[net.gate_index[j]][None]) >= 0).to(D64)
        ref = gate * F.conv2d(xp, net.first[j:j + 1].detach())
        assert torch.allclose(feats[:, j:j + 1], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding,bias", [("circular", False), ("circular", True)])
def test_circular_padding_vs_cvxpy(padding, bias):
    x, y = _data(co=1, seed=3)
    prog = ConvTwoLayerReLU(x, y, kernel_size=3, n_patterns=4, beta=1.0, seed=1,
                            padding=padding, bias=bias)
    prog.set_beta(0.05 * prog.beta_max())
    problem, _ = prog.to_cvxpy()
    problem.solve(solver="CLARABEL")
    res = FISTA(prog, tol=1e-8, max_iter=5000, check_every=10).run()
    assert abs(prog.value(res.x) - problem.value) <= 1e-4 * problem.value


# -- ReLU (cone) form ---------------------------------------------------------------------
def test_cone_form_vs_cvxpy():
    x, y = _data(seed=4)
    prog = ConvTwoLayerReLUCone(x, y, kernel_size=3, n_patterns=4, beta=1.0, seed=0)
    prog.set_beta(0.1 * prog.beta_max())
    problem, to_x = prog.to_cvxpy()
    problem.solve(solver="CLARABEL")
    opt = float(problem.value)
    assert prog.kkt(to_x()).violation < 1e-6
    solver = ConvReLUAugLag(prog, tol=1e-4, max_outer=30, inner_iter=100)
    res = solver.run()
    info = prog.kkt(res.x, multipliers=solver.multipliers(res.state))
    assert abs(info.primal - opt) <= 2e-3 * opt
    assert info.violation < 1e-4 and info.gap < 2e-2
    assert info.dual <= opt * (1 + 1e-9)  # a valid lower bound
    assert prog.certificate(prog.zeros()) > 0.1


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(beta=0.0), "beta"),
    (dict(beta=-1.0), "beta"),
    (dict(beta=1.0, n_patterns=0), "n_patterns"),
    (dict(beta=1.0, kernel_size=4), "kernel_size"),
    (dict(beta=1.0, padding="reflect"), "padding"),
])
def test_bad_options(kwargs, match):
    x, y = _data()
    with pytest.raises(InputError, match=match):
        ConvTwoLayerReLU(x, y, **kwargs)


def test_bad_data():
    x, y = _data()
    with pytest.raises(InputError, match="Y"):
        ConvTwoLayerReLU(x, y[:1], beta=1.0)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="X"):
        ConvTwoLayerReLU(bad, y, beta=1.0)
    with pytest.raises(InputError, match="X"):
        ConvTwoLayerReLU(x[0], y, beta=1.0)
    prog = ConvTwoLayerReLU(x, y, beta=1.0, n_patterns=2)
    with pytest.raises(InputError, match="shape"):
        prog.value(torch.zeros(3))


def test_to_cvxpy_too_large():
    x, y = _data(h=24, w=24)
    prog = ConvTwoLayerReLU(x, y, beta=1.0, n_patterns=2)
    with pytest.raises(InputError, match="CVXPY_MAX_ROWS"):
        prog.to_cvxpy()
