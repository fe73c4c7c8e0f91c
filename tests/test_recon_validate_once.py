"""Validate once: k-space entering a reconstruction is checked where it enters, then
passed on as checked data (no second pass of the input checks over it)."""

from __future__ import annotations

import sys

import pytest
import torch

from convexrecon import _checks, recon
from convexrecon.problems import load


@pytest.fixture()
def finite_checks(monkeypatch):
    """Every ``check_finite`` call, by the shape of the checked tensor."""
    calls: list[tuple[int, ...]] = []
    orig = _checks.check_finite

    def counting(x, name):
        calls.append(tuple(x.shape))
        return orig(x, name)

    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("convexrecon") and \
                getattr(mod, "check_finite", None) is orig:
            monkeypatch.setattr(mod, "check_finite", counting)
    return calls


def _cartesian():
    p = load("tiny-cartesian")
    return p.kspace, p.maps, p.mask


BUILDERS = {
    "l1_wavelet": lambda k, m, s: recon.l1_wavelet(k, m, s, max_iter=2),
    "sense": lambda k, m, s: recon.sense(k, m, s, mu=0.01, max_iter=2),
    "sense-auto": lambda k, m, s: recon.sense(k, m, s, max_iter=3),
    "tv": lambda k, m, s: recon.tv(k, m, s, max_iter=2),
    "zero_filled": lambda k, m, s: recon.zero_filled(k, m, s),
    "grappa": lambda k, m, s: recon.grappa(k, mask=s, maps=m, kernel=(3, 2)),
    "pocs": lambda k, m, s: recon.pocs(k, axis=-1, iters=2, maps=m),
    "homodyne": lambda k, m, s: recon.homodyne(k, axis=-1, maps=m),
    "choose_lambda": lambda k, m, s: recon.choose_lambda(k, m, s, grid=(1e-3, 1e-2), max_iter=2),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.filterwarnings("ignore::convexrecon.recon.GridEdgeWarning")
def test_kspace_and_maps_are_checked_once(name, finite_checks):
    k, maps, mask = _cartesian()
    if name in ("pocs", "homodyne"):  # partial Fourier: one contiguous band with the centre
        from convexrecon.operators.sense import Sense

        p = load("tiny-cartesian")
        k = Sense(maps)(p.ground_truth)
        k[..., : k.shape[-1] // 4] = 0
    assert maps.ndim == 3 and k.ndim == 4  # distinct shapes: the counts tell them apart
    finite_checks.clear()  # loading the problem checked its own arrays
    BUILDERS[name](k, maps, mask)
    assert finite_checks.count(tuple(k.shape)) == 1
    # the maps: once on entry, plus once by each encoding operator's own constructor
    # (one operator; choose_lambda adds one on the training sampling), never a
    # second copy of the same operator
    operators = {"grappa": 0, "pocs": 0, "homodyne": 0, "zero_filled": 0, "choose_lambda": 2}
    assert finite_checks.count(tuple(maps.shape)) == 1 + operators.get(name, 1)
