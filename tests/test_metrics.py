"""Metrics against scikit-image, in fastMRI's conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from convexrecon import metrics
from convexrecon.errors import InputError


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    ref = rng.random((3, 40, 33))
    ref[:, 10:30, 8:25] += 1.0  # structure
    noise = 0.1 * (rng.standard_normal(ref.shape) + 1j * rng.standard_normal(ref.shape))
    phase = np.exp(1j * rng.uniform(0, 2 * np.pi, ref.shape))
    recon = (ref + noise) * phase  # complex; its magnitude is compared
    return ref, recon


def test_psnr_matches_skimage(volume):
    ref, recon = volume
    expect = peak_signal_noise_ratio(ref, np.abs(recon), data_range=ref.max())
    assert metrics.psnr(recon, ref) == pytest.approx(expect, rel=1e-12)
    assert metrics.psnr(torch.from_numpy(recon), torch.from_numpy(ref)) == pytest.approx(expect)


def test_ssim_matches_skimage_per_slice_mean(volume):
    ref, recon = volume
    dr = ref.max()  # volume maximum, as fastMRI
    expect = np.mean([structural_similarity(ref[i], np.abs(recon[i]), data_range=dr)
                      for i in range(ref.shape[0])])
    assert metrics.ssim(recon, ref) == pytest.approx(expect, rel=1e-10)
    one = structural_similarity(ref[0], np.abs(recon[0]), data_range=2.5)
    assert metrics.ssim(recon[0], ref[0], data_range=2.5) == pytest.approx(one, rel=1e-10)


def test_nmse_definition(volume):
    ref, recon = volume
    expect = np.sum((ref - np.abs(recon)) ** 2) / np.sum(ref ** 2)
    assert metrics.nmse(recon, ref) == pytest.approx(expect, rel=1e-12)


def test_identical_images():
    ref = np.random.default_rng(1).random((20, 20)) + 0.5
    assert metrics.psnr(ref, ref) == math.inf
    assert metrics.ssim(ref, ref) == pytest.approx(1.0)
    assert metrics.nmse(ref, ref) == 0.0


def test_crop_and_mask(volume):
    ref, recon = volume
    cropped = metrics.psnr(recon[:, 4:36, 3:30], ref[:, 4:36, 3:30])
    assert metrics.psnr(recon, ref, crop=(32, 27)) == pytest.approx(cropped)
    mask = np.zeros(ref.shape[-2:], dtype=bool)
    mask[10:30, 8:25] = True
    r, g = np.abs(recon)[:, mask], ref[:, mask]
    mse = np.mean((r - g) ** 2)
    assert metrics.psnr(recon, ref, mask=mask) == pytest.approx(10 * np.log10(ref.max() ** 2 / mse))
    assert metrics.nmse(recon, ref, mask=mask) == pytest.approx(np.sum((r - g) ** 2) / np.sum(g ** 2))
    # SSIM map averaged over the masked window centres
    _, smap = structural_similarity(ref[0], np.abs(recon[0]), data_range=ref.max(), full=True)
    inner = mask.copy()
    inner[:3], inner[-3:], inner[:, :3], inner[:, -3:] = False, False, False, False
    assert metrics.ssim(recon[0], ref[0], mask=mask, data_range=ref.max()) == pytest.approx(
        smap[inner].mean(), rel=1e-10)


def test_rss():
    rng = np.random.default_rng(2)
    coils = rng.standard_normal((2, 4, 8, 6)) + 1j * rng.standard_normal((2, 4, 8, 6))
    out = metrics.rss(coils)
    assert out.shape == (2, 8, 6)
    np.testing.assert_allclose(out.numpy(), np.sqrt(np.sum(np.abs(coils) ** 2, axis=1)))
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coils, axes=(-2, -1)), norm="ortho"),
                        axes=(-2, -1))
    np.testing.assert_allclose(metrics.rss(k, kspace=True).numpy(), out.numpy(), atol=1e-12)
    np.testing.assert_allclose(metrics.rss(np.moveaxis(coils, 1, -1), coil_axis=-1).numpy(),
                               out.numpy())


@pytest.mark.parametrize("call", [
    lambda: metrics.psnr(np.ones((4, 8, 8)), np.ones((4, 8, 9))),
    lambda: metrics.psnr(np.ones((8, 8)), np.zeros((8, 8))),
    lambda: metrics.ssim(np.ones((8, 8)), np.full((8, 8), np.nan)),
    lambda: metrics.ssim(np.ones((5, 5)), np.ones((5, 5))),
    lambda: metrics.nmse(np.ones((8, 8)), np.ones((8, 8)), mask=np.zeros((8, 8), dtype=bool)),
    lambda: metrics.psnr(np.ones((8, 8)), np.ones((8, 8)), crop=(9, 4)),
    lambda: metrics.psnr(np.ones(8), np.ones(8)),
    lambda: metrics.rss(np.ones((2, 3)), coil_axis=4),
])
def test_bad_input(call):
    with pytest.raises(InputError):
        call()
