"""One-line reconstructions.

Every builder accepts torch tensors or numpy arrays with slices as leading batch
dimensions and returns the image ``(*batch, H, W)`` at the input's scale:

- :func:`l1_wavelet` (FISTA), :func:`sense` (CG-SENSE), :func:`tv` (PDHG): one
  scaled encoding operator for the whole volume, Cartesian or non-Cartesian;
  ``lam="auto"`` chooses the weight by k-space cross-validation
  (:func:`choose_lambda`, returning a :class:`LambdaChoice`); CG-SENSE's default
  ``mu="auto"`` chooses ``mu`` and the iteration count by held-out k-space
  (:func:`choose_sense`, returning a :class:`SenseChoice`);
- :func:`zero_filled`: zero-filled / density-compensated gridding;
- :func:`grappa` (and :func:`grappa_kspace`): k-space parallel imaging for 1-D
  undersampling;
- :func:`pocs`, :func:`homodyne`: partial-Fourier (asymmetric) data.
"""

from convexrecon.recon._solve import Progress
from convexrecon.recon.grappa import find_calibration, grappa, grappa_kspace
from convexrecon.recon.iterative import l1_wavelet, sense, tv, wavelet_levels
from convexrecon.recon.lam import (DEFAULT_GRIDS, LAMBDA_FLOOR, GridEdgeWarning, LambdaChoice,
                                   choose_lambda)
from convexrecon.recon.partial_fourier import homodyne, pocs
from convexrecon.recon.sense_auto import SenseChoice, choose_sense
from convexrecon.recon.zero_filled import zero_filled

__all__ = [
    "l1_wavelet",
    "sense",
    "tv",
    "zero_filled",
    "grappa",
    "grappa_kspace",
    "find_calibration",
    "pocs",
    "homodyne",
    "choose_lambda",
    "LambdaChoice",
    "DEFAULT_GRIDS",
    "LAMBDA_FLOOR",
    "GridEdgeWarning",
    "choose_sense",
    "SenseChoice",
    "Progress",
    "wavelet_levels",
]
