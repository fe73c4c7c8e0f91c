"""Shared timing helpers for the benchmarks.

- :func:`configure`: set torch's and OpenBLAS's threads and flush denormals (the
  iteration times of iterative solvers otherwise vary tenfold on these machines);
  returns a one-line description of the set-up for the report.
- :func:`measure`: the median wall time of ``repeats`` calls after ``warmup``
  calls, with every sample kept (:class:`Timing`).
- :func:`interleaved`: the same for several competitors, run round-robin so that a
  change of machine load hits them alike (use it for every ratio);
- :func:`time_subprocess`: the same for an external command.
- :func:`table`: a plain-text table (no colour codes), for logs and docs.

The benchmarks print ratios ``peer time / our time`` measured in the same run, on
the same machine, with the same thread settings.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = ["Timing", "configure", "measure", "interleaved", "time_subprocess", "table", "fmt_time"]


@dataclass
class Timing:
    """Wall times (seconds) of repeated calls; ``value`` holds the last call's result."""

    times: list[float] = field(default_factory=list)
    value: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def best(self) -> float:
        return min(self.times) if self.times else float("nan")

    @property
    def spread(self) -> float:
        """``(max - min) / median``: how noisy the samples were."""
        if len(self.times) < 2:
            return 0.0
        return (max(self.times) - min(self.times)) / self.median

    def __str__(self) -> str:
        return f"{fmt_time(self.median)} (min {fmt_time(self.best)}, n={len(self.times)})"


def fmt_time(seconds: float) -> str:
    """``12.3 ms`` / ``1.23 s``."""
    if seconds != seconds:  # nan
        return "nan"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1.0 else f"{seconds:.2f} s"


def configure(threads: int = 1, *, flush_denormal: bool = True) -> str:
    """Set torch and OpenBLAS threads and denormal flushing; describe the set-up.

    OpenBLAS (numpy's and scipy's, which sigpy uses) is limited through its
    ``*openblas_set_num_threads*`` entry point (see :mod:`convexrecon.cli._threads`);
    ``OMP_NUM_THREADS`` is also set for libraries loaded later.
    """
    import torch

    from convexrecon.cli._threads import set_blas_threads

    if threads < 1:
        raise ValueError(f"threads: expected an integer >= 1, got {threads}")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    torch.set_num_threads(threads)
    blas = set_blas_threads(threads)
    denormal = torch.set_flush_denormal(flush_denormal) if flush_denormal else False
    try:
        load = "load %.1f/%.1f/%.1f" % os.getloadavg()
    except OSError:
        load = "load n/a"
    return (f"torch {torch.__version__}, {threads} thread(s) (torch + {len(blas)} OpenBLAS), "
            f"flush_denormal={bool(denormal)}, {os.cpu_count()} CPUs, {platform.machine()}, {load}")


def measure(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1,
            sync: Callable[[], None] | None = None) -> Timing:
    """Median-of-``repeats`` wall time of ``fn()`` after ``warmup`` untimed calls.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before reading the clock.
    """
    if repeats < 1:
        raise ValueError(f"repeats: expected >= 1, got {repeats}")
    out = Timing()
    for _ in range(max(0, warmup)):
        out.value = fn()
        if sync is not None:
            sync()
    for _ in range(repeats):
        t0 = time.perf_counter()
        out.value = fn()
        if sync is not None:
            sync()
        out.times.append(time.perf_counter() - t0)
    return out


def interleaved(fns: dict[str, Callable[[], Any]], *, repeats: int = 5, warmup: int = 1,
                sync: Callable[[], None] | None = None) -> dict[str, Timing]:
    """Time several functions round-robin: warm-up each, then ``repeats`` rounds of one
    call each. Returns a :class:`Timing` per name."""
    if repeats < 1:
        raise ValueError(f"repeats: expected >= 1, got {repeats}")
    out = {name: Timing() for name in fns}
    for _ in range(max(0, warmup)):
        for name, fn in fns.items():
            out[name].value = fn()
            if sync is not None:
                sync()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out[name].value = fn()
            if sync is not None:
                sync()
            out[name].times.append(time.perf_counter() - t0)
    return out


def time_subprocess(cmd: Sequence[str], *, repeats: int = 3, warmup: int = 0,
                    env: dict[str, str] | None = None, cwd: str | None = None) -> Timing:
    """Median wall time of running ``cmd`` (raises ``CalledProcessError`` on failure).

    ``value`` is the last run's ``CompletedProcess`` (stdout and stderr captured).
    """

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), check=True, capture_output=True, text=True,
                              env=env, cwd=cwd)

    return measure(run, repeats=repeats, warmup=warmup)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> str:
    """A plain-text table; the first column is left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    out = [title] if title else []
    out += [line(cells[0]), rule] + [line(r) for r in cells[1:]]
    return "\n".join(out)
