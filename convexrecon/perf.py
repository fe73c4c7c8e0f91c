"""Process-level performance settings for long CPU runs (opt-in).

glibc's ``malloc`` serves large blocks (above its mmap threshold) with fresh ``mmap``
calls and hands freed memory at the top of the heap back to the kernel (above its
trim threshold). An iterative solver that allocates the same large temporaries every
iteration then page-faults them in again each time: on a convolutional ReLU
program this machine spent half its time in the kernel (3.5 million page faults,
8.6 s of system time in a 16.5 s run; 8.6 s in all with :func:`retain_freed_memory`;
``benchmarks/convex_relu_conv.py --small [--no-retain]``).

Library code never calls this: it changes the whole process. The CLI and the
benchmarks do; call it at the start of your own scripts, or set the environment
variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` before Python starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_INT_MAX = 2 ** 31 - 1


def retain_freed_memory(max_block: int = 2 ** 30) -> bool:
    """Let glibc keep and reuse freed memory instead of returning it to the kernel.

    Blocks up to ``max_block`` bytes come from the heap (not from ``mmap``) and the
    heap is never trimmed, so the process keeps its peak memory. Returns ``True`` when
    both settings were applied, ``False`` on other C libraries (then nothing changes).
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    block = max(1, min(int(max_block), _INT_MAX))
    return bool(mallopt(_M_MMAP_THRESHOLD, block)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
