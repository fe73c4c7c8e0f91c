"""Registry cases for the non-Cartesian operators (NUFFT, NonCartesianSense, StackOfStars),
once per backend (``[finufft]`` and ``[torchkbnufft]``).

The Toeplitz normal operator is not exactly ``adjoint(forward(x))``: both sides are
approximations of the exact NUDFT (torchkbnufft: Kaiser-Bessel table, width 6,
oversampling 2; FINUFFT: its tolerance), and they agree to about 1e-5 relative
here. The cases state ``normal_rtol=1e-3``, the NUFFT's accuracy, not machine
precision. The ``direct`` case has ``toeplitz=False`` (normal = adjoint(forward)).
"""

import math

import torch

from registry import register
from convexrecon.operators.noncartesian import NonCartesianSense, StackOfStars
from convexrecon.operators.nufft import NUFFT

NORMAL_RTOL = 1e-3  # Toeplitz embedding vs adjoint(forward): interpolation accuracy
BACKENDS = ("finufft", "torchkbnufft")


def _traj(k: int, seed: int, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(2, k, generator=g, dtype=torch.float64) * 2 - 1) * math.pi * 0.999).to(dtype)


def _maps(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    re = torch.randn(*shape, generator=g, dtype=torch.float64)
    im = torch.randn(*shape, generator=g, dtype=torch.float64)
    return torch.complex(re, im).to(dtype)


def _real(dtype):
    return torch.float64 if dtype == torch.complex128 else torch.float32


def _register_backend(backend: str) -> None:
    @register(f"nufft-2d[{backend}]", normal_rtol=NORMAL_RTOL)
    def _nufft(dtype):
        return NUFFT(_traj(100, 0, _real(dtype)), (8, 8), backend=backend, toeplitz=True,
                     dtype=dtype)

    @register(f"nufft-2d-dcf[{backend}]", normal_rtol=NORMAL_RTOL)
    def _nufft_dcf(dtype):
        g = torch.Generator().manual_seed(1)
        dcf = torch.rand(90, generator=g, dtype=torch.float64).to(_real(dtype)) + 0.1
        return NUFFT(_traj(90, 2, _real(dtype)), (8, 6), backend=backend, toeplitz=True,
                     dcf=dcf, dtype=dtype)

    @register(f"noncartesian-sense[{backend}]", normal_rtol=NORMAL_RTOL)
    def _ncsense(dtype):
        return NonCartesianSense(_maps((3, 8, 8), dtype, 3), _traj(80, 4, _real(dtype)),
                                 backend=backend, toeplitz=True, dtype=dtype)

    @register(f"stack-of-stars[{backend}]", normal_rtol=NORMAL_RTOL)
    def _sos(dtype):
        return StackOfStars(_maps((2, 4, 6, 8), dtype, 5), _traj(60, 6, _real(dtype)),
                            backend=backend, toeplitz=True, dtype=dtype)


for _backend in BACKENDS:
    _register_backend(_backend)


@register("noncartesian-sense-direct[finufft]", normal_rtol=1e-10)
def _ncsense_direct(dtype):
    return NonCartesianSense(_maps((3, 8, 6), dtype, 7), _traj(70, 8, _real(dtype)),
                             backend="finufft", toeplitz=False, dtype=dtype)
