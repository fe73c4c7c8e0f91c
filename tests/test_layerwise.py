"""Greedy convex layer-wise training: the trained module equals the convex programs
it came from, with and without data consistency; training improves per layer."""

from __future__ import annotations

import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.metrics import psnr
from convexrecon.nets.layerwise import (LayerwiseConfig, LayerwiseNet, layerwise_net_from_spec,
                                        make_gates, train_layerwise)
from convexrecon.nets.layerwise_program import DCMap, data_consistency
from convexrecon.operators.conv import PatternConv, complex_to_channels
from convexrecon.operators.linalg import dot_test
from tests.layerwise_helpers import tiny_split

TOL = 1e-4  # relative duality gap of the whitened solves


@pytest.fixture(scope="module")
def splits():
    return tiny_split("train", 3), tiny_split("val", 2)


def _train(splits, dc_mu, layers=2, whiten=True, max_iter=3000):
    train, val = splits
    cfg = LayerwiseConfig(layers=layers, kernel=3, patterns=4, dc_mu=dc_mu, beta=0.05, whiten=whiten,
                          max_iter=max_iter, tol=TOL, check_every=10)
    seen = []
    net, reps = train_layerwise(train, val, config=cfg,
                                on_layer=lambda n, r: seen.append((n, r)))
    return net, reps, seen


@pytest.mark.parametrize("dc_mu,whiten", [(None, True), (0.1, True), (0.1, False),
                                          pytest.param(None, False, marks=pytest.mark.slow)])
def test_module_equals_convex_program_at_each_layer(splits, dc_mu, whiten):
    """The identities hold at any iterate; whitened steps are also solved to TOL
    (unwhitened ones converge too slowly for a default test: 200 iterations)."""
    train, _ = splits
    net, reps, seen = _train(splits, dc_mu, whiten=whiten, max_iter=3000 if whiten else 200)
    assert len(seen) == 2 and net.depth == 2
    for depth, (sub, rep) in enumerate(seen, start=1):
        assert sub.depth == depth
        if whiten:
            assert rep.certificate <= TOL
        with torch.no_grad():
            out = net.truncated(depth)(train.kspace, train.operator)
            # the convex program's prediction from its solution U on h_{depth-1}
            h = net.truncated(depth).hidden(complex_to_channels(train.x0))
            K = PatternConv.from_images(h, net.blocks[depth - 1].gates, c_out=2)
            pred = K.forward(rep.solution)
            base = train.x0
            if dc_mu is not None:
                M = DCMap(train.operator, n=len(train), mu=dc_mu)
                pred = M.forward(pred)
                base = data_consistency(train.operator, train.x0, train.x0, mu=dc_mu)
            expect = base + torch.complex(pred[:, 0], pred[:, 1])
        scale = float(expect.abs().max())
        assert float((out - expect).abs().max()) <= 1e-4 * scale
        if whiten:  # the penalty is on whitened filters: no weight-decay identity
            continue
        # network objective (loss after DC + weight decay) == the convex optimum
        blk = net.blocks[depth - 1]
        with torch.no_grad():
            loss = 0.5 * float((out - train.target).abs().pow(2).sum())
            obj = loss + float(blk.penalty(rep.beta))
        assert obj == pytest.approx(rep.objective, rel=1e-3)


def test_training_loss_improves_per_layer(splits):
    train, val = splits
    _, reps, _ = _train(splits, 0.1, max_iter=300)
    zf = psnr(data_consistency(train.operator, train.x0, train.x0, mu=0.1), train.target)
    assert reps[0].train_psnr > zf
    assert reps[1].train_psnr > reps[0].train_psnr
    assert reps[0].width <= 2 * 4 and reps[1].in_channels == reps[0].width + 2  # + the input skip


def test_dcmap_is_self_adjoint_contraction(splits):
    train, _ = splits
    M = DCMap(train.operator, n=len(train), mu=0.1, dtype=torch.float64)
    M.A = train.operator  # complex64 operator, float64 channels: accuracy of float32 CG
    assert dot_test(M) < 1e-4
    x = torch.randn(M.ishape, dtype=torch.float64)
    assert float(M.forward(x).norm()) <= float(x.norm()) * (1 + 1e-4)


def test_spec_round_trip(splits):
    net, _, _ = _train(splits, 0.1, layers=1, max_iter=50)
    copy = layerwise_net_from_spec(**net.spec())
    copy.load_state_dict(net.state_dict())
    train, _ = splits
    with torch.no_grad():
        a = net(train.kspace, train.operator)
        b = copy(train.kspace, train.operator)
    assert torch.allclose(a, b, atol=1e-6 * float(a.abs().max()))


def test_patch_gates_shape_and_determinism(splits):
    train, _ = splits
    h = complex_to_channels(train.x0)
    g1 = make_gates(h, 5, 3, kind="patches", seed=3)
    g2 = make_gates(h, 5, 3, kind="patches", seed=3)
    assert g1.shape == (5, 3, 3, 3) and torch.equal(g1, g2)


@pytest.mark.parametrize("kwargs", [dict(layers=0), dict(kernel=4), dict(patterns=0),
                                    dict(form="mlp"), dict(beta=-1.0), dict(dc_mu=0.0),
                                    dict(gates="uniform"), dict(solver="sgd"),
                                    dict(form="relu", solver="minibatch"), dict(batch_size=0)])
def test_bad_config(kwargs):
    with pytest.raises(InputError):
        LayerwiseConfig(**kwargs)


def test_empty_blocks_rejected():
    with pytest.raises(InputError):
        LayerwiseNet([])


# -- the ReLU (cone) form --------------------------------------------------------------

def _relu_prediction(h, gates, solution):
    """``sum_i D_i conv(h, V_i - W_i)`` and ``(2D - 1) conv(h, [V; W])`` of the cone step."""
    import convexrecon.programs as P

    prog = P.ConvTwoLayerReLUCone(h, torch.zeros(h.shape[0], 2, *h.shape[-2:], dtype=h.dtype),
                                  kernel_size=gates.shape[-1], n_patterns=gates.shape[0], beta=1.0,
                                  gates=gates)
    s = prog._stack(solution)
    return prog.predict(solution), prog.conv(s) * prog.sign


@pytest.mark.parametrize("dc_mu", [None, 0.1])
def test_relu_module_equals_cone_program_at_each_layer(splits, dc_mu):
    """The recovered ReLU network (true ReLUs, carried forward) reproduces the convex
    cone prediction at every layer, up to the constraint violation the solver left:
    ``||relu(z) - D z||`` is at most ``sqrt(#filters)`` times the violated part."""
    train, val = splits
    cfg = LayerwiseConfig(layers=2, kernel=3, patterns=4, form="relu", dc_mu=dc_mu, beta=0.05,
                          max_iter=250, tol=1e-4)
    net, reps = train_layerwise(train, val, config=cfg)
    assert net.depth == 2 and all(r.solver == "auglag" for r in reps)
    assert not hasattr(net.blocks[0], "gates")  # ReLU layers, no gates
    for depth, rep in enumerate(reps, start=1):
        sub = net.truncated(depth)
        with torch.no_grad():
            out = sub(train.kspace, train.operator)
            h = sub.hidden(complex_to_channels(train.x0))
            gates = make_gates(h, 4, 3, seed=depth - 1)  # the trainer's gates of this step
            pred, slack = _relu_prediction(h, gates, rep.solution)
            base = train.x0
            if dc_mu is not None:
                pred = DCMap(train.operator, n=len(train), mu=dc_mu).forward(pred)
                base = data_consistency(train.operator, train.x0, train.x0, mu=dc_mu)
            expect = base + torch.complex(pred[:, 0], pred[:, 1])
        violated = float(slack.clamp(max=0).norm())
        # the reported certificate bounds the relative violation, and it is small
        assert rep.certificate <= 0.25
        assert violated <= 1.05 * rep.certificate * float(slack.norm()) + 1e-6
        n_filters = 2 * slack.shape[2] * slack.shape[3]
        err = float((out - expect).abs().norm())
        assert err <= n_filters ** 0.5 * violated + 1e-4 * float(expect.abs().norm())


def test_relu_step_auglag_certificate_falls(splits):
    """On a layer-wise cone step (whitened, no DC) the augmented Lagrangian brings
    its certificate (relative gap and violation) to a small value within a modest
    budget, with the penalty below its cap (the former rule, doubling whenever the
    violation did not halve, hit the cap and left the gap near 0.9)."""
    import convexrecon.programs as P
    from convexrecon.nets.layerwise_cone import LayerConeProgram
    from convexrecon.nets.layerwise_program import whitening_matrix
    from convexrecon.solvers.auglag import ConvReLUAugLag

    train, _ = splits
    h = complex_to_channels(train.x0).double()
    Y = complex_to_channels(train.target - train.x0).double()
    base = P.ConvTwoLayerReLUCone(h, Y, kernel_size=3, n_patterns=4, beta=1.0,
                                  gates=make_gates(h, 4, 3, seed=0))
    prog = LayerConeProgram(base, whiten=whitening_matrix(base.op.x_padded, 3))
    prog.set_beta(0.05 * prog.beta_max())
    res = ConvReLUAugLag(prog, tol=1e-4, max_outer=80, inner_iter=25).run()
    info = prog.kkt(res.x, multipliers=res.state.mu)
    assert res.state.certificate == pytest.approx(info.max, rel=1e-6)  # the cached one is the program's
    assert info.max <= 1e-2
    assert res.state.rho < res.state.rho_cap


def test_relu_spec_round_trip(splits):
    train, val = splits
    cfg = LayerwiseConfig(layers=1, kernel=3, patterns=4, form="relu", dc_mu=0.1, beta=0.05, max_iter=25)
    net, _ = train_layerwise(train, val, config=cfg)
    copy = layerwise_net_from_spec(**net.spec())
    copy.load_state_dict(net.state_dict())
    with torch.no_grad():
        a, b = net(train.kspace, train.operator), copy(train.kspace, train.operator)
    assert torch.allclose(a, b, atol=1e-6 * float(a.abs().max()))


# -- the minibatch solver ------------------------------------------------------------------

def _gated_step(train, dc_mu, batch_size):
    import convexrecon.programs as P
    from convexrecon.nets.layerwise_minibatch import BatchedLayerProgram
    from convexrecon.nets.layerwise_program import LayerProgram, whitening_matrix

    h = complex_to_channels(train.x0)
    base_out = train.x0 if dc_mu is None else data_consistency(train.operator, train.x0, train.x0, mu=dc_mu)
    Y = complex_to_channels(train.target - base_out).to(h.dtype)
    gates = make_gates(h, 4, 3, seed=0)
    mk = lambda: P.ConvGatedReLU(h, Y, kernel_size=3, n_patterns=4, beta=1.0, gates=gates)  # noqa: E731
    base = mk()
    wmat = whitening_matrix(base.op.x_padded, 3)
    dc = None if dc_mu is None else DCMap(train.operator, n=len(train), mu=dc_mu)
    full = LayerProgram(base, Y, dc=dc, whiten=wmat)

    def dc_of(idx):
        return DCMap(train.operator_of(idx), n=int(idx.numel()), mu=dc_mu)

    batched = BatchedLayerProgram(mk(), dc_of=None if dc_mu is None else dc_of, whiten=wmat,
                                  batch_size=batch_size)
    return full, batched


def test_batched_step_is_the_full_step(splits):
    """Value, certificate, beta_max and the gradient summed over batches (each with
    its own DC map from the per-sample operators) equal the full-batch program's."""
    train, _ = splits
    full, batched = _gated_step(train, 0.1, batch_size=2)
    assert batched.beta_max() == pytest.approx(full.beta_max(), rel=1e-4)
    full.set_beta(0.05 * full.beta_max())
    batched.set_beta(full.beta)
    x = 1e-3 * torch.randn(full.shape, generator=torch.Generator().manual_seed(0))
    assert batched.value(x) == pytest.approx(full.value(x), rel=1e-4)
    assert batched.certificate(x) == pytest.approx(full.certificate(x), rel=1e-3)
    g = sum(batched.grad_batch(x, idx) for idx in batched.batches())
    torch.testing.assert_close(g, full.smooth.grad(x), rtol=1e-3, atol=1e-3 * float(g.abs().max()))


def test_minibatch_reaches_the_full_batch_objective(splits):
    from convexrecon.nets.layerwise_minibatch import LayerMiniBatch
    from convexrecon.solvers.fista import FISTA

    train, _ = splits
    full, batched = _gated_step(train, None, batch_size=1)
    full.set_beta(0.05 * full.beta_max())
    batched.set_beta(full.beta)
    ref = FISTA(full, max_iter=3000, tol=1e-6, check_every=10).run()
    opt = full.value(ref.x)
    res = LayerMiniBatch(batched, epochs=300, lr=0.5, tol=1e-2, check_every=3).run()
    cert = batched.certificate(res.x)
    assert cert <= 1e-2  # its own (whole-step) certificate
    got = full.value(res.x)
    # no lower than the optimum, and within its certified gap of it
    assert opt * (1 - 1e-5) <= got <= opt + cert * got + 1e-6 * opt


def test_operator_of_is_the_samples_operator(splits):
    train, _ = splits
    idx = torch.tensor([2, 0])
    x = train.target
    torch.testing.assert_close(train.operator_of(idx).forward(x[idx]), train.operator.forward(x)[idx])


def test_auto_solver_follows_the_memory_budget():
    from convexrecon.nets.layerwise_step import choose_solver, step_bytes

    one = step_bytes(1, 16, 16, patterns=4)
    kw = dict(form="gated", n=10, h=16, w=16, patterns=4)
    assert choose_solver("auto", budget_bytes=10 * one, **kw) == ("fista", 10)
    assert choose_solver("auto", budget_bytes=3.5 * one, **kw) == ("minibatch", 3)
    assert choose_solver("minibatch", budget_bytes=1e12, batch_size=4, **kw) == ("minibatch", 4)
    assert choose_solver("auto", budget_bytes=1.0, **{**kw, "form": "relu"}) == ("fista", 10)
    with pytest.raises(InputError, match="gated"):
        choose_solver("minibatch", budget_bytes=1e12, **{**kw, "form": "relu"})


def test_train_with_minibatch_solver(splits):
    train, val = splits
    cfg = LayerwiseConfig(layers=1, kernel=3, patterns=4, dc_mu=0.1, beta=0.05, solver="minibatch",
                          batch_size=2, epochs=3)
    _, reps = train_layerwise(train, val, config=cfg)
    assert reps[0].solver == "minibatch/2" and reps[0].certificate < 1
    zf = psnr(data_consistency(train.operator, train.x0, train.x0, mu=0.1), train.target)
    assert reps[0].train_psnr > zf


def test_cone_step_maps_are_adjoint(splits):
    """The composed maps the augmented Lagrangian and the certificate use (DC and
    whitening inside): each adjoint is the adjoint."""
    import convexrecon.programs as P
    from convexrecon.nets.layerwise_cone import LayerConeProgram
    from convexrecon.nets.layerwise_program import whitening_matrix

    train, _ = splits
    h = complex_to_channels(train.x0).double()
    gates = make_gates(h, 4, 3, seed=0)
    base = P.ConvTwoLayerReLUCone(h, torch.zeros(len(train), 2, *h.shape[-2:], dtype=h.dtype),
                                  kernel_size=3, n_patterns=4, beta=1.0, gates=gates)
    dc = DCMap(train.operator, n=len(train), mu=0.1, dtype=torch.float64, tol=1e-7)
    prog = LayerConeProgram(base, dc=dc, whiten=whitening_matrix(base.op.x_padded, 3))
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(2, *prog.shape, generator=gen, dtype=h.dtype)
    z = torch.randn(*prog.conv(s).shape, generator=gen, dtype=h.dtype)
    r = torch.randn(*prog.predict_from_conv(z).shape, generator=gen, dtype=h.dtype)
    for a, b in [((prog.conv(s) * z).sum(), (s * prog.conv_adjoint(z)).sum()),
                 ((prog.predict_from_conv(z) * r).sum(), (z * prog.predict_from_conv_adjoint(r)).sum())]:
        assert float(a) == pytest.approx(float(b), rel=1e-4)


def test_shard_metrics_in_one_process_are_the_plain_ones(splits):
    from convexrecon.nets.layerwise_step import shard_psnr, shard_rms

    train, _ = splits
    h = complex_to_channels(train.x0)
    assert shard_rms(h) == pytest.approx(float(h.pow(2).mean().sqrt()), rel=1e-6)
    assert shard_psnr(train.x0, train.target) == pytest.approx(psnr(train.x0, train.target), abs=1e-6)
