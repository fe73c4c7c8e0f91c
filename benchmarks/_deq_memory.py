"""The memory section of ``benchmarks/deq.py``: one training step of a DEQ or MoDL
for :func:`convexrecon.training.peak_memory` (run in a fresh process, so this module
holds only what that process needs), and the bytes saved for backward."""

from __future__ import annotations

from typing import Callable

import torch

from convexrecon.data import MaskSpec, SliceDataset, collate
from convexrecon.implicit import DEQ, build_deq
from convexrecon.nets.unrolled import build_modl


def nmse(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    d = tuple(range(1, x.ndim))
    return ((x - t).abs().pow(2).sum(d) / t.abs().pow(2).sum(d)).mean()


def memory_step(device: str = "cpu", *, kind: str, size: int, coils: int, batch: int, features: int,
                depth: int, skip: float, max_iter: int) -> Callable[[], None]:
    """One training step of ``kind`` for :func:`convexrecon.training.peak_memory`."""
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

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nmse(model(y, A), t).backward()
        opt.step()

    return step


def saved_bytes(model, batch) -> int:
    """Bytes saved for backward in one forward + loss (unique storages) + solver buffers."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except RuntimeError:
            pass
        return t

    A, y = batch.operator(), batch.kspace
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nmse(model(y, A), batch.target)
    total = sum(seen.values())
    if isinstance(model, DEQ):
        binv = model.last_info.forward.inverse_jacobian
        if binv is not None:
            total += binv.nbytes
    del loss
    return total
