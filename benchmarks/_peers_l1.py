"""L1-wavelet side by side with sigpy and BART on the named Cartesian problems.

Used by ``benchmarks/quality.py --peers``. Every method gets the same scaled data
``y`` and maps ``maps / op_scale`` (``lambda_max(A.N) = 1``; BART with ``-w 1`` so it
does not rescale), 100 iterations, and its lambda chosen by PSNR on a slice of the
``train`` split, never on the test slices. ``phantom32-cartesian-1d-4x`` is one scan
with no train split: its lambdas come from the train split of
``brain-sim-cartesian-1d-4x`` (the same 1-D 4x sampling, the same scaling). The
oracle (best lambda on the test slices themselves) is printed beside, for reference
only.

Methods:

- ``ours db4``: FISTA on ``L1WaveletProgram`` (orthogonal periodized db4, fixed grid);
- ``ours db4 + shifts``: the same with cycle spinning (``cycle_spin``);
- ``ours db2 (+ shifts)``: BART's wavelet (Daubechies with 4 taps, ``dau2``), periodized;
- ``sigpy``: ``L1WaveletRecon`` (db4, zero padding, ``alpha = 1/1.01``);
- ``bart``: ``bart pics -l1`` (``dau2``, symmetric extension, random shifts) and
  ``bart -n`` (no random shifts).

Attribution of the phantom gap (not in the default table; select with ``--only``):

- ``ours db2 + shifts (ISTA)``: the default with ISTA instead of FISTA (momentum);
- ``ours db2 + shifts (2 levels)``: the default with 2 wavelet levels instead of
  :func:`~convexrecon.recon.wavelet_levels` (4 on these sizes);
- ``diag db2 symmetric + shifts (2 levels)``: a *diagnostic only*, not a convexrecon
  solver: FISTA whose prox thresholds pywt's ``wavedec2`` with symmetric extension
  (BART's boundary). That transform is redundant, not orthogonal, so its "prox" is
  not the exact prox of any ``lam ||W x||_1``.
- ``ours db2 + shifts held K``: FISTA that keeps each random shift for ``K``
  iterations and restarts its momentum at every change (``K = 1`` restarts at every
  iteration, which is ISTA with fresh shifts).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from convexrecon import metrics, problems
from convexrecon.io import read_cfl, write_cfl
from convexrecon.operators.sense import Sense
from convexrecon.operators.wavelet import Wavelet
from convexrecon.programs.l1 import L1WaveletProgram
from convexrecon.recon import wavelet_levels
from convexrecon.solvers.fista import FISTA, ISTA

ITERS = 100
LIPSCHITZ = 1.01
PROBLEMS = ("brain-sim-cartesian-1d-4x", "phantom32-cartesian-1d-4x", "brain-sim-poisson-4x")
TRAIN_FROM = {"phantom32-cartesian-1d-4x": "brain-sim-cartesian-1d-4x"}

Method = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def _ours(wavelet: str, shifts: bool, *, levels: int | None = None, ista: bool = False,
          transform: type = Wavelet) -> Method:
    def run(y, maps, mask, lam):
        op = Sense(maps, mask, dtype=y.dtype)
        W = transform(op.ishape, wavelet=wavelet, dtype=op.dtype,
                      levels=wavelet_levels(tuple(op.ishape), wavelet, levels))
        prog = L1WaveletProgram(op, y, lam, W, lipschitz=LIPSCHITZ)
        solver = ISTA if ista else FISTA
        return solver(prog, max_iter=ITERS, check_every=0,
                      cycle_spin=0 if shifts else None).run().x
    return run


class _SymmetricDiag(Wavelet):
    """Diagnostic only: the soft threshold of pywt's symmetric-extension ``wavedec2``
    (BART's boundary) in place of the periodized orthogonal one."""

    def shrink(self, x, t, *, shift=None):
        import pywt

        shift = tuple(int(v) for v in shift) if shift is not None and any(shift) else None
        xs = torch.roll(x, shift, self.axes) if shift else x
        a = xs.numpy()

        def soft(c):
            m = np.abs(c)
            return c * np.maximum(m - t, 0.0) / np.maximum(m, 1e-30)

        cs = pywt.wavedec2(a, self._wv, mode="symmetric", level=self.levels)
        cs = [soft(cs[0])] + [tuple(soft(d) for d in band) for band in cs[1:]]
        out = pywt.waverec2(cs, self._wv, mode="symmetric")[..., : a.shape[-2], : a.shape[-1]]
        out = torch.from_numpy(np.ascontiguousarray(out)).to(x.dtype)
        out = torch.roll(out, tuple(-v for v in shift), self.axes) if shift else out
        return out, torch.zeros(x.shape, dtype=x.real.dtype)  # no L1 value (check_every=0)


def _sigpy(y, maps, mask, lam):
    from sigpy.mri.app import L1WaveletRecon

    app = L1WaveletRecon(y.numpy(), maps.numpy(), lam, weights=mask.numpy().astype(np.float32),
                         wave_name="db4", max_iter=ITERS, alpha=1.0 / LIPSCHITZ, show_pbar=False)
    return torch.from_numpy(np.asarray(app.run()))


def _bart(no_shift: bool) -> Method:
    def run(y, maps, mask, lam):
        folder = Path(tempfile.mkdtemp(prefix="convexrecon-peers-"))
        try:
            to_bart = lambda t: t.permute(1, 2, 0)[:, :, None, :]  # noqa: E731  (C,H,W)->(X,Y,Z,C)
            write_cfl(folder / "k", to_bart(y))
            write_cfl(folder / "s", to_bart(maps))
            cmd = [shutil.which("bart"), "pics", "-l1", "-r", f"{lam:g}", "-i", str(ITERS), "-w", "1"]
            cmd += ["-n"] if no_shift else []
            cmd += [str(folder / "k"), str(folder / "s"), str(folder / "x")]
            subprocess.run(cmd, check=True, capture_output=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
            return read_cfl(folder / "x").reshape(y.shape[-2:])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return run


def _held(hold: int) -> Method:
    """FISTA on the db2 default whose random shift is held ``hold`` iterations, with
    the momentum restarted whenever the shift changes."""
    def run(y, maps, mask, lam):
        op = Sense(maps, mask, dtype=y.dtype)
        W = Wavelet(op.ishape, wavelet="db2", dtype=op.dtype,
                    levels=wavelet_levels(tuple(op.ishape), "db2", None))
        prog = L1WaveletProgram(op, y, lam, W, lipschitz=LIPSCHITZ)
        axes, period = prog.reg.shift_period()
        rng = torch.Generator().manual_seed(0)
        step = 1.0 / LIPSCHITZ
        x = z = torch.zeros(op.ishape, dtype=op.dtype)
        t = 1.0
        for it in range(ITERS):
            if it % hold == 0:
                shift = torch.randint(0, period, (len(axes),), generator=rng).tolist()
                z, t = x, 1.0  # a new shift: restart the momentum
            x_new = prog.reg.prox_shifted(z - step * prog.smooth.grad(z), step, shift)
            t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
            z = x_new + ((t - 1) / t_new) * (x_new - x)
            x, t = x_new, t_new
        return x
    return run


ATTRIBUTION: dict[str, Method] = {
    **{f"ours db2 + shifts held {k}": _held(k) for k in (1, 5, 10, 20)},
    "ours db2 + shifts (ISTA)": _ours("db2", True, ista=True),
    "ours db2 + shifts (2 levels)": _ours("db2", True, levels=2),
    "diag db2 symmetric + shifts (2 levels)": _ours("db2", True, levels=2, transform=_SymmetricDiag),
}


def methods(with_bart: bool) -> dict[str, Method]:
    out: dict[str, Method] = {
        "ours db4": _ours("db4", False), "ours db4 + shifts": _ours("db4", True),
        "ours db2": _ours("db2", False), "ours db2 + shifts": _ours("db2", True),
        "sigpy db4": _sigpy,
    }
    out.update(ATTRIBUTION)
    if with_bart:
        out["bart pics -l1"] = _bart(False)
        out["bart pics -l1 -n"] = _bart(True)
    return out


def _slices(p):
    maps = p.maps / p.op_scale
    for i in range(p.kspace.shape[0]):
        yield p.kspace[i], maps if maps.ndim == 3 else maps[i], p.mask[i], p.ground_truth[i]


def _scores(fn: Method, p, lam: float) -> tuple[float, float]:
    ps, ss = [], []
    for y, maps, mask, ref in _slices(p):
        x = fn(y, maps, mask, lam).to(ref.dtype)
        ps.append(metrics.psnr(x, ref))
        ss.append(metrics.ssim(x, ref))
    return float(np.mean(ps)), float(np.mean(ss))


def compare(*, grid, n_test: int, with_bart: bool, oracle: bool = False, only=None,
            log=print) -> list[tuple]:
    """Rows ``(problem, method, lam_train, psnr, ssim, lam_oracle, psnr_oracle)``
    (the oracle columns are nan unless ``oracle``); ``only``: a subset of methods."""
    rows = []
    chosen: dict[tuple[str, str], float] = {}
    ms = {k: v for k, v in methods(with_bart).items()
          if (k in only if only is not None else k not in ATTRIBUTION)}
    for name in PROBLEMS:
        src = TRAIN_FROM.get(name, name)
        train = problems.load(src, split="train", n_slices=1, seed=1)
        test = problems.load(name, split="test", n_slices=min(n_test, _max_test(name)), seed=0)
        for mname, fn in ms.items():
            key = (src, mname)
            if key not in chosen:
                chosen[key] = max(grid, key=lambda lam: _scores(fn, train, lam)[0])
            lam = chosen[key]
            psnr, ssim = _scores(fn, test, lam)
            lam_o, psnr_o = float("nan"), float("nan")
            if oracle:
                table = {l_: _scores(fn, test, l_)[0] for l_ in grid}
                lam_o = max(table, key=table.get)
                psnr_o = table[lam_o]
            rows.append((name, mname, lam, psnr, ssim, lam_o, psnr_o))
            log(f"  {name} | {mname}: lam {lam:g} (train {src}) -> {psnr:.2f} dB, SSIM {ssim:.4f}"
                + (f"; oracle lam {lam_o:g} -> {psnr_o:.2f} dB" if oracle else ""))
    return rows


def _max_test(name: str) -> int:
    return 1 if name.startswith("phantom") else 1_000
