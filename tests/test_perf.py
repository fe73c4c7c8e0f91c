"""Process-level allocator setting (glibc): applied, idempotent, harmless elsewhere."""

from __future__ import annotations

import platform

import torch

from convexrecon.perf import retain_freed_memory


def test_retain_freed_memory_applies_and_allocations_still_work():
    ok = retain_freed_memory()
    assert isinstance(ok, bool)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert ok
    assert retain_freed_memory(max_block=2 ** 40) == ok  # clamped to the C int range
    x = torch.ones(4 * 2 ** 20)  # 16 MB: from the heap now, and freed without a trim
    assert float(x.sum()) == 4 * 2 ** 20
