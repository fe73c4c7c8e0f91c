"""Thread limits for torch and for the BLAS libraries numpy and scipy load.

torch's intra-op threads are set with ``torch.set_num_threads``. numpy and scipy
ship their own OpenBLAS, whose thread count is normally fixed by
``OPENBLAS_NUM_THREADS`` before import. On a busy, shared machine a multi-threaded
OpenBLAS can be a hundred times slower than one thread (a 361 x 144 complex SVD
inside ESPIRiT took 6 to 10 s with default threads and 0.08 s with one, measured on
the 2-core development machine under load), so ``--threads`` limits both.

:func:`set_blas_threads` finds the OpenBLAS libraries already loaded in this
process (Linux: ``/proc/self/maps``) and calls their ``*openblas_set_num_threads*``
entry point through ctypes, the approach of threadpoolctl. Elsewhere it does
nothing.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

__all__ = ["set_blas_threads", "set_all_threads"]

_SETTERS = (
    "openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "scipy_openblas_set_num_threads64_",
)


def _loaded_openblas() -> list[str]:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    found: list[str] = []
    try:
        text = maps.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and "openblas" in parts[-1].lower() and parts[-1] not in found:
            found.append(parts[-1])
    return found


def set_blas_threads(n: int) -> list[str]:
    """Limit every loaded OpenBLAS to ``n`` threads; return the libraries changed.

    numpy and scipy.linalg are imported first so that their OpenBLAS is loaded.
    """
    import numpy  # noqa: F401  (loads numpy's OpenBLAS)

    try:
        import scipy.linalg  # noqa: F401  (loads scipy's own OpenBLAS)
    except ImportError:  # pragma: no cover - scipy is a dependency
        pass

    changed: list[str] = []
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                fn.restype = None
                fn(int(n))
                changed.append(path)
                break
    return changed


def set_all_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` and :func:`set_blas_threads` ``(n)``."""
    import torch

    torch.set_num_threads(int(n))
    set_blas_threads(int(n))
