"""Reconstruction quality of the one-line reconstructions on the named problems.

On ``phantom32-cartesian-1d-4x`` and ``brain-sim-poisson-4x`` it compares zero-filled,
CG-SENSE and L1-wavelet in PSNR / SSIM / NMSE (fastMRI conventions,
:mod:`convexrecon.metrics`, magnitude images, whole field of view). The L1 weight is
chosen twice: on a separate slice of the ``train`` split (best PSNR over
``DEFAULT_GRIDS["l1_wavelet"]``; where a problem has no train split this row is
skipped) and without ground truth by ``lam="auto"`` (k-space cross-validation). On
``brain-real-8coil`` (no reference) it writes ``brain_real_8coil.png`` (zero-filled,
SENSE and L1-wavelet magnitudes) for a visual check of aliasing.

Usage::

    python benchmarks/quality.py --out /tmp/quality [--quick] [--threads 1]
    python benchmarks/quality.py --peers [--no-bart] [--oracle] [--test-slices 2]

Prints a markdown table. ``--peers`` compares L1-wavelet with sigpy and BART (with
and without random shifts) instead, with and without cycle spinning and with BART's
wavelet, every lambda chosen on the train split (see ``benchmarks/_peers_l1.py``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from convexrecon import metrics, recon
from convexrecon.problems import load, names
from convexrecon.recon import DEFAULT_GRIDS


def _l1(p, lam, iters):
    return recon.l1_wavelet(p.kspace, p.maps, p.mask, lam=lam, max_iter=iters)


def _scores(x, ref) -> tuple[float, float, float]:
    return metrics.psnr(x, ref), metrics.ssim(x, ref), metrics.nmse(x, ref)


def _train_lambda(name: str, iters: int, grid) -> float | None:
    try:
        p = load(name, split="train", n_slices=1, seed=1)
    except Exception:  # noqa: BLE001 -- a problem without a train split
        return None
    best = max(grid, key=lambda lam: metrics.psnr(_l1(p, lam, iters), p.ground_truth))
    return float(best)


def evaluate(name: str, *, n_slices: int, iters: int, grid) -> list[tuple]:
    """Rows ``(problem, method, lam, psnr, ssim, nmse, seconds)``."""
    p = load(name, split="test", n_slices=n_slices, seed=0)
    ref = p.ground_truth
    rows = []

    def add(method, lam, fn):
        t0 = time.perf_counter()
        x = fn()
        rows.append((name, method, lam, *_scores(x, ref), time.perf_counter() - t0))

    add("zero-filled", None, lambda: recon.zero_filled(p.kspace, p.maps, p.mask))
    add("CG-SENSE", recon.iterative.DEFAULT_MU,
        lambda: recon.sense(p.kspace, p.maps, p.mask, max_iter=iters))
    lam_train = _train_lambda(name, iters, grid)
    if lam_train is not None:
        add("L1-wavelet (lam from train slice)", lam_train, lambda: _l1(p, lam_train, iters))
    choice = recon.choose_lambda(p.kspace, p.maps, p.mask, max_iter=iters, grid=grid, seed=0)
    add('L1-wavelet (lam="auto")', choice.lam, lambda: _l1(p, choice.lam, iters))
    return rows


def figure(out: Path, *, iters: int) -> Path:
    """Zero-filled, SENSE and L1-wavelet magnitudes of the real 8-coil brain slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = load("brain-real-8coil", split="test", n_slices=1, seed=0)
    images = {
        "zero-filled": recon.zero_filled(p.kspace, p.maps, p.mask),
        "CG-SENSE": recon.sense(p.kspace, p.maps, p.mask, max_iter=iters),
        f"L1-wavelet (lam={recon.iterative.DEFAULT_LAM})": _l1(p, recon.iterative.DEFAULT_LAM, iters),
    }
    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 5))
    for ax, (title, img) in zip(axes, images.items()):
        mag = img[0].abs().cpu().numpy()
        ax.imshow(mag, cmap="gray", vmin=0, vmax=float(torch.quantile(img[0].abs().flatten(), 0.995)))
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle("brain-real-8coil (real data, Poisson ~8x, ESPIRiT maps)")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "brain_real_8coil.png"
    tmp = out / "brain_real_8coil.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def peers_main(args) -> None:
    """The ``--peers`` table: L1-wavelet against sigpy and BART."""
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _peers_l1 import ITERS, compare  # noqa: PLC0415

    from convexrecon.perf import retain_freed_memory

    retain_freed_memory()
    grid = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # half decades around the scaled problems' optima
    with_bart = not args.no_bart and shutil.which("bart") is not None
    print(f"L1-wavelet vs peers: {ITERS} iterations, lambda grid {[f'{g:.2g}' for g in grid]}, "
          f"test slices {args.test_slices}, bart: {shutil.which('bart') if with_bart else 'off'}")
    rows = compare(grid=grid, n_test=args.test_slices, with_bart=with_bart, oracle=args.oracle,
                   only=args.only.split(",") if args.only else None)
    print("\n| problem | method | lam (train) | PSNR (dB) | SSIM | oracle lam | oracle PSNR |")
    print("|---|---|---|---|---|---|---|")
    for prob, m, lam, ps, ss, lo, po in rows:
        print(f"| {prob} | {m} | {lam:.2g} | {ps:.2f} | {ss:.4f} | {lo:.2g} | {po:.2f} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", action="store_true", help="L1-wavelet vs sigpy and BART")
    ap.add_argument("--no-bart", action="store_true", help="--peers without BART")
    ap.add_argument("--oracle", action="store_true", help="--peers: also the best lambda on test")
    ap.add_argument("--test-slices", type=int, default=2, help="--peers: test slices per problem")
    ap.add_argument("--only", default="", help="--peers: comma-separated method names")
    ap.add_argument("--out", type=Path, default=Path("quality_out"), help="figure directory")
    ap.add_argument("--quick", action="store_true", help="fewer iterations and candidates")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.peers:
        peers_main(args)
        return
    iters = 50 if args.quick else 100
    grid = (1e-3, 3e-3, 1e-2, 3e-2) if args.quick else DEFAULT_GRIDS["l1_wavelet"]
    n_slices = 1 if args.quick else 2
    problems = [n for n in ("phantom32-cartesian-1d-4x", "brain-sim-poisson-4x") if n in names()]
    rows = []
    for name in problems:
        rows += evaluate(name, n_slices=1 if name.startswith("phantom") else n_slices,
                         iters=iters, grid=grid)
    print(f"iterations: {iters}; lambda grid: {grid}\n")
    print("| problem | method | lam / mu | PSNR (dB) | SSIM | NMSE | time (s) |")
    print("|---|---|---|---|---|---|---|")
    for prob, method, lam, ps, ss, nm, sec in rows:
        lam_s = "" if lam is None else (lam if isinstance(lam, str) else f"{lam:g}")
        print(f"| {prob} | {method} | {lam_s} | {ps:.2f} | {ss:.4f} | {nm:.4f} | {sec:.1f} |")
    path = figure(args.out, iters=iters)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
