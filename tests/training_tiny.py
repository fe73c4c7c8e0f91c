"""A tiny model and dataset for the training-loop tests; also a script for the kill test.

``python tests/training_tiny.py OUT [--resume] [--delay S]`` trains the tiny model into
OUT (sleeping S seconds per step so that a test can kill it mid-run) and touches
``OUT/done`` when it finishes. ``torchrun --nproc_per_node 2 tests/training_tiny.py OUT
--plain-global-batch 8`` runs the deterministic run under torchrun.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from convexrecon.training import Hooks, build_model, fit  # noqa: E402

SPEC = {"factory": "training_tiny:make_model", "kwargs": {"hidden": 8, "dropout": 0.25}}


def make_model(*, hidden: int = 8, dropout: float = 0.25) -> nn.Module:
    return nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class TinyData(Dataset):
    """``n`` fixed inputs; targets get fresh noise from the global numpy and python RNGs."""

    def __init__(self, n: int = 24, seed: int = 123, *, noisy: bool = True) -> None:
        g = torch.Generator().manual_seed(seed)
        self.noisy = noisy
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [0.25]]) + 0.1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = 0.01 * float(np.random.randn()) + 0.01 * random.random() if self.noisy else 0.0
        return self.x[i], self.y[i] + noise


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return torch.mean((model(x) - y) ** 2)


class Slow(Hooks):
    """Sleeps after each step (so a test can kill the run mid-way); counts steps as hook state."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.steps = 0

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])

    def on_step_end(self, *, epoch: int, step: int, loss: float, skipped: bool) -> None:
        self.steps += 1
        time.sleep(self.delay)


def train(out_dir: str | Path, *, resume: bool = False, delay: float = 0.0, epochs: int = 3,
          hooks: Hooks | None = None, **kwargs):
    """Build (seeded) and train the tiny model; returns (model, history)."""
    torch.manual_seed(7)
    model = build_model(SPEC)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    options = dict(batch_size=4, checkpoint_every=2, seed=3, progress=False, val_dataset=TinyData(8, seed=9))
    options.update(kwargs)
    history = fit(model, loss_fn=loss_fn, dataset=TinyData(), optimizer=opt, scheduler=sched, epochs=epochs,
                  out_dir=out_dir, resume=resume, hooks=hooks if hooks is not None else Slow(delay), **options)
    return model, history


# ----------------------------------------------------------------- distributed
def train_plain(out_dir, *, batch_size: int, epochs: int = 2):
    """The deterministic (no dropout, no noise) run that 1 and 2 processes must agree on."""
    torch.manual_seed(11)
    model = build_model({"factory": "training_tiny:make_model", "kwargs": {"hidden": 8, "dropout": 0.0}})
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return fit(model, loss_fn=loss_fn, dataset=TinyData(noisy=False), optimizer=opt, epochs=epochs, out_dir=out_dir,
               batch_size=batch_size, seed=5, progress=False, val_dataset=TinyData(7, seed=9, noisy=False))


def ddp_worker(rank: int, world: int, init_file: str, out_dir: str, global_batch: int) -> None:
    """torch.multiprocessing.spawn target: gloo group, all-reduce checks, then fit."""
    from convexrecon.training import distributed as D

    torch.set_num_threads(1)
    D.init_process_group(rank=rank, world_size=world, init_method=f"file://{init_file}", backend="gloo")
    try:
        assert D.world_size() == world and D.rank() == rank
        total = D.all_reduce_sum(torch.tensor([rank + 1.0, 1.0]))
        assert total.tolist() == [world * (world + 1) / 2, world], total
        z = D.all_reduce_mean(torch.tensor([complex(rank, -rank)], dtype=torch.complex64))
        assert torch.allclose(z, torch.tensor([complex((world - 1) / 2, -(world - 1) / 2)], dtype=torch.complex64))
        train_plain(out_dir, batch_size=global_batch // world)
    finally:
        D.cleanup()


# ----------------------------------------------------------------- peak_memory factories
def alloc_step(*, device: str, mb: int):
    """A non-autograd step that allocates and touches ``mb`` MiB."""

    def step():
        buf = torch.ones(mb * 2**18, dtype=torch.float32, device=device)
        return float(buf.sum())

    return step


def mlp_step(*, device: str, batch: int, d_in: int, hidden: int, d_out: int):
    """One SGD step of ``sum((tanh(x @ W1) @ W2) ** 2)``.

    Autograd saves x (for W1's gradient), tanh's output h (for tanh and for W2's
    gradient: one storage), W2 (for h's gradient; a parameter) and h @ W2 (for the square).
    """
    w1 = torch.randn(d_in, hidden, device=device, requires_grad=True)
    w2 = torch.randn(hidden, d_out, device=device, requires_grad=True)
    x = torch.randn(batch, d_in, device=device)
    opt = torch.optim.SGD([w1, w2], lr=1e-3)

    def step():
        opt.zero_grad()
        loss = ((torch.tanh(x @ w1) @ w2) ** 2).sum()
        loss.backward()
        opt.step()

    return step


if __name__ == "__main__":
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--plain-global-batch", type=int, default=0, help="run train_plain (under torchrun)")
    args = parser.parse_args()
    if args.plain_global_batch:
        from convexrecon.training import distributed as D

        info = D.init_from_env()
        try:
            train_plain(args.out, batch_size=args.plain_global_batch // info.world_size)
        finally:
            D.cleanup()
    else:
        train(args.out, resume=args.resume, delay=args.delay)
    (Path(args.out) / "done").touch()
