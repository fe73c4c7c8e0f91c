"""Sampling patterns: Cartesian masks and non-Cartesian trajectories.

Cartesian masks are boolean ``(H, W)`` tensors over the phase-encode plane (1-D masks
are returned constant along axis ``-2``, the readout). The acceleration is
``total / sampled``.

Trajectories are ``(ndim, K)`` radians per voxel in ``[-pi, pi)``
(torchkbnufft's convention); grid units convert by ``k_rad = 2*pi*k_grid/N_d``.
Row ``d`` of a trajectory pairs with image axis ``-ndim + d``.

Randomness only through ``seed``: an int, a ``numpy.random.Generator`` or a
``torch.Generator`` (one number is drawn from it to seed numpy). No global random
state is read or written.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from convexrecon._checks import as_tensor, check_choice, check_positive
from convexrecon.errors import InputError

__all__ = [
    "poisson_disc", "random_1d", "equispaced_1d", "acceleration", "radial",
    "stack_of_stars", "grid_to_radians", "radians_to_grid", "GOLDEN_ANGLE_DEG",
]

GOLDEN_ANGLE_DEG = 111.25
_TOL = 0.02  # poisson_disc aims at the acceleration within 2% (promised: 5%)


# -- argument checks ----------------------------------------------------------------
def _shape2(shape) -> tuple[int, int]:
    try:
        s = tuple(int(v) for v in shape)
    except (TypeError, ValueError) as exc:
        raise InputError(f"shape: expected (H, W) ints, got {shape!r}") from exc
    if len(s) != 2 or min(s) < 1:
        raise InputError(f"shape: expected (H, W) with positive sizes, got {shape!r}")
    return s  # type: ignore[return-value]


def _accel(accel) -> float:
    a = check_positive(accel, "accel")
    if a < 1:
        raise InputError(f"accel: expected a number >= 1, got {accel!r}")
    return a


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, torch.Generator):  # draws one number from it
        return np.random.default_rng(int(torch.randint(2**62, (1,), generator=seed)))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed: expected a non-negative int, numpy Generator or torch.Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


# -- Cartesian ----------------------------------------------------------------------
def acceleration(mask) -> float:
    """``total / sampled`` over the phase-encode plane (all entries of ``mask``).

    A batch of masks ``(*batch, H, W)`` gives the acceleration of the whole batch.
    """
    m = as_tensor(mask, "mask")
    if m.ndim < 2:
        raise InputError(f"mask: expected shape (*batch, H, W), got {tuple(m.shape)}")
    n = int((m != 0).sum())
    if n == 0:
        raise InputError("mask: expected at least one sampled entry, got none")
    return m.numel() / n


def _centre_columns(width: int, center_fraction: float) -> tuple[int, int]:
    if not 0 <= center_fraction <= 1:
        raise InputError(f"center_fraction: expected a number in [0, 1], got {center_fraction!r}")
    n_low = int(round(width * center_fraction))
    start = (width - n_low + 1) // 2
    return start, n_low


def _as_plane(cols: np.ndarray, height: int) -> torch.Tensor:
    return torch.from_numpy(np.broadcast_to(cols, (height, cols.shape[0])).copy())


def random_1d(shape: Sequence[int], accel: float, *, center_fraction: float = 0.08,
              seed=0) -> torch.Tensor:
    """Random 1-D column mask (fastMRI random-mask semantics).

    ``round(W * center_fraction)`` central columns are always sampled; every other
    column is sampled independently with the probability that makes the expected
    acceleration ``accel``. Columns are the last axis (phase encode); the mask is
    returned as ``(H, W)``, constant along axis ``-2``.
    """
    h, w = _shape2(shape)
    a = _accel(accel)
    start, n_low = _centre_columns(w, float(center_fraction))
    if n_low > w / a:
        raise InputError(
            f"accel: the {n_low} centre columns alone give acceleration {w / max(n_low, 1):.3g} "
            f"< {a:g}; lower center_fraction or accel"
        )
    rng = _rng(seed)
    prob = (w / a - n_low) / (w - n_low) if w > n_low else 0.0
    cols = rng.uniform(size=w) < prob
    cols[start:start + n_low] = True
    return _as_plane(cols, h)


def equispaced_1d(shape: Sequence[int], accel: float, *,
                  center_fraction: float = 0.08) -> torch.Tensor:
    """Equispaced 1-D column mask (fastMRI equispaced-mask semantics), deterministic.

    ``round(W * center_fraction)`` central columns are sampled, plus columns at a
    spacing chosen so that the overall acceleration is about ``accel``, starting at
    column 0 (fastMRI draws this offset at random; here it is fixed).
    """
    h, w = _shape2(shape)
    a = _accel(accel)
    start, n_low = _centre_columns(w, float(center_fraction))
    if n_low * a >= w and n_low < w:
        raise InputError(
            f"accel: the {n_low} centre columns alone give acceleration {w / max(n_low, 1):.3g} "
            f"<= {a:g}; lower center_fraction or accel"
        )
    cols = np.zeros(w, dtype=bool)
    if n_low < w:
        # spacing such that n_low + (w - n_low) / spacing ~= w / accel
        spacing = a * (w - n_low) / (w - n_low * a) if n_low else a
        cols[np.round(np.arange(0, w - 1, spacing)).astype(np.int64)] = True
    cols[start:start + n_low] = True
    return _as_plane(cols, h)


def _maximal_disc_set(radius: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Greedy maximal set of pixels, taken in decreasing priority, such that no two
    chosen pixels ``p, q`` are closer than ``(r_p + r_q) / 2``.

    Computed in parallel rounds (Luby): a candidate wins when its priority beats
    every conflicting candidate; winners and their conflicts leave the pool. This
    gives the same set as sequential dart throwing in priority order.
    """
    h, w = radius.shape
    rmax = float(radius.max())
    pad = int(math.ceil(rmax))
    rad_p = np.pad(radius, pad)
    offsets = []
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            d = math.hypot(dy, dx)
            if 0 < d < rmax:
                nb = rad_p[pad + dy:pad + dy + h, pad + dx:pad + dx + w]
                conflict = d < 0.5 * (radius + nb)
                if conflict.any():
                    offsets.append((dy, dx, conflict))
    cand = np.ones((h, w), dtype=bool)
    chosen = np.zeros((h, w), dtype=bool)
    while cand.any():
        pr = np.pad(np.where(cand, priority, -1.0), pad, constant_values=-1.0)
        best = np.full((h, w), -1.0)
        for dy, dx, conflict in offsets:
            nb = pr[pad + dy:pad + dy + h, pad + dx:pad + dx + w]
            np.maximum(best, np.where(conflict, nb, -1.0), out=best)
        win = cand & (priority > best)
        chosen |= win
        win_p = np.pad(win, pad)
        gone = win.copy()
        for dy, dx, conflict in offsets:
            gone |= win_p[pad + dy:pad + dy + h, pad + dx:pad + dx + w] & conflict
        cand &= ~gone
    return chosen


def poisson_disc(shape: Sequence[int], accel: float, *, calib: Sequence[int] = (24, 24),
                 seed=0) -> torch.Tensor:
    """Variable-density Poisson-disc mask ``(H, W)`` with a fully sampled centre.

    Samples are at least ``r(p) = s * (1 + 2 rho(p))`` apart (``rho`` the normalised
    distance from the k-space centre, 0 at the centre and 1 at the middle of an
    edge), so the density falls off about nine-fold from centre to edge. The scale
    ``s`` is searched (secant steps on ``log s``, bracketed) until the acceleration,
    counting the ``calib`` block, is within 2% of ``accel`` (InputError if it
    cannot get within 5%).
    """
    h, w = _shape2(shape)
    a = _accel(accel)
    try:
        ch, cw = (int(v) for v in calib)
    except (TypeError, ValueError) as exc:
        raise InputError(f"calib: expected (ch, cw) ints, got {calib!r}") from exc
    if not (0 <= ch <= h and 0 <= cw <= w):
        raise InputError(f"calib: expected a block within {(h, w)}, got {calib!r}")
    if ch * cw * a > h * w:
        raise InputError(
            f"accel: the {ch}x{cw} calibration block alone gives acceleration "
            f"{h * w / max(ch * cw, 1):.3g} < {a:g}"
        )
    rng = _rng(seed)
    priority = rng.random((h, w))
    ky = (np.arange(h) - h // 2) / max(h / 2, 1)
    kx = (np.arange(w) - w // 2) / max(w / 2, 1)
    rho = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    calib_mask = np.zeros((h, w), dtype=bool)
    calib_mask[h // 2 - ch // 2:h // 2 - ch // 2 + ch, w // 2 - cw // 2:w // 2 - cw // 2 + cw] = True

    def sample(s: float) -> tuple[np.ndarray, float]:
        m = _maximal_disc_set(s * (1 + 2 * rho), priority) | calib_mask
        return m, h * w / m.sum()

    lo, hi = (0.0, 1.0), (math.inf, math.inf)  # (scale, accel) brackets
    s = 0.5 * math.sqrt(a)
    best, best_err = None, math.inf
    for _ in range(40):
        m, got = sample(s)
        err = abs(got - a) / a
        if err < best_err:
            best, best_err = m, err
        if err <= _TOL:
            break
        if got < a:
            lo = max(lo, (s, got))
        else:
            hi = min(hi, (s, got))
        step = s * math.sqrt(a / got)  # accel grows about like s^2
        s = step if lo[0] < step < hi[0] else (
            0.5 * (lo[0] + hi[0]) if math.isfinite(hi[0]) else 2 * s)
    if best_err > 0.05:
        raise InputError(f"accel: could not reach {a:g} within 5% on a {h}x{w} grid")
    return torch.from_numpy(best)


# -- non-Cartesian ------------------------------------------------------------------
def _spoke_angles(n_spokes: int, mode: str, every: int) -> np.ndarray:
    if mode == "equiangular":
        return np.arange(n_spokes) * (math.pi / n_spokes)
    idx = np.arange(n_spokes) * (every if mode == "every_nth" else 1)
    return np.deg2rad(np.mod(idx * GOLDEN_ANGLE_DEG, 180.0))


def _wrap_f32(t: np.ndarray) -> torch.Tensor:
    """float64 radians -> float32 tensor in [-pi, pi) as rounded to float32."""
    out = torch.from_numpy(t.astype(np.float32))
    pi32 = torch.tensor(math.pi, dtype=torch.float32)
    return torch.where(out >= pi32, out - 2 * pi32, out)


def radial(n_spokes: int, n_readout: int, *, mode: str = "golden", every: int = 1) -> torch.Tensor:
    """2-D radial trajectory of full-diameter spokes, ``(2, n_spokes * n_readout)``.

    Spoke ``i`` has angle ``theta_i`` in ``[0, pi)`` and samples
    ``r_j = -pi + 2 pi j / n_readout`` (``j < n_readout``, so ``r`` is in
    ``[-pi, pi)`` and ``r = 0`` is sampled); sample ``i * n_readout + j`` is
    ``(r_j cos theta_i, r_j sin theta_i)`` in radians. Modes:

    * ``"golden"``: ``theta_i = (i * 111.25 deg) mod 180 deg``;
    * ``"equiangular"``: ``theta_i = i * 180 deg / n_spokes``;
    * ``"every_nth"``: every ``every``-th spoke of a golden-angle set of
      ``n_spokes * every`` spokes (undersampling in time of a fully sampled series).

    Returns float32 radians; a coordinate that rounds to ``pi`` in float32 is
    wrapped to ``-pi`` (the same point of the periodic spectrum).
    """
    ns = _count(n_spokes, "n_spokes")
    nr = _count(n_readout, "n_readout", 2)
    check_choice(mode, ("golden", "equiangular", "every_nth"), "mode")
    ev = _count(every, "every")
    if mode != "every_nth" and ev != 1:
        raise InputError(f"every: expected 1 unless mode='every_nth', got {every!r}")
    theta = _spoke_angles(ns, mode, ev)
    r = -math.pi + 2 * math.pi * np.arange(nr) / nr
    traj = np.stack([np.outer(np.cos(theta), r).ravel(), np.outer(np.sin(theta), r).ravel()])
    return _wrap_f32(traj)


def stack_of_stars(n_spokes: int, n_readout: int, nz: int, *, mode: str = "golden",
                   every: int = 1) -> torch.Tensor:
    """In-plane trajectory ``(2, n_spokes * n_readout)`` of a stack of stars.

    Every one of the ``nz`` partitions uses this same radial trajectory (Cartesian
    along z), as :class:`~convexrecon.operators.noncartesian.StackOfStars` expects;
    ``nz`` is validated only. See :func:`radial` for ``mode`` and ``every``.
    """
    _count(nz, "nz")
    return radial(n_spokes, n_readout, mode=mode, every=every)


def _im_size(im_size, ndim: int | None = None) -> tuple[int, ...]:
    try:
        size = tuple(int(s) for s in im_size)
    except (TypeError, ValueError) as exc:
        raise InputError(f"im_size: expected a sequence of ints, got {im_size!r}") from exc
    if not 1 <= len(size) <= 3 or min(size) < 1:
        raise InputError(f"im_size: expected 1 to 3 positive sizes, got {im_size!r}")
    if ndim is not None and len(size) != ndim:
        raise InputError(f"im_size: expected {ndim} sizes to match the trajectory, got {im_size!r}")
    return size


def _scale(im_size: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    return torch.tensor([2 * math.pi / n for n in im_size], dtype=dtype, device=device)


def _real(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.is_complex():
        # BART stores trajectories as complex with a zero imaginary part
        if bool((t.imag != 0).any()):
            raise InputError(f"{name}: expected real coordinates (zero imaginary part), got complex values")
        t = t.real
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


def grid_to_radians(coord, im_size: Sequence[int], *, layout: str = "ours") -> torch.Tensor:
    """Convert a trajectory in grid units (cycles per field of view) to ``(ndim, K)``
    radians: ``k_rad = 2 pi k_grid / N_d``.

    Layouts of ``coord``:

    * ``"ours"``: ``(ndim, K)``;
    * ``"sigpy"``: ``(..., ndim)``, flattened to ``K = prod(...)``;
    * ``"bart"``: ``(3, ...)`` (complex allowed), flattened; rows beyond ``ndim``
      must be zero.

    ``ndim = len(im_size)``; row/column ``d`` pairs with image axis ``-ndim + d``.
    A sample at exactly ``+N_d/2`` (``+pi``) is wrapped to ``-pi``: the same point of
    the periodic spectrum, inside the NUFFT's ``[-pi, pi)`` range.
    """
    check_choice(layout, ("ours", "sigpy", "bart"), "layout")
    c = _real(as_tensor(coord, "coord"), "coord")
    size = _im_size(im_size)
    nd = len(size)
    if layout == "ours":
        if c.ndim != 2 or c.shape[0] != nd:
            raise InputError(f"coord: expected shape ({nd}, K) for layout 'ours', got {tuple(c.shape)}")
        g = c
    elif layout == "sigpy":
        if c.ndim < 1 or c.shape[-1] != nd:
            raise InputError(f"coord: expected shape (..., {nd}) for layout 'sigpy', got {tuple(c.shape)}")
        g = c.reshape(-1, nd).T
    else:
        if c.ndim < 1 or c.shape[0] != 3 or nd > 3:
            raise InputError(f"coord: expected shape (3, ...) for layout 'bart', got {tuple(c.shape)}")
        flat = c.reshape(3, -1)
        if nd < 3 and bool((flat[nd:] != 0).any()):
            raise InputError(f"coord: expected zero rows {nd}..2 for a {nd}-D image in layout 'bart'")
        g = flat[:nd]
    rad = g * _scale(size, g.dtype, g.device)[:, None]
    pi = torch.tensor(math.pi, dtype=rad.dtype, device=rad.device)
    return torch.where(rad >= pi, rad - 2 * pi, rad).contiguous()


def radians_to_grid(traj, im_size: Sequence[int], *, layout: str = "ours") -> torch.Tensor:
    """Inverse of :func:`grid_to_radians`: ``(ndim, K)`` radians to grid units.

    Output layout: ``"ours"`` ``(ndim, K)``, ``"sigpy"`` ``(K, ndim)``, ``"bart"``
    ``(3, K)`` real (rows beyond ``ndim`` zero).
    """
    check_choice(layout, ("ours", "sigpy", "bart"), "layout")
    t = _real(as_tensor(traj, "traj"), "traj")
    if t.ndim != 2:
        raise InputError(f"traj: expected shape (ndim, K), got {tuple(t.shape)}")
    size = _im_size(im_size, t.shape[0])
    g = t / _scale(size, t.dtype, t.device)[:, None]
    if layout == "ours":
        return g.contiguous()
    if layout == "sigpy":
        return g.T.contiguous()
    out = torch.zeros(3, g.shape[1], dtype=g.dtype, device=g.device)
    out[: g.shape[0]] = g
    return out
