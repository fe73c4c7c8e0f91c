"""``convexrecon recon INPUT``: load k-space, reconstruct, report, save.

A thin shell over :mod:`convexrecon.io`, :mod:`convexrecon.recon`,
:mod:`convexrecon.metrics` and :mod:`convexrecon.viz`; no algorithm lives here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer
from rich.table import Table

from convexrecon.cli._errors import cli_errors, reading
from convexrecon.cli._options import (
    METHODS,
    check_input_path,
    check_iters,
    check_output_path,
    parse_device,
    parse_lam,
    parse_method,
    parse_slices,
    set_threads,
)
from convexrecon.cli._progress import SolveProgress, stdout_console
from convexrecon.errors import InputError

if TYPE_CHECKING:  # torch is imported lazily: `--help` should not pay for it
    import torch

__all__ = ["recon", "RECON_EPILOG", "Scores", "score", "scores_table", "reconstruct"]

RECON_EPILOG = "\n\n".join([
    "[bold]Conventions[/bold]",
    "k-space is (slices, coils, H, W) complex: H is the readout axis, W the phase-encode "
    "axis; the FFT is centred and orthonormal (fastMRI's convention). Unsampled entries "
    "are zeros; the mask is the file's own, else the nonzero entries.",
    "Inputs: fastMRI .h5 (dataset 'kspace', optional 'mask' and a 'reconstruction_rss' "
    "or 'reconstruction_esc' reference); BART .cfl/.hdr (any 2-D layout: the two "
    "non-singleton dimensions of READ, PHS1, PHS2 are H and W, lower-numbered first; "
    "COIL the coils; SLICE and TIME the slices; the first set of MAPS); .npy "
    "((C, H, W) or (S, C, H, W) complex).",
    "Coil maps are estimated by ESPIRiT. Each slice is scaled on its own, so one --lam "
    "means the same on every dataset (default 0.01 for l1-wavelet and tv; for sense "
    "--lam is the Tikhonov weight mu, default 'auto': mu and the iteration count, at "
    "most --iters, chosen by held-out k-space).",
    "Outputs, written atomically: --out .npy holds the image (S, H, W), complex (real for "
    "grappa and zero-filled, which combine coils by root-sum-of-squares); --out .h5 holds "
    "its magnitude as dataset 'reconstruction' (fastMRI layout), full field of view; "
    "--out .cfl writes the complex image in BART's convention (the spatial and slice "
    "dimensions of a BART input, else READ x PHS1 with slices in SLICE). "
    "--png draws the reconstruction, the zero-filled image and, with a reference, the "
    "error maps. With a reference, PSNR, SSIM and NMSE of magnitudes (centre-cropped to "
    "the reference) are printed.",
    "[bold]Examples[/bold]",
    "  convexrecon recon file_brain.h5 --out recon.h5 --png recon.png",
    "  convexrecon recon file_brain.h5 --slice 10 --method tv --lam auto",
    "  convexrecon recon kspace.cfl --method sense --iters 30 --out x.npy",
    "  convexrecon recon kspace.npy --lam 0.003 --threads 1",
])


@dataclass
class Scores:
    """PSNR (dB), SSIM and NMSE of one image against the reference."""

    psnr: float
    ssim: float
    nmse: float


def _crop_to(img: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    h, w = shape[-2:]
    H, W = img.shape[-2:]
    if (H, W) == (h, w):
        return img
    if h > H or w > W:
        raise InputError(f"reference: expected at most the image size {H}x{W}, got {h}x{w}")
    top, left = (H - h) // 2, (W - w) // 2
    return img[..., top:top + h, left:left + w]


def score(image: torch.Tensor, reference: torch.Tensor) -> Scores:
    """Metrics of magnitudes, the image centre-cropped to the reference's size."""
    from convexrecon import metrics

    img = _crop_to(image.detach().cpu(), tuple(reference.shape))
    ref = reference.detach().cpu()
    return Scores(psnr=metrics.psnr(img, ref), ssim=metrics.ssim(img, ref),
                  nmse=metrics.nmse(img, ref))


def scores_table(rows: list[tuple[Any, Scores | None]], *, title: str = "metrics",
                 labels: tuple[str, ...] = ("image",),
                 extra: dict[str, list[str]] | None = None) -> Table:
    """A rich table of PSNR / SSIM / NMSE per image (``None``: no reference, shown "-").

    Each row is ``(label, scores)``; ``label`` is a string, or a tuple of strings
    filling the ``labels`` columns. ``extra`` adds columns (one string per row).
    """
    table = Table(title=title)
    for name in labels:
        table.add_column(name, style="bold")
    table.add_column("PSNR (dB)", justify="right")
    table.add_column("SSIM", justify="right")
    table.add_column("NMSE", justify="right")
    for key in (extra or {}):
        table.add_column(key, justify="right")
    for i, (label, s) in enumerate(rows):
        names = (label,) if isinstance(label, str) else tuple(label)
        cells = ["-", "-", "-"] if s is None else [f"{s.psnr:.2f}", f"{s.ssim:.4f}", f"{s.nmse:.4g}"]
        more = [vals[i] for vals in (extra or {}).values()]
        table.add_row(*names, *cells, *more)
    return table


def _default_iters(fn: Callable[..., Any]) -> int | None:
    param = inspect.signature(fn).parameters.get("max_iter")
    return None if param is None or param.default is inspect.Parameter.empty else int(param.default)


def _learned(model: Any, kspace: torch.Tensor, sampling: Any, *, lam: Any, iters: Any,
             device: torch.device, maps: Any = None) -> torch.Tensor:
    """A trained model (any ``forward(y, A)`` checkpoint) on the scaled problem."""
    import torch

    from convexrecon.recon._setup import prepare

    if model is None:
        raise InputError("--method learned: expected --model MODEL (a checkpoint from "
                         "train-layerwise, train-e2e or any learned model)")
    if lam is not None or iters is not None:
        raise InputError("--lam/--iters: not used by --method learned; leave them out")
    net = model if isinstance(model, torch.nn.Module) else _load_model(model, device)
    scaled = prepare(kspace, maps, sampling, device=device)
    with torch.no_grad():
        x = net(scaled.y, scaled.op)
    _note_unconverged(net)
    return scaled.unscale(x)


def _note_unconverged(net: Any) -> None:
    """One ``warning: ...`` line when a DEQ's forward solve stopped short of its
    tolerance for some slices: their output is the lowest-residual iterate of the
    solve, not a fixed point (a map trained without a stabiliser is often not a
    contraction, see docs/BENCHMARKS.md)."""
    info = getattr(net, "last_info", None)
    stats = getattr(info, "forward", None)
    if stats is None:
        return
    short = ~stats.converged.reshape(-1)
    if bool(short.any()):
        worst = float(stats.best_rel_residual.reshape(-1)[short].max())
        typer.echo(f"warning: the DEQ's forward solve stopped short of its tolerance {net.tol:g} for "
                   f"{int(short.sum())} of {short.numel()} slices (relative residual up to {worst:.2g} "
                   f"after {int(stats.iterations.max())} iterations); their images are the solve's "
                   f"lowest-residual iterates, not fixed points", err=True)


def _load_model(path: Any, device: torch.device) -> Any:
    from convexrecon.training import load_model

    return load_model(path, map_location=device)


def reconstruct(method: str, kspace: torch.Tensor, sampling: Any, *, lam: float | str | None,
                iters: int | None, device: torch.device, quiet: bool = False,
                im_size: tuple[int, int] | None = None, maps: Any = None,
                model: Any = None) -> torch.Tensor:
    """Call the library's reconstruction ``method`` (one of :data:`METHODS`)."""
    from convexrecon import recon as api

    if method in ("grappa", "zero-filled"):
        if lam is not None:
            raise InputError(f"--lam: not used by --method {method}; leave it out")
        if iters is not None:
            raise InputError(f"--iters: not used by --method {method}; leave it out")
    if method == "zero-filled":
        return api.zero_filled(kspace, maps, sampling, im_size=im_size, device=device)
    if method == "learned":
        return _learned(model, kspace, sampling, lam=lam, iters=iters, device=device, maps=maps)
    if method == "grappa":
        if sampling is not None and str(sampling.dtype) != "torch.bool":
            raise InputError("--method grappa: expected Cartesian k-space with 1-D undersampling, "
                             "got a non-Cartesian trajectory")
        return api.grappa(kspace.to(device), mask=None if sampling is None else sampling.to(device),
                          maps=maps)
    fn = {"l1-wavelet": api.l1_wavelet, "sense": api.sense, "tv": api.tv}[method]
    opts: dict[str, Any] = {"device": device, "im_size": im_size}
    if iters is not None:
        opts["max_iter"] = iters
    if lam is not None:
        if method == "sense":
            opts["mu"] = lam  # "auto" (the default): mu and the iteration count by held-out k-space
        else:
            opts["lam"] = lam
    total = iters if iters is not None else _default_iters(fn)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", api.GridEdgeWarning)
        with SolveProgress(total, method, enabled=not quiet) as bar:
            image = fn(kspace, maps, sampling, callback=bar.callback(), **opts)
    for w in caught:  # one plain line each (e.g. lam='auto' at the edge of its grid)
        if issubclass(w.category, api.GridEdgeWarning):
            typer.echo(f"warning: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return image


def _full_mask(mask: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
    """Expand a 1-D fastMRI mask ``(1, W)`` (or any broadcastable mask) to ``(..., H, W)``."""
    if mask is None:
        return None
    import torch

    try:
        return torch.broadcast_to(mask, (*mask.shape[:-2], *size))
    except RuntimeError:
        raise InputError(f"mask: expected a mask broadcastable to (slices, {size[0]}, {size[1]}), "
                         f"got shape {tuple(mask.shape)}") from None


def load_kspace_noting(path: Path, **opts: Any) -> Any:
    """``load_kspace``, with a BART layout simplification (first set of maps) as one
    ``warning: ...`` line on stderr."""
    import warnings

    from convexrecon.io import load_kspace
    from convexrecon.io.cfl import BartLayoutWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BartLayoutWarning)
        data = load_kspace(path, **opts)
    for w in caught:
        if issubclass(w.category, BartLayoutWarning):
            typer.echo(f"warning: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return data


def _write_output(path: Path, image: torch.Tensor, bart_layout: Any = None) -> None:
    from convexrecon.io import write_bart_image, write_npy, write_reconstruction

    img = image.detach().cpu()
    if path.suffix.lower() == ".npy":
        write_npy(path, img)
    elif path.suffix.lower() == ".cfl":
        write_bart_image(path, img, bart_layout)
    else:
        write_reconstruction(path, img)


@cli_errors
def recon(
    input: Path = typer.Argument(..., metavar="INPUT", show_default=False,
                                 help="k-space file: fastMRI .h5, BART .cfl/.hdr or .npy."),
    method: str = typer.Option("l1-wavelet", "--method", "-m",
                               help=f"One of: {', '.join(METHODS)}."),
    lam: Optional[str] = typer.Option(None, "--lam", show_default="method default",
                                      help="Regularisation weight on the scaled problem (a number > 0) "
                                           "or 'auto' (k-space cross-validation)."),
    iters: Optional[int] = typer.Option(None, "--iters", show_default="method default",
                                        help="Iterations (l1-wavelet: 100, sense: 50, tv: 200)."),
    slices: Optional[str] = typer.Option(None, "--slice", show_default="every slice",
                                         help="Slices to reconstruct as one batch: N, A:B or N,M,..."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", show_default=False,
                                       help="Write the reconstruction: .h5 (fastMRI "
                                            "'reconstruction', magnitude), .npy (the image) "
                                            "or .cfl (BART, complex)."),
    png: Optional[Path] = typer.Option(None, "--png", show_default=False,
                                       help="Write a figure: reconstruction, zero-filled, error map."),
    threads: Optional[int] = typer.Option(None, "--threads", show_default="torch default",
                                          help="CPU threads for torch and BLAS (1 is often fastest on a busy machine)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    model: Optional[Path] = typer.Option(None, "--model", show_default=False,
                                         help="--method learned: a trained model checkpoint "
                                              "(train-layerwise, train-e2e, DEQ, MoDL)."),
) -> None:
    """Reconstruct undersampled multi-coil k-space.

    Runs L1-wavelet (FISTA), CG-SENSE, TV (PDHG), GRAPPA or the zero-filled
    reconstruction on every selected slice at once, prints the metrics when the
    file holds a fully sampled reference, and saves the image and a figure.
    """
    set_threads(threads)
    name = parse_method(method)
    iters = check_iters(iters)
    lam_value = parse_lam(lam)
    dev = parse_device(device)
    selected = parse_slices(slices)
    path = check_input_path(input)
    out_path = check_output_path(out, "--out", (".h5", ".npy", ".cfl"))
    png_path = check_output_path(png, "--png", (".png",))
    for other, label in ((out_path, "--out"), (png_path, "--png")):
        if other is not None and other.resolve() == path.resolve():
            raise InputError(f"{label}: refusing to overwrite the input file {str(path)!r}")
    if (out_path is not None and out_path.suffix.lower() == ".cfl"
            and path.suffix.lower() in (".cfl", ".hdr")
            and out_path.resolve().with_suffix("") == path.resolve().with_suffix("")):
        raise InputError(f"--out: refusing to overwrite the input pair {str(path.with_suffix(''))!r}"
                         ".cfl/.hdr")

    if model is not None and name != "learned":
        raise InputError(f"--model: only used by --method learned, got --method {name}")
    net = _load_model(model, dev) if name == "learned" and model is not None else None

    with reading(path):
        data = load_kspace_noting(path, slices=selected)
    kspace = data.kspace
    if data.traj is not None:
        raise InputError(f"{path}: non-Cartesian k-space needs the image size; reconstruct it "
                         "from Python with convexrecon.recon (im_size=...)")
    if kspace.ndim != 4:
        raise InputError(f"kspace: expected 2-D multi-coil k-space (slices, coils, H, W), got "
                         f"shape {tuple(kspace.shape)} in {str(path)!r}")
    sampling = _full_mask(data.mask, tuple(kspace.shape[-2:]))
    im_size = None
    image = reconstruct(name, kspace, sampling, lam=lam_value, iters=iters, device=dev,
                        quiet=quiet, im_size=im_size, model=net)
    image = image.detach().cpu()

    zero = None
    if png_path is not None or data.reference is not None:
        from convexrecon.recon import zero_filled

        zero = image if name == "zero-filled" else zero_filled(kspace, None, sampling).cpu()

    console = stdout_console()
    n = int(kspace.shape[0])
    console.print(f"[bold]{name}[/bold] on {path.name}: {n} slice{'s' if n != 1 else ''}, "
                  f"k-space {tuple(int(s) for s in kspace.shape)}, image {tuple(image.shape)}")
    if data.reference is not None:
        ref = data.reference
        rows: list[tuple[str, Scores | None]] = [(name, score(image, ref))]
        if name != "zero-filled" and zero is not None:
            rows.append(("zero-filled", score(zero, ref)))
        console.print(scores_table(rows, title=f"metrics vs the file's reference {tuple(ref.shape)}"))

    if out_path is not None:
        _write_output(out_path, image, data.attrs.get("bart_layout") if data.attrs else None)
        console.print(f"wrote {out_path}")
    if png_path is not None:
        from convexrecon import viz

        scores = {}
        if data.reference is not None:
            s = score(image, data.reference)
            scores[name] = f"PSNR {s.psnr:.2f} dB, SSIM {s.ssim:.3f}"
        viz.reconstruction_figure(png_path, image, zero_filled=zero if name != "zero-filled" else None,
                                  reference=data.reference, method=name, scores=scores,
                                  title=path.name)
        console.print(f"wrote {png_path}")
