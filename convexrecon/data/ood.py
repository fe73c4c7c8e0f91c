"""Out-of-distribution test data that is not simulated: the real 8-coil brain scan.

The simulated out-of-distribution image sets (``"dipy-t1-coronal"``, ``"dipy-b0"``)
are splits of :class:`~convexrecon.data.SliceDataset`.
"""

from __future__ import annotations

import math

from convexrecon.data.datasets import Sample

__all__ = ["real_brain_sample"]


def real_brain_sample() -> Sample:
    """The real 8-coil brain k-space of the ``brain-real-8coil`` problem as a
    :class:`Sample` on that problem's scale: ``(8, 230, 180)`` Poisson-disc
    undersampled data, ESPIRiT maps, its mask; ``target`` is None (no fully sampled
    reference exists) and ``noise_std`` NaN (unknown)."""
    from convexrecon.problems import load

    p = load("brain-real-8coil")
    return Sample(target=None, kspace=p.kspace[0], maps=p.maps, mask=p.mask[0], traj=None,
                  index=0, op_scale=p.op_scale, data_scale=p.data_scale, noise_std=math.nan,
                  label="brain-real-8coil")
