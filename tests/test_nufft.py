"""NUFFT conventions and accuracy, for every backend: centred orthonormal FFT on the
grid, explicit NUDFT, Toeplitz normal, Pipe-Menon weights, batching, dtype moves,
autograd, plan caching, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.operators.noncartesian import NonCartesianSense, StackOfStars
from convexrecon.operators.nufft import NUFFT, pipe_menon_dcf
from convexrecon.sampling import radial

C128 = torch.complex128
BACKENDS = ["finufft", "torchkbnufft"]
# stated accuracy against the exact NUDFT (complex128): FINUFFT's default eps=1e-12,
# torchkbnufft's width-6 Kaiser-Bessel table on a 2x grid
NUDFT_RTOL = {"finufft": 1e-9, "torchkbnufft": 2e-3}
# complex64 against complex128: FINUFFT's single precision default eps=1e-4 (an
# error of about 1e-4 against the exact NUDFT); torchkbnufft's rounding only
C64_RTOL = {"finufft": 5e-4, "torchkbnufft": 1e-5}


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _crand(*shape, seed=0, dtype=C128):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                         torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)


def _traj(k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(2, k, generator=g, dtype=torch.float64) * 2 - 1) * math.pi * 0.999


def _grid_traj(h, w):
    ky, kx = torch.meshgrid(torch.arange(h, dtype=torch.float64) - h // 2,
                            torch.arange(w, dtype=torch.float64) - w // 2, indexing="ij")
    return torch.stack([2 * math.pi * ky.flatten() / h, 2 * math.pi * kx.flatten() / w])


def _nudft_matrix(traj, im_size):
    """Exact non-uniform DFT, centred image coordinates, orthonormal scaling."""
    h, w = im_size
    n0 = torch.arange(h, dtype=torch.float64) - h // 2
    n1 = torch.arange(w, dtype=torch.float64) - w // 2
    phase = traj[0][:, None, None] * n0[None, :, None] + traj[1][:, None, None] * n1[None, None, :]
    return (torch.exp(-1j * phase) / math.sqrt(h * w)).reshape(traj.shape[1], h * w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("im_size", [(8, 8), (8, 6), (7, 5)])
def test_grid_points_equal_centred_orthonormal_fft(im_size, backend):
    """Pins sign, shift and normalisation: NUFFT on grid points == fftc(x)."""
    h, w = im_size
    op = NUFFT(_grid_traj(h, w), im_size, backend=backend, dtype=C128)
    x = _crand(h, w)
    ref = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x), norm="ortho"))
    assert _rel(op(x).reshape(h, w), ref) < 1e-4
    # the adjoint on the grid is the centred orthonormal inverse FFT
    y = _crand(h, w, seed=1)
    ref_adj = torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(y), norm="ortho"))
    assert _rel(op.adjoint(y.reshape(-1)), ref_adj) < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_explicit_nudft_8x8(backend):
    traj = _traj(100)
    op = NUFFT(traj, (8, 8), backend=backend, dtype=C128)
    E = _nudft_matrix(traj, (8, 8))
    x = _crand(8, 8, seed=2)
    tol = NUDFT_RTOL[backend]
    assert _rel(op(x), E @ x.reshape(-1)) < tol
    y = _crand(100, seed=3)
    assert _rel(op.adjoint(y).reshape(-1), E.conj().T @ y) < tol


@pytest.mark.parametrize("eps", [1e-4, 1e-7])
def test_finufft_accuracy_follows_eps(eps):
    """The error against the exact NUDFT is of the order of the requested eps
    (FINUFFT's tolerance is relative, in the 2-norm, up to a small factor)."""
    traj, im = _traj(300, seed=20), (12, 10)
    E = _nudft_matrix(traj, im)
    x = _crand(*im, seed=21)
    err = _rel(NUFFT(traj, im, backend="finufft", eps=eps, dtype=C128)(x), E @ x.reshape(-1))
    assert err < 10 * eps
    assert err > 1e-3 * eps  # the tolerance is actually used (not a fixed tight plan)


@pytest.mark.parametrize("backend", BACKENDS)
def test_complex64_close_to_complex128(backend):
    traj = _traj(100)
    x = _crand(8, 8, seed=4)
    y64 = NUFFT(traj.float(), (8, 8), backend=backend)(x.to(torch.complex64))
    y128 = NUFFT(traj, (8, 8), backend=backend, dtype=C128)(x)
    assert y64.dtype == torch.complex64
    assert _rel(y64.to(C128), y128) < C64_RTOL[backend]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_dcf", [False, True])
def test_toeplitz_normal_matches_dense_nudft_normal(with_dcf, backend):
    traj = _traj(120, seed=5)
    w = torch.rand(120, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) + 0.2
    op = NUFFT(traj, (8, 6), backend=backend, toeplitz=True, dcf=w if with_dcf else None,
               dtype=C128)
    E = _nudft_matrix(traj, (8, 6))
    wt = w if with_dcf else torch.ones(120, dtype=torch.float64)
    dense_normal = E.conj().T @ (wt[:, None] * E)
    x = _crand(8, 6, seed=7)
    assert _rel(op.normal(x).reshape(-1), dense_normal @ x.reshape(-1)) < 2e-3
    # the dcf operator is W^(1/2) A: forward and normal consistent
    assert _rel(op(x), wt.sqrt() * (E @ x.reshape(-1))) < 2e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_normal_without_toeplitz_is_adjoint_forward(backend):
    op = NUFFT(_traj(50), (6, 6), backend=backend, toeplitz=False, dtype=C128)
    assert op.kernel is None
    x = _crand(6, 6)
    assert _rel(op.normal(x), op.adjoint(op(x))) < 1e-12


def test_oversampling_keeps_scaling():
    traj = _traj(80, seed=8)
    x = _crand(8, 8, seed=9)
    ref = _nudft_matrix(traj, (8, 8)) @ x.reshape(-1)
    for osf in (1.5, 2.0, 2.5):
        op = NUFFT(traj, (8, 8), backend="torchkbnufft", oversamp=osf, dtype=C128)
        assert _rel(op(x), ref) < 1e-2
        assert _rel(op.normal(x), op.adjoint(op(x))) < 1e-2


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_dims(backend):
    op = NUFFT(_traj(60), (8, 8), backend=backend, toeplitz=True, dtype=C128)
    x = _crand(2, 3, 8, 8, seed=10)
    y = op(x)
    assert y.shape == (2, 3, 60)
    assert _rel(y[1, 2], op(x[1, 2])) < 1e-12
    assert op.adjoint(y).shape == (2, 3, 8, 8)
    assert op.normal(x).shape == (2, 3, 8, 8)
    assert _rel(op.normal(x)[0, 1], op.normal(x[0, 1])) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_to_complex128(backend):
    op = NUFFT(_traj(60).float(), (8, 8), backend=backend, toeplitz=True, dcf=torch.ones(60))
    op2 = op.to(dtype=C128)
    assert op2.dtype == C128 and op.dtype == torch.complex64
    assert op2.traj.dtype == torch.float64 and op2.kernel.dtype == torch.float64
    assert op.kernel.dtype == torch.float32 and op._impl is not op2._impl  # original untouched
    x = _crand(8, 8, seed=11)
    assert op2(x).dtype == C128 and op2.normal(x).dtype == C128
    assert _rel(op2(x), op(x.to(torch.complex64)).to(C128)) < C64_RTOL[backend]
    assert op.to(dtype=torch.complex64)(x.to(torch.complex64)).dtype == torch.complex64


@pytest.mark.parametrize("backend", BACKENDS)
def test_multicoil_and_stack_of_stars_against_loops(backend):
    traj, maps = _traj(70, seed=12), _crand(3, 4, 8, 6, seed=13)
    sos = StackOfStars(maps, traj, backend=backend, toeplitz=True, dtype=C128)
    nu = NUFFT(traj, (8, 6), backend=backend, dtype=C128)
    x = _crand(4, 8, 6, seed=14)
    z = torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(maps * x, dim=-3), dim=-3, norm="ortho"), dim=-3)
    assert _rel(sos(x), nu(z)) < 1e-12
    ncs = NonCartesianSense(maps[:, 0], traj, backend=backend, toeplitz=True, dtype=C128)
    assert _rel(ncs(x[0]), nu(maps[:, 0] * x[0])) < 1e-12
    assert _rel(ncs.normal(x[0]), ncs.adjoint(ncs(x[0]))) < 1e-3
    assert _rel(sos.normal(x), sos.adjoint(sos(x))) < 1e-3


def test_pipe_menon_radial_ramp():
    n, spokes, readout = 32, 64, 64
    traj = radial(spokes, readout, mode="equiangular")
    w = pipe_menon_dcf(traj, (n, n), iters=20)
    assert w.shape == (spokes * readout,) and w.dtype == torch.float32
    assert bool((w >= 0).all())
    assert float(w.sum()) == pytest.approx(n * n, rel=1e-4)
    kr = torch.linalg.vector_norm(traj, dim=0)
    # away from the centre and the edge the weights grow like |k|
    band = lambda lo, hi: float(w[(kr > lo) & (kr < hi)].mean())  # noqa: E731
    ratio = band(0.55 * math.pi, 0.65 * math.pi) / band(0.25 * math.pi, 0.35 * math.pi)
    assert 1.6 < ratio < 2.4
    # gridding a uniform signal: interpolating back the gridded weights is flat
    op = NUFFT(traj, (n, n), dcf=w, dtype=torch.complex64)
    x = torch.zeros(n, n, dtype=torch.complex64)
    x[n // 2, n // 2] = 1  # a centred delta: constant k-space data
    psf = op.normal(x)
    assert float(psf[n // 2, n // 2].real) == pytest.approx(1.0, rel=1e-3)
    side = psf.abs().clone()
    side[n // 2 - 1:n // 2 + 2, n // 2 - 1:n // 2 + 2] = 0
    assert float(side.max()) < 0.1


def test_bad_input():
    with pytest.raises(InputError, match="traj"):
        NUFFT(torch.full((2, 5), 4.0), (8, 8))
    with pytest.raises(InputError, match="traj"):
        NUFFT(torch.full((2, 5), math.pi, dtype=torch.float64), (8, 8))
    with pytest.raises(InputError, match="traj"):
        NUFFT(torch.zeros(3, 5), (8, 8))
    with pytest.raises(InputError, match="traj"):
        NUFFT(torch.zeros(10), (8, 8))
    with pytest.raises(InputError, match="traj"):
        NUFFT(torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), (8, 8))
    with pytest.raises(InputError, match="dcf"):
        NUFFT(torch.zeros(2, 5), (8, 8), dcf=torch.ones(4))
    with pytest.raises(InputError, match="dcf"):
        NUFFT(torch.zeros(2, 5), (8, 8), dcf=-torch.ones(5))
    with pytest.raises(InputError, match="oversamp"):
        NUFFT(torch.zeros(2, 5), (8, 8), oversamp=0.5)
    with pytest.raises(InputError, match="dtype"):
        NUFFT(torch.zeros(2, 5), (8, 8), dtype=torch.float32)
    with pytest.raises(InputError, match="im_size"):
        NUFFT(torch.zeros(2, 5), (8, 0))
    op = NUFFT(torch.zeros(2, 5), (8, 8))
    with pytest.raises(InputError, match="input"):
        op(torch.zeros(8, 7, dtype=torch.complex64))
    with pytest.raises(InputError, match="traj"):
        pipe_menon_dcf(torch.full((2, 5), 7.0), (8, 8))
    with pytest.raises(InputError, match="maps"):
        StackOfStars(torch.zeros(4, 8, 8, dtype=torch.complex64), torch.zeros(2, 5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_autograd_apply_gradcheck_and_sense_to(backend):
    op = NUFFT(_traj(20, seed=15), (4, 4), backend=backend, toeplitz=True, dtype=C128)
    x = _crand(4, 4, seed=16).requires_grad_(True)
    assert torch.autograd.gradcheck(op.autograd_apply, (x,), fast_mode=True)
    assert torch.autograd.gradcheck(op.N.autograd_apply, (x,), fast_mode=True)
    ncs = NonCartesianSense(_crand(2, 4, 4, seed=17).to(torch.complex64), _traj(20).float(),
                            backend=backend)
    ncs2 = ncs.to(dtype=C128)
    assert ncs2.maps.dtype == C128 and ncs2.nufft.dtype == C128 and ncs.nufft.dtype == torch.complex64
    xd = x.detach()
    assert _rel(ncs2.normal(xd), ncs2.adjoint(ncs2(xd))) < 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_autograd_apply_gradgradcheck(backend):
    """Double backward through the NUFFT and its Toeplitz normal (the backward is the
    wrapped adjoint, itself differentiable)."""
    op = NUFFT(_traj(20, seed=18), (4, 4), backend=backend, toeplitz=True, dtype=C128)
    x = _crand(4, 4, seed=19).requires_grad_(True)
    assert torch.autograd.gradgradcheck(op.autograd_apply, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(op.H.autograd_apply, (_crand(20, seed=20).requires_grad_(True),),
                                        fast_mode=True)
    assert torch.autograd.gradgradcheck(op.N.autograd_apply, (x,), fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plain_call_is_differentiable(backend):
    """``op(x)`` on a tensor that requires grad: FINUFFT runs on numpy arrays, so the
    call goes through the adjoint-based autograd function; gradients are right to
    first and second order, for the NUFFT and for the multi-coil encoders."""
    traj = _traj(24, seed=22)
    op = NUFFT(traj, (4, 4), backend=backend, toeplitz=False, dtype=C128)
    x = _crand(2, 4, 4, seed=23).requires_grad_(True)
    y = _crand(2, 24, seed=24).requires_grad_(True)
    assert op(x).requires_grad and op.adjoint(y).requires_grad
    assert torch.autograd.gradcheck(op, (x,), fast_mode=True)
    assert torch.autograd.gradcheck(op.adjoint, (y,), fast_mode=True)
    assert torch.autograd.gradgradcheck(op, (x,), fast_mode=True)
    maps = _crand(3, 2, 4, 4, seed=25)
    ncs = NonCartesianSense(maps[:, 0], traj, backend=backend, dtype=C128)
    sos = StackOfStars(maps, traj, backend=backend, dtype=C128)
    assert torch.autograd.gradcheck(lambda v: ncs.adjoint(ncs(v[0])), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda v: ncs.normal(v[0]), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(sos, (x,), fast_mode=True)
    # a loss through the operator: gradient == A^H (A x - b), computed by hand
    b = _crand(24, seed=26)
    xs = x[0].detach().clone().requires_grad_(True)
    (0.5 * (op(xs) - b).abs().pow(2).sum()).backward()
    assert _rel(xs.grad, op.adjoint(op(xs.detach()) - b)) < 1e-10


def test_finufft_plans_cached_per_batch_size_and_threads():
    traj = _traj(50, seed=27)
    op = NUFFT(traj, (6, 6), backend="finufft", dtype=C128)
    E = _nudft_matrix(traj, (6, 6))
    impl = op._impl
    for batch in (1, 3, 1, 5):
        x = _crand(batch, 6, 6, seed=batch)
        assert _rel(op(x), x.reshape(batch, -1) @ E.T) < 1e-9
    assert {key[0] for key in impl._plans} == {1, 3, 5}
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        op(_crand(3, 6, 6))
        assert any(key == (3, "complex128", 1) for key in impl._plans)
    finally:
        torch.set_num_threads(old)
    assert len(impl._plans) <= 4


def _apply_in_worker(op, x, queue):
    import os

    y = op(x).numpy()
    queue.put((y, op._impl._pid == os.getpid()))  # the plans were rebuilt in this process


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle", "to", "fork"])
def test_finufft_plans_rebuilt_after_copies_and_in_workers(how):
    """Plans can be neither copied nor pickled: copies rebuild them on first use."""
    import copy
    import multiprocessing
    import pickle

    traj = _traj(40, seed=28)
    op = NUFFT(traj, (6, 6), backend="finufft", dtype=C128)
    x = _crand(2, 6, 6, seed=29)
    ref = op(x)  # the original has a plan now
    assert op._impl._plans
    if how == "fork":
        if "fork" not in multiprocessing.get_all_start_methods():
            pytest.skip("no fork start method on this platform")
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        proc = ctx.Process(target=_apply_in_worker, args=(op, x, queue))
        proc.start()
        out, rebuilt = queue.get(timeout=60)
        out = torch.from_numpy(out)
        assert rebuilt
        proc.join(timeout=60)
        assert proc.exitcode == 0
    else:
        new = {"copy": copy.copy, "deepcopy": copy.deepcopy,
               "pickle": lambda o: pickle.loads(pickle.dumps(o)),
               "to": lambda o: o.to(device="cpu")}[how](op)
        if how != "copy":
            assert new._impl is not op._impl and not new._impl._plans
        out = new(x)
    assert _rel(out, ref) < 1e-12
    assert _rel(op(x), ref) < 1e-12  # the original still works


def _pipe_menon_torchkbnufft(traj, im_size, iters):
    """The previous implementation: torchkbnufft's table-based iteration."""
    from convexrecon.operators.nufft_tkbn import tkbn

    grid = [2 * n for n in im_size]
    w = tkbn().calc_density_compensation_function(traj, list(im_size), num_iterations=iters,
                                                  grid_size=grid, numpoints=6)
    w = w.reshape(-1).real.double()
    return w * (math.prod(im_size) / w.sum())


@pytest.mark.parametrize("case", ["radial-32", "random-24x20"])
def test_pipe_menon_agrees_with_torchkbnufft(case):
    """The sparse gridding matrix reproduces torchkbnufft's weights (same kernel and
    iterations) within 1e-3, also at the periodic edge of k-space."""
    if case == "radial-32":
        traj, size = radial(24, 64, mode="golden").double().clamp(min=-math.pi), (32, 32)
    else:
        traj, size = _traj(700, seed=30), (24, 20)
    for iters in (1, 10):
        w = pipe_menon_dcf(traj, size, iters=iters)
        ref = _pipe_menon_torchkbnufft(traj, size, iters)
        assert w.dtype == torch.float64
        assert float(w.sum()) == pytest.approx(math.prod(size), rel=1e-12)
        assert float((w - ref).abs().max() / ref.abs().max()) < 1e-3


def test_backend_selection_and_errors():
    traj = _traj(10)
    assert NUFFT(traj, (4, 4)).backend == "finufft"  # the default on the CPU
    assert NUFFT(traj, (4, 4), backend="torchkbnufft").backend == "torchkbnufft"
    # the faster normal per backend: direct with FINUFFT, Toeplitz with torchkbnufft
    assert NUFFT(traj, (4, 4)).kernel is None
    assert NUFFT(traj, (4, 4), backend="torchkbnufft").kernel is not None
    assert NUFFT(traj, (4, 4), toeplitz=True).kernel is not None
    assert NUFFT(traj, (4, 4), backend="torchkbnufft", toeplitz=False).kernel is None
    assert NUFFT(traj, (4, 4)).to(dtype=torch.complex128).kernel is None
    with pytest.raises(InputError, match="backend"):
        NUFFT(traj, (4, 4), backend="sigpy")
    with pytest.raises(InputError, match="eps"):
        NUFFT(traj, (4, 4), backend="torchkbnufft", eps=1e-6)
    with pytest.raises(InputError, match="eps"):
        NUFFT(traj, (4, 4), eps=0.0)
    with pytest.raises(InputError, match="toeplitz"):
        NUFFT(traj, (4, 4), toeplitz="yes")
    with pytest.raises(InputError, match="backend"):
        NonCartesianSense(_crand(2, 4, 4), traj, backend="bart")
