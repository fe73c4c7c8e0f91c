"""Access to the real data shipped in ``problems/data`` and the image preparation used
by the simulated problems (padding, block averaging, smooth phase, noise).

The files are found next to this module (``Path(__file__).parent / "data"``), which
works from a source checkout, an editable install and an installed wheel.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from convexrecon.errors import InputError

__all__ = [
    "DATA_DIR", "data_path", "mni_slices", "mni_split", "b0_volume",
    "pad_to", "block_mean", "smooth_phase", "complex_noise",
]

DATA_DIR = Path(__file__).resolve().parent / "data"

# The 24 stored MNI axial slices (z = 50, 54, ..., 142 of the 1 mm template; see
# data/README.md) are split into contiguous, disjoint blocks with one unused guard
# slice between them, so that no training slice is a direct neighbour of a test slice:
#   train: stored 0-7 and 16-23 (z = 50-78 and 114-142), test: stored 9-14 (z = 86-106).
MNI_TEST = (11, 12, 10, 13, 9, 14)  # centre first: n_slices=1 gives z = 94
MNI_TRAIN = (4, 19, 1, 22, 6, 17, 3, 20, 0, 23, 5, 16, 2, 21, 7, 18)
MNI_GUARD = (8, 15)


def data_path(name: str) -> Path:
    """Path of a shipped data file; InputError if it is missing (broken install)."""
    p = DATA_DIR / name
    if not p.is_file():
        raise InputError(f"data file {name!r}: expected it in {DATA_DIR}, it is missing "
                         "(reinstall convexrecon)")
    return p


def mni_split(split: str) -> tuple[int, ...]:
    """Stored MNI slice indices of ``split`` ("train" or "test"), in load order."""
    if split == "test":
        return MNI_TEST
    if split == "train":
        return MNI_TRAIN
    raise InputError(f"split: expected 'train' or 'test', got {split!r}")


@functools.lru_cache(maxsize=1)
def _mni_all() -> tuple[np.ndarray, np.ndarray]:
    with np.load(data_path("mni_icbm152_t1_2009a_axial24.npz")) as f:
        return f["slices"], f["z_index"]


def mni_slices(indices: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """MNI axial slices ``(n, 233, 197)`` as float64 in [0, 1], and their z indices."""
    sl, z = _mni_all()
    idx = list(indices)
    return sl[idx].astype(np.float64) / 255.0, z[idx]


def b0_volume() -> np.ndarray:
    """The dipy b=0 volume as ``(10, 128, 128)`` float64 scaled to max 1."""
    with np.load(data_path("b0_10slices.npz")) as f:
        vol = f["volume"][..., 0].astype(np.float64)
    return np.moveaxis(vol, -1, 0) / vol.max()


def pad_to(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centred zero padding of the last two axes to ``shape``."""
    h, w = img.shape[-2:]
    out = np.zeros(img.shape[:-2] + tuple(shape), dtype=img.dtype)
    t, l = (shape[0] - h) // 2, (shape[1] - w) // 2
    out[..., t:t + h, l:l + w] = img
    return out


def block_mean(img: np.ndarray, factor: int) -> np.ndarray:
    """Downsample the last two axes by averaging ``factor x factor`` blocks."""
    h, w = img.shape[-2:]
    if h % factor or w % factor:
        raise InputError(f"factor: expected a divisor of {(h, w)}, got {factor}")
    r = img.reshape(*img.shape[:-2], h // factor, factor, w // factor, factor)
    return r.mean(axis=(-3, -1))


def smooth_phase(shape: tuple[int, ...], rng: np.random.Generator, *,
                 strength: float = 0.5) -> np.ndarray:
    """A smooth random phase map (radians): a random quadratic polynomial in the
    normalised in-plane coordinates ``x, y`` in [-1, 1) with coefficients drawn
    N(0, strength^2), plus a random constant in [-pi, pi). ``shape`` is ``(H, W)`` or
    ``(D, H, W)`` (then the same in-plane phase with a linear drift along depth)."""
    h, w = shape[-2:]
    y = (np.arange(h) - h // 2) / (h / 2)
    x = (np.arange(w) - w // 2) / (w / 2)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    c = rng.normal(0.0, strength, size=6)
    phase = (rng.uniform(-np.pi, np.pi) + c[0] * xx + c[1] * yy + c[2] * xx * yy
             + c[3] * xx ** 2 + c[4] * yy ** 2)
    if len(shape) == 3:
        d = shape[0]
        z = (np.arange(d) - d // 2) / max(d / 2, 1)
        phase = phase[None] + c[5] * z[:, None, None]
    return phase


def complex_noise(shape: tuple[int, ...], std: float, rng: np.random.Generator) -> np.ndarray:
    """Circular complex Gaussian noise with ``E|n|^2 = std^2``."""
    s = std / np.sqrt(2.0)
    return rng.normal(0.0, s, size=shape) + 1j * rng.normal(0.0, s, size=shape)


def as_torch(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """numpy -> torch in ``dtype`` (complex dtypes for complex or real input)."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)
