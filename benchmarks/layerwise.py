"""Layer-wise convex training against its baselines: quality on whole evaluation sets,
end-to-end (validation plateau and equal wall-clock time), L1-wavelet FISTA,
held-out k-space on the real scan, and training memory.

    python benchmarks/layerwise.py --quick --out /tmp/lwbq     # < 5 min on 2 idle cores
    python benchmarks/layerwise.py --out /tmp/lwb              # cpu-preset sizes, 3 masks

Per mask (Poisson disc 4x; 1-D Cartesian 4x with centre fraction 0.04 and 0.08), a
layer-wise net is trained (``run_layerwise``, the CLI's code path) and its end-to-end
twin (same block shapes, Adam) is trained until its validation PSNR plateaus
(``_layerwise_e2e``). Every method is evaluated slice by slice on whole sets: the test
slab at 5% and 1% noise and the out-of-distribution sets, with paired 95% intervals
(``_layerwise_sets``). On ``brain-real-8coil`` (no reference) the models of the
Poisson mask are scored by their error on held-out k-space. Memory: one training step
per configuration in fresh processes, repeated, median and range
(``_layerwise_memory``), and the largest batch / minibatch within a budget.
``--quick`` keeps the same code path with smaller sizes: 32x32, 3 layers, P=6, 12
training slices, the Poisson mask only, sets test@5%, test@1% and dipy-b0, one
held-out draw, end-to-end capped at 2x the layer-wise time, memory at depth 1 (once)
and 5 (3 repeats), one batch probe (32) per mode.

Writes ``results.json`` and the figures into ``--out`` and ends with one line:

    RESULT psnr_gap_e2e_db=... psnr_gain_vs_fista_db=... psnr_gain_vs_fista_ci_low_db=... memory_ratio_5layers=...

(first mask, test slab at 5% noise: gap = end-to-end at its validation plateau minus
layer-wise; gains = layer-wise minus FISTA and the paired 95% interval's lower end;
memory = median layer-wise peak over median end-to-end peak, one step at batch 16,
64x64, 5 layers, P=16).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MASKS = {"poisson": ("poisson", 0.08), "cartesian-1d:0.04": ("cartesian-1d", 0.04),
         "cartesian-1d:0.08": ("cartesian-1d", 0.08)}


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, same code path")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--patterns", type=int, default=8)
    p.add_argument("--n-train", type=int, default=40)
    p.add_argument("--n-val", type=int, default=6)
    p.add_argument("--masks", nargs="+", default=list(MASKS), choices=list(MASKS))
    p.add_argument("--e2e-lr", type=float, default=3e-3)
    p.add_argument("--e2e-patience", type=int, default=8)
    p.add_argument("--e2e-max-epochs", type=int, default=300)
    p.add_argument("--e2e-time-cap", type=float, default=2.5,
                   help="stop end-to-end training at this many times the layer-wise time")
    p.add_argument("--e2e-halve-every", type=int, default=30)
    p.add_argument("--e2e-max-seconds", type=float, default=float("inf"),
                   help="also stop end-to-end training after this many seconds")
    p.add_argument("--memory-configs", nargs="+", default=None, metavar="DEPTH:P:REPEATS",
                   help="memory configurations (must include 5:16:R, the RESULT's)")
    p.add_argument("--batch-candidates", nargs="+", type=int, default=None)
    p.add_argument("--heldout-seeds", type=int, default=3)
    p.add_argument("--memory-repeats", type=int, default=3)
    p.add_argument("--skip-memory", action="store_true", help="quality only (no RESULT line)")
    p.add_argument("--skip-quality", action="store_true", help="memory only (no RESULT line)")
    p.add_argument("--resume", action="store_true",
                   help="continue the layer-wise runs already in --out (the end-to-end twin starts over)")
    p.add_argument("--combine", nargs="+", default=None, metavar="RESULTS_JSON",
                   help="only draw psnr_vs_layer.png into --out from the results.json of part runs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    a.sets = (("test", 0.05), ("test", 0.01), ("dipy-b0", 0.05), ("dipy-t1-coronal", 0.05))
    r = a.memory_repeats
    if a.memory_configs is not None:
        a.memory_configs = [tuple(int(v) for v in c.split(":")) for c in a.memory_configs]
    a.memory_configs = a.memory_configs or [(5, 16, r), (1, 16, 2), (3, 16, 2), (8, 16, 2), (5, 8, 2),
                                            (5, 32, 2)]
    a.batch_candidates = tuple(a.batch_candidates or (16, 24, 32, 48, 64))
    if a.quick:
        a.size, a.layers, a.patterns, a.n_train, a.n_val = 32, 3, 6, 12, 4
        a.masks = ["poisson"]
        a.e2e_patience, a.e2e_max_epochs, a.e2e_time_cap, a.e2e_halve_every = 5, 100, 2.0, 100
        a.sets = (("test", 0.05), ("test", 0.01), ("dipy-b0", 0.05))
        a.heldout_seeds = 1
        a.memory_configs = [(1, 16, 1), (5, 16, 3)]
        a.batch_candidates = (32,)
    return a


def _train_mask(name: str, a, out: Path, log) -> dict:
    from _layerwise_e2e import E2EOptions, train_to_plateau
    from _layerwise_sets import evaluate_sets

    from convexrecon.nets.layerwise import LayerwiseConfig
    from convexrecon.nets.layerwise_data import DataSpec
    from convexrecon.nets.layerwise_run import Sizes, run_layerwise

    mask, cf = MASKS[name]
    spec = DataSpec(size=a.size, mask=mask, center_fraction=cf, noise=0.05)
    cfg = LayerwiseConfig(layers=a.layers, patterns=a.patterns, kernel=3, max_iter=40,
                          beta_fracs=(0.1, 0.03, 0.01))
    log(f"[{name}] layer-wise: {a.layers} layers, P={a.patterns}, {a.size}x{a.size}, "
        f"{a.n_train} train / {a.n_val} val slices")
    run = run_layerwise(config=cfg, data=spec, sizes=Sizes(n_train=a.n_train, n_val=a.n_val),
                        out_dir=out / name.replace(":", "_") / "layerwise", resume=a.resume,
                        fista_reference=False,
                        on_layer=lambda r: log(f"    layer {r['layer']}: in {r['in_channels']}, width "
                                               f"{r['width']}, beta/max {r['beta_frac']}, cert "
                                               f"{r['certificate']:.1e}, val {r['val_psnr']:.2f}, test "
                                               f"{r['test_psnr']:.2f} dB ({r['seconds']:.1f} s)"))
    log(f"    layer-wise training {run.seconds:.1f} s; widths {run.net.widths()}")
    opts = E2EOptions(lr=a.e2e_lr, max_seconds=a.e2e_max_seconds, patience=a.e2e_patience, max_epochs=a.e2e_max_epochs, time_cap=a.e2e_time_cap,
                      halve_every=a.e2e_halve_every)
    log(f"[{name}] end-to-end twin (Adam lr {opts.lr}, halved every {opts.halve_every} epochs, batch "
        f"{opts.batch_size}, patience {opts.patience}):")
    e2e = train_to_plateau(run.net.spec(), spec, n_train=a.n_train, n_val=a.n_val,
                           out=out / name.replace(":", "_") / "e2e", layerwise_seconds=run.seconds,
                           opts=opts, log=log)
    models = {"end-to-end (plateau)": e2e.plateau_model, "end-to-end (equal time)": e2e.equal_model}
    log(f"[{name}] evaluation sets:")
    sets, images = evaluate_sets(run.net, models, spec, a.sets, n_val=a.n_val, log=log)
    return dict(net=run.net, models=models, spec=spec, images=images,
                result=dict(layerwise_seconds=run.seconds, widths=run.net.widths(), layers=run.reports,
                            e2e=dict(curve=e2e.curve, plateau_epoch=e2e.plateau_epoch,
                                     equal_epoch=e2e.equal_epoch, stop_reason=e2e.stop_reason),
                            sets=sets))


def _summary(name: str, r: dict, depth: int, log) -> None:
    final = f"layer-wise L{depth}"
    for key, s in r["sets"].items():
        f, lw = s["vs_fista"], s["vs_layerwise"]
        parts = [f"layer-wise {f[final]['mean']:.2f}", f"FISTA {f['L1-wavelet FISTA']['mean']:.2f}",
                 f"zero-filled {f['zero-filled']['mean']:.2f}",
                 f"layer-wise - FISTA {f[final]['diff']:+.2f} [{f[final]['ci_low']:+.2f}, "
                 f"{f[final]['ci_high']:+.2f}]"]
        for e in ("end-to-end (plateau)", "end-to-end (equal time)"):
            if e in lw:
                parts.append(f"{e} - layer-wise {lw[e]['diff']:+.2f} [{lw[e]['ci_low']:+.2f}, "
                             f"{lw[e]['ci_high']:+.2f}]")
        log(f"  {name} {key} (n={s['n']}, SSIM layer-wise {s['ssim'][final]:.4f}, FISTA "
            f"{s['ssim']['L1-wavelet FISTA']:.4f}): " + "; ".join(parts))


def _memory(a, log) -> dict:
    from _layerwise_memory import E2E, LW, MINIBATCH, fixed_malloc, largest_fitting, sweep

    fixed_malloc(True)
    log("training memory: one step, batch 16, 64x64, 8 coils, fresh processes (median [range] over "
        f"the repeats: {', '.join(f'depth {d}, P={p}: {r}' for d, p, r in a.memory_configs)}):")
    rows = sweep(a.memory_configs, n=16, size=64, threads=a.threads, log=log)
    five = next(r for r in rows if r["depth"] == 5 and r["patterns"] == 16)
    budget = five["e2e"]["median_mb"] + five["e2e"]["setup_mb"]
    log(f"  largest batch within the end-to-end budget at batch 16 ({budget:.0f} MB, step + setup), "
        "5 layers, P=16, 64x64:")
    kw = dict(depth=5, size=64, patterns=16)
    fits = dict(
        e2e=largest_fitting(E2E, kw, "n", a.batch_candidates, budget_mb=budget, threads=a.threads, log=log),
        layerwise=largest_fitting(LW, dict(kw, iters=3), "n", a.batch_candidates, budget_mb=budget,
                                  threads=a.threads, log=log),
        minibatch=largest_fitting(MINIBATCH, dict(kw, n=max(a.batch_candidates)), "batch_size",
                                  a.batch_candidates, budget_mb=budget, threads=a.threads, log=log))
    return dict(rows=rows, fits=fits, budget_mb=budget, ratio_5layers=five["ratio"],
                ratio_5layers_range=[five["ratio_min"], five["ratio_max"]])


def _finite(v):
    """JSON-safe: non-finite floats become None."""
    if isinstance(v, float):
        return v if v == v and abs(v) != float("inf") else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def main() -> None:
    a = _args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    from _layerwise_figs import memory_vs_depth, psnr_vs_layer, reconstructions
    from _layerwise_sets import heldout_real

    from convexrecon.nets.layerwise_run import write_json

    out = Path(a.out or tempfile.mkdtemp(prefix="layerwise-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if a.combine:  # one figure over the masks of several part runs
        per_mask = {}
        for path in a.combine:
            per_mask.update({n: m["sets"] for n, m in json.loads(Path(path).read_text())["masks"].items()})
        psnr_vs_layer(out / "psnr_vs_layer.png", per_mask)
        print(f"wrote {out / 'psnr_vs_layer.png'} ({', '.join(per_mask)})")
        return

    def log(s: str, **_) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f} s] {s}", flush=True)

    trained = {} if a.skip_quality else {name: _train_mask(name, a, out, log) for name in a.masks}
    heldout = None
    if trained:
        log("summary (paired 95% intervals over slices):")
        for name, t in trained.items():
            _summary(name, t["result"], a.layers, log)
        first = trained[a.masks[0]]
        if MASKS[a.masks[0]][0] == "poisson":
            log("brain-real-8coil (Poisson disc, no reference): held-out k-space, models of the Poisson mask:")
            lam = first["result"]["sets"]["test@0.05"]["lam"]
            heldout = heldout_real(first["net"], {"end-to-end (plateau)": first["models"]["end-to-end (plateau)"]},
                                   lam, seeds=tuple(range(a.heldout_seeds)), log=log)
        psnr_vs_layer(out / "psnr_vs_layer.png", {n: t["result"]["sets"] for n, t in trained.items()})
        scores = {k: v["mean"] for k, v in first["result"]["sets"]["test@0.05"]["vs_fista"].items()}
        reconstructions(out / "reconstructions.png", first["images"], scores, depth=a.layers)
    mem = None
    if not a.skip_memory:
        mem = _memory(a, log)
        memory_vs_depth(out / "memory_vs_depth.png", mem["rows"], patterns=16)
    res = dict(args={k: v for k, v in vars(a).items()}, masks={n: t["result"] for n, t in trained.items()},
               heldout_real=heldout, memory=mem, wall_seconds=time.perf_counter() - t_start)
    write_json(out / "results.json", _finite(json.loads(json.dumps(res, default=str))))
    log(f"wrote {out} ({time.perf_counter() - t_start:.0f} s)")
    if not trained or mem is None:
        return
    s = trained[a.masks[0]]["result"]["sets"]["test@0.05"]
    final = f"layer-wise L{a.layers}"
    gap = s["vs_layerwise"]["end-to-end (plateau)"]["diff"]
    f = s["vs_fista"][final]
    print(f"RESULT psnr_gap_e2e_db={gap:.3f} psnr_gain_vs_fista_db={f['diff']:.3f} "
          f"psnr_gain_vs_fista_ci_low_db={f['ci_low']:.3f} memory_ratio_5layers={mem['ratio_5layers']:.3f}")


if __name__ == "__main__":
    main()
