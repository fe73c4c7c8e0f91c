"""Learned reconstruction networks: every model is an ``nn.Module`` with
``forward(y, A) -> x`` (k-space and the scaled encoding operator in, complex image
out).

- :mod:`convexrecon.nets.layerwise`: greedy convex layer-wise training of a deep
  gated CNN (one convex two-layer program per layer, data consistency inside the
  step), :class:`LayerwiseNet` and :func:`train_layerwise`.
"""

from convexrecon.nets.layerwise import LayerwiseConfig, LayerwiseNet, LayerReport, ReconData, train_layerwise

__all__ = ["LayerwiseNet", "LayerwiseConfig", "LayerReport", "ReconData", "train_layerwise"]
