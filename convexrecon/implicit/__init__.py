"""Implicit (deep-equilibrium) reconstruction.

- :mod:`.maps`: the maps ``f(z; y, A)`` (proximal gradient with a learned denoiser,
  or denoiser then exact CG data consistency);
- :mod:`.deq`: :class:`DEQ` (forward solve without the tape, one step with it,
  backward by ``ift`` / ``jfb`` / ``shine`` / ``shine-opa`` / ``shine-refine``),
  :class:`DEQInfo` and :func:`outer_grad_from_loss` (``shine-opa``'s outer gradient);
- :mod:`.backward`: the backward directions and SHINE's fallback rule;
- :mod:`.stabilize`: spectral normalisation, Hutchinson Jacobian regularisation,
  the ``rho`` estimate;
- :mod:`.warmstart`: the per-sample warm-start cache of training;
- :mod:`.factory`: :func:`build_deq`, the checkpoint factory;
- :mod:`.stack_of_stars`: a 2-D model applied per partition of a stack-of-stars
  volume (fully sampled kz separates it into 2-D radial problems).
"""

from convexrecon.implicit.backward import BACKWARDS, BackwardInfo, shine_threshold
from convexrecon.implicit.deq import DEQ, DEQInfo, outer_grad_from_loss
from convexrecon.implicit.factory import DC_KINDS, build_deq
from convexrecon.implicit.maps import CGDCMap, ProxGradMap
from convexrecon.implicit.stabilize import (apply_spectral_norm, estimate_rho, hutchinson_jac_fro2,
                                            real_probe)
from convexrecon.implicit.warmstart import WarmStartCache

__all__ = ["DEQ", "DEQInfo", "BACKWARDS", "BackwardInfo", "shine_threshold", "build_deq", "DC_KINDS",
           "ProxGradMap", "CGDCMap", "apply_spectral_norm", "estimate_rho", "hutchinson_jac_fro2",
           "real_probe", "WarmStartCache", "outer_grad_from_loss"]
