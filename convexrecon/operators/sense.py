"""Cartesian multi-coil SENSE: ``y_c = mask * fftc(maps_c * x)``.

The operator is ``Mask @ FFT @ Multiply(maps)`` batched over coils, but computed
without any fftshift. The centred FFT is a plain FFT between two diagonal phase
factors (:func:`~convexrecon.operators.fft.centering_phases`, a ``+-1`` checkerboard
for even sizes), so:

- the input factor is folded into the coil maps once, at construction;
- the output factor is folded into the k-space mask (forward and adjoint);
- in the normal operator the output factor cancels (it has unit modulus and commutes
  with the mask), and since ``mask^2 = mask`` the mask is applied once:
  ``A^H A x = sum_c conj(S_c) F^H M F (S_c x)`` with ``S_c`` the folded maps and ``F``
  the plain FFT;
- FFT axes along which the mask is constant commute with the mask and cancel in
  ``A^H A``: a 1-D phase-encode mask (constant along the readout axis ``-2``) needs
  only 1-D FFTs along ``-1``, and a mask constant everywhere (or ``mask=None``)
  reduces the normal to ``sum_c |S_c|^2 x``.
"""

from __future__ import annotations

import torch

from convexrecon._checks import as_tensor, check_finite, complex_dtype_of, real_dtype_of
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.operators.elementwise import as_bool_mask
from convexrecon.operators.fft import centering_phases

__all__ = ["Sense"]


class Sense(Operator):
    """Cartesian multi-coil SENSE operator.

    Args:
        maps: coil sensitivities ``(*batch, C, *im)`` with ``im`` 2-D ``(H, W)`` or,
            with ``ndim=3``, 3-D ``(D, H, W)``. Leading batch dimensions are
            per-sample maps.
        mask: bool k-space sampling mask broadcastable to ``(*batch, *im)`` (centred
            k-space layout, like ``fftc``); may differ per sample. ``None`` means
            fully sampled. Numeric 0/1 masks are accepted. The mask has no coil
            axis: a ``(B, 1, H, W)`` mask is read as batch dimensions ``(B, 1)``.
        dtype: complex dtype; default the complex type of ``maps``.
        ndim: number of image dimensions, 2 or 3 (needed because ``(B, C, H, W)``
            and ``(C, D, H, W)`` maps have the same rank).

    ``ishape = im`` and ``oshape = (C, *im)``. An input ``(*xbatch, *im)`` gives
    k-space ``(*broadcast(xbatch, batch), C, *im)``.
    """

    def __init__(self, maps, mask=None, *, dtype: torch.dtype | None = None, ndim: int = 2) -> None:
        if ndim not in (2, 3):
            raise InputError(f"ndim: expected 2 or 3 image dimensions, got {ndim!r}")
        maps = as_tensor(maps, "maps")
        if not (maps.is_floating_point() or maps.is_complex()):
            raise InputError(f"maps: expected a float or complex tensor, got dtype {maps.dtype}")
        if maps.ndim < ndim + 1:
            layout = "(*batch, C, H, W)" if ndim == 2 else "(*batch, C, D, H, W)"
            raise InputError(
                f"maps: expected {layout} for ndim={ndim}, got shape {tuple(maps.shape)}"
            )
        cdt = complex_dtype_of(dtype if dtype is not None else maps.dtype)
        maps = check_finite(maps.to(cdt), "maps")
        im = tuple(int(s) for s in maps.shape[maps.ndim - ndim:])
        ncoils = int(maps.shape[maps.ndim - ndim - 1])
        super().__init__(im, (ncoils, *im), dtype=cdt)
        self.ndim = ndim
        self.im_dims = tuple(range(-ndim, 0))
        self._cdim = -ndim - 1
        map_batch = tuple(maps.shape[: maps.ndim - ndim - 1])

        d_in, d_out = centering_phases(im, dtype=cdt, device=maps.device)
        # folded maps S_c * d_in, and their conjugates (precomputed: a lazy conj in
        # the coil sum costs an extra pass per call)
        self._maps = maps * d_in
        self._maps_conj = self._maps.conj().resolve_conj()

        if mask is None:
            self.mask: torch.Tensor | None = None
            kmask = d_out
            norm_mask = torch.ones((1,) * ndim, dtype=torch.bool, device=maps.device)
        else:
            m = as_bool_mask(mask, device=maps.device)
            m = m.reshape((1,) * max(0, ndim - m.ndim) + tuple(m.shape))
            trail = tuple(m.shape[m.ndim - ndim:])
            if any(t not in (1, n) for t, n in zip(trail, im)):
                raise InputError(
                    f"mask: expected a shape broadcastable to (*batch, {', '.join(map(str, im))}), "
                    f"got {tuple(m.shape)}"
                )
            try:
                torch.broadcast_shapes(tuple(m.shape[: m.ndim - ndim]), map_batch)
            except RuntimeError as exc:
                raise InputError(
                    f"mask: expected batch dims broadcastable with the maps' batch dims "
                    f"{map_batch}, got mask shape {tuple(m.shape)}"
                ) from exc
            self.mask = m
            kmask = m * d_out
            norm_mask = m
        # forward/adjoint k-space weights, with a coil axis
        self._kmask = kmask.unsqueeze(self._cdim).to(cdt)
        self._kmask_conj = self._kmask.conj().resolve_conj()

        # normal: drop the FFT along every axis on which the mask is constant
        axes = []
        for d in self.im_dims:
            if norm_mask.shape[d] > 1 and not bool((norm_mask == norm_mask.narrow(d, 0, 1)).all()):
                axes.append(d)
            elif norm_mask.shape[d] > 1:
                norm_mask = norm_mask.narrow(d, 0, 1)
        self.normal_fft_dims: tuple[int, ...] = tuple(axes)
        rdt = real_dtype_of(cdt)
        if axes:
            self._nmask = norm_mask.unsqueeze(self._cdim).to(cdt)
            self._nweight = None
        else:
            sos = (self._maps.real.square() + self._maps.imag.square()).sum(self._cdim)
            self._nmask = None
            self._nweight = (sos * norm_mask.to(rdt)).to(rdt)

    # -- public views of the unfolded data -------------------------------------
    @property
    def maps(self) -> torch.Tensor:
        """The coil maps ``(*batch, C, *im)`` as given (in the operator's dtype)."""
        d_in, _ = centering_phases(self.ishape, dtype=self._maps.dtype, device=self._maps.device)
        return self._maps * d_in.conj()

    @property
    def ncoils(self) -> int:
        """Number of coils."""
        return self.oshape[0]

    # -- the maps ------------------------------------------------------------------
    def _expand(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(self._cdim) * self._maps

    def _combine(self, z: torch.Tensor) -> torch.Tensor:
        return (z * self._maps_conj).sum(self._cdim)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.fft.fftn(self._expand(x), dim=self.im_dims, norm="ortho")
        return k * self._kmask

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        z = torch.fft.ifftn(y * self._kmask_conj, dim=self.im_dims, norm="ortho")
        return self._combine(z)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        if self._nweight is not None:
            return x * self._nweight
        dims = self.normal_fft_dims
        # unnormalised forward + 1/n inverse == orthonormal pair
        k = torch.fft.fftn(self._expand(x), dim=dims)
        if not k.requires_grad and k.shape == torch.broadcast_shapes(k.shape, self._nmask.shape):
            k = k.mul_(self._nmask)  # in place: one coil-image array fewer at the peak
        else:
            k = k * self._nmask
        z = torch.fft.ifftn(k, dim=dims)
        del k
        return self._combine(z)

    def __repr__(self) -> str:
        batch = tuple(self._maps.shape[: self._maps.ndim - self.ndim - 1])
        return (f"Sense(ishape={self.ishape}, oshape={self.oshape}, batch={batch}, "
                f"mask={'None' if self.mask is None else tuple(self.mask.shape)}, "
                f"normal_fft_dims={self.normal_fft_dims}, dtype={self.dtype})")
