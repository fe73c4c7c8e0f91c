"""Defaults a user can trust: CG-SENSE's automatic ``mu`` and iteration count, and
``lam="auto"``'s grid extended down to a floor with a warning at an edge."""

from __future__ import annotations

import warnings

import pytest
import torch

from convexrecon import metrics, recon
from convexrecon.problems import load
from convexrecon.recon import lam as lam_mod
from convexrecon.recon._setup import prepare
from convexrecon.recon._solve import solve
from convexrecon.recon.sense_auto import SENSE_GRID


def _oracle(p, *, max_iter=50):
    """Best PSNR over (mu, iterations): the grid plus neighbours, every iteration."""
    scaled = prepare(p.kspace, p.maps, p.mask if p.mask is not None else p.traj)
    best = -float("inf")
    for mu in sorted(set(SENSE_GRID) | {1e-3, 3e-2}):
        scores = []

        def record(progress):
            scores.append(metrics.psnr(scaled.unscale(progress.x), p.ground_truth))

        with torch.no_grad():
            solve("sense", scaled.op, scaled.y, mu, max_iter=max_iter, tol=1e-6, callback=record)
        best = max(best, max(scores))
    return best


@pytest.mark.parametrize("name", ["tiny-cartesian", "phantom32-cartesian-1d-4x", "tiny-radial"])
def test_sense_default_within_half_a_db_of_the_oracle(name):
    p = load(name)
    sampling = p.mask if p.mask is not None else p.traj
    auto = metrics.psnr(recon.sense(p.kspace, p.maps, sampling), p.ground_truth)
    assert auto >= _oracle(p) - 0.5


@pytest.mark.slow
def test_sense_default_on_brain_sim_poisson_beats_zero_filled():
    """The issue's case: mu=0.01 run to convergence scored 27.0 dB, below zero-filled."""
    p = load("brain-sim-poisson-4x")
    auto = metrics.psnr(recon.sense(p.kspace, p.maps, p.mask), p.ground_truth)
    assert auto >= _oracle(p) - 0.5
    assert auto > metrics.psnr(recon.zero_filled(p.kspace, p.maps, p.mask), p.ground_truth)


def test_sense_choice_stops_early_on_noise_and_runs_on_without():
    """Noisy data: the held-out error turns up after a few iterations, and the default
    stops there; noise-free data: it still falls, and the default runs to ``tol``."""
    noisy = load("tiny-cartesian")
    clean = load("phantom32-cartesian-1d-4x")
    assert noisy.noise_std and not clean.noise_std
    a = recon.choose_sense(noisy.kspace, noisy.maps, noisy.mask, max_iter=50)
    b = recon.choose_sense(clean.kspace, clean.maps, clean.mask, max_iter=50)
    assert a.split == b.split == "coils" and a.folds == 3  # 3 coils: each held out
    assert a.iters < 25 and b.iters == 50
    curve = a.curves[a.grid.index(a.mu)]
    assert curve[a.iters - 1] == min(min(c) for c in a.curves)
    # the default reconstruction is that choice, run on all data
    x = recon.sense(noisy.kspace, noisy.maps, noisy.mask)
    y = recon.sense(noisy.kspace, noisy.maps, noisy.mask, mu=a.mu, max_iter=a.iters)
    assert float((x - y).norm() / y.norm()) < 1e-6


def test_sense_choice_single_coil_holds_out_samples():
    p = load("tiny-cartesian")
    k, maps = p.kspace[:, :1], p.maps[..., :1, :, :]
    c = recon.choose_sense(k, maps, p.mask, max_iter=10)
    assert c.split == "samples" and c.folds == 1 and 1 <= c.iters <= 10 and c.mu in c.grid


def _clean():
    p = load("phantom32-cartesian-1d-4x")
    return p.kspace, p.maps, p.mask


def test_lambda_grid_extends_downward_while_the_smallest_wins(monkeypatch):
    k, maps, mask = _clean()
    monkeypatch.setitem(lam_mod.DEFAULT_GRIDS, "l1_wavelet", (1e-2, 3e-2, 1e-1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = recon.choose_lambda(k, maps, mask, max_iter=20)
    assert c.grid[0] < 1e-2 and c.lam < 1e-2  # noise-free: small weights predict better
    assert c.grid[0] >= recon.LAMBDA_FLOOR
    best = c.scores[c.grid.index(c.lam)]
    assert best == min(c.scores)
    edge = [w for w in caught if issubclass(w.category, recon.GridEdgeWarning)]
    if c.lam == c.grid[0]:  # reached the floor: warned, and it says so
        assert c.grid[0] == recon.LAMBDA_FLOOR and c.at_edge and "floor" in str(edge[0].message)
    else:  # stopped where a smaller weight scored worse: an interior choice, no warning
        assert c.scores[0] > best and not c.at_edge and not edge


def test_lambda_choice_at_an_edge_warns_and_a_given_grid_is_kept():
    k, maps, mask = _clean()
    with pytest.warns(recon.GridEdgeWarning, match="smallest weight tried"):
        c = recon.choose_lambda(k, maps, mask, grid=(1e-1, 3e-1), max_iter=10)
    assert c.grid == (1e-1, 3e-1) and c.lam == 1e-1 and c.at_edge
    p = load("tiny-cartesian")  # a two-weight grid: every choice is at an edge
    with pytest.warns(recon.GridEdgeWarning) as caught:
        c = recon.choose_lambda(p.kspace, p.maps, p.mask, grid=(1e-6, 3e-2), max_iter=10)
    side = "largest" if c.lam == 3e-2 else "smallest"
    assert c.at_edge and f"the {side} weight tried" in str(caught[0].message)


def test_choose_lambda_scores_the_transform_l1_wavelet_uses(monkeypatch):
    """``choose_lambda``'s defaults are ``l1_wavelet``'s (wavelet, levels, cycle spinning),
    so a weight chosen by hand is chosen for the reconstruction that will use it."""
    k, maps, mask = _clean()
    seen = []
    real = lam_mod.choose_on

    def spy(scaled, method, **kw):
        seen.append(kw["opts"])
        return real(scaled, method, **kw)

    monkeypatch.setattr(lam_mod, "choose_on", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", recon.GridEdgeWarning)
        recon.choose_lambda(k, maps, mask, grid=(1e-3, 1e-2), max_iter=2, seed=4)
        recon.l1_wavelet(k, maps, mask, lam="auto", max_iter=2, seed=4)
    assert len(seen) == 2 and seen[0] == seen[1]
    assert seen[0]["cycle_spin"] is not None
