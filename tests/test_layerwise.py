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
                                    dict(gates="uniform")])
def test_bad_config(kwargs):
    with pytest.raises(InputError):
        LayerwiseConfig(**kwargs)


def test_empty_blocks_rejected():
    with pytest.raises(InputError):
        LayerwiseNet([])
