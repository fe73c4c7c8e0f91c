"""Classical solvers against sigpy and BART: time, quality and our objective.

Problems (all from :mod:`convexrecon.problems`, scaled as DESIGN.md says):

* ``brain-sim-poisson-4x``: 256 x 256, 8 birdcage coils, Poisson-disc 4x, k-space
  simulated from a real brain image (MNI ICBM152 T1, axial) with noise; the fully
  sampled ground truth is **the reference for every method** (magnitude, whole
  256 x 256 field of view, data range = its maximum);
* ``radial-golden``: 128 x 128, 8 coils, 64 golden-angle spokes, for the NUFFT.

Every method gets the *same* scaled data ``y`` and the same maps (``maps / op_scale``,
so ``A = Sense(maps_s, mask)`` has ``lambda_max(A.N) = 1``); BART gets ``-w 1`` so
it does not rescale the data again. A weight ``lam`` therefore means the same for
all, but the problems still differ: sigpy's ``db4`` wavelet zero-pads (not
orthogonal); BART uses its ``dau2`` wavelet with random cycle spinning.

Measured, per method:

1. a log-spaced lambda sweep (100 iterations each); PSNR / SSIM of the magnitude
   against the reference at each method's best lambda (by PSNR);
2. wall time of 100 iterations at that lambda (median of repeats, after a warm-up):
   ours is ``FISTA(L1WaveletProgram, check_every=0)`` with the step fixed by the
   scaled operator (no power method), sigpy is ``L1WaveletRecon(..., alpha=1/1.01)``
   (construction + run, no power method); BART's time is reported as the
   subprocess total (write inputs, ``bart pics``, read output), the ``bart pics``
   subprocess alone, BART's own ``Total Time`` (``-d 4``: from ``main`` to exit,
   without process start-up), and the start-up estimate (``bart version``);
3. *our* objective ``1/2 ||A x - y||^2 + lam* ||W x||_1`` (orthogonal db4, lam* =
   our best lambda) on every method's output at lam*, against ``F*`` from a long
   FISTA run.

CG-SENSE: ours ``CG`` on ``TikhonovProgram`` vs ``sigpy.mri.app.SenseRecon``, same
``mu`` and iterations (tol 0). Radial: ours ``FISTA`` on ``NonCartesianSense``
(Toeplitz normal) vs sigpy's ``L1WaveletRecon`` with ``coord``.

The L1 loop's floor is the unavoidable work of one iteration, one ``A.N`` and one
wavelet pair (``W.forward`` then ``W.adjoint``) through the public operators, timed
``ITERS`` times in the same interleaved rounds as ours and sigpy's. ``l1_vs_floor``
is the median over the rounds of (loop time / floor time) of that round, and
``l1_vs_sigpy`` likewise (sigpy / ours): per-round ratios are robust to the load of
a shared machine, which moves both alike. The last line printed is::

    RESULT l1_vs_sigpy=<ratio> l1_vs_floor=<ratio> l1_vs_sigpy_at_psnr=<ratio> l1_vs_bart=<ratio or nan> psnr_minus_sigpy_db=<float> cg_vs_sigpy=<ratio>

Ratios are peer time / our time for 100 iterations (``l1_vs_floor``: ours / floor);
``l1_vs_bart`` uses BART's own ``Total Time``. ``l1_vs_sigpy`` compares the same
100 iterations of the fixed db4 problem (the per-iteration speed);
``l1_vs_sigpy_at_psnr`` is sigpy's 100 iterations against the iterations that
``recon.l1_wavelet``'s default (db2 with cycle spinning, at our best lambda) needs to
reach sigpy's best-lambda PSNR, timed in the same rounds. Targets:
``l1_vs_floor <= 1.2`` and ``>= 2.5x`` sigpy's speed at equal PSNR. The process keeps freed memory
(:func:`convexrecon.perf.retain_freed_memory`, as the CLI does). Usage::

    .venv/bin/python benchmarks/classical.py [--quick] [--threads 1] [--no-bart]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=DeprecationWarning)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import configure, fmt_time, interleaved, measure, table, time_subprocess  # noqa: E402

from convexrecon import problems  # noqa: E402
from convexrecon.io import read_cfl, write_cfl  # noqa: E402
from convexrecon.metrics import psnr, ssim  # noqa: E402
from convexrecon.operators.sense import Sense  # noqa: E402
from convexrecon.operators.wavelet import Wavelet  # noqa: E402
from convexrecon.programs.l1 import L1WaveletProgram, TikhonovProgram  # noqa: E402
from convexrecon.recon import l1_wavelet as recon_l1_wavelet  # noqa: E402
from convexrecon.recon import wavelet_levels  # noqa: E402
from convexrecon.sampling import radians_to_grid  # noqa: E402
from convexrecon.solvers.cg import CG  # noqa: E402
from convexrecon.solvers.fista import FISTA  # noqa: E402

ITERS = 100
LIPSCHITZ = 1.01  # the scaled operator's lambda_max is 1 (power method from below)
MU = 0.01
CG_ITERS = 30


@dataclass
class Config:
    """Sizes of the run: the lambda grid, the repeats and the reference run length."""

    lams: tuple[float, ...]
    repeats: int
    bart_repeats: int
    fstar_iters: int
    radial_lams: tuple[float, ...]

    @classmethod
    def make(cls, quick: bool) -> "Config":
        if quick:
            grid = tuple(float(v) for v in np.logspace(-3, -1.5, 4))
            return cls(grid, repeats=3, bart_repeats=2, fstar_iters=300, radial_lams=grid[1:3])
        grid = tuple(float(v) for v in np.logspace(-4, -1, 7))
        return cls(grid, repeats=5, bart_repeats=3, fstar_iters=1000, radial_lams=grid[2:6])


@dataclass
class Run:
    """One method on one problem: images per lambda, the best lambda, timings."""

    name: str
    images: dict[float, torch.Tensor] = field(default_factory=dict)
    quality: dict[float, tuple[float, float]] = field(default_factory=dict)
    best: float = float("nan")
    time: float = float("nan")
    note: str = ""

    def score(self, lam: float, x: torch.Tensor, ref: torch.Tensor) -> None:
        self.images[lam] = x
        self.quality[lam] = (psnr(x, ref), ssim(x, ref))

    def pick(self) -> None:
        self.best = max(self.quality, key=lambda k: self.quality[k][0])


# -- the three L1-wavelet implementations ---------------------------------------------
def ours_l1(op, y, lam: float, levels: int, iters: int = ITERS, *, wavelet: str = "db4",
            cycle_spin: int | None = None, callback=None) -> torch.Tensor:
    W = Wavelet(op.ishape, wavelet=wavelet, levels=levels, dtype=op.dtype)
    prog = L1WaveletProgram(op, y, lam, W, lipschitz=LIPSCHITZ)
    return FISTA(prog, max_iter=iters, check_every=0, cycle_spin=cycle_spin).run(
        callback=callback).x


def iterations_to(op, y, lam: float, ref: torch.Tensor, target: float) -> tuple[int | None, float]:
    """The first iteration at which the default reconstruction (db2, cycle spinning)
    reaches ``target`` dB, and its PSNR after ``ITERS`` (PSNR is computed outside the
    timed runs)."""
    levels = wavelet_levels(tuple(op.ishape), "db2")
    seen: list[float] = []
    ours_l1(op, y, lam, levels, wavelet="db2", cycle_spin=0,
            callback=lambda s: seen.append(psnr(s.x, ref)))
    first = next((i + 1 for i, v in enumerate(seen) if v >= target), None)
    return first, seen[-1]


def floor_l1(op, W, x: torch.Tensor, iters: int = ITERS) -> torch.Tensor:
    """The loop's unavoidable work: ``iters`` times one ``A.N`` and one wavelet pair."""
    for _ in range(iters):
        op.normal(x)
        W.adjoint(W.forward(x))
    return x


def round_ratios(a, b) -> float:
    """Median over interleaved rounds of ``a_i / b_i`` (two :class:`Timing`)."""
    return float(np.median(np.asarray(a.times) / np.asarray(b.times)))


def sigpy_l1(y: np.ndarray, mps: np.ndarray, lam: float, *, weights=None, coord=None) -> torch.Tensor:
    from sigpy.mri.app import L1WaveletRecon

    app = L1WaveletRecon(y, mps, lam, weights=weights, coord=coord, wave_name="db4",
                         max_iter=ITERS, alpha=1.0 / LIPSCHITZ, show_pbar=False)
    return torch.from_numpy(np.asarray(app.run()))


class Bart:
    """``bart pics -l1`` on cfl files in a temporary folder."""

    def __init__(self, y: torch.Tensor, maps: torch.Tensor, threads: int) -> None:
        self.exe = shutil.which("bart")
        self.dir = Path(tempfile.mkdtemp(prefix="convexrecon-bart-"))
        self.y, self.maps = y, maps
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.write_inputs()

    def write_inputs(self) -> None:
        to_bart = lambda t: t.permute(1, 2, 0)[:, :, None, :]  # (C, H, W) -> (X, Y, Z, C)
        write_cfl(self.dir / "k", to_bart(self.y))
        write_cfl(self.dir / "s", to_bart(self.maps))

    def cmd(self, lam: float) -> list[str]:
        return [self.exe, "pics", "-l1", "-r", f"{lam:g}", "-i", str(ITERS), "-w", "1", "-d", "4",
                str(self.dir / "k"), str(self.dir / "s"), str(self.dir / "x")]

    def read(self) -> torch.Tensor:
        return read_cfl(self.dir / "x").reshape(self.y.shape[-2:])

    def run(self, lam: float) -> tuple[torch.Tensor, float]:
        proc = time_subprocess(self.cmd(lam), repeats=1, env=self.env).value
        return self.read(), self.internal(proc)

    @staticmethod
    def internal(proc) -> float:
        m = re.search(r"Total Time:\s*([0-9.eE+-]+)", proc.stdout + proc.stderr)
        return float(m.group(1)) if m else float("nan")

    def startup(self, repeats: int) -> float:
        return time_subprocess([self.exe, "version"], repeats=max(3, repeats), env=self.env).median

    def total(self, lam: float) -> tuple[float, float]:
        """Wall time of write inputs + ``bart pics`` + read output, and BART's own time."""
        t0 = time.perf_counter()
        self.write_inputs()
        proc = time_subprocess(self.cmd(lam), repeats=1, env=self.env).value
        self.read()
        return time.perf_counter() - t0, self.internal(proc)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# -- benchmarks ------------------------------------------------------------------------
def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


def l1_cartesian(cfg: Config, threads: int, use_bart: bool) -> dict[str, Any]:
    p = problems.load("brain-sim-poisson-4x")
    y, maps_s, mask = p.kspace[0], p.maps / p.op_scale, p.mask[0]
    ref = p.ground_truth[0]
    op = Sense(maps_s, mask, dtype=y.dtype)
    levels = wavelet_levels(tuple(op.ishape), "db4")
    print(f"\n[L1-wavelet, Cartesian] {p.name}: k-space {tuple(y.shape)}, {ITERS} iterations, "
          f"wavelet db4 x {levels} levels; reference: {p.reference}")
    runs = {k: Run(k) for k in ("convexrecon", "sigpy", "bart")}
    bart = Bart(y, maps_s, threads) if use_bart and shutil.which("bart") else None
    yn, mn, wn = _np(y), _np(maps_s), _np(mask).astype(np.float32)
    for lam in cfg.lams:
        runs["convexrecon"].score(lam, ours_l1(op, y, lam, levels)[...], ref)
        runs["sigpy"].score(lam, sigpy_l1(yn, mn, lam, weights=wn), ref)
        if bart is not None:
            runs["bart"].score(lam, bart.run(lam)[0], ref)
    for r in runs.values():
        if r.quality:
            r.pick()

    ours, sp = runs["convexrecon"], runs["sigpy"]
    W_floor = Wavelet(op.ishape, wavelet="db4", levels=levels, dtype=op.dtype)
    x_floor = op.adjoint(y)
    # equal PSNR: how many iterations the default (db2, cycle spinning) needs to reach
    # sigpy's best-lambda PSNR; those iterations are timed in the same rounds
    sp_psnr = sp.quality[sp.best][0]
    k_match, spin_final = iterations_to(op, y, ours.best, ref, sp_psnr)
    k_timed = k_match or ITERS
    levels2 = wavelet_levels(tuple(op.ishape), "db2")
    times = interleaved({"ours": lambda: ours_l1(op, y, ours.best, levels),
                         "floor": lambda: floor_l1(op, W_floor, x_floor),
                         "sigpy": lambda: sigpy_l1(yn, mn, sp.best, weights=wn),
                         "spin": lambda: ours_l1(op, y, ours.best, levels2, k_timed,
                                                 wavelet="db2", cycle_spin=0)},
                        repeats=cfg.repeats, warmup=1)
    at_psnr = round_ratios(times["sigpy"], times["spin"]) if k_match else float("nan")
    print(f"equal PSNR: the default (db2 + cycle spinning, lam {ours.best:.2e}) reaches sigpy's "
          f"{sp_psnr:.2f} dB after {k_match} iterations ({spin_final:.2f} dB after {ITERS}); "
          f"sigpy's {ITERS} iterations / our {k_timed}: {at_psnr:.2f}x (per-round median)")
    for r, key in ((ours, "ours"), (sp, "sigpy")):
        r.time = times[key].median
        r.note = f"{fmt_time(r.time / ITERS)}/it, spread {times[key].spread:.0%}"
    vs_floor = round_ratios(times["ours"], times["floor"])
    vs_sigpy = round_ratios(times["sigpy"], times["ours"])
    print(f"floor (one A.N + one wavelet pair) {fmt_time(times['floor'].median / ITERS)}/it, "
          f"ours {fmt_time(times['ours'].median / ITERS)}/it, sigpy "
          f"{fmt_time(times['sigpy'].median / ITERS)}/it; per-round medians: ours/floor "
          f"{vs_floor:.2f}, sigpy/ours {vs_sigpy:.2f} ({cfg.repeats} rounds)")
    e2e = measure(lambda: recon_l1_wavelet(p.kspace, maps_s, p.mask, lam=ours.best, max_iter=ITERS),
                  repeats=max(1, cfg.repeats - 2), warmup=0)
    bart_rows: list[list[str]] = []
    if bart is not None:
        b = runs["bart"]
        internal = [bart.run(b.best)[1] for _ in range(cfg.bart_repeats)]
        totals = [bart.total(b.best)[0] for _ in range(cfg.bart_repeats)]
        pics = time_subprocess(bart.cmd(b.best), repeats=cfg.bart_repeats, env=bart.env).median
        start = bart.startup(cfg.bart_repeats)
        b.time = float(np.median(internal))
        b.note = "BART Total Time (-d 4)"
        bart_rows = [["write cfl + bart pics + read", fmt_time(float(np.median(totals)))],
                     ["bart pics subprocess", fmt_time(pics)],
                     ["BART's own Total Time (-d 4)", fmt_time(b.time)],
                     ["start-up estimate (bart version)", fmt_time(start)],
                     ["pics subprocess - start-up", fmt_time(pics - start)]]
        bart.close()

    # our objective at our best lambda, on every method's output at that lambda
    lam_star = ours.best
    W = Wavelet(op.ishape, wavelet="db4", levels=levels, dtype=op.dtype)
    prog = L1WaveletProgram(op, y, lam_star, W, lipschitz=LIPSCHITZ)
    f_star = prog.value(ours_l1(op, y, lam_star, levels, iters=cfg.fstar_iters))
    rows = []
    for r in runs.values():
        if not r.quality:
            rows.append([r.name, "-", "-", "-", "not run (bart not on PATH or --no-bart)", "-", "-"])
            continue
        q = r.quality[r.best]
        x = r.images.get(lam_star)
        f = prog.value(x.to(y.dtype)) if x is not None else float("nan")
        rows.append([r.name, f"{r.best:.2e}", f"{q[0]:.2f}", f"{q[1]:.4f}",
                     f"{fmt_time(r.time)} ({r.note})", f"{f:.6g}", f"{(f - f_star) / abs(f_star):.2e}"])
    print(table(["method", "best lam", "PSNR dB", "SSIM", "time, 100 it", "F_ours(lam*)", "(F-F*)/F*"],
                rows, title=f"best lambda by PSNR; F* = {f_star:.6g} ({cfg.fstar_iters} FISTA "
                            f"iterations), lam* = {lam_star:.2e}"))
    sweep = [[f"{lam:.2e}"] + [f"{runs[k].quality[lam][0]:.2f}" if lam in runs[k].quality else "-"
                                for k in runs] for lam in cfg.lams]
    print(table(["lam", *[f"PSNR {k}" for k in runs]], sweep, title="lambda sweep (PSNR dB)"))
    print(f"convexrecon end to end (recon.l1_wavelet: parse, power method, scaling, {ITERS} "
          f"iterations): {e2e}")
    if bart_rows:
        print(table(["BART at its best lambda", "median"], bart_rows))
    return {"ours": ours, "sigpy": sp, "bart": runs["bart"] if bart is not None else None,
            "vs_floor": vs_floor, "vs_sigpy": vs_sigpy, "at_psnr": at_psnr}


def cg_sense(cfg: Config) -> dict[str, Any]:
    from sigpy.mri.app import SenseRecon

    p = problems.load("brain-sim-poisson-4x")
    y, maps_s, mask, ref = p.kspace[0], p.maps / p.op_scale, p.mask[0], p.ground_truth[0]
    op = Sense(maps_s, mask, dtype=y.dtype)
    prog = TikhonovProgram(op, y, mu=MU, lipschitz=LIPSCHITZ)
    yn, mn, wn = _np(y), _np(maps_s), _np(mask).astype(np.float32)

    def ours() -> torch.Tensor:
        return CG.from_program(TikhonovProgram(op, y, mu=MU, lipschitz=LIPSCHITZ), max_iter=CG_ITERS,
                               tol=0.0, check_every=0).run().x

    def theirs() -> torch.Tensor:
        app = SenseRecon(yn, mn, lamda=MU, weights=wn, max_iter=CG_ITERS, tol=0, show_pbar=False)
        return torch.from_numpy(np.asarray(app.run()))

    times = interleaved({"ours": ours, "sigpy": theirs}, repeats=cfg.repeats, warmup=1)
    t_o, t_s = times["ours"], times["sigpy"]
    rows = []
    for name, t in (("convexrecon", t_o), ("sigpy", t_s)):
        x = t.value.to(y.dtype)
        rows.append([name, f"{psnr(x, ref):.2f}", f"{ssim(x, ref):.4f}", str(t),
                     fmt_time(t.median / CG_ITERS), f"{prog.value(x):.6g}"])
    print(f"\n[CG-SENSE] {p.name}: mu = {MU}, {CG_ITERS} iterations, tol 0")
    print(table(["method", "PSNR dB", "SSIM", "time", "per it", "F_ours"], rows))
    return {"ours": t_o.median, "sigpy": t_s.median}


def radial_l1(cfg: Config) -> dict[str, Any]:
    p = problems.load("radial-golden")
    y, maps_s, ref = p.kspace[0], p.maps / p.op_scale, p.ground_truth[0]
    im = tuple(int(s) for s in maps_s.shape[-2:])
    op = p.operator
    levels = wavelet_levels(im, "db4")
    coord = _np(radians_to_grid(p.traj, im, layout="sigpy")).astype(np.float32)
    yn, mn = _np(y), _np(maps_s)
    # the two encoders must agree for the comparison to mean anything
    import sigpy.mri

    x0 = torch.randn(im, dtype=y.dtype, generator=torch.Generator().manual_seed(0))
    ours_y = op(x0[None])[0]
    their_y = torch.from_numpy(np.asarray(sigpy.mri.linop.Sense(mn, coord=coord)(_np(x0))))
    agree = float(torch.linalg.vector_norm(ours_y - their_y) / torch.linalg.vector_norm(ours_y))
    runs = {k: Run(k) for k in ("convexrecon", "sigpy")}
    for lam in cfg.radial_lams:
        runs["convexrecon"].score(lam, ours_l1(op, p.kspace, lam, levels)[0], ref)
        runs["sigpy"].score(lam, sigpy_l1(yn, mn, lam, coord=coord), ref)
    for r in runs.values():
        r.pick()
    times = interleaved({"ours": lambda: ours_l1(op, p.kspace, runs["convexrecon"].best, levels),
                         "sigpy": lambda: sigpy_l1(yn, mn, runs["sigpy"].best, coord=coord)},
                        repeats=cfg.repeats, warmup=1)
    t_o, t_s = times["ours"], times["sigpy"]
    rows = []
    for r, t in ((runs["convexrecon"], t_o), (runs["sigpy"], t_s)):
        q = r.quality[r.best]
        rows.append([r.name, f"{r.best:.2e}", f"{q[0]:.2f}", f"{q[1]:.4f}", str(t)])
    print(f"\n[L1-wavelet, radial NUFFT] {p.name}: k-space {tuple(y.shape)}, image {im}, {ITERS} "
          f"iterations; relative difference of the two encoders on a random image: {agree:.2e}")
    print(table(["method", "best lam", "PSNR dB", "SSIM", "time, 100 it"], rows))
    return {"ours": t_o.median, "sigpy": t_s.median}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer lambdas and repeats (< 5 min)")
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS/OpenMP threads (default 1)")
    ap.add_argument("--no-bart", action="store_true", help="skip BART even when it is on PATH")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    setup = configure(args.threads)
    from convexrecon.perf import retain_freed_memory

    retain_freed_memory()
    cfg = Config.make(args.quick)
    print(f"benchmarks/classical.py {' '.join(argv if argv is not None else sys.argv[1:])}".strip())
    print(f"set-up: {setup}; bart: {shutil.which('bart') or 'not found'}; lambdas {len(cfg.lams)}, "
          f"repeats {cfg.repeats}")
    l1 = l1_cartesian(cfg, args.threads, not args.no_bart)
    cg = cg_sense(cfg)
    rad = radial_l1(cfg)
    ours, sp, bart = l1["ours"], l1["sigpy"], l1["bart"]
    l1_vs_sigpy = l1["vs_sigpy"]
    l1_vs_bart = bart.time / ours.time if bart is not None and bart.quality else float("nan")
    dpsnr = ours.quality[ours.best][0] - sp.quality[sp.best][0]
    cg_vs_sigpy = cg["sigpy"] / cg["ours"]
    print(f"\nradial L1-wavelet: sigpy / ours = {rad['sigpy'] / rad['ours']:.2f}x; "
          f"targets: l1_vs_floor <= 1.2, l1_vs_sigpy >= 2.5, psnr_minus_sigpy_db >= 0; "
          f"total benchmark time {time.perf_counter() - t0:.0f} s")
    print(f"RESULT l1_vs_sigpy={l1_vs_sigpy:.2f} l1_vs_floor={l1['vs_floor']:.2f} "
          f"l1_vs_sigpy_at_psnr={l1['at_psnr']:.2f} "
          f"l1_vs_bart={l1_vs_bart:.2f} "
          f"psnr_minus_sigpy_db={dpsnr:.2f} cg_vs_sigpy={cg_vs_sigpy:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
