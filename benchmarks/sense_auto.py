"""CG-SENSE's default (``mu="auto"``) against the oracle-best ``(mu, iterations)``.

For each problem with a reference: zero-filled, the former default (``mu=0.01`` run
to ``tol=1e-6``), the oracle (the best PSNR over ``mu`` in {0, 1e-3, 1e-2, 3e-2,
1e-1} and every iteration up to 50, chosen with the ground truth) and the default
``recon.sense`` (``mu="auto"``: ``mu`` and the iteration count by leave-one-coil-out
k-space prediction, no ground truth), in PSNR (dB, :func:`convexrecon.metrics.psnr`),
with the time of the default and of one fixed-``mu`` run. The target: the default
within 0.5 dB of the oracle. The last line is::

    RESULT worst_gap_db=<oracle - auto, worst problem> below_zero_filled=<names or ->

Usage::

    .venv/bin/python benchmarks/sense_auto.py [--problems a,b] [--slices 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import configure, table  # noqa: E402

from convexrecon import metrics, recon  # noqa: E402
from convexrecon.problems import load  # noqa: E402
from convexrecon.recon._setup import prepare  # noqa: E402
from convexrecon.recon._solve import solve  # noqa: E402
from convexrecon.recon.sense_auto import choose_sense_on  # noqa: E402

PROBLEMS = ("brain-sim-poisson-4x", "brain-sim-cartesian-1d-4x", "phantom32-cartesian-1d-4x",
            "radial-golden", "tiny-cartesian", "tiny-radial")
ORACLE_MU = (0.0, 1e-3, 1e-2, 3e-2, 1e-1)


def evaluate(name: str, slices: int) -> tuple:
    p = load(name, split="test", n_slices=slices, seed=0)
    ref = p.ground_truth
    samp = p.mask if p.mask is not None else p.traj
    scaled = prepare(p.kspace, p.maps, samp)
    best = (-float("inf"), None, None)
    for mu in ORACLE_MU:
        scores: list[float] = []

        def record(progress):
            scores.append(metrics.psnr(scaled.unscale(progress.x), ref))

        with torch.no_grad():
            solve("sense", scaled.op, scaled.y, mu, max_iter=50, tol=1e-6, callback=record)
        k = max(range(len(scores)), key=scores.__getitem__)
        if scores[k] > best[0]:
            best = (scores[k], mu, k + 1)
    t0 = time.perf_counter()
    auto = recon.sense(p.kspace, p.maps, samp)
    t_auto = time.perf_counter() - t0
    choice = choose_sense_on(scaled)
    t0 = time.perf_counter()
    old = recon.sense(p.kspace, p.maps, samp, mu=0.01)
    t_old = time.perf_counter() - t0
    zf = metrics.psnr(recon.zero_filled(p.kspace, p.maps, samp), ref)
    return (name, f"{zf:.2f}", f"{metrics.psnr(old, ref):.2f}",
            f"{best[0]:.2f} (mu={best[1]:g}, {best[2]} it)",
            f"{metrics.psnr(auto, ref):.2f} (mu={choice.mu:g}, {choice.iters} it)",
            f"{t_auto:.1f} s / {t_old:.1f} s", best[0] - metrics.psnr(auto, ref),
            metrics.psnr(auto, ref) < zf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--slices", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    print(configure(args.threads))
    rows = [evaluate(n, args.slices) for n in args.problems.split(",")]
    print(table(("problem", "zero-filled", "mu=0.01 (former)", "oracle", "auto (default)",
                 "time auto / fixed"), [r[:6] for r in rows],
                title="CG-SENSE PSNR (dB): the default against the oracle"))
    below = ",".join(r[0] for r in rows if r[7]) or "-"
    print(f"RESULT worst_gap_db={max(r[6] for r in rows):.2f} below_zero_filled={below}")


if __name__ == "__main__":
    main()
