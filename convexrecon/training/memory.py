"""Peak memory of one training step, measured in a fresh process.

:func:`peak_memory` starts a new Python process per call (per configuration), so that
memory freed by an earlier configuration, torch's ~0.5 GB import baseline and the
allocator's caches cannot hide or inflate the figure. In that process it

1. imports ``"package.module:factory"`` and calls ``factory(device=device, **kwargs)``,
   which builds what the step needs (model, optimiser, data, operator) and returns a
   zero-argument ``step()`` that runs one training step (forward, backward, optimiser
   step; or one iteration of a convex solver: anything);
2. runs ``warmup`` steps (e.g. to allocate optimiser state before measuring);
3. records the baseline and resets the peak:
   - CPU: frees the allocator's unused memory (``malloc_trim``), takes the resident set
     size ``VmRSS`` and resets the high-water mark ``VmHWM`` (``/proc/self/clear_refs``);
     where that is impossible, falls back to ``ru_maxrss`` (which then includes setup);
   - GPU: ``torch.cuda.memory_allocated()`` and ``reset_peak_memory_stats()``;
4. runs one ``step()`` under :func:`torch.autograd.graph.saved_tensors_hooks`, counting
   the bytes autograd saves for backward (unique storages; parameters, i.e. leaf
   tensors that require grad, are not counted since they exist anyway);
5. reports the peak above the baseline (CPU: ``VmHWM - VmRSS``; GPU:
   ``max_memory_allocated - memory_allocated``), and ``extra_bytes``: what the step
   says it kept for the backward outside autograd (a zero-argument ``step.extra_bytes``
   callable, e.g. a Broyden solver's ``U, V``), 0 without one.

On the CPU the resident set also holds what glibc keeps of freed blocks, which
depends on the allocation history (peaks of one step varied 1.5x between fresh
processes). ``env=`` sets variables of the measuring process, e.g.
:data:`FIXED_MALLOC` (every block from 128 KiB up mapped on allocation and unmapped
on free), under which the peak follows the live tensors, as ``max_memory_allocated``
does on a GPU. :func:`count_saved` counts the saved-for-backward bytes of any call.

Non-autograd work (a convex solver step) reports ``saved_bytes == 0``.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from ..errors import InputError

__all__ = ["MemoryReport", "peak_memory", "measure_step", "count_saved", "FIXED_MALLOC"]

_MARK = "CONVEXRECON-MEMORY-REPORT "

#: glibc settings of a measuring process whose resident set follows the live tensors
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


@dataclass(frozen=True)
class MemoryReport:
    """Bytes measured for one step; see the module docstring."""

    device: str
    peak_bytes: int  # peak during the step above the baseline
    baseline_bytes: int  # RSS (CPU) or allocated bytes (GPU) before the step
    setup_bytes: int  # growth while the factory built the step (and warm-up ran)
    saved_bytes: int  # saved for backward during the step
    saved_tensors: int  # number of distinct storages saved for backward
    method: str  # "vmhwm", "ru_maxrss" or "cuda"
    extra_bytes: int = 0  # held for the backward outside autograd (step.extra_bytes())


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm(attempts: int = 5) -> bool:
    """Reset ``VmHWM`` to the current RSS; False where the kernel does not support it.

    The check that the reset took (``VmHWM`` within 64 kB of ``VmRSS``) races with the
    process's other threads: RSS that falls between the reset and the reads fails it
    although the reset worked, so it is tried a few times (a kernel without the reset
    fails every time)."""
    for _ in range(attempts):
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            return False
        hwm, rss = _status_kb("VmHWM"), _status_kb("VmRSS")
        if hwm is None or rss is None:
            return False
        if hwm <= rss + 64:
            return True
    return False


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _SavedCounter:
    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, tensor: Any) -> Any:
        if not (tensor.is_leaf and tensor.requires_grad):
            try:
                storage = tensor.untyped_storage()
                self.storages[storage.data_ptr()] = storage.nbytes()
            except (RuntimeError, NotImplementedError):
                self.storages[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    @staticmethod
    def unpack(tensor: Any) -> Any:
        return tensor


def count_saved(fn: Callable[[], Any]) -> tuple[Any, int, int]:
    """Run ``fn()`` counting what autograd saves for backward: ``(fn's result, bytes,
    storages)``, unique storages, parameters (leaves that require grad) not counted."""
    import torch

    counter = _SavedCounter()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        out = fn()
    return out, int(sum(counter.storages.values())), len(counter.storages)


def measure_step(step: Callable[[], Any], *, device: str = "cpu", setup_bytes: int = 0) -> MemoryReport:
    """Measure one call of ``step()`` in this process (:func:`peak_memory` runs it in a fresh one)."""
    import torch

    counter = _SavedCounter()
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        _trim()
        baseline = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            step()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - baseline
        method = "cuda"
    else:
        _trim()
        baseline_kb = _status_kb("VmRSS")
        if baseline_kb is not None and _reset_hwm():
            baseline = baseline_kb * 1024
            with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
                step()
            peak = (_status_kb("VmHWM") or 0) * 1024 - baseline
            method = "vmhwm"
        else:  # no /proc: the peak since process start, less the RSS before the step
            baseline = (baseline_kb or 0) * 1024
            with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
                step()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
            method = "ru_maxrss"
    extra = getattr(step, "extra_bytes", None)
    return MemoryReport(
        extra_bytes=int(extra()) if callable(extra) else 0,
        device=str(dev),
        peak_bytes=max(int(peak), 0),
        baseline_bytes=int(baseline),
        setup_bytes=int(setup_bytes),
        saved_bytes=int(sum(counter.storages.values())),
        saved_tensors=len(counter.storages),
        method=method,
    )


def _load_factory(spec: str) -> Callable[..., Callable[[], Any]]:
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise InputError(f"peak_memory: spec must be 'package.module:factory', got {spec!r}")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"peak_memory: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"peak_memory: {module_name!r} has no callable {attr!r}")
    return factory


def _child(args: dict[str, Any]) -> MemoryReport:
    import torch

    if args.get("threads"):
        torch.set_num_threads(int(args["threads"]))
    factory = _load_factory(args["spec"])
    _trim()
    before = _status_kb("VmRSS") or 0
    if torch.device(args["device"]).type == "cuda":
        before_gpu = torch.cuda.memory_allocated(args["device"])
    step = factory(device=args["device"], **args["kwargs"])
    if not callable(step):
        raise InputError(f"peak_memory: {args['spec']!r} must return a zero-argument step function")
    for _ in range(int(args["warmup"])):
        step()
    if torch.device(args["device"]).type == "cuda":
        setup = torch.cuda.memory_allocated(args["device"]) - before_gpu
    else:
        _trim()
        setup = ((_status_kb("VmRSS") or 0) - before) * 1024
    return measure_step(step, device=args["device"], setup_bytes=setup)


def peak_memory(
    spec: str,
    *,
    kwargs: Mapping[str, Any] | None = None,
    device: str = "cpu",
    warmup: int = 0,
    threads: int | None = None,
    timeout: float = 600.0,
    env: Mapping[str, str] | None = None,
) -> MemoryReport:
    """Peak memory of one ``step()`` built by ``spec`` (``"pkg.module:factory"``), in a fresh process.

    ``factory(device=device, **kwargs)`` must return a zero-argument step function;
    ``kwargs`` must be JSON-serialisable. The child process sees this process's
    ``sys.path`` and environment, updated by ``env`` (e.g. :data:`FIXED_MALLOC`).
    Errors in the child are raised here as :class:`InputError` with its last lines
    of stderr.
    """
    kwargs = dict(kwargs or {})
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise InputError(f"peak_memory: spec must be 'package.module:factory', got {spec!r}")
    # the spec is imported in the child only (importing it here could be heavy)
    try:
        found = importlib.util.find_spec(spec.split(":")[0])
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise InputError(f"peak_memory: cannot find module {spec.split(':')[0]!r} of spec {spec!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise InputError(f"peak_memory: warmup must be a non-negative int, got {warmup!r}")
    try:
        payload = json.dumps({"spec": spec, "kwargs": kwargs, "device": str(device), "warmup": warmup,
                              "threads": threads})  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise InputError(f"peak_memory: kwargs must be JSON-serialisable ({exc})") from None
    child_env = dict(os.environ)
    child_env.update({str(k): str(v) for k, v in (env or {}).items()})
    env = child_env
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run(
        [sys.executable, "-m", "convexrecon.training.memory", payload],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_MARK):
            return MemoryReport(**json.loads(line[len(_MARK) :]))
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    raise InputError(f"peak_memory: measuring {spec!r} failed (exit {proc.returncode}): {tail}")


if __name__ == "__main__":  # the fresh process
    report = _child(json.loads(sys.argv[1]))
    print(_MARK + json.dumps(asdict(report)), flush=True)
