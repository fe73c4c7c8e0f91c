"""Operator benchmark: convexrecon's encoders against sigpy's, same inputs, same run.

Problems (256 x 256, 8 birdcage coils from ``sigpy.mri.birdcage_maps``):

* Cartesian: ``Sense(maps, mask)`` with a 4x Poisson-disc mask vs
  ``sigpy.mri.linop.Sense(maps, weights=mask)``;
* radial: 64 golden-angle spokes x 512 samples, ``NonCartesianSense`` with the
  default backend (FINUFFT on the CPU) and with ``backend="torchkbnufft"`` vs
  ``sigpy.mri.linop.Sense(maps, coord=...)``; the single-coil ``NUFFT`` vs
  ``sigpy.linop.NUFFT``. sigpy's normal is ``S.H * S``. Our normal is timed both
  ways (Toeplitz embedding and ``adjoint(forward)``), which decides the default.
* ``pipe_menon_dcf`` on the radial trajectory (20 iterations) against the previous
  implementation (torchkbnufft's table-based iteration), same kernel and iterations.

Each radial forward and adjoint row shows its relative error against the exact
non-uniform DFT (float64, on 4096 random output entries: k-space samples for the
forward, pixels for the adjoint), for ours and sigpy's, so that speed is not
bought with a looser tolerance.

Each figure is the median of interleaved (round-robin) timings after warm-up
runs, with ``torch.set_flush_denormal(True)``. Ratios are peer time / ours (> 1:
ours is faster). The last line printed is::

    RESULT sense_normal_vs_sigpy=<r> nufft_normal_vs_sigpy=<r> nufft_forward_vs_sigpy=<r>
           nufft_adjoint_vs_sigpy=<r> dcf_vs_previous=<r>

(one line), taken at the first ``--threads`` setting; the ``nufft_*`` ratios are
the multi-coil radial SENSE (NonCartesianSense, default backend, vs sigpy's Sense
with coordinates).

Usage::

    .venv/bin/python benchmarks/operators.py [--threads 1,2] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=DeprecationWarning)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sigpy  # noqa: E402
import sigpy.mri  # noqa: E402
from _timing import configure, interleaved  # noqa: E402

from convexrecon.operators.dcf import pipe_menon_dcf  # noqa: E402
from convexrecon.operators.noncartesian import NonCartesianSense  # noqa: E402
from convexrecon.operators.nufft import NUFFT  # noqa: E402
from convexrecon.operators.nufft_tkbn import tkbn  # noqa: E402
from convexrecon.operators.sense import Sense  # noqa: E402
from convexrecon.sampling import poisson_disc, radial, radians_to_grid  # noqa: E402

N, COILS, SPOKES, READOUT, ACCEL = 256, 8, 64, 512, 4
N_CHECK = 4096  # output entries checked against the exact NUDFT


@dataclass
class Row:
    """One timed comparison; errors are relative to the exact NUDFT (nan: not computed)."""

    problem: str
    op: str
    ours_ms: float
    peer_ms: float
    ours_err: float = float("nan")
    peer_err: float = float("nan")
    peer: str = "sigpy"

    @property
    def ratio(self) -> float:
        return self.peer_ms / self.ours_ms


class ExactNudft:
    """Exact centred orthonormal NUDFT entries (float64), separable per axis."""

    def __init__(self, traj: torch.Tensor, *, seed: int = 0) -> None:
        t = traj.double()
        n = torch.arange(N, dtype=torch.float64) - N // 2
        self.e0 = torch.exp(-1j * t[0][:, None] * n[None, :])  # (K, N)
        self.e1 = torch.exp(-1j * t[1][:, None] * n[None, :])
        g = torch.Generator().manual_seed(seed)
        self.rows = torch.randperm(t.shape[1], generator=g)[:N_CHECK]
        self.pix = torch.randperm(N * N, generator=g)[:N_CHECK]

    def forward_rows(self, img: torch.Tensor) -> torch.Tensor:
        """Exact ``A img`` at the checked k-space rows; ``img`` is ``(..., N, N)``."""
        e0, e1 = self.e0[self.rows], self.e1[self.rows]
        return torch.einsum("kn,...nm,km->...k", e0, img.to(torch.complex128), e1) / N

    def adjoint_pixels(self, y: torch.Tensor) -> torch.Tensor:
        """Exact ``A^H y`` at the checked pixels; ``y`` is ``(..., K)``."""
        p0, p1 = self.pix // N, self.pix % N
        basis = (self.e0[:, p0] * self.e1[:, p1]).conj()  # (K, n_pix)
        return (y.to(torch.complex128) @ basis) / N


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def build_inputs() -> dict:
    """Maps, mask, trajectory and image shared by both libraries."""
    maps = sigpy.mri.birdcage_maps((COILS, N, N)).astype(np.complex64)
    mask = poisson_disc((N, N), ACCEL, seed=0)
    traj = radial(SPOKES, READOUT, mode="golden")
    coord = radians_to_grid(traj, (N, N), layout="sigpy").numpy().astype(np.float32)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((N, N)) + 1j * rng.standard_normal((N, N))).astype(np.complex64)
    return dict(maps=maps, mask=mask, traj=traj, coord=coord, x=x, exact=ExactNudft(traj))


def timed(fns: dict[str, Callable[[], object]], *, warmup: int, repeats: int) -> dict[str, float]:
    """Median milliseconds of each callable, timed round-robin."""
    return {k: 1e3 * t.median for k, t in interleaved(fns, repeats=repeats, warmup=warmup).items()}


def cartesian_rows(inputs: dict, *, warmup: int, repeats: int) -> list[Row]:
    maps_t = torch.from_numpy(inputs["maps"])
    x_np, mask = inputs["x"], inputs["mask"]
    x_t = torch.from_numpy(x_np)
    ours = Sense(maps_t, mask)
    theirs = sigpy.mri.linop.Sense(inputs["maps"], weights=mask.numpy().astype(np.float32))
    normal_np = theirs.H * theirs
    y_t, y_np = ours(x_t), theirs(x_np)
    ms = timed({"of": lambda: ours(x_t), "sf": lambda: theirs(x_np),
                "oa": lambda: ours.adjoint(y_t), "sa": lambda: theirs.H(y_np),
                "on": lambda: ours.normal(x_t), "sn": lambda: normal_np(x_np)},
               warmup=warmup, repeats=repeats)
    name = f"cartesian sense {COILS}c poisson{ACCEL}x"
    return [Row(name, op, ms["o" + op[0]], ms["s" + op[0]]) for op in ("forward", "adjoint", "normal")]


def radial_rows(inputs: dict, *, multicoil: bool, warmup: int, repeats: int) -> list[Row]:
    """Forward, adjoint and both normals of the default backend; the torchkbnufft
    backend as a second reference; errors against the exact NUDFT."""
    exact: ExactNudft = inputs["exact"]
    x_np = inputs["x"]
    x_t = torch.from_numpy(x_np)
    maps_t = torch.from_numpy(inputs["maps"])
    if multicoil:
        make = lambda **kw: NonCartesianSense(maps_t, inputs["traj"], **kw)  # noqa: E731
        theirs = sigpy.mri.linop.Sense(inputs["maps"], coord=inputs["coord"])
        coil_images = maps_t.to(torch.complex128) * x_t.to(torch.complex128)
        name = f"radial sense {COILS}c {SPOKES}x{READOUT}"
    else:
        make = lambda **kw: NUFFT(inputs["traj"], (N, N), **kw)  # noqa: E731
        theirs = sigpy.linop.NUFFT((N, N), inputs["coord"])
        coil_images = x_t.to(torch.complex128)
        name = f"radial nufft 1c {SPOKES}x{READOUT}"
    ours = make(toeplitz=False)
    ours_toep = make(toeplitz=True)
    kb = make(backend="torchkbnufft")
    backend = ours.nufft.backend if multicoil else ours.backend
    normal_np = theirs.H * theirs
    y_t = ours(x_t)
    y_np = y_t.numpy()

    # errors against the exact NUDFT at the checked entries
    ref_fwd = exact.forward_rows(coil_images)
    err_fwd = lambda y: rel(torch.as_tensor(y)[..., exact.rows].to(torch.complex128), ref_fwd)  # noqa: E731
    y_c = torch.from_numpy(y_np).to(torch.complex128)
    ref_adj_c = exact.adjoint_pixels(y_c)  # (C, n_pix) or (n_pix,)
    ref_adj = (maps_t.conj().reshape(COILS, -1)[:, exact.pix].to(torch.complex128) * ref_adj_c).sum(0) \
        if multicoil else ref_adj_c
    err_adj = lambda img: rel(torch.as_tensor(img).reshape(-1)[exact.pix].to(torch.complex128), ref_adj)  # noqa: E731

    ms = timed({
        "of": lambda: ours(x_t), "sf": lambda: theirs(x_np), "kf": lambda: kb(x_t),
        "oa": lambda: ours.adjoint(y_t), "sa": lambda: theirs.H(y_np), "ka": lambda: kb.adjoint(y_t),
        "on": lambda: ours.normal(x_t), "ot": lambda: ours_toep.normal(x_t),
        "sn": lambda: normal_np(x_np), "kn": lambda: kb.normal(x_t),
    }, warmup=warmup, repeats=repeats)
    errs = {
        "of": err_fwd(ours(x_t)), "sf": err_fwd(theirs(x_np)), "kf": err_fwd(kb(x_t)),
        "oa": err_adj(ours.adjoint(y_t)), "sa": err_adj(theirs.H(y_np)), "ka": err_adj(kb.adjoint(y_t)),
    }
    rows = [
        Row(f"{name} [{backend}]", "forward", ms["of"], ms["sf"], errs["of"], errs["sf"]),
        Row(f"{name} [{backend}]", "adjoint", ms["oa"], ms["sa"], errs["oa"], errs["sa"]),
        Row(f"{name} [{backend}]", "normal (direct)", ms["on"], ms["sn"]),
        Row(f"{name} [{backend}]", "normal (Toeplitz)", ms["ot"], ms["sn"]),
        Row(f"{name} [torchkbnufft]", "forward", ms["kf"], ms["sf"], errs["kf"], errs["sf"]),
        Row(f"{name} [torchkbnufft]", "adjoint", ms["ka"], ms["sa"], errs["ka"], errs["sa"]),
        Row(f"{name} [torchkbnufft]", "normal (Toeplitz)", ms["kn"], ms["sn"]),
    ]
    return rows


def previous_pipe_menon(traj: torch.Tensor, im_size: tuple[int, int], iters: int) -> torch.Tensor:
    """The previous ``pipe_menon_dcf``: torchkbnufft's table-based iteration."""
    grid = [2 * n for n in im_size]
    w = tkbn().calc_density_compensation_function(traj, list(im_size), num_iterations=iters,
                                                  grid_size=grid, numpoints=6)
    w = w.reshape(-1).real
    return w * (math.prod(im_size) / w.sum())


def dcf_row(inputs: dict, *, repeats: int) -> Row:
    traj = inputs["traj"]
    ms = timed({"new": lambda: pipe_menon_dcf(traj, (N, N), iters=20),
                "old": lambda: previous_pipe_menon(traj, (N, N), 20)}, warmup=1, repeats=repeats)
    new = pipe_menon_dcf(traj, (N, N), iters=20).double()
    old = previous_pipe_menon(traj, (N, N), 20).double()
    diff = float((new - old).abs().max() / old.abs().max())
    return Row(f"pipe_menon_dcf {SPOKES}x{READOUT}, 20 it", "weights", ms["new"], ms["old"],
               diff, float("nan"), peer="previous")


def run(threads: int, inputs: dict, *, warmup: int, repeats: int) -> list[Row]:
    """All comparisons at one thread count."""
    print(f"\n## {configure(threads)}")
    rows = cartesian_rows(inputs, warmup=warmup, repeats=repeats)
    rows += radial_rows(inputs, multicoil=True, warmup=warmup, repeats=repeats)
    rows += radial_rows(inputs, multicoil=False, warmup=warmup, repeats=repeats)
    rows.append(dcf_row(inputs, repeats=max(3, repeats // 4)))
    return rows


def print_table(threads: int, rows: list[Row]) -> None:
    """Print one table of timings, ratios and errors against the exact NUDFT."""
    print(f"torch threads = {torch.get_num_threads()}")
    head = (f"{'problem':<40} {'op':<18} {'ours ms':>9} {'peer ms':>9} {'peer/ours':>9} "
            f"{'ours err':>9} {'peer err':>9}  peer")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.problem:<40} {r.op:<18} {r.ours_ms:9.2f} {r.peer_ms:9.2f} {r.ratio:9.2f} "
              f"{r.ours_err:9.1e} {r.peer_err:9.1e}  {r.peer}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1",
                        help="comma-separated thread counts, e.g. 1,2 (default 1)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (same code path)")
    args = parser.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",")]
        if any(t < 1 for t in threads):
            raise ValueError
    except ValueError:
        parser.error(f"--threads: expected positive ints separated by commas, got {args.threads!r}")
    warmup, repeats = (1, 5) if args.quick else (2, 15)
    print(f"# convexrecon operator benchmark: {N}x{N}, {COILS} coils, Poisson {ACCEL}x, "
          f"radial {SPOKES} spokes x {READOUT}; median of {repeats} interleaved after {warmup} warm-up")
    print(f"# sigpy {sigpy.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    print("# err: relative error against the exact NUDFT (float64) on "
          f"{N_CHECK} random output entries; dcf row: max |new - previous| / max |previous|")
    inputs = build_inputs()
    results = {}
    for t in threads:
        rows = run(t, inputs, warmup=warmup, repeats=repeats)
        print_table(t, rows)
        results[t] = rows
    print(f"\n# load average at end: {os.getloadavg()[0]:.2f}")
    first = results[threads[0]]

    def ratio(prefix: str, op: str) -> float:
        return next(r.ratio for r in first if r.problem.startswith(prefix)
                    and "torchkbnufft" not in r.problem and r.op == op)

    default_normal = ("normal (Toeplitz)" if NUFFT(inputs["traj"], (N, N)).kernel is not None
                      else "normal (direct)")
    ratios = {
        "sense_normal_vs_sigpy": ratio("cartesian", "normal"),
        "nufft_normal_vs_sigpy": ratio("radial sense", default_normal),
        "nufft_forward_vs_sigpy": ratio("radial sense", "forward"),
        "nufft_adjoint_vs_sigpy": ratio("radial sense", "adjoint"),
        "dcf_vs_previous": ratio("pipe_menon", "weights"),
    }
    assert all(math.isfinite(v) for v in ratios.values())
    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
