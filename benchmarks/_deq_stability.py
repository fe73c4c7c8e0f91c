"""The stability section of ``benchmarks/deq.py``: the contraction each stabiliser
keeps, and what it costs in quality.

Every variant is the same DEQ (CG data consistency, Anderson forward, JFB backward)
from the same initialisation, trained with the same learning rate, data order and
seed, for several seeds:

- ``vanilla``;
- ``spectral-norm``: torch's spectral normalisation of every convolution (it bounds
  the reshaped kernels, not the map's contraction);
- ``jac-reg 1`` and ``jac-reg 0.1``: the Hutchinson ``||J_f||_F^2`` term (per unknown);
- ``rho-hinge``: ``10 * relu(rho - 0.9)^2`` on the measured ``rho`` at ``z*``.

Training is left as it is (no ``rho`` is measured in the training steps unless the
variant needs it); after training, :func:`val_rho` measures ``rho`` at every
validation sample's fixed point by power iterations, so every variant is judged the
same way. The loss curves go to a PNG.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable

import torch

from convexrecon.implicit import DEQ
from convexrecon.implicit.maps import batch_dims_of
from convexrecon.implicit.stabilize import estimate_rho, jacobian_vjp

VARIANTS: dict[str, dict[str, Any]] = {
    "vanilla": {},
    "spectral-norm": {"spectral_norm": True},
    "jac-reg 1": {"jac_reg": 1.0},
    "jac-reg 0.1": {"jac_reg": 0.1},
    "rho-hinge": {"rho_reg": 10.0, "rho_target": 0.9},
}


def val_rho(model: DEQ, batches, *, iters: int = 10) -> list[float]:
    """``rho`` at each validation sample's fixed point (``iters`` power iterations of
    ``J^T``), with the model's own forward solve."""
    out: list[float] = []
    model.eval()
    for batch in batches:
        A, y = batch.operator(), batch.kspace
        zs, _, _ = model.solve(y, A)
        f = model.fmap.bind(y, A)
        with torch.enable_grad():
            zt = zs.detach().requires_grad_()
            fz = f(zt)
            rho = estimate_rho(jacobian_vjp(fz, zt), zt, iters=iters, batch_dims=batch_dims_of(y, A))
        out.extend(float(r) for r in rho.reshape(-1))
    model.train()
    return out


def stability(build: Callable[..., DEQ], train: Callable[..., dict], evaluate: Callable[..., dict],
              batches: Callable, *, data, val, test, seeds: int, epochs: int, lr: float,
              batch_size: int) -> dict[str, Any]:
    """Train every variant for ``seeds`` seeds; rows of the table, loss curves, and the
    test-slab quality of seed 0 of each variant."""
    rows, curves, quality = [], {}, {}
    for name, kw in VARIANTS.items():
        for s in range(seeds):
            model = build(seed=s, solver="anderson", solver_options={"memory": 5}, backward="jfb", **kw)
            r = train(model, data, val, epochs=epochs, lr=lr, batch_size=batch_size, seed=s,
                      label=f"{name} s{s}")
            if s == 0:
                quality[f"deq (jfb, {name}, {epochs} epochs)"] = evaluate(model, test, batch_size)
            curves.setdefault(name, []).append(r["steps"])
            h = r["history"][-1]
            rho = val_rho(model, batches(val, batch_size))
            rows.append({"variant": name, "seed": s, "val_psnr": h["val_psnr"],
                         "skipped": sum(x["skipped"] for x in r["history"]),
                         "fwd_iters": h.get("fwd_iters", float("nan")),
                         "rho_median": statistics.median(rho), "rho_max": max(rho)})
    return {"rows": rows, "curves": curves, "quality": quality}


def table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = ["variant", "seed", "val PSNR dB", "skipped batches", "fwd iters (last epoch)",
            "val rho median", "val rho max"]
    return head, [[r["variant"], r["seed"], f"{r['val_psnr']:.2f}", r["skipped"], f"{r['fwd_iters']:.1f}",
                   f"{r['rho_median']:.3f}", f"{r['rho_max']:.3f}"] for r in rows]


def plot_curves(curves: dict[str, list[list[float]]], path: Path) -> Path:
    """Training loss per step of every variant and seed (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from convexrecon.viz import save_figure

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    for k_color, (name, runs) in enumerate(curves.items()):
        for k, steps in enumerate(runs):
            ax.plot(range(1, len(steps) + 1), steps, color=f"C{k_color}", lw=1, alpha=0.8,
                    label=name if k == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (NMSE + reg.)")
    ax.set_yscale("log")
    ax.legend()
    return save_figure(fig, path)
