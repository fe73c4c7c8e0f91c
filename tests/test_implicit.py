"""DEQ: implicit gradients against finite differences and a long unrolled backward,
JFB/SHINE descent, SHINE's fallback rule, Hutchinson Jacobian regularisation,
divergence detection, warm-start cache, denoisers and MoDL."""

from __future__ import annotations

import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.fixedpoint import BroydenInverse
from convexrecon.implicit import (DEQ, CGDCMap, ProxGradMap, apply_spectral_norm,
                                  build_deq, estimate_rho, hutchinson_jac_fro2, real_probe,
                                  shine_threshold)
from convexrecon.implicit.backward import ift, shine
from convexrecon.implicit.stabilize import jacobian_vjp
from convexrecon.nets.denoisers import ResidualCNN, SmallUNet
from convexrecon.nets.unrolled import MoDL, build_modl
from convexrecon.operators import Sense

DT = torch.complex128


def _problem(n: int = 8, batch: int = 2, coils: int = 2, seed: int = 0):
    """A tiny scaled Cartesian problem: ``||A^H A|| <= 1``, per-sample masks."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(batch, coils, n, n, generator=g, dtype=DT)
    maps = maps / torch.sqrt((maps.abs() ** 2).sum(dim=1, keepdim=True))
    mask = torch.rand(batch, n, n, generator=g) < 0.5
    A = Sense(maps, mask)
    A._maps_src, A._mask_src = maps, mask  # for one-by-one operators in tests
    x = torch.randn(batch, n, n, generator=g, dtype=DT)
    y = A(x) + 0.01 * torch.randn(batch, coils, n, n, generator=g, dtype=DT)
    return A, y, x


def _denoiser(seed: int = 0, skip: float = 0.5, features: int = 4):
    torch.manual_seed(seed)
    return ResidualCNN(features=features, depth=3, out_scale=0.5, skip=skip).double()


def _deq(seed=0, *, solver="anderson", backward="ift", tol=1e-12, max_iter=300, dc="prox", **kw):
    net = _denoiser(seed)
    fmap = ProxGradMap(net) if dc == "prox" else CGDCMap(net, mu=0.5, cg_iter=200, cg_tol=1e-13)
    return DEQ(fmap, solver=solver, backward=backward, max_iter=max_iter, tol=tol,
               backward_max_iter=300, backward_tol=1e-12, **kw).double()


def _loss(model, y, A, target):
    x = model(y, A)
    return 0.5 * (x - target).abs().pow(2).sum()


def _grad(model, y, A, target):
    model.zero_grad()
    _loss(model, y, A, target).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad])


def _params(model):
    return [p for p in model.parameters() if p.requires_grad]


def _unrolled_grad(model, y, A, target, K=80):
    """The gradient of the loss of ``K`` tape-on iterations of the map (reference)."""
    model.zero_grad()
    f = model.fmap.bind(y, A)
    z = A.adjoint(y)
    for _ in range(K):
        z = f(z)
    (0.5 * (z - target).abs().pow(2).sum()).backward()
    return torch.cat([p.grad.reshape(-1) for p in _params(model)])


@pytest.mark.parametrize("dc", ["prox", "cg"])
def test_ift_gradient_matches_finite_differences_and_unrolled(dc):
    A, y, target = _problem(batch=2 if dc == "prox" else 1)
    model = _deq(dc=dc)
    g_ift = _grad(model, y, A, target)
    assert model.last_info.forward.converged.all()
    assert model.last_info.backward.stats.converged.all()
    # finite differences along a random direction of all parameters
    d = torch.randn_like(g_ift, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d = d / d.norm()
    h = 1e-5
    base = [p.detach().clone() for p in _params(model)]

    def loss_at(t):
        with torch.no_grad():
            off = 0
            for p, b in zip(_params(model), base):
                p.copy_(b + t * d[off: off + p.numel()].reshape(p.shape))
                off += p.numel()
            return float(_loss(model, y, A, target))

    fd = (loss_at(h) - loss_at(-h)) / (2 * h)
    loss_at(0.0)
    assert abs(float(g_ift @ d) - fd) <= 1e-4 * max(abs(fd), 1e-3), (float(g_ift @ d), fd)
    g_unr = _unrolled_grad(model, y, A, target)
    assert torch.linalg.vector_norm(g_ift - g_unr) <= 1e-4 * torch.linalg.vector_norm(g_unr)


def test_jfb_shine_and_refine_give_descent_directions():
    A, y, target = _problem(seed=3)
    model = _deq(solver="broyden", tol=1e-10, solver_options={"memory": 100})
    g_true = _grad(model, y, A, target)
    results = {}
    for mode in ("jfb", "shine", "shine-refine"):
        model.backward = mode
        g = _grad(model, y, A, target)
        cos = float(g @ g_true / (g.norm() * g_true.norm()))
        results[mode] = (cos, model.last_info.backward)
        assert cos > 0, (mode, cos)
    # refining SHINE towards IFT does not move away from the IFT gradient
    assert results["shine-refine"][0] >= results["shine"][0] - 1e-6
    info = results["shine"][1]
    assert info.rho is not None and (info.rho < 1).all() and info.vjps > 0
    assert 0.0 <= info.fallback_rate <= 1.0


def test_shine_opa_direction_is_closer_to_ift_on_linear_maps():
    """OPA's adjoint-Broyden pairs make ``-B^T g`` accurate along the outer gradient:
    on linear contractions its cosine to the exact IFT direction beats plain SHINE's."""
    from convexrecon.fixedpoint import broyden

    d = 30
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        Q = torch.randn(d, d, dtype=torch.float64, generator=gen)
        M = 0.9 * Q / torch.linalg.matrix_norm(Q, 2)
        b = torch.randn(1, d, dtype=torch.float64, generator=gen)
        g = torch.randn(1, d, dtype=torch.float64, generator=gen)
        u_ift = torch.linalg.solve(torch.eye(d, dtype=torch.float64) - M.T, g[0])
        calls = []

        def opa(z, bt):
            calls.append(1)
            sigma = bt(g)
            return sigma, sigma @ M - sigma  # J_g^T sigma = (M^T - I) sigma, as rows

        cos = {}
        for name, extra in (("shine", {}), ("opa", {"opa": opa})):
            z, st = broyden(lambda z: z @ M.T + b, torch.zeros(1, d, dtype=torch.float64), max_iter=12,
                            tol=1e-3, memory=50, **extra)
            # both forwards solve the fixed point to the tolerance
            assert torch.linalg.vector_norm(z @ M.T + b - z) <= 2e-3 * torch.linalg.vector_norm(z)
            u = -st.inverse_jacobian.rmatvec(g)[0]
            cos[name] = float(u @ u_ift / (u.norm() * u_ift.norm()))
        assert calls
        assert cos["opa"] > cos["shine"], (seed, cos)
        assert cos["opa"] > 0.999, (seed, cos)


def test_shine_opa_gives_a_descent_direction_and_needs_the_outer_gradient():
    from convexrecon.implicit import outer_grad_from_loss

    A, y, target = _problem(seed=3)
    model = _deq(solver="broyden", tol=1e-10, solver_options={"memory": 100})
    g_true = _grad(model, y, A, target)
    model.backward = "shine-opa"
    with pytest.raises(InputError, match="outer"):
        model(y, A)
    grad_fn = outer_grad_from_loss(lambda x: 0.5 * (x - target).abs().pow(2).sum())
    with model.outer_problem(grad_fn):
        g = _grad(model, y, A, target)
    info = model.last_info
    assert info.opa_vjps > 0 and info.backward.mode == "shine-opa"
    assert float(g @ g_true) > 0
    # the explicit keyword works the same way; inference needs no outer gradient
    model.zero_grad()
    (0.5 * (model(y, A, outer_grad=grad_fn) - target).abs().pow(2).sum()).backward()
    assert model.last_info.opa_vjps > 0
    with torch.no_grad():
        model(y, A)
    with pytest.raises(InputError, match="solver='broyden'"):
        _deq(solver="anderson", backward="shine-opa")


def test_shine_needs_broyden():
    with pytest.raises(InputError, match="solver='broyden'"):
        _deq(solver="anderson", backward="shine")
    model = _deq(solver="anderson")
    model.backward = "shine-refine"
    A, y, _ = _problem()
    with pytest.raises(InputError, match="solver='broyden'"):
        model(y, A)


def _linear_case(rho: float, d: int = 6):
    """A symmetric J with top eigenvalue ``rho`` and g along its top eigenvector."""
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    J = q @ torch.diag(torch.linspace(0.1, rho, d, dtype=torch.float64)) @ q.T
    g = q[:, -1][None].clone()
    return J, g


def test_fallback_rule_fixed_and_rho_based():
    J, g = _linear_case(0.9)
    vjp = lambda v: v @ J  # noqa: E731  (J^T v for row vectors; J symmetric)
    # an exact Broyden inverse: B = (J - I)^-1 = -I + U V^T with one rank-d correction
    B = torch.linalg.inv(J - torch.eye(6, dtype=torch.float64))
    corr = B + torch.eye(6, dtype=torch.float64)
    binv = BroydenInverse(corr.T[None].clone(), torch.eye(6, dtype=torch.float64)[None].clone(),
                          g.shape, g.dtype)
    assert torch.allclose(binv.to_dense()[0], B)
    u_ift, _ = ift(vjp, g, tol=1e-12, max_iter=500)
    ratio = float(u_ift.norm() / g.norm())
    assert ratio > 1.8  # the reference's fixed c is too small here
    u_fixed, info_fixed = shine(vjp, g, binv, threshold=1.8)
    assert info_fixed.fallback.all() and torch.equal(u_fixed, g)
    u_auto, info_auto = shine(vjp, g, binv, rho_iters=30)
    assert not info_auto.fallback.any()
    assert torch.allclose(u_auto, u_ift, atol=1e-8)
    assert float(info_auto.rho[0]) == pytest.approx(0.9, rel=1e-3)
    assert float(info_auto.threshold[0]) >= ratio


def test_fallback_is_per_sample_and_catches_nonfinite():
    g = torch.ones(3, 4, dtype=torch.float64)
    U = torch.zeros(3, 1, 4, dtype=torch.float64)
    V = torch.zeros(3, 1, 4, dtype=torch.float64)
    U[0, 0, 0] = 100.0  # B^T g huge for sample 0
    V[0, 0, 0] = 1.0
    U[2, 0, 0] = float("nan")
    V[2, 0, 0] = 1.0
    binv = BroydenInverse(U, V, g.shape, g.dtype)
    u, info = shine(lambda v: 0.5 * v, g, binv, threshold=1.8)
    assert info.fallback.tolist() == [True, False, True]
    assert torch.equal(u[0], g[0]) and torch.equal(u[1], g[1]) and torch.equal(u[2], g[2])
    assert info.fallback_rate == pytest.approx(2 / 3)


def test_shine_falls_back_where_the_measured_rho_is_not_a_contraction():
    g = torch.ones(2, 3, dtype=torch.float64)
    scale = torch.tensor([[0.5], [1.5]], dtype=torch.float64)  # sample 1: J^T = 1.5 I
    U = torch.zeros(2, 1, 3, dtype=torch.float64)
    V = torch.zeros(2, 1, 3, dtype=torch.float64)
    U[1, 0, 0], V[1, 0, 0] = 0.5, 1.0  # sample 1: -B^T g differs from g, well under any c
    binv = BroydenInverse(U, V, g.shape, g.dtype)
    u, info = shine(lambda v: scale * v, g, binv, rho_iters=10)
    assert float(info.rho[1]) == pytest.approx(1.5, rel=1e-6)
    assert info.fallback.tolist() == [False, True]
    assert torch.equal(u[0], g[0]) and torch.equal(u[1], g[1])
    u_fixed, info_fixed = shine(lambda v: scale * v, g, binv, threshold=1.8)
    assert info_fixed.rho is None and not info_fixed.fallback.any()  # a fixed c measures no rho
    assert not torch.equal(u_fixed[1], g[1])


def test_diverged_ift_solve_falls_back_to_jfb_per_sample():
    g = torch.ones(2, 3, dtype=torch.float64)
    scale = torch.tensor([[0.5], [3.0]], dtype=torch.float64)  # sample 1: J^T = 3 I
    u, info = ift(lambda v: scale * v, g, max_iter=200, tol=1e-10, solver="picard")
    assert info.stats.diverged.tolist() == [False, True]
    assert info.fallback.tolist() == [False, True]
    assert torch.allclose(u[0], 2.0 * g[0]) and torch.equal(u[1], g[1])


def test_shine_threshold_grows_with_rho():
    rho = torch.tensor([0.0, 0.5, 0.8, 0.9, 0.999, 2.0])
    c = shine_threshold(rho)
    assert (c[1:] >= c[:-1]).all() and (c >= 1.3).all() and torch.isfinite(c).all()
    assert float(c[3]) > 1.8


def _tiny_map(batch=2, n=4, seed=0):
    A, y, _ = _problem(n=n, batch=batch, seed=seed)
    net = _denoiser(seed, skip=0.7, features=3)
    f = ProxGradMap(net).bind(y, A)
    z = torch.randn(batch, n, n, dtype=DT, generator=torch.Generator().manual_seed(5)).requires_grad_()
    return f, z, net


def _exact_fro2(f, z, *, create_graph=False):
    """``||J||_F^2`` of the real Jacobian per sample, from VJPs with every basis vector."""
    fz = f(z)
    vjp = jacobian_vjp(fz, z, create_graph=create_graph)
    d = z[0].numel()
    total = torch.zeros(z.shape[0], dtype=torch.float64)
    for i in range(2 * d):
        e = torch.zeros(z.shape[0], 2 * d, dtype=torch.float64)
        e[:, i] = 1.0
        v = torch.view_as_complex(e.reshape(z.shape[0], d, 2)).reshape(z.shape)
        w = torch.view_as_real(vjp(v))
        total = total + w.pow(2).sum(dim=(1, 2, 3))
    return total


def test_hutchinson_matches_exact_frobenius_norm_statistically():
    f, z, _ = _tiny_map()
    exact = _exact_fro2(f, z)
    fz = f(z)
    gen = torch.Generator().manual_seed(11)
    P = 400
    samples = torch.stack([hutchinson_jac_fro2(fz, z, probes=1, generator=gen, create_graph=False)
                           for _ in range(P)])  # (P, batch)
    mean, sd = samples.mean(0), samples.std(0)
    # 5 standard errors: the test fails by chance with probability ~1e-6 per sample
    assert ((mean - exact).abs() <= 5 * sd / P ** 0.5).all(), (mean, exact, sd / P ** 0.5)
    # the probe's real and imaginary parts are independent with unit variance each
    # (torch.randn on a complex dtype gives 1/2 each, and would halve the estimate)
    parts = torch.view_as_real(real_probe(torch.zeros(64, 64, dtype=DT), generator=gen))
    assert parts.var().item() == pytest.approx(1.0, rel=0.1)
    assert abs(float(torch.corrcoef(parts.reshape(-1, 2).T)[0, 1])) < 0.1


def _g(p):
    return torch.zeros(p.numel(), dtype=p.dtype) if p.grad is None else p.grad.reshape(-1)


def test_jacobian_regulariser_produces_gradients_towards_a_smaller_jacobian():
    f, z, net = _tiny_map()
    est = hutchinson_jac_fro2(f(z), z, probes=64, generator=torch.Generator().manual_seed(3))
    net.zero_grad()
    est.sum().backward()
    g_est = torch.cat([_g(p) for p in net.parameters()])
    net.zero_grad()
    _exact_fro2(f, z, create_graph=True).sum().backward()
    g_exact = torch.cat([_g(p) for p in net.parameters()])
    assert torch.isfinite(g_est).all() and g_est.norm() > 0
    assert float(g_est @ g_exact / (g_est.norm() * g_exact.norm())) > 0.8


def test_cg_solve_is_twice_differentiable():
    # the backward of cg_solve is itself a cg_solve: gradgradcheck in b and mu
    from convexrecon.operators.base import Dense
    from convexrecon.solvers.cg import cg_solve

    g = torch.Generator().manual_seed(0)
    M = torch.randn(5, 5, dtype=DT, generator=g)
    op = Dense(M.conj().T @ M)
    b = torch.randn(2, 5, dtype=DT, generator=g).requires_grad_()
    mu = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    fn = lambda b, mu: cg_solve(op, b, mu=mu, batch_dims=1, max_iter=100, tol=1e-13)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (b, mu))


def test_deq_jacobian_regularisation_through_cg_data_consistency():
    A, y, target = _problem()
    model = _deq(dc="cg", backward="jfb", jac_reg=1.0, tol=1e-6)
    x = model(y, A)
    jr = model.extra_loss()
    assert isinstance(jr, torch.Tensor) and jr.requires_grad and float(jr.detach()) > 0
    (0.5 * (x - target).abs().pow(2).sum() + jr).backward()
    assert model.fmap.log_mu.grad is not None and torch.isfinite(model.fmap.log_mu.grad)


def test_divergence_is_detected_and_reported():
    A, y, _ = _problem()
    net = ResidualCNN(features=4, depth=3, out_scale=0.5, skip=3.0).double()  # expansive
    model = DEQ(ProxGradMap(net), solver="picard", max_iter=200, tol=1e-10, monitor_rho=True,
                divergence=1e3)
    model(y, A)
    info = model.last_info
    assert info.forward.diverged.all() and info.any_diverged
    assert (info.rho >= 1).all()
    # a contractive map is not flagged
    model = _deq(monitor_rho=True, tol=1e-8)
    model(y, A)
    assert not model.last_info.any_diverged and (model.last_info.rho < 1).all()


def test_rho_estimate_on_a_linear_map():
    J, g = _linear_case(0.7)
    rho = estimate_rho(lambda v: v @ J, g, iters=50)
    assert float(rho[0]) == pytest.approx(0.7, rel=1e-3)


def test_batched_deq_equals_one_by_one_and_inference_has_no_tape():
    A, y, _ = _problem(batch=3)
    model = _deq(tol=1e-10)
    with torch.no_grad():
        x = model(y, A)
    assert not x.requires_grad
    for i in range(3):
        Ai = Sense(A._maps_src[i:i + 1], A._mask_src[i:i + 1])
        with torch.no_grad():
            xi = model(y[i:i + 1], Ai)
        assert torch.allclose(x[i:i + 1], xi, atol=1e-8 * float(xi.abs().max()))


def test_denoisers_identity_path_has_the_skip_weight():
    x = torch.randn(2, 8, 8, dtype=torch.complex128)
    for cls, opts in ((ResidualCNN, {"depth": 3}), (SmallUNet, {"levels": 2})):
        plain = cls(features=4, **opts).double()
        half = cls(features=4, skip=0.5, **opts).double()
        half.load_state_dict(plain.state_dict())  # the same body: R differs by (skip - 1) x
        assert torch.allclose(plain(x) - half(x), 0.5 * x, atol=1e-12), cls.__name__


def test_denoisers_shapes_dtypes_and_spectral_norm():
    x = torch.randn(2, 3, 8, 8, dtype=torch.complex64)
    for net in (ResidualCNN(features=4, depth=3), SmallUNet(features=4, levels=2)):
        out = net(x)
        assert out.shape == x.shape and out.dtype == x.dtype
    unet = SmallUNet(features=4, levels=2)
    with pytest.raises(InputError, match="divisible"):
        unet(torch.randn(1, 6, 6, dtype=torch.complex64))
    with pytest.raises(InputError, match="complex"):
        unet(torch.randn(1, 8, 8))
    net = apply_spectral_norm(ResidualCNN(features=4, depth=3))
    net(x)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            w = m.weight.reshape(m.weight.shape[0], -1)
            assert float(torch.linalg.matrix_norm(w.detach(), ord=2)) <= 1.05


def test_modl_shapes_gradients_and_shared_weights():
    A, y, target = _problem()
    torch.manual_seed(0)
    model = MoDL(_denoiser(), iterations=3, mu=0.5, cg_iter=50, cg_tol=1e-10)
    x = model(y, A)
    assert x.shape == target.shape and x.dtype == DT
    (x - target).abs().pow(2).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    m5, m10 = build_modl(iterations=5), build_modl(iterations=10)
    assert sum(p.numel() for p in m5.parameters()) == sum(p.numel() for p in m10.parameters())
    with pytest.raises(InputError, match="iterations"):
        build_modl(iterations=0)


def test_build_deq_and_bad_options():
    model = build_deq(denoiser="unet", denoiser_options={"features": 4}, dc="cg", solver="broyden",
                      backward="shine", spectral_norm=True)
    assert isinstance(model, DEQ)
    with pytest.raises(InputError, match="dc"):
        build_deq(dc="admm")
    with pytest.raises(InputError, match="denoiser"):
        build_deq(denoiser="resnet")
    with pytest.raises(InputError, match="backward"):
        build_deq(backward="bptt")
    with pytest.raises(InputError, match="DEQ options"):
        build_deq(max_iters=3)
    A, y, _ = _problem()
    with pytest.raises(InputError, match="z0"):
        _deq()(y, A, z0=torch.zeros(5, 8, 8, dtype=DT))
    with pytest.raises(InputError, match="y:"):
        _deq()(y[..., :4], A)
