"""One registry of every operator, shared by the registry-wide tests.

Each ``tests/cases_*.py`` module registers factories with :func:`register`. A factory
takes a complex dtype and returns an operator built in that precision. The
registry-wide tests (``tests/test_operator_registry.py``) run the dot test,
linearity, ``A.N == A.H @ A`` and the composition-adjoint rule on every case.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from convexrecon.operators import Operator


@dataclass(frozen=True)
class Case:
    """A registered operator.

    Attributes:
        factory: ``dtype -> Operator``.
        normal_rtol: tolerance of ``A.N x`` against ``A.H(A(x))`` in complex128;
            exact operators use 1e-10, an approximate (Toeplitz) normal states its
            accuracy.
        real_linear: compare real parts only in the dot test.
        batch: a batch shape the operator must accept.
    """

    factory: Callable[[torch.dtype], Operator]
    normal_rtol: float = 1e-10
    real_linear: bool = False
    batch: tuple[int, ...] = (2,)


CASES: dict[str, Case] = {}


def register(name: str, *, normal_rtol: float = 1e-10, real_linear: bool = False,
             batch: tuple[int, ...] = (2,)):
    """Decorator registering ``factory(dtype) -> Operator`` under ``name``."""

    def deco(factory):
        if name in CASES:
            raise KeyError(f"operator case {name!r} registered twice")
        CASES[name] = Case(factory, normal_rtol, real_linear, batch)
        return factory

    return deco


def load_all() -> dict[str, Case]:
    """Import every ``tests/cases_*.py`` module and return the registry."""
    here = Path(__file__).parent
    for mod in pkgutil.iter_modules([str(here)]):
        if mod.name.startswith("cases_"):
            importlib.import_module(mod.name)
    return CASES
