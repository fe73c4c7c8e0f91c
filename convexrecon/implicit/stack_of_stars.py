"""Stack-of-stars volumes reconstructed partition by partition with a 2-D model.

With one in-plane trajectory for every partition and fully sampled kz, the
:class:`~convexrecon.operators.StackOfStars` operator is ``A = N F_z S`` (coil maps,
centred orthonormal FFT along z, the same 2-D NUFFT in every partition). Since
``F_z`` is unitary and ``N`` acts in-plane only, ``F_z^H y`` splits the data into
partitions and ``A^H A`` is block-diagonal in z: partition ``z`` is the 2-D radial
problem ``y_z = N (S_z x_z)``, a :class:`~convexrecon.operators.NonCartesianSense`
with partition ``z``'s coil maps. A 2-D DEQ or MoDL trained on radial slices then
reconstructs the volume one partition (or one chunk of partitions, as a batch) at a
time.

- :func:`partition_kspace`: ``(C, Z, K)`` stack-of-stars data to ``(Z, C, K)``
  per-partition 2-D data;
- :func:`partition_operator`: the batched 2-D operator of the partitions;
- :func:`reconstruct_partitions`: apply a ``forward(y, A)`` model per partition;
- :func:`simulate_stack_of_stars`: a small volume of consecutive MNI slices of one
  split, on the scale of :class:`convexrecon.data.SliceDataset`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from convexrecon.errors import InputError
from convexrecon.operators.fft import ifftc
from convexrecon.operators.noncartesian import NonCartesianSense, StackOfStars

__all__ = ["partition_kspace", "partition_operator", "reconstruct_partitions", "StackOfStarsVolume",
           "simulate_stack_of_stars"]


def _check(y: torch.Tensor, maps: torch.Tensor) -> None:
    if not isinstance(y, torch.Tensor) or y.ndim != 3:
        raise InputError(f"y: expected stack-of-stars data (C, Z, K), got "
                         f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4 or tuple(maps.shape[:2]) != tuple(y.shape[:2]):
        raise InputError(f"maps: expected (C, Z, H, W) with (C, Z) = {tuple(y.shape[:2])}, got "
                         f"{tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__}")


def partition_kspace(y: torch.Tensor) -> torch.Tensor:
    """``(..., C, Z, K)`` stack-of-stars data to ``(..., Z, C, K)`` 2-D data per partition
    (the centred orthonormal inverse FFT along kz)."""
    if not isinstance(y, torch.Tensor) or y.ndim < 3:
        raise InputError("y: expected stack-of-stars data (..., C, Z, K)")
    return ifftc(y, dims=(-2,)).movedim(-2, -3)


def partition_operator(maps: torch.Tensor, traj: torch.Tensor, **nufft_options) -> NonCartesianSense:
    """The 2-D operator of all partitions as one batch: ``NonCartesianSense`` with maps
    ``(Z, C, H, W)`` from the volume's ``(C, Z, H, W)``; ``nufft_options`` as for
    :class:`StackOfStars` (backend, eps, oversamp, width, toeplitz, dcf)."""
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4:
        raise InputError("maps: expected volume coil maps (C, Z, H, W)")
    return NonCartesianSense(maps.movedim(-3, -4), traj, **nufft_options)


@torch.no_grad()
def reconstruct_partitions(model: nn.Module, y: torch.Tensor, maps: torch.Tensor, traj: torch.Tensor,
                           *, batch_size: int = 4) -> torch.Tensor:
    """Reconstruct a stack-of-stars volume with a 2-D ``forward(y, A)`` model.

    Args:
        model: a 2-D reconstructor (DEQ, MoDL) taking ``(B, C, K)`` data and a batched
            :class:`NonCartesianSense`; run in eval mode, without the tape.
        y: ``(C, Z, K)`` data of ``StackOfStars(maps, traj)`` (on the model's scale).
        maps: ``(C, Z, H, W)`` coil maps of that operator.
        traj: ``(2, K)`` in-plane trajectory.
        batch_size: partitions per model call.

    Returns:
        ``(Z, H, W)`` the volume, partition by partition.
    """
    _check(y, maps)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    from convexrecon.data._cache import noncartesian, with_maps

    yz = partition_kspace(y)
    mz = maps.movedim(-3, -4)
    base = noncartesian(mz[0], traj)  # one NUFFT (tables, Toeplitz kernel) for every chunk
    was_training = model.training
    model.eval()
    try:
        parts = [model(yz[s:s + batch_size], with_maps(base, mz[s:s + batch_size]))
                 for s in range(0, yz.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts, dim=0)


@dataclass
class StackOfStarsVolume:
    """A simulated stack-of-stars volume (the scale of :class:`SliceDataset`: the
    operator is ``StackOfStars(maps / op_scale, traj)``, ``target`` its ground truth).

    Attributes:
        target: ``(Z, H, W)`` complex ground truth.
        kspace: ``(C, Z, K)`` noisy data divided by ``data_scale``.
        maps: ``(C, Z, H, W)`` unscaled coil maps (in-plane birdcage, the same in every partition).
        traj: ``(2, K)`` in-plane trajectory.
        op_scale: ``sqrt(lambda_max)`` of the unscaled 2-D partition operator.
        data_scale: the data were divided by this.
        labels: the source slice of each partition.
    """

    target: torch.Tensor
    kspace: torch.Tensor
    maps: torch.Tensor
    traj: torch.Tensor
    op_scale: float
    data_scale: float
    labels: list[str]

    def scaled_maps(self) -> torch.Tensor:
        return self.maps / self.op_scale

    def operator(self) -> StackOfStars:
        return StackOfStars(self.scaled_maps(), self.traj)


def simulate_stack_of_stars(dataset, *, start: int, partitions: int, seed: int = 0) -> StackOfStarsVolume:
    """A volume of the ``partitions`` consecutive slices ``start, start+1, ...`` of a
    radial :class:`convexrecon.data.SliceDataset` (their images and smooth phases), one
    in-plane trajectory drawn from the dataset's radial spec for every partition, fully
    sampled kz, and complex noise of ``dataset.noise_rel`` times the RMS of the
    noiseless data. Scaled as the 2-D slices: ``op_scale`` of the partition operator,
    and the 99th percentile of the volume's gridding image for ``data_scale``.
    """
    from convexrecon.data import transforms as T
    from convexrecon.data.datasets import _STREAM_PHASE, DATA_PERCENTILE, _maps, _ramp_dcf
    from convexrecon.data._cache import noncartesian_scale
    from convexrecon.data.masks import draw_sampling

    if not getattr(dataset.mask, "radial", False):
        raise InputError("dataset: expected a radial SliceDataset (a trajectory kind)")
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 2:
        raise InputError(f"partitions: expected an int >= 2, got {partitions!r}")
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= len(dataset) - partitions:
        raise InputError(f"start: expected an int in [0, {len(dataset) - partitions}], got {start!r}")
    idx = list(range(start, start + partitions))
    slices = []
    for i in idx:
        img = dataset.image(i)
        phase = T.smooth_phase(img.shape, dataset.rng(i, _STREAM_PHASE), strength=dataset.phase_strength)
        slices.append(img * np.exp(1j * phase))
    x = torch.from_numpy(np.stack(slices)).to(torch.complex64)
    side = x.shape[-1]
    maps2d = _maps(dataset.coils, side)
    maps = maps2d.unsqueeze(1).expand(-1, partitions, -1, -1).contiguous()
    rng = np.random.default_rng([seed, start, partitions])
    _, traj = draw_sampling(dataset.mask, side, rng)
    op = StackOfStars(maps, traj)
    with torch.no_grad():
        clean = op(x)
        rms = float(torch.sqrt(torch.mean(clean.abs().to(torch.float64) ** 2)))
        s = dataset.noise_rel * rms / math.sqrt(2.0)
        noise = rng.normal(0.0, s, clean.shape) + 1j * rng.normal(0.0, s, clean.shape)
        y = clean + torch.from_numpy(noise).to(torch.complex64)
        grid = op.adjoint(y * _ramp_dcf(traj, side))
        op_scale = noncartesian_scale(maps2d, traj)
        data_scale = op_scale * float(torch.quantile(grid.abs().reshape(-1).to(torch.float64), DATA_PERCENTILE))
    if not data_scale > 0:
        raise InputError("dataset: expected slices with signal, got an empty volume")
    return StackOfStarsVolume(target=x * (op_scale / data_scale), kspace=y / data_scale, maps=maps,
                              traj=traj, op_scale=op_scale, data_scale=data_scale,
                              labels=[dataset.source.label(i) for i in idx])
