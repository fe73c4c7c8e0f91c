"""The pieces of one training step and one validation pass (used by :func:`.loop.fit`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError
from . import distributed as D

if TYPE_CHECKING:
    from .loop import Hooks

__all__ = ["EpochSums", "split_loss", "to_device", "make_batches", "gather", "any_rank", "train_step",
           "epoch_metrics", "validate", "val_values"]

@dataclass
class EpochSums:
    """Running sums of one epoch (restored on a mid-epoch resume)."""

    loss_sum: float = 0.0
    count: float = 0.0
    skipped: int = 0
    extra: dict[str, list[float]] = field(default_factory=dict)  # name -> [sum, count]
    last_extra: dict[str, float] = field(default_factory=dict)  # the last step's extras (display only, not saved)

    def state(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum, "count": self.count, "skipped": self.skipped, "extra": self.extra}


def split_loss(out: Any) -> tuple[torch.Tensor, dict[str, float]]:
    if isinstance(out, torch.Tensor):
        loss, extra = out, {}
    elif isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor) and isinstance(out[1], Mapping):
        loss, extra = out
    else:
        raise InputError(f"loss_fn: expected a scalar tensor or (tensor, dict), got {type(out).__name__}")
    if loss.numel() != 1:
        raise InputError(f"loss_fn: expected a scalar loss, got shape {tuple(loss.shape)}")
    return loss.reshape(()), {str(k): float(v) for k, v in extra.items()}


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return type(batch)({k: to_device(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


def make_batches(order: Sequence[int], batch_size: int, drop_last: bool) -> list[list[int]]:
    out = [list(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    if drop_last and out and len(out[-1]) < batch_size:
        out.pop()
    return out


def gather(obj: Any) -> list[Any]:
    if not D.is_distributed():
        return [obj]
    out: list[Any] = [None] * D.world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    if not D.is_distributed():
        return flag
    return bool(D.all_reduce_sum(torch.tensor([float(flag)], device=D.info().device)).item() > 0)


def train_step(
    net: nn.Module,
    batch: Any,
    loss_fn: Callable[[nn.Module, Any], Any],
    optimizer: torch.optim.Optimizer,
    hooks: Hooks,
    acc: EpochSums,
    n: int,
    epoch: int,
    global_step: int,
    clip_grad_norm: float | None,
) -> tuple[float, bool]:
    net.train()
    optimizer.zero_grad(set_to_none=True)
    loss, extra = split_loss(loss_fn(net, batch))
    ok = hooks.accept(loss.detach(), epoch=epoch, step=global_step + 1)
    if D.is_distributed():
        ok = not any_rank(not ok)
    if not ok:
        acc.skipped += 1
        acc.last_extra = {}
        optimizer.zero_grad(set_to_none=True)
        return float("nan"), True
    loss.backward()
    if clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(net.parameters(), clip_grad_norm)
    optimizer.step()
    keys = sorted(extra)
    local = [loss.detach().item() * n, float(n)] + [extra[k] * n for k in keys]
    sums = D.all_reduce_sum(torch.tensor(local, dtype=torch.float64, device=loss.device)).tolist()
    value = sums[0] / sums[1]
    acc.loss_sum += sums[0]
    acc.count += sums[1]
    acc.last_extra = {key: v / sums[1] for key, v in zip(keys, sums[2:])}
    for key, v in zip(keys, sums[2:]):
        s, c = acc.extra.setdefault(key, [0.0, 0.0])
        acc.extra[key] = [s + v, c + sums[1]]
    return value, False


def epoch_metrics(acc: EpochSums, epoch: int, global_step: int, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    metrics: dict[str, float] = {
        "epoch": epoch,
        "step": global_step,
        "train_loss": acc.loss_sum / acc.count if acc.count else float("nan"),
        "skipped": acc.skipped,
        "lr": float(optimizer.param_groups[0]["lr"]),
    }
    for key, (s, c) in sorted(acc.extra.items()):
        metrics[f"train_{key}"] = s / c if c else float("nan")
    return metrics


@torch.no_grad()
def validate(
    model: nn.Module,
    dataset: Dataset,
    fn: Callable[[nn.Module, Any], Any],
    batch_size: int,
    collate_fn: Callable[[list[Any]], Any] | None,
    device: torch.device,
) -> dict[str, float]:
    """Sample-weighted means of ``fn`` over ``dataset``; ranks split it without padding."""
    was_training = model.training
    model.eval()
    indices = list(range(len(dataset)))[D.rank() :: D.world_size()]
    loader = DataLoader(dataset, batch_sampler=make_batches(indices, batch_size, False), collate_fn=collate_fn)
    names: list[str] = []
    sums: dict[str, float] = {}
    count = 0.0
    for idx, batch in zip(make_batches(indices, batch_size, False), loader):
        out = fn(model, to_device(batch, device))
        values = val_values(out)
        for key, v in values.items():
            if key not in sums:
                names.append(key)
                sums[key] = 0.0
            sums[key] += v * len(idx)
        count += len(idx)
    model.train(was_training)
    names = sorted(gather(names)[0] if D.is_distributed() else names)
    vec = torch.tensor([sums.get(k, 0.0) for k in names] + [count], dtype=torch.float64, device=device)
    vec = D.all_reduce_sum(vec).tolist()
    return {f"val_{k}": vec[i] / vec[-1] for i, k in enumerate(names)}


def val_values(out: Any) -> dict[str, float]:
    if isinstance(out, torch.Tensor) or isinstance(out, tuple):
        loss, extra = split_loss(out)
        return {"loss": float(loss), **extra}
    if isinstance(out, Mapping):
        return {str(k): float(v) for k, v in out.items()}
    raise InputError(f"val_fn: expected a scalar tensor or a dict of numbers, got {type(out).__name__}")
