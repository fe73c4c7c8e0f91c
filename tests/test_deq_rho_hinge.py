"""The contraction hinge (``rho_reg``) and SHINE's early release of Broyden's ``U, V``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convexrecon.errors import InputError
from convexrecon.fixedpoint import BroydenInverse
from convexrecon.implicit import DEQ, ProxGradMap
from convexrecon.implicit.backward import shine
from convexrecon.implicit.stabilize import jacobian_vjp, power_rho, rho_excess
from convexrecon.nets.denoisers import ResidualCNN
from convexrecon.operators import Sense

DT = torch.complex128


def _symmetric(top: float, d: int = 6) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(4)))
    return q @ torch.diag(torch.linspace(0.1, top, d, dtype=torch.float64)) @ q.T


class _Scaled(nn.Module):
    """``z -> s z J`` with a learnable ``s``: ``rho = s * top``."""

    def __init__(self, J: torch.Tensor, s: float) -> None:
        super().__init__()
        self.J = J
        self.s = nn.Parameter(torch.tensor(float(s), dtype=torch.float64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.s * (z @ self.J)


@pytest.mark.parametrize("s, expect", [(1.5, 1.05), (1.0, 0.7)])
def test_rho_excess_value_and_gradient_on_a_scaled_linear_map(s, expect):
    f = _Scaled(_symmetric(0.7), s)
    z = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    fz = f(z)
    rho, v = power_rho(jacobian_vjp(fz, z), z, iters=60)
    assert rho.tolist() == pytest.approx([expect, expect], rel=1e-6)
    excess = rho_excess(fz, z, v, target=0.9)
    excess.sum().backward()
    hinge = max(expect - 0.9, 0.0)
    assert excess.detach().tolist() == pytest.approx([hinge ** 2] * 2, abs=1e-9)
    # d/ds of (s * 0.7 - 0.9)^2 per sample, two samples
    assert float(f.s.grad) == pytest.approx(2 * 2 * hinge * 0.7, abs=1e-8)


def test_rho_excess_rejects_a_target_that_is_not_a_contraction():
    z = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(InputError, match=r"\(0, 1\)"):
        rho_excess(z * 2, z, torch.ones(1, 3, dtype=torch.float64), target=1.2)
    net = ResidualCNN(features=2, depth=2).double()
    with pytest.raises(InputError, match="rho_target"):
        DEQ(ProxGradMap(net), rho_target=1.0)


def _problem(n: int = 8, batch: int = 2, coils: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(batch, coils, n, n, generator=g, dtype=DT)
    maps = maps / torch.sqrt((maps.abs() ** 2).sum(dim=1, keepdim=True))
    A = Sense(maps, torch.rand(batch, n, n, generator=g) < 0.5)
    x = torch.randn(batch, n, n, generator=g, dtype=DT)
    return A, A(x), x


def _model(skip: float, **kw) -> DEQ:
    torch.manual_seed(0)
    net = ResidualCNN(features=4, depth=3, out_scale=0.5, skip=skip).double()
    return DEQ(ProxGradMap(net), solver="broyden", max_iter=200, tol=1e-10,
               solver_options={"memory": 200}, rho_iters=40, **kw).double()


def test_rho_hinge_of_a_deq_pushes_its_contraction_down():
    A, y, _ = _problem()
    model = _model(0.95, backward="jfb", rho_reg=1.0, rho_target=0.5)
    model(y, A)
    rho0 = model.last_info.rho.clone()
    assert (rho0 > 0.5).all()  # the hinge is active
    term = model.extra_loss()
    assert isinstance(term, torch.Tensor) and term.requires_grad
    assert float(term.detach()) == pytest.approx(float(((rho0 - 0.5) ** 2).mean()), rel=1e-6)
    term.backward()
    # every convolution weight reaches J (the last bias does not)
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.grad is not None and torch.isfinite(w.grad).all() and w.grad.norm() > 0 for w in weights)
    with torch.no_grad():
        for w in weights:
            w -= 0.05 * w.grad
    model(y, A)
    assert float(model.last_info.rho.max()) < float(rho0.max())
    # under its target the hinge is silent
    quiet = _model(0.3, backward="jfb", rho_reg=1.0, rho_target=0.9)
    quiet(y, A)
    assert (quiet.last_info.rho < 0.9).all() and float(quiet.extra_loss()) == 0.0


def test_shine_reuses_the_rho_its_forward_measured():
    A, y, target = _problem(seed=3)
    model = _model(0.5, backward="shine", monitor_rho=True)
    x = model(y, A)
    info = model.last_info
    (0.5 * (x - target).abs().pow(2).sum()).backward()
    assert info.rho is not None and (info.rho < 1).all()
    assert info.backward.rho is info.rho and info.backward.vjps == 0  # no second power method


def test_released_inverse_gives_the_same_direction_once_then_refuses():
    J = _symmetric(0.8)
    eye = torch.eye(6, dtype=torch.float64)
    # B = (J - I)^-1 exactly, as -I + U V^T with U = I + (J - I)^-1, V = I
    binv = BroydenInverse(U=(eye + torch.linalg.inv(J - eye))[None], V=eye[None].clone(),
                          shape=torch.Size((1, 6)), dtype=torch.float64)
    g = torch.randn(1, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    vjp = lambda v: v @ J  # noqa: E731
    kept, _ = shine(vjp, g, binv, threshold=50.0)
    freed, _ = shine(vjp, g, binv, threshold=50.0, release=True)
    assert torch.allclose(kept, freed) and binv.released
    assert torch.allclose(freed, g @ torch.linalg.inv(eye - J), rtol=1e-10)  # the IFT direction
    with pytest.raises(InputError, match="released"):
        shine(vjp, g, binv, threshold=50.0)
