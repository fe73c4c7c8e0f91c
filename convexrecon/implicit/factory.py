"""Build a DEQ reconstructor from plain (JSON-able) options: the ``model_spec``
factory that :func:`convexrecon.training.load_model` calls to rebuild a checkpoint."""

from __future__ import annotations

from typing import Any

from convexrecon.errors import InputError
from convexrecon.implicit.deq import DEQ
from convexrecon.implicit.maps import CGDCMap, ProxGradMap
from convexrecon.implicit.stabilize import apply_spectral_norm
from convexrecon.nets.denoisers import build_denoiser

__all__ = ["build_deq", "DC_KINDS"]

DC_KINDS = ("prox-grad", "cg")


def build_deq(*, denoiser: str = "cnn", denoiser_options: dict[str, Any] | None = None,
              dc: str = "prox-grad", eta: float = 1.0, mu: float = 0.05, cg_iter: int = 20,
              cg_tol: float = 1e-6, spectral_norm: bool = False, **deq_options: Any) -> DEQ:
    """A :class:`DEQ` with a ``denoiser`` (``"cnn"`` / ``"unet"``) inside a ``dc`` map.

    Args:
        dc: ``"prox-grad"`` (:class:`ProxGradMap`, step ``eta``) or ``"cg"``
            (:class:`CGDCMap`, weight ``mu``, ``cg_iter`` / ``cg_tol``).
        spectral_norm: spectrally normalise the denoiser's convolutions.
        deq_options: keywords of :class:`DEQ` (solver, backward, max_iter, tol, ...).
    """
    net = build_denoiser(denoiser, **dict(denoiser_options or {}))
    if spectral_norm:
        apply_spectral_norm(net)
    if dc == "prox-grad":
        fmap = ProxGradMap(net, eta=eta)
    elif dc == "cg":
        fmap = CGDCMap(net, mu=mu, cg_iter=cg_iter, cg_tol=cg_tol)
    else:
        raise InputError(f"dc: expected one of {', '.join(map(repr, DC_KINDS))}, got {dc!r}")
    try:
        return DEQ(fmap, **deq_options)
    except TypeError as exc:
        raise InputError(f"DEQ options: {exc}") from None
