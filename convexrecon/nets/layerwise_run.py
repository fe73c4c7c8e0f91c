"""One layer-wise training run with checkpoints, metrics and figures (what
``convexrecon train-layerwise`` and ``benchmarks/layerwise.py`` call).

``out_dir`` receives, atomically:

- ``checkpoint.pt`` after every layer (:func:`convexrecon.training.save_checkpoint`:
  the network so far, its ``model_spec``, the configuration and the reports), so a
  kill loses at most the layer in progress and ``resume=True`` continues after the
  last finished layer. The steps are deterministic (seeded gates, deterministic
  solvers), so a resumed run ends with the weights of an uninterrupted one;
- ``metrics.json``: the per-layer reports, test PSNR / SSIM per layer with paired
  95% intervals against zero-filled, DC-only and L1-wavelet FISTA;
- ``psnr_per_layer.png`` and ``reconstructions.png``.

Under ``torchrun`` (a process group is running) every process loads the splits,
keeps its share ``rank::world`` of the training slices and trains the same network
with the gated steps summed over the processes (``train_layerwise(images=...)``);
only the main process evaluates and writes.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch

from convexrecon.collectives import is_main_process, rank, world_size
from convexrecon.errors import InputError
from convexrecon.nets.layerwise import (LayerReport, LayerwiseConfig, LayerwiseNet, ReconData,
                                        layerwise_net_from_spec, train_layerwise)
from convexrecon.nets.layerwise_data import DataSpec, load_split
from convexrecon.nets.layerwise_eval import (evaluate_model, l1_wavelet_tuned, paired_ci,
                                             slice_metrics)
from convexrecon.nets.layerwise_program import data_consistency

__all__ = ["Sizes", "LayerwiseRun", "run_layerwise", "write_json", "CHECKPOINT", "METRICS",
           "FACTORY"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
FACTORY = "convexrecon.nets.layerwise:layerwise_net_from_spec"


@dataclass(frozen=True)
class Sizes:
    """How many slices each split uses (None: all) and augmented training draws."""

    n_train: int | None = 24
    n_val: int | None = 6
    n_test: int | None = None
    epochs: int = 1


@dataclass
class LayerwiseRun:
    """What :func:`run_layerwise` produced."""

    net: LayerwiseNet
    reports: list[dict[str, Any]]
    metrics: dict[str, Any]
    seconds: float


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, allow_nan=False, default=_nan_to_none)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _nan_to_none(obj: Any) -> Any:
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _report_dict(rep: LayerReport) -> dict[str, Any]:
    return {f.name: getattr(rep, f.name) for f in fields(rep) if f.name != "solution"}


def _load_resume(path: Path, cfg: LayerwiseConfig, data: DataSpec) -> tuple[list, list[dict], float]:
    from convexrecon.training import load_checkpoint

    ck = load_checkpoint(path)
    lw = ck.get("layerwise")
    if not isinstance(lw, dict):
        raise InputError(f"--resume: {str(path)!r} is not a layer-wise training checkpoint")
    saved_cfg = dict(lw.get("config", {}))
    now = _clean(asdict(cfg))
    for key in now:
        if key != "layers" and saved_cfg.get(key) != now[key]:
            raise InputError(f"--resume: the checkpoint was trained with {key}={saved_cfg.get(key)!r}, "
                             f"got {now[key]!r}; use the same options or a new --out")
    if lw.get("data") != _clean(asdict(data)):
        raise InputError("--resume: the checkpoint was trained on other data options; use the same "
                         "options or a new --out")
    net = layerwise_net_from_spec(**ck["model_spec"]["kwargs"])
    net.load_state_dict(ck["model_state"])
    return list(net.blocks), list(lw.get("reports", [])), float(lw.get("seconds", 0.0))


def _per_layer_eval(net: LayerwiseNet, test: ReconData) -> list[dict[str, float]]:
    rows = []
    for d in range(1, net.depth + 1):
        m = slice_metrics(evaluate_model(net.truncated(d), test), test.target)
        rows.append(dict(layer=d, psnr=statistics.mean(m["psnr"]), ssim=statistics.mean(m["ssim"]),
                         psnr_slices=m["psnr"]))
    return rows


def run_layerwise(*, config: LayerwiseConfig, data: DataSpec, sizes: Sizes, out_dir: str | Path,
                  resume: bool = False, device: str | torch.device = "cpu",
                  tensorboard: bool = False, fista_reference: bool = True,
                  on_layer: Callable[[dict[str, Any]], Any] | None = None,
                  callback: Callable[[Any], Any] | None = None,
                  log: Callable[[str], Any] = lambda s: None) -> LayerwiseRun:
    """Load the splits, train layer by layer with a checkpoint after each, evaluate."""
    from convexrecon.training import save_checkpoint

    out = Path(out_dir)
    ck_path = out / CHECKPOINT
    if ck_path.exists() and not resume:
        raise InputError(f"--out: {str(ck_path)!r} exists; pass --resume to continue it or choose a new --out")
    blocks, old_reports, old_seconds = [], [], 0.0
    if resume and ck_path.exists():
        blocks, old_reports, old_seconds = _load_resume(ck_path, config, data)
        log(f"resuming after layer {len(blocks)} of {config.layers}")
    t_load = time.perf_counter()
    train = load_split(data, "train", n=sizes.n_train, epochs=sizes.epochs, device=device)
    val = load_split(data, "val", n=sizes.n_val, device=device)
    test = load_split(data, "test", n=sizes.n_test, device=device)
    log(f"data: {len(train)} train / {len(val)} val / {len(test)} test slices of "
        f"{tuple(train.x0.shape[-2:])} ({time.perf_counter() - t_load:.1f} s)")
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
    writer = None
    if tensorboard and is_main_process():
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(log_dir=str(out / "tensorboard"))
    reports = list(old_reports)
    t0 = time.perf_counter() - old_seconds

    def save(net: LayerwiseNet, rep: LayerReport) -> None:
        row = _report_dict(rep)
        with torch.no_grad():
            m = slice_metrics(evaluate_model(net, test), test.target)
        row["test_psnr"], row["test_ssim"] = statistics.mean(m["psnr"]), statistics.mean(m["ssim"])
        reports.append(_clean(row))
        payload = {"model_spec": {"factory": FACTORY, "kwargs": _clean(net.spec())},
                   "model_state": net.state_dict(),
                   "layerwise": {"config": _clean(asdict(config)), "data": _clean(asdict(data)),
                                 "reports": reports, "seconds": time.perf_counter() - t0}}
        save_checkpoint(ck_path, payload)
        if writer is not None:
            for key in ("objective", "certificate", "train_psnr", "val_psnr", "test_psnr", "width"):
                writer.add_scalar(f"layerwise/{key}", float(row[key]), rep.layer)
        if on_layer is not None:
            on_layer(reports[-1])

    images, n_total = None, None
    if world_size() > 1:
        images = torch.arange(rank(), len(train), world_size())
        train, n_total = train.subset(images), len(train)
        log(f"this process trains on {len(train)} of the {n_total} training slices ({world_size()} processes)")
    net, _ = train_layerwise(train, val, config=config, blocks=blocks, on_layer=save if is_main_process() else None,
                             callback=callback, images=images, n_total=n_total)
    seconds = time.perf_counter() - t0
    if not is_main_process():
        return LayerwiseRun(net=net, reports=reports, metrics={}, seconds=seconds)
    if writer is not None:
        writer.close()
    metrics = evaluate_references(net, val, test, config=config, fista=fista_reference)
    metrics.update(layers=reports, train_seconds=seconds, widths=net.widths(),
                   config=_clean(asdict(config)), data=_clean(asdict(data)), sizes=asdict(sizes))
    write_json(out / METRICS, _clean(metrics))
    _figures(out, net, test, metrics)
    return LayerwiseRun(net=net, reports=reports, metrics=metrics, seconds=seconds)


def evaluate_references(net: LayerwiseNet, val: ReconData, test: ReconData, *,
                        config: LayerwiseConfig, fista: bool = True) -> dict[str, Any]:
    """Per-layer test metrics and the references, with paired 95% intervals."""
    per_layer = _per_layer_eval(net, test)
    final = per_layer[-1]["psnr_slices"]
    refs: dict[str, list[float]] = {}
    zf = slice_metrics(test.x0, test.target)
    refs["zero-filled"] = zf["psnr"]
    res: dict[str, Any] = {"per_layer": per_layer,
                           "zero_filled": dict(psnr=statistics.mean(zf["psnr"]), ssim=statistics.mean(zf["ssim"]))}
    mu = config.dc_mu
    if mu is not None:
        dc = slice_metrics(data_consistency(test.operator, test.x0, test.x0, mu=mu), test.target)
        refs["dc-only"] = dc["psnr"]
        res["dc_only"] = dict(psnr=statistics.mean(dc["psnr"]), ssim=statistics.mean(dc["ssim"]))
    if fista:
        lam, x = l1_wavelet_tuned(val, test)
        fm = slice_metrics(x, test.target)
        refs["l1-wavelet"] = fm["psnr"]
        res["l1_wavelet"] = dict(lam=lam, psnr=statistics.mean(fm["psnr"]), ssim=statistics.mean(fm["ssim"]))
    res["gain_vs"] = {}
    for name, vals in refs.items():
        mean, lo, hi = paired_ci(final, vals)
        res["gain_vs"][name] = dict(mean_db=mean, ci_low_db=lo, ci_high_db=hi, n=len(vals))
    return res


def _figures(out: Path, net: LayerwiseNet, test: ReconData, metrics: dict[str, Any]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from convexrecon.viz import comparison_figure, save_figure

    fig, ax = plt.subplots(figsize=(5, 3.5))
    layers = [r["layer"] for r in metrics["per_layer"]]
    ax.plot(layers, [r["psnr"] for r in metrics["per_layer"]], "o-", label="layer-wise (test)")
    for key, style in (("zero_filled", ":"), ("dc_only", "--"), ("l1_wavelet", "-.")):
        if key in metrics:
            ax.axhline(metrics[key]["psnr"], linestyle=style, color="gray", label=key.replace("_", " "))
    ax.set_xlabel("layer")
    ax.set_ylabel("mean slice PSNR (dB)")
    ax.legend(fontsize=8)
    save_figure(fig, out / "psnr_per_layer.png")
    plt.close(fig)
    with torch.no_grad():
        x = evaluate_model(net, test)
    comparison_figure(out / "reconstructions.png", {"zero-filled": test.x0.cpu(), "layer-wise": x.cpu()},
                      reference=test.target.cpu(), max_rows=3, title="test slices")
