"""Orthogonal multilevel wavelet transform with periodization (:class:`Wavelet`).

With ``mode="periodization"`` every level halves each transformed axis exactly, so
the coefficients of all levels pack into an array of the image's own shape (pywt's
``coeffs_to_array`` layout: the coarsest approximation in the leading corner, and at
each level the detail band ``key`` occupies, along axis ``i``, the first half of the
current region if ``key[i] == "a"`` and the second half if it is ``"d"``). For an
orthogonal wavelet the transform is then an orthogonal matrix: ``W.H @ W = W @ W.H = I``.

Two interchangeable backends:

- ``"pywt"``: PyWavelets on numpy views of CPU tensors (the fast CPU path). It is
  not differentiable by torch directly; when the input requires grad the call is
  routed through :meth:`~convexrecon.operators.base.Operator.autograd_apply`, whose
  backward uses the (exact) adjoint.
- ``"torch"``: pure torch, one orthogonal analysis matrix per level and axis size
  (built once from pywt's filters), applied by matrix products: any device,
  autograd, double backward.

``backend="auto"`` picks ``"pywt"`` for CPU tensors and ``"torch"`` otherwise.
Complex input is transformed as its real and imaginary parts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pywt
import torch

from convexrecon._checks import check_choice, check_trailing_shape, complex_dtype_of, real_dtype_of
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.operators.fft import normalize_dims

__all__ = ["Wavelet", "default_levels"]

_MODE = "periodization"
_MAX_DEFAULT_LEVELS = 4


def _twos(n: int) -> int:
    """How many times ``n`` divides by 2."""
    k = 0
    while n % 2 == 0 and n > 0:
        n //= 2
        k += 1
    return k


def default_levels(sizes: Sequence[int], wavelet: str | pywt.Wavelet) -> int:
    """Default number of levels for axes of the given ``sizes``.

    As many as the sizes allow (each must divide by ``2**levels``), no more than
    pywt's ``dwt_max_level`` for the filter length (at least 1), capped at 4.
    Raises InputError if some size is odd.
    """
    w = wavelet if isinstance(wavelet, pywt.Wavelet) else pywt.Wavelet(wavelet)
    div = min(_twos(int(n)) for n in sizes)
    if div == 0:
        raise InputError(
            f"ishape: expected even sizes along the wavelet axes (divisible by 2**levels), got {tuple(sizes)}"
        )
    by_filter = max(1, min(pywt.dwt_max_level(int(n), w.dec_len) for n in sizes))
    return min(_MAX_DEFAULT_LEVELS, div, by_filter)


def _analysis_matrix(n: int, wavelet: pywt.Wavelet) -> np.ndarray:
    """The ``n x n`` orthogonal one-level analysis matrix ``[lowpass; highpass]``."""
    lo, hi = pywt.dwt(np.eye(n), wavelet, mode=_MODE, axis=0)
    return np.concatenate([lo, hi], axis=0)


class Wavelet(Operator):
    """Orthogonal multilevel discrete wavelet transform with periodization.

    Args:
        ishape: trailing input shape (``oshape == ishape``).
        wavelet: an orthogonal pywt wavelet name (``"db4"``, ``"haar"``, ``"sym8"``...).
        levels: number of levels; ``None`` picks :func:`default_levels`. The sizes
            along ``axes`` must divide by ``2**levels``.
        axes: the transformed dimensions (indices into ``ishape``).
        dtype: complex dtype of the operator.
        backend: ``"auto"`` (pywt for CPU tensors, torch otherwise), ``"pywt"``
            or ``"torch"``.
    """

    def __init__(self, ishape: Sequence[int], *, wavelet: str = "db4", levels: int | None = None,
                 axes: Sequence[int] = (-2, -1), dtype: torch.dtype = torch.complex64,
                 backend: str = "auto") -> None:
        ishape = tuple(int(s) for s in ishape)
        if any(s < 1 for s in ishape):
            raise InputError(f"ishape: expected positive sizes, got {ishape}")
        super().__init__(ishape, ishape, dtype=complex_dtype_of(dtype))
        self.backend = check_choice(backend, ("auto", "pywt", "torch"), "backend")
        if wavelet not in pywt.wavelist(kind="discrete"):
            raise InputError(f"wavelet: expected a discrete pywt wavelet name, got {wavelet!r}")
        wv = pywt.Wavelet(wavelet)
        if not wv.orthogonal:
            raise InputError(f"wavelet: expected an orthogonal wavelet, got {wavelet!r} (biorthogonal)")
        self.wavelet = wavelet
        self._wv = wv
        self.axes = normalize_dims(axes, len(ishape), "axes")
        sizes = [ishape[a] for a in self.axes]
        if levels is None:
            levels = default_levels(sizes, wv)
        elif not isinstance(levels, (int, np.integer)) or isinstance(levels, bool) or levels < 1:
            raise InputError(f"levels: expected a positive int or None, got {levels!r}")
        levels = int(levels)
        if any(n % (2 ** levels) for n in sizes):
            raise InputError(
                f"ishape: expected sizes along axes {self.axes} divisible by 2**levels = "
                f"{2 ** levels}, got {tuple(sizes)}"
            )
        self.levels = levels
        # per level, the size of the approximation region along each axis
        self._region = [tuple(n >> lev for n in sizes) for lev in range(levels)]
        # torch backend: one analysis matrix per distinct size (a tuple, moved by .to)
        self._sizes = tuple(sorted({n >> lev for n in sizes for lev in range(levels)}))
        self._mats = self._build_mats(device=None)

    def _build_mats(self, device) -> tuple[torch.Tensor, ...]:
        rdt = real_dtype_of(self.dtype)
        return tuple(torch.from_numpy(_analysis_matrix(n, self._wv)).to(device=device, dtype=rdt)
                     for n in self._sizes)

    def _after_to(self) -> None:
        # rebuild from the float64 filters, so that a complex64 -> complex128 move
        # does not keep matrices rounded to float32
        self._mats = self._build_mats(device=self._mats[0].device)

    # -- dispatch ---------------------------------------------------------------------
    def _use_pywt(self, x: torch.Tensor) -> bool:
        if self.backend == "torch":
            return False
        if x.device.type != "cpu":
            if self.backend == "pywt":
                raise InputError(
                    f"backend: 'pywt' needs CPU tensors, got a tensor on {x.device}; use 'torch' or 'auto'"
                )
            return False
        return True

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._use_pywt(x):
            return self._torch_apply(x, inverse=False)
        if torch.is_grad_enabled() and x.requires_grad:
            return self.autograd_apply(x)
        return self._pywt_apply(x, inverse=False)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if not self._use_pywt(y):
            return self._torch_apply(y, inverse=True)
        if torch.is_grad_enabled() and y.requires_grad:
            return self.H.autograd_apply(y)
        return self._pywt_apply(y, inverse=True)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return x

    # -- fused soft threshold (the prox of lam ||W x||_1) ---------------------------
    def shrink(self, x: torch.Tensor, t, *, shift: Sequence[int] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S^-1 W^H soft(W S x, t), |soft(W S x, t)|)``: the complex soft threshold of
        the coefficients in one pass, with ``S`` the circular shift by ``shift`` along
        ``axes`` (``None``: none). ``t`` is a number or a tensor broadcast against
        ``x``. Returns the image and the moduli of the new coefficients (a real tensor
        of ``x``'s shape, for the L1 value).

        On the pywt path the coefficients stay in pywt's planar (real, imaginary)
        layout: no complex interleaving between the transforms, and the modulus is a
        ``hypot`` of two contiguous planes.
        """
        check_trailing_shape(x, self.ishape, f"{self.name}.shrink input")
        shift = tuple(int(v) for v in shift) if shift is not None and any(shift) else None
        if shift is not None and len(shift) != len(self.axes):
            raise InputError(f"shift: expected one shift per axis {self.axes}, got {shift}")
        if (not x.is_complex() or not self._use_pywt(x)
                or (torch.is_grad_enabled() and x.requires_grad)):
            xs = torch.roll(x, shift, self.axes) if shift else x
            c = self.forward(xs)
            if c.untyped_storage().data_ptr() == xs.untyped_storage().data_ptr():
                c = c.clone()
            mag = c.abs()
            new = (mag - t).clamp_min_(0.0)
            out = self.adjoint(c * (new / mag.clamp_min_(torch.finfo(mag.dtype).tiny)))
            return (torch.roll(out, tuple(-v for v in shift), self.axes) if shift else out), new
        planar = torch.view_as_real(x.detach().resolve_conj().resolve_neg()).movedim(-1, 0)
        if shift:
            planar = torch.roll(planar, shift, self.axes)  # the layout copy, shifted
        c = torch.from_numpy(self._pywt_forward(planar.contiguous().numpy()))
        mag = torch.hypot(c[0], c[1])
        new = (mag - t).clamp_min_(0.0)
        c.mul_(new / mag.clamp_min_(torch.finfo(mag.dtype).tiny))
        out = torch.from_numpy(self._pywt_inverse(c.numpy()))
        if shift:
            out = torch.roll(out, tuple(-v for v in shift), self.axes)
        return torch.view_as_complex(out.movedim(0, -1).contiguous()), new

    # -- layout helpers -------------------------------------------------------------
    def _band(self, level: int, key: str) -> tuple:
        """Index of band ``key`` (e.g. ``"ad"``) of ``level`` in the packed array
        (cached: the transforms ask for every band every call)."""
        cache = self.__dict__.setdefault("_band_cache", {})
        if (level, key) not in cache:
            cache[level, key] = self._band_index(level, key)
        return cache[level, key]

    def _band_index(self, level: int, key: str) -> tuple:
        nd = -min(self.axes)
        idx: list = [slice(None)] * nd
        for a, n, ch in zip(self.axes, self._region[level], key):
            h = n // 2
            idx[a + nd] = slice(0, h) if ch == "a" else slice(h, n)
        return (Ellipsis, *idx)

    def _keys(self) -> list[str]:
        keys = self.__dict__.get("_keys_cache")
        if keys is None:
            k = len(self.axes)
            keys = [format(i, f"0{k}b").replace("0", "a").replace("1", "d") for i in range(2 ** k)]
            keys = self.__dict__.setdefault("_keys_cache", keys[1:])  # without the all-'a' band
        return keys

    # -- pywt backend ---------------------------------------------------------------
    def _pywt_apply(self, x: torch.Tensor, *, inverse: bool) -> torch.Tensor:
        cplx = x.is_complex()
        xd = x.detach().resolve_conj().resolve_neg()
        if cplx:
            # planar (2, ..., n) layout: pywt filters contiguous lines fastest
            arr = torch.view_as_real(xd).movedim(-1, 0).contiguous().numpy()
        else:
            arr = xd.contiguous().numpy()
        out = self._pywt_inverse(arr) if inverse else self._pywt_forward(arr)
        res = torch.from_numpy(out)
        if cplx:
            res = torch.view_as_complex(res.movedim(0, -1).contiguous())
        return res

    def _pywt_forward(self, arr: np.ndarray) -> np.ndarray:
        out = np.empty_like(arr)
        a = arr
        full = "a" * len(self.axes)
        for lev in range(self.levels):
            coeffs = pywt.dwtn(a, self._wv, mode=_MODE, axes=self.axes)
            for key in self._keys():
                out[self._band(lev, key)] = coeffs[key]
            a = coeffs[full]
        out[self._band(self.levels - 1, full)] = a
        return out

    def _pywt_inverse(self, arr: np.ndarray) -> np.ndarray:
        full = "a" * len(self.axes)
        a = arr[self._band(self.levels - 1, full)]
        for lev in reversed(range(self.levels)):
            coeffs = {key: arr[self._band(lev, key)] for key in self._keys()}
            coeffs[full] = a
            a = pywt.idwtn(coeffs, self._wv, mode=_MODE, axes=self.axes)
        return np.ascontiguousarray(a, dtype=arr.dtype)

    # -- torch backend --------------------------------------------------------------
    def _matrix(self, n: int, like: torch.Tensor) -> torch.Tensor:
        m = self._mats[self._sizes.index(n)]
        return m.to(device=like.device, dtype=like.dtype)

    def _torch_apply(self, x: torch.Tensor, *, inverse: bool) -> torch.Tensor:
        cplx = x.is_complex()
        t = torch.view_as_real(x).movedim(-1, 0) if cplx else x
        order = reversed(range(self.levels)) if inverse else range(self.levels)
        for lev in order:
            region = self._region[lev]
            corner = t[(Ellipsis, *self._corner_index(region))]
            for a, n in zip(self.axes, region):
                m = self._matrix(n, t)
                corner = _along(corner, m.mT if inverse else m, a)
            t = _replace_corner(t, corner, self.axes)
        return torch.view_as_complex(t.movedim(0, -1).contiguous()) if cplx else t

    def _corner_index(self, region: Sequence[int]) -> list:
        nd = -min(self.axes)
        idx: list = [slice(None)] * nd
        for a, n in zip(self.axes, region):
            idx[a + nd] = slice(0, n)
        return idx


def _along(t: torch.Tensor, m: torch.Tensor, axis: int) -> torch.Tensor:
    """Apply the matrix ``m`` along (negative) ``axis`` of ``t``."""
    if axis == -1:
        return t @ m.mT
    moved = t.movedim(axis, -2)
    return (m @ moved).movedim(-2, axis)


def _replace_corner(full: torch.Tensor, corner: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """``full`` with its leading corner (along ``axes``) replaced by ``corner``, out of place."""
    if not axes:
        return corner
    a = axes[0]
    h = corner.shape[a]
    if h == full.shape[a]:
        return _replace_corner(full, corner, axes[1:])
    top = _replace_corner(full.narrow(a, 0, h), corner, axes[1:])
    return torch.cat([top, full.narrow(a, h, full.shape[a] - h)], dim=a)
