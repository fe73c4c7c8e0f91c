"""Coil sensitivities and coil-domain preprocessing.

- :func:`espirit`: ESPIRiT maps from the calibration region of Cartesian k-space
  (computed by sigpy's ``EspiritCalib`` on the CPU, wrapped in our conventions).
- :func:`birdcage`: analytic, smooth, complex coil maps for simulation (2-D and 3-D).
- :func:`coil_compress`: PCA (SVD) coil compression to fewer virtual coils.
- :func:`prewhiten` / :func:`whitening_matrix`: noise decorrelation from noise samples.
- :func:`lowres_maps`: low-resolution maps from non-Cartesian data (centre of
  k-space, density-compensated adjoint NUFFT).

Layouts follow the package: k-space ``(*batch, C, H, W)``, maps ``(*batch, C, H, W)``
(or ``(*batch, C, D, H, W)`` in 3-D), non-Cartesian k-space ``(*batch, C, K)``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from convexrecon._checks import as_tensor, check_finite, check_positive, complex_dtype_of
from convexrecon.errors import InputError

__all__ = [
    "espirit",
    "birdcage",
    "coil_compress",
    "prewhiten",
    "whitening_matrix",
    "lowres_maps",
    "rss",
]


def _complex_tensor(value: Any, name: str, *, min_ndim: int) -> torch.Tensor:
    """Tensor of a complex (or real, promoted) array, checked for rank and finiteness."""
    x = as_tensor(value, name)
    if not (x.is_complex() or x.is_floating_point()):
        raise InputError(f"{name}: expected a complex or floating array, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise InputError(
            f"{name}: expected at least {min_ndim} dimensions, got shape {tuple(x.shape)}"
        )
    if not x.is_complex():
        x = x.to(complex_dtype_of(x.dtype))
    return check_finite(x, name)


def rss(x: torch.Tensor, *, dim: int = -3) -> torch.Tensor:
    """Root-sum-of-squares over the coil dimension ``dim``."""
    return torch.sqrt(torch.sum(torch.abs(x) ** 2, dim=dim))


# -- ESPIRiT ------------------------------------------------------------------------
def espirit(kspace: Any, *, calib_width: int = 24, thresh: float = 0.02,
            kernel_width: int = 6, crop: float = 0.95, max_iter: int = 100,
            device: torch.device | str | None = None) -> torch.Tensor:
    """ESPIRiT coil sensitivity maps from Cartesian multi-coil k-space.

    The computation runs on the CPU through ``sigpy.mri.app.EspiritCalib`` (one call
    per batch item). The maps are unit-norm over coils (``sum_c |S_c|^2 = 1``) where
    the image has signal and zero where the ESPIRiT eigenvalue falls below ``crop``.

    Args:
        kspace: ``(*batch, C, H, W)`` complex, torch tensor or numpy array, centred
            (DC at ``(H // 2, W // 2)``); undersampled data is fine as long as the
            central ``calib_width`` square is fully sampled.
        calib_width: side of the calibration square (<= min(H, W)).
        thresh: singular-value threshold of the calibration matrix (relative).
        kernel_width: side of the k-space kernel (< calib_width).
        crop: eigenvalue threshold in (0, 1) below which maps are set to zero.
        max_iter: power iterations of the eigen-decomposition per pixel.
        device: device of the returned maps (default: the device of ``kspace``).

    Returns:
        ``complex64`` maps of the shape of ``kspace``.
    """
    ksp = _complex_tensor(kspace, "kspace", min_ndim=3)
    if device is None:
        device = ksp.device
    c, h, w = ksp.shape[-3:]
    calib_width = int(calib_width)
    kernel_width = int(kernel_width)
    if not 1 <= calib_width <= min(h, w):
        raise InputError(
            f"calib_width: expected an integer in [1, min(H, W) = {min(h, w)}], got {calib_width}"
        )
    if not 1 <= kernel_width < calib_width:
        raise InputError(
            f"kernel_width: expected an integer in [1, calib_width = {calib_width}), got {kernel_width}"
        )
    check_positive(thresh, "thresh")
    crop = float(crop)
    if not 0.0 <= crop < 1.0:
        raise InputError(f"crop: expected a number in [0, 1), got {crop}")
    if int(max_iter) < 1:
        raise InputError(f"max_iter: expected an integer >= 1, got {max_iter}")

    from sigpy.mri.app import EspiritCalib  # imported lazily: sigpy is slow to import

    batch = ksp.shape[:-3]
    flat = ksp.detach().to("cpu", torch.complex64).reshape(-1, c, h, w).numpy()
    out = np.empty(flat.shape, dtype=np.complex64)
    for i in range(flat.shape[0]):
        maps = EspiritCalib(flat[i], calib_width=calib_width, thresh=float(thresh),
                            kernel_width=kernel_width, crop=crop, max_iter=int(max_iter),
                            show_pbar=False).run()
        out[i] = np.asarray(maps, dtype=np.complex64)
    return torch.from_numpy(out).reshape(*batch, c, h, w).to(device)


# -- birdcage -------------------------------------------------------------------------
def birdcage(n_coils: int, shape: Sequence[int], *, radius: float = 1.5,
             dtype: torch.dtype = torch.complex64,
             device: torch.device | str | None = None) -> torch.Tensor:
    """Analytic smooth coil maps of ``n_coils`` loops on a ring around the object.

    Coil ``c`` sits at angle ``2 pi c / n_coils`` on a circle of ``radius`` (in units
    of the half field of view) in the in-plane ``(H, W)`` plane, centred in depth for
    3-D shapes. Its raw sensitivity is ``exp(i (phi_c + angle(r - p_c))) / |r - p_c|``
    (a line-current-like magnitude fall-off and a phase that winds around the coil),
    with ``r`` the voxel position in normalised coordinates ``[-1, 1)``.

    Normalisation: the maps are divided by their root-sum-of-squares, so that
    ``sum_c |S_c|^2 = 1`` at every voxel (exactly, up to rounding). A SENSE
    operator built from them is then an isometry when fully sampled.

    Args:
        n_coils: number of coils (>= 1).
        shape: ``(H, W)`` or ``(D, H, W)``.
        radius: ring radius relative to the half field of view (> 1 keeps the coils
            outside the image).
        dtype: complex dtype of the result.
        device: device of the result.

    Returns:
        ``(n_coils, *shape)`` complex tensor.
    """
    n_coils = int(n_coils)
    if n_coils < 1:
        raise InputError(f"n_coils: expected an integer >= 1, got {n_coils}")
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise InputError(f"shape: expected (H, W) or (D, H, W) with positive sizes, got {shape}")
    radius = check_positive(radius, "radius")
    if not dtype.is_complex:
        raise InputError(f"dtype: expected a complex dtype, got {dtype}")

    axes = [(torch.arange(s, dtype=torch.float64) - s // 2) / max(s / 2.0, 1.0) for s in shape]
    grids = torch.meshgrid(*axes, indexing="ij")
    z = grids[0] if len(shape) == 3 else torch.zeros((), dtype=torch.float64)
    y, x = grids[-2], grids[-1]
    maps = []
    for c in range(n_coils):
        phi = 2.0 * math.pi * c / n_coils
        py, px = radius * math.sin(phi), radius * math.cos(phi)
        dy, dx = y - py, x - px
        dist = torch.sqrt(dx ** 2 + dy ** 2 + z ** 2)
        phase = phi + torch.atan2(dy, dx)
        maps.append(torch.polar(1.0 / dist, phase))
    out = torch.stack(maps)
    out = out / rss(out, dim=0)
    return out.to(device=device, dtype=dtype)


# -- coil compression and whitening ----------------------------------------------------
def coil_compress(kspace: Any, n_virtual: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA coil compression to ``n_virtual`` virtual coils.

    One compression matrix is computed from all samples of all batch items (the
    coil covariance ``X X^H`` of the data matrix ``X`` of shape ``(C, samples)``; zero,
    unsampled entries do not change it). The virtual coils are the leading principal
    components, ordered by decreasing energy.

    Args:
        kspace: ``(*batch, C, *spatial)`` with at least one spatial dimension after the
            coil axis, given as ``(*batch, C, H, W)``; use ``(..., C, K)`` for
            non-Cartesian data by passing it with a dummy spatial axis.
        n_virtual: number of virtual coils, ``1 <= n_virtual <= C``.

    Returns:
        ``(kspace_c, matrix)``: the compressed k-space ``(*batch, n_virtual, H, W)`` and
        the ``(n_virtual, C)`` matrix with orthonormal rows, ``kspace_c = matrix @ kspace``
        over the coil axis. With ``n_virtual == C`` the energy is preserved exactly.
        Each row's phase is fixed (the largest entry of its conjugate is real
        positive), so the result does not depend on the eigen-solver's phase choice.
    """
    ksp = _complex_tensor(kspace, "kspace", min_ndim=3)
    c = ksp.shape[-3]
    n_virtual = int(n_virtual)
    if not 1 <= n_virtual <= c:
        raise InputError(f"n_virtual: expected an integer in [1, C = {c}], got {n_virtual}")
    x = ksp.movedim(-3, 0).reshape(c, -1).to(torch.complex128)
    x = x / x.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    cov = x @ x.conj().T
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)[:n_virtual]
    vecs = evecs[:, order]
    # fix the arbitrary phase of each eigenvector: its largest entry is real positive
    peak = vecs.gather(0, vecs.abs().argmax(dim=0, keepdim=True))
    vecs = vecs * (peak.conj() / peak.abs().clamp_min(torch.finfo(peak.real.dtype).tiny))
    matrix = vecs.conj().T.contiguous().to(ksp.dtype)
    out = torch.einsum("vc,...chw->...vhw", matrix, ksp)
    return out, matrix


def whitening_matrix(noise: Any) -> torch.Tensor:
    """The ``(C, C)`` whitening matrix ``L^{-1}`` with ``L L^H`` the noise covariance.

    Args:
        noise: ``(C, N)`` complex noise samples (N >= C), e.g. a noise pre-scan.
    """
    nz = _complex_tensor(noise, "noise", min_ndim=2)
    if nz.ndim != 2:
        raise InputError(f"noise: expected shape (C, N), got {tuple(nz.shape)}")
    c, n = nz.shape
    if n < c:
        raise InputError(f"noise: expected at least C = {c} samples per coil, got {n}")
    nz = nz.to(torch.complex128)
    nz = nz - nz.mean(dim=1, keepdim=True)
    cov = nz @ nz.conj().T / max(n - 1, 1)
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise InputError("noise: expected a positive definite noise covariance, "
                         "got a singular one (dead or duplicated coil?)")
    eye = torch.eye(c, dtype=chol.dtype)
    return torch.linalg.solve_triangular(chol, eye, upper=False)


def prewhiten(kspace: Any, noise: Any) -> torch.Tensor:
    """Decorrelate coils: ``kspace_w = L^{-1} kspace`` over the coil axis, where
    ``L`` is the Cholesky factor of the noise covariance estimated from ``noise``.

    After whitening the noise is uncorrelated with unit variance in every coil.

    Args:
        kspace: ``(*batch, C, ...)`` with the coil axis third from the end
            (``(*batch, C, H, W)``) or ``(*batch, C, K)`` given as such with ``K`` last.
        noise: ``(C, N)`` noise samples.

    Returns:
        whitened k-space, same shape and dtype as ``kspace``.
    """
    ksp = _complex_tensor(kspace, "kspace", min_ndim=2)
    w = whitening_matrix(noise)
    c = w.shape[0]
    axis = -3 if ksp.ndim >= 3 and ksp.shape[-3] == c else -2
    if ksp.shape[axis] != c:
        raise InputError(
            f"kspace: expected {c} coils (from noise) on axis -3 or -2, got shape {tuple(ksp.shape)}"
        )
    moved = ksp.movedim(axis, -1)
    out = moved @ w.to(ksp.dtype).T
    return out.movedim(-1, axis)


# -- non-Cartesian low-resolution maps ---------------------------------------------------
def lowres_maps(kspace: Any, traj: Any, im_size: Sequence[int], *, calib_width: int = 24,
                dcf: Any = None, dcf_iters: int = 5, thresh: float = 0.05, eps: float = 1e-6,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Low-resolution coil maps from non-Cartesian multi-coil k-space.

    The samples inside the central disc of diameter ``calib_width`` (grid units) are
    kept with a Hann taper, density compensated (Pipe-Menon weights unless ``dcf`` is
    given) and gridded by the adjoint NUFFT. Each coil image is divided by the
    root-sum-of-squares over coils, so ``sum_c |S_c|^2 = 1`` where the low-resolution
    RSS exceeds ``thresh`` times its maximum; the maps are zero elsewhere.

    Args:
        kspace: ``(*batch, C, K)`` complex samples.
        traj: ``(ndim, K)`` trajectory in radians ``[-pi, pi)``.
        im_size: image size ``(H, W)`` (or 3-D).
        calib_width: diameter of the central k-space disc in grid units.
        dcf: optional ``(K,)`` density-compensation weights.
        dcf_iters: Pipe-Menon iterations when ``dcf`` is None (a few suffice for a
            low-resolution estimate; each costs about two gridding passes).
        thresh: relative RSS threshold of the support mask.
        eps: absolute RSS floor below which a pixel counts as having no signal.
        device: device of the result (default: that of ``kspace``).

    Returns:
        complex maps ``(*batch, C, *im_size)`` of the dtype of ``kspace`` (complex).
    """
    from convexrecon.operators.nufft import NUFFT, pipe_menon_dcf

    ksp = _complex_tensor(kspace, "kspace", min_ndim=2)
    tr = as_tensor(traj, "traj")
    im_size = tuple(int(s) for s in im_size)
    if tr.ndim != 2 or tr.shape[0] != len(im_size) or tr.shape[1] != ksp.shape[-1]:
        raise InputError(
            f"traj: expected shape ({len(im_size)}, K={ksp.shape[-1]}), got {tuple(tr.shape)}"
        )
    if not tr.is_floating_point():
        raise InputError(f"traj: expected a floating array in radians, got dtype {tr.dtype}")
    check_positive(calib_width, "calib_width")
    device = ksp.device if device is None else device
    tr = tr.to(ksp.device, torch.float32 if ksp.dtype == torch.complex64 else torch.float64)
    if dcf is None:
        w = pipe_menon_dcf(tr, im_size, iters=int(dcf_iters))
    else:
        w = as_tensor(dcf, "dcf")
        if w.shape != (ksp.shape[-1],):
            raise InputError(f"dcf: expected shape ({ksp.shape[-1]},), got {tuple(w.shape)}")
    w = w.to(ksp.device, tr.dtype)
    # radius in grid units of every sample, per axis scaled by N_d / (2 pi)
    scale = torch.tensor(im_size, dtype=tr.dtype, device=tr.device)[:, None] / (2.0 * math.pi)
    kr = torch.linalg.vector_norm(tr * scale, dim=0)
    half = float(calib_width) / 2.0
    taper = torch.where(kr < half, 0.5 + 0.5 * torch.cos(math.pi * kr / half), torch.zeros_like(kr))
    op = NUFFT(tr, im_size, dtype=ksp.dtype, toeplitz=False)
    coil = op.adjoint(ksp * (w * taper).to(ksp.dtype))
    cdim = -1 - len(im_size)
    r = rss(coil, dim=cdim)
    flat_max = r.reshape(*r.shape[: r.ndim - len(im_size)], -1).amax(dim=-1)
    floor = (thresh * flat_max).reshape(*flat_max.shape, *([1] * len(im_size)))
    support = (r > floor) & (r > eps)
    safe = torch.where(support, r, torch.ones_like(r))
    maps = torch.where(support.unsqueeze(cdim), coil / safe.unsqueeze(cdim), torch.zeros_like(coil))
    return maps.to(device)
