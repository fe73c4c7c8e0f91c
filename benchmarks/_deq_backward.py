"""Section 2 of ``benchmarks/deq.py``: the backward cost of every backward mode on the
same weights (time per batch, the forward's time beside it, cosine to IFT's gradient,
the SHINE modes' fallback rates, ``rho``, IFT's final residual)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Iterable

import torch
from _deq_memory import nmse

from convexrecon.implicit import DEQ, outer_grad_from_loss

BACKWARD_MODES = ("ift", "shine", "shine-opa", "shine-refine", "jfb")


def backward_cost(model: DEQ, batch_iter: Iterable, n_batches: int) -> dict[str, Any]:
    """Median backward (and forward) time per batch of every mode on the same weights
    (the first ``n_batches`` of ``batch_iter``), cosine of each gradient to IFT's, SHINE
    modes' fallback rates, ``rho``."""
    modes = BACKWARD_MODES
    times = {m: [] for m in modes}
    fwd = {m: [] for m in modes}
    cos = {m: [] for m in modes}
    fallback = {m: [] for m in modes if m.startswith("shine")}
    rho, ift_res = [], []
    saved = (model.solver, model.backward, model.backward_max_iter, model.backward_tol)
    # the IFT reference converges: cap 200, tolerance 1e-4 (training used the forward's 1e-3)
    model.solver, model.backward_max_iter, model.backward_tol = "broyden", 200, 1e-4
    for k, batch in enumerate(batch_iter):
        if k >= n_batches:
            break
        A, y = batch.operator(), batch.kspace
        grads = {}
        outer = outer_grad_from_loss(lambda x, t=batch.target: nmse(x, t))
        for m in modes:
            model.backward = m
            model.zero_grad(set_to_none=True)
            loss = nmse(model(y, A, outer_grad=outer), batch.target)
            fwd[m].append(model.last_info.forward_seconds)
            t0 = time.perf_counter()
            loss.backward()
            times[m].append(time.perf_counter() - t0)
            grads[m] = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
            b = model.last_info.backward
            if m == "ift":
                ift_res.append(float(b.stats.best_rel_residual.max()))
            if m in fallback:
                fallback[m].append(b.fallback_rate)
            if m == "shine":
                rho.append(float(b.rho.max()))
        for m in modes:
            g, r = grads[m], grads["ift"]
            cos[m].append(float(g @ r / (g.norm() * r.norm())))
    model.solver, model.backward, model.backward_max_iter, model.backward_tol = saved
    med = {m: statistics.median(v) for m, v in times.items()}
    return {"time": med, "forward": {m: statistics.median(v) for m, v in fwd.items()},
            "cos": {m: statistics.mean(v) for m, v in cos.items()},
            "fallback": {m: statistics.mean(v) for m, v in fallback.items()},
            "rho": max(rho), "ift_residual": max(ift_res)}
