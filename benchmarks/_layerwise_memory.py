"""Training-memory study of ``benchmarks/layerwise.py``: peaks of one training step in a
fresh process per configuration and repeat (:func:`convexrecon.training.peak_memory`),
reported as the median and the range over the repeats; and the largest batch that
fits a memory budget.

Measurement settings (why the earlier end-to-end peaks varied 1.5x, see
``docs/BENCHMARKS.md``):

- ``warmup=1``: the measured step is the second one, so one-time work (lazy
  initialisation of kernels, Adam's state on the first step, first-touch of
  allocator arenas) is setup, reported as ``setup_mb``, not part of the peak;
- glibc's *dynamic* mmap threshold is switched off in the measured processes
  (``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` fixed at 128 KiB):
  every buffer from 128 KiB up is mapped on allocation and unmapped on free, so the
  resident set follows the live tensors instead of what the heap happened to keep
  from an earlier allocation pattern.
"""

from __future__ import annotations

import os
import statistics
from typing import Any, Sequence

LW = "convexrecon.nets.layerwise_memory:layerwise_step"
E2E = "convexrecon.nets.layerwise_memory:e2e_step"
MINIBATCH = "convexrecon.nets.layerwise_memory:minibatch_step"
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def fixed_malloc(enabled: bool = True) -> None:
    """Set (or clear) :data:`MALLOC_ENV` in this process's environment, which the
    measured child processes inherit."""
    for k, v in MALLOC_ENV.items():
        if enabled:
            os.environ[k] = v
        else:
            os.environ.pop(k, None)


def measure(spec: str, kwargs: dict[str, Any], *, repeats: int, threads: int,
            warmup: int = 1) -> dict[str, Any]:
    """``repeats`` fresh-process peaks of one step: median, range, all runs (MB)."""
    from convexrecon.training import peak_memory

    runs = [peak_memory(spec, kwargs=kwargs, threads=threads, warmup=warmup) for _ in range(repeats)]
    peaks = [r.peak_bytes / 2**20 for r in runs]
    return dict(median_mb=statistics.median(peaks), min_mb=min(peaks), max_mb=max(peaks), runs_mb=peaks,
                setup_mb=statistics.median(r.setup_bytes / 2**20 for r in runs),
                saved_mb=statistics.median(r.saved_bytes / 2**20 for r in runs))


def sweep(configs: Sequence[tuple[int, int, int]], *, n: int, size: int, threads: int,
          iters: int = 3, log=print) -> list[dict[str, Any]]:
    """Layer-wise step against end-to-end step per ``(depth, patterns, repeats)``; the
    ratio of the medians and its range over the repeats (min/max over the pairs)."""
    rows = []
    for depth, p, repeats in configs:
        kw = dict(depth=depth, n=n, size=size, patterns=p)
        lw = measure(LW, dict(kw, iters=iters), repeats=repeats, threads=threads)
        e2e = measure(E2E, kw, repeats=repeats, threads=threads)
        ratios = [a / max(b, 1e-9) for a in lw["runs_mb"] for b in e2e["runs_mb"]]
        rows.append(dict(depth=depth, patterns=p, batch=n, size=size, layerwise=lw, e2e=e2e,
                         ratio=lw["median_mb"] / max(e2e["median_mb"], 1e-9),
                         ratio_min=min(ratios), ratio_max=max(ratios)))
        log(f"    depth {depth}, P={p}: layer-wise {lw['median_mb']:.1f} MB [{lw['min_mb']:.1f}, "
            f"{lw['max_mb']:.1f}], end-to-end {e2e['median_mb']:.1f} MB [{e2e['min_mb']:.1f}, "
            f"{e2e['max_mb']:.1f}] (saved for backward {e2e['saved_mb']:.1f}), ratio "
            f"{rows[-1]['ratio']:.2f} [{rows[-1]['ratio_min']:.2f}, {rows[-1]['ratio_max']:.2f}]",
            flush=True)
    return rows


def largest_fitting(spec: str, kwargs: dict[str, Any], key: str, candidates: Sequence[int], *,
                    budget_mb: float, threads: int, log=print) -> dict[str, Any]:
    """The largest ``kwargs[key]`` among ``candidates`` (ascending) whose step peak plus
    setup fits ``budget_mb``; stops at the first that does not fit."""
    probes, best = [], None
    for c in sorted(candidates):
        m = measure(spec, dict(kwargs, **{key: int(c)}), repeats=1, threads=threads)
        total = m["median_mb"] + m["setup_mb"]
        probes.append(dict(value=int(c), peak_mb=m["median_mb"], setup_mb=m["setup_mb"], total_mb=total))
        if total > budget_mb:
            break
        best = int(c)
    shown = ", ".join(f"{p['value']}: {p['total_mb']:.0f} MB" for p in probes)
    log(f"    {spec.split(':')[1]}: largest {key} within {budget_mb:.0f} MB: {best} (probes: {shown})",
        flush=True)
    return dict(spec=spec, key=key, budget_mb=budget_mb, largest=best, probes=probes)
