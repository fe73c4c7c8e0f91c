"""End-to-end baselines of the layer-wise trainer, trained nonconvexly with Adam
through :func:`convexrecon.training.fit`.

- :func:`gated_e2e_net`: the identical architecture (the block shapes that the
  layer-wise net ended with, fixed random Gaussian gates), all layers trained jointly.
- :func:`unet_recon`: a small U-Net (:class:`convexrecon.nets.denoisers.SmallUNet`)
  on ``A^H y``, the usual single-domain baseline.

Both end with the same data-consistency step ``(A^H A + mu I)^-1 (A^H y + mu x)`` as
the layer-wise net, so the comparison is at equal DC. Both are factories that
:func:`convexrecon.training.load_model` can call from a checkpoint's ``model_spec``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from convexrecon.errors import InputError
from convexrecon.nets.layerwise import LayerwiseNet, layerwise_net_from_spec
from convexrecon.nets.layerwise_program import DC_MAX_ITER, DC_TOL, data_consistency
from convexrecon.operators.base import Operator
from convexrecon.operators.conv import random_gates

__all__ = ["gated_e2e_net", "unet_recon", "DenoiserRecon", "recon_loss", "recon_val",
           "SubsetDataset", "train_e2e"]


def gated_e2e_net(*, blocks: list[dict], dc_mu: float | None = 0.1, seed: int = 0,
                  dc_tol: float = DC_TOL, dc_max_iter: int = DC_MAX_ITER,
                  skip_input: bool = False) -> LayerwiseNet:
    """A :class:`LayerwiseNet` with the given block shapes, random gates and a
    He-style random initialisation (the last block's output scaled down, so that the
    fresh network is close to ``x_0``)."""
    net = layerwise_net_from_spec(blocks=blocks, dc_mu=dc_mu, dc_tol=dc_tol, dc_max_iter=dc_max_iter,
                                  skip_input=skip_input)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for i, b in enumerate(net.blocks):
            p, c, k = b.gates.shape[0], b.gates.shape[1], b.kernel_size
            b.gates.copy_(random_gates(p, c - 1, k, bias=True, seed=int(seed) * 1009 + i))
            m = b.first.shape[0]
            b.gate_index.copy_(torch.arange(m) % p)
            b.first.copy_(torch.randn(b.first.shape, generator=gen) * math.sqrt(2.0 / (c * k * k)))
            scale = 0.1 if i == len(net.blocks) - 1 else 1.0
            b.second.copy_(torch.randn(b.second.shape, generator=gen) * scale / math.sqrt(m))
    return net


class DenoiserRecon(nn.Module):
    """``forward(y, A)``: a complex image denoiser on ``A^H y``, then DC (``dc_mu``)."""

    def __init__(self, denoiser: nn.Module, *, dc_mu: float | None = 0.1,
                 dc_tol: float = DC_TOL, dc_max_iter: int = DC_MAX_ITER) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.dc_mu = None if dc_mu is None else float(dc_mu)
        self.dc_tol, self.dc_max_iter = float(dc_tol), int(dc_max_iter)

    def forward(self, y: torch.Tensor, A: Operator) -> torch.Tensor:
        aty = A.adjoint(y)
        x = self.denoiser(aty)
        if self.dc_mu is not None:
            x = data_consistency(A, aty, x, mu=self.dc_mu, tol=self.dc_tol, max_iter=self.dc_max_iter)
        return x


def unet_recon(*, features: int = 16, levels: int = 2, dc_mu: float | None = 0.1,
               seed: int = 0) -> DenoiserRecon:
    """A small U-Net on ``A^H y`` followed by DC."""
    from convexrecon.nets.denoisers import SmallUNet

    torch.manual_seed(int(seed))  # torch's default initialisers draw from the global RNG
    return DenoiserRecon(SmallUNet(features=features, levels=levels), dc_mu=dc_mu)


def recon_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Mean squared error of ``model(y, A)`` against the target (per pixel)."""
    x = model(batch.kspace, batch.operator())
    return (x - batch.target).abs().pow(2).mean()


def recon_val(model: nn.Module, batch: Any) -> dict[str, float]:
    """Validation: the loss and the volume PSNR of the batch."""
    from convexrecon.metrics import psnr

    x = model(batch.kspace, batch.operator())
    return {"loss": float((x - batch.target).abs().pow(2).mean()), "psnr": psnr(x, batch.target)}


class SubsetDataset(torch.utils.data.Dataset):
    """``dataset`` restricted to ``indices``, forwarding ``set_epoch``."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def train_e2e(model: nn.Module, *, model_spec: dict, train: Any, val: Any, epochs: int,
              out_dir: str, lr: float = 1e-3, batch_size: int = 4, halve_every: int = 10,
              resume: bool = False, seed: int = 0, device: str | None = None,
              tensorboard: bool = False, progress: bool = True) -> Any:
    """Adam (``lr``, halved every ``halve_every`` epochs, as the seed) on the MSE,
    through :func:`convexrecon.training.fit` (atomic checkpoints, lossless resume,
    ``metrics.json``). ``train`` / ``val`` are map-style datasets of samples."""
    from convexrecon.data import collate
    from convexrecon.training import fit

    if epochs < 1:
        raise InputError(f"epochs: expected an integer >= 1, got {epochs!r}")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(halve_every)), gamma=0.5)
    return fit(model, loss_fn=recon_loss, dataset=train, optimizer=opt, epochs=int(epochs),
               out_dir=out_dir, batch_size=batch_size, collate_fn=collate, scheduler=sched,
               val_dataset=val, val_fn=recon_val, seed=seed, device=device, resume=resume,
               model_spec=model_spec, tensorboard=tensorboard, progress=progress)
