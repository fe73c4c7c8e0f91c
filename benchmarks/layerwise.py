"""Layer-wise convex training against its baselines: quality on the whole test slab,
end-to-end (plateau and equal wall-clock time), L1-wavelet FISTA, and training memory.

    python benchmarks/layerwise.py --quick          # < 5 min on 2 idle cores
    python benchmarks/layerwise.py --size 64 --layers 5 --patterns 16 --n-train 48

Prints per-layer test PSNR with paired 95% intervals, the end-to-end curve, the
memory ratios at several depths, writes figures and ``results.json`` into ``--out``,
and ends with one line:

    RESULT psnr_gap_e2e_db=... psnr_gain_vs_fista_db=... psnr_gain_vs_fista_ci_low_db=... memory_ratio_5layers=...

(gap = end-to-end at its best validation epoch (a plateau, or the time cap of
``--e2e-time-factor`` times the layer-wise time) minus layer-wise; gains = layer-wise minus
FISTA with the paired 95% interval's lower end; memory = layer-wise peak over
end-to-end peak, one training step at the same batch, 5 layers, P=16, fresh processes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, same code path")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--patterns", type=int, default=8)
    p.add_argument("--n-train", type=int, default=32)
    p.add_argument("--n-val", type=int, default=6)
    p.add_argument("--e2e-epochs", type=int, default=300)
    p.add_argument("--e2e-time-factor", type=float, default=4.0,
                   help="stop end-to-end training after this many times the layer-wise time")
    p.add_argument("--mask", default="poisson", choices=("poisson", "cartesian-1d"))
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.quick:
        a.size, a.layers, a.patterns, a.n_train, a.n_val, a.e2e_epochs = 32, 3, 6, 12, 4, 150
    return a


def _e2e_curve(net_spec, spec, a, out: Path, test, budget: float):
    """Train the identical architecture epoch by epoch (fit resumes losslessly), test after each."""
    from convexrecon.nets.e2e_baselines import SubsetDataset, train_e2e
    from convexrecon.nets.layerwise_data import _dataset, _indices
    from convexrecon.nets.layerwise_eval import evaluate_model, slice_metrics
    from convexrecon.training import build_model

    model_spec = {"factory": "convexrecon.nets.e2e_baselines:gated_e2e_net",
                  "kwargs": {"blocks": net_spec["blocks"], "dc_mu": 0.1, "seed": 0,
                             "skip_input": net_spec["skip_input"]}}
    model = build_model(model_spec)
    tr, va = _dataset(spec, "train"), _dataset(spec, "val")
    train = SubsetDataset(tr, _indices(len(tr), a.n_train, "train", False))
    val = SubsetDataset(va, _indices(len(va), a.n_val, "val", False))
    curve, t_total, best, stale = [], 0.0, -1e9, 0
    for ep in range(1, a.e2e_epochs + 1):
        t0 = time.perf_counter()
        hist = train_e2e(model, model_spec=model_spec, train=train, val=val, epochs=ep, out_dir=str(out),
                         lr=1e-3, batch_size=4, resume=ep > 1, progress=False)
        t_total += time.perf_counter() - t0
        m = slice_metrics(evaluate_model(model, test), test.target)
        v = hist.epochs[-1].get("val_psnr", float("nan"))
        curve.append(dict(epoch=ep, seconds=t_total, val_psnr=v, test_psnr=statistics.mean(m["psnr"]),
                          psnr_slices=m["psnr"]))
        if ep % 10 == 0 or ep < 4:
            print(f"  e2e epoch {ep}: {t_total:6.1f} s  val {v:.2f}  test {curve[-1]['test_psnr']:.2f} dB",
                  flush=True)
        if v > best + 0.01:
            best, stale = v, 0
        else:
            stale += 1
            if stale >= 5:  # validation plateau: 5 epochs without +0.01 dB
                break
        if t_total > a.e2e_time_factor * budget:
            print(f"  e2e stopped at {a.e2e_time_factor:g}x the layer-wise time, before a plateau")
            break
    plateau = max(curve, key=lambda c: c["val_psnr"])
    within = [c for c in curve if c["seconds"] <= budget]
    equal = within[-1] if within else None
    return curve, plateau, equal


def _memory(configs, a):
    """Peak of one training step per (depth, P) at batch 16, 64x64, 8 coils (fresh
    processes; independent of --quick: one step is cheap, and at the quick sizes the
    constant overheads would hide how activations grow with depth)."""
    from convexrecon.training import peak_memory

    rows = []
    for d, p in configs:
        kw = dict(depth=d, n=16, size=64, patterns=p)
        lw = peak_memory("convexrecon.nets.layerwise_memory:layerwise_step", kwargs=dict(kw, iters=3),
                         threads=a.threads)
        e2e = peak_memory("convexrecon.nets.layerwise_memory:e2e_step", kwargs=kw, threads=a.threads)
        rows.append(dict(depth=d, patterns=p, layerwise_mb=lw.peak_bytes / 2**20, e2e_mb=e2e.peak_bytes / 2**20,
                         e2e_saved_mb=e2e.saved_bytes / 2**20, ratio=lw.peak_bytes / max(e2e.peak_bytes, 1)))
        print(f"  depth {d}, P={p}: layer-wise {rows[-1]['layerwise_mb']:.1f} MB, end-to-end "
              f"{rows[-1]['e2e_mb']:.1f} MB (saved for backward {rows[-1]['e2e_saved_mb']:.1f} MB), "
              f"ratio {rows[-1]['ratio']:.2f}", flush=True)
    return rows


def main() -> None:
    a = _args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    from convexrecon.nets.layerwise import LayerwiseConfig
    from convexrecon.nets.layerwise_data import DataSpec, load_split
    from convexrecon.nets.layerwise_eval import paired_ci
    from convexrecon.nets.layerwise_run import Sizes, run_layerwise, write_json

    out = Path(a.out or tempfile.mkdtemp(prefix="layerwise-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    spec = DataSpec(size=a.size, mask=a.mask, noise=a.noise)
    cfg = LayerwiseConfig(layers=a.layers, patterns=a.patterns, kernel=3, max_iter=40,
                          beta_fracs=(0.1, 0.03, 0.01))
    print(f"layer-wise: {a.layers} layers, P={a.patterns}, {a.size}x{a.size}, {a.n_train} train slices, "
          f"whole test slab, mask {a.mask}, noise {a.noise}", flush=True)
    t0 = time.perf_counter()
    run = run_layerwise(config=cfg, data=spec, sizes=Sizes(n_train=a.n_train, n_val=a.n_val),
                        out_dir=out / "layerwise", resume=False,
                        on_layer=lambda r: print(f"  layer {r['layer']}: width {r['width']} "
                                                 f"cert {r['certificate']:.1e} beta/max {r['beta_frac']} "
                                                 f"test {r['test_psnr']:.2f} dB ({r['seconds']:.1f} s)",
                                                 flush=True))
    lw_time = run.seconds
    m = run.metrics
    print(f"layer-wise total {time.perf_counter() - t0:.1f} s (training {lw_time:.1f} s); zero-filled "
          f"{m['zero_filled']['psnr']:.2f}, DC only {m['dc_only']['psnr']:.2f}, L1-wavelet (lam "
          f"{m['l1_wavelet']['lam']}) {m['l1_wavelet']['psnr']:.2f} dB", flush=True)
    for ref, g in m["gain_vs"].items():
        print(f"  layer-wise - {ref}: {g['mean_db']:+.2f} dB [{g['ci_low_db']:+.2f}, {g['ci_high_db']:+.2f}]")
    test = load_split(spec, "test")
    print("end-to-end (identical architecture, Adam 1e-3, batch 4, DC mu 0.1):", flush=True)
    curve, plateau, equal = _e2e_curve(run.net.spec(), spec, a, out / "e2e", test, lw_time)
    final = m["per_layer"][-1]["psnr_slices"]
    gap, glo, ghi = paired_ci(plateau["psnr_slices"], final)
    print(f"  e2e last epoch {curve[-1]['epoch']} ({curve[-1]['seconds']:.1f} s): val {curve[-1]['val_psnr']:.2f}")
    print(f"  best validation (epoch {plateau['epoch']}): e2e - layer-wise {gap:+.2f} dB [{glo:+.2f}, {ghi:+.2f}]")
    if equal is not None:
        eg = paired_ci(equal["psnr_slices"], final)
        print(f"  equal time (epoch {equal['epoch']}, {equal['seconds']:.1f} s): e2e - layer-wise "
              f"{eg[0]:+.2f} dB [{eg[1]:+.2f}, {eg[2]:+.2f}]")
    print("training memory, one step, batch 16, 64x64, 8 coils (fresh process each):", flush=True)
    mem = _memory([(1, 16), (3, 16), (8, 16), (5, 8), (5, 32), (5, 16)], a)
    _figure(out, m, curve, mem)
    fista = m["gain_vs"]["l1-wavelet"]
    res = dict(layerwise=m, e2e_curve=[{k: v for k, v in c.items() if k != "psnr_slices"} for c in curve],
               e2e_plateau_epoch=plateau["epoch"], memory=mem, args=vars(a))
    write_json(out / "results.json", json.loads(json.dumps(res, default=str)))
    print(f"wrote {out}")
    print(f"RESULT psnr_gap_e2e_db={gap:.3f} psnr_gain_vs_fista_db={fista['mean_db']:.3f} "
          f"psnr_gain_vs_fista_ci_low_db={fista['ci_low_db']:.3f} memory_ratio_5layers={mem[-1]['ratio']:.3f}")


def _figure(out: Path, m, curve, mem) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    layers = [r["layer"] for r in m["per_layer"]]
    a1.plot(layers, [r["psnr"] for r in m["per_layer"]], "o-", label="layer-wise")
    a1.axhline(max(c["test_psnr"] for c in curve), color="C1", label="end-to-end (best epoch)")
    a1.axhline(m["l1_wavelet"]["psnr"], color="gray", linestyle="-.", label="L1-wavelet FISTA")
    a1.axhline(m["zero_filled"]["psnr"], color="gray", linestyle=":", label="zero-filled")
    a1.set_xlabel("layer")
    a1.set_ylabel("test PSNR (dB)")
    a1.legend(fontsize=7)
    sweep = sorted((r for r in mem if r["patterns"] == 16), key=lambda r: r["depth"])
    a2.plot([r["depth"] for r in sweep], [r["layerwise_mb"] for r in sweep], "o-", label="layer-wise step")
    a2.plot([r["depth"] for r in sweep], [r["e2e_mb"] for r in sweep], "s-", label="end-to-end step")
    a2.set_xlabel("depth")
    a2.set_ylabel("peak training memory (MB)")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "layerwise_benchmark.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
