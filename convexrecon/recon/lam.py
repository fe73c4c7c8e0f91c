"""Choosing the regularisation weight without ground truth: k-space cross-validation.

The rule (:func:`choose_lambda`):

1. Scale the problem once on all measured samples (operator and data scales, see
   :mod:`convexrecon.recon._setup`), so every candidate is a weight of the same
   scaled problem that the final reconstruction solves.
2. Hold out a random ``holdout`` fraction (default 5%) of the measured samples,
   drawn with ``seed``: Cartesian k-space locations (all coils together, the same
   fraction in every slice) or non-Cartesian trajectory samples. Samples in the
   centre of k-space are never held out (locations whose distance from the centre,
   in grid units, is below ``center_fraction / 2`` of the smaller side, default
   8%): they carry most of the energy, every method fits them, and losing them
   would change the training problem far more than the weight does.
3. Reconstruct from the remaining samples with every weight of ``grid``, from the
   largest down, each warm-started from the previous solution.
4. Score each weight by the relative error with which its reconstruction predicts
   the held-out samples, ``||P (A_s x) - P y_s||^2 / ||P y_s||^2`` (``P`` selects the
   held-out samples, summed over coils and slices), and pick the smallest score
   (the smaller weight on ties). One weight serves the whole volume.
5. The default grid extends itself downward: while the best weight is the
   smallest tried, weights one step (1, 3, 10, ...) smaller are tried too, down to
   ``LAMBDA_FLOOR`` (1e-6), until one scores worse. If the choice is still at an
   edge of what was tried (the largest weight, or the floor; or either edge of a
   grid the caller gave), a :class:`GridEdgeWarning` says so: the best weight may
   lie outside.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from convexrecon._checks import check_choice, check_positive
from convexrecon.errors import InputError
from convexrecon.recon._setup import Scaled, prepare
from convexrecon.recon._solve import METHODS, check_iters, solve
from convexrecon.recon.iterative import DEFAULT_WAVELET, wavelet_levels

__all__ = ["LambdaChoice", "choose_lambda", "choose_on", "holdout_split", "DEFAULT_GRIDS", "LAMBDA_FLOOR",
           "GridEdgeWarning"]

LAMBDA_FLOOR = 1e-6
"""The smallest weight the default grid extends down to."""


class GridEdgeWarning(UserWarning):
    """The chosen weight is at an edge of the weights tried."""

DEFAULT_GRIDS: dict[str, tuple[float, ...]] = {
    "l1_wavelet": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "tv": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "sense": (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
}


@dataclass
class LambdaChoice:
    """The chosen weight and the evidence.

    Attributes:
        lam: the chosen weight (an element of ``grid``).
        grid: the candidate weights, ascending.
        scores: relative held-out prediction error per candidate.
        holdout: the fraction of measured samples held out.
        n_heldout: how many samples (locations) were held out in all.
        seed: the seed of the held-out draw.
        at_edge: whether the choice is at an edge of the weights tried (a
            :class:`GridEdgeWarning` was issued).
    """

    lam: float
    grid: tuple[float, ...]
    scores: tuple[float, ...]
    holdout: float
    n_heldout: int
    seed: int
    at_edge: bool = False


def _draw(candidates: torch.Tensor, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """Bool ``candidates``-shaped selection of ``round(fraction * count)`` per row."""
    flat = candidates.reshape(candidates.shape[0], -1)
    out = torch.zeros_like(flat)
    for b in range(flat.shape[0]):
        idx = torch.nonzero(flat[b].cpu()).flatten()
        n = int(round(fraction * idx.numel()))
        if n == 0:
            continue
        pick = idx[torch.randperm(idx.numel(), generator=gen)[:n]]
        out[b, pick.to(out.device)] = True
    return out.reshape(candidates.shape)


def _radius(shape: Sequence[int], device) -> torch.Tensor:
    h, w = shape
    ky = torch.arange(h, device=device, dtype=torch.float64) - h // 2
    kx = torch.arange(w, device=device, dtype=torch.float64) - w // 2
    return torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)


def holdout_split(scaled: Scaled, holdout: float, center_fraction: float, seed: int):
    """Hold out ``holdout`` of the measured samples outside the central disc
    (diameter ``center_fraction`` of the smaller side), drawn with ``seed``.

    Returns ``(train_sampling, train_y, predict, n_heldout)``: the kept mask (or
    trajectory) and data, and ``predict(x) -> (pred, target)``, the prediction of the
    held-out samples from an image ``x`` of the scaled problem and their measured
    values. The machinery of :func:`choose_lambda`, for scoring any reconstruction
    on k-space it has not seen."""
    data = scaled.data
    gen = torch.Generator().manual_seed(int(seed))
    r0 = 0.5 * center_fraction * min(data.im_size)
    if data.cartesian:
        mask = torch.broadcast_to(data.mask, (*data.batch, *data.im_size)).reshape(-1, *data.im_size)
        outer = _radius(data.im_size, mask.device) >= r0
        held = _draw(mask & outer, holdout, gen).reshape(*data.batch, *data.im_size)
        n_held = int(held.sum())
        if n_held == 0:
            raise InputError(f"holdout: expected a fraction that holds out at least one sample, "
                             f"got {holdout} of {int(mask.sum())} measured locations")
        train = torch.broadcast_to(data.mask, held.shape) & ~held
        keep = held.unsqueeze(-3)
        y_train = scaled.y * train.unsqueeze(-3)
        full_op = scaled.op

        def predict(x):
            pred = full_op(x)
            sel = torch.broadcast_to(keep, pred.shape)
            return pred[sel], torch.broadcast_to(scaled.y, pred.shape)[sel]

        return train, y_train, predict, n_held
    traj = data.traj
    scale = torch.tensor(data.im_size, dtype=traj.dtype, device=traj.device)[:, None] / (2 * math.pi)
    outer = torch.linalg.vector_norm(traj * scale, dim=0) >= r0
    held = _draw(outer[None], holdout, gen)[0]
    n_held = int(held.sum())
    if n_held == 0:
        raise InputError(f"holdout: expected a fraction that holds out at least one sample, "
                         f"got {holdout} of {traj.shape[1]} trajectory samples")
    train_traj = traj[:, ~held]
    y_train = scaled.y[..., ~held]
    held_data = type(data)(kspace=scaled.y[..., held], mask=None, traj=traj[:, held],
                           im_size=data.im_size, batch=data.batch)
    from convexrecon.recon._setup import encoding

    held_op = encoding(held_data, scaled.maps, scaled.grid, scale=scaled.op_scale)
    target = scaled.y[..., held]

    def predict(x):
        return held_op(x), target

    return train_traj, y_train, predict, n_held


def choose_on(scaled: Scaled, method: str, *, grid: Sequence[float] | None = None,
              holdout: float = 0.05, center_fraction: float = 0.08, max_iter: int = 100,
              seed: int = 0, opts: dict | None = None) -> LambdaChoice:
    """:func:`choose_lambda` on an already prepared (scaled) problem."""
    check_choice(method, METHODS, "method")
    cands = DEFAULT_GRIDS[method] if grid is None else tuple(grid)
    if not cands:
        raise InputError("grid: expected at least one candidate weight, got none")
    cands = tuple(sorted(check_positive(g, "grid", strict=False) for g in cands))
    holdout = check_positive(holdout, "holdout")
    if holdout >= 0.5:
        raise InputError(f"holdout: expected a fraction in (0, 0.5), got {holdout}")
    center_fraction = check_positive(center_fraction, "center_fraction", strict=False)
    max_iter = check_iters(max_iter)
    train, y_train, predict, n_held = holdout_split(scaled, holdout, center_fraction, seed)
    sub = scaled.with_sampling(train, y_train)
    scores: dict[float, float] = {}
    x = None

    def score(lam: float, x0):
        x = solve(method, sub.op, sub.y, lam, max_iter=max_iter, x0=x0, **(opts or {}))
        pred, target = predict(x)
        den = float(torch.sum(target.abs() ** 2))
        scores[lam] = float(torch.sum((pred - target).abs() ** 2)) / (den if den > 0 else 1.0)
        return x

    with torch.no_grad():
        for lam in reversed(cands):
            x = score(lam, x)
        if grid is None:  # extend the default grid downward while its smallest weight wins
            for lam in _below(min(scores), LAMBDA_FLOOR):
                if min(scores, key=lambda g: (scores[g], g)) != min(scores):
                    break
                x = score(lam, x)
    tried = tuple(sorted(scores))
    best = min(tried, key=lambda g: (scores[g], g))
    at_edge = len(tried) > 1 and best in (tried[0], tried[-1])
    if at_edge:
        side = "largest" if best == tried[-1] else "smallest"
        floor = " (the floor)" if grid is None and best == tried[0] else ""
        warnings.warn(f"lam='auto' ({method}): the choice {best:g} is the {side} weight tried"
                      f"{floor}, in [{tried[0]:g}, {tried[-1]:g}]; the best weight may lie outside "
                      "(pass grid= to choose_lambda, or a number)", GridEdgeWarning, stacklevel=3)
    return LambdaChoice(lam=best, grid=tried, scores=tuple(scores[g] for g in tried),
                        holdout=holdout, n_heldout=n_held, seed=int(seed), at_edge=at_edge)


def _below(top: float, floor: float) -> list[float]:
    """The weights ``{1, 3} x 10^k`` below ``top`` down to ``floor``, descending."""
    out = []
    k = math.floor(math.log10(top)) + 1
    while True:
        for m in (3.0, 1.0):
            v = m * 10.0 ** k
            if v < top * (1 - 1e-9) and v >= floor * (1 - 1e-9):
                out.append(float(f"{v:.12g}"))
        if 10.0 ** k <= floor:
            break
        k -= 1
    return out


def choose_lambda(kspace: Any, maps: Any = None, mask_or_traj: Any = None, *,
                  method: str = "l1_wavelet", grid: Sequence[float] | None = None,
                  holdout: float = 0.05, center_fraction: float = 0.08, max_iter: int = 100,
                  seed: int = 0, wavelet: str = DEFAULT_WAVELET, levels: int | None = None,
                  cycle_spin: bool = True, im_size: Sequence[int] | None = None,
                  device: torch.device | str | None = None) -> LambdaChoice:
    """Choose the regularisation weight by k-space cross-validation (module docstring).

    Args:
        kspace, maps, mask_or_traj: as :func:`convexrecon.recon.l1_wavelet`.
        method: ``"l1_wavelet"``, ``"tv"`` or ``"sense"`` (the weight is ``mu``).
        grid: candidate weights on the scaled problem (default
            ``DEFAULT_GRIDS[method]``).
        holdout: fraction of measured samples held out, in ``(0, 0.5)``.
        center_fraction: the central disc (diameter as a fraction of the smaller
            side) never held out.
        max_iter: iterations per candidate.
        seed: seed of the held-out draw (the choice is reproducible).
        wavelet, levels, cycle_spin: for ``"l1_wavelet"``, with the defaults of
            :func:`convexrecon.recon.l1_wavelet`, so that the weight is chosen for the
            reconstruction that uses it.
        im_size, device: as :func:`convexrecon.recon.l1_wavelet`.

    Returns:
        A :class:`LambdaChoice`.
    """
    check_choice(method, METHODS, "method")
    opts: dict = {}
    multiple: Any = 1
    if method == "l1_wavelet":
        if not isinstance(cycle_spin, bool):
            raise InputError(f"cycle_spin: expected True or False, got {cycle_spin!r}")

        def multiple(size):
            return 2 ** wavelet_levels(size, wavelet, levels)

    scaled = prepare(kspace, maps, mask_or_traj, multiple=multiple, im_size=im_size, device=device)
    if method == "l1_wavelet":
        opts = {"wavelet": wavelet, "levels": wavelet_levels(scaled.data.im_size, wavelet, levels),
                "cycle_spin": seed if cycle_spin else None}
    return choose_on(scaled, method, grid=grid, holdout=holdout, center_fraction=center_fraction,
                     max_iter=max_iter, seed=seed, opts=opts)
