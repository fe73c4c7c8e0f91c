"""Warm starts for DEQ training: the last fixed point of every training sample.

:class:`WarmStartCache` maps a training sample's id (``Sample.index``) to the last
``z*`` found for it, on the CPU. The next epoch's solve for that sample starts
from it (:meth:`WarmStartCache.start`), which saves forward iterations once the
weights change slowly. Its ``state_dict`` goes into the training checkpoint, so a
resumed run starts from the same points.

Warm start does not exist at inference: a new scan has no previous fixed point, so
:class:`~convexrecon.implicit.deq.DEQ` always starts from ``A^H y`` when no ``z0``
is given.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from convexrecon.errors import InputError

__all__ = ["WarmStartCache"]


class WarmStartCache:
    """Last fixed point per training-sample id (kept on the CPU)."""

    def __init__(self) -> None:
        self._store: dict[int, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def _ids(ids: Sequence[int] | torch.Tensor) -> list[int]:
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        try:
            return [int(i) for i in ids]
        except (TypeError, ValueError):
            raise InputError(f"ids: expected integer sample ids, got {ids!r}") from None

    def start(self, ids: Sequence[int] | torch.Tensor, default: torch.Tensor) -> torch.Tensor:
        """``default`` (``(B, ...)``) with row ``i`` replaced by the cached point of ``ids[i]``.

        A cached point of another shape (a different crop) is ignored.
        """
        return self.lookup(ids, default)[0]

    def lookup(self, ids: Sequence[int] | torch.Tensor,
               default: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`start`, and the ``(B,)`` bool mask of the rows found in the cache."""
        keys = self._ids(ids)
        if len(keys) != default.shape[0]:
            raise InputError(f"ids: expected {default.shape[0]} ids (the batch), got {len(keys)}")
        out = default.detach().clone()
        hit = torch.zeros(len(keys), dtype=torch.bool, device=out.device)
        for row, key in enumerate(keys):
            z = self._store.get(key)
            if z is not None and z.shape == out.shape[1:]:
                out[row] = z.to(device=out.device, dtype=out.dtype)
                hit[row] = True
                self.hits += 1
            else:
                self.misses += 1
        return out, hit

    @staticmethod
    def data_consistent(z: torch.Tensor, hit: torch.Tensor, y: torch.Tensor, A) -> torch.Tensor:
        """Cached rows moved one gradient step towards the new data: ``z - A^H(A z - y)``.

        A training sample gets a fresh mask and noise every epoch, so its cached point
        does not fit the new k-space; on a scaled problem (``||A^H A|| <= 1``) this step
        replaces the sampled content by the new data and keeps the rest.
        """
        with torch.no_grad():
            moved = z - A.adjoint(A.forward(z) - y)
        mask = hit.reshape(hit.shape + (1,) * (z.ndim - hit.ndim))
        return torch.where(mask, moved, z)

    def update(self, ids: Sequence[int] | torch.Tensor, z: torch.Tensor,
               keep: torch.Tensor | None = None) -> None:
        """Store ``z[i]`` for ``ids[i]`` (only where ``keep[i]``, e.g. not diverged)."""
        keys = self._ids(ids)
        if len(keys) != z.shape[0]:
            raise InputError(f"ids: expected {z.shape[0]} ids (the batch), got {len(keys)}")
        zc = z.detach().to("cpu")
        for row, key in enumerate(keys):
            if keep is None or bool(keep[row]):
                self._store[key] = zc[row].clone()

    def state_dict(self) -> dict[str, Any]:
        keys = sorted(self._store)
        return {"ids": keys, "z": [self._store[k] for k in keys]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            ids, zs = state["ids"], state["z"]
            if len(ids) != len(zs):
                raise ValueError("length mismatch")
            self._store = {int(k): torch.as_tensor(z) for k, z in zip(ids, zs)}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"warm-start state: expected {{'ids': [...], 'z': [...]}}, got {exc}") from None
