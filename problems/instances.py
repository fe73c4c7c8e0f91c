"""The named problem instances (registered on import). See data/README.md for the
sources and :mod:`convexrecon.problems.registry` for the scaling.

Simulated k-space: a real magnitude image times a smooth random phase, times
analytic birdcage coil maps (``sum_c |S_c|^2 = 1``), encoded by the operator, plus
circular complex Gaussian noise on the measured samples with standard deviation
``NOISE_REL`` times the RMS of the noiseless measured samples.
"""

from __future__ import annotations

import numpy as np
import torch

from convexrecon.coils import birdcage
from convexrecon.operators.fft import ifftc
from convexrecon.operators.noncartesian import NonCartesianSense, StackOfStars
from convexrecon.operators.sense import Sense
from convexrecon.problems import _data as D
from convexrecon.problems.registry import RawProblem, register
from convexrecon.sampling import grid_to_radians, poisson_disc, radial, random_1d, stack_of_stars

NOISE_REL = 0.05
MNI_SPLITS = {"train": len(D.MNI_TRAIN), "test": len(D.MNI_TEST)}
BRAIN_MAPS = "brain_8coil_espirit_maps.npy"
PHANTOM_CC = "phantom32_cc8_espirit.npz"
ESPIRIT_ARGS = dict(calib_width=24, thresh=0.02, kernel_width=6, crop=0.95, max_iter=100)

_SIM_REF = ("the complex image used to simulate the data: a real magnitude image ({src}) times "
            "a smooth random phase (scaled like the data)")


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _mni_images(split: str, n: int, *, size: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """``n`` MNI slices of ``split`` padded to 256x256, block averaged to ``size``."""
    idx = D.mni_split(split)[:n]
    imgs, _ = D.mni_slices(idx)
    imgs = D.pad_to(imgs, (256, 256))
    if size != 256:
        imgs = D.block_mean(imgs, 256 // size)
    return imgs, idx


def _with_phase(imgs: np.ndarray, seed: int, idx) -> np.ndarray:
    return np.stack([im * np.exp(1j * D.smooth_phase(im.shape, _rng(seed, int(i), 2)))
                     for im, i in zip(imgs, idx)])


def _add_noise(clean: torch.Tensor, sampled: torch.Tensor | None, seed: int,
               idx) -> tuple[torch.Tensor, float]:
    """Noise on the sampled entries (all entries when ``sampled`` is None)."""
    meas = clean if sampled is None else clean[sampled.expand_as(clean)]
    std = NOISE_REL * float(torch.sqrt(torch.mean(meas.abs().to(torch.float64) ** 2)))
    per = [D.complex_noise(tuple(clean.shape[1:]), std, _rng(seed, int(i), 3)) for i in idx]
    noise = torch.from_numpy(np.stack(per)).to(clean.dtype)
    if sampled is not None:
        noise = noise * sampled
    return clean + noise, std


def _mni_cartesian(kind: str, split: str, n: int, seed: int, dtype) -> RawProblem:
    imgs, idx = _mni_images(split, n, size=256)
    x = D.as_torch(_with_phase(imgs, seed, idx), dtype)
    maps = birdcage(8, (256, 256), dtype=dtype)
    if kind == "poisson":
        masks = [poisson_disc((256, 256), 4, calib=(24, 24), seed=_rng(seed, i, 1)) for i in idx]
        how = "variable-density Poisson-disc mask, acceleration 4, 24x24 calibration block"
    else:
        masks = [random_1d((256, 256), 4, center_fraction=0.08, seed=_rng(seed, i, 1)) for i in idx]
        how = "random 1-D phase-encode mask (last axis), acceleration 4, centre fraction 0.08"
    mask = torch.stack(masks)
    op = Sense(maps, mask, dtype=dtype)
    y, std = _add_noise(op(x), mask.unsqueeze(1), seed, idx)
    src = "MNI ICBM152 2009a T1 template, axial, padded from 233x197 to 256x256"
    return RawProblem(
        operator=op, kspace=y, ground_truth=x, maps=maps, mask=mask, traj=None,
        reference=_SIM_REF.format(src=src),
        description=(f"8-coil Cartesian k-space (256x256) simulated from MNI axial slices with "
                     f"birdcage maps; {how}, one mask per slice; noise {NOISE_REL:.0%} of the RMS "
                     "of the measured samples."),
        noise_std=std, slices=idx, meta={"pad_shape": (256, 256)})


@register("brain-sim-poisson-4x", summary="simulated 8-coil brain, Poisson-disc 4x",
          splits=("test", "train"), max_slices=MNI_SPLITS)
def _brain_poisson(*, split, n_slices, seed, dtype):
    return _mni_cartesian("poisson", split, n_slices, seed, dtype)


@register("brain-sim-cartesian-1d-4x", summary="simulated 8-coil brain, random 1-D 4x",
          splits=("test", "train"), max_slices=MNI_SPLITS)
def _brain_1d(*, split, n_slices, seed, dtype):
    return _mni_cartesian("1d", split, n_slices, seed, dtype)


@register("brain-real-8coil", summary="real 8-coil brain k-space, Poisson ~8x, no reference")
def _brain_real(*, split, n_slices, seed, dtype):
    ksp = torch.from_numpy(np.load(D.data_path("brain_8coil_poisson_ksp.npy"))).to(dtype)[None]
    maps = torch.from_numpy(np.load(D.data_path(BRAIN_MAPS))).to(dtype)
    mask = (ksp != 0).any(dim=1)
    op = Sense(maps, mask, dtype=dtype)
    return RawProblem(
        operator=op, kspace=ksp, ground_truth=None, maps=maps, mask=mask, traj=None,
        reference=("none: the scan is undersampled and no fully sampled reference exists; "
                   "compare methods by data residual and visually"),
        description=("Real 8-coil Cartesian k-space of an axial brain slice (230x180, Poisson-disc "
                     "undersampled, about 8x, fully sampled calibration square). Maps: ESPIRiT "
                     f"from its calibration region ({ESPIRIT_ARGS}, precomputed, see make_data). "
                     "Mask: the nonzero samples. 230x180 does not divide by 2**levels: for "
                     "wavelets reconstruct on meta['pad_shape'] and fold a Crop into the operator."),
        noise_std=None, slices=(0,),
        meta={"pad_shape": (240, 192), "espirit": dict(ESPIRIT_ARGS)})


@register("phantom32-cartesian-1d-4x",
          summary="real fully sampled 32-coil phantom (8 virtual coils), random 1-D 4x")
def _phantom(*, split, n_slices, seed, dtype):
    raw = np.load(D.data_path("phantom_32coil_full_raw.npy")).transpose(1, 0, 2)  # (C, RO, PE)
    with np.load(D.data_path(PHANTOM_CC)) as f:
        matrix, maps_np = f["matrix"], f["maps"]
    full = torch.from_numpy(np.einsum("vc,chw->vhw", matrix, raw)).to(dtype)
    maps = torch.from_numpy(maps_np).to(dtype)
    gt = torch.sum(maps.conj() * ifftc(full, dims=(-2, -1)), dim=0)[None]
    mask = random_1d((64, 64), 4, center_fraction=0.125, seed=_rng(seed, 0, 1))[None]
    op = Sense(maps, mask, dtype=dtype)
    return RawProblem(
        operator=op, kspace=full[None] * mask.unsqueeze(1), ground_truth=gt, maps=maps,
        mask=mask, traj=None,
        reference=("the SENSE combination sum_c conj(S_c) IFFT(y_c) of the fully sampled data "
                   "(8 virtual coils) with the same ESPIRiT maps S, zero outside the phantom"),
        description=("Real fully sampled 32-coil Cartesian raw k-space of a spherical phantom "
                     "(Siemens, pulseq; readout x coil x line 64x32x64 -> (32, 64, 64)), PCA "
                     "coil-compressed to 8 virtual coils (stored matrix), ESPIRiT maps from the "
                     f"full compressed data ({ESPIRIT_ARGS}, precomputed), retrospectively "
                     "undersampled with a random 1-D mask, acceleration 4, centre fraction 0.125. "
                     "The measured noise is real and not known."),
        noise_std=None, slices=(0,), meta={"coil_compression": torch.from_numpy(matrix)})


def _radial_problem(traj: torch.Tensor, split: str, n: int, seed: int, dtype, *, size: int,
                    n_coils: int, what: str) -> RawProblem:
    imgs, idx = _mni_images(split, n, size=size)
    x = D.as_torch(_with_phase(imgs, seed, idx), dtype)
    maps = birdcage(n_coils, (size, size), dtype=dtype)
    op = NonCartesianSense(maps, traj, dtype=dtype)
    with torch.no_grad():
        y, std = _add_noise(op(x), None, seed, idx)
    dcf = ramp_dcf(traj, (size, size))
    return RawProblem(
        operator=op, kspace=y, ground_truth=x, maps=maps, mask=None, traj=traj,
        reference=_SIM_REF.format(src=f"MNI ICBM152 2009a T1 axial, padded to 256, "
                                      f"averaged to {size}x{size}"),
        description=(f"{n_coils}-coil radial k-space ({size}x{size}) simulated from MNI axial slices "
                     f"with birdcage maps and {what}; no density compensation in the operator; "
                     f"noise {NOISE_REL:.0%} of the RMS of the samples. meta['dcf']: radial ramp "
                     "weights (used for the data scale)."),
        noise_std=std, slices=idx, meta={"dcf": dcf}, dcf=dcf)


def ramp_dcf(traj: torch.Tensor, im_size: tuple[int, ...]) -> torch.Tensor:
    """Radial density compensation ``w = |k|`` (the centre sample gets the weight at a
    quarter of the first sample's radius), normalised like
    :func:`convexrecon.operators.nufft.pipe_menon_dcf` (``sum(w) = prod(im_size)``, so
    the point-spread function of ``A^H W A`` peaks at about 1). A cheap stand-in for
    Pipe-Menon weights, used only for the data scale."""
    r = torch.linalg.vector_norm(traj.to(torch.float64), dim=0)
    floor = float(r[r > 0].min()) / 4 if bool((r > 0).any()) else 1.0
    w = torch.clamp(r, min=floor)
    return (w * (float(np.prod(im_size)) / float(w.sum()))).to(torch.float32)


def real_radial_traj(size: int = 128) -> torch.Tensor:
    """The real 96-spoke trajectory for a ``size`` grid with the same field of view:
    the samples with ``|k| < size / 2`` grid units of each spoke (all 512 for 256),
    in radians ``(2, K)`` float32."""
    coord = np.load(D.data_path("brain_radial_96x512_coord.npy"))  # (96, 512, 2), +-128
    if size < 256:
        radius = np.linalg.norm(coord[0], axis=-1)  # every spoke samples the same radii
        coord = coord[:, radius < size / 2]
    return grid_to_radians(coord, (size, size), layout="sigpy").to(torch.float32)


@register("radial-golden", summary="simulated 8-coil brain, 64 golden-angle spokes, 128x128",
          splits=("test", "train"), max_slices=MNI_SPLITS)
def _radial_golden(*, split, n_slices, seed, dtype):
    traj = radial(64, 256, mode="golden")
    return _radial_problem(traj, split, n_slices, seed, dtype, size=128, n_coils=8,
                           what="64 golden-angle (111.25 deg) spokes x 256 samples "
                                "(2x readout oversampling; ~3x fewer spokes than Nyquist)")


@register("radial-real-traj", summary="simulated 8-coil brain on the real 96-spoke trajectory",
          splits=("test", "train"), max_slices=MNI_SPLITS)
def _radial_real(*, split, n_slices, seed, dtype):
    traj = real_radial_traj(128)
    return _radial_problem(traj, split, n_slices, seed, dtype, size=128, n_coils=8,
                           what=("the real 96-spoke trajectory of the sigpy-mri tutorial "
                                 "(equiangular spokes, 1.875 deg apart; the central 256 of 512 "
                                 "samples per spoke, same field of view at 128x128)"))


@register("stack-of-stars", summary="simulated 6-coil 3-D brain (8x64x64), 24 golden spokes")
def _sos(*, split, n_slices, seed, dtype):
    vol = D.block_mean(D.b0_volume()[1:9], 2)  # (8, 64, 64)
    x = torch.from_numpy(vol * np.exp(1j * D.smooth_phase(vol.shape, _rng(seed, 0, 2))))
    x = x.to(dtype)[None]
    maps = birdcage(6, vol.shape, dtype=dtype)
    traj = stack_of_stars(24, 128, 8, mode="golden")
    op = StackOfStars(maps, traj, dtype=dtype)
    with torch.no_grad():
        y, std = _add_noise(op(x), None, seed, (0,))
    dcf = ramp_dcf(traj, vol.shape[-2:])
    return RawProblem(
        operator=op, kspace=y, ground_truth=x, maps=maps, mask=None, traj=traj,
        reference=("the complex volume used to simulate the data: 8 dipy b=0 axial slices "
                   "(2x2 averaged to 64x64) times a smooth random phase (scaled like the data)"),
        description=("6-coil stack-of-stars k-space (8 partitions, Cartesian along z, 64x64 "
                     "in-plane) simulated from 8 real diffusion b=0 slices with 3-D birdcage "
                     "maps; 24 golden-angle spokes x 128 samples per partition; noise "
                     f"{NOISE_REL:.0%} of the RMS of the samples."),
        noise_std=std, slices=(0,), meta={"dcf": dcf, "b0_slices": tuple(range(1, 9))}, dcf=dcf)


@register("tiny-cartesian", summary="16x16, 3 coils, random 1-D 2x (for exact solvers)",
          splits=("test", "train"), max_slices=MNI_SPLITS)
def _tiny_cart(*, split, n_slices, seed, dtype):
    imgs, idx = _mni_images(split, n_slices, size=16)
    x = D.as_torch(_with_phase(imgs, seed, idx), dtype)
    maps = birdcage(3, (16, 16), dtype=dtype)
    mask = torch.stack([random_1d((16, 16), 2, center_fraction=0.25, seed=_rng(seed, i, 1))
                        for i in idx])
    op = Sense(maps, mask, dtype=dtype)
    y, std = _add_noise(op(x), mask.unsqueeze(1), seed, idx)
    return RawProblem(
        operator=op, kspace=y, ground_truth=x, maps=maps, mask=mask, traj=None,
        reference=_SIM_REF.format(src="MNI ICBM152 2009a T1 axial, padded to 256, "
                                      "averaged to 16x16"),
        description=("Tiny 3-coil Cartesian problem (16x16) from MNI slices with birdcage maps "
                     "and a random 1-D mask (acceleration 2, centre fraction 0.25), for checks "
                     f"against exact (cvxpy) solutions; noise {NOISE_REL:.0%}."),
        noise_std=std, slices=idx)


@register("tiny-radial", summary="16x16, 3 coils, 8 golden spokes (for exact solvers)",
          splits=("test", "train"), max_slices=MNI_SPLITS)
def _tiny_radial(*, split, n_slices, seed, dtype):
    traj = radial(8, 32, mode="golden")
    return _radial_problem(traj, split, n_slices, seed, dtype, size=16, n_coils=3,
                           what="8 golden-angle spokes x 32 samples (tiny, for exact solvers)")
