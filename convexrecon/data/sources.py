"""Image sources of the training and test sets: the bundled 1 mm MNI volume with its
train / val / test slabs, the out-of-distribution dipy slices, and a lazily read
folder of fastMRI ``.h5`` files.

A source is indexable: ``len(src)`` images, ``src.image(i)`` a real 2-D float64
magnitude image scaled to max 1 (any shape), ``src.label(i)`` a short string naming
the slice (``"mni:z=94"``).

Splits of the MNI volume (``volume[:, :, z]``, 1 mm axial slices, see
``problems/data/README.md``): slabs of consecutive z with guard gaps of
:data:`GUARD` slices between them (neighbouring 1 mm slices are nearly identical).
The test slab contains z = 86..106, the slices (4 mm apart) that the ``brain-sim-*``,
``radial-*`` and ``tiny-*`` problems test on, so no benchmark is contaminated.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import h5py
import numpy as np

from convexrecon.errors import InputError

__all__ = [
    "MNI_FILE", "BRAIN_Z", "GUARD", "SPLITS", "PROBLEM_TEST_Z", "OOD_SPLITS",
    "mni_volume", "mni_slice", "MNISlices", "DipyT1Coronal", "DipyB0", "FastMRIFolder",
    "image_source",
]

MNI_FILE = "mni_icbm152_t1_2009a.npz"
#: z indices whose brain (voxels above 10% of the maximum) covers at least 1% of
#: the 233 x 197 slice; the rest hold a few voxels of brain stem or vertex, or none.
BRAIN_Z = range(7, 153)
GUARD = 4
#: slabs of z (inclusive ranges), GUARD slices apart:
#: train 7-79 + 129-152 | guard 80-83 | test 84-108 | guard 109-112 | val 113-124 |
#: guard 125-128.
SPLITS: dict[str, tuple[int, ...]] = {
    "train": tuple(range(7, 80)) + tuple(range(129, 153)),
    "val": tuple(range(113, 125)),
    "test": tuple(range(84, 109)),
}
#: the z of the MNI slices the named problems test on (stored axial24 indices 9-14)
PROBLEM_TEST_Z = tuple(range(86, 107, 4))
OOD_SPLITS = ("dipy-t1-coronal", "dipy-b0")


@functools.lru_cache(maxsize=1)
def _volume() -> np.ndarray:
    from convexrecon.problems._data import data_path

    with np.load(data_path(MNI_FILE)) as f:
        vol = f["volume"]
    vol.setflags(write=False)
    return vol


def mni_volume() -> np.ndarray:
    """The bundled MNI ICBM152 2009a T1 template, ``(197, 233, 189)`` uint8 (x, y, z),
    1 mm isotropic, skull stripped (read-only, cached)."""
    return _volume()


def mni_slice(z: int) -> np.ndarray:
    """Axial slice ``z`` as ``(233, 197)`` float64 in [0, 1], anterior at the top
    (``volume[:, :, z].T`` flipped up-down, the orientation of the axial24 file)."""
    vol = _volume()
    if isinstance(z, bool) or not isinstance(z, (int, np.integer)) or not 0 <= z < vol.shape[2]:
        raise InputError(f"z: expected an int in [0, {vol.shape[2]}), got {z!r}")
    return np.flipud(vol[:, :, int(z)].T).astype(np.float64) / 255.0


class MNISlices:
    """The MNI slices of one split (``"train"``, ``"val"`` or ``"test"``), ascending z."""

    def __init__(self, split: str) -> None:
        if split not in SPLITS:
            raise InputError(f"split: expected one of {', '.join(map(repr, SPLITS))}, got {split!r}")
        self.split = split
        self.z = SPLITS[split]

    def __len__(self) -> int:
        return len(self.z)

    def image(self, i: int) -> np.ndarray:
        return mni_slice(self.z[i])

    def label(self, i: int) -> str:
        return f"mni:z={self.z[i]}"


class DipyT1Coronal:
    """Out of distribution: dipy's one real T1 coronal slice ``(256, 256)``."""

    def __len__(self) -> int:
        return 1

    def image(self, i: int) -> np.ndarray:
        from convexrecon.problems._data import data_path

        _check_index(i, 1)
        img = np.load(data_path("t1_coronal_slice.npy")).astype(np.float64)
        return img / img.max()

    def label(self, i: int) -> str:
        return "dipy-t1-coronal"


class DipyB0:
    """Out of distribution: dipy's 10 real diffusion b=0 axial slices ``(128, 128)``."""

    def __len__(self) -> int:
        return 10

    def image(self, i: int) -> np.ndarray:
        from convexrecon.problems._data import b0_volume

        _check_index(i, 10)
        img = b0_volume()[i]
        return img / max(float(img.max()), 1e-12)

    def label(self, i: int) -> str:
        return f"dipy-b0:{i}"


def _check_index(i: int, n: int) -> None:
    if not -n <= i < n:
        raise IndexError(f"index {i} out of range for {n} images")


class FastMRIFolder:
    """Every slice of every fastMRI ``.h5`` file in ``folder`` (sorted by name), read
    lazily: construction reads only the ``kspace`` shapes; :meth:`image` reads one
    slice. The image is the file's reference (``reconstruction_rss`` / ``_esc``) when
    present, else the root-sum-of-squares of the inverse centred FFT of the coils.

    Raises:
        InputError: not a folder, no ``.h5`` file in it, or a file without a 3-D/4-D
            ``kspace`` dataset.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise InputError(f"folder: expected a directory of fastMRI .h5 files, got {str(folder)!r}")
        files = sorted(p for p in root.iterdir() if p.suffix == ".h5" and p.is_file())
        if not files:
            raise InputError(f"folder: expected at least one .h5 file in {str(root)!r}, found none")
        self.files = files
        self.index: list[tuple[int, int]] = []
        for k, p in enumerate(files):
            try:
                with h5py.File(p, "r") as f:
                    d = f.get("kspace")
                    if not isinstance(d, h5py.Dataset) or d.ndim not in (3, 4):
                        raise InputError(f"{p.name}: expected a 'kspace' dataset (slices, [coils,] H, W)")
                    n = d.shape[0]
            except OSError as exc:
                raise InputError(f"{p.name}: expected a readable HDF5 file ({exc})") from exc
            self.index.extend((k, s) for s in range(n))

    def __len__(self) -> int:
        return len(self.index)

    def image(self, i: int) -> np.ndarray:
        from convexrecon.io.fastmri import read_fastmri
        from convexrecon.operators.fft import ifftc

        k, s = self.index[i]
        d = read_fastmri(self.files[k], slices=[s])
        if d.reference is not None:
            img = d.reference[0].abs().to(dtype=d.reference.real.dtype).numpy().astype(np.float64)
        else:
            coils = ifftc(d.kspace[0], dims=(-2, -1))
            img = coils.abs().square().sum(0).sqrt().numpy().astype(np.float64)
        return img / max(float(img.max()), 1e-30)

    def label(self, i: int) -> str:
        k, s = self.index[i]
        return f"fastmri:{self.files[k].name}:{s}"


def image_source(split: str):
    """The source of a named split: ``"train"``, ``"val"``, ``"test"`` (MNI slabs),
    ``"dipy-t1-coronal"`` or ``"dipy-b0"`` (out of distribution)."""
    if split in SPLITS:
        return MNISlices(split)
    if split == "dipy-t1-coronal":
        return DipyT1Coronal()
    if split == "dipy-b0":
        return DipyB0()
    raise InputError(f"split: expected one of {', '.join(map(repr, (*SPLITS, *OOD_SPLITS)))}, "
                     f"got {split!r} (for a fastMRI folder pass source=FastMRIFolder(path))")
