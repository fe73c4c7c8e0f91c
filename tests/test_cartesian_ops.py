"""Cartesian operators: FFT, SENSE, wavelet, finite differences, elementwise, crops.

The registry-wide checks (dot test, linearity, normal, batch, composition) run in
``test_operator_registry.py`` over the cases of ``cases_cartesian.py``; this module
checks the transforms against references and the special paths of ``Sense``.
"""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cases_cartesian import maps_for, phase_encode_mask, rand_complex, variable_density_mask
from convexrecon.errors import InputError
from convexrecon.operators.base import Identity
from convexrecon.operators.elementwise import Crop, Mask, Multiply, Pad
from convexrecon.operators.fft import FFT, centering_phases, fftc, ifftc
from convexrecon.operators.finite_diff import FiniteDifference
from convexrecon.operators.linalg import dot_test, to_dense
from convexrecon.operators.sense import Sense
from convexrecon.operators.wavelet import Wavelet, default_levels

C128 = torch.complex128


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny FFTs gain nothing from threads, and on a busy shared machine an OpenMP
    fork per call costs milliseconds (gradcheck makes thousands of calls)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-300))


def _naive_sense(maps, mask, x, dims):
    k = fftc(x.unsqueeze(-len(dims) - 1) * maps, dims)
    return k if mask is None else k * mask.unsqueeze(-len(dims) - 1)


# -- FFT -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 8), (6, 10), (9, 7), (2, 5, 6)])
def test_fftc_matches_numpy(shape):
    x = rand_complex(shape, C128, 0)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"),
                          axes=(-2, -1))
    assert np.abs(fftc(x, (-2, -1)).numpy() - ref).max() < 1e-12
    assert np.abs(FFT(shape[-2:], dtype=C128)(x).numpy() - ref).max() < 1e-12
    assert _rel(ifftc(fftc(x, (-2, -1)), (-2, -1)), x) < 1e-13


def test_fft_3d_and_single_axis():
    x = rand_complex((4, 5, 6), C128, 1)
    ref = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x.numpy()), norm="ortho"))
    assert np.abs(FFT((4, 5, 6), dims=(-3, -2, -1), dtype=C128)(x).numpy() - ref).max() < 1e-12
    ref1 = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(x.numpy(), axes=1), axis=1, norm="ortho"), axes=1)
    assert np.abs(FFT((4, 5, 6), dims=(1,), dtype=C128)(x).numpy() - ref1).max() < 1e-12


@pytest.mark.parametrize("shape", [(8, 8), (6, 10), (9, 7), (3, 4, 5)])
def test_centering_phases(shape):
    x = rand_complex(shape, C128, 2)
    dims = tuple(range(-len(shape), 0))
    d_in, d_out = centering_phases(shape, dtype=C128)
    assert _rel(d_out * torch.fft.fftn(d_in * x, dim=dims, norm="ortho"), fftc(x, dims)) < 1e-13


@pytest.mark.parametrize("op", [FFT((4, 6), dtype=C128), FFT((5, 3), dtype=C128),
                                Wavelet((8, 8), wavelet="db2", dtype=C128),
                                Wavelet((8, 8), wavelet="db2", dtype=C128, backend="torch"),
                                Wavelet((4, 16), wavelet="db4", levels=2, dtype=C128)],
                         ids=["fft-even", "fft-odd", "wavelet", "wavelet-torch", "wavelet-db4"])
def test_unitary(op):
    m = to_dense(op)
    eye = torch.eye(m.shape[0], dtype=m.dtype)
    assert float((m.mH @ m - eye).abs().max()) < 1e-12
    assert float((m @ m.mH - eye).abs().max()) < 1e-12


# -- SENSE ----------------------------------------------------------------------------
SENSE_CONFIGS = {
    "poisson-even": ((8, 8), lambda s: variable_density_mask(s, seed=1), 2, (-2, -1)),
    "poisson-not-div4": ((6, 10), lambda s: variable_density_mask(s, seed=2), 2, (-2, -1)),
    "poisson-odd": ((9, 7), lambda s: variable_density_mask(s, seed=3), 2, (-2, -1)),
    "1d-mask": ((16, 12), lambda s: phase_encode_mask(s, seed=4), 2, (-1,)),
    "1d-mask-odd": ((7, 9), lambda s: phase_encode_mask(s, seed=5), 2, (-1,)),
    "1d-mask-row": ((8, 6), lambda s: phase_encode_mask(s, seed=6)[0], 2, (-1,)),
    "readout-mask": ((8, 6), lambda s: phase_encode_mask(s[::-1], seed=7).T.contiguous(), 2, (-2,)),
    "full": ((6, 8), lambda s: None, 2, ()),
    "all-true": ((6, 8), lambda s: torch.ones(s, dtype=torch.bool), 2, ()),
    "3d": ((4, 6, 6), lambda s: torch.rand(s, generator=torch.Generator().manual_seed(8)) < 0.4, 3,
           (-3, -2, -1)),
    "3d-pe": ((4, 6, 5), lambda s: (torch.rand(4, 1, 5, generator=torch.Generator().manual_seed(9)) < 0.5),
              3, (-3, -1)),
}


@pytest.mark.parametrize("name", sorted(SENSE_CONFIGS))
def test_sense_paths(name):
    """forward equals the definition, normal equals adjoint(forward), the fast path is taken."""
    im, make_mask, ndim, fft_dims = SENSE_CONFIGS[name]
    maps = maps_for(3, im, C128, seed=11)
    mask = make_mask(im)
    op = Sense(maps, mask, ndim=ndim)
    assert op.normal_fft_dims == fft_dims
    dims = tuple(range(-ndim, 0))
    x = rand_complex((2, *im), C128, 12)
    mask_b = None if mask is None else mask.expand(im)
    assert _rel(op(x), _naive_sense(maps, mask_b, x, dims)) < 1e-12
    assert _rel(op.normal(x), op.adjoint(op(x))) < 1e-12
    assert _rel(op.maps, maps) < 1e-14
    assert dot_test(op) < 1e-12
    # the adjoint against the definition too
    y = rand_complex((2, 3, *im), C128, 13)
    ref = (maps.conj() * ifftc(y if mask is None else y * mask_b, dims)).sum(-ndim - 1)
    assert _rel(op.adjoint(y), ref) < 1e-12


def test_sense_batched_maps_and_masks_match_loop():
    b, im = 3, (8, 6)
    maps = torch.stack([maps_for(4, im, C128, seed=20 + i) for i in range(b)])
    masks = torch.stack([variable_density_mask(im, seed=30), phase_encode_mask(im, seed=31),
                         variable_density_mask(im, seed=32)])
    op = Sense(maps, masks)
    x = rand_complex((b, *im), C128, 1)
    y = rand_complex((b, 4, *im), C128, 2)
    fwd, adj, nrm = op(x), op.H(y), op.N(x)
    for i in range(b):
        single = Sense(maps[i], masks[i])
        assert _rel(fwd[i], single(x[i])) < 1e-13
        assert _rel(adj[i], single.H(y[i])) < 1e-13
        assert _rel(nrm[i], single.N(x[i])) < 1e-13
    # a shared image broadcasts against the per-sample operator
    assert op(x[0]).shape == (b, 4, *im)
    assert dot_test(op, batch=(b,)) < 1e-12


def test_sense_shared_maps_per_sample_masks():
    im = (8, 8)
    maps = maps_for(2, im, C128, seed=3)
    masks = torch.stack([variable_density_mask(im, seed=s) for s in (1, 2)]).unsqueeze(1)  # (2, 1, H, W)
    op = Sense(maps, masks)
    x = rand_complex((2, 3, *im), C128, 4)  # batch (2, 3) against the operator's (2, 1)
    out = op.N(x)
    assert out.shape == (2, 3, *im)
    for i in range(2):
        for j in range(3):
            assert _rel(out[i, j], Sense(maps, masks[i, 0]).N(x[i, j])) < 1e-13


def test_sense_autograd_gradcheck():
    im = (4, 4)
    op = Sense(maps_for(2, im, C128, seed=5), variable_density_mask(im, seed=6))
    x = rand_complex(im, C128, 7).requires_grad_(True)
    assert torch.autograd.gradcheck(op.autograd_apply, (x,))
    assert torch.autograd.gradgradcheck(op.autograd_apply, (x,), fast_mode=True)
    assert torch.autograd.gradcheck(op.N.autograd_apply, (x,), fast_mode=True)
    # direct calls are differentiable too
    assert torch.autograd.gradcheck(op.normal, (x,), fast_mode=True)
    odd = Sense(maps_for(2, (5, 3), C128, seed=8), phase_encode_mask((5, 3), seed=9))
    x_odd = rand_complex((5, 3), C128, 10).requires_grad_(True)
    assert torch.autograd.gradgradcheck(odd.autograd_apply, (x_odd,), fast_mode=True)


def test_sense_to_dtype_and_precision():
    im = (8, 6)
    maps = maps_for(3, im, torch.complex64, seed=8)
    mask = variable_density_mask(im, seed=9)
    op = Sense(maps, mask)
    assert op.dtype == torch.complex64
    op2 = op.to(dtype=C128)
    assert op2.dtype == C128 and op.dtype == torch.complex64
    ref = Sense(maps.to(C128), mask)
    x = rand_complex(im, C128, 10)
    assert op2(x).dtype == C128
    assert _rel(op2(x), ref(x)) < 1e-7  # maps were rounded to complex64
    assert _rel(op2.N(x), op2.H(op2(x))) < 1e-12
    # real maps give a complex operator; numpy inputs work
    op3 = Sense(np.ones((2, *im)), mask.numpy().astype(np.float32))
    assert op3.dtype == C128


def test_sense_bad_input():
    im = (8, 8)
    maps = maps_for(2, im, C128)
    with pytest.raises(InputError, match="maps"):
        Sense(torch.ones(8, 8, dtype=C128))
    with pytest.raises(InputError, match="maps"):
        Sense(torch.ones(2, 8, 8, dtype=C128), ndim=3)
    with pytest.raises(InputError, match="mask"):
        Sense(maps, torch.ones(5, 8, dtype=torch.bool))
    with pytest.raises(InputError, match="mask"):
        Sense(torch.stack([maps, maps]), torch.ones(3, 8, 8, dtype=torch.bool))
    with pytest.raises(InputError, match="mask"):
        Sense(maps, torch.full((8, 8), 0.5))
    with pytest.raises(InputError, match="ndim"):
        Sense(maps, ndim=4)
    with pytest.raises(InputError, match="maps"):
        Sense(torch.ones(2, 8, 8, dtype=torch.int64))
    op = Sense(maps)
    with pytest.raises(InputError, match="expected shape"):
        op(torch.ones(8, 7, dtype=C128))


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(h=st.integers(1, 11), w=st.integers(2, 11), ncoils=st.integers(1, 4),
       kind=st.sampled_from(["random", "1d", "none", "empty"]), seed=st.integers(0, 2 ** 16),
       batched=st.booleans())
def test_sense_property(h, w, ncoils, kind, seed, batched):
    """Dot test and normal == adjoint(forward) over random shapes, coils and masks."""
    g = torch.Generator().manual_seed(seed)
    batch = (2,) if batched else ()
    maps = rand_complex((*batch, ncoils, h, w), C128, seed)
    if kind == "random":
        mask = torch.rand(*batch, h, w, generator=g) < 0.5
    elif kind == "1d":
        mask = (torch.rand(*batch, 1, w, generator=g) < 0.5).expand(*batch, h, w)
    elif kind == "empty":
        mask = torch.zeros(h, w, dtype=torch.bool)
    else:
        mask = None
    op = Sense(maps, mask)
    x = rand_complex((*batch, h, w), C128, seed + 1)
    assert dot_test(op, batch=batch, seed=seed) < 1e-10
    ref = op.adjoint(op.forward(x))
    assert float(torch.linalg.vector_norm(op.normal(x) - ref)) <= 1e-10 * float(
        torch.linalg.vector_norm(ref)) + 1e-12
    if kind != "empty":
        mask_b = None if mask is None else mask.expand(*batch, h, w)
        assert _rel(op(x), _naive_sense(maps, mask_b, x, (-2, -1))) < 1e-12
    else:
        assert float(op(x).abs().max()) == 0.0 and float(op.normal(x).abs().max()) == 0.0


# -- wavelet --------------------------------------------------------------------------
def _pywt_packed(x: np.ndarray, wavelet: str, levels: int, axes) -> np.ndarray:
    def one(a):
        coeffs = pywt.wavedecn(a, wavelet, mode="periodization", level=levels, axes=axes)
        return pywt.coeffs_to_array(coeffs, axes=axes)[0]
    return one(x.real) + 1j * one(x.imag) if np.iscomplexobj(x) else one(x)


@pytest.mark.filterwarnings("ignore:Level value")
@pytest.mark.parametrize("backend", ["pywt", "torch"])
@pytest.mark.parametrize("shape,axes,wavelet,levels", [
    ((16, 12), (-2, -1), "db4", 2),
    ((2, 16, 16), (-2, -1), "haar", None),
    ((8, 16, 8), (-3, -2, -1), "db2", 2),
    ((4, 16, 8), (-3, -1), "db4", 2),
    ((16, 8), (-1,), "sym4", 3),
])
def test_wavelet_matches_pywt(backend, shape, axes, wavelet, levels):
    x = rand_complex(shape, C128, 3)
    op = Wavelet(shape, wavelet=wavelet, levels=levels, axes=axes, dtype=C128, backend=backend)
    ref = _pywt_packed(x.numpy(), wavelet, op.levels, axes)
    assert np.abs(op(x).numpy() - ref).max() < 1e-10
    assert _rel(op.H(op(x)), x) < 1e-10
    assert _rel(op(op.H(x)), x) < 1e-10


@pytest.mark.parametrize("backend", ["pywt", "torch"])
def test_wavelet_batch_real_and_single_precision(backend):
    op = Wavelet((16, 8), wavelet="db4", levels=2, backend=backend)
    x = rand_complex((3, 2, 16, 8), torch.complex64, 4)
    y = op(x)
    assert y.dtype == torch.complex64 and y.shape == x.shape
    assert _rel(y[1, 0], op(x[1, 0])) < 1e-6
    assert _rel(op.H(y), x) < 1e-5
    xr = x.real
    assert _rel(op(xr), op(x).real) < 1e-6


def test_wavelet_backends_agree_and_autograd():
    op_p = Wavelet((8, 8), wavelet="db2", dtype=C128, backend="pywt")
    op_t = Wavelet((8, 8), wavelet="db2", dtype=C128, backend="torch")
    x = rand_complex((8, 8), C128, 5)
    assert _rel(op_p(x), op_t(x)) < 1e-12
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(op_p.autograd_apply, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(op_p.autograd_apply, (x,), fast_mode=True)
    assert torch.autograd.gradcheck(op_t, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(op_t.H, (x,), fast_mode=True)
    # the pywt path routes a direct call with grad through autograd_apply
    assert torch.autograd.gradcheck(op_p, (x,), fast_mode=True)
    assert torch.autograd.gradcheck(op_p.H, (x,), fast_mode=True)


def test_wavelet_levels_and_bad_input():
    assert Wavelet((256, 256)).levels == 4
    assert Wavelet((16, 12), wavelet="haar").levels == 2
    assert default_levels((8, 8), "db4") == 1
    with pytest.raises(InputError, match="divisible"):
        Wavelet((16, 12), levels=3)
    with pytest.raises(InputError, match="even"):
        Wavelet((15, 16))
    with pytest.raises(InputError, match="wavelet"):
        Wavelet((16, 16), wavelet="nope")
    with pytest.raises(InputError, match="orthogonal"):
        Wavelet((16, 16), wavelet="bior2.2")
    with pytest.raises(InputError, match="levels"):
        Wavelet((16, 16), levels=0)
    with pytest.raises(InputError, match="backend"):
        Wavelet((16, 16), backend="cuda")
    with pytest.raises(InputError, match="axes"):
        Wavelet((16, 16), axes=(-3,))


def test_wavelet_to_dtype():
    op = Wavelet((8, 8), wavelet="db2", backend="torch").to(dtype=C128)
    x = rand_complex((8, 8), C128, 6)
    assert op(x).dtype == C128
    assert _rel(op.H(op(x)), x) < 1e-12


# -- finite differences, elementwise, crops -----------------------------------------------
def test_finite_difference_values():
    x = rand_complex((5, 6), C128, 7)
    d = FiniteDifference((5, 6), dtype=C128)(x)
    assert d.shape == (2, 5, 6)
    assert torch.equal(d[0, 1, 2], x[2, 2] - x[1, 2]) and torch.equal(d[1, 1, 5], x[1, 0] - x[1, 5])
    d1 = FiniteDifference((5, 6), dims=(1,), dtype=C128)
    assert d1.oshape == (1, 5, 6)
    with pytest.raises(InputError, match="dims"):
        FiniteDifference((5, 6), dims=(2,))
    with pytest.raises(InputError, match="dims"):
        FiniteDifference((5, 6), dims=(0, -2))


def test_crop_pad_fastmri_centre():
    x = torch.arange(9 * 8, dtype=torch.float64).reshape(9, 8).to(C128)
    c = Crop((9, 8), (4, 5), dtype=C128)(x)
    # fastMRI: start = (N - n) // 2
    assert torch.equal(c, x[2:6, 1:6])
    p = Pad((4, 5), (9, 8), dtype=C128)(c)
    assert torch.equal(p[2:6, 1:6], c) and float(p.abs().sum()) == float(c.abs().sum())
    with pytest.raises(InputError, match="oshape"):
        Crop((4, 4), (5, 4))
    with pytest.raises(InputError, match="oshape"):
        Pad((4, 4), (3, 4))
    with pytest.raises(InputError, match="oshape"):
        Crop((4, 4), (4,))


def test_multiply_and_mask_batched_weights():
    w = rand_complex((2, 3, 4, 5), C128, 8)  # per-sample weights, ishape (1, 4, 5)
    op = Multiply((1, 4, 5), w)
    assert op.oshape == (3, 4, 5)
    x = rand_complex((2, 1, 4, 5), C128, 9)
    assert _rel(op(x), w * x) < 1e-15
    assert dot_test(op, batch=(2,)) < 1e-12
    assert _rel(op.N(x), op.H(op(x))) < 1e-13
    m = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(1)) < 0.5
    mk = Mask((4, 5), m, dtype=C128)
    assert torch.equal(mk(x[:, 0]), x[:, 0] * m)
    with pytest.raises(InputError, match="mask"):
        Mask((4, 5), torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(InputError, match="weights"):
        Multiply((4, 5), torch.ones(3, 5))


def test_sense_equals_composition_of_simple_operators():
    """Sense == Mask @ FFT @ Multiply(maps) (the factory description in DESIGN.md)."""
    im = (8, 6)
    maps = maps_for(3, im, C128, seed=12)
    mask = variable_density_mask(im, seed=13)
    comp = Mask((3, *im), mask, dtype=C128) @ FFT((3, *im), dtype=C128) @ Multiply((1, *im), maps)
    op = Sense(maps, mask)
    x = rand_complex((1, *im), C128, 14)
    assert _rel(op(x[0]), comp(x)) < 1e-12
    y = rand_complex((3, *im), C128, 15)
    assert _rel(op.H(y), comp.H(y)[0]) < 1e-12
    assert _rel((op @ Identity(im, dtype=C128)).N(x[0]), comp.N(x)[0]) < 1e-12


@pytest.mark.gpu
def test_cuda_paths_match_cpu():
    """Sense and the torch wavelet on CUDA agree with the CPU (pywt) results."""
    im = (16, 12)
    op = Sense(maps_for(3, im, C128, seed=1), variable_density_mask(im, seed=2))
    x = rand_complex((2, *im), C128, 3)
    gop = op.to("cuda")
    assert _rel(gop.N(x.cuda()).cpu(), op.N(x)) < 1e-12
    assert _rel(gop(x.cuda()).cpu(), op(x)) < 1e-12
    w = Wavelet(im, wavelet="db2", levels=2, dtype=C128)
    assert _rel(w.to("cuda")(x.cuda()).cpu(), w(x)) < 1e-12
    with pytest.raises(InputError, match="backend"):
        Wavelet(im, backend="pywt", dtype=C128).to("cuda")(x.cuda())
