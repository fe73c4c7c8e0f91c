"""One epoch/step training loop for the nonconvex models (baselines, DEQ, unrolled).

:func:`fit` trains any ``nn.Module`` on any map-style ``Dataset`` whose collated
batches the user's ``loss_fn(model, batch)`` understands. It writes, into ``out_dir``:

- ``checkpoint.pt``: the latest checkpoint (see :mod:`.checkpoint`), every
  ``checkpoint_every`` steps and at the end of every epoch, written atomically;
- ``metrics.json``: per-epoch metrics and per-step losses, written atomically;
- ``tensorboard/``: TensorBoard event files when ``tensorboard=True``.

**Lossless resume.** Each epoch's data order is a permutation seeded by
``seed + epoch`` (a :class:`~torch.utils.data.DistributedSampler`, one replica in a
single process), cut into batches; a checkpoint records the order, the position in
it, the optimiser, scheduler, hook state, the running epoch sums and the torch, numpy
and python RNG states. ``resume=True`` restores all of it and replays the rest of the
epoch, so on CPU a run killed at any moment (SIGKILL loses at most
``checkpoint_every`` steps; SIGINT and SIGTERM checkpoint at the next step boundary
and stop, with ``KeyboardInterrupt`` and ``SystemExit(143)``) ends with
the same weights and metrics, bit for bit, as an uninterrupted one. With
``num_workers > 0`` the dataset must draw its randomness from (seed, epoch, index),
not from the global generators.

**Hooks** (:class:`Hooks`) let a model family keep its own state in checkpoints
(e.g. DEQ warm-start fixed points) and decide per step whether to take the optimiser
step (e.g. skip a diverged batch). ``loss_fn`` may return ``loss`` or
``(loss, {"name": float, ...})``; the extra numbers are averaged over
the epoch's samples like the loss (and over ranks).

Under an initialised ``torch.distributed`` process group the model is wrapped in DDP,
``batch_size`` is per process, and rank 0 writes the files (see :mod:`.distributed`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError
from . import distributed as D
from .checkpoint import check_model_spec, load_checkpoint, save_checkpoint
from .progress import Progress
from .rng import get_rng_state, seed_everything, set_rng_state
from .steps import EpochSums, any_rank, epoch_metrics, gather, make_batches, to_device, train_step, validate

__all__ = ["fit", "Hooks", "History", "CHECKPOINT_NAME", "METRICS_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"


class Hooks:
    """Extension points of :func:`fit`; subclass and override what you need.

    - :meth:`state_dict` / :meth:`load_state_dict`: extra state saved in every
      checkpoint (tensors, numbers, strings, lists, dicts) and restored on resume.
    - :meth:`on_epoch_start`: called when an epoch starts or is resumed into.
    - :meth:`accept`: after the forward pass; ``False`` skips backward and the
      optimiser step for this batch (counted as ``skipped``). The default skips
      non-finite losses. Under DDP a batch is skipped when any rank rejects it.
    - :meth:`on_step_end`: after each batch, taken or skipped.
    """

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise InputError(f"{type(self).__name__}: checkpoint holds hook state {sorted(state)} it cannot load")

    def on_epoch_start(self, epoch: int) -> None:
        return None

    def accept(self, loss: torch.Tensor, *, epoch: int, step: int) -> bool:
        return bool(torch.isfinite(loss).all())

    def on_step_end(self, *, epoch: int, step: int, loss: float, skipped: bool) -> None:
        return None


@dataclass
class History:
    """What :func:`fit` did: per-epoch metrics, per-step losses (``nan`` when skipped).

    ``epoch_time_s`` (wall seconds of each epoch's training part, summed over
    interruptions) is kept apart from the metrics, which a resume reproduces exactly.
    """

    epochs: list[dict[str, float]] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    epoch_time_s: list[float] = field(default_factory=list)
    out_dir: Path | None = None
    checkpoint: Path | None = None
    resumed_from_step: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready copy; non-finite numbers become ``null``."""
        return {"epochs": [{k: _finite(v) for k, v in e.items()} for e in self.epochs],
                "step_loss": [_finite(v) for v in self.step_loss], "steps": len(self.step_loss),
                "epoch_time_s": self.epoch_time_s}  # fmt: skip


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False))
    os.replace(tmp, path)


def _check_args(model: Any, loss_fn: Any, dataset: Any, epochs: Any, batch_size: Any, checkpoint_every: Any) -> None:
    if not isinstance(model, nn.Module):
        raise InputError(f"fit: model must be an nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise InputError("fit: loss_fn must be callable as loss_fn(model, batch)")
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise InputError(f"fit: dataset must be a map-style torch Dataset with __len__, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise InputError("fit: dataset is empty")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"fit: {name} must be a positive int, got {value!r}")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise InputError(f"fit: checkpoint_every must be a positive int or None, got {checkpoint_every!r}")


def fit(
    model: nn.Module,
    *,
    loss_fn: Callable[[nn.Module, Any], Any],
    dataset: Dataset,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    out_dir: str | os.PathLike[str],
    batch_size: int = 1,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    scheduler: Any = None,
    scheduler_interval: str = "epoch",
    val_dataset: Dataset | None = None,
    val_fn: Callable[[nn.Module, Any], Any] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    hooks: Hooks | None = None,
    model_spec: Mapping[str, Any] | None = None,
    clip_grad_norm: float | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
    tensorboard: bool = False,
    progress: bool = True,
) -> History:
    """Train ``model`` for ``epochs`` epochs; see the module docstring.

    Args:
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, extras)``, ``loss`` a scalar
            mean over the batch; ``batch`` is ``collate_fn([dataset[i] for i in batch])``
            moved to ``device``. Under torch.distributed ``model`` is the DDP wrapper
            (call it for the forward pass; ``distributed.unwrap(model)`` for attributes).
        optimizer: built over ``model``'s parameters.
        scheduler: an LR scheduler stepped every epoch (``scheduler_interval="epoch"``) or
            every optimiser step (``"step"``); ``ReduceLROnPlateau`` gets the validation
            loss (or the training loss without ``val_dataset``).
        val_dataset, val_fn: evaluated at the end of every epoch with ``val_fn(model, batch)``
            (default ``loss_fn``) under ``torch.no_grad()`` in eval mode; a tensor or a
            dict of numbers, averaged over samples as ``val_<name>``.
        seed: seeds the data order (``seed + epoch``) and, at a fresh start, python's,
            numpy's and torch's global generators (``seed + rank``).
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (else start fresh).
            Without it, an existing checkpoint in ``out_dir`` is an error. The resumed
            run's weights, ``History`` and ``metrics.json`` equal the uninterrupted run's
            (on CPU bit for bit; wall times aside).
        checkpoint_every: also checkpoint every this many steps (mid-epoch).
        model_spec: ``{"factory": "pkg.mod:fn", "kwargs": {...}}`` for ``load_model``;
            defaults to ``model.model_spec`` (set by :func:`build_model`).
    """
    _check_args(model, loss_fn, dataset, epochs, batch_size, checkpoint_every)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InputError(f"fit: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if scheduler_interval not in ("epoch", "step"):
        raise InputError(f"fit: scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    hooks = hooks if hooks is not None else Hooks()
    spec = check_model_spec(model_spec if model_spec is not None else getattr(D.unwrap(model), "model_spec", None))
    world, rank, main = D.world_size(), D.rank(), D.is_main_process()
    device = torch.device(device) if device is not None else D.info().device
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    if ckpt_path.exists() and not resume:
        raise InputError(f"fit: {str(ckpt_path)!r} exists; pass resume=True to continue it or choose a new out_dir")
    if main:
        out.mkdir(parents=True, exist_ok=True)
    config = {"seed": int(seed), "batch_size": batch_size, "world_size": world, "dataset_len": len(dataset),
              "drop_last": bool(drop_last)}  # fmt: skip

    inner = D.unwrap(model).to(device)
    net = D.wrap_ddp(inner)
    sampler = D.make_sampler(dataset, seed=seed, shuffle=True, drop_last=False)
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    history = History(out_dir=out, checkpoint=ckpt_path)
    epoch, step_in_epoch, global_step = 0, 0, 0
    elapsed, t0 = 0.0, time.perf_counter()
    acc = EpochSums()
    saved_order: list[int] | None = None

    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, map_location="cpu")  # load_state_dict moves to the params' device
        if ck.get("config") != config:
            raise InputError(
                f"fit: checkpoint {str(ckpt_path)!r} was written with {ck.get('config')}, this run has {config}"
            )
        inner.load_state_dict(ck["model_state"])
        optimizer.load_state_dict(ck["optimizer_state"])
        if (scheduler is None) != (ck.get("scheduler_state") is None):
            raise InputError(f"fit: checkpoint {str(ckpt_path)!r} and this run disagree on having a scheduler")
        if scheduler is not None:
            scheduler.load_state_dict(ck["scheduler_state"])
        hooks.load_state_dict(ck.get("hook_state") or {})
        epoch, step_in_epoch, global_step = int(ck["epoch"]), int(ck["step_in_epoch"]), int(ck["global_step"])
        a = ck["epoch_sums"]
        acc = EpochSums(float(a["loss_sum"]), float(a["count"]), int(a["skipped"]), {k: list(v) for k, v in a["extra"].items()})
        history.epochs = list(ck["history"]["epochs"])
        history.step_loss = ck["history"]["step_loss"].tolist()
        history.epoch_time_s = list(ck["history"]["epoch_time_s"])
        elapsed = float(ck["history"]["elapsed_in_epoch"])
        history.resumed_from_step = global_step
        per_rank = ck["per_rank"][rank]
        saved_order = per_rank["order"].tolist()
        set_rng_state(per_rank["rng"])
    else:
        seed_everything(seed + rank)

    def payload() -> dict[str, Any]:
        per_rank = gather({"rng": get_rng_state(), "order": torch.tensor(order, dtype=torch.int64)})
        return {
            "model_spec": spec,
            "model_state": inner.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
            "hook_state": hooks.state_dict(),
            "config": config,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": global_step,
            "epoch_sums": acc.state(),
            "history": {"epochs": history.epochs, "step_loss": torch.tensor(history.step_loss, dtype=torch.float64),
                        "epoch_time_s": history.epoch_time_s,
                        "elapsed_in_epoch": elapsed + time.perf_counter() - t0 if step_in_epoch else 0.0},
            "per_rank": per_rank,
        }

    def save() -> None:
        data = payload()  # collective under DDP: every rank builds it
        if main:
            save_checkpoint(ckpt_path, data)
            _write_json(out / METRICS_NAME, history.to_json())

    writer = None
    if tensorboard and main:
        # on resume, drop events the lost steps logged: everything after the checkpoint's step
        purge = global_step + 1 if history.resumed_from_step is not None else None
        writer = _summary_writer(out / "tensorboard", purge_step=purge)

    stop: list[int] = []  # the signal that asked us to stop
    old_handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def _on_signal(signum: int, frame: Any) -> None:
            stop.append(signum)
            for sig, handler in old_handlers.items():  # a second signal acts at once
                signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else handler)

        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, _on_signal)

    bar = Progress(enabled=progress and main, epochs=epochs)
    order: list[int] = []
    try:
        with bar:
            while epoch < epochs:
                sampler.set_epoch(epoch)
                if hasattr(dataset, "set_epoch"):
                    dataset.set_epoch(epoch)
                order = list(iter(sampler))
                if saved_order:  # empty: the checkpoint was taken between epochs
                    if saved_order != order:
                        raise InputError(f"fit: checkpoint {str(ckpt_path)!r}: data order differs from this dataset's")
                    saved_order = None
                batches = make_batches(order, batch_size, drop_last)
                hooks.on_epoch_start(epoch)
                bar.start_epoch(epoch, total=len(batches), done=step_in_epoch)
                loader = DataLoader(
                    dataset,
                    batch_sampler=batches[step_in_epoch:],
                    collate_fn=collate_fn,
                    num_workers=num_workers,
                    generator=torch.Generator().manual_seed(seed + epoch),
                )
                t0 = time.perf_counter()  # the epoch's clock (``elapsed`` carries an interrupted part)
                for idx, batch in zip(batches[step_in_epoch:], loader):
                    loss_value, skipped = train_step(
                        net, to_device(batch, device), loss_fn, optimizer, hooks, acc, len(idx), epoch, global_step,
                        clip_grad_norm,
                    )  # fmt: skip
                    if scheduler is not None and scheduler_interval == "step" and not skipped and not plateau:
                        scheduler.step()
                    history.step_loss.append(loss_value)
                    step_in_epoch += 1
                    global_step += 1
                    hooks.on_step_end(epoch=epoch, step=global_step, loss=loss_value, skipped=skipped)
                    bar.advance(loss_value, acc.last_extra)
                    if writer is not None and math.isfinite(loss_value):
                        writer.add_scalar("train/loss_step", loss_value, global_step)
                    if checkpoint_every is not None and global_step % checkpoint_every == 0:
                        save()
                    if any_rank(bool(stop)):
                        save()
                        if stop and stop[0] == signal.SIGTERM:
                            raise SystemExit(128 + signal.SIGTERM)
                        raise KeyboardInterrupt
                metrics = epoch_metrics(acc, epoch, global_step, optimizer)
                if val_dataset is not None:
                    metrics.update(validate(inner, val_dataset, val_fn or loss_fn, batch_size, collate_fn, device))
                history.epoch_time_s.append(elapsed + time.perf_counter() - t0)
                if scheduler is not None and (scheduler_interval == "epoch" or plateau):
                    if plateau:
                        scheduler.step(metrics.get("val_loss", metrics["train_loss"]))
                    else:
                        scheduler.step()
                history.epochs.append(metrics)
                if writer is not None:
                    for key, value in metrics.items():
                        if key not in ("epoch", "step") and _finite(value) is not None:
                            writer.add_scalar(f"epoch/{key}", value, global_step)
                    writer.flush()
                bar.end_epoch(metrics)
                epoch, step_in_epoch, acc, order = epoch + 1, 0, EpochSums(), []  # next epoch: nothing done yet
                elapsed = 0.0
                save()
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if writer is not None:
            writer.close()
    D.barrier()
    return history


def _summary_writer(log_dir: Path, *, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise InputError(f"tensorboard=True needs the 'tensorboard' package (pip install tensorboard): {exc}") from None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
