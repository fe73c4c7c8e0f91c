"""Stabilisers of a DEQ map: spectral normalisation, Jacobian regularisation (the
Hutchinson Frobenius term, and a hinge on the measured ``rho``), the contraction
estimate ``rho`` and divergence checks.

Nothing here *guarantees* a contraction. Torch's spectral normalisation divides
each convolution's kernel by the largest singular value of the kernel reshaped to
``(out, in * k * k)``, which is not the operator norm of the convolution, and a
residual denoiser ``x + N(x)`` can have a Lipschitz constant up to ``1 + Lip(N)``.
So ``rho`` is measured (:func:`estimate_rho`) and reported, never assumed.

Complex iterates are handled on their real view: a VJP of a complex map with a
complex cotangent ``v`` is ``J^T v`` of the real Jacobian ``J`` on
``(Re z, Im z)``, so the Hutchinson probes draw real and imaginary parts
independently with unit variance each (``torch.randn`` on a complex dtype would give
each part variance 1/2, and the estimate half of ``||J||_F^2``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from convexrecon.errors import InputError

__all__ = ["apply_spectral_norm", "real_probe", "hutchinson_jac_fro2", "estimate_rho", "power_rho",
           "rho_excess", "jacobian_vjp"]


def apply_spectral_norm(module: nn.Module, *, n_power_iterations: int = 1) -> nn.Module:
    """Spectrally normalise every convolution and linear layer of ``module`` (in place).

    Uses ``torch.nn.utils.parametrizations.spectral_norm`` on each layer's weight. See
    the module note: this bounds the reshaped kernels, not the map's contraction.
    """
    from torch.nn.utils.parametrizations import spectral_norm

    count = 0
    for sub in list(module.modules()):
        if isinstance(sub, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            spectral_norm(sub, n_power_iterations=n_power_iterations)
            count += 1
    if not count:
        raise InputError(f"module: expected convolution or linear layers to normalise, "
                         f"found none in {type(module).__name__}")
    return module


def real_probe(like: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Gaussian probe shaped like ``like`` with ``E[v v^T] = I`` on the real view."""
    if like.is_complex():
        real = torch.randn(like.shape + (2,), dtype=like.real.dtype, device=like.device,
                           generator=generator)
        return torch.view_as_complex(real)
    return torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)


def _sq_norm(v: torch.Tensor, batch_dims: int) -> torch.Tensor:
    v = torch.view_as_real(v) if v.is_complex() else v
    return v.pow(2).sum(dim=tuple(range(batch_dims, v.ndim)))


def jacobian_vjp(fz: torch.Tensor, z: torch.Tensor, *, create_graph: bool = False) \
        -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> J_f(z)^T v`` through the tape from ``z`` (requires grad) to ``fz``."""
    if not z.requires_grad:
        raise InputError("z: expected a tensor that requires grad (the tape point of the map)")

    def vjp(v: torch.Tensor) -> torch.Tensor:
        (out,) = torch.autograd.grad(fz, z, v, retain_graph=True, create_graph=create_graph,
                                     allow_unused=True)
        return torch.zeros_like(z) if out is None else out

    return vjp


def hutchinson_jac_fro2(fz: torch.Tensor, z: torch.Tensor, *, probes: int = 1, batch_dims: int = 1,
                        generator: torch.Generator | None = None,
                        create_graph: bool = True) -> torch.Tensor:
    """Hutchinson estimate of ``||J_f(z)||_F^2`` per sample: ``mean_p ||J^T v_p||^2``.

    ``J`` is the real Jacobian of ``f`` (``fz = f(z)``, with ``z`` on the tape). With
    ``create_graph=True`` the estimate is differentiable in the map's parameters
    (double backward), so it can be added to a training loss.

    Returns:
        ``(*batch,)`` estimates (one per sample, averaged over ``probes``).
    """
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise InputError(f"probes: expected an integer >= 1, got {probes!r}")
    vjp = jacobian_vjp(fz, z, create_graph=create_graph)
    total = None
    for _ in range(probes):
        est = _sq_norm(vjp(real_probe(fz, generator=generator)), batch_dims)
        total = est if total is None else total + est
    return total / probes


def power_rho(vjp: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor, *,
              iters: int = 5, batch_dims: int = 1,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``rho`` by ``iters`` power iterations of ``J^T`` (no tape), and the unit
    vector ``v`` whose VJP gave it (``rho = ||J^T v||``), for :func:`rho_excess`."""
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise InputError(f"iters: expected an integer >= 1, got {iters!r}")
    shape = tuple(like.shape[:batch_dims]) + (1,) * (like.ndim - batch_dims)
    with torch.no_grad():
        v = real_probe(like, generator=generator)
        v = v / torch.sqrt(_sq_norm(v, batch_dims)).reshape(shape)
        rho = torch.zeros(like.shape[:batch_dims], dtype=like.real.dtype if like.is_complex()
                          else like.dtype, device=like.device)
        for k in range(iters):
            w = vjp(v).detach()
            rho = torch.sqrt(_sq_norm(w, batch_dims)).reshape(rho.shape)
            if k < iters - 1:
                safe = torch.where(rho > 0, rho, torch.ones_like(rho))
                v = w / safe.reshape(shape)
    return rho, v


def estimate_rho(vjp: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor, *,
                 iters: int = 5, batch_dims: int = 1,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample estimate of the contraction ``rho`` by power iterations of ``J^T``.

    ``iters`` VJPs from a random start; the estimate is ``||J^T v|| / ||v||`` of
    the last one, which tends to the spectral radius of ``J`` (from below, for
    few iterations). Runs without the tape.
    """
    return power_rho(vjp, like, iters=iters, batch_dims=batch_dims, generator=generator)[0]


def rho_excess(fz: torch.Tensor, z: torch.Tensor, v: torch.Tensor, *, target: float,
               batch_dims: int = 1) -> torch.Tensor:
    """``relu(||J_f(z)^T v|| - target)^2`` per sample, differentiable in the map's parameters.

    ``v`` is :func:`power_rho`'s unit vector, so ``||J^T v||`` is the ``rho`` estimate;
    with ``v`` held fixed its gradient is that of the top of ``J``'s spectrum along
    ``v``. Added to a training loss it pushes ``rho`` back under ``target`` only where
    it has crossed it (the spectral counterpart of :func:`hutchinson_jac_fro2`, which
    penalises the mean squared singular value and so every direction, the ones
    denoising needs included). One VJP with ``create_graph`` (double backward).
    """
    if not 0 < float(target) < 1:
        raise InputError(f"target: expected a contraction bound in (0, 1), got {target!r}")
    vjp = jacobian_vjp(fz, z, create_graph=True)
    sq = _sq_norm(vjp(v.detach()), batch_dims)
    rho = torch.sqrt(sq.clamp_min(torch.finfo(sq.dtype).tiny))
    return torch.relu(rho - float(target)).pow(2)
