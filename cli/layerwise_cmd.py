"""``convexrecon train-layerwise``, ``train-e2e`` and ``evaluate``: thin shells over
:mod:`convexrecon.nets.layerwise_run`, :mod:`convexrecon.nets.e2e_baselines` and
:mod:`convexrecon.nets.layerwise_eval`."""

from __future__ import annotations

import functools
import inspect
import os
import statistics
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import typer
from rich.table import Table

from convexrecon.cli._errors import cli_errors
from convexrecon.cli._options import parse_device
from convexrecon.cli._progress import stderr_console, stdout_console
from convexrecon.errors import InputError

__all__ = ["train_layerwise_cmd", "train_e2e_cmd", "evaluate_cmd", "PRESETS", "LAYERWISE_EPILOG"]

# size, slices and solver effort per preset; explicit options override them
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(layers=2, kernel=3, patterns=4, size=16, n_train=4, n_val=2, n_test=4, epochs=1,
                 max_iter=40, beta_fracs=(0.05,)),
    # cpu: 5 layers in 287 s of CPU time (one thread) with 40 training slices, measured
    "cpu": dict(layers=5, kernel=3, patterns=8, size=48, n_train=40, n_val=6, n_test=None, epochs=1,
                max_iter=40, beta_fracs=(0.1, 0.03, 0.01)),
    "paper": dict(layers=5, kernel=7, patterns=128, size=256, n_train=None, n_val=None, n_test=None,
                  epochs=4, max_iter=300, beta_fracs=(0.2, 0.05, 0.02, 0.005)),
}

LAYERWISE_EPILOG = "\n\n".join([
    "Trains a deep gated CNN one convex two-layer program at a time (data consistency "
    "inside each step unless --no-dc), on the bundled MNI slabs with simulated 8-coil "
    "k-space by default. Without a GPU the 'cpu' preset is used (and said).",
    "--out holds checkpoint.pt after every layer, metrics.json and the figures; "
    "--resume continues after the last finished layer.",
    "Under torchrun every process keeps its share of the training slices and the gated "
    "steps sum over the processes (all-reduce); the main process evaluates and writes.",
    "[bold]Examples[/bold]",
    "  convexrecon train-layerwise --layers 5",
    "  convexrecon train-layerwise --preset tiny --out lw-tiny",
    "  convexrecon train-layerwise --form relu --out lw-relu",
    "  torchrun --nproc_per_node 2 -m convexrecon.cli.main train-layerwise --solver minibatch --out lw",
    "  convexrecon evaluate lw/checkpoint.pt",
    "  convexrecon recon file.h5 --method learned --model lw/checkpoint.pt",
])


_COMMON: tuple[tuple[str, Any, Any], ...] = (
    ("problem", Optional[str], typer.Option(None, "--problem", help="A simulated problem's sampling and coils.")),
    ("data", Optional[Path], typer.Option(None, "--data", help="A folder of fastMRI .h5 files.")),
    ("mask", str, typer.Option("poisson", "--mask", help="poisson or cartesian-1d.")),
    ("accel", float, typer.Option(4.0, "--accel", help="Acceleration.")),
    ("center_fraction", float, typer.Option(0.08, "--center-fraction", help="Centre fraction (1-D masks).")),
    ("noise", float, typer.Option(0.05, "--noise", help="Noise relative to the measured RMS.")),
    ("device", str, typer.Option("cpu", "--device", help="cpu, cuda or cuda:N.")),
    ("seed", int, typer.Option(0, "--seed")),
    ("resume", bool, typer.Option(False, "--resume", help="Continue the run in --out.")),
    ("tensorboard", bool, typer.Option(False, "--tensorboard", help="Write TensorBoard files.")),
    ("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress bars.")),
)
"""The data, device and run options that train-layerwise and train-e2e share."""


def _common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Append the options of :data:`_COMMON` to a command's signature; the command
    receives them bundled as ``common`` (a namespace)."""
    sig = inspect.signature(fn)
    own = [q for q in sig.parameters.values() if q.name != "common"]
    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=o, annotation=t) for n, t, o in _COMMON]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        common = SimpleNamespace(**{n: kwargs.pop(n) for n, _, _ in _COMMON})
        return fn(common=common, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + extra)  # type: ignore[attr-defined]
    return wrapper


def _preset(name: Optional[str], device: Any, console) -> tuple[str, dict[str, Any]]:
    if name is None:
        name = "paper" if device.type == "cuda" else "cpu"
        console.print(f"[dim]preset: {name} ({'GPU' if device.type == 'cuda' else 'no GPU'}; "
                      "--preset to change)[/dim]")
    if name not in PRESETS:
        raise InputError(f"--preset: expected one of {', '.join(PRESETS)}, got {name!r}")
    return name, dict(PRESETS[name])


def _budget_bytes(gb: Optional[float], device: Any) -> float:
    """``--memory-budget`` in bytes; by default half the free memory of a CUDA device,
    2 GB elsewhere."""
    if gb is not None:
        if not gb > 0:
            raise InputError(f"--memory-budget: expected a positive number of GB, got {gb!r}")
        return gb * 1e9
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return 0.5 * free
    return 2e9


def _beta(value: str) -> Optional[float]:
    if value == "auto":
        return None
    try:
        beta = float(value)
    except ValueError:
        raise InputError(f"--beta: expected 'auto' or a fraction of beta_max in (0, 1], got {value!r}") from None
    if not 0 < beta <= 1:
        raise InputError(f"--beta: expected 'auto' or a fraction of beta_max in (0, 1], got {value!r}")
    return beta


def _data_spec(c: SimpleNamespace, size: int):
    """The :class:`DataSpec` of the shared data options ``c`` (:data:`_COMMON`)."""
    from convexrecon.nets.layerwise_data import DataSpec

    data = c.data
    if data is not None:
        path = Path(data)
        if not path.is_dir():
            raise InputError(f"--data: expected a folder of fastMRI .h5 files, got {str(data)!r}")
        others = [p.name for p in path.iterdir() if p.is_file() and p.suffix != ".h5"
                  and not p.name.startswith(".")]
        if others:
            raise InputError(f"--data: expected only fastMRI .h5 files in {str(data)!r}, found {others[0]!r}")
        from convexrecon.data.sources import FastMRIFolder
        FastMRIFolder(path)  # empty folders and unreadable files fail here, before any output
    return DataSpec(problem=c.problem, data_dir=None if data is None else str(data), size=size,
                    mask=c.mask, accel=c.accel, center_fraction=c.center_fraction, noise=c.noise,
                    seed=c.seed)


def _table(rows: list[dict[str, Any]], metrics: dict[str, Any] | None) -> Table:
    t = Table(title="layer-wise training")
    for col in ("layer", "in", "width", "solver", "beta/max", "objective", "cert", "iters", "s",
                "train dB", "val dB", "test dB", "test SSIM"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        t.add_row(str(r["layer"]), str(r["in_channels"]), str(r["width"]), str(r.get("solver", "fista")),
                  f"{r['beta_frac']:.3g}",
                  f"{r['objective']:.4g}", f"{r['certificate']:.2e}", str(r["iterations"]),
                  f"{r['seconds']:.1f}", f"{r['train_psnr']:.2f}", f"{r['val_psnr']:.2f}",
                  f"{r['test_psnr']:.2f}", f"{r['test_ssim']:.4f}")
    if metrics:
        for key, label in (("zero_filled", "zero-filled"), ("dc_only", "DC only"),
                           ("l1_wavelet", "L1-wav FISTA")):
            if key in metrics:
                m = metrics[key]
                t.add_row(label, *[""] * 10, f"{m['psnr']:.2f}", f"{m['ssim']:.4f}")
    return t


@cli_errors
@_common_options
def train_layerwise_cmd(
    layers: Optional[int] = typer.Option(None, "--layers", help="Convex steps (hidden conv layers)."),
    kernel: Optional[int] = typer.Option(None, "--kernel", help="Odd kernel size."),
    patterns: Optional[int] = typer.Option(None, "--patterns", help="Gates (patterns) P per step."),
    beta: str = typer.Option("auto", "--beta", help="'auto' (validation path) or a fraction of beta_max."),
    form: str = typer.Option("gated", "--form", help=(
        "gated (default) or relu: the cone form, solved by the augmented Lagrangian, whose "
        "layers are true ReLU layers.")),
    no_dc: bool = typer.Option(False, "--no-dc", help="No data consistency (the seed's image-only net)."),
    dc_mu: float = typer.Option(0.1, "--dc-mu", help="Data-consistency weight mu."),
    dc_after: bool = typer.Option(False, "--dc-after",
                                  help="Train image-only, apply DC after the network (cheaper steps)."),
    gates: str = typer.Option("gaussian", "--gates", help="gaussian or patches."),
    solver: str = typer.Option("auto", "--solver", help=(
        "auto, fista or minibatch. fista: full batch, to a certificate. minibatch: proximal "
        "SVRG over --batch-size images (gated form). auto: fista when the step's estimated "
        "working set (3 x N x P x 2 x H x W floats + the masks) fits --memory-budget, else "
        "minibatch with the largest batch that fits; the relu form is always full batch.")),
    batch_size: Optional[int] = typer.Option(None, "--batch-size",
                                             help="Images per minibatch (default: the largest that fits)."),
    passes: int = typer.Option(30, "--passes", help="Passes over the data per beta (minibatch)."),
    memory_budget: Optional[float] = typer.Option(
        None, "--memory-budget",
        help="GB a full-batch step may use (auto; default: half the free GPU memory, 2 on the CPU)."),
    out: Path = typer.Option(Path("layerwise-out"), "--out", help="Output folder."),
    preset: Optional[str] = typer.Option(None, "--preset", help="tiny, cpu or paper."),
    common: SimpleNamespace = None,
) -> None:
    """Greedy convex layer-wise training of a deep CNN reconstructor."""
    from convexrecon.nets.layerwise import LayerwiseConfig
    from convexrecon.nets.layerwise_run import Sizes, run_layerwise

    c = common
    dev = parse_device(c.device)
    err = stderr_console()
    name, p = _preset(preset, dev, stdout_console())  # stdout: stderr keeps a lone error line
    if solver not in ("auto", "fista", "minibatch"):
        raise InputError(f"--solver: expected auto, fista or minibatch, got {solver!r}")
    if c.problem is not None and c.data is not None:
        raise InputError("--problem/--data: expected at most one of them, got both")
    spec = _data_spec(c, p["size"])
    cfg = LayerwiseConfig(layers=layers or p["layers"], kernel=kernel or p["kernel"],
                          patterns=patterns or p["patterns"], form=form,
                          dc_mu=None if no_dc else dc_mu, dc_in_step=not dc_after, beta=_beta(beta),
                          beta_fracs=p["beta_fracs"], gates=gates, max_iter=p["max_iter"],
                          solver=solver, batch_size=batch_size, epochs=passes,
                          memory_budget=_budget_bytes(memory_budget, dev), seed=c.seed)
    sizes = Sizes(n_train=p["n_train"], n_val=p["n_val"], n_test=p["n_test"], epochs=p["epochs"])
    console = stdout_console()
    rows: list[dict[str, Any]] = []

    def on_layer(row: dict[str, Any]) -> None:
        rows.append(row)
        if not c.quiet:
            err.print(f"layer {row['layer']}/{cfg.layers}: width {row['width']}, "
                      f"certificate {row['certificate']:.2e}, test PSNR {row['test_psnr']:.2f} dB "
                      f"({row['seconds']:.1f} s)")

    from convexrecon.training import distributed as D

    started = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not D.is_distributed()
    if started:  # under torchrun: the gated steps sum over the processes' training slices
        D.init_from_env(backend="gloo" if dev.type == "cpu" else None)  # NCCL needs CUDA tensors
    main = D.is_main_process()
    callback = None
    progress = None
    if not c.quiet and main:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                            console=err, transient=True)
        task = progress.add_task("solver iterations", total=None, info="")

        def callback(state: Any) -> None:
            cert = getattr(state, "certificate", float("nan"))
            progress.update(task, advance=1, info=f"certificate {cert:.2e}")
        progress.start()
    try:
        run = run_layerwise(config=cfg, data=spec, sizes=sizes, out_dir=out, resume=c.resume, device=dev,
                            tensorboard=c.tensorboard, on_layer=on_layer, callback=callback,
                            log=(lambda s: None) if c.quiet else err.print)
    finally:
        if progress is not None:
            progress.stop()
        if started:
            D.cleanup()
    if not main:
        return
    console.print(_table(run.reports, run.metrics))
    g = run.metrics["gain_vs"]
    for ref, v in g.items():
        console.print(f"gain vs {ref}: {v['mean_db']:+.2f} dB (95% CI {v['ci_low_db']:+.2f} .. "
                      f"{v['ci_high_db']:+.2f}, {v['n']} slices)")
    console.print(f"widths {run.net.widths()}; {run.seconds:.1f} s; wrote {out}/checkpoint.pt, "
                  f"metrics.json, psnr_per_layer.png, reconstructions.png")


@cli_errors
def evaluate_cmd(
    model: Path = typer.Argument(..., metavar="MODEL", help="A model checkpoint (any learned model)."),
    problem: Optional[str] = typer.Option(None, "--problem", help="A simulated problem's sampling and coils."),
    data: Optional[Path] = typer.Option(None, "--data", help="A folder of fastMRI .h5 files."),
    size: int = typer.Option(48, "--size", help="Image side."),
    split: str = typer.Option("test", "--split", help="test, val, dipy-t1-coronal or dipy-b0."),
    n: Optional[int] = typer.Option(None, "--n", help="Slices (default: all)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
) -> None:
    """Evaluate a saved model on a split: slice-wise PSNR / SSIM."""
    from convexrecon.nets.layerwise_data import load_split
    from convexrecon.nets.layerwise_eval import evaluate_model, paired_ci, slice_metrics
    from convexrecon.training import load_model

    dev = parse_device(device)
    net = load_model(model, map_location=dev)
    spec = _data_spec(SimpleNamespace(problem=problem, data=data, mask="poisson", accel=4.0,
                                      center_fraction=0.08, noise=0.05, seed=seed), size)
    test = load_split(spec, split, n=n, device=dev)
    m = slice_metrics(evaluate_model(net, test), test.target)
    z = slice_metrics(test.x0, test.target)
    mean, lo, hi = paired_ci(m["psnr"], z["psnr"])
    t = Table(title=f"{model.name} on {split} ({len(test)} slices)")
    for col in ("method", "PSNR (dB)", "SSIM"):
        t.add_column(col)
    t.add_row("model", f"{statistics.mean(m['psnr']):.2f}", f"{statistics.mean(m['ssim']):.4f}")
    t.add_row("zero-filled", f"{statistics.mean(z['psnr']):.2f}", f"{statistics.mean(z['ssim']):.4f}")
    stdout_console().print(t)
    stdout_console().print(f"gain vs zero-filled: {mean:+.2f} dB (95% CI {lo:+.2f} .. {hi:+.2f})")


@cli_errors
@_common_options
def train_e2e_cmd(
    arch: str = typer.Option("gated", "--arch", help="gated (the layer-wise architecture) or unet."),
    like: Optional[Path] = typer.Option(None, "--like", help="A layer-wise checkpoint: copy its block shapes."),
    layers: Optional[int] = typer.Option(None, "--layers", help="Blocks (without --like)."),
    kernel: Optional[int] = typer.Option(None, "--kernel", help="Odd kernel size (without --like)."),
    patterns: Optional[int] = typer.Option(None, "--patterns", help="Gates per block; width 2P (without --like)."),
    no_dc: bool = typer.Option(False, "--no-dc", help="No data consistency."),
    dc_mu: float = typer.Option(0.1, "--dc-mu", help="Data-consistency weight mu."),
    epochs: int = typer.Option(10, "--epochs", help="Epochs of Adam."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (halved every 10 epochs)."),
    batch_size: int = typer.Option(4, "--batch-size"),
    out: Path = typer.Option(Path("e2e-out"), "--out", help="Output folder."),
    preset: Optional[str] = typer.Option(None, "--preset", help="tiny, cpu or paper (data sizes)."),
    common: SimpleNamespace = None,
) -> None:
    """Train an end-to-end baseline (Adam) with the layer-wise trainer's data options."""
    from convexrecon.nets.e2e_baselines import SubsetDataset, train_e2e
    from convexrecon.nets.layerwise_data import _dataset, _indices
    from convexrecon.training import build_model, load_checkpoint

    c = common
    seed = c.seed
    dev = parse_device(c.device)
    _, p = _preset(preset, dev, stdout_console())
    if arch not in ("gated", "unet"):
        raise InputError(f"--arch: expected gated or unet, got {arch!r}")
    spec = _data_spec(c, p["size"])
    mu = None if no_dc else dc_mu
    if arch == "unet":
        model_spec = {"factory": "convexrecon.nets.e2e_baselines:unet_recon",
                      "kwargs": {"features": 16, "levels": 2, "dc_mu": mu, "seed": seed}}
    else:
        skip = True
        if like is not None:
            kw = load_checkpoint(like)["model_spec"]["kwargs"]
            blocks, skip = kw["blocks"], bool(kw.get("skip_input", False))
            if any(b.get("kind") == "relu" for b in blocks):
                raise InputError(f"--like: {str(like)!r} is a relu-form network; the end-to-end "
                                 "baseline is gated only (--arch gated without --like, or unet)")
        else:
            k, P, L = kernel or p["kernel"], patterns or p["patterns"], layers or p["layers"]
            if k < 1 or k % 2 == 0:
                raise InputError(f"--kernel: expected an odd integer >= 1, got {k}")
            blocks, cin = [], 3
            for _ in range(L):
                blocks.append(dict(n_gates=P, in_channels=cin, kernel=k, width=2 * P, c_out=2,
                                   padding="zeros", bias=True))
                cin = 2 * P + 1 + 2 * skip
        model_spec = {"factory": "convexrecon.nets.e2e_baselines:gated_e2e_net",
                      "kwargs": {"blocks": blocks, "dc_mu": mu, "seed": seed, "skip_input": skip}}
    model = build_model(model_spec)
    tr_ds, va_ds = _dataset(spec, "train"), _dataset(spec, "val")
    folder = spec.data_dir is not None
    train = SubsetDataset(tr_ds, _indices(len(tr_ds), p["n_train"], "train", folder))
    val = SubsetDataset(va_ds, _indices(len(va_ds), p["n_val"], "val", folder))
    hist = train_e2e(model, model_spec=model_spec, train=train, val=val, epochs=epochs, out_dir=str(out),
                     lr=lr, batch_size=batch_size, resume=c.resume, seed=seed, device=str(dev),
                     tensorboard=c.tensorboard, progress=not c.quiet)
    t = Table(title=f"end-to-end {arch}")
    for col in ("epoch", "train loss", "val loss", "val PSNR"):
        t.add_column(col, justify="right")
    for e in hist.epochs:
        t.add_row(str(e.get("epoch")), f"{e.get('train_loss', float('nan')):.4g}",
                  f"{e.get('val_loss', float('nan')):.4g}", f"{e.get('val_psnr', float('nan')):.2f}")
    stdout_console().print(t)
    stdout_console().print(f"wrote {out}/checkpoint.pt and metrics.json")
