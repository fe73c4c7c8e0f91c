"""Evaluation sets of ``benchmarks/layerwise.py``: every method on whole sets, slice by
slice, with paired 95% intervals; and the held-out k-space error on the real scan.

Sets (each with the mask of the trained model): the test slab at 5% and 1% noise
(the models are trained at 5%), and the out-of-distribution image sets
(``dipy-b0``, 10 slices; ``dipy-t1-coronal``, 1 slice) at 5% noise. Methods:
zero-filled, L1-wavelet FISTA (lambda chosen on the validation slab at the set's
noise level and mask), end-to-end at its plateau and at equal time, and the
layer-wise net after each layer.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Callable

import torch

SETS_FULL = (("test", 0.05), ("test", 0.01), ("dipy-b0", 0.05), ("dipy-t1-coronal", 0.05))


def _recons(models: dict[str, Any], net: Any) -> dict[str, Callable[[Any], torch.Tensor]]:
    from convexrecon.nets.layerwise_eval import evaluate_model

    out: dict[str, Callable[[Any], torch.Tensor]] = {"zero-filled": lambda d: d.x0}
    for name, model in models.items():
        if model is not None:
            out[name] = (lambda m: lambda d: evaluate_model(m, d))(model)
    for k in range(1, net.depth + 1):
        out[f"layer-wise L{k}"] = (lambda m: lambda d: evaluate_model(m, d))(net.truncated(k))
    return out


def evaluate_sets(net: Any, models: dict[str, Any], spec: Any, sets, *, n_val: int,
                  fista_iters: int = 100, log=print) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per set: per-method means (PSNR, SSIM), per-slice PSNR, and paired intervals of
    every method against FISTA and against the final layer-wise net; and the images
    of the first set (``{"target": ..., method: ...}``, for the figures)."""
    from convexrecon.nets.layerwise_data import load_split
    from convexrecon.nets.layerwise_eval import (compare_methods, l1_wavelet_reference,
                                                 l1_wavelet_tuned, slice_metrics)

    lams: dict[float, float] = {}
    recons = _recons(models, net)
    final = f"layer-wise L{net.depth}"
    res: dict[str, Any] = {}
    first: dict[str, Any] = {}
    for split, noise in sets:
        s = dataclasses.replace(spec, noise=noise)
        data = load_split(s, split)
        if noise not in lams:  # lambda on the validation slab at this noise and mask
            val = load_split(s, "val", n=n_val)
            lams[noise], x_f = l1_wavelet_tuned(val, data, max_iter=fista_iters)
        else:
            x_f = l1_wavelet_reference(data, lams[noise], max_iter=fista_iters)
        psnrs: dict[str, list[float]] = {}
        ssims: dict[str, float] = {}
        images = {"L1-wavelet FISTA": x_f}
        for name, fn in recons.items():
            images[name] = fn(data)
        for name, x in images.items():
            m = slice_metrics(x, data.target)
            psnrs[name], ssims[name] = m["psnr"], statistics.mean(m["ssim"])
        if not first:
            first = dict(images, target=data.target)
        key = f"{split}@{noise:g}"
        res[key] = dict(n=len(data), lam=lams[noise], ssim=ssims, psnr_slices=psnrs,
                        vs_fista=compare_methods(psnrs, reference="L1-wavelet FISTA"),
                        vs_layerwise=compare_methods(psnrs, reference=final))
        row = res[key]["vs_fista"]
        log(f"    {key} ({len(data)} slices, FISTA lam {lams[noise]}): " + ", ".join(
            f"{n} {row[n]['mean']:.2f}" for n in psnrs))
    return res, first


def heldout_real(net: Any, models: dict[str, Any], lam: float, *, seeds, fista_iters: int = 100,
                 log=print) -> dict[str, Any]:
    """Held-out k-space error on ``brain-real-8coil`` (no reference image)."""
    from convexrecon.data.ood import real_brain_sample
    from convexrecon.nets.layerwise import ReconData
    from convexrecon.nets.layerwise_eval import heldout_kspace_errors, l1_wavelet_reference
    from convexrecon.nets.layerwise_program import data_consistency

    def nograd(m):
        def run(y, A):
            with torch.no_grad():
                return m(y, A)
        return run

    methods = {"zero-filled": lambda y, A: A.adjoint(y),
               "DC only": lambda y, A: data_consistency(A, A.adjoint(y), A.adjoint(y), mu=net.dc_mu),
               "L1-wavelet FISTA": lambda y, A: l1_wavelet_reference(ReconData(y, A), lam,
                                                                     max_iter=fista_iters)}
    for name, m in models.items():
        if m is not None:
            methods[name] = nograd(m)
    for k in range(1, net.depth + 1):
        methods[f"layer-wise L{k}"] = nograd(net.truncated(k))
    s = real_brain_sample()
    r = heldout_kspace_errors(s.kspace, s.maps, s.mask, methods, seeds=seeds)
    r["median"] = {k: statistics.median(v) for k, v in r["errors"].items()}
    r["lam"] = lam
    log("    brain-real-8coil held-out k-space error (median over draws): " + ", ".join(
        f"{k} {v:.4f}" for k, v in r["median"].items()))
    return r
