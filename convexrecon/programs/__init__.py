"""Programs: *what* is minimised, built on operators.

Terms (:class:`LeastSquares`, :class:`L1`, :class:`GroupL1`, :class:`Nuclear`,
:class:`WaveletL1`, :class:`TV`, :class:`NonNegative`) compose into programs that
evaluate themselves, give optimality certificates and export to cvxpy. The convex
two-layer ReLU programs (data matrices and convolutional, gated and cone-constrained)
map their solutions back to networks with :func:`recover_network`.
"""

from convexrecon.programs.base import Program
from convexrecon.programs.composite import CompositeProgram, ProxTerm, SmoothTerm
from convexrecon.programs.l1 import L1WaveletProgram, RegularizedLeastSquares, TikhonovProgram
from convexrecon.programs.terms import (
    L1, GroupL1, LeastSquares, NonNegative, Nuclear, WaveletL1,
)
from convexrecon.programs.relu import GatedReLU, Patterns, TwoLayerReLU, sample_patterns
from convexrecon.programs.relu_conv import ConvTwoLayerReLU, GatedConvNet
from convexrecon.programs.relu_conv_cone import ConvTwoLayerReLUCone
from convexrecon.programs.relu_cvxpy import min_norm_cone_decomposition
from convexrecon.programs.relu_recover import (GatedNet, TwoLayerNet, cone_decomposition,
                                               network_objective, recover_network)
from convexrecon.programs.tv import TV, TVProgram

__all__ = [
    "Program", "CompositeProgram", "SmoothTerm", "ProxTerm",
    "LeastSquares", "L1", "GroupL1", "Nuclear", "WaveletL1", "TV", "NonNegative",
    "RegularizedLeastSquares", "L1WaveletProgram", "TikhonovProgram", "TVProgram",
    "GatedReLU", "TwoLayerReLU", "Patterns", "sample_patterns",
    "ConvTwoLayerReLU", "ConvTwoLayerReLUCone", "GatedConvNet",
    "TwoLayerNet", "GatedNet", "recover_network", "network_objective", "cone_decomposition",
    "min_norm_cone_decomposition",
]
