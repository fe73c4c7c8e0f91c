"""Parsing and validation of the options shared by the commands.

Each parser raises :class:`convexrecon.errors.InputError` naming the option, what
was expected and what was given; :func:`cli._errors.cli_errors` prints it as one line.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from convexrecon.errors import InputError

if TYPE_CHECKING:  # torch is imported lazily: `--help` should not pay for it
    import torch

__all__ = [
    "INPUT_SUFFIXES",
    "OUTPUT_SUFFIXES",
    "METHODS",
    "parse_device",
    "parse_lam",
    "parse_slices",
    "parse_method",
    "set_threads",
    "check_iters",
    "resolve_slices",
    "check_input_path",
    "check_output_path",
]

INPUT_SUFFIXES = (".h5", ".hdf5", ".cfl", ".hdr", ".npy")
OUTPUT_SUFFIXES = (".h5", ".npy")
METHODS = ("l1-wavelet", "sense", "tv", "grappa", "zero-filled", "learned")

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def parse_device(value: str) -> "torch.device":
    """``cpu``, ``cuda`` or ``cuda:N``; CUDA must be available and N must exist."""
    import torch

    text = (value or "").strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA.match(text)
    if match is None:
        raise InputError(f"--device: expected 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    if not torch.cuda.is_available():
        raise InputError(f"--device: CUDA is not available on this machine (asked for {value!r}); use --device cpu")
    if match.group(1) is not None:
        index = int(match.group(1))
        count = torch.cuda.device_count()
        if index >= count:
            raise InputError(f"--device: expected a CUDA index below {count}, got {value!r}")
        return torch.device("cuda", index)
    return torch.device("cuda")


def parse_lam(value: str | None) -> float | str | None:
    """``None`` (the method's default), ``"auto"``, or a finite number > 0."""
    if value is None:
        return None
    text = value.strip().lower()
    if text == "auto":
        return "auto"
    try:
        lam = float(text)
    except ValueError:
        raise InputError(f"--lam: expected a number > 0 or 'auto', got {value!r}") from None
    if not math.isfinite(lam) or lam <= 0:
        raise InputError(f"--lam: expected a finite number > 0 or 'auto', got {value!r}")
    return lam


def parse_slices(value: str | None) -> list[int] | slice | None:
    """``None`` (every slice), ``N``, ``A:B`` (half-open) or ``N,M,...``."""
    if value is None:
        return None
    text = value.replace(" ", "")
    bad = InputError(f"--slice: expected N, A:B or N,M,... (non-negative integers), got {value!r}")
    try:
        if ":" in text:
            start_s, stop_s = text.split(":", 1)
            start = int(start_s) if start_s else 0
            stop = int(stop_s) if stop_s else None
            if start < 0 or (stop is not None and stop <= start):
                raise bad
            return slice(start, stop)
        items = [int(v) for v in text.split(",")]
    except ValueError:
        raise bad from None
    if not items or any(i < 0 for i in items):
        raise bad
    return items


def resolve_slices(spec: list[int] | slice | None, n_slices: int) -> list[int] | None:
    """Indices selected by ``spec`` among ``n_slices``; InputError when out of range."""
    if spec is None:
        return None
    if isinstance(spec, slice):
        idx = list(range(n_slices))[spec]
        if not idx:
            raise InputError(f"--slice: the range {spec.start}:{spec.stop if spec.stop is not None else ''} "
                             f"selects no slice of {n_slices}")
        return idx
    for i in spec:
        if i >= n_slices:
            raise InputError(f"--slice: expected indices below {n_slices} (the number of slices), got {i}")
    return list(spec)


def parse_method(value: str) -> str:
    """One of :data:`METHODS` (``_`` accepted for ``-``, case-insensitive)."""
    text = (value or "").strip().lower().replace("_", "-")
    aliases = {"l1": "l1-wavelet", "l1wavelet": "l1-wavelet", "cg-sense": "sense",
               "zero": "zero-filled", "zerofilled": "zero-filled", "zf": "zero-filled"}
    text = aliases.get(text, text)
    if text not in METHODS:
        raise InputError(f"--method: expected one of {', '.join(METHODS)}, got {value!r}")
    return text


def check_iters(iters: int | None, option: str = "--iters") -> int | None:
    """``None`` (the method's default) or an integer >= 1."""
    if iters is not None and iters < 1:
        raise InputError(f"{option}: expected an integer >= 1, got {iters}")
    return iters


def set_threads(threads: int | None) -> None:
    """Limit torch's and OpenBLAS's threads (``None`` keeps the defaults).

    See :mod:`convexrecon.cli._threads` for why BLAS is limited too.
    """
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads: expected an integer >= 1, got {threads}")
    from convexrecon.cli._threads import set_all_threads

    set_all_threads(int(threads))


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def check_input_path(path: Path, *, suffixes: Sequence[str] = INPUT_SUFFIXES) -> Path:
    """The input must exist (for ``.cfl``, with its ``.hdr``) and have a known suffix."""
    suffix = _suffix(path)
    if suffix not in suffixes:
        raise InputError(f"INPUT: expected a file ending in {', '.join(suffixes)}, got {str(path)!r}")
    targets = [path]
    if suffix in (".cfl", ".hdr"):
        targets = [path.with_suffix(".cfl"), path.with_suffix(".hdr")]
    for target in targets:
        if not target.exists():
            raise InputError(f"{target}: no such file")
        if target.is_dir():
            raise InputError(f"{target}: is a directory, expected a file")
    return path


def check_output_path(path: Path | None, option: str, suffixes: Sequence[str]) -> Path | None:
    """An output path must have an allowed suffix and an existing parent folder."""
    if path is None:
        return None
    if _suffix(path) not in suffixes:
        raise InputError(f"{option}: expected a path ending in {', '.join(suffixes)}, got {str(path)!r}")
    if path.is_dir():
        raise InputError(f"{option}: {str(path)!r} is a directory, expected a file path")
    if not path.parent.exists():
        raise InputError(f"{option}: the folder {str(path.parent)!r} does not exist")
    return path
