"""ISMRMRD raw data (HDF5) through the ``ismrmrd`` package.

Cartesian acquisitions are placed into a k-space grid with the encoding counters:
``(S, C, RO, E1)`` for 2-D and ``(S, C, E2, RO, E1)`` for 3-D encodings, with ``S``
the slices, the readout ``RO`` on axis ``-2`` and the phase encode ``E1`` last (the
package layout; the readout keeps any oversampling, see
:func:`convexrecon.preprocess.remove_readout_oversampling`). Repeated lines
(averages) are averaged. Noise, navigator, phase-correction and dummy scans are
skipped.

Acquisitions that carry a trajectory are returned as non-Cartesian samples
``(S, C, K)`` with the trajectory ``(D, K)`` exactly as stored in the file (its units
are the sequence's; convert with :func:`convexrecon.sampling.grid_to_radians`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from convexrecon.errors import InputError
from convexrecon.io._common import check_array_finite, existing_file

__all__ = ["read_ismrmrd", "is_ismrmrd"]

_SKIP_FLAGS = ("ACQ_IS_NOISE_MEASUREMENT", "ACQ_IS_NAVIGATION_DATA", "ACQ_IS_PHASECORR_DATA",
               "ACQ_IS_DUMMYSCAN_DATA", "ACQ_IS_HPFEEDBACK_DATA", "ACQ_IS_RTFEEDBACK_DATA")


def is_ismrmrd(path: str | os.PathLike, *, dataset: str = "dataset") -> bool:
    """True if ``path`` is an HDF5 file with an ISMRMRD ``dataset`` group holding a header."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return dataset in f and "xml" in f[dataset]
    except OSError:
        return False


def _offset(limit: Any, size: int) -> int:
    """Index shift that puts the counter ``limit.center`` at ``size // 2``."""
    if limit is None or (int(limit.center) == 0 and int(limit.maximum) > 0) or size <= 1:
        return 0
    return size // 2 - int(limit.center)


def read_ismrmrd(path: str | os.PathLike, *, dataset: str = "dataset"
                 ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Read an ISMRMRD file.

    Args:
        path: the ISMRMRD HDF5 file.
        dataset: the dataset group inside the file.

    Returns:
        ``(kspace, traj, header)``: complex64 k-space (see the module docstring for the
        layout), the trajectory ``(D, K)`` float32 or None for Cartesian data, and the
        XML header string.

    Raises:
        InputError: a missing or unreadable file, no header or acquisitions,
            inconsistent readout lengths or coil counts, counters outside the encoded
            matrix, non-finite samples.
    """
    import ismrmrd

    p = existing_file(path)
    if not is_ismrmrd(p, dataset=dataset):
        raise InputError(f"path: expected an ISMRMRD HDF5 file with group '/{dataset}' and an "
                         f"xml header, got {str(p)!r}")
    try:
        dset = ismrmrd.Dataset(str(p), dataset, create_if_needed=False, mode="r")
    except (OSError, KeyError) as exc:
        raise InputError(f"path: expected a readable ISMRMRD file, got {str(p)!r} ({exc})") from exc
    try:
        xml = dset.read_xml_header()
        xml = xml.decode("utf-8") if isinstance(xml, bytes) else str(xml)
        try:
            header = ismrmrd.xsd.CreateFromDocument(xml)
        except Exception as exc:  # the xsd parser raises many exception types
            raise InputError(f"path: expected a valid ISMRMRD XML header in {str(p)!r} ({exc})") from exc
        try:
            n_acq = dset.number_of_acquisitions()
        except (KeyError, OSError, ValueError) as exc:
            raise InputError(f"path: expected acquisitions in {str(p)!r} ({exc})") from exc
        acqs = []
        skip = [getattr(ismrmrd, f) for f in _SKIP_FLAGS if hasattr(ismrmrd, f)]
        for i in range(n_acq):
            try:
                acq = dset.read_acquisition(i)
            except (OSError, ValueError, RuntimeError) as exc:
                raise InputError(f"path: acquisition {i} is unreadable (truncated file?) ({exc})") from exc
            if any(acq.is_flag_set(f) for f in skip):
                continue
            acqs.append(acq)
    finally:
        dset.close()
    if not acqs:
        raise InputError(f"path: expected at least one imaging acquisition in {str(p)!r}, got none")

    coils = {a.active_channels for a in acqs}
    if len(coils) != 1:
        raise InputError(f"path: expected one coil count for all acquisitions, got {sorted(coils)}")
    n_coils = coils.pop()
    n_slices = max(int(a.idx.slice) for a in acqs) + 1

    if any(a.trajectory_dimensions > 0 for a in acqs):
        return _noncartesian(acqs, n_coils, n_slices) + (xml,)

    enc = header.encoding[0]
    reads = {a.number_of_samples for a in acqs}
    if len(reads) != 1:
        raise InputError(f"path: expected one readout length for Cartesian data, got {sorted(reads)}")
    n_ro = reads.pop()
    limits = enc.encodingLimits
    e1_lim = getattr(limits, "kspace_encoding_step_1", None)
    e2_lim = getattr(limits, "kspace_encoding_step_2", None)
    n_e1 = max(int(enc.encodedSpace.matrixSize.y),
               (int(e1_lim.maximum) + 1) if e1_lim is not None else 1)
    n_e2 = max(int(enc.encodedSpace.matrixSize.z),
               (int(e2_lim.maximum) + 1) if e2_lim is not None else 1)
    off1, off2 = _offset(e1_lim, n_e1), _offset(e2_lim, n_e2)

    grid = np.zeros((n_slices, n_coils, n_e2, n_ro, n_e1), dtype=np.complex64)
    count = np.zeros((n_slices, n_e2, n_e1), dtype=np.int32)
    for a in acqs:
        e1 = int(a.idx.kspace_encode_step_1) + off1
        e2 = int(a.idx.kspace_encode_step_2) + off2
        if not (0 <= e1 < n_e1 and 0 <= e2 < n_e2):
            raise InputError(f"path: expected encoding counters inside the matrix ({n_e2}, {n_e1}), "
                             f"got (e2={e2}, e1={e1})")
        data = np.asarray(a.data, dtype=np.complex64)
        if a.is_flag_set(ismrmrd.ACQ_IS_REVERSE):
            data = data[:, ::-1]
        s = int(a.idx.slice)
        grid[s, :, e2, :, e1] += data
        count[s, e2, e1] += 1
    np.divide(grid, np.maximum(count, 1)[:, None, :, None, :], out=grid)
    check_array_finite(grid, "kspace")
    if n_e2 == 1:
        grid = grid[:, :, 0]
    return torch.from_numpy(grid), None, xml


def _noncartesian(acqs: list, n_coils: int, n_slices: int) -> tuple[torch.Tensor, torch.Tensor]:
    dims = {a.trajectory_dimensions for a in acqs}
    if len(dims) != 1:
        raise InputError(f"path: expected one trajectory dimension for all acquisitions, got {sorted(dims)}")
    per_slice: list[list] = [[] for _ in range(n_slices)]
    for a in acqs:
        per_slice[int(a.idx.slice)].append(a)
    sizes = {sum(a.number_of_samples for a in group) for group in per_slice}
    if len(sizes) != 1:
        raise InputError(f"path: expected the same number of samples per slice, got {sorted(sizes)}")
    ksp = np.stack([np.concatenate([np.asarray(a.data, np.complex64) for a in g], axis=1)
                    for g in per_slice])
    traj = np.concatenate([np.asarray(a.traj, np.float32) for a in per_slice[0]], axis=0).T
    check_array_finite(ksp, "kspace")
    check_array_finite(traj, "traj")
    return torch.from_numpy(ksp), torch.from_numpy(np.ascontiguousarray(traj))
