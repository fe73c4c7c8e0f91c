"""Benchmark: the convex two-layer CNN programs (gated and ReLU forms) on real MR data.

Task (de-aliasing + denoising): targets ``Y`` are clean real brain patches with a
smooth synthetic phase (real and imaginary channels), inputs ``X`` their zero-filled
reconstructions from 2x random 1-D Cartesian undersampling plus complex noise. The
gate filters are frozen and random; ``beta = BETA_FRAC * beta_max``.

Cases:
* ``gated-16x64`` (target: relative duality gap <= 1e-3 in < 20 s on 2 cores):
  16 images of 64x64, 2 channels + bias, 5x5 kernels, 32 patterns, float32.
* ``gated-32x96`` (target: gap <= 1e-3 in < 2 min): 32 images of 96x96, 7x7, 32.
* ``relu-*``: the cone-constrained ReLU form (per output channel; no target),
  augmented Lagrangian with inner FISTA, on both sizes; reported, not targeted.
* ``--minibatch``: the gated 16x64 case by :class:`~convexrecon.solvers.MiniBatchConv`
  (proximal SVRG over batches of images) against full-batch FISTA: seconds until the
  objective is within ``1e-3`` (relative) of FISTA's at gap ``1e-5``, and the size of
  the largest temporary (the masked convolution of a batch), whose ratio is ``N / B``.

Run: ``.venv/bin/python benchmarks/convex_relu_conv.py [--quick] [--threads N]
[--small] [--no-retain] [--minibatch]`` (``--small``: only the gated 16x64 case; ``--no-retain``:
without :func:`convexrecon.perf.retain_freed_memory`, to see the page-fault cost).
Gated rows report system time and page faults.
``run_conv_cases(quick=...)`` returns a dict with ``conv_seconds``, ``conv_gap``
(the 16x64x64 gated case) and ``rows`` (printable tuples).
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from pathlib import Path

import numpy as np
import torch

from convexrecon.perf import retain_freed_memory
from convexrecon.programs.relu import ConvGatedReLU, ConvTwoLayerReLUCone
from convexrecon.solvers.auglag import ConvReLUAugLag
from convexrecon.solvers.minibatch_conv import MiniBatchConv
from convexrecon.solvers.fista import FISTA

ROOT = Path(__file__).resolve().parents[1]
BETA_FRAC = 0.05
N_PATTERNS = 32


def data_file(name: str) -> Path:
    """The bundled real data file ``problems/data/<name>``."""
    return ROOT / "problems" / "data" / name


def _norm(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) / max(float(np.percentile(img, 99)), 1e-12)


def _sources(extra: bool) -> list[np.ndarray]:
    """Real brain magnitude slices: the T1 coronal slice and the 10 b0 slices; with
    ``extra`` also axial slices of the MNI ICBM152 T1 template."""
    out = [_norm(np.load(data_file("t1_coronal_slice.npy")))]
    b0 = np.load(data_file("b0_10slices.npz"))["volume"][..., 0]
    out += [_norm(b0[:, :, i]) for i in range(b0.shape[2])]
    if extra:
        small = data_file("mni_icbm152_t1_2009a_axial24.npz")
        if small.exists():
            out += [_norm(s) for s in np.load(small)["slices"]]
        else:
            vol = np.load(data_file("mni_icbm152_t1_2009a.npz"))["volume"]
            out += [_norm(vol[:, :, z]) for z in range(40, 140, 4)]
    return out


def _crops(images: list[np.ndarray], size: int) -> list[np.ndarray]:
    crops = []
    for img in images:
        h, w = img.shape
        for i in np.linspace(0, h - size, max(1, (h - size) // (size // 2) + 1)).astype(int):
            for j in np.linspace(0, w - size, max(1, (w - size) // (size // 2) + 1)).astype(int):
                c = img[i:i + size, j:j + size]
                if c.mean() > 0.15:  # skip mostly-background crops
                    crops.append(c)
    return crops


def mr_patches(n: int, size: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` complex ``size x size`` brain patches (real magnitude, smooth phase)."""
    rng = np.random.default_rng(seed)
    crops = _crops(_sources(False), size)
    if len(crops) < n:
        crops = _crops(_sources(True), size)
    if len(crops) < n:
        raise RuntimeError(f"only {len(crops)} usable {size}x{size} crops, asked for {n}")
    idx = rng.permutation(len(crops))[:n]
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    out = []
    for k in idx:
        a, b, c = rng.normal(0, 1.0, 3)
        out.append(crops[k] * np.exp(1j * (a * xx + b * yy + c * xx * yy)))
    return torch.as_tensor(np.stack(out), dtype=torch.complex128)


def dealias_task(n: int, size: int, *, accel: int = 2, noise: float = 0.02,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, Y)`` real ``(n, 2, size, size)``: zero-filled+noisy input, clean target."""
    y = mr_patches(n, size, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    ks = torch.fft.fftn(y, dim=(-2, -1), norm="ortho")
    keep = torch.rand(n, 1, size, generator=g, dtype=torch.float64) < 1.0 / accel
    low = torch.fft.fftfreq(size).abs() < 0.04
    mask = keep | low
    sig = noise * float(y.abs().pow(2).mean().sqrt())
    nz = torch.complex(torch.randn(ks.shape, generator=g, dtype=torch.float64),
                       torch.randn(ks.shape, generator=g, dtype=torch.float64)) * sig / math.sqrt(2)
    x = torch.fft.ifftn((ks + nz) * mask, dim=(-2, -1), norm="ortho")
    scale = float(x.abs().pow(2).mean().sqrt())
    to_ch = lambda z: torch.stack([z.real, z.imag], dim=1) / scale  # noqa: E731
    return to_ch(x), to_ch(y)


def gated_case(n: int, size: int, k: int, *, tol: float = 1e-3, max_iter: int = 2000,
               dtype=torch.float32) -> dict:
    """Build and solve one gated case; returns timings and certificates."""
    X, Y = dealias_task(n, size)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    prog = ConvGatedReLU(X.to(dtype), Y.to(dtype), kernel_size=k, n_patterns=N_PATTERNS,
                         beta=1.0, seed=0)
    prog.set_beta(BETA_FRAC * prog.beta_max())
    t_build = time.perf_counter() - t0
    lip = prog.smooth.lipschitz()
    t_lip = time.perf_counter() - t0 - t_build
    res = FISTA(prog, tol=tol, max_iter=max_iter, check_every=5).run()
    total = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    gap = prog.certificate(res.x)
    r2 = float((prog.predict(res.x) - prog.Y).pow(2).sum() / prog.Y.pow(2).sum())
    zf = float((X - Y).pow(2).sum() / Y.pow(2).sum())
    return dict(case=f"gated-{n}x{size} k{k}", seconds=total, build=t_build, lipschitz_s=t_lip,
                iters=res.state.it, gap=gap, objective=prog.value(res.x), lip=lip,
                rel_err=r2, zf_err=zf, pattern_check=prog.pattern_check(res.x),
                converged=res.converged, x=res.x, prog=prog,
                sys_s=ru.ru_stime - ru0.ru_stime, faults=ru.ru_minflt - ru0.ru_minflt)


def relu_case(n: int, size: int, k: int, *, time_budget: float, inner_iter: int,
              gated_obj: float | None) -> dict:
    """The cone-constrained ReLU form (per output channel), augmented Lagrangian."""
    X, Y = dealias_task(n, size)
    t0 = time.perf_counter()
    prog = ConvTwoLayerReLUCone(X.float(), Y.float(), kernel_size=k, n_patterns=N_PATTERNS,
                                beta=1.0, seed=0)
    prog.set_beta(BETA_FRAC * prog.beta_max())
    solver = ConvReLUAugLag(prog, tol=1e-3, max_outer=60, inner_iter=inner_iter,
                            time_budget=time_budget)
    res = solver.run()
    total = time.perf_counter() - t0
    info = prog.kkt(res.x, multipliers=solver.multipliers(res.state))
    return dict(case=f"relu-{n}x{size} k{k}", seconds=total, iters=f"{res.state.it}x{inner_iter}",
                gap=info.gap, violation=info.violation, objective=info.primal,
                gated_obj=gated_obj)


def minibatch_case(n: int = 16, size: int = 64, k: int = 5, *, batch: int = 4,
                   rel: float = 1e-3, dtype=torch.float64) -> dict:
    """Seconds to reach ``rel`` of the optimum: full-batch FISTA vs MiniBatchConv."""
    X, Y = dealias_task(n, size)
    prog = ConvGatedReLU(X.to(dtype), Y.to(dtype), kernel_size=k, n_patterns=N_PATTERNS,
                         beta=1.0, seed=0)
    prog.set_beta(BETA_FRAC * prog.beta_max())
    prog.smooth.lipschitz()
    ref = FISTA(prog, tol=1e-5, max_iter=5000, check_every=5).run()
    p_star = prog.value(ref.x)

    def seconds_to(run_factory) -> tuple[float, int]:
        t0, hit = time.perf_counter(), None
        state_it = 0

        def cb(st):
            nonlocal hit, state_it
            state_it = st.it
            if hit is None and st.it % every == 0 and prog.value(st.x) <= (1 + rel) * p_star:
                hit = time.perf_counter() - t0
                raise StopIteration
        try:
            run_factory(cb)
        except StopIteration:
            pass
        return (hit if hit is not None else math.inf), state_it

    every = 5
    t_fista, it_f = seconds_to(lambda cb: FISTA(prog, tol=0.0, max_iter=5000,
                                                check_every=0).run(callback=cb))
    every = max(n // batch, 1)
    t_mb, it_mb = seconds_to(lambda cb: MiniBatchConv(prog, batch_size=batch, epochs=200,
                                                      seed=0).run(callback=cb))
    p, co, h = N_PATTERNS, prog.op.c_out, size
    itemsize = torch.finfo(dtype).bits // 8
    return dict(case=f"minibatch-{n}x{size} k{k} B={batch}", fista_s=t_fista, fista_it=it_f,
                mb_s=t_mb, mb_steps=it_mb, full_bytes=n * p * co * h * h * itemsize,
                batch_bytes=batch * p * co * h * h * itemsize)


def run_conv_cases(*, quick: bool) -> dict:
    """Run the cases; ``quick`` skips the large ReLU run and shortens budgets."""
    torch.set_flush_denormal(True)
    rows = []
    small = gated_case(16, 64, 5)
    rows.append(_row(small))
    large = gated_case(32, 96, 7, max_iter=600 if quick else 2000)
    rows.append(_row(large))
    r_small = relu_case(16, 64, 5, time_budget=40 if quick else 90, inner_iter=25,
                        gated_obj=small["objective"])
    rows.append(_relu_row(r_small))
    if not quick:
        r_large = relu_case(32, 96, 7, time_budget=180, inner_iter=15, gated_obj=large["objective"])
        rows.append(_relu_row(r_large))
    return dict(conv_seconds=small["seconds"], conv_gap=small["gap"],
                conv_large_seconds=large["seconds"], conv_large_gap=large["gap"], rows=rows)


def _row(r: dict) -> tuple:
    return (r["case"], f"{r['seconds']:.1f}s", f"it={r['iters']}", f"gap={r['gap']:.2e}",
            f"obj={r['objective']:.4g}", f"relerr={r['rel_err']:.3f} (zf {r['zf_err']:.3f})",
            f"fresh={r['pattern_check']:.2f}", f"lipschitz {r['lipschitz_s']:.1f}s",
            f"system {r['sys_s']:.1f}s, {r['faults'] / 1e6:.2f}M page faults")


def _relu_row(r: dict) -> tuple:
    return (r["case"], f"{r['seconds']:.1f}s", f"outer={r['iters']}", f"gap={r['gap']:.2e}",
            f"obj={r['objective']:.4g}", f"viol={r['violation']:.1e}",
            f"gated obj={r['gated_obj']:.4g}", "per-channel ReLU form")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter run (< 5 min)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-retain", action="store_true",
                    help="leave glibc's malloc as it is (to see the page-fault cost)")
    ap.add_argument("--small", action="store_true", help="only the gated 16x64x64 case")
    ap.add_argument("--minibatch", action="store_true",
                    help="only MiniBatchConv against FISTA on the gated 16x64x64 case")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_retain:
        retain_freed_memory()  # see convexrecon.perf
    if args.minibatch:
        r = minibatch_case()
        print(f"{r['case']}: FISTA {r['fista_s']:.1f}s ({r['fista_it']} it), MiniBatchConv "
              f"{r['mb_s']:.1f}s ({r['mb_steps']} steps) to 1e-3 of the optimum; time ratio "
              f"{r['mb_s'] / r['fista_s']:.2f}; largest temporary {r['full_bytes'] / 2**20:.1f} MiB"
              f" vs {r['batch_bytes'] / 2**20:.1f} MiB (ratio {r['full_bytes'] / r['batch_bytes']:.0f})")
        return
    if args.small:
        torch.set_flush_denormal(True)
        print(" | ".join(_row(gated_case(16, 64, 5))))
        return
    out = run_conv_cases(quick=args.quick)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, beta = {BETA_FRAC} beta_max,"
          f" P = {N_PATTERNS}, float32")
    for row in out["rows"]:
        print(" | ".join(row))
    print(f"conv_seconds={out['conv_seconds']:.2f} conv_gap={out['conv_gap']:.2e}")


if __name__ == "__main__":
    main()
