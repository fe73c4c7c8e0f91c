"""Benchmark: convex two-layer ReLU programs on data matrices.

In one run, on the same seeded problems: cvxpy+SCS, cvxpy+CLARABEL, pyscnn (gated:
R-FISTA; ReLU: augmented Lagrangian) and convexrecon's solvers (gated: ADMM; cone
form: the primal-dual interior-point method that ``solve`` picks, with ADMM as an
informational row). It prints, per method, the time to reach a relative objective
gap <= 1e-4 (and, for the ReLU form, constraint violation <= 1e-6 relative to
max|y|), and the ratios.

Data: X is seeded standard Gaussian (n, d); y = relu(X W1) w2 + 0.1 * noise with a
planted 8-neuron network (W1 ~ N(0, 1/d), w2 ~ N(0, 1)). Patterns from seeded
Gaussian gates (duplicates and all-zero dropped); every method gets the same
patterns. p* comes from CLARABEL at tolerance 1e-10.

Peers reach the accuracy by a ladder of their own tolerances: the time reported is
that of the loosest setting that reaches it (the fairest for them). cvxpy times are
given three ways: with canonicalisation (wall), without it (the solver call: the
solver's own setup, e.g. SCS's factorisation of its KKT matrix, plus its iterations;
cvxpy's ``problem._solve_time``), and the iterations alone
(``solver_stats.solve_time``, which for SCS leaves out its setup). Ratios use the
solver call, since convexrecon's time includes its own factorisation too; the ratio
against the iterations alone is printed beside it. convexrecon's solvers stop on
their own certificate, not on p*: the relative duality gap (tol 1e-4) and, for the
cone form, the violation (<= 1e-6) at the returned point, which the interior-point
method makes exactly feasible by a shift along each block's gate. Parameters are set
by fixed rules (ADMM: penalty from the least-squares fit plus magnitude balancing;
interior point: Mehrotra's centring rule), not per instance. Their time includes the factorisation (after one
untimed warm-up on a tiny problem). Informational rows (not in the ratio): the
interior-point method stopping on the KKT triple as well, and ADMM on the cone form
(gap + violation stop, one run).

Usage: python benchmarks/convex_relu.py [--quick] [--repeats R] [--threads T]
Ends with one line ``RESULT gated_speedup=... relu_speedup=... rel_gap=...
conv_seconds=... conv_gap=...``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convexrecon.perf import retain_freed_memory  # noqa: E402
from convexrecon.programs.relu import GatedReLU, TwoLayerReLU  # noqa: E402
from convexrecon.solvers.admm_relu import ADMMGated, ADMMReLU  # noqa: E402
from convexrecon.solvers.columns import Columnwise  # noqa: E402
from convexrecon.solvers.ipm_relu import IPMReLU  # noqa: E402

TARGET = 1e-4
FEAS = 1e-6


def make_data(n: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    W1 = torch.randn(d, 8, generator=g, dtype=torch.float64) / math.sqrt(d)
    w2 = torch.randn(8, generator=g, dtype=torch.float64)
    y = torch.relu(X @ W1) @ w2 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return X, y


def rel_gap(prog, x, p_star: float) -> float:
    return (prog.value(x) - p_star) / abs(p_star)


def feasible(prog, x) -> bool:
    return not isinstance(prog, TwoLayerReLU) or prog.violation(x) <= FEAS


def cvx_run(prog, solver: str, eps: float):
    problem, to_x = prog.to_cvxpy(max_size=10 ** 8)
    opts = ({"tol_gap_abs": eps, "tol_gap_rel": eps, "tol_feas": eps, "max_iter": 500}
            if solver == "CLARABEL" else {"eps_abs": eps, "eps_rel": eps, "max_iters": 200_000})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            problem.solve(solver=solver, **opts)
        except Exception as exc:  # solver failure: report, do not crash the run
            return None, (time.perf_counter() - t0, math.nan, math.nan), str(exc)[:60]
    wall = time.perf_counter() - t0
    call = getattr(problem, "_solve_time", None)  # cvxpy's timer around the solver call
    stats = problem.solver_stats
    iters = float(stats.solve_time) if stats and stats.solve_time else math.nan
    times = (wall, float(call) if call else math.nan, iters)
    try:
        x = to_x()
    except Exception:
        return None, times, str(problem.status)
    return x, times, str(problem.status)


def ladder_cvx(prog, solver: str, p_star: float, eps_list):
    """Loosest eps reaching the target; returns a row dict."""
    for eps in eps_list:
        x, (wall, call, iters), status = cvx_run(prog, solver, eps)
        if x is None:
            continue
        gap = rel_gap(prog, x, p_star)
        if abs(gap) <= TARGET and feasible(prog, x):
            return dict(method=f"cvxpy+{solver}", setting=f"eps={eps:g}", wall=wall,
                        solve=call, iters=iters, gap=gap, ok=True,
                        rerun=lambda eps=eps: cvx_run(prog, solver, eps)[1])
    return _failed(f"cvxpy+{solver}", "not reached")


def _failed(method: str, setting: str) -> dict:
    return dict(method=method, setting=setting, wall=math.nan, solve=math.nan,
                iters=math.nan, gap=math.nan, ok=False)


def scnn_run(prog, tol: float):
    """pyscnn on the same patterns; its objective is ours divided by n (lam = beta/n)."""
    from scnn.metrics import Metrics
    from scnn.models import ConvexGatedReLU, ConvexReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import AL, RFISTA

    data = prog.data
    X, y = data.X.numpy(), data.Y.numpy()
    G = data.patterns.gates.numpy()
    gated = isinstance(prog, GatedReLU)
    model = ConvexGatedReLU(G) if gated else ConvexReLU(G)
    solver = RFISTA(model, max_iters=20000, tol=tol) if gated else \
        AL(model, max_primal_iters=20000, max_dual_iters=20000, tol=tol, constraint_tol=FEAS)
    metrics = Metrics(metric_freq=10 ** 6, objective=False, grad_norm=False, time=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = optimize_model(model, solver, metrics, X, y,
                                  regularizer=NeuronGL1(data.beta / data.n),
                                  unitize_data=False, dtype="float64", return_convex=True)
    wall = time.perf_counter() - t0
    # Evaluate with the returned model's own gates (pyscnn may reorder/filter them).
    Gm = np.asarray(model.G)
    E = 2.0 * (X @ Gm > 0) - 1.0
    pred = np.asarray(model(X)).reshape(y.shape)
    blocks = [np.asarray(p) for p in model.parameters]  # each (c, p, d)
    pen = sum(np.linalg.norm(b, axis=-1).sum() for b in blocks)
    value = 0.5 * float(((pred - y) ** 2).sum()) + data.beta * float(pen)
    viol = 0.0
    for b in blocks if not gated else []:
        slack = E * (X @ b[0].T)  # (n, p)
        viol = max(viol, float(np.clip(-slack, 0, None).max()))
    return value, viol / float(np.abs(y).max()), wall


def ladder_scnn(prog, p_star: float, tols):
    name = "pyscnn " + ("R-FISTA" if isinstance(prog, GatedReLU) else "AL")
    try:
        import scnn  # noqa: F401
    except Exception:
        return _failed(name, "not installed")
    for tol in tols:
        try:
            value, viol, wall = scnn_run(prog, tol)
        except Exception as exc:
            return _failed(name, f"failed: {str(exc)[:40]}")
        gap = (value - p_star) / abs(p_star)
        if abs(gap) <= TARGET and viol <= FEAS:
            return dict(method=name, setting=f"tol={tol:g}", wall=wall, solve=wall, iters=wall,
                        gap=gap, ok=True)
    return _failed(name, "not reached")


def ours(prog, p_star: float, repeats: int, cls: type, **opts):
    """Time construction (factorisation) + run, median of ``repeats`` after one
    untimed warm-up on a tiny problem (first-call allocations and lazy imports)."""
    Xw, yw = make_data(40, 4, 1)  # n < P d: the same (Woodbury) code path
    cls(type(prog)(Xw, yw, n_patterns=20, beta=1e-2, seed=0), tol=TARGET, max_iter=50).run()
    max_iter = 200 if cls in (IPMReLU, Columnwise) else 20000
    out = {}

    def once():
        t0 = time.perf_counter()
        out["res"] = cls(prog, tol=TARGET, max_iter=max_iter, **opts).run()
        t = time.perf_counter() - t0
        return t, t, t

    times = [once()[0] for _ in range(repeats)]
    res = out["res"]
    gap = rel_gap(prog, res.x, p_star)
    ok = abs(gap) <= TARGET and feasible(prog, res.x) and res.converged
    t = statistics.median(times)
    name = {IPMReLU: "convexrecon IPM", Columnwise: "convexrecon IPM/column"}.get(
        cls, "convexrecon ADMM") + "".join(f" {k}={v}" for k, v in opts.items())
    evals = getattr(res.state, "n_evals", None)
    setting = f"it={res.state.it}" + (f" ev={evals}" if evals else "") + \
        f" cert={res.state.certificate:.1e}"
    return dict(method=name[:22], setting=setting, wall=t, solve=t, iters=t, gap=gap, ok=ok,
                rerun=once, walls=times, solves=list(times), iterss=list(times))


def retime(rows, repeats: int, limit: float = 5.0) -> None:
    """Re-time ours and every successful peer whose run is under ``limit`` seconds,
    round-robin (so that a change of machine load hits them alike), ``repeats``
    more times each; rows get the medians of all their runs. Short runs on this
    shared machine vary by +-30% from one run to the next."""
    keys = ("wall", "solve", "iters")
    timed = [r for r in rows if r["ok"] and r.get("rerun") and r["solve"] < limit]
    for r in timed:
        for k in keys:
            r.setdefault(k + "s", [r[k]])
    for _ in range(repeats):
        for r in timed:
            for k, t in zip(keys, r["rerun"]()):
                r[k + "s"].append(t)
    for r in timed:
        for k in keys:
            r[k] = statistics.median(r[k + "s"])
        r["setting"] += f" n={len(r['solves'])}"


def run_case(form: str, n: int, d: int, P: int, beta: float, seed: int, repeats: int):
    X, y = make_data(n, d, seed)
    cls = GatedReLU if form == "gated" else TwoLayerReLU
    prog = cls(X, y, n_patterns=P, beta=beta, seed=seed)
    ref, _, status = cvx_run(prog, "CLARABEL", 1e-10)
    p_star = prog.value(ref)
    rows = [ours(prog, p_star, repeats, ADMMGated if form == "gated" else IPMReLU)]
    ladder = [1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 1e-7, 1e-8]  # half decades: fair to the peers
    rows.append(ladder_cvx(prog, "CLARABEL", p_star, ladder))
    rows.append(ladder_cvx(prog, "SCS", p_star, ladder[:5]))
    rows.append(ladder_scnn(prog, p_star, [1e-6, 1e-8, 1e-10] if form == "gated" else [1e-6]))
    retime(rows, repeats)
    extras = []
    if form == "relu":  # informational rows, not in the ratio
        extras.append(ours(prog, p_star, repeats, IPMReLU, stop="kkt"))
        extras.append(ours(prog, p_star, 1, ADMMReLU, stop="gap"))
    print(f"\n== {form}: n={n} d={d} P={prog.D.shape[1]} beta={beta:g} seed={seed} "
          f"p*={p_star:.10g} (CLARABEL 1e-10, {status})")
    speedup = print_table(rows, extras)
    print("pyscnn mapping: its objective is ||.||^2/(2n) + lam sum ||W_i||, so lam = beta/n; "
          "unitize_data=False, no bias, same gates: the same program up to the factor n.")
    return speedup, rows[0]["gap"]


def print_table(rows, extras) -> float:
    """Print ours (``rows[0]``), the peers and the informational rows; return the
    speedup against the fastest peer's solver time."""
    ours_t = rows[0]["wall"] if rows[0]["ok"] else math.nan
    peers = [r["solve"] for r in rows[1:] if r["ok"]]
    print(f"{'method':22s} {'setting':26s} {'wall(s)':>9s} {'solver(s)':>9s} {'iters(s)':>9s} "
          f"{'rel gap':>10s} ok  ratio (iters)")
    for r, info in [(r, False) for r in rows] + [(r, True) for r in extras]:
        row = (f"{r['method']:22s} {r['setting']:26s} {r['wall']:9.3f} {r['solve']:9.3f} "
               f"{r['iters']:9.3f} {r['gap']:10.2e} {'y' if r['ok'] else 'n'}  ")
        print(row + ("(information, not in the ratio)" if info else
                     f"{r['solve'] / ours_t:6.1f}x ({r['iters'] / ours_t:.1f}x)"))
    print("wall: with cvxpy's canonicalisation; solver: the solver call (its setup + "
          "iterations; the ratio's basis); iters: the solver's iterations alone.")
    return min(peers) / ours_t if peers else math.nan


def two_output_case(n: int = 500, d: int = 50, P: int = 50) -> None:
    """The cone form with two output columns (say real and imaginary parts), which
    ``solve`` gives to the interior-point method one column at a time
    (``Columnwise``), against CLARABEL and ADMM (what it used before); one run each."""
    X, y = make_data(n, d, 0)
    g = torch.Generator().manual_seed(1)
    W1 = torch.randn(d, 8, generator=g, dtype=torch.float64) / math.sqrt(d)
    w2 = torch.randn(8, generator=g, dtype=torch.float64)
    y2 = torch.relu(X @ W1) @ w2 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    prog = TwoLayerReLU(X, torch.stack([y, y2], 1), n_patterns=P, beta=1e-3, seed=0)
    ref, _, status = cvx_run(prog, "CLARABEL", 1e-10)
    p_star = prog.value(ref)
    rows = [ours(prog, p_star, 1, Columnwise),
            ladder_cvx(prog, "CLARABEL", p_star, [3e-5, 1e-5, 1e-6])]
    print(f"\n== relu, two output columns: n={n} d={d} P={prog.D.shape[1]} beta=0.001 "
          f"p*={p_star:.10g} (CLARABEL 1e-10, {status})")
    print_table(rows, [ours(prog, p_star, 1, ADMMReLU, stop="gap")])


def size_sweep() -> None:
    """Where cvxpy stops being usable (gated form), and how the cone form's
    interior-point method scales; d=50, P=50, beta=1e-3, growing n."""
    print("\n== size sweep (gated, d=50, P=50, beta=1e-3): CLARABEL eps=1e-6 vs ADMM")
    for n in (500, 2000, 8000):
        X, y = make_data(n, 50, 0)
        prog = GatedReLU(X, y, n_patterns=50, beta=1e-3, seed=0)
        t0 = time.perf_counter()
        res = ADMMGated(prog, tol=TARGET, max_iter=20000).run()
        t_ours = time.perf_counter() - t0
        if n <= 2000:
            x, (wall, call, iters), status = cvx_run(prog, "CLARABEL", 1e-6)
            cvx = f"CLARABEL wall {wall:.2f}s solver {call:.2f}s iters {iters:.2f}s ({status})"
        else:
            cvx = "CLARABEL skipped (> 2000 rows: canonicalisation + KKT too slow on 2 cores)"
        print(f"n={n:6d}: ADMM {t_ours:.2f}s it={res.state.it} cert={res.state.certificate:.1e}; {cvx}")
    print("\n== size sweep (cone form, d=50, P=50, beta=1e-3): interior point, own certificate")
    for n in (500, 1000, 2000):
        X, y = make_data(n, 50, 0)
        prog = TwoLayerReLU(X, y, n_patterns=50, beta=1e-3, seed=0)
        t0 = time.perf_counter()
        res = IPMReLU(prog, tol=TARGET, max_iter=200).run()
        print(f"n={n:6d}: IPM {time.perf_counter() - t0:.2f}s it={res.state.it} "
              f"cert={res.state.certificate:.1e} violation={res.state.violation:.1e} "
              f"converged={res.converged}")


def conv_cases(quick: bool) -> tuple[float, float]:
    path = Path(__file__).with_name("convex_relu_conv.py")
    if not path.exists():
        print("\n== conv cases: benchmarks/convex_relu_conv.py missing")
        return math.nan, math.nan
    import importlib.util
    spec = importlib.util.spec_from_file_location("convex_relu_conv", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.run_conv_cases(quick=quick)
    print("\n== conv cases (benchmarks/convex_relu_conv.py)")
    for row in out.get("rows", []):
        print("  ".join(str(c) for c in row))
    return float(out.get("conv_seconds", math.nan)), float(out.get("conv_gap", math.nan))


def main() -> None:
    ap = argparse.ArgumentParser(description="convex two-layer ReLU benchmark")
    ap.add_argument("--quick", action="store_true", help="smaller case, one repeat (< 5 min)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-conv", action="store_true", help="skip the convolutional cases")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    retain_freed_memory()  # the same for every method: see convexrecon.perf
    repeats = args.repeats or (1 if args.quick else 3)
    n, d, P = (200, 20, 20) if args.quick else (500, 50, 50)
    print(f"convex_relu benchmark: quick={args.quick} threads={args.threads} repeats={repeats} "
          f"torch {torch.__version__}")
    g_speed, g_gap = run_case("gated", n, d, P, 1e-3, 0, repeats)
    r_speed, r_gap = run_case("relu", n, d, P, 1e-3, 0, repeats)
    if not args.quick:
        two_output_case()
        size_sweep()
    conv_s, conv_g = (math.nan, math.nan) if args.no_conv else conv_cases(args.quick)
    gap = max(abs(g_gap), abs(r_gap))
    print(f"RESULT gated_speedup={g_speed:.2f} relu_speedup={r_speed:.2f} rel_gap={gap:.2e} "
          f"conv_seconds={conv_s:.2f} conv_gap={conv_g:.2e}")


if __name__ == "__main__":
    main()
