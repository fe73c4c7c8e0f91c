"""CG-SENSE without hand-tuned settings: ``mu`` and the iteration count by held-out k-space.

CG-SENSE is regularised by its Tikhonov weight ``mu`` *and* by stopping early: on
noisy undersampled data the first few CG iterations remove aliasing, the later ones
mostly amplify noise along directions the coils encode weakly (the g-factor). The
rule (:func:`choose_sense`):

1. Scale the problem once on all data (as every reconstruction does, see
   :mod:`convexrecon.recon._setup`), so a candidate ``mu`` is a weight of the scaled
   problem that the final reconstruction solves.
2. Hold out k-space and predict it. With several coils, one coil at a time (up to
   ``folds`` coils, evenly spaced): reconstruct from the other coils' samples and
   predict the held-out coil's measured samples. Noise amplified along weakly
   encoded directions shows up in that prediction, because the held-out coil sees
   those directions with its own sensitivity. (Holding out sampling locations
   instead, as :func:`convexrecon.recon.choose_lambda` does, cannot see it: every
   coil's prediction at a location is blind to the same weakly encoded directions,
   and that rule picks too many iterations here.) With one coil, a random
   ``holdout`` fraction of the sampled locations is held out instead, as
   :func:`convexrecon.recon.choose_lambda` does.
3. For every ``mu`` of ``grid``, run CG on each training problem and record the
   held-out prediction error ``sum ||P A_s x_k - P y_s||^2 / ||P y_s||^2`` after every
   iteration ``k`` (summed over the folds, slices and coils); a run stops early once
   its error exceeds its best so far by the fraction ``rise`` (past the minimum: the
   noise amplification only grows from there) or CG reaches ``tol``, and then counts
   with its last error.
4. Pick the ``(mu, k)`` with the smallest error (the fewer iterations, then the
   larger ``mu``, on ties). One pair serves the whole volume. When a training run of
   that ``mu`` had already converged (reached ``tol``, or ``max_iter``) by iteration
   ``k``, the count is ``max_iter``: the data asks for the converged solution, and
   the reconstruction runs to its own tolerance.

The reconstruction then runs CG on all data with that ``mu`` for ``k`` iterations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.recon._common import Data
from convexrecon.recon._setup import Scaled, encoding
from convexrecon.recon._solve import check_iters, solve

__all__ = ["SenseChoice", "choose_sense", "choose_sense_on", "SENSE_GRID"]

SENSE_GRID: tuple[float, ...] = (0.0, 1e-2, 1e-1)
"""Default candidate ``mu`` (scaled problem) of the automatic CG-SENSE."""


@dataclass
class SenseChoice:
    """The chosen CG-SENSE settings and the evidence.

    Attributes:
        mu: the chosen Tikhonov weight (an element of ``grid``).
        iters: the chosen number of CG iterations (``max_iter`` when the error
            still fell at the end of its run: run to the tolerance).
        grid: the candidate weights, ascending.
        curves: per candidate, the held-out error after each iteration run.
        split: ``"coils"`` (one coil held out per fold) or ``"samples"``.
        folds: the number of training problems per candidate.
    """

    mu: float
    iters: int
    grid: tuple[float, ...]
    curves: tuple[tuple[float, ...], ...]
    split: str
    folds: int


Fold = tuple[Any, torch.Tensor, Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]


def _coil_folds(scaled: Scaled, folds: int) -> list[Fold]:
    """Leave-one-coil-out training problems for ``folds`` evenly spaced coils."""
    data = scaled.data
    n_coils = data.ncoils
    chosen = sorted({int(round(i * n_coils / folds)) % n_coils for i in range(folds)})
    axis = -3 if data.cartesian else -2
    out: list[Fold] = []
    for c in chosen:
        keep = [i for i in range(n_coils) if i != c]
        parts = []
        for coils in (keep, [c]):
            y = scaled.y.index_select(axis, torch.tensor(coils, device=scaled.y.device))
            sub = Data(kspace=y, mask=data.mask, traj=data.traj, im_size=data.im_size,
                       batch=data.batch)
            maps = scaled.maps.index_select(-3, torch.tensor(coils, device=scaled.maps.device))
            parts.append((encoding(sub, maps, scaled.grid, scale=scaled.op_scale), y))
        (op_train, y_train), (op_held, y_held) = parts

        def predict(x, op_held=op_held, y_held=y_held):
            return op_held(x), y_held

        out.append((op_train, y_train, predict))
    return out


def _sample_fold(scaled: Scaled, holdout: float, center_fraction: float, seed: int) -> Fold:
    from convexrecon.recon.lam import holdout_split

    train, y_train, predict, _ = holdout_split(scaled, holdout, center_fraction, seed)
    sub = scaled.with_sampling(train, y_train)
    return sub.op, sub.y, predict


def choose_sense_on(scaled: Scaled, *, grid: Sequence[float] | None = None, max_iter: int = 50,
                    folds: int = 4, rise: float = 0.1, tol: float = 1e-6,
                    holdout: float = 0.05, center_fraction: float = 0.08,
                    seed: int = 0) -> SenseChoice:
    """Choose CG-SENSE's ``mu`` and iteration count on a prepared problem (module docstring).

    Args:
        scaled: the scaled problem (:func:`convexrecon.recon._setup.prepare`).
        grid: candidate ``mu`` >= 0 (default :data:`SENSE_GRID`).
        max_iter: the most iterations considered.
        folds: coils held out in turn (multi-coil data), at most the coil count.
        rise: stop a candidate's run once its held-out error exceeds its best so
            far by this fraction.
        tol: CG's own tolerance (as :func:`convexrecon.recon.sense`).
        holdout, center_fraction, seed: the sample split of single-coil data
            (see :func:`convexrecon.recon.choose_lambda`).
    """
    cands = SENSE_GRID if grid is None else tuple(grid)
    if not cands:
        raise InputError("grid: expected at least one candidate mu, got none")
    cands = tuple(sorted(check_positive(g, "grid", strict=False) for g in cands))
    max_iter = check_iters(max_iter)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise InputError(f"folds: expected an int >= 1, got {folds!r}")
    rise = check_positive(rise, "rise")
    tol = check_positive(tol, "tol", strict=False)
    if scaled.data.ncoils > 1:
        split, problems = "coils", _coil_folds(scaled, min(folds, scaled.data.ncoils))
    else:
        split, problems = "samples", [_sample_fold(scaled, holdout, center_fraction, seed)]
    curves, settled = [], []
    for mu in cands:
        runs = [_held_out_curve(op, y, predict, mu, max_iter=max_iter, rise=rise, tol=tol)
                for op, y, predict in problems]
        # a run that stopped keeps its last error: at CG's tolerance its iterate no
        # longer changes; past its minimum (the rise) its error only grows, so the
        # last one is a lower bound that cannot make a later iteration win
        length = max_iter if not all(rose for _, rose in runs) else max(len(e) for e, _ in runs)
        total = [sum(e[min(k, len(e) - 1)] for e, _ in runs) for k in range(length)]
        curves.append(tuple(total))
        # from this iteration on, a training run had converged (or all ran out)
        settled.append(min([len(e) for e, rose in runs if not rose] or [max_iter + 1]))
    best = min(((e, k, -mu) for mu, curve in zip(cands, curves) for k, e in enumerate(curve, 1)))
    mu = -best[2] + 0.0
    i = cands.index(mu)
    # best at or after a training run's convergence: the data asks for a converged
    # solution, and the full problem (more coils, better conditioned but not the same
    # iteration count) runs to its own tolerance
    iters = max_iter if best[1] >= settled[i] else best[1]
    return SenseChoice(mu=mu, iters=iters, grid=cands, curves=tuple(curves), split=split,
                       folds=len(problems))


class _Stop(Exception):
    """Raised from the callback to end a candidate's run early."""


def _held_out_curve(op, y, predict, mu: float, *, max_iter: int, rise: float,
                    tol: float) -> tuple[list[float], bool]:
    """The held-out error after each CG iteration, and whether the run stopped on a
    rise (rather than at ``tol`` or ``max_iter``)."""
    errs: list[float] = []
    best = [float("inf")]

    def record(progress) -> None:
        pred, target = predict(progress.x)
        den = float(torch.sum(target.abs() ** 2))
        e = float(torch.sum((pred - target).abs() ** 2)) / (den if den > 0 else 1.0)
        errs.append(e)
        best[0] = min(best[0], e)
        if e > (1.0 + rise) * best[0]:
            raise _Stop

    rose = False
    with torch.no_grad():
        try:
            solve("sense", op, y, mu, max_iter=max_iter, tol=tol, callback=record)
        except _Stop:
            rose = True
    return (errs or [1.0]), rose  # no iteration run: x = 0 predicts nothing (error 1)


def choose_sense(kspace: Any, maps: Any = None, mask_or_traj: Any = None, *,
                 grid: Sequence[float] | None = None, max_iter: int = 50, folds: int = 4,
                 rise: float = 0.1, tol: float = 1e-6, holdout: float = 0.05,
                 center_fraction: float = 0.08,
                 seed: int = 0, im_size: Sequence[int] | None = None,
                 device: torch.device | str | None = None) -> SenseChoice:
    """Choose CG-SENSE's ``mu`` and iteration count by held-out k-space.

    Arguments as :func:`convexrecon.recon.sense` and :func:`choose_sense_on`.
    Returns a :class:`SenseChoice`.
    """
    from convexrecon.recon._setup import prepare

    scaled = prepare(kspace, maps, mask_or_traj, im_size=im_size, device=device)
    return choose_sense_on(scaled, grid=grid, max_iter=max_iter, folds=folds, rise=rise, tol=tol,
                           holdout=holdout, center_fraction=center_fraction, seed=seed)
