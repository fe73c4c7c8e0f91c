"""Regenerate the derived files in ``problems/data`` from the original data.

Run from a checkout: ``python -m convexrecon.problems.make_data SOURCE_DIR`` where
``SOURCE_DIR`` holds the original files (``/work/shared/data`` on the team machines).
It writes:

- ``mni_icbm152_t1_2009a_axial24.npz``: 24 axial slices (z = 50, 54, ..., 142) of the
  MNI volume as uint8 ``(24, 233, 197)`` (rows anterior to posterior), plus ``z_index``;
- ``brain_8coil_espirit_maps.npy``: ESPIRiT maps of ``brain_8coil_poisson_ksp.npy``;
- ``phantom32_cc8_espirit.npz``: the 8x32 PCA coil-compression matrix of the phantom
  and the ESPIRiT maps of the compressed, fully sampled phantom;
- ``SHA256SUMS`` of every data file.

The ESPIRiT maps are precomputed because sigpy's ESPIRiT takes seconds on a CPU;
``tests/test_problems.py`` (slow) checks that they match a fresh computation.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np

from convexrecon.coils import coil_compress, espirit

DATA = Path(__file__).resolve().parent / "data"
MNI_Z = np.arange(50, 143, 4)
COPIED = ("LICENSE.dipy", "LICENSE.pulseq", "LICENSE.sigpy-mri-tutorial", "b0_10slices.npz",
          "brain_8coil_poisson_ksp.npy", "brain_radial_96x512_coord.npy",
          "phantom_32coil_full_raw.npy", "mni_icbm152_t1_2009a.npz")
ESPIRIT_ARGS = dict(calib_width=24, thresh=0.02, kernel_width=6, crop=0.95, max_iter=100)


def mni_subset(volume: np.ndarray) -> np.ndarray:
    """The stored axial slices: ``volume[:, :, z].T`` flipped up-down, for z in MNI_Z."""
    return np.stack([np.flipud(volume[:, :, z].T) for z in MNI_Z])


def brain_maps(ksp: np.ndarray) -> np.ndarray:
    """ESPIRiT maps of the real brain k-space."""
    return espirit(ksp, **ESPIRIT_ARGS).numpy()


def phantom_cc(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(compression matrix (8, 32), ESPIRiT maps (8, 64, 64)) of the phantom raw data."""
    full = raw.transpose(1, 0, 2)
    kc, matrix = coil_compress(full, 8)
    return matrix.numpy().astype(np.complex64), espirit(kc, **ESPIRIT_ARGS).numpy()


def main(source: str) -> None:
    src = Path(source)
    for name in COPIED:
        shutil.copyfile(src / name, DATA / name)
    with np.load(src / "mni_icbm152_t1_2009a.npz") as f:
        sl = mni_subset(f["volume"])
    np.savez_compressed(DATA / "mni_icbm152_t1_2009a_axial24.npz", slices=sl,
                        z_index=MNI_Z.astype(np.int16))
    np.save(DATA / "brain_8coil_espirit_maps.npy",
            brain_maps(np.load(src / "brain_8coil_poisson_ksp.npy")))
    matrix, maps = phantom_cc(np.load(src / "phantom_32coil_full_raw.npy"))
    np.savez_compressed(DATA / "phantom32_cc8_espirit.npz", matrix=matrix, maps=maps)
    lines = []
    for p in sorted(DATA.iterdir()):
        if p.suffix in (".npy", ".npz"):
            lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n")
    (DATA / "SHA256SUMS").write_text("".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m convexrecon.problems.make_data SOURCE_DIR")
    main(sys.argv[1])
