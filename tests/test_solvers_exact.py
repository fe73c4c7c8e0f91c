"""Classical solvers against exact answers (cvxpy, closed forms), complex128.

Tiny MRI problems: 16x16 images, 3-4 coils, Cartesian SENSE and radial
non-Cartesian SENSE, an orthogonal db4 wavelet, circular finite differences.
"""

from __future__ import annotations

import cvxpy  # noqa: F401  (a hard dependency: an import error must fail, not skip)
import numpy as np
import pytest
import torch

from convex_helpers import (
    DT, birdcage_maps, cartesian_mask, crandn, phantom, radial_traj,
)
from convexrecon.errors import InputError
from convexrecon.operators.base import Dense
from convexrecon.operators.finite_diff import FiniteDifference
from convexrecon.operators.linalg import to_dense
from convexrecon.operators.noncartesian import NonCartesianSense
from convexrecon.operators.sense import Sense
from convexrecon.operators.wavelet import Wavelet
from convexrecon.programs._cvx import make_variable
from convexrecon.programs.composite import CompositeProgram, SmoothTerm
from convexrecon.programs.l1 import L1WaveletProgram, RegularizedLeastSquares, TikhonovProgram
from convexrecon.programs.terms import GroupL1, L1, NonNegative
from convexrecon.programs.tv import TVProgram
from convexrecon.solvers.cg import CG
from convexrecon.solvers.cvxpy_reference import cvxpy_reference
from convexrecon.solvers.fista import FISTA, ISTA
from convexrecon.solvers.pdhg import PDHG

H = W_ = 16
LAM = 0.02


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-300))


def _relobj(a, b):
    return abs(a - b) / abs(b)


def _cartesian(batch=()):
    maps = birdcage_maps(4, H, W_)
    mask = cartesian_mask(H, W_, seed=0)
    if batch:
        maps = torch.stack([maps, torch.roll(maps, 1, dims=0)])
        mask = torch.stack([mask, cartesian_mask(H, W_, seed=1)])
    A = Sense(maps, mask, dtype=DT)
    x = phantom(H, W_)
    y = A(x) + 0.01 * crandn(*A(x).shape, seed=1) * mask.unsqueeze(-3)
    return A, y


def _noncartesian():
    maps = birdcage_maps(3, H, W_)
    A = NonCartesianSense(maps, radial_traj(12, 24).float(), dtype=DT)
    y = A(phantom(H, W_)) + 0.01 * crandn(3, 12 * 24, seed=2)
    return A, y


def _wavelet():
    return Wavelet((H, W_), wavelet="db4", dtype=DT)


@pytest.fixture(scope="module", params=["cartesian", "noncartesian"])
def l1_case(request):
    A, y = _cartesian() if request.param == "cartesian" else _noncartesian()
    prog = L1WaveletProgram(A, y, LAM, _wavelet())
    return prog, cvxpy_reference(prog)


def test_fista_matches_cvxpy(l1_case):
    prog, ref = l1_case
    f_ref = ref.history.objective[-1]
    assert ref.converged and ref.state.status == "optimal"
    assert abs(ref.state.cvxpy_objective - f_ref) < 1e-8 * f_ref  # export is exact
    assert ref.history.certificate[-1] < 1e-6
    res = FISTA(prog, max_iter=3000, tol=1e-10, check_every=10).run()
    assert res.converged
    assert _relobj(res.history.objective[-1], f_ref) < 1e-5
    assert res.history.objective[-1] <= f_ref * (1 + 1e-8)
    assert prog.certificate(res.x) < 1e-9
    assert prog.certificate(prog.zeros()) > 0.1
    assert _rel(res.x, ref.x) < 1e-3


def _check_ista(prog, ref):
    res = ISTA(prog, max_iter=8000, tol=1e-10, check_every=25).run()
    assert _relobj(res.history.objective[-1], ref.history.objective[-1]) < 1e-5
    assert _rel(res.x, ref.x) < 1e-3


def test_ista_solution_matches_cvxpy(l1_case):
    prog, ref = l1_case
    if isinstance(prog.smooth.op, NonCartesianSense):
        pytest.skip("non-Cartesian ISTA is slow: see test_ista_noncartesian (-m slow)")
    _check_ista(prog, ref)


@pytest.mark.slow
def test_ista_noncartesian():
    prog = L1WaveletProgram(*_noncartesian(), LAM, _wavelet())
    _check_ista(prog, cvxpy_reference(prog))


@pytest.mark.parametrize("restart", ["gradient", "function", False])
def test_fista_restart_variants(restart):
    A, y = _cartesian()
    prog = L1WaveletProgram(A, y, LAM, _wavelet())
    res = FISTA(prog, restart=restart, max_iter=4000, tol=1e-9, check_every=10).run()
    assert res.converged and res.history.certificate[-1] <= 1e-9
    # the cheap objective (from A.N x of the iteration) equals a fresh evaluation
    assert _relobj(res.history.objective[-1], prog.value(res.x)) < 1e-12


def test_batched_equals_per_slice():
    A, y = _cartesian(batch=(2,))
    Wt = _wavelet()
    prog = L1WaveletProgram(A, y, LAM, Wt)
    res = FISTA(prog, max_iter=3000, tol=1e-11, check_every=10).run()
    total = 0.0
    for b in range(2):
        Ab, yb = _slice_problem(b)
        pb = L1WaveletProgram(Ab, yb, LAM, Wt)
        rb = FISTA(pb, max_iter=3000, tol=1e-11, check_every=10).run()
        assert _rel(res.x[b], rb.x) < 1e-6
        total += rb.history.objective[-1]
    assert _relobj(prog.value(res.x), total) < 1e-9
    # the batched export is exact too (value at a point, no solve)
    problem, _ = prog.to_cvxpy()
    var = problem.variables()[0]
    c = Wt.forward(res.x).reshape(-1)
    var.value = np.concatenate([c.real.numpy(), c.imag.numpy()])
    assert _relobj(problem.objective.value, prog.value(res.x)) < 1e-9


def _slice_problem(b):
    maps = birdcage_maps(4, H, W_)
    maps = maps if b == 0 else torch.roll(maps, 1, dims=0)
    _, y_all = _cartesian(batch=(2,))
    return Sense(maps, cartesian_mask(H, W_, seed=b), dtype=DT), y_all[b]


def test_ridge_closed_form_cg_and_fista():
    A, y = _cartesian()
    mu = 0.05
    prog = TikhonovProgram(A, y, mu=mu)
    n = H * W_
    N = to_dense(A.N)
    xs = torch.linalg.solve(N + mu * torch.eye(n, dtype=DT), A.H(y).reshape(-1)).reshape(H, W_)
    assert prog.certificate(xs) < 1e-12
    assert abs(prog.certificate(prog.zeros()) - 1.0) < 1e-12
    res = CG.from_program(prog, max_iter=200, tol=1e-12).run()
    assert res.converged and _rel(res.x, xs) < 1e-10
    assert _relobj(res.history.objective[-1], prog.value(xs)) < 1e-12
    fres = FISTA(prog, max_iter=3000, tol=1e-11, check_every=10).run()
    assert _rel(fres.x, xs) < 1e-8


def test_cg_sense_batched_matches_dense():
    A, y = _cartesian(batch=(2,))
    res = CG(A.N, A.H(y), mu=0.0, max_iter=300, tol=1e-12).run()
    assert res.converged
    for b in range(2):
        Ab, yb = _slice_problem(b)
        N = to_dense(Ab.N)
        # undersampled SENSE with 4 coils at 2x is well-posed: solve the normal equations
        xs = torch.linalg.solve(N, Ab.H(yb).reshape(-1)).reshape(H, W_)
        assert _rel(res.x[b], xs) < 1e-8
    assert res.history.certificate[-1] <= 1e-12


def test_cg_errors():
    A, y = _cartesian()
    with pytest.raises(InputError, match="b"):
        CG(TikhonovProgram(A, y), A.H(y))
    with pytest.raises(InputError, match="op"):
        CG(A, y)
    with pytest.raises(InputError, match="b"):
        CG(A.N, y[..., :8])


@pytest.fixture(scope="module")
def tv_case():
    A, y = _cartesian()
    prog = TVProgram(A, y, 0.01, FiniteDifference((H, W_), dtype=DT))
    return prog, cvxpy_reference(prog)


def test_pdhg_tv_matches_cvxpy(tv_case):
    prog, ref = tv_case
    f_ref = ref.history.objective[-1]
    assert abs(ref.state.cvxpy_objective - f_ref) < 1e-8 * f_ref
    res = PDHG(prog, max_iter=3000, tol=1e-8, check_every=25).run()
    assert _relobj(res.history.objective[-1], f_ref) < 1e-5
    assert res.history.certificate[-1] < 1e-6
    assert _rel(res.x, ref.x) < 1e-3
    assert prog.certificate(prog.zeros()) > 0.1
    # x alone (estimated dual): looser but small at the optimum
    assert ref.history.certificate[-1] < 1e-3


def test_pdhg_fixed_steps_and_errors(tv_case):
    prog, ref = tv_case
    res = PDHG(prog, max_iter=300, adaptive=False, check_every=0).run()
    assert len(res.history) == 1
    assert res.history.objective[-1] < prog.value(prog.zeros())
    with pytest.raises(InputError, match="tau"):
        PDHG(prog, tau=10.0)
    with pytest.raises(InputError, match="program"):
        PDHG(L1WaveletProgram(*_cartesian(), LAM, _wavelet()))


class _TupleQuadratic(SmoothTerm):
    """Real ``1/2 ||M u - a||^2 + 1/2 ||N v - b||^2`` on a pair ``(u, v)``."""

    def __init__(self, M, a, N, b):
        self.M, self.a, self.N, self.b = M, a, N, b

    def value(self, x):
        u, v = x
        return 0.5 * ((self.M @ u - self.a) ** 2).sum() + 0.5 * ((self.N @ v - self.b) ** 2).sum()

    def grad(self, x):
        u, v = x
        return self.M.T @ (self.M @ u - self.a), self.N.T @ (self.N @ v - self.b)

    def lipschitz(self):
        return max(float(torch.linalg.matrix_norm(self.M, 2)) ** 2,
                   float(torch.linalg.matrix_norm(self.N, 2)) ** 2)


def test_fista_tuple_real_variables_vs_cvxpy():
    import cvxpy as cp

    g = torch.Generator().manual_seed(0)
    M = torch.randn(8, 5, generator=g, dtype=torch.float64)
    N = torch.randn(6, 4, generator=g, dtype=torch.float64)
    a, b = torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)
    reg = GroupL1(0.5, axis=-1)
    prog = CompositeProgram(_TupleQuadratic(M, a, N, b), reg)
    x0 = (torch.zeros(5, 3, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64))
    res = FISTA(prog, max_iter=5000, tol=1e-12, check_every=10).run(x0)
    u, v = make_variable((5, 3), torch.float64, "u")[0], make_variable((4, 2), torch.float64, "v")[0]
    U, V = cp.reshape(u.re, (5, 3), order="C"), cp.reshape(v.re, (4, 2), order="C")
    rg, _ = reg.to_cvxpy((u, v), ((5, 3), (4, 2)))
    obj = 0.5 * cp.sum_squares(M.numpy() @ U - a.numpy()) + 0.5 * cp.sum_squares(N.numpy() @ V - b.numpy()) + rg
    pr = cp.Problem(cp.Minimize(obj))
    pr.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert _relobj(res.history.objective[-1], pr.value) < 1e-7
    assert res.x[0].dtype == torch.float64


def test_nonnegative_lasso_and_scs():
    g = torch.Generator().manual_seed(3)
    A = Dense(torch.randn(20, 12, generator=g, dtype=torch.float64))
    y = torch.randn(20, generator=g, dtype=torch.float64)
    prog = RegularizedLeastSquares(A, y, NonNegative())
    ref = cvxpy_reference(prog)
    res = FISTA(prog, max_iter=5000, tol=1e-12, check_every=10).run()
    assert _relobj(res.history.objective[-1], ref.history.objective[-1]) < 1e-6
    scs = cvxpy_reference(RegularizedLeastSquares(A, y, L1(0.3)), solver="SCS")
    cla = cvxpy_reference(RegularizedLeastSquares(A, y, L1(0.3)))
    assert _relobj(scs.history.objective[-1], cla.history.objective[-1]) < 1e-5
    with pytest.raises(InputError, match="solver"):
        cvxpy_reference(prog, solver="MOSEK")


def test_to_cvxpy_too_big():
    maps = birdcage_maps(2, 128, 128)
    prog = L1WaveletProgram(Sense(maps, dtype=DT), torch.zeros(2, 128, 128, dtype=DT), 0.1,
                            Wavelet((128, 128), dtype=DT))
    with pytest.raises(InputError, match="CVXPY_LIMIT"):
        prog.to_cvxpy()


def test_solver_protocol_and_errors():
    A, y = _cartesian()
    prog = L1WaveletProgram(A, y, LAM, _wavelet())
    res = FISTA(prog, max_iter=7, check_every=0).run()
    assert len(res.history) == 1 and res.history.iteration == [7] and not res.converged
    res = FISTA(prog, max_iter=20, check_every=5).run(x0=A.H(y))
    assert res.history.iteration == [5, 10, 15, 20]
    seen = []
    FISTA(prog, max_iter=3).run(callback=lambda s: seen.append(s.it))
    assert seen == [1, 2, 3]
    with pytest.raises(InputError, match="x0"):
        FISTA(prog).run(x0=torch.zeros(3, 3, dtype=DT))
    with pytest.raises(InputError, match="restart"):
        FISTA(prog, restart="sometimes")
    with pytest.raises(InputError, match="program"):
        FISTA("program")
    with pytest.raises(InputError, match="W"):
        L1WaveletProgram(A, y, LAM, Wavelet((8, 8), dtype=DT))


# -- batches of independent systems (batch_dims) --------------------------------------
def _uneven_batch():
    """Two Cartesian systems whose Lipschitz constants differ 9x and whose data
    differ 50x in scale: a global step, momentum or certificate would couple them."""
    maps = birdcage_maps(4, H, W_)
    maps = torch.stack([maps, 3.0 * torch.roll(maps, 1, dims=0)])
    mask = torch.stack([cartesian_mask(H, W_, seed=0), cartesian_mask(H, W_, seed=1)])
    A = Sense(maps, mask, dtype=DT)
    y = A(phantom(H, W_)) + 0.01 * crandn(2, 4, H, W_, seed=1) * mask.unsqueeze(-3)
    y = y * torch.tensor([1.0, 50.0], dtype=DT).reshape(2, 1, 1, 1)
    singles = [(Sense(maps[b], mask[b], dtype=DT), y[b]) for b in range(2)]
    return A, y, singles


@pytest.mark.parametrize("solver", [FISTA, ISTA])
def test_batch_dims_gives_each_system_as_if_alone(solver):
    A, y, singles = _uneven_batch()
    Wt = _wavelet()
    prog = L1WaveletProgram(A, y, LAM, Wt)
    lips = prog.smooth.lipschitz_per_system(1)
    assert float(lips.max() / lips.min()) > 5  # the batched power method sees each system
    # a fixed budget far from convergence: the trajectories themselves must agree
    res = solver(prog, max_iter=60, check_every=20, batch_dims=1).run()
    certs = prog.certificate_per_system(res.x, 1)
    for b, (Ab, yb) in enumerate(singles):
        pb = L1WaveletProgram(Ab, yb, LAM, Wt)
        assert abs(float(lips[b]) / pb.smooth.lipschitz() - 1) < 1e-9
        rb = solver(pb, max_iter=60, check_every=20).run()
        assert _rel(res.x[b], rb.x) < 1e-9
        assert _relobj(float(certs[b]), pb.certificate(rb.x)) < 1e-6
        # away from the solution the projection clips, and each system's own step matters
        z = (crandn(2, H, W_, seed=9).real.abs() * 1e-3).to(DT)
        assert _relobj(float(prog.certificate_per_system(z, 1)[b]), pb.certificate(z[b])) < 1e-9
        assert abs(pb.value(rb.x) - float(prog.value_per_system(res.x, 1)[b])) < 1e-9 * pb.value(rb.x)
    assert res.history.certificate[-1] == pytest.approx(float(certs.max()), rel=1e-9)


def test_batch_dims_stops_each_system_at_its_tolerance():
    A, y, singles = _uneven_batch()
    Wt = _wavelet()
    prog = L1WaveletProgram(A, y, LAM, Wt)
    res = FISTA(prog, max_iter=3000, tol=1e-7, check_every=10, batch_dims=1).run()
    assert res.converged
    stops = []
    for b, (Ab, yb) in enumerate(singles):
        pb = L1WaveletProgram(Ab, yb, LAM, Wt)
        rb = FISTA(pb, max_iter=3000, tol=1e-7, check_every=10).run()
        stops.append(rb.state.it)
        # the system that reached tol first was left as it was: the one-by-one iterate
        assert _rel(res.x[b], rb.x) < 1e-9
        assert pb.certificate(res.x[b]) <= 1e-7
    assert stops[0] != stops[1]  # the test only means something if they differ


def test_batch_dims_errors():
    A, y, _ = _uneven_batch()
    prog = L1WaveletProgram(A, y, LAM, _wavelet())
    with pytest.raises(InputError, match="batch_dims"):
        FISTA(prog, batch_dims=2)
    with pytest.raises(InputError, match="batch_dims"):
        FISTA(prog, batch_dims=True)
    tup = CompositeProgram(_TupleQuadratic(*(torch.eye(2, dtype=torch.float64),) * 4), L1(0.1))
    with pytest.raises(InputError, match="batch_dims"):
        FISTA(tup, batch_dims=1)


# -- cycle spinning ---------------------------------------------------------------------
def test_shifted_prox_is_the_prox_of_the_shifted_norm():
    A, y = _cartesian()
    prog = L1WaveletProgram(A, y, LAM, _wavelet())
    reg = prog.reg
    axes, period = reg.shift_period()
    assert axes == (-2, -1) and period == 2 ** _wavelet().levels
    z = crandn(H, W_, seed=4)
    shift = (3, 5)
    got = reg.prox_shifted(z, 50.0, shift)
    roll = lambda v, s: torch.roll(v, shifts=s, dims=(-2, -1))  # noqa: E731
    expect = roll(reg.prox(roll(z, shift), 50.0), (-3, -5))
    assert _rel(got, expect) < 1e-12
    # optimality of prox_{t g_S}(z) for g_S(x) = lam ||W S x||_1: z - p in t * dg_S(p)
    c = reg.W.forward(roll(got, shift))
    u = reg.W.forward(roll(z - got, shift)) / (50.0 * LAM)
    on = c.abs() > 1e-12
    assert float((u[on] - c[on] / c[on].abs()).abs().max()) < 1e-9
    assert 0 < int((~on).sum()) < on.numel()  # both kinds of coefficient occur
    assert float(u[~on].abs().max()) <= 1 + 1e-9
    assert _rel(reg.prox_shifted(z, 50.0, (0, 0)), reg.prox(z, 50.0)) == 0.0
    assert _rel(reg.prox_shifted(z, 50.0, (period, 0)), reg.prox(z, 50.0)) < 1e-12


def test_cycle_spinning_reports_the_unshifted_objective_and_batches_equal_singles():
    A, y, singles = _uneven_batch()
    Wt = _wavelet()
    prog = L1WaveletProgram(A, y, LAM, Wt)
    res = FISTA(prog, max_iter=40, check_every=10, batch_dims=1, cycle_spin=7).run()
    fixed = FISTA(prog, max_iter=40, check_every=10, batch_dims=1).run()
    assert _rel(res.x, fixed.x) > 1e-3  # the shifts change the iterates
    # the recorded objective and certificate are the unshifted program's
    assert _relobj(res.history.objective[-1], prog.value(res.x)) < 1e-10
    assert res.history.certificate[-1] == pytest.approx(
        float(prog.certificate_per_system(res.x, 1).max()), rel=1e-9)
    for b, (Ab, yb) in enumerate(singles):
        pb = L1WaveletProgram(Ab, yb, LAM, Wt)
        rb = FISTA(pb, max_iter=40, check_every=10, cycle_spin=7).run()
        assert _rel(res.x[b], rb.x) < 1e-9
    again = FISTA(prog, max_iter=40, check_every=10, batch_dims=1, cycle_spin=7).run()
    assert _rel(again.x, res.x) == 0.0  # seeded: reproducible
    with pytest.raises(InputError, match="cycle_spin"):
        FISTA(RegularizedLeastSquares(A, y, L1(0.1)), cycle_spin=0)


@pytest.mark.parametrize("shift", [None, (3, 6)])
def test_fused_shrink_equals_the_operator_path(shift):
    """The pywt path thresholds in its planar layout; the torch backend goes through
    W.forward / W.adjoint: same prox, same moduli, per-system thresholds too."""
    x = crandn(2, H, W_, seed=5)
    t = torch.tensor([0.3, 0.8], dtype=torch.float64).reshape(2, 1, 1)
    a, ma = Wavelet((H, W_), dtype=DT, backend="pywt").shrink(x, t, shift=shift)
    b, mb = Wavelet((H, W_), dtype=DT, backend="torch").shrink(x, t, shift=shift)
    assert _rel(a, b) < 1e-12 and _rel(ma, mb) < 1e-12
    assert 0 < int((ma == 0).sum()) < ma.numel()
    W = Wavelet((H, W_), dtype=DT)
    roll = (lambda v, s: torch.roll(v, s, (-2, -1))) if shift else (lambda v, s: v)
    c = W.forward(roll(x, shift))
    expect = roll(W.adjoint(c * torch.clamp(1 - t / c.abs(), min=0)), tuple(-s for s in shift or ()))
    assert _rel(a, expect) < 1e-12


def test_batch_dims_with_a_constraint_uses_the_per_system_gradient_mapping():
    A, y, singles = _uneven_batch()
    prog = RegularizedLeastSquares(A, y, NonNegative())
    res = FISTA(prog, max_iter=40, check_every=10, batch_dims=1).run()
    certs = prog.certificate_per_system(res.x, 1)
    for b, (Ab, yb) in enumerate(singles):
        pb = RegularizedLeastSquares(Ab, yb, NonNegative())
        rb = FISTA(pb, max_iter=40, check_every=10).run()
        assert _rel(res.x[b], rb.x) < 1e-9
        assert _relobj(float(certs[b]), pb.certificate(rb.x)) < 1e-6
        # away from the solution the projection clips, and each system's own step matters
        z = (crandn(2, H, W_, seed=9).real.abs() * 1e-3).to(DT)
        assert _relobj(float(prog.certificate_per_system(z, 1)[b]), pb.certificate(z[b])) < 1e-9
