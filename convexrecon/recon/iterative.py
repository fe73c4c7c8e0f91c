"""One-line iterative reconstructions: L1-wavelet (FISTA), CG-SENSE and TV (PDHG).

Every builder takes k-space ``(*batch, C, H, W)`` (Cartesian) or ``(*batch, C, K)``
(non-Cartesian), optional coil maps ``(*batch, C, H, W)`` and ``mask_or_traj``:

- ``None``: Cartesian, sampled where k-space is nonzero in any coil;
- a bool mask broadcastable to ``(*batch, H, W)``: Cartesian;
- a float ``(2, K)`` trajectory in radians ``[-pi, pi)``: non-Cartesian (give
  ``maps`` or ``im_size``).

Missing maps are estimated: ESPIRiT (Cartesian) or low-resolution maps
(non-Cartesian). Inputs may be torch tensors or numpy arrays. The whole volume is one
operator with the slices as a batch dimension; each slice is scaled on its own (see
:mod:`convexrecon.recon._setup`: operator scale ``sqrt(lambda_max)``, data scale the
99th percentile of the zero-filled image), so one ``lam`` means the same on every
dataset and a batch gives the same images as its slices one at a time. The returned
complex image ``(*batch, H, W)`` is at the input's scale.

``callback(progress)`` is called after every iteration with a
:class:`~convexrecon.recon._solve.Progress` (``it``, ``max_iter``, ``x``,
``certificate``, ``objective`` computed on access, and the solver's ``state``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pywt
import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.recon._setup import prepare
from convexrecon.recon._solve import Progress, check_iters, solve

__all__ = ["l1_wavelet", "sense", "tv", "wavelet_levels"]

DEFAULT_LAM = 0.01  # on the scaled problem; see benchmarks/quality.py
DEFAULT_WAVELET = "db2"  # BART's dau2; see benchmarks/quality.py --peers
DEFAULT_TV_LAM = 0.01
DEFAULT_MU = "auto"  # mu and the iteration count by held-out k-space


def wavelet_levels(im_size: Sequence[int], wavelet: str = "db4", levels: int | None = None) -> int:
    """The number of wavelet levels used: ``levels`` or, if None, as many as pywt
    allows for the smaller side and the filter length, at most 4."""
    if levels is not None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise InputError(f"levels: expected a positive int or None, got {levels!r}")
        return levels
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise InputError(f"wavelet: expected a discrete pywt wavelet name, got {wavelet!r}")
    dec_len = pywt.Wavelet(wavelet).dec_len
    return max(1, min(4, pywt.dwt_max_level(int(min(im_size)), dec_len)))


def _lam(value: Any, name: str) -> float:
    return check_positive(value, name, strict=False)


def _lam_or_auto(lam: Any) -> float | str:
    """A validated weight, or ``"auto"`` unchanged."""
    return lam if lam == "auto" else _lam(lam, "lam")


def _resolve(lam: float | str, scaled, method: str, *, max_iter: int, seed: int,
             opts: dict | None = None) -> float:
    """``lam``, or the k-space cross-validated choice when it is ``"auto"``."""
    if lam != "auto":
        return lam
    from convexrecon.recon.lam import choose_on

    return choose_on(scaled, method, max_iter=max_iter, seed=seed, opts=opts).lam


def _finish(scaled, x: torch.Tensor) -> torch.Tensor:
    return scaled.unscale(x)


def l1_wavelet(kspace: Any, maps: Any = None, mask_or_traj: Any = None, *,
               lam: float | str = DEFAULT_LAM, max_iter: int = 100, wavelet: str = DEFAULT_WAVELET,
               levels: int | None = None, tol: float = 0.0, im_size: Sequence[int] | None = None,
               device: torch.device | str | None = None,
               callback: Callable[[Progress], Any] | None = None, seed: int = 0,
               cycle_spin: bool = True) -> torch.Tensor:
    """L1-wavelet reconstruction ``min_x 1/2 ||A_s x - y_s||^2 + lam ||W x||_1`` by FISTA.

    ``W`` is the orthogonal (periodized) wavelet transform. Images whose sides do not
    divide by ``2**levels`` are reconstructed on the smallest padded grid that does,
    with the crop folded into the encoding operator (``A = Sense @ Crop``); the
    cropped image is returned.

    Args:
        kspace, maps, mask_or_traj: see the module docstring.
        lam: L1 weight on the scaled problem, or ``"auto"`` to choose it by k-space
            cross-validation (:func:`convexrecon.recon.choose_lambda` with ``seed``).
        max_iter: FISTA iterations (gradient restart).
        wavelet: an orthogonal pywt wavelet (default ``"db2"``, Daubechies with 4
            taps, BART's ``pics`` wavelet: with cycle spinning it beat db4 on every
            problem of docs/BENCHMARKS.md).
        levels: wavelet levels (default: see :func:`wavelet_levels`).
        tol: stop early when the relative duality gap is at most ``tol`` (checked
            every 10 iterations; ``0`` runs ``max_iter`` iterations).
        im_size: image size for non-Cartesian data without maps.
        device: where to compute (default: the device of ``kspace``).
        callback: called with a :class:`Progress` after every iteration.
        seed: seed of the held-out samples when ``lam == "auto"``, and of the wavelet
            shifts.
        cycle_spin: shift the wavelet grid at random every iteration (as BART's
            ``pics`` does; +1.7 dB on 1-D Cartesian sampling, see
            docs/BENCHMARKS.md). Every slice draws the same seeded sequence, so a
            batch still equals its slices one by one. The objective, the certificate
            and ``tol`` then refer to the unshifted ``lam ||W x||_1``, which the
            shifted iteration does not minimise exactly: expect it to run to
            ``max_iter``. ``False``: the fixed transform (FISTA converges to the
            minimiser of that objective).

    Returns:
        The complex image ``(*batch, H, W)`` at the scale of the input.
    """
    max_iter = check_iters(max_iter)
    tol = check_positive(tol, "tol", strict=False)
    lam = _lam_or_auto(lam)
    scaled = prepare(kspace, maps, mask_or_traj, im_size=im_size, device=device,
                     multiple=lambda size: 2 ** wavelet_levels(size, wavelet, levels))
    nlev = wavelet_levels(scaled.data.im_size, wavelet, levels)
    if not isinstance(cycle_spin, bool):
        raise InputError(f"cycle_spin: expected True or False, got {cycle_spin!r}")
    opts = {"wavelet": wavelet, "levels": nlev, "cycle_spin": seed if cycle_spin else None}
    lam = _resolve(lam, scaled, "l1_wavelet", max_iter=max_iter, seed=seed, opts=opts)
    x = solve("l1_wavelet", scaled.op, scaled.y, lam, max_iter=max_iter, tol=tol,
              callback=callback, check_every=10 if tol > 0 else 0, **opts)
    return _finish(scaled, x)


def sense(kspace: Any, maps: Any = None, mask_or_traj: Any = None, *,
          mu: float | str = DEFAULT_MU, max_iter: int = 50, tol: float = 1e-6,
          im_size: Sequence[int] | None = None, device: torch.device | str | None = None,
          callback: Callable[[Progress], Any] | None = None, seed: int = 0) -> torch.Tensor:
    """CG-SENSE: ``min_x 1/2 ||A_s x - y_s||^2 + mu/2 ||x||^2`` by conjugate gradients.

    Args:
        kspace, maps, mask_or_traj: see the module docstring.
        mu: Tikhonov weight on the scaled problem (``0`` for plain least squares), or
            ``"auto"`` (the default): ``mu`` *and* the iteration count are chosen by
            held-out k-space (:func:`convexrecon.recon.choose_sense`), and CG runs
            that many iterations, since early stopping is CG-SENSE's main
            regulariser on noisy data.
        max_iter: CG iterations at most (with ``"auto"``: the most considered).
        tol: stop when the relative normal-equation residual is at most ``tol``;
            every slice of a batch is its own system and stops at its own
            tolerance, so a batch gives the slice-by-slice results.
        im_size, device, callback: as :func:`l1_wavelet`.
        seed: the held-out draw of single-coil data when ``mu == "auto"``.

    Returns:
        The complex image ``(*batch, H, W)`` at the scale of the input.
    """
    max_iter = check_iters(max_iter)
    tol = check_positive(tol, "tol", strict=False)
    mu = mu if mu == "auto" else _lam(mu, "mu")
    scaled = prepare(kspace, maps, mask_or_traj, im_size=im_size, device=device)
    iters = max_iter
    if mu == "auto":
        from convexrecon.recon.sense_auto import choose_sense_on

        choice = choose_sense_on(scaled, max_iter=max_iter, tol=tol, seed=seed)
        mu, iters = choice.mu, choice.iters
    x = solve("sense", scaled.op, scaled.y, mu, max_iter=iters, tol=tol, callback=callback)
    return _finish(scaled, x)


def tv(kspace: Any, maps: Any = None, mask_or_traj: Any = None, *,
       lam: float | str = DEFAULT_TV_LAM, max_iter: int = 200, tol: float = 0.0,
       im_size: Sequence[int] | None = None, device: torch.device | str | None = None,
       callback: Callable[[Progress], Any] | None = None, seed: int = 0) -> torch.Tensor:
    """Isotropic TV reconstruction ``min_x 1/2 ||A_s x - y_s||^2 + lam TV(x)`` by PDHG.

    Args:
        kspace, maps, mask_or_traj: see the module docstring.
        lam: TV weight on the scaled problem, or ``"auto"`` (k-space
            cross-validation, see :func:`convexrecon.recon.choose_lambda`).
        max_iter: PDHG iterations.
        tol: stop early when the relative primal-dual gap is at most ``tol`` (checked
            every 10 iterations).
        im_size, device, callback, seed: as :func:`l1_wavelet`.

    Returns:
        The complex image ``(*batch, H, W)`` at the scale of the input.
    """
    max_iter = check_iters(max_iter)
    tol = check_positive(tol, "tol", strict=False)
    lam = _lam_or_auto(lam)
    scaled = prepare(kspace, maps, mask_or_traj, im_size=im_size, device=device)
    lam = _resolve(lam, scaled, "tv", max_iter=max_iter, seed=seed)
    x = solve("tv", scaled.op, scaled.y, lam, max_iter=max_iter, tol=tol, callback=callback,
              check_every=10 if tol > 0 else 0)
    return _finish(scaled, x)
