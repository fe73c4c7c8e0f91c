"""``convexrecon demo``: reconstruct bundled data, write figures, print metrics.

Two named problems (:mod:`convexrecon.problems`):

- ``brain-real-8coil``: real, undersampled 8-coil brain k-space with no reference;
  methods are compared by their data residual and visually;
- ``brain-sim-poisson-4x``: 8-coil k-space simulated from a real brain image, with a
  fully sampled ground truth; PSNR, SSIM and NMSE are reported.

Each is reconstructed by zero filling, CG-SENSE and L1-wavelet (FISTA) through
:mod:`convexrecon.recon`, with the problem's own coil maps and mask.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer
from rich.console import Console

from convexrecon.cli._errors import cli_errors
from convexrecon.cli._options import check_iters, parse_device, parse_lam, set_threads
from convexrecon.cli._progress import SolveProgress, stdout_console
from convexrecon.cli.recon_cmd import Scores, score, scores_table
from convexrecon.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["demo", "DEMO_EPILOG", "DEMO_PROBLEMS", "run_demo"]

DEMO_PROBLEMS = ("brain-real-8coil", "brain-sim-poisson-4x")
QUICK_ITERS = 5

DEMO_EPILOG = "\n\n".join([
    "Writes one PNG per problem into --out-dir (created if missing): the L1-wavelet, "
    "CG-SENSE and zero-filled images and, for the simulated problem, the ground truth and "
    "error maps. Metrics compare magnitudes with the ground truth; 'residual' is the "
    "relative data residual ||A x - y|| / ||y|| on the measured samples.",
    "[bold]Examples[/bold]",
    "  convexrecon demo",
    "  convexrecon demo --out-dir /tmp/demo --iters 200 --threads 1",
])


def _residual(problem: Any, image: torch.Tensor) -> float:
    """``||A x - y|| / ||y||`` with the problem's scaled operator (image at raw scale)."""
    import torch

    with torch.no_grad():
        x = image.to(problem.kspace.dtype) * problem.op_scale
        r = problem.operator(x) - problem.kspace
        return float(torch.linalg.vector_norm(r) / torch.linalg.vector_norm(problem.kspace))


def check_problems(names: list[str]) -> list[str]:
    """Known problem names, each at most once; InputError names the valid ones."""
    from convexrecon import problems

    known = problems.names()
    for name in names:
        if name not in known:
            raise InputError(f"--problem: expected one of {', '.join(known)}, got {name!r}")
    return list(dict.fromkeys(names))


def run_demo(out_dir: Path, *, iters: int, lam: float | str | None, device: "torch.device",
             quiet: bool, console: Console,
             names: tuple[str, ...] | list[str] = DEMO_PROBLEMS) -> list[Path]:
    """Reconstruct the named problems, print the table and write the figures."""
    from convexrecon import problems, viz
    from convexrecon import recon as api

    figures: list[Path] = []
    rows: list[tuple[tuple[str, str], Scores | None]] = []
    extra: dict[str, list[str]] = {"residual": [], "time (s)": []}
    for name in names:
        t0 = time.perf_counter()
        prob = problems.load(name, device=device)
        if prob.ground_truth is not None and prob.ground_truth.ndim != 3:
            raise InputError(f"--problem: expected a 2-D problem, got {name!r} with images "
                             f"{tuple(prob.ground_truth.shape)}")
        if not quiet:
            console.print(f"[bold]{name}[/bold]: {prob.description} "
                          f"(loaded in {time.perf_counter() - t0:.1f} s)")
        ksp, maps = prob.kspace, prob.maps
        mask = prob.traj if prob.traj is not None else prob.mask
        reference = None
        if prob.ground_truth is not None:
            reference = (prob.ground_truth / prob.op_scale).cpu()
        images: dict[str, torch.Tensor] = {}
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        images["zero-filled"] = api.zero_filled(ksp, maps, mask, device=device)
        timings["zero-filled"] = time.perf_counter() - t0

        sense_iters = min(iters, 50)
        t0 = time.perf_counter()
        with SolveProgress(sense_iters, f"{name} sense", enabled=not quiet) as bar:
            images["sense"] = api.sense(ksp, maps, mask, max_iter=sense_iters, device=device,
                                        callback=bar.callback())
        timings["sense"] = time.perf_counter() - t0

        opts: dict[str, Any] = {} if lam is None else {"lam": lam}
        t0 = time.perf_counter()
        with SolveProgress(iters, f"{name} l1-wavelet", enabled=not quiet) as bar:
            images["l1-wavelet"] = api.l1_wavelet(ksp, maps, mask, max_iter=iters, device=device,
                                                  callback=bar.callback(), **opts)
        timings["l1-wavelet"] = time.perf_counter() - t0

        labels: dict[str, str] = {}
        for method in ("l1-wavelet", "sense", "zero-filled"):
            img = images[method].detach().cpu()
            s = score(img, reference) if reference is not None else None
            rows.append(((name, method), s))
            extra["residual"].append(f"{_residual(prob, images[method]):.4f}")
            extra["time (s)"].append(f"{timings[method]:.2f}")
            if s is not None:
                labels[method] = f"PSNR {s.psnr:.2f} dB, SSIM {s.ssim:.3f}"
        path = out_dir / f"{name}.png"
        ordered = {k: images[k].detach().cpu() for k in ("l1-wavelet", "sense", "zero-filled")}
        viz.comparison_figure(path, ordered, reference=reference, scores=labels,
                              title=f"{name} ({iters} iterations)")
        figures.append(path)
    console.print(scores_table(rows, title="demo: reconstructions vs ground truth",
                               labels=("problem", "method"), extra=extra))
    for path in figures:
        console.print(f"wrote {path}")
    return figures


@cli_errors
def demo(
    out_dir: Path = typer.Option(Path("convexrecon-demo"), "--out-dir", "-o",
                                 help="Folder for the figures (created if missing)."),
    iters: int = typer.Option(100, "--iters",
                              help="L1-wavelet iterations (CG-SENSE runs at most 50)."),
    lam: Optional[str] = typer.Option(None, "--lam", show_default="0.01",
                                      help="L1-wavelet weight on the scaled problem, or 'auto'."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", show_default="torch default",
                                          help="CPU threads for torch and BLAS."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    names: Optional[List[str]] = typer.Option(None, "--problem", "-p", show_default=", ".join(DEMO_PROBLEMS),
                                              help="A named 2-D problem to run instead (repeatable); "
                                                   "see 'convexrecon problems'."),
    quick: bool = typer.Option(False, "--quick", hidden=True,
                               help=f"Smoke test: {QUICK_ITERS} iterations."),
) -> None:
    """Reconstruct the bundled real brain k-space and a simulated problem.

    Runs with no arguments: reconstructs 'brain-real-8coil' (real data, no
    reference) and 'brain-sim-poisson-4x' (simulated from a real brain image, with
    ground truth) by L1-wavelet, CG-SENSE and zero filling, writes figures and
    prints the metrics.
    """
    set_threads(threads)
    dev = parse_device(device)
    check_iters(iters)
    lam_value = parse_lam(lam)
    chosen = check_problems(list(names)) if names else list(DEMO_PROBLEMS)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out-dir: expected a folder, got the file {str(out_dir)!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if quick:
        iters = min(iters, QUICK_ITERS)
    run_demo(out_dir, iters=iters, lam=lam_value, device=dev, quiet=quiet, console=stdout_console(),
             names=chosen)
