"""Layer-wise design choices, measured: gates, whitening and where data consistency sits.

Trains the same small layer-wise net (the ``--quick`` setting of
``benchmarks/layerwise.py``: 32x32, 12 training / 4 validation slices, Poisson disc
4x, 8 coils, 5% noise, P=6, 3x3 kernels, beta path 0.1 / 0.03 / 0.01 of beta_max,
40 FISTA iterations per point) once per variant, through ``run_layerwise`` (the CLI's
code path), and prints the test-slab PSNR after every layer, each step's certificate
and the CPU time of the training::

    OMP_NUM_THREADS=1 python benchmarks/layerwise_design.py [--layers 2] [--out DIR]

Variants: the default (Gaussian gates, whitened steps, DC inside the step), gates
sampled from feature patches, no whitening, DC applied after an image-only network
(``--dc-after``) and no DC (``--no-dc``).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from convexrecon.nets.layerwise import LayerwiseConfig
from convexrecon.nets.layerwise_data import DataSpec
from convexrecon.nets.layerwise_run import Sizes, run_layerwise

VARIANTS = {
    "default: Gaussian gates, whitened, DC in the step": {},
    "gates sampled from feature patches": {"gates": "patches"},
    "no whitening": {"whiten": False},
    "DC applied after the network (--dc-after)": {"dc_in_step": False},
    "no DC (--no-dc)": {"dc_mu": None},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="run folders (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="layerwise-design-"))
    base = LayerwiseConfig(layers=args.layers, patterns=6, kernel=3, max_iter=40,
                           beta_fracs=(0.1, 0.03, 0.01))
    spec = DataSpec(size=32, mask="poisson", noise=0.05)
    rows = []
    for i, (name, change) in enumerate(VARIANTS.items()):
        cpu0 = time.process_time()
        run = run_layerwise(config=dataclasses.replace(base, **change), data=spec,
                            sizes=Sizes(n_train=12, n_val=4), out_dir=out / f"variant{i}",
                            fista_reference=False)
        cpu = time.process_time() - cpu0
        psnr = " / ".join(f"{r['test_psnr']:.2f}" for r in run.reports)
        cert = " / ".join(f"{r['certificate']:.1e}" for r in run.reports)
        rows.append(f"| {name} | {psnr} | {cert} | {cpu:.0f} s |")
        print(rows[-1], flush=True)
    print("\n| variant | test PSNR per layer (dB) | certificates | CPU |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
