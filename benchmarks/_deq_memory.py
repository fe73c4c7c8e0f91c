"""The memory section of ``benchmarks/deq.py``: one training step of a DEQ or MoDL
for :func:`convexrecon.training.memory.peak_memory` (run in a fresh process, so this
module holds only what that process needs), the medians over repeated fresh
processes, and the bytes saved for backward.

Accounting (what a step's peak includes):

- The step ends by dropping the DEQ's record of the call (``model.last_info``, which
  holds the forward Broyden's ``U, V``). Otherwise the previous step's ``U, V`` sit in
  the baseline and are freed during the measured step, which hid them from the peak.
  So the peak includes the measured step's own ``U, V`` (allocated in its forward and
  alive through its backward), and ``extra_bytes`` reports their size.
- ``allocator="fixed"`` runs the measuring process with
  :data:`~convexrecon.training.memory.FIXED_MALLOC`: the resident set then follows the
  live tensors (within 0.5 MB between processes); ``"default"`` is glibc's dynamic threshold,
  whose peak also holds freed blocks the heap kept (it varied 1.5x between fresh
  processes).

Run as a script for the table alone::

    .venv/bin/python benchmarks/_deq_memory.py --repeats 3 --allocator both
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

import torch

from convexrecon.data import MaskSpec, SliceDataset, collate
from convexrecon.implicit import DEQ, build_deq
from convexrecon.implicit.training import sample_nmse
from convexrecon.nets.unrolled import build_modl

KINDS = ("deq-broyden-shine", "deq-anderson-jfb", "deq-anderson-ift", "modl-5", "modl-10")


def nmse(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The training loss: the batch mean of the per-sample NMSE."""
    return sample_nmse(x, t).mean()


def _solver_bytes(model) -> int:
    """Bytes of the forward solver's state that the DEQ keeps for its backward (Broyden's ``U, V``)."""
    info = getattr(model, "last_info", None) if isinstance(model, DEQ) else None
    return info.solver_bytes if info is not None else 0


def memory_step(device: str = "cpu", *, kind: str, size: int, coils: int, batch: int, features: int,
                depth: int, skip: float, max_iter: int) -> Callable[[], None]:
    """One training step of ``kind`` for :func:`convexrecon.training.memory.peak_memory`."""
    data = SliceDataset(split="train", size=size, coils=coils, mask=MaskSpec("poisson", 4.0),
                        noise_rel=0.05, seed=0, augment=False)
    b = collate([data[i] for i in range(batch)]).to(device)
    den = {"features": features, "depth": depth, "skip": skip}
    torch.manual_seed(0)
    if kind.startswith("modl-"):
        model = build_modl(iterations=int(kind.split("-")[1]), denoiser_options=den, cg_iter=10)
    else:
        solver, backward = kind.split("-")[1:]
        model = build_deq(denoiser_options=den, dc="cg", cg_iter=10, solver=solver, backward=backward,
                          max_iter=max_iter, tol=1e-3, backward_tol=1e-4, backward_max_iter=200,
                          solver_options={"memory": max_iter if solver == "broyden" else 5})
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    A, y, t = b.operator(), b.kspace, b.target
    held = [0]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nmse(model(y, A), t).backward()
        opt.step()
        held[0] = _solver_bytes(model)
        if isinstance(model, DEQ):
            model.last_info = None  # the next baseline holds no solver state (see the module doc)

    step.extra_bytes = lambda: held[0]  # type: ignore[attr-defined]
    return step


def saved_bytes(model, batch) -> int:
    """Bytes saved for backward in one forward + loss (unique storages) + solver buffers."""
    from convexrecon.training.memory import count_saved

    A, y = batch.operator(), batch.kspace
    loss, total, _ = count_saved(lambda: nmse(model(y, A), batch.target))
    del loss
    return total + _solver_bytes(model)


def measure(kind: str, *, repeats: int = 1, allocator: str = "fixed", threads: int = 1,
            **config: Any) -> dict[str, Any]:
    """``repeats`` fresh-process peaks of one step of ``kind``: median, range (MB), saved MB
    (autograd), extra MB (solver state kept for the backward)."""
    from convexrecon.training.memory import FIXED_MALLOC, peak_memory

    if allocator not in ("fixed", "default"):
        raise ValueError(f"allocator: expected 'fixed' or 'default', got {allocator!r}")
    env = FIXED_MALLOC if allocator == "fixed" else None
    runs = [peak_memory("_deq_memory:memory_step", warmup=1, threads=threads, env=env,
                        kwargs=dict(kind=kind, **config)) for _ in range(repeats)]
    peaks = [r.peak_bytes / 2**20 for r in runs]
    return {"median_mb": statistics.median(peaks), "min_mb": min(peaks), "max_mb": max(peaks),
            "saved_mb": statistics.median(r.saved_bytes / 2**20 for r in runs),
            "extra_mb": statistics.median(r.extra_bytes / 2**20 for r in runs)}


def table(results: dict[str, dict[str, Any]], ref: str = "modl-5") -> tuple[list[str], list[list[str]]]:
    """Header and rows: peak median [min, max], ratio to ``ref``, saved (+ solver) MB and ratio."""
    r = results[ref]
    rows = []
    for k, v in results.items():
        held = v["saved_mb"] + v["extra_mb"]
        rows.append([k, f"{v['median_mb']:.1f} [{v['min_mb']:.1f}, {v['max_mb']:.1f}]",
                     f"{v['median_mb'] / r['median_mb']:.2f}",
                     f"{v['saved_mb']:.1f} + {v['extra_mb']:.1f}",
                     f"{held / (r['saved_mb'] + r['extra_mb']):.2f}"])
    return ["model (CG-DC)", "peak MB median [min, max]", "vs MoDL-5", "saved + solver MB", "vs MoDL-5"], rows


def main() -> None:
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _timing import table as fmt

    ap = argparse.ArgumentParser(description="DEQ vs MoDL peak memory of one training step")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--allocator", choices=("fixed", "default", "both"), default="both")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--coils", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--skip", type=float, default=0.8)
    ap.add_argument("--max-iter", type=int, default=30)
    ap.add_argument("--kinds", default=",".join(KINDS))
    args = ap.parse_args()
    cfg = dict(size=args.size, coils=args.coils, batch=args.batch, features=args.features,
               depth=args.depth, skip=args.skip, max_iter=args.max_iter)
    print("config:", cfg, "repeats:", args.repeats)
    for alloc in (("fixed", "default") if args.allocator == "both" else (args.allocator,)):
        res = {k: measure(k, repeats=args.repeats, allocator=alloc, **cfg) for k in args.kinds.split(",")}
        head, rows = table(res)
        print(f"\nallocator: {alloc}")
        print(fmt(head, rows))


if __name__ == "__main__":
    main()
