"""The linear-operator abstraction shared by every encoder, program and solver.

An :class:`Operator` maps tensors of shape ``(*batch, *ishape)`` to
``(*batch, *oshape)``. Leading batch dimensions are free and broadcast against any
batch dimensions the operator itself carries (per-sample coil maps or masks).

Subclasses implement ``_forward`` and ``_adjoint`` (and may override ``_normal``
where there is something cheaper than ``adjoint(forward(x))``). The public
``forward``/``adjoint``/``normal`` check the trailing shape.

Algebra: ``A(x)``, ``A @ B``, ``A + B``, ``A - B``, ``c * A``, ``A.H``, ``A.N``,
:func:`vstack`, :func:`diag`.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch

from convexrecon._checks import check_trailing_shape, complex_dtype_of, real_dtype_of
from convexrecon.errors import InputError

__all__ = [
    "Operator",
    "Identity",
    "Compose",
    "Sum",
    "Scale",
    "Adjoint",
    "Normal",
    "Vstack",
    "Diag",
    "Dense",
    "vstack",
    "diag",
    "prod",
]

Shape = tuple[int, ...]
# precision class of each float and complex dtype (the dtype rule of Operator.forward)
_PRECISION = {torch.float32: 32, torch.complex64: 32, torch.float64: 64, torch.complex128: 64}


def prod(shape: Sequence[int]) -> int:
    """Product of a shape (1 for the empty shape)."""
    return int(math.prod(shape))


class Operator:
    """A linear map with a shape contract.

    Args:
        ishape: trailing input shape.
        oshape: trailing output shape.
        dtype: the dtype the operator computes in (complex64 by default).
    """

    def __init__(self, ishape: Sequence[int], oshape: Sequence[int], *,
                 dtype: torch.dtype = torch.complex64) -> None:
        self.ishape: Shape = tuple(int(s) for s in ishape)
        self.oshape: Shape = tuple(int(s) for s in oshape)
        self.dtype = dtype

    # -- to be implemented by subclasses ------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return self._adjoint(self._forward(x))

    # -- public, shape- and dtype-checked ----------------------------------------------
    # The dtype rule, the same for every operator: an input must have the operator's
    # precision (float32/complex64 or float64/complex128; a real input is taken as the
    # complex vector with zero imaginary part). Anything else raises InputError: no
    # operator silently casts up or down. Change the precision with ``op.to(dtype=...)``.
    def _check_input(self, x: torch.Tensor, shape: Shape, what: str) -> None:
        check_trailing_shape(x, shape, f"{self.name}.{what} input")
        if not (x.is_floating_point() or x.is_complex()) or x.dtype not in _PRECISION \
                or _PRECISION[x.dtype] != _PRECISION.get(self.dtype):
            raise InputError(
                f"{self.name}.{what} input: expected dtype {self.dtype} (or its real "
                f"counterpart {real_dtype_of(self.dtype) if self.dtype in _PRECISION else '-'}), "
                f"got {x.dtype}; convert the input with x.to({self.dtype}) or the operator "
                f"with op.to(dtype={x.dtype})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator to ``x`` of shape ``(*batch, *ishape)``."""
        self._check_input(x, self.ishape, "forward")
        return self._forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint to ``y`` of shape ``(*batch, *oshape)``."""
        self._check_input(y, self.oshape, "adjoint")
        return self._adjoint(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``A^H A`` to ``x`` (specialised where cheaper)."""
        self._check_input(x, self.ishape, "normal")
        return self._normal(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def autograd_apply(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator through a ``torch.autograd.Function``.

        The backward pass calls the adjoint (itself wrapped the same way), so no
        intermediate activations are stored and double backward works. Gradients
        flow to ``x`` only, not to tensors held by the operator.
        """
        self._check_input(x, self.ishape, "autograd_apply")
        return _LinearFunction.apply(x, self)

    def to_scipy(self):
        """This operator as a ``scipy.sparse.linalg.LinearOperator`` on flattened
        vectors (``matvec`` = forward, ``rmatvec`` = adjoint), for ``lsqr`` and friends;
        see :mod:`convexrecon.operators.scipy_interop`."""
        from convexrecon.operators.scipy_interop import to_scipy

        return to_scipy(self)

    # -- algebra ------------------------------------------------------------------
    @property
    def H(self) -> "Operator":
        """The adjoint operator."""
        return Adjoint(self)

    @property
    def N(self) -> "Operator":
        """The normal operator ``A^H A`` (uses the specialised ``normal``)."""
        return Normal(self)

    def __matmul__(self, other: "Operator") -> "Operator":
        if not isinstance(other, Operator):
            return NotImplemented
        return Compose(self, other)

    def __add__(self, other: "Operator") -> "Operator":
        if not isinstance(other, Operator):
            return NotImplemented
        return Sum(self, other)

    def __sub__(self, other: "Operator") -> "Operator":
        if not isinstance(other, Operator):
            return NotImplemented
        return Sum(self, Scale(-1.0, other))

    def __neg__(self) -> "Operator":
        return Scale(-1.0, self)

    def __mul__(self, c: complex) -> "Operator":
        if isinstance(c, (int, float, complex)):
            return Scale(c, self)
        return NotImplemented

    __rmul__ = __mul__

    # -- device / dtype -----------------------------------------------------------
    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "Operator":
        """Return a copy with every held tensor (and sub-operator) moved.

        ``dtype`` is a float or complex dtype giving the precision: complex tensors
        become its complex type, real floating tensors its real type; bool and
        integer tensors keep their dtype.
        """
        new = copy.copy(self)
        cdt = complex_dtype_of(dtype) if dtype is not None else None
        rdt = real_dtype_of(dtype) if dtype is not None else None
        for key, val in list(vars(new).items()):
            setattr(new, key, _move(val, device, cdt, rdt))
        if cdt is not None:
            new.dtype = cdt
        new._after_to()
        return new

    def _after_to(self) -> None:
        """Hook for subclasses that cache derived objects (e.g. NUFFT modules)."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{self.name}(ishape={self.ishape}, oshape={self.oshape}, dtype={self.dtype})"


def _move(val, device, cdt, rdt):
    if isinstance(val, torch.Tensor):
        if val.is_complex() and cdt is not None:
            return val.to(device=device, dtype=cdt)
        if val.is_floating_point() and rdt is not None:
            return val.to(device=device, dtype=rdt)
        return val.to(device=device) if device is not None else val
    if isinstance(val, Operator):
        return val.to(device=device, dtype=cdt)
    if isinstance(val, torch.nn.Module):
        # nn.Module.to works in place: copy first so the original operator is untouched.
        out = copy.deepcopy(val)
        if device is not None:
            out = out.to(device=device)
        return out.to(dtype=cdt) if cdt is not None else out
    if isinstance(val, (list, tuple)) and any(isinstance(v, (Operator, torch.Tensor)) for v in val):
        return type(val)(_move(v, device, cdt, rdt) for v in val)
    return val


class _LinearFunction(torch.autograd.Function):
    """y = A x with backward x_bar = A^H y_bar, itself differentiable."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, op: Operator) -> torch.Tensor:  # type: ignore[override]
        ctx.op = op
        ctx.xshape = x.shape
        return op._forward(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        gx = _LinearFunction.apply(grad, ctx.op.H)
        if gx.shape != ctx.xshape:
            gx = gx.sum_to_size(ctx.xshape)
        return gx, None


# -- structural operators ---------------------------------------------------------
class Identity(Operator):
    """The identity on ``shape``."""

    def __init__(self, shape: Sequence[int], *, dtype: torch.dtype = torch.complex64) -> None:
        super().__init__(shape, shape, dtype=dtype)

    def _forward(self, x):
        return x

    def _adjoint(self, y):
        return y

    def _normal(self, x):
        return x


class Compose(Operator):
    """``A @ B``: apply ``B`` then ``A``."""

    def __init__(self, a: Operator, b: Operator) -> None:
        if a.ishape != b.oshape:
            raise InputError(
                f"A @ B: expected A.ishape == B.oshape, got {a.ishape} and {b.oshape}"
            )
        super().__init__(b.ishape, a.oshape, dtype=a.dtype)
        self.a, self.b = a, b

    def _forward(self, x):
        return self.a._forward(self.b._forward(x))

    def _adjoint(self, y):
        return self.b._adjoint(self.a._adjoint(y))

    def _normal(self, x):
        return self.b._adjoint(self.a._normal(self.b._forward(x)))

    @property
    def name(self) -> str:
        return f"({self.a.name} @ {self.b.name})"


class Sum(Operator):
    """``A + B`` with equal shapes."""

    def __init__(self, a: Operator, b: Operator) -> None:
        if a.ishape != b.ishape or a.oshape != b.oshape:
            raise InputError(
                f"A + B: expected equal shapes, got {a.ishape}->{a.oshape} and {b.ishape}->{b.oshape}"
            )
        super().__init__(a.ishape, a.oshape, dtype=a.dtype)
        self.a, self.b = a, b

    def _forward(self, x):
        return self.a._forward(x) + self.b._forward(x)

    def _adjoint(self, y):
        return self.a._adjoint(y) + self.b._adjoint(y)


class Scale(Operator):
    """``c * A`` for a scalar ``c``."""

    def __init__(self, c: complex, a: Operator) -> None:
        super().__init__(a.ishape, a.oshape, dtype=a.dtype)
        self.c, self.a = c, a

    def _forward(self, x):
        return self.c * self.a._forward(x)

    def _adjoint(self, y):
        c = self.c.conjugate() if isinstance(self.c, complex) else self.c
        return c * self.a._adjoint(y)

    def _normal(self, x):
        return abs(self.c) ** 2 * self.a._normal(x)


class Adjoint(Operator):
    """``A.H``."""

    def __init__(self, a: Operator) -> None:
        super().__init__(a.oshape, a.ishape, dtype=a.dtype)
        self.a = a

    def _forward(self, x):
        return self.a._adjoint(x)

    def _adjoint(self, y):
        return self.a._forward(y)

    @property
    def H(self) -> Operator:
        return self.a

    @property
    def name(self) -> str:
        return f"{self.a.name}.H"


class Normal(Operator):
    """``A.N = A^H A``, self-adjoint, using ``A.normal``."""

    def __init__(self, a: Operator) -> None:
        super().__init__(a.ishape, a.ishape, dtype=a.dtype)
        self.a = a

    def _forward(self, x):
        return self.a._normal(x)

    def _adjoint(self, y):
        return self.a._normal(y)

    def _normal(self, x):
        return self.a._normal(self.a._normal(x))

    @property
    def H(self) -> Operator:
        return self

    @property
    def name(self) -> str:
        return f"{self.a.name}.N"


class Vstack(Operator):
    """Stack operators with a common input: output is the concatenation of the
    flattened outputs, shape ``(*batch, sum_i prod(oshape_i))``."""

    def __init__(self, ops: Sequence[Operator]) -> None:
        ops = list(ops)
        if not ops:
            raise InputError("vstack: expected at least one operator, got none")
        for op in ops[1:]:
            if op.ishape != ops[0].ishape:
                raise InputError(
                    f"vstack: expected a common ishape {ops[0].ishape}, got {op.ishape}"
                )
        self.sizes = [prod(op.oshape) for op in ops]
        super().__init__(ops[0].ishape, (sum(self.sizes),), dtype=ops[0].dtype)
        self.ops = ops

    def _forward(self, x):
        outs = []
        for op in self.ops:
            o = op._forward(x)
            outs.append(o.reshape(*o.shape[: o.ndim - len(op.oshape)], -1))
        batch = torch.broadcast_shapes(*[o.shape[:-1] for o in outs])
        return torch.cat([o.expand(*batch, o.shape[-1]) for o in outs], dim=-1)

    def _adjoint(self, y):
        parts = torch.split(y, self.sizes, dim=-1)
        total = None
        for op, p in zip(self.ops, parts):
            a = op._adjoint(p.reshape(*p.shape[:-1], *op.oshape))
            total = a if total is None else total + a
        return total

    def _normal(self, x):
        total = None
        for op in self.ops:
            n = op._normal(x)
            total = n if total is None else total + n
        return total


class Diag(Operator):
    """Block-diagonal operator on the concatenation of flattened inputs."""

    def __init__(self, ops: Sequence[Operator]) -> None:
        ops = list(ops)
        if not ops:
            raise InputError("diag: expected at least one operator, got none")
        self.isizes = [prod(op.ishape) for op in ops]
        self.osizes = [prod(op.oshape) for op in ops]
        super().__init__((sum(self.isizes),), (sum(self.osizes),), dtype=ops[0].dtype)
        self.ops = ops

    def _apply(self, x, sizes_in, shapes_in, fns):
        parts = torch.split(x, sizes_in, dim=-1)
        outs = []
        for p, shp, fn in zip(parts, shapes_in, fns):
            o = fn(p.reshape(*p.shape[:-1], *shp))
            outs.append(o)
        return outs

    def _forward(self, x):
        outs = self._apply(x, self.isizes, [op.ishape for op in self.ops],
                           [op._forward for op in self.ops])
        return torch.cat([o.reshape(*o.shape[: o.ndim - len(op.oshape)], -1)
                          for o, op in zip(outs, self.ops)], dim=-1)

    def _adjoint(self, y):
        outs = self._apply(y, self.osizes, [op.oshape for op in self.ops],
                           [op._adjoint for op in self.ops])
        return torch.cat([o.reshape(*o.shape[: o.ndim - len(op.ishape)], -1)
                          for o, op in zip(outs, self.ops)], dim=-1)

    def _normal(self, x):
        outs = self._apply(x, self.isizes, [op.ishape for op in self.ops],
                           [op._normal for op in self.ops])
        return torch.cat([o.reshape(*o.shape[: o.ndim - len(op.ishape)], -1)
                          for o, op in zip(outs, self.ops)], dim=-1)


def vstack(ops: Sequence[Operator]) -> Operator:
    """Stack operators sharing an input; see :class:`Vstack`."""
    return Vstack(ops)


def diag(ops: Sequence[Operator]) -> Operator:
    """Block-diagonal operator; see :class:`Diag`."""
    return Diag(ops)


class Dense(Operator):
    """A matrix ``M`` of shape ``(m, n)`` acting on the last axis: ``(*b, n) -> (*b, m)``."""

    def __init__(self, matrix: torch.Tensor) -> None:
        if matrix.ndim != 2:
            raise InputError(f"Dense: expected a 2-D matrix, got shape {tuple(matrix.shape)}")
        super().__init__((matrix.shape[1],), (matrix.shape[0],), dtype=matrix.dtype)
        self.matrix = matrix

    def _pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # same precision (the dtype rule); a real side is promoted to the complex one
        m = self.matrix
        if x.dtype != m.dtype:
            if x.is_complex():
                m = m.to(x.dtype)
            else:
                x = x.to(m.dtype)
        return x, m

    def _forward(self, x):
        x, m = self._pair(x)
        return x @ m.T

    def _adjoint(self, y):
        y, m = self._pair(y)
        return y @ m.conj()
