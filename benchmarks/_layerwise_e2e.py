"""End-to-end baseline of ``benchmarks/layerwise.py``: the identical architecture,
trained with Adam epoch by epoch until its validation PSNR plateaus (early stopping
with patience), keeping the weights at the best validation epoch (the plateau) and
at the last epoch within the layer-wise training time (equal wall-clock time).

The training time counted is that of :func:`convexrecon.nets.e2e_baselines.train_e2e`
(forward, backward, update, its validation pass and its checkpoint), as the
layer-wise time counts its validation-based beta path and its checkpoints.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class E2EOptions:
    """How long and how the baseline trains (see the module docstring)."""

    lr: float = 1e-3
    halve_every: int = 20
    batch_size: int = 4
    patience: int = 8  # epochs without a gain of min_delta on the validation PSNR
    min_delta_db: float = 0.02
    max_epochs: int = 300
    time_cap: float = 12.0  # stop at this many times the layer-wise time, plateau or not
    max_seconds: float = float("inf")  # and at this many seconds
    seed: int = 0


@dataclass
class E2EResult:
    """The curve, and the two models the comparison uses."""

    curve: list[dict[str, float]]
    plateau_epoch: int
    equal_epoch: int | None
    stop_reason: str
    plateau_model: Any = field(repr=False)
    equal_model: Any = field(repr=False, default=None)


def e2e_model_spec(net_spec: dict[str, Any], *, seed: int = 0) -> dict[str, Any]:
    """The checkpoint spec of the end-to-end twin of a layer-wise net."""
    return {"factory": "convexrecon.nets.e2e_baselines:gated_e2e_net",
            "kwargs": {"blocks": net_spec["blocks"], "dc_mu": net_spec["dc_mu"], "seed": int(seed),
                       "skip_input": net_spec["skip_input"]}}


def train_to_plateau(net_spec: dict[str, Any], data_spec: Any, *, n_train: int, n_val: int,
                     out: Path, layerwise_seconds: float, opts: E2EOptions,
                     log=print) -> E2EResult:
    """Train the end-to-end twin of ``net_spec`` (module docstring)."""
    from convexrecon.nets.e2e_baselines import SubsetDataset, train_e2e
    from convexrecon.nets.layerwise_data import _dataset, _indices
    from convexrecon.training import build_model

    spec = e2e_model_spec(net_spec, seed=opts.seed)
    model = build_model(spec)
    (Path(out) / "checkpoint.pt").unlink(missing_ok=True)  # the twin always starts over
    tr, va = _dataset(data_spec, "train"), _dataset(data_spec, "val")
    train = SubsetDataset(tr, _indices(len(tr), n_train, "train", False))
    val = SubsetDataset(va, _indices(len(va), n_val, "val", False))
    curve: list[dict[str, float]] = []
    seconds, best, stale = 0.0, -float("inf"), 0
    best_state = equal_state = None
    plateau_epoch, equal_epoch, reason = 0, None, "max_epochs"
    for ep in range(1, opts.max_epochs + 1):
        t0 = time.perf_counter()
        hist = train_e2e(model, model_spec=spec, train=train, val=val, epochs=ep, out_dir=str(out),
                         lr=opts.lr, batch_size=opts.batch_size, halve_every=opts.halve_every,
                         resume=ep > 1, seed=opts.seed, progress=False)
        seconds += time.perf_counter() - t0
        v = float(hist.epochs[-1].get("val_psnr", float("nan")))
        curve.append(dict(epoch=ep, seconds=seconds, val_psnr=v))
        if seconds <= layerwise_seconds:
            equal_state, equal_epoch = copy.deepcopy(model.state_dict()), ep
        if v > best + opts.min_delta_db:
            best, stale = v, 0
            best_state, plateau_epoch = copy.deepcopy(model.state_dict()), ep
        else:
            stale += 1
        if ep % 10 == 0 or ep < 3:
            log(f"    e2e epoch {ep}: {seconds:6.1f} s, val {v:.2f} dB (best {best:.2f} at {plateau_epoch})")
        if stale >= opts.patience:
            reason = f"plateau ({opts.patience} epochs without +{opts.min_delta_db} dB)"
            break
        if seconds > opts.time_cap * layerwise_seconds:
            reason = f"time cap ({opts.time_cap:g}x the layer-wise time), before a plateau"
            break
        if seconds > opts.max_seconds:
            reason = f"time limit ({opts.max_seconds:g} s), before a plateau"
            break
    log(f"    e2e stopped after {len(curve)} epochs, {seconds:.1f} s: {reason}; best validation "
        f"{best:.2f} dB at epoch {plateau_epoch}; equal time = epoch {equal_epoch}")
    plateau_model = build_model(spec)
    plateau_model.load_state_dict(best_state)
    equal_model = None
    if equal_state is not None:
        equal_model = build_model(spec)
        equal_model.load_state_dict(equal_state)
    for m in (plateau_model, equal_model):
        if m is not None:
            m.eval()
    return E2EResult(curve=curve, plateau_epoch=plateau_epoch, equal_epoch=equal_epoch,
                     stop_reason=reason, plateau_model=plateau_model, equal_model=equal_model)

