"""Programs: *what* is minimised, built on operators.

Terms (:class:`LeastSquares`, :class:`L1`, :class:`GroupL1`, :class:`Nuclear`,
:class:`WaveletL1`, :class:`TV`, :class:`NonNegative`) compose into programs that
evaluate themselves, give optimality certificates and export to cvxpy. The convex
two-layer ReLU programs (data matrices and convolutional, gated and cone-constrained;
the package :mod:`convexrecon.programs.relu`) map their solutions back to networks
with :func:`recover_network`.
"""

from convexrecon.programs.base import Program
from convexrecon.programs.composite import CompositeProgram, ProxTerm, SmoothTerm
from convexrecon.programs.l1 import L1WaveletProgram, RegularizedLeastSquares, TikhonovProgram
from convexrecon.programs.terms import (
    L1, GroupL1, LeastSquares, NonNegative, Nuclear, WaveletL1,
)
from convexrecon.programs.relu import (KKT, ConvGatedReLU, ConvTwoLayerReLU,
                                       ConvTwoLayerReLUCone, GatedConvNet, GatedNet, GatedReLU,
                                       Patterns, ReLUConvNet, TwoLayerNet, TwoLayerReLU,
                                       cone_decomposition, min_norm_cone_decomposition,
                                       network_objective, recover_network, sample_patterns)
from convexrecon.programs.tv import TV, TVProgram

__all__ = [
    "Program", "CompositeProgram", "SmoothTerm", "ProxTerm",
    "LeastSquares", "L1", "GroupL1", "Nuclear", "WaveletL1", "TV", "NonNegative",
    "RegularizedLeastSquares", "L1WaveletProgram", "TikhonovProgram", "TVProgram",
    "GatedReLU", "TwoLayerReLU", "Patterns", "sample_patterns",
    "ConvGatedReLU", "ConvTwoLayerReLU", "ConvTwoLayerReLUCone", "GatedConvNet", "ReLUConvNet",
    "KKT", "TwoLayerNet", "GatedNet", "recover_network", "network_objective", "cone_decomposition",
    "min_norm_cone_decomposition",
]
