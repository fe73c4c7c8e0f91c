"""Warm starts for DEQ training: the last fixed point of every training sample.

:class:`WarmStartCache` maps a training sample's id (``Sample.index``) to the last
``z*`` found for it, on the CPU. The next epoch's solve for that sample starts
from it (:meth:`WarmStartCache.start`), which saves forward iterations once the
weights change slowly. Its ``state_dict`` goes into the training checkpoint, so a
resumed run starts from the same points.

**A fresh draw moves the frame.** A training set that draws a fresh mask, noise and
smooth phase per sample and epoch (``SliceDataset``'s ``vary_per_epoch``) changes
the image's phase and scale between epochs, so last epoch's point is in another
frame: measured (``benchmarks/deq.py``, section 3) it was farther from the new fixed
point than the cold start ``A^H y``, and a warm start cost iterations. Given the
zero-filled image of the data a point was solved for (``reference=``, usually
``A^H y``), the cache stores the point in that data's frame (divided by the phase
and norm of the reference's low-resolution image, :func:`lowres`) and maps it into
the new data's frame at lookup. With the same data the point comes back unchanged
(to rounding). What a new mask and noise change in the fixed point itself no start
can anticipate: a warm start saves iterations only where that change is small
against the distance of ``A^H y`` (a well-trained map, repeated draws).

Warm start does not exist at inference: a new scan has no previous fixed point, so
:class:`~convexrecon.implicit.deq.DEQ` always starts from ``A^H y`` when no ``z0``
is given.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch

from convexrecon.errors import InputError

__all__ = ["WarmStartCache", "Frame", "lowres"]


def lowres(x: torch.Tensor, *, batch_dims: int = 1, width: float = 0.1) -> torch.Tensor:
    """Gaussian low-pass of the complex images ``x`` over their non-batch axes: the
    k-space window has a standard deviation of ``width`` times each axis' length."""
    if not isinstance(x, torch.Tensor) or not x.is_complex() or x.ndim <= batch_dims:
        raise InputError(f"reference: expected complex images with {batch_dims} batch axes, got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    dims = tuple(range(batch_dims, x.ndim))
    k = torch.fft.fftn(x, dim=dims)
    for d in dims:
        n = x.shape[d]
        f = torch.fft.fftfreq(n, device=x.device, dtype=x.real.dtype)  # cycles / sample
        w = torch.exp(-0.5 * (f / float(width)) ** 2)
        k = k * w.reshape((n,) + (1,) * (x.ndim - d - 1))
    return torch.fft.ifftn(k, dim=dims)


class Frame(NamedTuple):
    """A batch's frame: the unit phase maps and norms ``(n, 1...)`` of the low-resolution
    images of its references (:meth:`WarmStartCache.frame`)."""

    phase: torch.Tensor
    norm: torch.Tensor


def _frame(reference: "torch.Tensor | Frame", n: int) -> Frame:
    """The frame of ``reference`` (zero-filled images, or a :class:`Frame` already made)."""
    if isinstance(reference, Frame):
        if reference.phase.shape[0] != n:
            raise InputError(f"reference: expected a frame of {n} images, got {reference.phase.shape[0]}")
        return reference
    if reference.shape[0] != n:
        raise InputError(f"reference: expected a leading batch axis of {n}, got {tuple(reference.shape)}")
    lp = lowres(reference.detach())
    phase = torch.polar(torch.ones_like(lp.real), torch.angle(lp))
    norm = torch.linalg.vector_norm(lp.reshape(n, -1), dim=1)
    norm = torch.where(norm > 0, norm, torch.ones_like(norm))
    return Frame(phase, norm.reshape((n,) + (1,) * (lp.ndim - 1)))


class WarmStartCache:
    """Last fixed point per training-sample id (kept on the CPU)."""

    def __init__(self) -> None:
        self._store: dict[int, torch.Tensor] = {}
        self._framed: dict[int, bool] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def frame(reference: torch.Tensor) -> Frame:
        """The frame of a batch of zero-filled images, to pass as ``reference=`` to both
        :meth:`lookup` and :meth:`update` of one step (one low-pass filter, not two)."""
        if not isinstance(reference, torch.Tensor) or reference.ndim < 1:
            raise InputError(f"reference: expected a batch of complex images, got {type(reference).__name__}")
        return _frame(reference, reference.shape[0])

    @staticmethod
    def _ids(ids: Sequence[int] | torch.Tensor) -> list[int]:
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        try:
            return [int(i) for i in ids]
        except (TypeError, ValueError):
            raise InputError(f"ids: expected integer sample ids, got {ids!r}") from None

    def start(self, ids: Sequence[int] | torch.Tensor, default: torch.Tensor, *,
              reference: "torch.Tensor | Frame | None" = None) -> torch.Tensor:
        """``default`` (``(B, ...)``) with row ``i`` replaced by the cached point of ``ids[i]``.

        A cached point of another shape (a different crop) is ignored. With
        ``reference`` (the zero-filled images of this batch's data, or their
        :meth:`frame`), a point stored with a reference is moved into this data's
        frame (see the module doc). A peek: the hit counters are left alone.
        """
        return self._gather(ids, default, reference)[0]

    def lookup(self, ids: Sequence[int] | torch.Tensor, default: torch.Tensor, *,
               reference: "torch.Tensor | Frame | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`start`, and the ``(B,)`` bool mask of the rows found in the cache,
        which the counters ``hits`` / ``misses`` add up."""
        out, hit = self._gather(ids, default, reference)
        found = int(hit.sum())
        self.hits += found
        self.misses += hit.numel() - found
        return out, hit

    def _gather(self, ids: Sequence[int] | torch.Tensor, default: torch.Tensor,
                reference: "torch.Tensor | Frame | None") -> tuple[torch.Tensor, torch.Tensor]:
        keys = self._ids(ids)
        if len(keys) != default.shape[0]:
            raise InputError(f"ids: expected {default.shape[0]} ids (the batch), got {len(keys)}")
        out = default.detach().clone()
        frame = _frame(reference, len(keys)) if reference is not None else None
        if frame is not None:
            frame = Frame(frame.phase.to(out.device), frame.norm.to(out.device))
        hit = torch.zeros(len(keys), dtype=torch.bool, device=out.device)
        for row, key in enumerate(keys):
            z = self._store.get(key)
            if z is not None and z.shape == out.shape[1:]:
                z = z.to(device=out.device, dtype=out.dtype)
                if frame is not None and self._framed.get(key, False):
                    z = z * frame.phase[row] * frame.norm[row]
                out[row] = z
                hit[row] = True
        return out, hit

    def update(self, ids: Sequence[int] | torch.Tensor, z: torch.Tensor,
               keep: torch.Tensor | None = None, *,
               reference: "torch.Tensor | Frame | None" = None) -> None:
        """Store ``z[i]`` for ``ids[i]`` (only where ``keep[i]``, e.g. not diverged); with
        ``reference`` (the zero-filled images of the data ``z`` was solved for, or their
        :meth:`frame`), in that data's frame."""
        keys = self._ids(ids)
        if len(keys) != z.shape[0]:
            raise InputError(f"ids: expected {z.shape[0]} ids (the batch), got {len(keys)}")
        z = z.detach()
        if reference is not None:
            phase, norm = (t.to(z.device) for t in _frame(reference, len(keys)))
            z = z * phase.conj() / norm
        zc = z.to("cpu")
        for row, key in enumerate(keys):
            if keep is None or bool(keep[row]):
                self._store[key] = zc[row].clone()
                self._framed[key] = reference is not None

    def state_dict(self) -> dict[str, Any]:
        keys = sorted(self._store)
        return {"ids": keys, "z": [self._store[k] for k in keys],
                "framed": [self._framed.get(k, False) for k in keys]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            ids, zs = state["ids"], state["z"]
            framed = state.get("framed", [False] * len(ids))  # absent in older checkpoints
            if len(ids) != len(zs) or len(framed) != len(ids):
                raise ValueError("length mismatch")
            self._store = {int(k): torch.as_tensor(z) for k, z in zip(ids, zs)}
            self._framed = {int(k): bool(f) for k, f in zip(ids, framed)}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"warm-start state: expected {{'ids': [...], 'z': [...], 'framed': [...]}}, "
                             f"got {exc}") from None
