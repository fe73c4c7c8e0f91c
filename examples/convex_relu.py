"""Fit a two-layer ReLU patch denoiser by convex optimisation, check it, recover the net.

    python examples/convex_relu.py [--n 200] [--patterns 20] [--beta 1e-3]

Data: 3x3 patches (real and imaginary parts, plus a bias column) of the zero-filled
image of a small simulated problem; targets: the centre pixel of the ground truth.
The convex cone-constrained program is solved by ``solve`` (the primal-dual
interior-point method, stopping on its duality gap at an exactly feasible point) and
by cvxpy (CLARABEL); the recovered nonconvex network reproduces the convex optimum.
The gated program on the same patterns is solved too, and its cone decomposition
turned into a ReLU network with the gated network's outputs.
"""

from __future__ import annotations

import argparse

import torch

from convexrecon import problems, recon
from convexrecon.programs import (GatedReLU, TwoLayerReLU, cone_decomposition,
                                  min_norm_cone_decomposition, network_objective, recover_network)
from convexrecon.solvers import cvxpy_reference, solve


def patches(image: torch.Tensor, target: torch.Tensor, n: int, seed: int):
    """``n`` random 3x3 patches of ``image`` (18 real features + bias) and the target's
    centre pixel magnitude."""
    g = torch.Generator().manual_seed(seed)
    h, w = image.shape[-2:]
    rows = torch.randint(1, h - 1, (n,), generator=g)
    cols = torch.randint(1, w - 1, (n,), generator=g)
    offs = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]
    feats = torch.stack([image[rows + a, cols + b] for a, b in offs], dim=1)
    X = torch.cat([feats.real, feats.imag, torch.ones(n, 1, dtype=feats.real.dtype)], dim=1)
    return X.double(), target[rows, cols].abs().double()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--patterns", type=int, default=20)
    parser.add_argument("--beta", type=float, default=1e-3)
    args = parser.parse_args(argv)

    p = problems.load("tiny-cartesian")
    zf = recon.zero_filled(p.kspace, p.maps, p.mask)[0]
    X, y = patches(zf, p.ground_truth[0], args.n, seed=0)
    prog = TwoLayerReLU(X, y, n_patterns=args.patterns, beta=args.beta, seed=0)
    print(f"{prog.D.shape[1]} distinct activation patterns for {X.shape[0]} patches of dimension {X.shape[1]}")

    res = solve(prog)
    ref = cvxpy_reference(prog, solver="CLARABEL")
    f_ours, f_cvx = prog.value(res.x), prog.value(ref.x)
    print(f"solve ({res.method}): objective {f_ours:.8f}, certificate {res.history.certificate[-1]:.1e}, "
          f"violation {prog.violation(res.x):.1e}, pattern ratio {res.pattern_ratio:.3f}")
    print(f"cvxpy (CLARABEL): objective {f_cvx:.8f}")
    print(f"relative objective gap: {abs(f_ours - f_cvx) / abs(f_cvx):.2e}")

    net = recover_network(prog, res.x)
    f_net = network_objective(net, X, y, args.beta)
    print(f"recovered network: {net.first.shape[0]} ReLU neurons, {net.first.shape[1]} inputs")
    print(f"network loss + penalty {f_net:.8f} (relative to the convex optimum: "
          f"{abs(f_net - f_ours) / abs(f_ours):.1e})")

    # The gated program is cheaper to solve; its solution splits into a ReLU network
    # with the same outputs (a cone decomposition), at some cost in penalty.
    gated = GatedReLU(X, y, beta=args.beta, patterns=prog.data.patterns)
    res_g = solve(gated)
    print(f"gated optimum {gated.value(res_g.x):.8f}; as ReLU networks with the same outputs "
          f"(ReLU optimum {f_ours:.8f}):")
    for name, split in (("along the gates", cone_decomposition),
                        ("smallest penalty (cvxpy)", min_norm_cone_decomposition)):
        relu, x = split(gated, res_g.x)
        net_g = recover_network(relu, x)
        with torch.no_grad():
            same = float((net_g(X) - gated.predict(res_g.x)).abs().max())
        print(f"  {name}: {net_g.first.shape[0]} neurons, outputs within {same:.1e}, "
              f"loss + penalty {network_objective(net_g, X, y, args.beta):.8f}")


if __name__ == "__main__":
    main()
