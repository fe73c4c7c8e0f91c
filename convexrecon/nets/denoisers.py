"""Small image denoisers ``R_theta`` for the DEQ map and the unrolled baselines.

Both take a complex image ``(*batch, H, W)`` and return one of the same shape. The
real and imaginary parts travel as two channels (``complex_to_channels`` /
``channels_to_complex``), and both are residual: ``R(x) = skip * x + N(x)``
(``skip = 1`` by default; ``skip < 1`` makes a fresh denoiser a contraction, which a
DEQ map needs: on the unsampled k-space the map's Jacobian is the denoiser's).

- :class:`ResidualCNN`: ``depth`` 3x3 convolutions with ReLUs (the MoDL-style block).
- :class:`SmallUNet`: a two-scale U-Net (average pooling down, nearest upsampling
  up, concatenated skips).

Neither uses batch normalisation, so samples stay independent (a batched fixed-point
solve then equals one-by-one solves). ``out_scale`` initialises the last
convolution small, so that a fresh denoiser is close to the identity and a DEQ
map built from it starts contractive; spectral normalisation is applied from
outside (:func:`convexrecon.implicit.stabilize.apply_spectral_norm`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from convexrecon.errors import InputError
from convexrecon.operators.conv import channels_to_complex, complex_to_channels

__all__ = ["ResidualCNN", "SmallUNet", "DENOISERS", "build_denoiser"]


def _check_int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _check_image(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_complex() or x.ndim < 2:
        raise InputError(f"x: expected a complex image (*batch, H, W), got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    return x


def _apply_real(net, x: torch.Tensor) -> torch.Tensor:
    """Run a real 2-channel network on complex ``(*batch, H, W)``."""
    batch, (h, w) = x.shape[:-2], x.shape[-2:]
    xc = complex_to_channels(x.reshape(-1, h, w))
    out = channels_to_complex(net(xc))
    return out.reshape(*batch, h, w)


class ResidualCNN(nn.Module):
    """``R(x) = skip * x + N(x)`` with ``N`` ``depth`` convolutions of ``features`` channels.

    Args:
        features: hidden channels.
        depth: number of convolutions (>= 2).
        kernel_size: odd kernel size.
        out_scale: the last convolution's initial weights are multiplied by this.
        skip: the weight of the identity path (a fixed number).
    """

    def __init__(self, *, features: int = 32, depth: int = 5, kernel_size: int = 3,
                 out_scale: float = 0.1, skip: float = 1.0) -> None:
        super().__init__()
        self.skip = float(skip)
        _check_int(features, "features", 1)
        _check_int(depth, "depth", 2)
        k = _check_int(kernel_size, "kernel_size", 1)
        if k % 2 == 0:
            raise InputError(f"kernel_size: expected an odd integer, got {kernel_size!r}")
        chans = [2] + [features] * (depth - 1) + [2]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], k, padding=k // 2))
            if i < depth - 1:
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)
        with torch.no_grad():
            last = self.body[-1]
            last.weight.mul_(float(out_scale))
            last.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_image(x)
        return self.skip * x + _apply_real(self.body, x)


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())


class _UNetBody(nn.Module):
    def __init__(self, features: int, levels: int) -> None:
        super().__init__()
        self.levels = levels
        chans = [features * 2 ** i for i in range(levels + 1)]
        self.down = nn.ModuleList([_Block(2 if i == 0 else chans[i - 1], chans[i]) for i in range(levels)])
        self.mid = _Block(chans[levels - 1], chans[levels])
        self.up = nn.ModuleList([_Block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(levels))])
        self.out = nn.Conv2d(chans[0], 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for blk in self.down:
            x = blk(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        x = self.mid(x)
        for blk in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = blk(torch.cat([x, skip], dim=1))
        return self.out(x)


class SmallUNet(nn.Module):
    """``R(x) = skip * x + U(x)`` with ``U`` a small U-Net (the seed paper's denoiser shape).

    Args:
        features: channels at the finest scale (doubled per level).
        levels: number of poolings; ``H`` and ``W`` must divide by ``2**levels``.
        out_scale: initial scale of the last (1x1) convolution.
        skip: the weight of the identity path (a fixed number).
    """

    def __init__(self, *, features: int = 16, levels: int = 2, out_scale: float = 0.1,
                 skip: float = 1.0) -> None:
        super().__init__()
        self.skip = float(skip)
        _check_int(features, "features", 1)
        self.levels = _check_int(levels, "levels", 1)
        self.body = _UNetBody(features, levels)
        with torch.no_grad():
            self.body.out.weight.mul_(float(out_scale))
            self.body.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_image(x)
        f = 2 ** self.levels
        if x.shape[-1] % f or x.shape[-2] % f:
            raise InputError(f"x: expected H and W divisible by 2**levels = {f}, got "
                             f"{tuple(x.shape[-2:])}")
        return self.skip * x + _apply_real(self.body, x)


DENOISERS = {"cnn": ResidualCNN, "unet": SmallUNet}


def build_denoiser(name: str, **kwargs) -> nn.Module:
    """A denoiser by name (``"cnn"`` or ``"unet"``) with keyword options."""
    if name not in DENOISERS:
        raise InputError(f"denoiser: expected one of {', '.join(map(repr, DENOISERS))}, got {name!r}")
    try:
        return DENOISERS[name](**kwargs)
    except TypeError as exc:
        raise InputError(f"denoiser {name!r}: {exc}") from None
