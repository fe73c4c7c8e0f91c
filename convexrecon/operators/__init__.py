"""Linear operators: one abstraction over Cartesian and non-Cartesian encoders."""

from convexrecon.operators.base import (
    Adjoint, Compose, Dense, Diag, Identity, Normal, Operator, Scale, Sum, Vstack, diag, vstack,
)
from convexrecon.operators.linalg import dot_test, inner, power_method, to_dense

__all__ = [
    "Operator", "Identity", "Compose", "Sum", "Scale", "Adjoint", "Normal", "Vstack",
    "Diag", "Dense", "vstack", "diag", "dot_test", "power_method", "to_dense", "inner",
]
