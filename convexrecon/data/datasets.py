"""A dataset of simulated multi-coil slices: :class:`SliceDataset` and :class:`Sample`.

Every sample follows the simulation of the named problems
(:mod:`convexrecon.problems.instances`): a real magnitude image times a smooth
random phase, times analytic birdcage coil maps (``sum_c |S_c|^2 = 1``), encoded by
a Cartesian SENSE operator with a fresh mask (or a non-Cartesian one with a fresh
radial trajectory), plus circular complex Gaussian noise on the measured samples
with standard deviation ``noise_rel`` times the RMS of the noiseless measured
samples.

Scaling (as :func:`convexrecon.problems.load`, per sample): ``op_scale =
sqrt(lambda_max(A_raw^H A_raw))`` (Lanczos), ``data_scale = op_scale *
p99(|A_raw^H W y_raw|)`` (``W`` the radial ramp weights, the identity for Cartesian
data); ``kspace = y_raw / data_scale``, ``target = x_raw * op_scale / data_scale``, and
the sample's operator is ``A_raw / op_scale`` (:meth:`Sample.operator`), so
``operator(target) ~ kspace`` and the target peaks at about 1.

Determinism: sample ``i`` in epoch ``e`` draws everything (augmentation, mask,
phase, noise) from ``numpy.random.default_rng([seed, e, i, stream])``; with
``vary_per_epoch=False`` (the default for validation and test sets) ``e`` is taken
as 0, so the set is the same every epoch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from convexrecon.coils import birdcage
from convexrecon.data._cache import noncartesian, noncartesian_scale, with_maps
from convexrecon.data import transforms as T
from convexrecon.data.masks import MaskSpec, draw_sampling
from convexrecon.data.sources import SPLITS, image_source
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.operators.sense import Sense

__all__ = ["Sample", "SliceDataset", "from_problem", "PROBLEM_SPECS"]

DATA_PERCENTILE = 0.99
_STREAM_AUG, _STREAM_MASK, _STREAM_PHASE, _STREAM_NOISE = range(4)


@dataclass
class Sample:
    """One simulated slice, on the problems' scale (see the module docstring).

    Attributes:
        target: ``(H, W)`` complex64 ground truth (None for real data without one).
        kspace: ``(C, H, W)`` (Cartesian) or ``(C, K)`` (radial) complex64 data.
        maps: ``(C, H, W)`` complex64 coil maps (unit root-sum-of-squares).
        mask: ``(H, W)`` bool sampling mask, or None (radial).
        traj: ``(2, K)`` float32 radians, or None (Cartesian).
        index: the index in the dataset.
        op_scale: the operator is ``Sense(maps, mask) / op_scale``.
        data_scale: the raw data were divided by this.
        noise_std: standard deviation of the complex noise per measured sample of
            ``kspace``.
        label: the source slice (``"mni:z=94"``).
        dcf: ``(K,)`` radial ramp density weights (the problems' ``meta["dcf"]``, used
            for the data scale; ``A^H (dcf * y)`` is a gridding image), or None.
    """

    target: torch.Tensor | None
    kspace: torch.Tensor
    maps: torch.Tensor
    mask: torch.Tensor | None
    traj: torch.Tensor | None
    index: int
    op_scale: float
    data_scale: float
    noise_std: float
    label: str = ""
    dcf: torch.Tensor | None = None

    def operator(self) -> Operator:
        """The scaled encoding operator of this sample: ``Sense`` (Cartesian) or
        ``NonCartesianSense`` (radial) with the maps divided by ``op_scale``."""
        maps = self.maps / self.op_scale
        if self.traj is None:
            return Sense(maps, self.mask)
        return with_maps(noncartesian(self.maps, self.traj), maps)


def _raw_operator(maps: torch.Tensor, mask, traj) -> Operator:
    if traj is None:
        return Sense(maps, mask)
    return noncartesian(maps, traj)


@functools.lru_cache(maxsize=16)
def _maps(coils: int, size: int) -> torch.Tensor:
    return birdcage(coils, (size, size), dtype=torch.complex64)


def _ramp_dcf(traj: torch.Tensor, size: int) -> torch.Tensor:
    from convexrecon.problems.instances import ramp_dcf

    return ramp_dcf(traj, (size, size))


def _lambda_max(op: Operator, x0: torch.Tensor) -> float:
    from convexrecon.problems.registry import lambda_max

    return lambda_max(op.N, x0)


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def _mask_spec(mask, trajectory) -> MaskSpec:
    if mask is not None and trajectory is not None:
        raise InputError("mask/trajectory: expected at most one of them, got both")
    spec = trajectory if trajectory is not None else mask
    if spec is None:
        return MaskSpec()
    if isinstance(spec, str):
        spec = MaskSpec(spec)
    if not isinstance(spec, MaskSpec):
        raise InputError(f"mask: expected a MaskSpec or a kind name, got {type(spec).__name__}")
    if trajectory is not None and not spec.radial:
        raise InputError(f"trajectory: expected a radial kind, got {spec.kind!r}")
    return spec


class SliceDataset(torch.utils.data.Dataset):
    """Simulated multi-coil slices of one split (see the module docstring).

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` (slabs of the MNI volume, see
            :data:`convexrecon.data.SPLITS`) or an out-of-distribution image set,
            ``"dipy-t1-coronal"`` / ``"dipy-b0"``; or None with ``source``.
        source: an image source instead of a split (e.g. :class:`FastMRIFolder`).
        size: image side; the image is padded to a square (MNI: 256 x 256, as the
            named problems), then area-resampled to ``size x size``. None: the padded side.
        coils: number of birdcage coils.
        mask: the sampling (:class:`MaskSpec`, or a kind name for its defaults);
            a fresh draw per sample (and epoch). Default: Poisson disc, 4x.
        trajectory: a radial :class:`MaskSpec` or radial kind name (``"every_nth"``,
            ``"golden"``, ``"equiangular"``), instead of ``mask``.
        noise_rel: noise standard deviation relative to the RMS of the measured
            noiseless samples (the problems use ``NOISE_REL = 0.05``); 0 for none.
        seed: seed of all randomness.
        augment: random flips and crops; default True for ``"train"`` only.
        vary_per_epoch: draw new masks, phases, noise and augmentations each epoch;
            default True for ``"train"`` and sources, False for the other splits.
        crop_scale: range of the random crop side relative to the padded side.
        flip_prob: probability of each of the left-right and up-down flips.
        phase_strength: standard deviation of the smooth phase's coefficients.

    Raises:
        InputError: unknown split, bad size / coils / noise, both or neither of
            split and source.
    """

    def __init__(self, *, split: str | None = "train", source=None, size: int | None = None,
                 coils: int = 8, mask: MaskSpec | str | None = None,
                 trajectory: MaskSpec | str | None = None, noise_rel: float = 0.05,
                 seed: int = 0, augment: bool | None = None,
                 vary_per_epoch: bool | None = None, crop_scale: tuple[float, float] = (0.8, 1.0),
                 flip_prob: float = 0.5, phase_strength: float = 0.5) -> None:
        if (split is None) == (source is None):
            raise InputError("split/source: expected exactly one of them, got "
                             f"split={split!r}, source={source!r}")
        self.split = split
        if source is not None and not all(hasattr(source, a) for a in ("__len__", "image", "label")):
            raise InputError(f"source: expected an object with __len__, image and label, "
                             f"got {type(source).__name__}")
        self.source = image_source(split) if source is None else source
        if len(self.source) == 0:
            raise InputError("source: expected at least one image, got none")
        self.frame = 256 if split in SPLITS else None
        self.size = None if size is None else _int(size, "size", 8)
        self.coils = _int(coils, "coils", 1)
        self.mask = _mask_spec(mask, trajectory)
        if not (isinstance(noise_rel, (int, float)) and not isinstance(noise_rel, bool)
                and 0 <= noise_rel < math.inf):
            raise InputError(f"noise_rel: expected a finite number >= 0, got {noise_rel!r}")
        self.noise_rel = float(noise_rel)
        self.seed = _int(seed, "seed", 0)
        training = split == "train"
        self.augment = training if augment is None else bool(augment)
        self.vary_per_epoch = (training or split is None) if vary_per_epoch is None \
            else bool(vary_per_epoch)
        lo, hi = (float(v) for v in crop_scale)
        if not 0 < lo <= hi <= 1:
            raise InputError(f"crop_scale: expected 0 < lo <= hi <= 1, got {crop_scale!r}")
        self.crop_scale = (lo, hi)
        if not 0 <= flip_prob <= 1:
            raise InputError(f"flip_prob: expected a number in [0, 1], got {flip_prob!r}")
        self.flip_prob = float(flip_prob)
        self.phase_strength = float(phase_strength)
        self.epoch = 0

    # -- torch Dataset --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws ``__getitem__`` returns."""
        self.epoch = _int(epoch, "epoch", 0)

    def rng(self, index: int, stream: int) -> np.random.Generator:
        """The generator of ``stream`` for sample ``index`` in the current epoch."""
        e = self.epoch if self.vary_per_epoch else 0
        return np.random.default_rng([self.seed, e, index, stream])

    def image(self, index: int) -> np.ndarray:
        """The real magnitude image of sample ``index`` after padding, augmentation
        and resampling, ``(size, size)`` float64."""
        img = self.source.image(index)
        img = T.pad_to_square(img, self.frame)
        if self.augment:
            rng = self.rng(index, _STREAM_AUG)
            img = T.random_flip(img, rng, prob=self.flip_prob)
            img = T.random_crop(img, rng, scale=self.crop_scale)
        side = self.size or (self.frame or img.shape[0])
        return T.resize_area(img, side)

    def __getitem__(self, index: int) -> Sample:
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise IndexError(f"index {index!r} out of range for a dataset of {n}")
        index = int(index) % n
        img = self.image(index)
        side = img.shape[0]
        phase = T.smooth_phase((side, side), self.rng(index, _STREAM_PHASE),
                               strength=self.phase_strength)
        x = torch.from_numpy(img * np.exp(1j * phase)).to(torch.complex64)
        maps = _maps(self.coils, side)
        mask, traj = draw_sampling(self.mask, side, self.rng(index, _STREAM_MASK))
        op = _raw_operator(maps, mask, traj)
        with torch.no_grad():
            clean = op(x)
            meas = clean if mask is None else clean[mask.expand_as(clean)]
            rms = float(torch.sqrt(torch.mean(meas.abs().to(torch.float64) ** 2)))
            std = self.noise_rel * rms
            nrng = self.rng(index, _STREAM_NOISE)
            s = std / math.sqrt(2.0)
            noise = nrng.normal(0.0, s, clean.shape) + 1j * nrng.normal(0.0, s, clean.shape)
            y = clean + torch.from_numpy(noise).to(torch.complex64)
            if mask is not None:
                y = y * mask
            dcf = None if traj is None else _ramp_dcf(traj, side)
            grid = op.adjoint(y if dcf is None else y * dcf)
            if not bool(grid.abs().amax() > 0):
                raise InputError(f"sample {index} ({self.source.label(index)}): expected a nonzero "
                                 "image, got an empty one")
            if traj is None:
                op_scale = math.sqrt(_lambda_max(op, grid))
            else:
                op_scale = noncartesian_scale(maps, traj)
            data_scale = op_scale * float(torch.quantile(grid.abs().reshape(-1).to(torch.float64),
                                                         DATA_PERCENTILE))
            if not data_scale > 0:
                raise InputError(f"sample {index} ({self.source.label(index)}): expected an image "
                                 "with signal in more than 1% of the pixels")
        return Sample(target=x * (op_scale / data_scale), kspace=y / data_scale, maps=maps.clone(),
                      mask=mask, traj=traj, index=index, op_scale=op_scale,
                      data_scale=data_scale, noise_std=std / data_scale,
                      label=self.source.label(index), dcf=dcf)


#: the simulation of each named problem that has one: (coils, MaskSpec, native size)
PROBLEM_SPECS: dict[str, tuple[int, MaskSpec, int]] = {
    "brain-sim-poisson-4x": (8, MaskSpec("poisson", 4.0, calib=24), 256),
    "brain-sim-cartesian-1d-4x": (8, MaskSpec("random_1d", 4.0, center_fraction=0.08), 256),
    "radial-golden": (8, MaskSpec("golden", n_spokes=64), 128),
    # the real trajectory is 96 equiangular spokes (1.875 deg apart): approximated
    # by the equiangular set, unrotated
    "radial-real-traj": (8, MaskSpec("equiangular", n_spokes=96, rotate=False), 128),
    "tiny-cartesian": (3, MaskSpec("random_1d", 2.0, center_fraction=0.25), 16),
    "tiny-radial": (3, MaskSpec("golden", n_spokes=8), 16),
}


def from_problem(name: str, *, split: str = "train", size: int | None = None,
                 noise_rel: float | None = None, **kwargs) -> SliceDataset:
    """A :class:`SliceDataset` with the simulation of the named problem ``name``
    (coils, sampling, noise level ``NOISE_REL`` unless ``noise_rel`` is given, and its
    image size unless ``size`` is given; radial readouts stay twice the size).
    Other keyword arguments go to :class:`SliceDataset`.

    Raises:
        InputError: ``name`` has no 2-D simulation (real data, stack of stars).
    """
    from convexrecon.problems.instances import NOISE_REL

    if name not in PROBLEM_SPECS:
        raise InputError(f"name: expected a problem with a 2-D simulation, one of "
                         f"{', '.join(PROBLEM_SPECS)}, got {name!r}")
    coils, spec, native = PROBLEM_SPECS[name]
    if "mask" in kwargs or "coils" in kwargs:
        raise InputError("from_problem: coils and mask come from the problem; "
                         "build SliceDataset directly to change them")
    return SliceDataset(split=split, size=native if size is None else size, coils=coils,
                        mask=spec, noise_rel=NOISE_REL if noise_rel is None else noise_rel,
                        **kwargs)
