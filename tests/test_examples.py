"""Smoke-run the examples at tiny size, checking what they print."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quickstart_tiny(tmp_path, capsys):
    out = tmp_path / "qs.png"
    _load("quickstart").main(["--problem", "tiny-cartesian", "--iters", "30", "--out", str(out)])
    text = capsys.readouterr().out
    psnr = {m.group(1).strip(): float(m.group(2))
            for m in re.finditer(r"^(.+?)\s+PSNR\s+([\d.]+) dB", text, flags=re.M)}
    assert set(psnr) == {"zero-filled", "CG-SENSE", "L1-wavelet (lam=0.01)"}
    assert psnr["L1-wavelet (lam=0.01)"] > psnr["zero-filled"]
    assert out.stat().st_size > 1000


def test_compose_and_verify_matches_cvxpy(capsys):
    _load("compose_and_verify").main(["--size", "8", "--coils", "2"])
    text = capsys.readouterr().out
    gap = float(re.search(r"relative objective gap: ([\d.e+-]+)", text).group(1))
    assert gap < 1e-5


def test_convex_relu_example(capsys):
    _load("convex_relu").main(["--n", "80", "--patterns", "10"])
    text = capsys.readouterr().out
    gap = float(re.search(r"relative objective gap: ([\d.e+-]+)", text).group(1))
    net_rel = float(re.search(r"relative to the convex optimum: ([\d.e+-]+)", text).group(1))
    assert gap < 1e-4
    assert net_rel < 1e-3
