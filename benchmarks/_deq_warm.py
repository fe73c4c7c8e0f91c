"""The warm-start section of ``benchmarks/deq.py``: forward iterations of warm against
cold solves, with the same weights at every step.

The model trains through the real training path (:func:`convexrecon.implicit.training.recon_loss_fn`
with a :class:`~convexrecon.implicit.WarmStartCache`: each sample starts from its last
fixed point, moved into the frame of its new data), on training data that draw a
fresh mask, noise and smooth phase per sample and epoch. Before every step the same
batch is also solved (no tape, same weights):

- ``cold``: from ``A^H y``;
- ``plain``: from last epoch's point as it was stored (no frame transfer: the cache
  before this change, without its data-consistency pre-step);
- ``fixed warm`` / ``fixed cold``: the evidence case, the same samples with one fixed
  draw (mask, noise, phase) every epoch (``vary_per_epoch=False``), warm from the last
  solve of that draw against cold.

At the last epoch, :func:`distances` gives how far each start is from a tight solve
of the new data. Run alone (``deq.py --quick``'s sizes by default)::

    .venv/bin/python benchmarks/_deq_warm.py --epochs 5
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

import torch

from convexrecon.data import MaskSpec, SliceDataset, collate
from convexrecon.implicit import WarmStartCache
from convexrecon.implicit.training import recon_loss_fn


def fixed_draws(size: int, coils: int, seed: int) -> SliceDataset:
    """The training slices with one draw per sample for every epoch (the benchmark's
    Cartesian training set otherwise)."""
    return SliceDataset(split="train", size=size, coils=coils, noise_rel=0.05, seed=seed, augment=False,
                        mask=MaskSpec("poisson", 4.0), vary_per_epoch=False)


def _iters(model, y, A, z0=None) -> tuple[float, torch.Tensor]:
    zs, st, _ = model.solve(y, A, z0=z0)
    return float(st.iterations.double().mean()), zs


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    d = tuple(range(1, a.ndim))
    return float(((a - b).abs().pow(2).sum(d).sqrt() / b.abs().pow(2).sum(d).sqrt()).mean())


def distances(model, batch, plain: WarmStartCache, framed: WarmStartCache) -> dict[str, float]:
    """Mean relative distance of each start to a tight solve (1e-6) of this batch's data."""
    A, y = batch.operator(), batch.kspace
    aty = A.adjoint(y)
    tol, cap = model.tol, model.max_iter
    model.tol, model.max_iter = 1e-6, 200
    try:
        zstar, _, _ = model.solve(y, A)
    finally:
        model.tol, model.max_iter = tol, cap
    return {"cold": _rel(aty, zstar), "plain": _rel(plain.start(batch.index, aty), zstar),
            "framed": _rel(framed.start(batch.index, aty, reference=aty), zstar)}


def warm_vs_cold(model, data, batches: Callable, *, fixed: SliceDataset, epochs: int, lr: float,
                 batch_size: int, seed: int, label: str = "warm") -> dict[str, Any]:
    """Train ``model`` (a DEQ) with warm starts; per epoch the mean forward iterations of
    every start (see the module doc), the warm-start hit rate and the largest ``rho``."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    cache, plain, fixed_cache = WarmStartCache(), WarmStartCache(), WarmStartCache()
    loss_fn = recon_loss_fn(warm=cache)
    hist, dist = [], {}
    for epoch in range(epochs):
        model.train()
        rows: dict[str, list[float]] = {k: [] for k in ("warm", "cold", "plain", "fixed_warm", "fixed_cold",
                                                         "hits", "rho")}
        skipped = 0
        for batch in batches(data, batch_size, epoch=epoch, shuffle_seed=seed):
            A, y = batch.operator(), batch.kspace
            aty = A.adjoint(y)
            if epoch == epochs - 1 and not dist:
                dist = distances(model, batch, plain, cache)
            rows["cold"].append(_iters(model, y, A)[0])
            rows["plain"].append(_iters(model, y, A, plain.start(batch.index, aty))[0])
            fb = collate([fixed[int(i)] for i in batch.index])
            Af, yf = fb.operator(), fb.kspace
            atyf = Af.adjoint(yf)
            rows["fixed_cold"].append(_iters(model, yf, Af)[0])
            n, zf = _iters(model, yf, Af, fixed_cache.start(fb.index, atyf, reference=atyf))
            rows["fixed_warm"].append(n)
            fixed_cache.update(fb.index, zf, reference=atyf)
            opt.zero_grad(set_to_none=True)
            loss, extras = loss_fn(model, batch)  # the training path: warm start + cache update
            info = model.last_info
            rows["warm"].append(extras["fwd_iters"])
            rows["hits"].append(extras.get("warm_hits", 0.0))
            # this step's output, as the training cache just stored it, kept without a frame
            plain.update(batch.index, cache.start(batch.index, aty, reference=aty),
                         keep=~info.diverged.reshape(-1))
            if info.rho is not None:
                rows["rho"].append(float(info.rho.max()))
            if info.any_diverged or not torch.isfinite(loss):
                skipped += 1
                continue
            loss.backward()
            opt.step()
        row = {"epoch": epoch, **{k: statistics.mean(v) for k, v in rows.items() if v and k != "rho"},
               "rho_max": max(rows["rho"]) if rows["rho"] else float("nan"), "skipped": skipped}
        hist.append(row)
        print(f"  [{label}] epoch {epoch}: " + " ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"),
            flush=True)
    return {"history": hist, "distances": dist}


def main() -> None:
    """Section 3 alone, at ``deq.py --quick``'s sizes by default."""
    import argparse
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import deq as bench  # the benchmark's data and batching

    from convexrecon.implicit import build_deq

    ap = argparse.ArgumentParser(description="DEQ warm start against cold solves (deq.py section 3)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--coils", type=int, default=4)
    ap.add_argument("--n-train", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--skip", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("config:", vars(args))
    data, _, _ = bench.datasets(args.size, args.coils, args.n_train, 1, 1, args.seed)
    torch.manual_seed(args.seed)
    model = build_deq(denoiser="cnn", denoiser_options={"features": args.features, "depth": args.depth,
                                                        "skip": args.skip},
                      dc="cg", cg_iter=10, solver="anderson", solver_options={"memory": 5}, backward="jfb",
                      max_iter=30, tol=1e-3, monitor_rho=True)
    t0 = time.perf_counter()
    run = warm_vs_cold(model, data, bench.batches, fixed=fixed_draws(args.size, args.coils, args.seed),
                       epochs=args.epochs, lr=args.lr, batch_size=args.batch, seed=args.seed)
    w, d = run["history"][-1], run["distances"]
    red = {k: 1 - w[k] / w["fixed_cold" if k == "fixed_warm" else "cold"] for k in ("warm", "plain", "fixed_warm")}
    print(f"last epoch: fresh draws warm {w['warm']:.2f} vs cold {w['cold']:.2f} ({red['warm']:+.3f}), "
          f"plain reuse {w['plain']:.2f} ({red['plain']:+.3f}); fixed draw warm "
          f"{w['fixed_warm']:.2f} vs cold {w['fixed_cold']:.2f} ({red['fixed_warm']:+.3f}); "
          f"rho max {w['rho_max']:.3f}; distances {', '.join(f'{k} {v:.3f}' for k, v in d.items())} "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
