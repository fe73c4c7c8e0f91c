"""Solvers: *how* a program is minimised, on one protocol
(``init``/``step``/``done``/``run``), plus the exact cvxpy reference."""

from convexrecon.solvers.admm_relu import ADMMGated, ADMMReLU
from convexrecon.solvers.auglag import ConvReLUAugLag
from convexrecon.solvers.base import History, Result, Solver, State
from convexrecon.solvers.cg import CG, cg_solve
from convexrecon.solvers.columns import Columnwise
from convexrecon.solvers.cvxpy_reference import cvxpy_reference
from convexrecon.solvers.fista import FISTA, ISTA
from convexrecon.solvers.ipm_relu import IPMReLU
from convexrecon.solvers.minibatch import MiniBatchProx
from convexrecon.solvers.minibatch_conv import MiniBatchConv
from convexrecon.solvers.pdhg import PDHG
from convexrecon.solvers.solve import SolveResult, register, solve

__all__ = [
    "State", "History", "Result", "Solver",
    "ISTA", "FISTA", "CG", "cg_solve", "PDHG", "cvxpy_reference",
    "ADMMGated", "ADMMReLU", "IPMReLU", "Columnwise", "MiniBatchProx", "MiniBatchConv",
    "ConvReLUAugLag", "solve", "SolveResult", "register",
]
