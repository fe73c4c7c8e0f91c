"""Compose an operator, a program and a solver by hand, then check the answer with cvxpy.

    python examples/compose_and_verify.py [--size 16] [--coils 3]

A tiny Cartesian SENSE problem in complex128: FISTA on the L1-wavelet program stops on
its duality-gap certificate, and cvxpy (CLARABEL) gives the exact optimum to compare.
"""

from __future__ import annotations

import argparse

import torch

from convexrecon.coils import birdcage
from convexrecon.operators import Sense, Wavelet, power_method
from convexrecon.operators.linalg import randn_like_shape
from convexrecon.programs import L1WaveletProgram
from convexrecon.sampling import random_1d
from convexrecon.solvers import FISTA, cvxpy_reference


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--coils", type=int, default=3)
    parser.add_argument("--lam", type=float, default=0.02)
    args = parser.parse_args(argv)

    n, dtype = args.size, torch.complex128
    maps = birdcage(args.coils, (n, n), dtype=dtype)
    mask = random_1d((n, n), 2, center_fraction=0.25, seed=0)
    A = Sense(maps, mask)
    A = (1.0 / power_method(A.N, iters=200) ** 0.5) * A          # operator scale
    g = torch.Generator().manual_seed(0)
    x_true = torch.zeros(n, n, dtype=dtype)
    x_true[n // 4: 3 * n // 4, n // 4: 3 * n // 4] = 1.0              # a square phantom
    y = A(x_true) + 0.01 * randn_like_shape(A.oshape, dtype=dtype, generator=g)

    prog = L1WaveletProgram(A, y, args.lam, Wavelet((n, n), wavelet="db4", dtype=dtype))
    res = FISTA(prog, max_iter=5000, tol=1e-9, check_every=10).run()
    ref = cvxpy_reference(prog, solver="CLARABEL")
    f_fista, f_cvx = prog.value(res.x), prog.value(ref.x)
    print(f"FISTA : {len(res.history)} checks, {res.state.it} iterations, "
          f"objective {f_fista:.10f}, certificate {res.history.certificate[-1]:.2e}")
    print(f"cvxpy : objective {f_cvx:.10f}, certificate {prog.certificate(ref.x):.2e}")
    print(f"relative objective gap: {abs(f_fista - f_cvx) / abs(f_cvx):.2e}")


if __name__ == "__main__":
    main()
