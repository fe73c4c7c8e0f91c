"""Greedy convex layer-wise training of a deep gated CNN reconstructor.

Method (seed: Ozturkler, Sahiner, Pilanci, Vasanawala, Pauly, Mardani, "convex
layer-wise training", made precise here):

- **Input.** ``x_0 = A^H y`` (the SENSE-combined zero-filled image), as two real
  channels; ``h_0 = x_0``. The bias is the programs' constant channel.
- **Step i** fits the residual ``x_gt - x_0`` from the features ``h_{i-1}`` with one
  convex two-layer program: the gated conv program (a nuclear norm per pattern), or
  with ``form="relu"`` the cone form (:mod:`convexrecon.nets.layerwise_cone`), whose
  recovered layer is a true ReLU layer. The prediction after step ``i`` is
  ``x_hat_i = x_0 + f_i(g_i(h_{i-1}))``.
- **Data consistency inside the step** (default): the network is evaluated through
  ``DC(x) = (A^H A + mu I)^-1 (A^H y + mu x)``, affine in ``x`` with linear part
  ``M = mu (A^H A + mu I)^-1``; the step's data operator becomes ``M o PatternConv``
  and its target ``x_gt - DC(x_0)`` (:mod:`convexrecon.nets.layerwise_program`).
  ``dc_in_step=False`` trains image-only (the seed's network) and applies DC after.
- **Carried forward.** The first layer ``g_i`` recovered from the convex solution is
  frozen; ``h_i = g_i.features(h_{i-1})`` stacks every kept neuron (every singular
  component of every pattern, so the width is at most ``2P``). The second layer is
  dropped except at the last step.
- **Input skip** (default): ``x_0``'s channels are appended to every ``h_i``, so a
  deeper step can always use the input (without it, later steps saw only the
  width-``2P`` features and lost accuracy).
- **Gates** of step ``i + 1`` are filters on ``h_i``: Gaussian (default) or patches
  sampled from ``h_i`` (``gates="patches"``).
- **Whitening** (default): each step is solved in whitened patch coordinates,
  which changes the regulariser to the nuclear norm of ``Sigma^1/2 V^T U_i``.
- **beta** per layer: a short warm-started path of fractions of ``beta_max``; the
  fraction with the best validation PSNR (after DC) is kept.
- **Solvers** (:mod:`convexrecon.nets.layerwise_step`): full-batch FISTA to a
  certificate, or proximal SVRG batch by batch (``solver="minibatch"``; ``"auto"``
  picks it when the step does not fit ``memory_budget``); the ReLU form uses the
  augmented Lagrangian.

The trained model is a :class:`LayerwiseNet` with ``forward(y, A)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from convexrecon._checks import check_choice
from convexrecon.errors import InputError
from convexrecon.metrics import psnr
from convexrecon.nets.layerwise_step import (build_step, check_form_solver, choose_solver, shard_psnr,
                                             shard_rms)
from convexrecon.nets.layerwise_program import DC_MAX_ITER, DC_TOL, DCMap, data_consistency
from convexrecon.operators.base import Operator
from convexrecon.operators.conv import channels_to_complex, complex_to_channels, pad_input, random_gates

__all__ = ["FORMS", "GATE_KINDS", "ReconData", "LayerwiseNet", "LayerwiseConfig", "LayerReport",
           "train_layerwise", "make_gates", "layerwise_net_from_spec"]

FORMS = ("gated", "relu")
GATE_KINDS = ("gaussian", "patches")
DEFAULT_BETA_FRACS = (0.2, 0.05, 0.02, 0.005)
RECOVER_RTOL = 1e-5
"""Singular components below this fraction of a layer's largest are dropped (they are
zero in exact arithmetic after the nuclear prox)."""


def _gated_classes() -> tuple[type, type]:
    """``(ConvGatedReLU, GatedConvNet)`` from the public programs package."""
    import convexrecon.programs as P
    gated = getattr(P, "ConvGatedReLU", None) or getattr(P, "ConvTwoLayerReLU")
    return gated, P.GatedConvNet


def _channels(x: torch.Tensor) -> torch.Tensor:
    """Complex ``(N, H, W)`` -> real ``(N, 2, H, W)``."""
    return complex_to_channels(x)


def _complex(h: torch.Tensor) -> torch.Tensor:
    """Real ``(N, 2, H, W)`` -> complex ``(N, H, W)``."""
    return channels_to_complex(h.contiguous())[:, 0]


@dataclass
class ReconData:
    """One split of a training set, all on the problems' scale.

    Attributes:
        kspace: ``(N, *A.oshape)`` measured data.
        operator: the encoding operator ``A`` of the ``N`` samples (per-sample maps and
            masks as a batch dimension).
        target: ``(N, *A.ishape)`` complex ground truth, or ``None``.
        batch: the :class:`convexrecon.data.Batch` it came from, or ``None`` (gives
            the per-sample operators of :meth:`operator_of`).
        x0: ``A^H y`` (computed).
    """

    kspace: torch.Tensor
    operator: Operator
    target: torch.Tensor | None = None
    batch: Any = field(default=None, repr=False)
    x0: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.operator, Operator) or len(self.operator.ishape) != 2:
            raise InputError(f"operator: expected an Operator with 2-D images, got {self.operator!r}")
        if not isinstance(self.kspace, torch.Tensor) or \
                tuple(self.kspace.shape[1:]) != self.operator.oshape:
            raise InputError(f"kspace: expected (N, *{self.operator.oshape}), got "
                             f"{tuple(getattr(self.kspace, 'shape', ()))}")
        with torch.no_grad():
            self.x0 = self.operator.adjoint(self.kspace)
        if self.target is not None and tuple(self.target.shape) != tuple(self.x0.shape):
            raise InputError(f"target: expected {tuple(self.x0.shape)}, got {tuple(self.target.shape)}")

    def __len__(self) -> int:
        return int(self.kspace.shape[0])

    @classmethod
    def from_batch(cls, batch: Any) -> "ReconData":
        """From a :class:`convexrecon.data.Batch` (``kspace``, ``target``, ``operator()``)."""
        return cls(batch.kspace, batch.operator(), batch.target, batch)

    def _sub_batch(self, idx: torch.Tensor) -> Any:
        from dataclasses import fields as _fields

        if self.batch is None:
            raise InputError("data: expected a split loaded from a data Batch (per-sample "
                             "operators, for the minibatch solver and sharding), got a bare operator")
        n, pick = len(self), idx.tolist()
        sub = {}
        for f in _fields(self.batch):
            v = getattr(self.batch, f.name)
            if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n:
                v = v[idx.to(v.device)]
            elif isinstance(v, list) and len(v) == n:
                v = [v[i] for i in pick]
            sub[f.name] = v
        return type(self.batch)(**sub)

    def operator_of(self, idx: torch.Tensor) -> Operator:
        """The encoding operator of the samples ``idx`` (needs the data ``batch``)."""
        return self._sub_batch(idx).operator()

    def subset(self, idx: torch.Tensor) -> "ReconData":
        """The samples ``idx`` as a split of their own (needs the data ``batch``)."""
        return ReconData.from_batch(self._sub_batch(idx))


class LayerwiseNet(torch.nn.Module):
    """A deep CNN built block by block (gated or ReLU), with optional data consistency.

    ``blocks[:-1]`` contribute their hidden features (``.features``), the last block
    its full two-layer output: ``x_net = x_0 + blocks[-1](h_{L-1})`` with
    ``h_i = blocks[i-1].features(h_{i-1})`` and ``h_0 = x_0`` as channels.

    Args:
        blocks: two-layer blocks with ``features(x)`` and ``forward(x)``
            (:class:`~convexrecon.programs.GatedConvNet`, or
            :class:`~convexrecon.programs.relu.networks.ReLUConvNet` for the ReLU form).
        dc_mu: the DC weight ``mu`` (``None``: no data consistency).
        dc_tol, dc_max_iter: CG settings of the DC step.
    """

    def __init__(self, blocks: Sequence[torch.nn.Module], *, dc_mu: float | None = None,
                 dc_tol: float = DC_TOL, dc_max_iter: int = DC_MAX_ITER,
                 skip_input: bool = False) -> None:
        super().__init__()
        if len(blocks) < 1:
            raise InputError("blocks: expected at least one block, got none")
        self.blocks = torch.nn.ModuleList(blocks)
        self.skip_input = bool(skip_input)
        self.dc_mu = None if dc_mu is None else float(dc_mu)
        self.dc_tol, self.dc_max_iter = float(dc_tol), int(dc_max_iter)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def widths(self) -> list[int]:
        """Hidden width (neurons) of each block."""
        return [int(b.first.shape[0]) for b in self.blocks]

    def truncated(self, depth: int) -> "LayerwiseNet":
        """The network of the first ``depth`` blocks (shares their parameters)."""
        return LayerwiseNet(list(self.blocks)[:depth], dc_mu=self.dc_mu, dc_tol=self.dc_tol,
                            dc_max_iter=self.dc_max_iter, skip_input=self.skip_input)

    def hidden(self, h0: torch.Tensor) -> torch.Tensor:
        """``h_{L-1}`` from ``h_0`` (real ``(N, 2, H, W)``)."""
        h = h0
        for b in list(self.blocks)[:-1]:
            h = next_features(b, h, h0 if self.skip_input else None)
        return h

    def image_forward(self, x0: torch.Tensor) -> torch.Tensor:
        """``x_net = x_0 + f(x_0)`` for complex ``(N, H, W)`` (no data consistency)."""
        out = self.blocks[-1](self.hidden(_channels(x0)))
        return x0 + _complex(out).to(x0.dtype)

    def forward(self, y: torch.Tensor, A: Operator) -> torch.Tensor:
        """k-space ``(*B, *A.oshape)`` -> complex image ``(*B, *A.ishape)``."""
        aty = A.adjoint(y)
        x = self.image_forward(aty.reshape(-1, *aty.shape[-2:])).reshape(aty.shape)
        if self.dc_mu is not None:
            x = data_consistency(A, aty, x, mu=self.dc_mu, tol=self.dc_tol, max_iter=self.dc_max_iter)
        return x

    def spec(self) -> dict[str, Any]:
        """Keyword arguments of :func:`layerwise_net_from_spec` that rebuild the shapes."""
        blocks = []
        for b in self.blocks:
            d = dict(in_channels=int(b.first.shape[1]), kernel=int(b.kernel_size),
                     width=int(b.first.shape[0]), c_out=int(b.second.shape[0]), padding=b.padding,
                     bias=bool(b.bias))
            if hasattr(b, "gates"):
                d["n_gates"] = int(b.gates.shape[0])
            else:
                d["kind"] = "relu"
            blocks.append(d)
        return dict(blocks=blocks, dc_mu=self.dc_mu, dc_tol=self.dc_tol, dc_max_iter=self.dc_max_iter,
                    skip_input=self.skip_input)


def next_features(block: torch.nn.Module, h: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """The next layer's input: ``block.features(h)``, with the input channels ``h0``
    appended when given (the skip of ``skip_input``)."""
    f = block.features(h)
    return f if h0 is None else torch.cat([f, h0.to(f.dtype)], dim=1)


def layerwise_net_from_spec(*, blocks: list[dict], dc_mu: float | None = None,
                            dc_tol: float = DC_TOL, dc_max_iter: int = DC_MAX_ITER,
                            skip_input: bool = False) -> LayerwiseNet:
    """A :class:`LayerwiseNet` of the given shapes with zero weights (load a state dict
    into it); the factory of its checkpoints' ``model_spec``. A block with
    ``kind="relu"`` is a :class:`~convexrecon.programs.relu.networks.ReLUConvNet`."""
    from convexrecon.programs.relu.networks import ReLUConvNet

    _, GatedConvNet = _gated_classes()
    mods: list[torch.nn.Module] = []
    for b in blocks:
        c, k, m, co = (int(b[key]) for key in ("in_channels", "kernel", "width", "c_out"))
        if b.get("kind", "gated") == "relu":
            mods.append(ReLUConvNet(torch.zeros(m, c, k, k), torch.zeros(co, m, 1, 1),
                                    padding=b.get("padding", "zeros"), bias=bool(b.get("bias", True))))
            continue
        p = int(b["n_gates"])
        mods.append(GatedConvNet(torch.zeros(p, c, k, k), torch.zeros(m, dtype=torch.long),
                                 torch.zeros(m, c, k, k), torch.zeros(co, m, 1, 1),
                                 padding=b.get("padding", "zeros"), bias=bool(b.get("bias", True))))
    return LayerwiseNet(mods, dc_mu=dc_mu, dc_tol=dc_tol, dc_max_iter=dc_max_iter, skip_input=skip_input)


def make_gates(h: torch.Tensor, n: int, kernel: int, *, kind: str = "gaussian", seed: int = 0,
               padding: str = "zeros", rms: float | None = None) -> torch.Tensor:
    """Gate filters ``(n, C + 1, k, k)`` on features ``h (N, C, H, W)``.

    ``"gaussian"``: standard normal filters (bias taps scaled by the RMS of ``h``).
    ``"patches"``: ``k x k`` patches of ``h`` at random positions, centred per
    channel and rescaled to the norm of a Gaussian filter, with the same random bias
    taps; they follow the features' local structure, which balances the patterns.
    ``rms``: the features' RMS when ``h`` is only a share of them (default: ``h``'s).
    """
    check_choice(kind, GATE_KINDS, "gates")
    rms = (float(h.pow(2).mean().sqrt()) if rms is None else float(rms)) or 1.0
    g = random_gates(n, h.shape[1], kernel, bias=True, bias_scale=rms, seed=seed, dtype=h.dtype,
                     device=h.device)
    if kind == "patches":
        gen = torch.Generator().manual_seed(int(seed) + 7919)
        xp = pad_input(h, kernel, padding=padding, bias=False)
        nn_, hh, ww = h.shape[0], h.shape[-2], h.shape[-1]
        idx = [torch.randint(s, (n,), generator=gen) for s in (nn_, hh, ww)]
        pt = torch.stack([xp[int(a), :, int(r):int(r) + kernel, int(c):int(c) + kernel]
                          for a, r, c in zip(*idx)])
        pt = pt - pt.mean(dim=(-2, -1), keepdim=True)
        scale = math.sqrt(pt[0].numel()) / pt.flatten(1).norm(dim=1).clamp_min(1e-12)
        g[:, :-1] = pt * scale[:, None, None, None]
    return g


@dataclass(frozen=True)
class LayerwiseConfig:
    """Options of :func:`train_layerwise` (keyword-only, validated).

    ``beta`` is a fraction of ``beta_max`` (the same meaning at every layer);
    ``None`` chooses it on the validation split along ``beta_fracs`` (warm started,
    largest first). ``dc_mu=None`` trains and runs without data consistency;
    ``dc_in_step=False`` trains image-only and applies DC after the network.
    ``whiten`` solves in whitened patch coordinates (``U = W U'``, ``W = V
    Sigma^-1/2`` of the patch covariance): far fewer iterations, and the penalty is
    the nuclear norm of the whitened filters. ``skip_input`` appends ``x_0``'s two
    channels to every layer's features (a deeper step can always use the input).
    ``solver``: ``"fista"`` (full batch), ``"minibatch"`` (proximal SVRG over
    ``batch_size`` images, at most ``epochs`` passes, step ``minibatch_lr / L``;
    gated form only) or ``"auto"``
    (full batch when the step's estimated working set fits ``memory_budget`` bytes,
    else minibatch with the largest batch that fits; see
    :func:`~convexrecon.nets.layerwise_step.choose_solver`).
    """

    layers: int = 5
    kernel: int = 3
    patterns: int = 16
    form: str = "gated"
    dc_mu: float | None = 0.1
    dc_in_step: bool = True
    beta: float | None = None
    beta_fracs: tuple[float, ...] = DEFAULT_BETA_FRACS
    gates: str = "gaussian"
    whiten: bool = True
    skip_input: bool = True
    max_iter: int = 200
    tol: float = 1e-3
    check_every: int = 5
    padding: str = "zeros"
    solver: str = "auto"
    batch_size: int | None = None
    epochs: int = 30
    minibatch_lr: float = 0.5
    memory_budget: float = 2e9
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.layers, bool) or not isinstance(self.layers, int) or self.layers < 1:
            raise InputError(f"layers: expected an integer >= 1, got {self.layers!r}")
        if not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            raise InputError(f"kernel: expected an odd integer >= 1, got {self.kernel!r}")
        if not isinstance(self.patterns, int) or self.patterns < 1:
            raise InputError(f"patterns: expected an integer >= 1, got {self.patterns!r}")
        check_choice(self.form, FORMS, "form")
        check_form_solver(self.form, self.solver)
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or self.batch_size < 1):
            raise InputError(f"batch_size: expected an integer >= 1 or None, got {self.batch_size!r}")
        if self.epochs < 1 or not self.memory_budget > 0:
            raise InputError(f"epochs/memory_budget: expected >= 1 and > 0, got {self.epochs}, "
                             f"{self.memory_budget}")
        check_choice(self.gates, GATE_KINDS, "gates")
        if self.dc_mu is not None and not (self.dc_mu > 0 and math.isfinite(self.dc_mu)):
            raise InputError(f"dc_mu: expected a positive number or None, got {self.dc_mu!r}")
        if self.beta is not None and not (0 < self.beta and math.isfinite(self.beta)):
            raise InputError(f"beta: expected a positive fraction of beta_max or None (auto), "
                             f"got {self.beta!r}")
        if not self.beta_fracs or any(not (0 < f) for f in self.beta_fracs):
            raise InputError(f"beta_fracs: expected positive fractions, got {self.beta_fracs!r}")
        if self.max_iter < 1 or self.tol < 0:
            raise InputError(f"max_iter/tol: expected >= 1 and >= 0, got {self.max_iter}, {self.tol}")


@dataclass
class LayerReport:
    """What one convex step did. ``path`` holds one entry per beta tried."""

    layer: int
    in_channels: int
    width: int
    solver: str
    beta: float
    beta_frac: float
    objective: float
    certificate: float
    iterations: int
    seconds: float
    train_psnr: float
    val_psnr: float
    path: list[dict[str, float]] = field(default_factory=list)
    solution: Any = field(default=None, repr=False)
    """The chosen solution's filters (base coordinates: ``U``, or ``(V, W)`` for the
    ReLU form; not saved; for checks)."""


def _eval_psnr(data: ReconData, x_net: torch.Tensor, dc_mu: float | None, *,
               sharded: bool = False) -> float:
    x = x_net
    if dc_mu is not None:
        x = data_consistency(data.operator, data.x0, x_net, mu=dc_mu)
    return shard_psnr(x, data.target) if sharded else psnr(x, data.target)


def train_layerwise(train: ReconData, val: ReconData, *, config: LayerwiseConfig,
                    blocks: Sequence[torch.nn.Module] = (),
                    on_layer: Callable[[LayerwiseNet, LayerReport], Any] | None = None,
                    callback: Callable[[Any], Any] | None = None, images: torch.Tensor | None = None,
                    n_total: int | None = None) -> tuple[LayerwiseNet, list[LayerReport]]:
    """Greedy convex layer-wise training (module docstring).

    Args:
        train, val: splits with targets (``val`` chooses beta).
        config: the options.
        blocks: already trained blocks (resume): training continues after them.
        on_layer: called with the network so far and the step's report after every
            layer (checkpointing, tables).
        callback: called with the solver state after every solver iteration.
        images, n_total: ``train`` is this process's share of ``n_total`` training
            images, at these indices (e.g. ``rank::world`` under ``torchrun``; every
            process calls this together with the same ``val`` and options). The gated
            steps, the gates' scale, the whitening and the training PSNR sum over the
            processes, so every process trains the network of all the images.

    Returns:
        ``(net, reports)`` for the layers trained in this call.
    """
    if train.target is None or val.target is None:
        raise InputError("train/val: expected targets (ground truth) for training, got None")
    cfg = config
    blocks = list(blocks)
    if len(blocks) > cfg.layers:
        raise InputError(f"blocks: expected at most layers={cfg.layers} trained blocks, got {len(blocks)}")
    dc_train = cfg.dc_mu is not None and cfg.dc_in_step
    with torch.no_grad():
        h0_tr, h0_va = _channels(train.x0), _channels(val.x0)
        s_tr, s_va = (h0_tr, h0_va) if cfg.skip_input else (None, None)
        h_tr, h_va = h0_tr, h0_va
        for b in blocks:
            h_tr, h_va = next_features(b, h_tr, s_tr), next_features(b, h_va, s_va)
        if dc_train:
            dcmap = DCMap(train.operator, n=len(train), mu=cfg.dc_mu, dtype=h_tr.dtype)
            base_out = data_consistency(train.operator, train.x0, train.x0, mu=cfg.dc_mu)
        else:
            dcmap, base_out = None, train.x0
        Y = _channels(train.target - base_out).to(h_tr.dtype)
    sharded = images is not None
    if sharded and cfg.gates == "patches":
        raise InputError("gates: 'patches' samples the features of one process; use 'gaussian' "
                         "when the training images are sharded")
    n, hh, ww = len(train) if n_total is None else int(n_total), int(Y.shape[-2]), int(Y.shape[-1])
    solver, batch = choose_solver(cfg.solver, form=cfg.form, n=n, h=hh, w=ww, patterns=cfg.patterns,
                                  budget_bytes=cfg.memory_budget, batch_size=cfg.batch_size,
                                  itemsize=h_tr.element_size())

    def dc_of(idx: torch.Tensor) -> DCMap:
        return DCMap(train.operator_of(idx), n=int(idx.numel()), mu=cfg.dc_mu, dtype=Y.dtype)

    reports: list[LayerReport] = []
    for i in range(len(blocks), cfg.layers):
        t0 = time.perf_counter()
        if dcmap is not None:  # each step starts cold: a resumed run repeats it exactly
            dcmap.reset()
        gates = make_gates(h_tr, cfg.patterns, cfg.kernel, kind=cfg.gates, seed=cfg.seed * 1009 + i,
                           padding=cfg.padding, rms=shard_rms(h_tr) if sharded else None)
        step = build_step(h_tr, Y, gates, form=cfg.form, solver=solver, kernel=cfg.kernel,
                          padding=cfg.padding, whiten=cfg.whiten, dc=dcmap,
                          dc_of=dc_of if dc_train else None, batch_size=batch,
                          max_iter=cfg.epochs if solver == "minibatch" else cfg.max_iter,
                          tol=cfg.tol, check_every=cfg.check_every, lr=cfg.minibatch_lr, seed=cfg.seed,
                          images=images, n_total=n if sharded else None)
        bmax = step.beta_max()
        fracs = (cfg.beta,) if cfg.beta is not None else tuple(sorted(cfg.beta_fracs, reverse=True))
        best, path, iters = None, [], 0
        for frac in fracs:
            it = step.solve(frac * bmax, callback)
            iters += it
            with torch.no_grad():
                blk = step.network(RECOVER_RTOL)
                v = _eval_psnr(val, val.x0 + _complex(blk(h_va)).to(val.x0.dtype), cfg.dc_mu)
            obj, cert = step.objective_and_certificate()
            path.append(dict(beta_frac=frac, val_psnr=v, objective=obj, certificate=cert,
                             iterations=it, width=int(blk.first.shape[0])))
            if best is None or v > best[0]:
                best = (v, frac, blk, obj, cert, step.filters())
            elif v < best[0] - 0.1:  # clearly past the best: stop the path
                break
        v, frac, blk, obj, cert, U = best
        with torch.no_grad():
            tr = _eval_psnr(train, train.x0 + _complex(blk(h_tr)).to(train.x0.dtype), cfg.dc_mu,
                            sharded=sharded)
            h_tr, h_va = next_features(blk, h_tr, s_tr), next_features(blk, h_va, s_va)
        blocks.append(blk)
        rep = LayerReport(layer=i + 1, in_channels=int(gates.shape[1]) - 1, width=int(blk.first.shape[0]),
                          solver=step.solver if solver != "minibatch" else f"minibatch/{batch}",
                          beta=frac * bmax, beta_frac=frac, objective=obj, certificate=cert,
                          iterations=iters, seconds=time.perf_counter() - t0, train_psnr=tr,
                          val_psnr=v, path=path, solution=U)
        reports.append(rep)
        net = LayerwiseNet(blocks, dc_mu=cfg.dc_mu, skip_input=cfg.skip_input)
        if on_layer is not None:
            on_layer(net, rep)
    return LayerwiseNet(blocks, dc_mu=cfg.dc_mu, skip_input=cfg.skip_input), reports
