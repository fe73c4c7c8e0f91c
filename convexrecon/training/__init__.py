"""Training infrastructure for the learned reconstructors.

- :func:`fit`: the epoch/step loop for nonconvex models, with lossless resume,
  ``metrics.json``, progress bars and optional TensorBoard files (:mod:`.loop`).
- :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`load_model`,
  :func:`build_model`: atomic checkpoints and rebuilding a module from its
  ``model_spec`` (:mod:`.checkpoint`).
- :func:`peak_memory`: peak memory of one training step in a fresh process
  (:mod:`.memory`).
- :mod:`.distributed`: torchrun / torch.distributed helpers (DDP, sampler, all-reduce).
"""

from __future__ import annotations

from . import distributed
from .checkpoint import build_model, check_model_spec, load_checkpoint, load_model, save_checkpoint
from .loop import CHECKPOINT_NAME, METRICS_NAME, History, Hooks, fit
from .memory import MemoryReport, measure_step, peak_memory
from .rng import get_rng_state, seed_everything, set_rng_state

__all__ = [
    "fit",
    "Hooks",
    "History",
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "build_model",
    "check_model_spec",
    "get_rng_state",
    "set_rng_state",
    "seed_everything",
    "peak_memory",
    "measure_step",
    "MemoryReport",
    "distributed",
]
