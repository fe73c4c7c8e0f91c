"""Registry cases for the convolution operators of the convex two-layer CNN programs.

The operator is real; under the complex registry dtypes it splits complex filters
into real and imaginary parts (complex-linear), so the registry-wide dot test,
linearity, normal, batch and composition checks all apply.
"""

import torch

from registry import register
from convexrecon._checks import real_dtype_of
from convexrecon.operators.conv import PatternConv, random_gates


def _images(n, c, h, w, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g, dtype=dtype)


def _op(dtype, *, padding, bias, c_out):
    rdt = real_dtype_of(dtype)
    x = _images(2, 2, 6, 5, rdt, 0)
    gates = random_gates(4, 2, 3, bias=bias, seed=1, dtype=rdt)
    return PatternConv.from_images(x, gates, c_out=c_out, padding=padding, bias=bias, dtype=dtype)


@register("pattern-conv-zeros-bias")
def _zeros_bias(dtype):
    return _op(dtype, padding="zeros", bias=True, c_out=2)


@register("pattern-conv-circular")
def _circular(dtype):
    return _op(dtype, padding="circular", bias=False, c_out=3)


@register("pattern-conv-5x5-scalar-out", batch=(2, 3))
def _five(dtype):
    rdt = real_dtype_of(dtype)
    x = _images(3, 1, 7, 7, rdt, 2)
    gates = random_gates(3, 1, 5, seed=3, dtype=rdt)
    return PatternConv.from_images(x, gates, c_out=1, padding="circular", dtype=dtype)
