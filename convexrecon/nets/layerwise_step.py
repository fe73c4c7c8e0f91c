"""One convex step of layer-wise training, for each form and solver.

A step is built on the current features ``H``, the residual target ``Y`` and the
step's gates, and then solved along the beta path (warm started):

- :class:`GatedStep`: the gated program
  (:class:`~convexrecon.nets.layerwise_program.LayerProgram`) by full-batch FISTA;
- :class:`GatedMiniBatchStep`: the same program batch by batch
  (:mod:`convexrecon.nets.layerwise_minibatch`), by proximal SVRG;
- :class:`ReluStep`: the cone (ReLU) form
  (:class:`~convexrecon.nets.layerwise_cone.LayerConeProgram`) by the augmented
  Lagrangian with FISTA subproblems (full batch).

``solver="auto"`` (:func:`choose_solver`) takes full-batch FISTA when the step's
estimated working set (:func:`step_bytes`) fits the memory budget, else the
minibatch solver with the largest batch that fits.

**Sharded** (``images`` given, e.g. under ``torchrun``): the features and target hold
this process's share of the training images; the gated step's sums are all-reduced
(:func:`~convexrecon.solvers.sharded.shard_program` for FISTA, the sharded
:class:`~convexrecon.nets.layerwise_minibatch.BatchedLayerProgram` for minibatch),
the whitening covariance too; :func:`shard_rms` and :func:`shard_psnr` give the
gates' scale and the training PSNR of all images.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from convexrecon.errors import InputError
from convexrecon.nets.layerwise_program import DCMap, LayerProgram

__all__ = ["SOLVERS", "step_bytes", "check_form_solver", "choose_solver", "GatedStep", "GatedMiniBatchStep",
           "ReluStep", "build_step", "shard_rms", "shard_psnr"]

SOLVERS = ("auto", "fista", "minibatch")
RELU_INNER = 25
"""FISTA iterations per augmented-Lagrangian subproblem of the ReLU form (its
``max_iter`` budget counts these)."""


def step_bytes(n: int, h: int, w: int, *, patterns: int, c_out: int = 2, itemsize: int = 4) -> int:
    """Estimated peak working set of a full-batch step on ``n`` images ``h x w``:
    three ``n x P x C_out x h x w`` buffers (every pattern's convolution, its masked
    copy and the adjoint's input) and the masks."""
    return int(itemsize * n * h * w * (3 * patterns * c_out + patterns))


def check_form_solver(form: str, solver: str) -> None:
    """InputError for an unknown solver, or ``"minibatch"`` with the ReLU form."""
    if solver not in SOLVERS:
        raise InputError(f"solver: expected one of {', '.join(SOLVERS)}, got {solver!r}")
    if form == "relu" and solver == "minibatch":
        raise InputError("solver: 'minibatch' is available for form 'gated' only; the relu "
                         "form is solved full batch (auto or fista)")


def choose_solver(solver: str, *, form: str, n: int, h: int, w: int, patterns: int,
                  budget_bytes: float, batch_size: int | None = None,
                  itemsize: int = 4) -> tuple[str, int]:
    """``(solver, batch_size)`` for a step: ``"fista"`` (full batch, ``batch_size = n``)
    or ``"minibatch"``. ``"auto"``: full batch when :func:`step_bytes` of all ``n``
    images is at most ``budget_bytes``, else minibatch with the largest batch that
    fits (at least 1). The ReLU form has no minibatch solver here: ``"auto"`` keeps it
    full batch, ``"minibatch"`` is an InputError."""
    check_form_solver(form, solver)
    if form == "relu":
        return "fista", n
    one = step_bytes(1, h, w, patterns=patterns, itemsize=itemsize)
    if solver == "auto":
        solver = "fista" if one * n <= budget_bytes else "minibatch"
    if solver == "fista":
        return solver, n
    fit = max(1, int(budget_bytes // one))
    return solver, min(n, int(batch_size) if batch_size else fit)


def shard_rms(h: torch.Tensor) -> float:
    """RMS of the features of all processes (this process's ``h`` outside a group)."""
    from convexrecon.collectives import all_reduce_sum

    # on the data's device: NCCL reduces CUDA tensors only
    t = all_reduce_sum(torch.tensor([float(h.double().pow(2).sum()), h.numel()], dtype=torch.float64,
                                    device=h.device))
    return math.sqrt(float(t[0]) / max(float(t[1]), 1.0))


def shard_psnr(x: torch.Tensor, target: torch.Tensor) -> float:
    """:func:`convexrecon.metrics.psnr` of the images of all processes (magnitudes;
    MSE over all of them, peak the largest reference magnitude)."""
    import torch.distributed as dist

    from convexrecon.collectives import all_reduce_sum, is_distributed

    sse = float((x.abs().double() - target.abs().double()).pow(2).sum())
    err = all_reduce_sum(torch.tensor([sse, target.numel()], dtype=torch.float64, device=target.device))
    peak = target.abs().max().double().reshape(1)
    if is_distributed():
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    mse = float(err[0]) / float(err[1])
    return math.inf if mse == 0 else 10.0 * math.log10(float(peak) ** 2 / mse)


class GatedStep:
    """The gated step solved by full-batch FISTA (warm started along the path);
    ``sharded``: its data term sums over the processes."""

    solver = "fista"

    def __init__(self, base: Any, Y: torch.Tensor, *, dc: DCMap | None, whiten: torch.Tensor | None,
                 max_iter: int, tol: float, check_every: int, sharded: bool = False) -> None:
        self.prog = LayerProgram(base, Y, dc=dc, whiten=whiten)
        if sharded:
            from convexrecon.solvers.sharded import shard_program
            self.prog = shard_program(self.prog)
        self.max_iter, self.tol, self.check_every = max_iter, tol, check_every
        self.x: Any = None

    def beta_max(self) -> float:
        return self.prog.beta_max()

    def _solver(self):
        from convexrecon.solvers.fista import FISTA
        return FISTA(self.prog, max_iter=self.max_iter, tol=self.tol, check_every=self.check_every)

    def solve(self, beta: float, callback: Callable[[Any], Any] | None = None) -> int:
        """Solve at ``beta`` from the previous solution; returns the iterations."""
        self.prog.set_beta(beta)
        res = self._solver().run(self.x, callback)
        self.x = res.x
        return res.state.it

    def objective_and_certificate(self) -> tuple[float, float]:
        """The objective and the certificate at the current point, from one ``A.N x``
        (with DC in the step that is the per-sample CG solves; sharded, an all-reduce)."""
        x = self.prog.check_x(self.x)
        nx, rv = self.prog.smooth.normal(x), self.prog.reg.value(x)
        return (float(self.prog.value(x, normal_x=nx, reg_value=rv)),
                float(self.prog.certificate(x, normal_x=nx, reg_value=rv)))

    def network(self, rtol: float) -> torch.nn.Module:
        return self.prog.recover_network(self.x, rtol=rtol)

    def filters(self) -> Any:
        return self.prog.filters(self.x)


class GatedMiniBatchStep(GatedStep):
    """The gated step solved batch by batch by proximal SVRG; ``epochs`` counts
    passes over the data (each also costs one batched full gradient); the
    certificate is evaluated once per pass. ``lr`` is the step relative to ``1/L``:
    with a few heterogeneous images per batch, 1.0 diverged (3 images, batches of 1
    and 2) where 0.5 converged, hence the default."""

    solver = "minibatch"

    def __init__(self, base: Any, Y: torch.Tensor, *, dc_of: Callable[[torch.Tensor], DCMap] | None,
                 whiten: torch.Tensor | None, batch_size: int, epochs: int, tol: float,
                 lr: float = 0.5, seed: int = 0, images: torch.Tensor | None = None,
                 n_total: int | None = None) -> None:
        from convexrecon.nets.layerwise_minibatch import BatchedLayerProgram

        self.prog = BatchedLayerProgram(base, dc_of=dc_of, whiten=whiten, batch_size=batch_size,
                                        images=images, n_total=n_total)
        self.epochs, self.tol, self.lr, self.seed = int(epochs), tol, float(lr), int(seed)
        self.x = None

    def objective_and_certificate(self) -> tuple[float, float]:
        return self.prog.value_and_certificate(self.x)  # one pass over the images

    def _solver(self):
        from convexrecon.nets.layerwise_minibatch import LayerMiniBatch
        return LayerMiniBatch(self.prog, epochs=self.epochs, lr=self.lr, tol=self.tol, seed=self.seed,
                              check_every=math.ceil(self.prog.n / self.prog.batch_size))


class ReluStep(GatedStep):
    """The cone (ReLU) form solved by the augmented Lagrangian (full batch); the
    multipliers are warm started along the path with the variables."""

    solver = "auglag"

    def __init__(self, base: Any, *, dc: DCMap | None, whiten: torch.Tensor | None, max_iter: int,
                 tol: float) -> None:
        from convexrecon.nets.layerwise_cone import LayerConeProgram

        self.prog = LayerConeProgram(base, dc=dc, whiten=whiten)
        self.inner = min(RELU_INNER, int(max_iter))
        self.outer = max(1, math.ceil(int(max_iter) / self.inner))
        self.tol = tol
        self.x, self.mu = None, None

    def solve(self, beta: float, callback: Callable[[Any], Any] | None = None) -> int:
        from convexrecon.solvers.auglag import ConvReLUAugLag

        self.prog.set_beta(beta)
        res = ConvReLUAugLag(self.prog, tol=self.tol, max_outer=self.outer,
                             inner_iter=self.inner).run(self.x, callback, multipliers=self.mu)
        self.x, self.mu = res.x, res.state.mu
        return res.state.it * self.inner

    def objective_and_certificate(self) -> tuple[float, float]:
        kkt = self.prog.kkt(self.x, multipliers=self.mu)  # its primal is the objective
        return float(kkt.primal), float(kkt.max)


def build_step(h: torch.Tensor, Y: torch.Tensor, gates: torch.Tensor, *, form: str, solver: str,
               kernel: int, padding: str, whiten: bool, dc: DCMap | None,
               dc_of: Callable[[torch.Tensor], DCMap] | None, batch_size: int, max_iter: int,
               tol: float, check_every: int, lr: float = 0.5, seed: int = 0,
               images: torch.Tensor | None = None, n_total: int | None = None) -> GatedStep:
    """The step of ``form`` (``"gated"``/``"relu"``) with ``solver`` (``"fista"`` or
    ``"minibatch"``, as :func:`choose_solver` gave) on features ``h`` and target ``Y``
    (``images``: the indices of this process's images among all ``n_total``; gated
    form only)."""
    import convexrecon.programs as P
    from convexrecon.nets.layerwise_program import whitening_matrix

    opts = dict(kernel_size=kernel, n_patterns=int(gates.shape[0]), beta=1.0, gates=gates,
                padding=padding, bias=True)
    if form == "relu":
        base = P.ConvTwoLayerReLUCone(h, Y, **opts)
    else:
        base = P.ConvGatedReLU(h, Y, **opts)
    sharded = images is not None
    if sharded and form == "relu":
        raise InputError("form: the relu step runs in one process only; use form 'gated' to "
                         "shard the training images")
    wmat = whitening_matrix(base.op.x_padded, kernel, collective=sharded) if whiten else None
    if form == "relu":
        return ReluStep(base, dc=dc, whiten=wmat, max_iter=max_iter, tol=tol)
    if solver == "minibatch":
        return GatedMiniBatchStep(base, Y, dc_of=dc_of, whiten=wmat, batch_size=batch_size,
                                  epochs=max_iter, tol=tol, lr=lr, seed=seed, images=images,
                                  n_total=n_total)
    return GatedStep(base, Y, dc=dc, whiten=wmat, max_iter=max_iter, tol=tol, check_every=check_every,
                     sharded=sharded)
