"""``convexrecon train-deq`` and ``convexrecon train-unrolled``: train a DEQ or a
MoDL-K reconstructor on simulated slices of the bundled MNI volume.

A thin shell over :mod:`convexrecon.data`, :mod:`convexrecon.implicit` and
:func:`convexrecon.training.fit`: checkpoints (with the DEQ's warm-start fixed
points), ``metrics.json``, resume and TensorBoard all come from ``fit``. The
checkpoint rebuilds with :func:`convexrecon.training.load_model`, so
``convexrecon recon --method learned --model OUT/checkpoint.pt`` can apply it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from convexrecon.cli._errors import cli_errors
from convexrecon.cli._options import parse_device, set_threads
from convexrecon.errors import InputError

__all__ = ["train_deq", "train_unrolled", "TRAIN_DEQ_EPILOG", "TRAIN_UNROLLED_EPILOG"]

SOLVER_NAMES = ("anderson", "broyden", "picard")
DENOISER_NAMES = ("cnn", "unet")
DC_NAMES = ("prox-grad", "cg")
UNROLLED_NAMES = ("modl",)

_COMMON = ("Data: --problem names a simulation of convexrecon.data (coils, sampling, noise), "
           "on the MNI train/val slabs; --mask overrides its sampling (poisson, random_1d, "
           "equispaced, every_nth, golden, equiangular); --size sets the image side; --limit "
           "caps the number of training slices. Outputs go to --out: checkpoint.pt (atomic), "
           "metrics.json and loss.png. --resume continues a run from its checkpoint.")

TRAIN_DEQ_EPILOG = "\n\n".join([
    "[bold]The map[/bold]",
    "prox-grad: f(z) = R(z - eta A^H(Az - y)); cg: f(z) = (A^H A + mu I)^-1 (A^H y + mu R(z)).",
    "SHINE needs --solver broyden. shine-opa adds outer-problem-aware Broyden updates along "
    "the training loss's gradient (one more map evaluation and VJP per forward iteration, "
    "--opa-every sets how often) so that SHINE's direction is closer to IFT's. A batch whose fixed point diverged takes no optimiser step; "
    "--max-diverged such batches in a row stop training. Warm start (--warm-start) reuses "
    "each training slice's last fixed point (saved in the checkpoint) and turns the random "
    "flips and crops off (masks and noise stay fresh every epoch); it does not exist at "
    "inference. --skip < 1 makes the fresh denoiser R(x) = skip x + N(x) a contraction: with "
    "skip 1 a fresh map has rho ~ 0.98, where the backward solves are slow and SHINE falls "
    "back to JFB.",
    _COMMON,
    "[bold]Examples[/bold]",
    "  convexrecon train-deq --problem tiny-cartesian --epochs 2 --out runs/deq",
    "  convexrecon train-deq --solver broyden --backward shine --warm-start --out runs/shine",
])

TRAIN_UNROLLED_EPILOG = "\n\n".join([
    "MoDL-K: K shared-weight iterations of the denoiser and CG data consistency.",
    _COMMON,
    "[bold]Examples[/bold]",
    "  convexrecon train-unrolled --model modl --iterations 5 --out runs/modl5",
])


def _choice(value: str, choices: tuple[str, ...], option: str) -> str:
    text = (value or "").strip().lower().replace("_", "-")
    if option in ("--mask",):
        text = text.replace("-", "_")
    if text not in choices:
        raise InputError(f"{option}: expected one of {', '.join(choices)}, got {value!r}")
    return text


def _positive(value: float | int, option: str, *, integer: bool = False, zero: bool = False) -> Any:
    ok = value >= 0 if zero else value > 0
    if not ok or value != value:
        raise InputError(f"{option}: expected {'an integer' if integer else 'a number'} "
                         f"{'>=' if zero else '>'} 0, got {value}")
    return value


def _datasets(problem: str, mask: Optional[str], size: int, limit: Optional[int],
              val_limit: int, seed: int, augment: bool):
    from torch.utils.data import Subset

    from convexrecon.data import CARTESIAN_KINDS, PROBLEM_SPECS, RADIAL_KINDS, MaskSpec, SliceDataset

    if problem not in PROBLEM_SPECS:
        raise InputError(f"--problem: expected one of {', '.join(PROBLEM_SPECS)}, got {problem!r}")
    coils, spec, _ = PROBLEM_SPECS[problem]
    if mask is not None:
        kind = _choice(mask, tuple(CARTESIAN_KINDS) + tuple(RADIAL_KINDS), "--mask")
        spec = MaskSpec(kind) if kind in CARTESIAN_KINDS else MaskSpec(kind)
    from convexrecon.problems.instances import NOISE_REL

    train = SliceDataset(split="train", size=size, coils=coils, mask=spec, noise_rel=NOISE_REL,
                         seed=seed, augment=augment)
    val = SliceDataset(split="val", size=size, coils=coils, mask=spec, noise_rel=NOISE_REL, seed=seed + 1)
    if limit is not None:
        train = Subset(train, list(range(min(limit, len(train)))))
        train.set_epoch = train.dataset.set_epoch  # type: ignore[attr-defined]
    val = Subset(val, list(range(min(val_limit, len(val)))))
    return train, val


def _loss_figure(history: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from convexrecon.viz import save_figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    steps = [v if v is not None else float("nan") for v in history.step_loss]
    ax.plot(range(1, len(steps) + 1), steps, lw=1, label="train loss (step)")
    val = [e.get("val_loss") for e in history.epochs]
    if any(v is not None for v in val):
        ends = [e["step"] for e in history.epochs]
        ax.plot(ends, [v if v is not None else float("nan") for v in val], "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("NMSE")
    ax.set_yscale("log")
    ax.legend()
    save_figure(fig, path)


def _outer_aware(loss_fn):
    """``loss_fn`` with the outer gradient of the training loss given to a ``shine-opa``
    DEQ during its forward solve (the squared error's gradient: the per-sample NMSE
    normalisation only scales each sample's direction)."""
    from convexrecon.implicit import DEQ, outer_grad_from_loss
    from convexrecon.training.distributed import unwrap

    def wrapped(model, batch):
        inner = unwrap(model)
        if not (isinstance(inner, DEQ) and inner.backward == "shine-opa") or batch.target is None:
            return loss_fn(model, batch)
        target = batch.target
        grad = outer_grad_from_loss(lambda x: 0.5 * (x - target.to(x.dtype)).abs().pow(2).sum())
        with inner.outer_problem(grad):
            loss, extras = loss_fn(model, batch)
        extras["opa_vjps"] = float(inner.last_info.opa_vjps)
        return loss, extras

    return wrapped


def _run(model_spec: dict, *, problem: str, mask: Optional[str], size: int, limit: Optional[int],
         val_limit: int, epochs: int, batch_size: int, lr: float, device: str, seed: int,
         out: Path, resume: bool, tensorboard: bool, threads: Optional[int], quiet: bool,
         warm_start: bool = False, max_diverged: int = 5) -> None:
    set_threads(threads)
    _positive(epochs, "--epochs", integer=True)
    _positive(batch_size, "--batch-size", integer=True)
    _positive(size, "--size", integer=True)
    _positive(lr, "--lr")
    _positive(val_limit, "--val-limit", integer=True)
    if limit is not None:
        _positive(limit, "--limit", integer=True)
    _positive(max_diverged, "--max-diverged", integer=True)
    _positive(seed, "--seed", integer=True, zero=True)
    dev = parse_device(device)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: expected a folder, got the file {str(out)!r}")
    if (out / "checkpoint.pt").exists() and not resume:
        raise InputError(f"--out: {str(out)!r} holds a checkpoint; pass --resume to continue it "
                         "or choose another folder")

    import torch

    from convexrecon.data import collate
    from convexrecon.implicit.training import DEQHooks, recon_loss_fn, recon_val_fn
    from convexrecon.implicit.warmstart import WarmStartCache
    from convexrecon.training import build_model, fit, seed_everything

    # a flipped or cropped slice would make its cached fixed point stale: warm starts
    # train without flips and crops (masks and noise are still fresh every epoch)
    train, val = _datasets(problem, mask, size, limit, val_limit, seed, augment=not warm_start)
    seed_everything(seed)
    model = build_model(model_spec)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    warm = WarmStartCache() if warm_start else None
    hooks = DEQHooks(model, warm=warm, max_diverged=max_diverged)
    history = fit(model, loss_fn=_outer_aware(recon_loss_fn(warm=warm)), dataset=train, val_dataset=val,
                  val_fn=recon_val_fn, optimizer=optimizer, epochs=epochs, out_dir=out,
                  batch_size=batch_size, collate_fn=collate, seed=seed, device=dev, resume=resume,
                  hooks=hooks, tensorboard=tensorboard, progress=not quiet)
    _loss_figure(history, out / "loss.png")
    last = history.epochs[-1] if history.epochs else {}
    parts = [f"epochs={len(history.epochs)}"]
    for key in ("train_loss", "val_loss", "val_psnr", "train_fwd_iters", "train_fwd_residual", "skipped"):
        if last.get(key) is not None:
            parts.append(f"{key}={last[key]:.4g}")
    typer.echo(" ".join(parts) + f" out={out}")


_OPT = dict(
    problem=typer.Option("brain-sim-poisson-4x", "--problem", "--data",
                         help="Simulation of convexrecon.data (PROBLEM_SPECS)."),
    mask=typer.Option(None, "--mask", show_default="the problem's",
                      help="Override the sampling: poisson, random_1d, equispaced, every_nth, golden, equiangular."),
    size=typer.Option(64, "--size", help="Image side."),
    limit=typer.Option(None, "--limit", show_default="every training slice", help="Training slices used."),
    val_limit=typer.Option(8, "--val-limit", help="Validation slices used."),
    denoiser=typer.Option("cnn", "--denoiser", help="cnn (residual CNN) or unet (small U-Net)."),
    features=typer.Option(32, "--features", help="Denoiser channels."),
    depth=typer.Option(5, "--depth", help="Residual CNN convolutions (unet: ignored)."),
    skip=typer.Option(1.0, "--skip", help="Identity weight of the residual denoiser, R(x) = skip x + N(x)."),
    epochs=typer.Option(10, "--epochs"),
    batch_size=typer.Option(4, "--batch-size"),
    lr=typer.Option(1e-3, "--lr", help="Adam learning rate."),
    device=typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    seed=typer.Option(0, "--seed"),
    out=typer.Option(..., "--out", "-o", help="Output folder (checkpoint.pt, metrics.json, loss.png)."),
    resume=typer.Option(False, "--resume", help="Continue from --out/checkpoint.pt."),
    tensorboard=typer.Option(False, "--tensorboard", help="Write TensorBoard event files."),
    threads=typer.Option(None, "--threads", show_default="torch default", help="CPU threads."),
    quiet=typer.Option(False, "--quiet", "-q", help="No progress bars."),
)


def _denoiser_options(denoiser: str, features: int, depth: int, skip: float) -> dict:
    name = _choice(denoiser, DENOISER_NAMES, "--denoiser")
    _positive(features, "--features", integer=True)
    _positive(skip, "--skip", zero=True)
    if name == "cnn":
        if depth < 2:
            raise InputError(f"--depth: expected an integer >= 2, got {depth}")
        return {"denoiser": name, "denoiser_options": {"features": features, "depth": depth, "skip": skip}}
    return {"denoiser": name, "denoiser_options": {"features": features, "skip": skip}}


@cli_errors
def train_deq(
    problem: str = _OPT["problem"], mask: Optional[str] = _OPT["mask"], size: int = _OPT["size"],
    limit: Optional[int] = _OPT["limit"], val_limit: int = _OPT["val_limit"],
    denoiser: str = _OPT["denoiser"], features: int = _OPT["features"], depth: int = _OPT["depth"],
    skip: float = _OPT["skip"],
    dc: str = typer.Option("prox-grad", "--dc", help="prox-grad or cg (exact data consistency)."),
    solver: str = typer.Option("anderson", "--solver", help="anderson, broyden or picard."),
    backward: str = typer.Option("ift", "--backward", help="ift, jfb, shine, shine-opa or shine-refine."),
    opa_every: int = typer.Option(1, "--opa-every", help="shine-opa: an outer-problem-aware update every N forward iterations."),
    spectral_norm: bool = typer.Option(False, "--spectral-norm", help="Spectrally normalise the denoiser."),
    jac_reg: float = typer.Option(0.0, "--jac-reg", help="Jacobian regularisation weight (Hutchinson ||J||_F^2 per unknown)."),
    rho_reg: float = typer.Option(0.0, "--rho-reg", help="Weight of the hinge relu(rho - target)^2 on the measured contraction rho at z* (0: off)."),
    rho_target: float = typer.Option(0.9, "--rho-target", help="The contraction the --rho-reg hinge keeps rho under, in (0, 1)."),
    warm_start: bool = typer.Option(False, "--warm-start", help="Start each slice from its last fixed point."),
    max_iter: int = typer.Option(30, "--max-iter", help="Forward iterations."),
    tol: float = typer.Option(1e-3, "--tol", help="Forward relative residual tolerance."),
    max_diverged: int = typer.Option(5, "--max-diverged", help="Diverged batches in a row that stop training."),
    epochs: int = _OPT["epochs"], batch_size: int = _OPT["batch_size"], lr: float = _OPT["lr"],
    device: str = _OPT["device"], seed: int = _OPT["seed"], out: Path = _OPT["out"],
    resume: bool = _OPT["resume"], tensorboard: bool = _OPT["tensorboard"],
    threads: Optional[int] = _OPT["threads"], quiet: bool = _OPT["quiet"],
) -> None:
    """Train a deep-equilibrium reconstructor (IFT, JFB or SHINE backward)."""
    from convexrecon.implicit.backward import BACKWARDS
    from convexrecon.implicit.deq import SHINE_MODES

    solver_name = _choice(solver, SOLVER_NAMES, "--solver")
    backward_name = _choice(backward, BACKWARDS, "--backward")
    dc_name = _choice(dc, DC_NAMES, "--dc")
    if backward_name in SHINE_MODES and solver_name != "broyden":
        raise InputError(f"--backward {backward_name} needs --solver broyden (SHINE reuses the forward "
                         f"Broyden's inverse-Jacobian estimate), got --solver {solver_name}")
    _positive(max_iter, "--max-iter", integer=True)
    _positive(opa_every, "--opa-every", integer=True)
    _positive(tol, "--tol")
    _positive(jac_reg, "--jac-reg", zero=True)
    _positive(rho_reg, "--rho-reg", zero=True)
    if not 0 < rho_target < 1:
        raise InputError(f"--rho-target: expected a contraction bound in (0, 1), got {rho_target}")
    kwargs = dict(_denoiser_options(denoiser, features, depth, skip), dc=dc_name,
                  spectral_norm=spectral_norm, solver=solver_name, backward=backward_name,
                  max_iter=max_iter, tol=tol, jac_reg=jac_reg, rho_reg=rho_reg, rho_target=rho_target,
                  monitor_rho=False)
    if backward_name == "shine-opa":
        kwargs["opa_every"] = opa_every
    spec = {"factory": "convexrecon.implicit.factory:build_deq", "kwargs": kwargs}
    _run(spec, problem=problem, mask=mask, size=size, limit=limit, val_limit=val_limit,
         epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed, out=out,
         resume=resume, tensorboard=tensorboard, threads=threads, quiet=quiet,
         warm_start=warm_start, max_diverged=max_diverged)


@cli_errors
def train_unrolled(
    model: str = typer.Option("modl", "--model", help="modl."),
    iterations: int = typer.Option(5, "--iterations", "-K", help="Unrolled iterations K."),
    problem: str = _OPT["problem"], mask: Optional[str] = _OPT["mask"], size: int = _OPT["size"],
    limit: Optional[int] = _OPT["limit"], val_limit: int = _OPT["val_limit"],
    denoiser: str = _OPT["denoiser"], features: int = _OPT["features"], depth: int = _OPT["depth"],
    skip: float = _OPT["skip"],
    epochs: int = _OPT["epochs"], batch_size: int = _OPT["batch_size"], lr: float = _OPT["lr"],
    device: str = _OPT["device"], seed: int = _OPT["seed"], out: Path = _OPT["out"],
    resume: bool = _OPT["resume"], tensorboard: bool = _OPT["tensorboard"],
    threads: Optional[int] = _OPT["threads"], quiet: bool = _OPT["quiet"],
) -> None:
    """Train an unrolled baseline (MoDL-K) end to end."""
    _choice(model, UNROLLED_NAMES, "--model")
    _positive(iterations, "--iterations", integer=True)
    kwargs = dict(_denoiser_options(denoiser, features, depth, skip), iterations=iterations)
    spec = {"factory": "convexrecon.nets.unrolled:build_modl", "kwargs": kwargs}
    _run(spec, problem=problem, mask=mask, size=size, limit=limit, val_limit=val_limit,
         epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed, out=out,
         resume=resume, tensorboard=tensorboard, threads=threads, quiet=quiet)
