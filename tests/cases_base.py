"""Registry cases for the structural operators of operators.base."""

import torch

from registry import register
from convexrecon.operators import Dense, Identity, diag, vstack


def _mat(m, n, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, dtype=dtype, generator=g)


@register("identity")
def _identity(dtype):
    return Identity((3, 4), dtype=dtype)


@register("dense")
def _dense(dtype):
    return Dense(_mat(5, 3, dtype, 0))


@register("compose-dense")
def _compose(dtype):
    return Dense(_mat(5, 3, dtype, 0)) @ Dense(_mat(3, 4, dtype, 1))


@register("sum-scale-dense")
def _sum(dtype):
    return Dense(_mat(5, 3, dtype, 0)) + (1 - 2j) * Dense(_mat(5, 3, dtype, 1))


@register("vstack-dense")
def _vstack(dtype):
    return vstack([Dense(_mat(5, 3, dtype, 0)), Dense(_mat(2, 3, dtype, 1))])


@register("diag-dense")
def _diag(dtype):
    return diag([Dense(_mat(5, 3, dtype, 0)), Dense(_mat(2, 4, dtype, 1))])
