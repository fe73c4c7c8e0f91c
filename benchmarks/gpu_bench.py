"""The operator and classical benchmarks on a CUDA device, against the CPU in the same run.

``benchmarks/operators.py`` and ``benchmarks/classical.py`` compare with sigpy on the
CPU; this script times the same kinds of work on ``--device`` (default ``cuda``)
and on the CPU (``--threads`` threads), 256 x 256 with 8 birdcage coils:

* operators: ``Sense.normal`` (4x Poisson-disc mask), ``NonCartesianSense.normal``
  (64 golden-angle spokes x 512, the device's default NUFFT backend and Toeplitz
  normal), the orthogonal wavelet forward + adjoint pair (db4, 4 levels; pywt on the
  CPU, the torch backend on the device);
* classical reconstructions: ``recon.l1_wavelet`` (100 FISTA iterations, fixed
  ``lam``), ``recon.sense`` with ``mu=0.01`` for 50 iterations and ``tol=0``, and
  the default ``recon.sense`` (``mu="auto"``), on the ``brain-sim-poisson-4x``
  problem's k-space and maps.

Every figure is the median of ``--repeats`` runs after one warm-up, with
``torch.cuda.synchronize`` before the clock is read. Each row also prints the
relative difference of the device result from the CPU result (the same
computation, so speed is not bought with a different answer). The last line is::

    RESULT sense_normal=<cpu/dev> nc_sense_normal=<r> wavelet_pair=<r> l1_wavelet=<r> cg_sense=<r> sense_auto=<r>

(ratios CPU time / device time; > 1: the device is faster).

Usage::

    .venv/bin/python benchmarks/gpu_bench.py [--device cuda] [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import configure, fmt_time, measure, table  # noqa: E402


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().cpu().to(torch.complex128), b.detach().cpu().to(torch.complex128)
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _operators(device: torch.device):
    """``{name: (cpu_fn, device_fn)}`` for the operator rows."""
    from convexrecon.coils import birdcage
    from convexrecon.operators.noncartesian import NonCartesianSense
    from convexrecon.operators.sense import Sense
    from convexrecon.operators.wavelet import Wavelet
    from convexrecon.sampling import poisson_disc, radial

    n = 256
    maps = birdcage(8, (n, n), dtype=torch.complex64)
    mask = poisson_disc((n, n), 4.0, seed=0)
    traj = radial(64, 512)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, n, dtype=torch.complex64, generator=g)
    devs = (torch.device("cpu"), device)
    rows = {}
    for name, build in (
        ("sense_normal", lambda dev: Sense(maps.to(dev), mask.to(dev))),
        ("nc_sense_normal", lambda dev: NonCartesianSense(maps.to(dev), traj.to(dev))),
    ):
        rows[name] = tuple((lambda op=build(d), v=x.to(d): op.normal(v)) for d in devs)
    rows["wavelet_pair"] = tuple(
        (lambda W=Wavelet((n, n), wavelet="db4", levels=4,
                          backend="pywt" if d.type == "cpu" else "torch"), v=x.to(d): W.adjoint(W(v)))
        for d in devs)
    return rows


def _classical(device: torch.device):
    from convexrecon import recon
    from convexrecon.problems import load

    p = load("brain-sim-poisson-4x")
    k, maps, mask = p.kspace, p.maps, p.mask
    rows = {}
    for name, fn in (
        ("l1_wavelet", lambda dev: recon.l1_wavelet(k, maps, mask, lam=0.01, max_iter=100, device=dev)),
        ("cg_sense", lambda dev: recon.sense(k, maps, mask, mu=0.01, max_iter=50, tol=0.0, device=dev)),
        ("sense_auto", lambda dev: recon.sense(k, maps, mask, device=dev)),
    ):
        rows[name] = tuple((lambda d=d, fn=fn: fn(d)) for d in (torch.device("cpu"), device))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="the device to compare with the CPU")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per row (median)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: torch.cuda.is_available() is False")
    print(configure(args.threads))
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}")
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    results, ratios = [], {}
    for section in (_operators, _classical):
        for name, (cpu_fn, dev_fn) in section(device).items():
            with torch.no_grad():
                cpu = measure(cpu_fn, repeats=args.repeats)
                dev = measure(dev_fn, repeats=args.repeats, sync=sync)
            ratios[name] = cpu.median / dev.median
            results.append((name, fmt_time(cpu.median), fmt_time(dev.median),
                            f"{ratios[name]:.1f}x", f"{_rel(dev.value, cpu.value):.1e}"))
    print(table(("work", "cpu", str(device), "cpu / device", "rel. diff"), results,
                title=f"CPU ({args.threads} thread(s)) vs {device}, medians of {args.repeats}"))
    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
