"""Process-level allocator setting (glibc): applied, idempotent, harmless elsewhere."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
import torch

from convexrecon.perf import retain_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Runs in a fresh process (the setting changes the whole process): glibc's own
# statistics (mallinfo2) around a 16 MB block allocated and freed.
_PROBE = """
import ctypes, json, sys, torch
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
applied = None
if sys.argv[1] == "retain":
    from convexrecon.perf import retain_freed_memory
    applied = retain_freed_memory()
# a raw 64 MB block (above glibc's largest dynamic mmap threshold, 32 MB), malloc then
# free with nothing in between: mmapped by default; with the setting from the heap,
# and kept at its top after the free (no trim)
a = libc.mallinfo2()
block = libc.malloc(64 * 2 ** 20)
b = libc.mallinfo2()
libc.free(block)
c = libc.mallinfo2()
# and torch's allocations still work
x = torch.ones(4 * 2 ** 20)
total = float(x.sum())
print(json.dumps({"applied": applied, "mmap": b.hblkhd - a.hblkhd, "used": b.uordblks - a.uordblks,
                  "kept_free": c.keepcost, "sum": total}))
"""

MB64 = 64 * 2 ** 20


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_retain_freed_memory_is_idempotent_and_clamped():
    ok = retain_freed_memory()
    assert isinstance(ok, bool)
    assert ok == GLIBC
    assert retain_freed_memory(max_block=2 ** 40) == ok  # clamped to the C int range
    x = torch.ones(4 * 2 ** 20)
    assert float(x.sum()) == 4 * 2 ** 20


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's mallopt; elsewhere it does nothing")
def test_retain_freed_memory_applies_and_allocations_still_work():
    """Without the setting a 64 MB block is mmapped (the probe sees it); with it the
    block comes from the heap, and the heap keeps it after the free (no trim)."""
    plain = _probe("plain")
    assert plain["mmap"] >= MB64, plain  # the default: a fresh mmap per large block
    kept = _probe("retain")
    assert kept["applied"] is True, kept
    assert kept["mmap"] < 2 ** 20 and kept["used"] >= MB64, kept
    assert kept["kept_free"] >= MB64, kept  # the freed block stays in the heap (keepcost)
    assert kept["sum"] == plain["sum"] == 4 * 2 ** 20
