"""Operator benchmark: convexrecon's encoders against sigpy's, same inputs, same run.

Problems (256 x 256, 8 birdcage coils from ``sigpy.mri.birdcage_maps``):

* Cartesian: ``Sense(maps, mask)`` with a 4x Poisson-disc mask vs
  ``sigpy.mri.linop.Sense(maps, weights=mask)``;
* radial: 64 golden-angle spokes x 512 samples, ``NonCartesianSense`` (Toeplitz
  normal) vs ``sigpy.mri.linop.Sense(maps, coord=...)``, and the single-coil
  ``NUFFT`` vs ``sigpy.linop.NUFFT``. sigpy's normal is ``S.H * S``.

Each figure is the median of repeated timings after warm-up runs, with
``torch.set_flush_denormal(True)``. Ratios are sigpy time / ours (> 1: ours is
faster). The last line printed is::

    RESULT sense_normal_vs_sigpy=<ratio> nufft_normal_vs_sigpy=<ratio>

taken at the first ``--threads`` setting; ``nufft_normal_vs_sigpy`` is the
multi-coil radial normal (NonCartesianSense vs sigpy's Sense with coordinates).

Usage::

    .venv/bin/python benchmarks/operators.py [--threads 1,2] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=DeprecationWarning)

import sigpy  # noqa: E402
import sigpy.mri  # noqa: E402

from convexrecon.operators.noncartesian import NonCartesianSense  # noqa: E402
from convexrecon.operators.nufft import NUFFT  # noqa: E402
from convexrecon.operators.sense import Sense  # noqa: E402
from convexrecon.sampling import poisson_disc, radial, radians_to_grid  # noqa: E402

N, COILS, SPOKES, READOUT, ACCEL = 256, 8, 64, 512, 4


@dataclass
class Row:
    """One timed comparison."""

    problem: str
    op: str
    ours_ms: float
    sigpy_ms: float
    rel_diff: float

    @property
    def ratio(self) -> float:
        return self.sigpy_ms / self.ours_ms


def median_ms(fn: Callable[[], object], *, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def rel(a, b) -> float:
    """Relative difference of two arrays (ours vs sigpy), as a sanity check."""
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def build_inputs() -> dict:
    """Maps, mask, trajectory and image shared by both libraries."""
    maps = sigpy.mri.birdcage_maps((COILS, N, N)).astype(np.complex64)
    mask = poisson_disc((N, N), ACCEL, seed=0)
    traj = radial(SPOKES, READOUT, mode="golden")
    coord = radians_to_grid(traj, (N, N), layout="sigpy").numpy().astype(np.float32)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((N, N)) + 1j * rng.standard_normal((N, N))).astype(np.complex64)
    return dict(maps=maps, mask=mask, traj=traj, coord=coord, x=x)


def compare(problem: str, ours, theirs, x_np: np.ndarray, *, warmup: int,
            repeats: int) -> list[Row]:
    """Time forward, adjoint and normal of ``ours`` (convexrecon) and ``theirs`` (sigpy)."""
    x_t = torch.from_numpy(x_np)
    y_t = ours.forward(x_t)
    y_np = theirs(x_np)
    normal_np = theirs.H * theirs
    rows = []
    cases = [
        ("forward", lambda: ours.forward(x_t), lambda: theirs(x_np)),
        ("adjoint", lambda: ours.adjoint(y_t), lambda: theirs.H(y_np)),
        ("normal", lambda: ours.normal(x_t), lambda: normal_np(x_np)),
    ]
    for name, f_ours, f_theirs in cases:
        diff = rel(f_ours(), f_theirs())
        t_ours = median_ms(f_ours, warmup=warmup, repeats=repeats)
        t_theirs = median_ms(f_theirs, warmup=warmup, repeats=repeats)
        rows.append(Row(problem, name, t_ours, t_theirs, diff))
    return rows


def run(threads: int, inputs: dict, *, warmup: int, repeats: int) -> list[Row]:
    """All comparisons at one torch thread count."""
    torch.set_num_threads(threads)
    maps_t = torch.from_numpy(inputs["maps"])
    mask = inputs["mask"]
    x = inputs["x"]
    rows = []
    ours = Sense(maps_t, mask)
    theirs = sigpy.mri.linop.Sense(inputs["maps"], weights=mask.numpy().astype(np.float32))
    rows += compare(f"cartesian sense {COILS}c poisson{ACCEL}x", ours, theirs, x,
                    warmup=warmup, repeats=repeats)
    ours = NonCartesianSense(maps_t, inputs["traj"])
    theirs = sigpy.mri.linop.Sense(inputs["maps"], coord=inputs["coord"])
    rows += compare(f"radial sense {COILS}c {SPOKES}x{READOUT}", ours, theirs, x,
                    warmup=warmup, repeats=repeats)
    ours = NUFFT(inputs["traj"], (N, N))
    theirs = sigpy.linop.NUFFT((N, N), inputs["coord"])
    rows += compare(f"radial nufft 1c {SPOKES}x{READOUT}", ours, theirs, x,
                    warmup=warmup, repeats=repeats)
    return rows


def print_table(threads: int, rows: list[Row]) -> None:
    """Print one table of timings and ratios."""
    print(f"\n## torch threads = {threads}")
    head = f"{'problem':<32} {'op':<8} {'ours ms':>9} {'sigpy ms':>9} {'sigpy/ours':>10} {'rel diff':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.problem:<32} {r.op:<8} {r.ours_ms:9.2f} {r.sigpy_ms:9.2f} "
              f"{r.ratio:10.2f} {r.rel_diff:9.1e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1",
                        help="comma-separated torch thread counts, e.g. 1,2 (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats (same code path)")
    args = parser.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",")]
        if any(t < 1 for t in threads):
            raise ValueError
    except ValueError:
        parser.error(f"--threads: expected positive ints separated by commas, got {args.threads!r}")
    warmup, repeats = (1, 5) if args.quick else (3, 21)
    torch.set_flush_denormal(True)
    print(f"# convexrecon operator benchmark: {N}x{N}, {COILS} coils, Poisson {ACCEL}x, "
          f"radial {SPOKES} spokes x {READOUT}; median of {repeats} after {warmup} warm-up")
    print(f"# torch {torch.__version__}, sigpy {sigpy.__version__}, numpy {np.__version__}, "
          f"python {sys.version.split()[0]}")
    print("# rel diff: ours vs sigpy output (radial: different kernels, so ~1e-3..1e-2)")
    print(f"# load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    inputs = build_inputs()
    results = {}
    for t in threads:
        rows = run(t, inputs, warmup=warmup, repeats=repeats)
        print_table(t, rows)
        results[t] = rows
    print(f"\n# load average at end: {os.getloadavg()[0]:.2f}")
    first = results[threads[0]]
    sense_ratio = next(r.ratio for r in first if r.problem.startswith("cartesian") and r.op == "normal")
    nufft_ratio = next(r.ratio for r in first if r.problem.startswith("radial sense") and r.op == "normal")
    assert math.isfinite(sense_ratio) and math.isfinite(nufft_ratio)
    print(f"RESULT sense_normal_vs_sigpy={sense_ratio:.2f} nufft_normal_vs_sigpy={nufft_ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
