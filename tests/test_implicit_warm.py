"""DEQ warm starts (the cache, its frame, the training path) and the memory
accounting of a training step (saved tensors and solver bytes)."""

from __future__ import annotations

import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.implicit import WarmStartCache
from test_implicit import DT, _deq, _problem


def test_warm_start_cache_round_trip():
    cache = WarmStartCache()
    default = torch.zeros(2, 3, 3, dtype=torch.complex64)
    z = torch.randn(2, 3, 3, dtype=torch.complex64)
    assert torch.equal(cache.start([4, 7], default), default)
    cache.update([4, 7], z, keep=torch.tensor([True, False]))
    start = cache.start([7, 4], default)
    assert torch.equal(start[1], z[0]) and torch.equal(start[0], default[0])
    other = WarmStartCache()
    other.load_state_dict(cache.state_dict())
    assert len(other) == 1 and torch.equal(other.start([4], default[:1])[0], z[0])
    with pytest.raises(InputError, match="warm-start"):
        other.load_state_dict({"ids": [1]})
    with pytest.raises(InputError, match="ids"):
        cache.start([1, 2, 3], default)


def test_warm_start_moves_the_point_into_the_new_data_frame():
    """Stored with the zero-filled images of its data, a point comes back unchanged for
    the same data, and follows a global phase and scale of new data."""
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(2, 8, 8, generator=g, dtype=DT)
    z = torch.randn(2, 8, 8, generator=g, dtype=DT)
    cache = WarmStartCache()
    cache.update([3, 9], z, reference=ref)
    zero = torch.zeros_like(z)
    assert torch.allclose(cache.start([3, 9], zero, reference=ref), z, rtol=1e-12, atol=1e-12)
    turn = torch.polar(torch.tensor([0.7, 2.0], dtype=torch.float64),
                       torch.tensor([1.3, -2.5], dtype=torch.float64)).reshape(2, 1, 1)
    moved = cache.start([9, 3], zero, reference=ref[[1, 0]] * turn)
    assert torch.allclose(moved, z[[1, 0]] * turn, rtol=1e-10, atol=1e-10)
    other = WarmStartCache()  # the frame survives a checkpoint
    other.load_state_dict(cache.state_dict())
    assert torch.allclose(other.start([9], zero[:1], reference=ref[1:] * turn[:1]), z[1:] * turn[:1],
                          rtol=1e-10, atol=1e-10)
    plain = WarmStartCache()  # stored without a reference: returned as stored
    plain.update([3], z[:1])
    assert torch.equal(plain.start([3], zero[:1], reference=ref[:1] * turn[:1]), z[:1])
    with pytest.raises(InputError, match="reference"):
        cache.start([3], zero[:1], reference=ref[:1].real)


def test_a_precomputed_frame_equals_the_reference_and_start_does_not_count_hits():
    g = torch.Generator().manual_seed(5)
    ref = torch.randn(2, 8, 8, generator=g, dtype=DT)
    z = torch.randn(2, 8, 8, generator=g, dtype=DT)
    by_ref, by_frame = WarmStartCache(), WarmStartCache()
    by_ref.update([1, 2], z, reference=ref)
    by_frame.update([1, 2], z, reference=WarmStartCache.frame(ref))
    turn = torch.polar(torch.tensor([1.5, 0.5], dtype=torch.float64),
                       torch.tensor([0.4, 2.2], dtype=torch.float64)).reshape(2, 1, 1)
    new = ref * turn
    a, hit_a = by_ref.lookup([1, 2], torch.zeros_like(z), reference=new)
    b, hit_b = by_frame.lookup([1, 2], torch.zeros_like(z), reference=WarmStartCache.frame(new))
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12) and hit_a.all() and hit_b.all()
    assert (by_frame.hits, by_frame.misses) == (2, 0)
    by_frame.start([1, 7], torch.zeros_like(z), reference=new)  # a peek: counters unchanged
    assert (by_frame.hits, by_frame.misses) == (2, 0)
    by_frame.lookup([1, 7], torch.zeros_like(z), reference=new)
    assert (by_frame.hits, by_frame.misses) == (3, 1)
    with pytest.raises(InputError, match="frame of 2 images, got 1"):
        by_frame.start([1, 2], torch.zeros_like(z), reference=WarmStartCache.frame(ref[:1]))


def test_training_path_warm_starts_from_the_last_fixed_point():
    from types import SimpleNamespace

    from convexrecon.implicit.training import recon_loss_fn

    A, y, x = _problem(batch=2)
    batch = SimpleNamespace(operator=lambda: A, kspace=y, target=x, index=torch.tensor([4, 5]))
    model = _deq(backward="jfb", tol=1e-6, max_iter=200)
    cache = WarmStartCache()
    loss_fn = recon_loss_fn(warm=cache)
    _, first = loss_fn(model, batch)
    _, second = loss_fn(model, batch)  # same data, same weights: starts at the fixed point
    assert first["warm_hits"] == 0.0 and second["warm_hits"] == 1.0
    assert first["fwd_iters"] > 2 and second["fwd_iters"] < first["fwd_iters"]
    assert second["fwd_residual"] <= 1e-6


def test_count_saved_and_solver_bytes_of_a_step():
    from convexrecon.training.memory import count_saved, measure_step

    w = torch.randn(16, 8, requires_grad=True)
    inp = torch.randn(32, 16)
    out, nbytes, count = count_saved(lambda: torch.tanh(inp @ w).sum())
    # the input (for w's gradient) and tanh's output; the parameter w is not counted
    assert nbytes == 4 * (32 * 16 + 32 * 8) and count == 2 and out.requires_grad

    def step() -> None:
        torch.tanh(inp @ w).sum().backward()

    assert measure_step(step).extra_bytes == 0
    step.extra_bytes = lambda: 12345  # e.g. a Broyden solver's U, V held for the backward
    report = measure_step(step)
    assert report.extra_bytes == 12345 and report.saved_bytes == nbytes


def test_shine_backward_releases_the_forward_broyden_state():
    """U, V serve one backward: afterwards the record keeps their size, not the buffers,
    and a second backward through the same output is refused with a clear error."""
    A, y, x = _problem(batch=2)
    model = _deq(solver="broyden", backward="shine", tol=1e-8, max_iter=50,
                 solver_options={"memory": 50})
    out = model(y, A)
    info = model.last_info
    binv = info.forward.inverse_jacobian
    assert binv is not None and info.solver_bytes == binv.nbytes > 0 and not binv.released
    loss = (out - x).abs().pow(2).sum()
    loss.backward(retain_graph=True)
    assert info.backward is not None and info.forward.inverse_jacobian is None
    assert binv.released and binv.nbytes == 0 and info.solver_bytes > 0  # the buffers went
    with pytest.raises(InputError, match="second backward"):
        loss.backward()
