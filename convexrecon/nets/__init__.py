"""Learned reconstruction networks: every model is an ``nn.Module`` with
``forward(y, A) -> x`` (k-space and the scaled encoding operator in, complex image
out).

- :mod:`convexrecon.nets.layerwise`: greedy convex layer-wise training of a deep
  gated CNN (one convex two-layer program per layer, data consistency inside the
  step), :class:`LayerwiseNet` and :func:`train_layerwise`.
- :mod:`convexrecon.nets.denoisers`: small residual denoisers (:class:`ResidualCNN`,
  :class:`SmallUNet`) for the DEQ map and the unrolled baselines.
- :mod:`convexrecon.nets.unrolled`: :class:`MoDL` (K shared-weight iterations of a
  denoiser and CG data consistency).
"""

from convexrecon.nets.layerwise import LayerwiseConfig, LayerwiseNet, LayerReport, ReconData, train_layerwise
from convexrecon.nets.denoisers import ResidualCNN, SmallUNet
from convexrecon.nets.unrolled import MoDL, build_modl

__all__ = ["LayerwiseNet", "LayerwiseConfig", "LayerReport", "ReconData", "train_layerwise",
           "ResidualCNN", "SmallUNet", "MoDL", "build_modl"]
