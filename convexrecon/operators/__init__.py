"""Linear operators: one abstraction over Cartesian and non-Cartesian encoders.

Structural: :class:`Operator` and its algebra (``A @ B``, ``A + B``, ``c * A``,
``A.H``, ``A.N``, :func:`vstack`, :func:`diag`), :class:`Identity`, :class:`Dense`.
Encoders: :class:`FFT`, :class:`Sense`, :class:`NUFFT`, :class:`NonCartesianSense`,
:class:`StackOfStars`. Regularisers: :class:`Wavelet`, :class:`FiniteDifference`.
Helpers: :func:`dot_test`, :func:`power_method`, :func:`to_dense`,
:func:`pipe_menon_dcf`.
"""

from convexrecon.operators.base import (
    Adjoint, Compose, Dense, Diag, Identity, Normal, Operator, Scale, Sum, Vstack, diag, vstack,
)
from convexrecon.operators.elementwise import Crop, Mask, Multiply, Pad
from convexrecon.operators.fft import FFT, fftc, ifftc
from convexrecon.operators.finite_diff import FiniteDifference
from convexrecon.operators.linalg import dot_test, inner, power_method, to_dense
from convexrecon.operators.noncartesian import NonCartesianSense, StackOfStars
from convexrecon.operators.nufft import NUFFT, pipe_menon_dcf
from convexrecon.operators.sense import Sense
from convexrecon.operators.wavelet import Wavelet

__all__ = [
    "Operator", "Identity", "Dense", "Compose", "Sum", "Scale", "Adjoint", "Normal",
    "Vstack", "Diag", "vstack", "diag",
    "FFT", "fftc", "ifftc", "Multiply", "Mask", "Crop", "Pad", "Sense",
    "NUFFT", "pipe_menon_dcf", "NonCartesianSense", "StackOfStars",
    "Wavelet", "FiniteDifference",
    "dot_test", "power_method", "to_dense", "inner",
]
