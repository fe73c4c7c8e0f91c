"""Convolution operators of the convex two-layer (gated / ReLU) CNN programs.

The convex reformulation of a two-layer convolutional network with frozen gates
``h_1..h_P`` fits the output

    Y ~ sum_i D_i * conv(X, U_i),     D_i = 1[conv(X, h_i) >= 0],

which is linear in the filters ``U = (U_1, ..., U_P)``. :class:`PatternConv` is that
linear map: **one** plain convolution of the (pre-padded) images with ``P * C_out``
output channels, then a mask per pattern and a sum over patterns. Its adjoint is the
filter-gradient correlation (what :func:`torch.nn.grad.conv2d_weight` computes), not
a transposed convolution (which would be the adjoint in ``X``).

Conventions
- Images are real ``(N, C, H, W)``; a complex MR image is two channels (real,
  imaginary), see :func:`complex_to_channels` (re-exported from
  :mod:`convexrecon.data.transforms`).
- ``padding`` is ``"zeros"`` or ``"circular"``; outputs keep the ``H x W`` size (odd
  kernels). The images are padded once, at construction.
- ``bias=True`` appends a constant channel *after* padding, so every patch sees the
  constant and its ``k x k`` taps act as a true bias (also at the borders). Its value
  is ``1/k``: the ``k^2`` taps then sum to one unit-scale bias whose minimal weight
  norm equals the bias itself (the penalty of an ordinary bias weight), and the
  ``k^2`` collinear columns add an eigenvalue of ``n``, not ``k^2 n``, to ``A^T A``.
- The operator is real. Complex filters are handled as real and imaginary parts (the
  map is then complex-linear), so it also runs under the complex operator registry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convexrecon._checks import check_choice, check_finite
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator, prod
# defined in convexrecon.data.transforms (torch-only, no operator import: no cycle)
from convexrecon.data.transforms import channels_to_complex, complex_to_channels

__all__ = [
    "PAD_MODES",
    "complex_to_channels",
    "channels_to_complex",
    "pad_input",
    "random_gates",
    "pattern_masks",
    "PatternConv",
]

PAD_MODES = ("zeros", "circular")


def _check_kernel(kernel_size: int) -> int:
    k = int(kernel_size)
    if k != kernel_size or k < 1 or k % 2 == 0:
        raise InputError(f"kernel_size: expected an odd integer >= 1, got {kernel_size!r}")
    return k


def _check_images(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a torch.Tensor (N, C, H, W), got {type(x).__name__}")
    if x.is_complex():
        x = complex_to_channels(x)
    if x.ndim != 4:
        raise InputError(f"{name}: expected shape (N, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name}: expected a real floating (or complex) tensor, got {x.dtype}")
    return check_finite(x, name)


def pad_input(x: torch.Tensor, kernel_size: int, *, padding: str = "zeros",
              bias: bool = True) -> torch.Tensor:
    """Pad images for a 'same'-size convolution and append the bias channel.

    Args:
        x: real ``(N, C, H, W)`` (complex is split into real/imag channels).
        kernel_size: odd kernel size ``k``.
        padding: ``"zeros"`` or ``"circular"``.
        bias: append a constant channel of value ``1/k`` (after padding, so it is
            constant everywhere).

    Returns:
        ``(N, C + bias, H + k - 1, W + k - 1)``.
    """
    x = _check_images(x, "x")
    k = _check_kernel(kernel_size)
    check_choice(padding, PAD_MODES, "padding")
    r = k // 2
    if r:
        if padding == "circular":
            if r > x.shape[-1] or r > x.shape[-2]:
                raise InputError(f"kernel_size: circular padding needs k//2 <= H, W; got k={k}, "
                                 f"image {tuple(x.shape[-2:])}")
            x = F.pad(x, (r, r, r, r), mode="circular")
        else:
            x = F.pad(x, (r, r, r, r))
    if bias:
        const = torch.full_like(x[:, :1], 1.0 / k)
        x = torch.cat([x, const], dim=1)
    return x.contiguous()


def random_gates(n_patterns: int, in_channels: int, kernel_size: int, *, bias: bool = True,
                 bias_scale: float = 1.0, seed: int | None = 0,
                 generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Random gate filters ``h_i`` of shape ``(P, in_channels + bias, k, k)``.

    Standard normal entries; the bias channel's taps are scaled by ``bias_scale``
    (pass the RMS of the images so that the gates do not depend on the data scale).
    Randomness only from ``seed`` or ``generator`` (on the CPU, then moved).
    """
    p = int(n_patterns)
    if p != n_patterns or p < 1:
        raise InputError(f"n_patterns: expected an integer >= 1, got {n_patterns!r}")
    k = _check_kernel(kernel_size)
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    c = int(in_channels) + int(bool(bias))
    h = torch.randn(p, c, k, k, generator=generator, dtype=torch.float64)
    if bias:
        h[:, -1] *= float(bias_scale)  # the constant is 1/k: the gate bias has std ~ bias_scale
    return h.to(device=device, dtype=dtype)


def pattern_masks(x_padded: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Bool masks ``D_i = 1[conv(X, h_i) >= 0]`` of shape ``(N, P, H, W)``.

    ``x_padded`` comes from :func:`pad_input`; ``gates`` is ``(P, C, k, k)`` with the
    same channel count.
    """
    if gates.ndim != 4 or gates.shape[1] != x_padded.shape[1]:
        raise InputError(f"gates: expected (P, {x_padded.shape[1]}, k, k), got {tuple(gates.shape)}")
    with torch.no_grad():
        return F.conv2d(x_padded, gates.to(x_padded.dtype)) >= 0


class PatternConv(Operator):
    """``U -> sum_i D_i * conv(X, U_i)`` for filters ``U`` of shape ``(P, C_out, C, k, k)``.

    Args:
        x_padded: real ``(N, C, H + k - 1, W + k - 1)`` from :func:`pad_input`.
        masks: bool ``(N, P, H, W)`` from :func:`pattern_masks`.
        c_out: number of output channels.
        dtype: the operator's nominal dtype (default: the real dtype of ``x_padded``).
            The map itself is real; complex filters are split into real and imaginary
            parts, which makes it complex-linear.

    ``ishape = (P, C_out, C, k, k)``, ``oshape = (N, C_out, H, W)``; leading batch
    dimensions of the filters are folded into the convolution's output channels.
    """

    def __init__(self, x_padded: torch.Tensor, masks: torch.Tensor, *, c_out: int,
                 dtype: torch.dtype | None = None) -> None:
        if x_padded.ndim != 4 or not x_padded.is_floating_point():
            raise InputError(f"x_padded: expected a real (N, C, H', W') tensor, got "
                             f"{tuple(x_padded.shape)} {x_padded.dtype}")
        if masks.ndim != 4 or masks.shape[0] != x_padded.shape[0]:
            raise InputError(f"masks: expected (N={x_padded.shape[0]}, P, H, W), got {tuple(masks.shape)}")
        n, c, hp, wp = x_padded.shape
        _, p, h, w = masks.shape
        if (hp - h) != (wp - w) or (hp - h) % 2 or hp < h:
            raise InputError(f"masks: spatial size {(h, w)} does not match padded images {(hp, wp)} "
                             "for an odd square kernel")
        k = hp - h + 1
        co = int(c_out)
        if co < 1 or co != c_out:
            raise InputError(f"c_out: expected an integer >= 1, got {c_out!r}")
        super().__init__((p, co, c, k, k), (n, co, h, w),
                         dtype=dtype if dtype is not None else x_padded.dtype)
        self.x_padded = x_padded
        self.maskf = masks.to(x_padded.dtype).unsqueeze(1).unsqueeze(3)  # (N, 1, P, 1, H, W)
        self.n_patterns, self.c_out, self.c_in, self.kernel_size = p, co, c, k

    # -- helpers --------------------------------------------------------------------
    def _split(self, t: torch.Tensor, tail: int) -> tuple[torch.Tensor, tuple[int, ...], bool]:
        """Flatten leading batch dims, split complex into a doubled real batch."""
        batch = tuple(t.shape[: t.ndim - tail])
        t = t.reshape(prod(batch), *t.shape[t.ndim - tail:])
        cplx = t.is_complex()
        if cplx:
            t = torch.cat([t.real, t.imag], dim=0)
        return t.to(self.x_padded.dtype), batch, cplx

    @staticmethod
    def _merge(t: torch.Tensor, batch: tuple[int, ...], cplx: bool) -> torch.Tensor:
        if cplx:
            half = t.shape[0] // 2
            t = torch.complex(t[:half], t[half:])
        return t.reshape(*batch, *t.shape[1:])

    # -- operator -------------------------------------------------------------------
    def _forward(self, u: torch.Tensor) -> torch.Tensor:
        u, batch, cplx = self._split(u, 5)
        b = u.shape[0]
        p, co = self.n_patterns, self.c_out
        z = F.conv2d(self.x_padded, u.reshape(b * p * co, self.c_in, self.kernel_size,
                                             self.kernel_size))
        n, _, h, w = z.shape
        out = (z.view(n, b, p, co, h, w) * self.maskf).sum(dim=2)  # (N, B, Co, H, W)
        return self._merge(out.transpose(0, 1), batch, cplx)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        y, batch, cplx = self._split(y, 4)
        b = y.shape[0]
        n, co, h, w = self.oshape
        p, c, k = self.n_patterns, self.c_in, self.kernel_size
        g = y.transpose(0, 1).unsqueeze(2) * self.maskf  # (N, B, P, Co, H, W)
        g = g.reshape(n, b * p * co, h, w)
        wgt = torch.nn.grad.conv2d_weight(self.x_padded, (b * p * co, c, k, k), g)
        return self._merge(wgt.reshape(b, p, co, c, k, k), batch, cplx)

    def conv_all(self, u: torch.Tensor) -> torch.Tensor:
        """Unmasked ``conv(X, u)`` for real filters ``(*lead, C, k, k)`` (e.g.
        ``(P, C_out, C, k, k)``): returns ``(N, *lead, H, W)``. Used by the cone
        constraints of the ReLU form."""
        lead = tuple(u.shape[:-3])
        z = F.conv2d(self.x_padded, u.reshape(-1, self.c_in, self.kernel_size, self.kernel_size))
        return z.view(z.shape[0], *lead, *z.shape[-2:])

    def conv_all_adjoint(self, z: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`conv_all`: ``(N, *lead, H, W) -> (*lead, C, k, k)``."""
        n, h, w = z.shape[0], z.shape[-2], z.shape[-1]
        lead = tuple(z.shape[1:-2])
        c, k = self.c_in, self.kernel_size
        m = prod(lead)
        wgt = torch.nn.grad.conv2d_weight(self.x_padded, (m, c, k, k), z.reshape(n, m, h, w))
        return wgt.reshape(*lead, c, k, k)

    def patch_matrix(self) -> torch.Tensor:
        """The patch matrix ``(N*H*W, C*k*k)`` (rows ordered n, h, w), for small sizes."""
        k = self.kernel_size
        cols = F.unfold(self.x_padded, k)  # (N, C*k*k, H*W)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])

    def mask_matrix(self) -> torch.Tensor:
        """The masks as ``(N*H*W, P)`` (rows ordered n, h, w)."""
        m = self.maskf[:, 0, :, 0]  # (N, P, H, W)
        return m.permute(0, 2, 3, 1).reshape(-1, self.n_patterns)

    @classmethod
    def from_images(cls, x: torch.Tensor, gates: torch.Tensor, *, c_out: int,
                    padding: str = "zeros", bias: bool = True,
                    dtype: torch.dtype | None = None) -> "PatternConv":
        """Build from raw images ``(N, C, H, W)`` and gate filters ``(P, C + bias, k, k)``."""
        if gates.ndim != 4:
            raise InputError(f"gates: expected (P, C, k, k), got {tuple(gates.shape)}")
        xp = pad_input(x, gates.shape[-1], padding=padding, bias=bias)
        return cls(xp, pattern_masks(xp, gates), c_out=c_out, dtype=dtype)
