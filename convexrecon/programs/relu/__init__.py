"""The convex two-layer ReLU family: dense and convolutional, gated and cone forms.

Modules, each importing only those listed before it (no cycles, no solvers):

* :mod:`~convexrecon.programs.relu.limits`: the cvxpy size limits;
* :mod:`~convexrecon.programs.relu.blocks`: group and nuclear norms and proxes;
* :mod:`~convexrecon.programs.relu.patterns`: activation patterns, gate shifts and
  the data maps of the dense programs;
* :mod:`~convexrecon.programs.relu.certificates`: duality gaps, the KKT triple,
  the :class:`KKT` dataclass of every program, pattern sufficiency;
* :mod:`~convexrecon.programs.relu.cvxpy_export`: cvxpy exports (dense);
* :mod:`~convexrecon.programs.relu.networks`: the networks the programs encode
  (:class:`TwoLayerNet`, :class:`GatedNet`, :class:`GatedConvNet`,
  :class:`ReLUConvNet`) and :func:`recover_network`;
* :mod:`~convexrecon.programs.relu.dense`: :class:`GatedReLU`, :class:`TwoLayerReLU`;
* :mod:`~convexrecon.programs.relu.decompose`: gated solutions as ReLU networks;
* :mod:`~convexrecon.programs.relu.conv`: :class:`ConvGatedReLU` (deprecated alias
  ``ConvTwoLayerReLU``);
* :mod:`~convexrecon.programs.relu.conv_cone`: :class:`ConvTwoLayerReLUCone`.

All four programs share ``gates``, ``beta_max()``, ``set_beta(beta)``,
``certificate(x)``, ``pattern_check(x, ...)``, ``kkt(x)`` (a :class:`KKT`) and
``recover_network(x)``. Their solvers live in :mod:`convexrecon.solvers`
(``solve(program)`` picks one).
"""

from convexrecon.programs.relu.blocks import group_norms, nuclear_norms, prox_group, prox_nuclear
from convexrecon.programs.relu.certificates import KKT, GapResult, KKTResidual
from convexrecon.programs.relu.conv import ConvGatedReLU, ConvNuclear, ConvTwoLayerReLU
from convexrecon.programs.relu.conv_cone import ConvTwoLayerReLUCone
from convexrecon.programs.relu.decompose import cone_decomposition, min_norm_cone_decomposition
from convexrecon.programs.relu.dense import GatedReLU, TwoLayerReLU
from convexrecon.programs.relu.limits import CVXPY_MAX_ROWS, CVXPY_MAX_UNKNOWNS, CVXPY_SIZE_LIMIT
from convexrecon.programs.relu.networks import (GatedConvNet, GatedNet, ReLUConvNet, TwoLayerNet,
                                                network_objective, recover_network)
from convexrecon.programs.relu.patterns import Patterns, gate_shift, sample_patterns

__all__ = [
    "GatedReLU", "TwoLayerReLU", "ConvGatedReLU", "ConvTwoLayerReLU", "ConvTwoLayerReLUCone",
    "ConvNuclear", "Patterns", "sample_patterns", "gate_shift",
    "KKT", "KKTResidual", "GapResult",
    "TwoLayerNet", "GatedNet", "GatedConvNet", "ReLUConvNet", "recover_network",
    "network_objective", "cone_decomposition", "min_norm_cone_decomposition",
    "group_norms", "nuclear_norms", "prox_group", "prox_nuclear",
    "CVXPY_SIZE_LIMIT", "CVXPY_MAX_ROWS", "CVXPY_MAX_UNKNOWNS",
]
