"""What keeping the DEQ map a contraction costs: stabiliser sweep of ``deq.py``'s section-1 DEQ.

The DEQ of ``benchmarks/deq.py`` section 1 (CG data consistency, Broyden forward,
SHINE backward unless ``--backward``, the full run's data and configuration unless
``--quick``) trained
from the same initialisation and seed with each stabiliser: none, Jacobian
regularisation at several weights, and the ``rho`` hinge at several weights and
targets. Per epoch: validation PSNR, the largest ``rho`` measured in training (the
SHINE backward's or the hinge's power iterations; none for ``ift`` and ``jfb``
without the hinge), batches skipped as diverged
(measured ``rho >= 1`` or a blown-up residual: no optimiser step), and at the end
``rho`` at every validation fixed point. One table at the end::

    .venv/bin/python benchmarks/deq_contraction.py            # about 10 min, 1 thread
    .venv/bin/python benchmarks/deq_contraction.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import deq as bench  # noqa: E402
from _deq_stability import val_rho  # noqa: E402
from _timing import configure, table  # noqa: E402

VARIANTS = {
    "none": {},
    "jac-reg 0.01": {"jac_reg": 0.01},
    "jac-reg 0.1": {"jac_reg": 0.1},
    "jac-reg 1": {"jac_reg": 1.0},
    "jac-reg 10": {"jac_reg": 10.0},
    "rho-hinge 1 (0.9)": {"rho_reg": 1.0, "rho_target": 0.9},
    "rho-hinge 10 (0.9)": {"rho_reg": 10.0, "rho_target": 0.9},
    "rho-hinge 10 (0.8)": {"rho_reg": 10.0, "rho_target": 0.8},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="deq.py --quick's sizes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backward", choices=("shine", "ift", "jfb"), default="shine",
                    help="the backward of every variant (section 1 trains ift and shine)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated, from: {', '.join(VARIANTS)}")
    args = ap.parse_args()
    names = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; expected names from {list(VARIANTS)}")
    print(configure(args.threads))
    P = dict(bench.QUICK if args.quick else bench.FULL)
    print("config:", P)
    data, val, _ = bench.datasets(P["size"], P["coils"], P["n_train"], P["n_val"], 1, 0)
    rows = []
    for name in names:
        t0 = time.perf_counter()
        model = bench.make_deq(P, seed=0, backward=args.backward, **VARIANTS[name])
        run = bench.train(model, data, val, epochs=P["epochs"], lr=P["lr"], batch_size=P["batch"], seed=0,
                          label=name)
        rho = val_rho(model, bench.batches(val, P["batch"]))
        h = run["history"]
        rows.append([name, " / ".join(f"{r['val_psnr']:.2f}" for r in h),
                     " / ".join(f"{r.get('rho_max', float('nan')):.2f}" for r in h),
                     sum(r["skipped"] for r in h), f"{h[-1].get('fwd_iters', float('nan')):.1f}",
                     f"{statistics.median(rho):.3f}", f"{max(rho):.3f}",
                     " / ".join(f"{r['time_s']:.0f}" for r in h), f"{time.perf_counter() - t0:.0f}"])
    print(f"backward: {args.backward}")
    print(table(["stabiliser", "val PSNR dB per epoch", "train rho max per epoch", "skipped batches",
                 "fwd iters (last epoch)", "val rho median", "val rho max", "train s (cumulative)",
                 "total s"], rows))


if __name__ == "__main__":
    main()
