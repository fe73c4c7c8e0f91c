"""Contracts of the layer-wise evaluation helpers (paired comparisons, held-out k-space)
and of the memory-study step factories. Fast, no timing."""

from __future__ import annotations

import math

import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.nets.layerwise_eval import compare_methods, heldout_kspace_errors, paired_ci


def test_compare_methods_pairs_against_the_reference():
    a = [30.0, 31.0, 29.0, 32.0]
    b = [29.0, 30.5, 28.0, 30.0]
    res = compare_methods({"a": a, "b": b}, reference="b")
    assert res["a"]["mean"] == pytest.approx(30.5)
    assert res["a"]["diff"] == pytest.approx(sum(x - y for x, y in zip(a, b)) / 4)
    assert res["a"]["ci_low"] < res["a"]["diff"] < res["a"]["ci_high"]
    assert (res["a"]["diff"], res["a"]["ci_low"], res["a"]["ci_high"]) == pytest.approx(paired_ci(a, b))
    assert res["b"]["diff"] == 0.0 and res["b"]["ci_low"] == res["b"]["ci_high"] == 0.0
    assert res["a"]["n"] == 4


def test_compare_methods_one_slice_has_an_unbounded_interval():
    res = compare_methods({"a": [2.0], "b": [1.0]}, reference="b")
    assert res["a"]["diff"] == 1.0 and math.isinf(res["a"]["ci_low"]) and math.isinf(res["a"]["ci_high"])


@pytest.mark.parametrize("slices, ref", [({"a": [1.0, 2.0], "b": [1.0]}, "b"), ({"a": [1.0]}, "c")])
def test_compare_methods_bad_input(slices, ref):
    with pytest.raises(InputError):
        compare_methods(slices, reference=ref)


def _noiseless_sample():
    from convexrecon.data import from_problem

    return from_problem("tiny-cartesian", split="test", noise_rel=0.0)[0]


def _oracle(truth: torch.Tensor):
    """The true image, scaled by the least-squares factor that fits the kept samples
    (knows the image up to scale, never the held-out data)."""
    def run(y, A):
        ax = A(truth.expand(y.shape[0], *truth.shape))
        c = torch.vdot(ax.flatten(), y.flatten()) / torch.vdot(ax.flatten(), ax.flatten())
        return c * truth.expand(y.shape[0], *truth.shape)
    return run


def test_heldout_error_is_zero_for_the_truth_and_large_for_zero_filled():
    s = _noiseless_sample()
    seen = []

    def zero_filled(y, A):
        seen.append(int((y[0, 0] != 0).sum()))
        return A.adjoint(y)

    r = heldout_kspace_errors(s.kspace, s.maps, s.mask, {"truth": _oracle(s.target), "zf": zero_filled},
                              seeds=(0, 1))
    assert r["seeds"] == [0, 1] and len(r["errors"]["truth"]) == 2
    assert max(r["errors"]["truth"]) < 1e-6
    assert min(r["errors"]["zf"]) > 1e-2
    # the methods never see the held-out locations
    measured = int(torch.broadcast_to(s.mask, s.kspace.shape[-2:]).sum())
    assert all(n > 0 for n in r["n_heldout"])
    assert seen == [measured - n for n in r["n_heldout"]]


def test_heldout_bad_input():
    s = _noiseless_sample()
    with pytest.raises(InputError):
        heldout_kspace_errors(s.kspace, s.maps, s.mask, {})
    with pytest.raises(InputError):
        heldout_kspace_errors(s.kspace, s.maps, s.mask, {"zf": lambda y, A: A.adjoint(y)}, seeds=())
    with pytest.raises(InputError):
        heldout_kspace_errors(s.kspace, s.maps, s.mask, {"zf": lambda y, A: A.adjoint(y)}, holdout=0.7)


def test_memory_step_factories_run_at_tiny_sizes():
    from convexrecon.nets.layerwise_memory import e2e_step, layerwise_step, minibatch_step

    kw = dict(n=4, size=12, coils=2, depth=2, patterns=2)
    u = minibatch_step(batch_size=2, steps=2, **kw)()
    assert torch.isfinite(u).all() and u.shape[0] == 2  # (P, ...) filters of the step's program
    assert torch.isfinite(layerwise_step(iters=2, **kw)()).all()
    assert math.isfinite(e2e_step(**kw)())
