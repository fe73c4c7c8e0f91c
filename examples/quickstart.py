"""Quick start: reconstruct a named problem with L1-wavelet, CG-SENSE and zero filling.

    python examples/quickstart.py [--problem brain-sim-poisson-4x] [--out quickstart.png]

Prints PSNR / SSIM / NMSE against the problem's stated reference and writes a figure.
"""

from __future__ import annotations

import argparse

import torch

from convexrecon import metrics, problems, recon, viz


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="brain-sim-poisson-4x", choices=problems.names())
    parser.add_argument("--lam", type=float, default=0.01)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--out", default="quickstart.png")
    args = parser.parse_args(argv)

    torch.set_flush_denormal(True)
    p = problems.load(args.problem)
    print(f"{p.name}: {p.description}\nreference: {p.reference}")
    mask_or_traj = p.mask if p.mask is not None else p.traj
    images = {
        "zero-filled": recon.zero_filled(p.kspace, p.maps, mask_or_traj),
        "CG-SENSE": recon.sense(p.kspace, p.maps, mask_or_traj),
        f"L1-wavelet (lam={args.lam:g})": recon.l1_wavelet(
            p.kspace, p.maps, mask_or_traj, lam=args.lam, max_iter=args.iters),
    }
    scores = {}
    if p.ground_truth is not None:
        for name, x in images.items():
            psnr = metrics.psnr(x, p.ground_truth)
            scores[name] = f"PSNR {psnr:.2f} dB"
            print(f"{name:28s} PSNR {psnr:6.2f} dB  SSIM {metrics.ssim(x, p.ground_truth):.4f}  "
                  f"NMSE {metrics.nmse(x, p.ground_truth):.4f}")
    viz.comparison_figure(args.out, images, reference=p.ground_truth, scores=scores,
                          title=p.name)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
