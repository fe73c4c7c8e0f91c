"""Evaluation of learned reconstructors and their references, slice by slice.

- :func:`slice_metrics`: PSNR / SSIM per slice (each slice's own data range).
- :func:`paired_ci`: mean difference of paired per-slice values with a 95% t interval.
- :func:`l1_wavelet_reference`: L1-wavelet FISTA, one system per slice, ``lam``
  chosen on a validation split from a short grid.
- :func:`evaluate_model`: a model's output on a split (no grad).
- :func:`compare_methods`: per-method means and paired 95% intervals against one
  reference method, over the same slices.
- :func:`heldout_kspace_errors`: data without a reference (``brain-real-8coil``):
  hold out k-space samples with the split of :mod:`convexrecon.recon.lam`,
  reconstruct without them, and score each method by its relative error on them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch

from convexrecon.errors import InputError
from convexrecon.metrics import psnr, ssim
from convexrecon.nets.layerwise import ReconData

__all__ = ["slice_metrics", "paired_ci", "l1_wavelet_reference", "l1_wavelet_tuned",
           "evaluate_model", "compare_methods", "heldout_kspace_errors", "LAM_GRID"]

LAM_GRID = (0.001, 0.003, 0.01, 0.03)
# two-sided 95% Student t quantiles for small samples (df 1..30), then the normal value
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def slice_metrics(x: torch.Tensor, target: torch.Tensor) -> dict[str, list[float]]:
    """``{"psnr": [...], "ssim": [...]}`` per slice of ``(N, H, W)`` images (magnitudes;
    each slice's data range is its reference maximum)."""
    x, target = x.detach().cpu(), target.detach().cpu()
    if x.shape != target.shape or x.ndim != 3:
        raise InputError(f"x: expected (N, H, W) like the target {tuple(target.shape)}, got {tuple(x.shape)}")
    return {"psnr": [psnr(a, b) for a, b in zip(x, target)],
            "ssim": [ssim(a, b) for a, b in zip(x, target)]}


def paired_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``a - b`` over pairs, with a 95% t interval."""
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    if n == 0 or n != len(b) or len(a) != len(b):
        raise InputError(f"a, b: expected two equally long non-empty sequences, got {len(a)} and {len(b)}")
    mean = sum(d) / n
    if n == 1:
        return mean, -math.inf, math.inf
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    t = _T95[n - 2] if n - 1 <= len(_T95) else 1.96
    half = t * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def l1_wavelet_reference(data: ReconData, lam: float, *, max_iter: int = 100,
                         levels: int | None = None) -> torch.Tensor:
    """L1-wavelet FISTA (db4, one system per slice) on the split's k-space."""
    from convexrecon.operators.wavelet import Wavelet
    from convexrecon.programs.l1 import L1WaveletProgram
    from convexrecon.solvers.fista import FISTA

    A = data.operator
    W = Wavelet(A.ishape, wavelet="db4", levels=levels, dtype=A.dtype)
    prog = L1WaveletProgram(A, data.kspace, lam, W, lipschitz=1.0)
    return FISTA(prog, max_iter=max_iter, tol=0.0, check_every=0, batch_dims=1).run().x


def l1_wavelet_tuned(val: ReconData, test: ReconData, *, lams: Sequence[float] = LAM_GRID,
                     max_iter: int = 100) -> tuple[float, torch.Tensor]:
    """``(lam, x_test)``: ``lam`` with the best validation PSNR, applied to ``test``."""
    scores = {lam: psnr(l1_wavelet_reference(val, lam, max_iter=max_iter), val.target) for lam in lams}
    best = max(scores, key=scores.get)
    return best, l1_wavelet_reference(test, best, max_iter=max_iter)


def evaluate_model(model: Any, data: ReconData) -> torch.Tensor:
    """``model(y, A)`` on the whole split (no grad)."""
    with torch.no_grad():
        return model(data.kspace, data.operator)


def compare_methods(slices: Mapping[str, Sequence[float]], *, reference: str) -> dict[str, dict[str, float]]:
    """Per method: ``mean`` of its per-slice values and ``diff``, ``ci_low``,
    ``ci_high`` of (method - ``reference``), paired over slices (95% t interval;
    infinite with one slice). All sequences must have the same length."""
    if reference not in slices:
        raise InputError(f"reference: expected one of {', '.join(slices)}, got {reference!r}")
    ref = list(slices[reference])
    out: dict[str, dict[str, float]] = {}
    for name, vals in slices.items():
        vals = list(vals)
        if len(vals) != len(ref):
            raise InputError(f"slices[{name!r}]: expected {len(ref)} values like {reference!r}, got {len(vals)}")
        diff, lo, hi = paired_ci(vals, ref)
        out[name] = dict(mean=sum(vals) / len(vals), diff=diff, ci_low=lo, ci_high=hi, n=len(vals))
    return out


Recon = Callable[[torch.Tensor, Any], torch.Tensor]
"""``recon(y, A) -> x``: k-space ``(1, *A.oshape)`` and its operator to an image."""


def heldout_kspace_errors(kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor,
                          methods: Mapping[str, Recon], *, holdout: float = 0.05,
                          center_fraction: float = 0.08, seeds: Sequence[int] = (0, 1, 2),
                          multiple: int = 16) -> dict[str, Any]:
    """Relative error of each method on held-out k-space of one Cartesian slice.

    The problem is scaled as every reconstruction scales it
    (:func:`convexrecon.recon._setup.prepare`, grid a multiple of ``multiple`` for
    the wavelets); per seed, the held-out samples are drawn as
    :func:`convexrecon.recon.lam.choose_lambda` draws them (``holdout`` of the
    measured locations outside the centre, all coils together); each method
    reconstructs from the rest, and its error is
    ``||P A x - P y||^2 / ||P y||^2`` on the held-out samples ``P``. The data
    residual on the kept samples is not a quality measure (about zero after data
    consistency); this is.

    Returns:
        ``{"errors": {method: [per seed]}, "n_heldout": [per seed], "seeds": [...]}``.
    """
    from convexrecon.recon._setup import prepare
    from convexrecon.recon.lam import holdout_split

    if not methods:
        raise InputError("methods: expected at least one reconstruction, got none")
    if not seeds:
        raise InputError("seeds: expected at least one held-out draw, got none")
    if not 0 < holdout < 0.5:
        raise InputError(f"holdout: expected a fraction in (0, 0.5), got {holdout!r}")
    errors: dict[str, list[float]] = {name: [] for name in methods}
    n_held: list[int] = []
    with torch.no_grad():
        scaled = prepare(kspace, maps, mask, multiple=multiple)
        if not scaled.data.cartesian:
            raise InputError("mask: expected Cartesian sampling (a mask) for held-out k-space, got a trajectory")
        for seed in seeds:
            train, y_train, predict, n = holdout_split(scaled, holdout, center_fraction, int(seed))
            sub = scaled.with_sampling(train, y_train)
            y = sub.y.reshape(-1, *sub.op.oshape)
            n_held.append(int(n))
            for name, fn in methods.items():
                x = fn(y, sub.op).reshape(*scaled.data.batch, *sub.op.ishape)
                pred, target = predict(x)
                den = float(target.abs().pow(2).sum())
                errors[name].append(float((pred - target).abs().pow(2).sum()) / (den if den > 0 else 1.0))
    return {"errors": errors, "n_heldout": n_held, "seeds": [int(s) for s in seeds]}
