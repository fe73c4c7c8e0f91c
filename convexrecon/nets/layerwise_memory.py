"""Step factories for :func:`convexrecon.training.peak_memory`: one training step of
the layer-wise trainer and of its end-to-end baseline at the same batch, depth and
width (random data of the benchmark's shapes; the k-space and its operator are setup,
built outside the measured step, identically for both).

- :func:`layerwise_step`: the convex step of layer ``depth``: features through the
  ``depth - 1`` frozen blocks (the feature cache), patterns (``N x P x H x W``
  masks), whitening, the DC map, and ``iters`` FISTA iterations (solver state).
  No autograd is involved, so a saved-activation count would read zero: the peak
  resident memory counts everything.
- :func:`e2e_step`: one Adam step (forward, backward, update) of the identical
  ``depth``-block gated network with the same DC, optimiser state included.
- :func:`minibatch_step`: the stochastic mode of layer ``depth`` (``--solver
  minibatch``: :class:`~convexrecon.nets.layerwise_minibatch.BatchedLayerProgram`
  with DC per batch and whitening, solved by ``LayerMiniBatch``): the feature cache
  and the patterns of all ``n`` images, ``A^T Y`` and the SVRG snapshot's full
  gradient accumulated ``batch_size`` images at a time, and ``steps`` inner steps.
  The Lipschitz constant is set, not estimated (the batched power method costs
  time, not memory beyond one batch's gradient).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from convexrecon.nets.e2e_baselines import gated_e2e_net
from convexrecon.nets.layerwise import LayerwiseNet, _gated_classes, make_gates, next_features
from convexrecon.nets.layerwise_program import DCMap, LayerProgram, data_consistency, whitening_matrix
from convexrecon.operators.conv import complex_to_channels

__all__ = ["layerwise_step", "e2e_step", "minibatch_step", "block_shapes"]


def block_shapes(depth: int, patterns: int, kernel: int, *, skip_input: bool = True) -> list[dict]:
    """Blocks of width ``2P`` (the most a gated step can give), with the input skip."""
    out, cin = [], 3
    for _ in range(depth):
        out.append(dict(n_gates=patterns, in_channels=cin, kernel=kernel, width=2 * patterns, c_out=2,
                        padding="zeros", bias=True))
        cin = 2 * patterns + 1 + 2 * bool(skip_input)
    return out


def _problem(n: int, size: int, coils: int, device: Any):
    from convexrecon.operators.sense import Sense

    g = torch.Generator().manual_seed(0)
    maps = torch.randn(n, coils, size, size, generator=g, dtype=torch.complex64)
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    mask = torch.rand(n, size, size, generator=g) < 0.3
    A = Sense(maps.to(device), mask.to(device))
    x = torch.randn(n, size, size, generator=g, dtype=torch.complex64).to(device)
    return A, A(x), x


def layerwise_step(*, device: str = "cpu", n: int = 8, size: int = 48, coils: int = 8, depth: int = 5,
                   patterns: int = 8, kernel: int = 3, iters: int = 5, dc_mu: float = 0.1) -> Callable[[], Any]:
    A, y, x = _problem(n, size, coils, device)
    spec = block_shapes(depth, patterns, kernel)
    frozen = gated_e2e_net(blocks=spec, dc_mu=dc_mu, skip_input=True).to(device)
    Gated, _ = _gated_classes()

    def step() -> Any:
        from convexrecon.solvers.fista import FISTA

        with torch.no_grad():
            x0 = A.adjoint(y)
            h0 = complex_to_channels(x0)
            h = h0
            for b in list(frozen.blocks)[: depth - 1]:  # the feature cache
                h = next_features(b, h, h0)
            M = DCMap(A, n=n, mu=dc_mu)
            target = complex_to_channels(x - data_consistency(A, x0, x0, mu=dc_mu))
            base = Gated(h, target, kernel_size=kernel, n_patterns=patterns, beta=1.0,
                         gates=make_gates(h, patterns, kernel), bias=True)
            prog = LayerProgram(base, target, dc=M, whiten=whitening_matrix(base.op.x_padded, kernel))
            prog.set_beta(0.05 * prog.beta_max())
            return FISTA(prog, max_iter=iters, tol=0.0, check_every=iters).run().x

    return step


def e2e_step(*, device: str = "cpu", n: int = 8, size: int = 48, coils: int = 8, depth: int = 5,
             patterns: int = 8, kernel: int = 3, dc_mu: float = 0.1) -> Callable[[], Any]:
    A, y, x = _problem(n, size, coils, device)
    net: LayerwiseNet = gated_e2e_net(blocks=block_shapes(depth, patterns, kernel), dc_mu=dc_mu,
                                      skip_input=True).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step() -> Any:
        opt.zero_grad()
        loss = (net(y, A) - x).abs().pow(2).mean()
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step



def minibatch_step(*, device: str = "cpu", n: int = 32, batch_size: int = 8, size: int = 48,
                   coils: int = 8, depth: int = 5, patterns: int = 8, kernel: int = 3,
                   steps: int = 2, dc_mu: float = 0.1) -> Callable[[], Any]:
    from convexrecon.operators.sense import Sense

    A, y, x = _problem(n, size, coils, device)
    frozen = gated_e2e_net(blocks=block_shapes(depth, patterns, kernel), dc_mu=dc_mu,
                           skip_input=True).to(device)
    Gated, _ = _gated_classes()

    def dc_of(idx: torch.Tensor) -> DCMap:
        return DCMap(Sense(A.maps[idx], A.mask[idx]), n=int(idx.numel()), mu=dc_mu)

    def step() -> Any:
        from convexrecon.nets.layerwise_minibatch import BatchedLayerProgram, LayerMiniBatch

        with torch.no_grad():
            x0 = A.adjoint(y)
            h0 = complex_to_channels(x0)
            h = h0
            for b in list(frozen.blocks)[: depth - 1]:  # the feature cache of all n images
                h = next_features(b, h, h0)
            target = complex_to_channels(x - data_consistency(A, x0, x0, mu=dc_mu))
            base = Gated(h, target, kernel_size=kernel, n_patterns=patterns, beta=1.0,
                         gates=make_gates(h, patterns, kernel), bias=True, lipschitz=1.0)
            prog = BatchedLayerProgram(base, dc_of=dc_of, whiten=whitening_matrix(base.op.x_padded, kernel),
                                       batch_size=batch_size)
            prog._lip = 1.0  # skip the batched power method (its batches cost what a gradient's do)
            prog.set_beta(0.05 * prog.beta_max())
            solver = LayerMiniBatch(prog, epochs=1)
            st = solver.init()
            for _ in range(steps):
                st = solver.step(st)
            return st.x

    return step
