"""Shared helpers of the readers and writers: atomic writes and input checks."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from convexrecon.errors import InputError

__all__ = ["atomic_path", "to_numpy", "check_array_finite", "existing_file"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the directory of ``path``; on success rename it onto
    ``path`` with :func:`os.replace` (atomic on POSIX), on failure delete it.

    No partial output is ever left at ``path``.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"path: expected an existing directory for {str(target)!r}, "
                         f"got missing directory {str(directory)!r}")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=suffix + ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def to_numpy(value: Any, name: str) -> np.ndarray:
    """A numpy array from a tensor, array or sequence (detached, on the CPU)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().resolve_conj().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected an array or tensor, got {type(value).__name__}") from exc


def check_array_finite(arr: np.ndarray, name: str) -> np.ndarray:
    """Raise InputError if a floating or complex array holds NaN or Inf."""
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(f"{name}: expected finite values, found {int(bad.sum())} NaN/Inf entries")
    return arr


def existing_file(path: str | os.PathLike, name: str = "path") -> Path:
    """``Path(path)``, raising InputError if it is not an existing file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{name}: expected an existing file, got {str(p)!r}")
    return p
