"""Deep-equilibrium reconstruction: backward cost, memory, warm start, quality, stability.

One run, on simulated slices of the bundled MNI volume (``convexrecon.data``,
Cartesian Poisson disc 4x, 5% noise, a fresh mask per training sample and epoch;
the train / val / test slabs are disjoint):

1. **Training, IFT against SHINE.** The same DEQ (CG data-consistency map, residual
   CNN with identity weight ``--skip``, Broyden forward) from the same initialisation
   and seed, trained with the IFT backward (cap 200 iterations, the forward's relative
   tolerance 1e-3) and with SHINE; SHINE trains until it is within 0.2 dB of IFT's
   best validation PSNR or has used IFT's time to that best (at most 3x the epochs).
   Wall-clock excludes validation.
   ``shine_train_time_vs_ift``: SHINE's time to reach IFT's best validation PSNR
   within 0.2 dB, over IFT's time to reach that best (``inf`` if never).
2. **Backward cost** on the IFT-trained weights, per batch: time of ``loss.backward()``
   with IFT, SHINE, SHINE-OPA, SHINE-refine and JFB; the forward's time beside it
   (SHINE-OPA's outer-problem-aware updates cost forward time); the SHINE modes'
   fallback rates and ``rho``; each gradient's cosine similarity to IFT's; IFT's final
   residual.
3. **Warm start**: a third run, trained through the warm-start training path; at
   every step the same batch is also solved cold (and from the point as stored, and,
   as evidence, one fixed draw per sample warm and cold) with the same weights, and
   the forward iterations are compared (``_deq_warm.py``).
4. **Memory**: peak memory of one training step in a fresh process per model
   (:func:`convexrecon.training.peak_memory`: RSS high-water mark above the baseline
   on CPU, and the bytes saved for backward), CG-DC DEQ (Broyden's ``U, V``
   allocated and held within the measured step) against MoDL-5 and MoDL-10, same
   denoiser and batch; glibc set to unmap freed blocks, so the peak follows the live
   tensors (``_deq_memory.py``; the full run adds glibc's default).
5. **Quality** on the test slab: PSNR / SSIM of the DEQ, MoDL-5, MoDL-10 and
   L1-wavelet (lambda chosen on the validation slices), with paired 95% intervals.
6. **Stability**: vanilla DEQ against spectral norm, Jacobian regularisation (two
   weights) and the ``rho`` hinge, same learning rate, initialisation and seeds; ``rho``
   at the validation fixed points after training; loss curves as PNG
   (``_deq_stability.py``).
7. **Radial generalisation**: DEQ and MoDL-5 trained on every-n-th radial spokes and
   tested on equiangular spokes, against L1-wavelet.
8. **Stack-of-stars**: a volume of consecutive test-slab slices, one equiangular
   in-plane trajectory for every partition and fully sampled kz, reconstructed by the
   radial models of 7 partition by partition (after the inverse FFT along kz), PSNR
   per partition with paired 95% intervals against MoDL-5 and L1-wavelet.

``--quick`` runs the same code at a small size (about 5 minutes on 2 cores). The
run ends with one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _deq_backward import BACKWARD_MODES, backward_cost  # noqa: E402
from _deq_memory import nmse, saved_bytes  # noqa: E402
from _timing import configure, table  # noqa: E402

from convexrecon.data import MaskSpec, SliceDataset, collate  # noqa: E402
from convexrecon.implicit import DEQ, build_deq  # noqa: E402
from convexrecon.metrics import psnr, ssim  # noqa: E402
from convexrecon.nets.unrolled import build_modl  # noqa: E402


# -- data -------------------------------------------------------------------------
def datasets(size: int, coils: int, n_train: int, n_val: int, n_test: int, seed: int, *,
             sampling: tuple[str, str] = ("poisson", "poisson")):
    """Train / val / test slices; training draws fresh masks and noise every epoch but
    no flips or crops (a flipped or cropped slice would make its warm start stale).
    ``sampling``: the kind of train/val and of test sampling (Poisson disc 4x, or a
    radial trajectory kind)."""
    def mk(split: str, s: int, kind: str) -> SliceDataset:
        where = {"mask": MaskSpec("poisson", 4.0)} if kind == "poisson" else {"trajectory": kind}
        return SliceDataset(split=split, size=size, coils=coils, noise_rel=0.05, seed=s,
                            augment=False, **where)

    train, val = mk("train", seed, sampling[0]), mk("val", seed + 1, sampling[0])
    test = mk("test", seed + 2, sampling[1])
    pick = lambda ds, n: [i * len(ds) // n for i in range(min(n, len(ds)))]  # noqa: E731
    return (train, pick(train, n_train)), (val, pick(val, n_val)), (test, pick(test, n_test))


def batches(split, batch_size: int, *, epoch: int = 0, shuffle_seed: int | None = None):
    ds, idx = split
    ds.set_epoch(epoch)
    order = list(idx)
    if shuffle_seed is not None:
        g = torch.Generator().manual_seed(shuffle_seed + epoch)
        order = [order[i] for i in torch.randperm(len(order), generator=g).tolist()]
    for s in range(0, len(order), batch_size):
        yield collate([ds[i] for i in order[s:s + batch_size]])


QUICK = dict(size=32, coils=4, n_train=12, n_val=4, n_test=6, epochs=5, lr=3e-3, batch=4, features=16,
             depth=4, max_iter=30, seeds=1, stab_epochs=1, l1_iters=30, backward_batches=1, mem_size=128,
             sos_partitions=6, skip=0.8)
# chosen on the validation slices (docs/BENCHMARKS.md): 4 epochs at lr 3e-3 take every
# learned model past L1-wavelet on validation within the CPU budget
FULL = dict(size=64, coils=8, n_train=64, n_val=8, n_test=25, epochs=4, lr=3e-3, batch=4, features=32,
            depth=5, max_iter=30, seeds=3, stab_epochs=4, l1_iters=100, backward_batches=4, mem_size=256,
            sos_partitions=16, skip=0.8)


def make_deq(P: dict[str, Any], *, seed: int = 0, **kw) -> DEQ:
    """The benchmark's DEQ (CG data consistency, Broyden forward, IFT backward unless
    ``kw`` says otherwise) for configuration ``P``, seeded."""
    torch.manual_seed(seed)
    opts = dict(denoiser="cnn", denoiser_options={"features": P["features"], "depth": P["depth"],
                                                  "skip": P["skip"]},
                dc="cg", cg_iter=10, solver="broyden", backward="ift", max_iter=P["max_iter"], tol=1e-3,
                backward_max_iter=200, backward_tol=1e-3, solver_options={"memory": P["max_iter"]})
    opts.update(kw)
    return build_deq(**opts)


# -- training ---------------------------------------------------------------------
def train(model: torch.nn.Module, data, val, *, epochs: int, lr: float, batch_size: int, seed: int,
          label: str = "", until: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """Adam on the NMSE (+ the DEQ's stabiliser terms); history per epoch (warm starts:
    ``_deq_warm.warm_vs_cold``, through the training path). ``until(row)``, checked
    after each epoch, ends training early."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    is_deq = isinstance(model, DEQ)
    hist: list[dict[str, float]] = []
    steps: list[float] = []
    clock = 0.0
    for epoch in range(epochs):
        model.train()
        iters, skipped, rhos, fallback = [], 0, [], []
        for batch in batches(data, batch_size, epoch=epoch, shuffle_seed=seed):
            A, y = batch.operator(), batch.kspace
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            x = model(y, A)
            loss = nmse(x, batch.target)
            if is_deq:
                info = model.last_info
                iters.append(float(info.forward.iterations.double().mean()))
                if info.any_diverged or not torch.isfinite(loss):
                    skipped += 1
                    clock += time.perf_counter() - t0
                    steps.append(float("nan"))
                    continue
                extra = model.extra_loss()
                loss = loss + extra
            loss.backward()
            opt.step()
            clock += time.perf_counter() - t0
            steps.append(float(loss.detach()))
            if is_deq and model.last_info.rho is not None:
                rhos.append(float(model.last_info.rho.max()))
            if is_deq and model.last_info.backward is not None:
                b = model.last_info.backward
                if b.rho is not None:
                    rhos.append(float(b.rho.max()))
                if b.fallback is not None:
                    fallback.append(b.fallback_rate)
        q = evaluate(model, val, batch_size)
        row = {"epoch": epoch, "time_s": clock, "val_psnr": q["psnr_mean"], "skipped": skipped}
        if iters:
            row["fwd_iters"] = statistics.mean(iters)
        if rhos:
            row["rho_max"] = max(rhos)
        if fallback:
            row["fallback"] = statistics.mean(fallback)
        hist.append(row)
        print(f"  [{label}] epoch {epoch}: " + " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"),
            flush=True)
        if until is not None and until(row):
            break
    return {"history": hist, "steps": steps}


@torch.no_grad()
def evaluate(model, split, batch_size: int) -> dict[str, Any]:
    model.eval()
    ps, ss = [], []
    for batch in batches(split, batch_size):
        x = model(batch.kspace, batch.operator())
        for i in range(x.shape[0]):
            ps.append(psnr(x[i], batch.target[i]))
            ss.append(ssim(x[i], batch.target[i]))
    model.train()
    return {"psnr": ps, "ssim": ss, "psnr_mean": statistics.mean(ps), "ssim_mean": statistics.mean(ss)}


def l1_wavelet_quality(split, lam: float, iters: int) -> dict[str, Any]:
    from convexrecon.recon import l1_wavelet

    ds, idx = split
    ds.set_epoch(0)
    ps, ss = [], []
    for i in idx:
        s = ds[i]
        where = s.mask if s.traj is None else s.traj
        x = l1_wavelet(s.kspace, s.maps, where, lam=lam, max_iter=iters) * s.op_scale
        ps.append(psnr(x, s.target))
        ss.append(ssim(x, s.target))
    return {"psnr": ps, "ssim": ss, "psnr_mean": statistics.mean(ps), "ssim_mean": statistics.mean(ss)}


def paired_ci(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its 95% t-interval."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b)]
    m = statistics.mean(d)
    if len(d) < 2:
        return m, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return m, m - half, m + half


def time_to(hist: list[dict], target: float) -> float:
    for row in hist:
        if row["val_psnr"] >= target:
            return row["time_s"]
    return float("inf")


# -- main -------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, about 5 minutes on 2 cores")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("out/deq"), help="figures folder")
    ap.add_argument("--skip", type=float, default=0.8, help="the denoiser's identity weight")
    ap.add_argument("--lr", type=float, default=None,
                    help="Adam learning rate of every model (default: the configuration's)")
    ap.add_argument("--skip-warm-memory", action="store_true",
                    help="skip sections 3 (warm start) and 4 (memory); their RESULT fields print nan")
    ap.add_argument("--radial-only", action="store_true",
                    help="run only sections 7 (radial) and 8 (stack-of-stars), as in the full run")
    ap.add_argument("--epochs", type=int, default=None,
                    help="training epochs of sections 1, 3, 5 and 7 (default: the configuration's)")
    args = ap.parse_args()
    print(configure(args.threads))
    P = dict(QUICK if args.quick else FULL)
    if args.lr is not None:
        P["lr"] = args.lr
    if args.epochs is not None:
        P["epochs"] = args.epochs
    # the denoiser's identity weight: R(x) = skip * x + N(x). With skip = 1 a fresh map
    # has rho ~ 0.985 (Broyden's B is then useless and SHINE always falls back); 0.8
    # starts near rho ~ 0.8, the regime where a fixed SHINE threshold of 1.8 fails.
    P["skip"] = args.skip
    print("config:", P)
    args.out.mkdir(parents=True, exist_ok=True)
    seed, lr = 0, P["lr"]
    data, val, test = datasets(P["size"], P["coils"], P["n_train"], P["n_val"], P["n_test"], seed)
    den = {"features": P["features"], "depth": P["depth"], "skip": P["skip"]}

    def deq(seed: int = 0, **kw) -> DEQ:
        return make_deq(P, seed=seed, **kw)

    def modl(k: int, seed: int = 0):
        torch.manual_seed(seed)
        return build_modl(iterations=k, denoiser="cnn", denoiser_options=den, cg_iter=10)

    t_start = time.perf_counter()
    E, B = P["epochs"], P["batch"]
    if args.radial_only:
        radial_sections(P, deq, modl, E=E, B=B, lr=lr, seed=seed)
        print(f"\ntotal {time.perf_counter() - t_start:.0f} s (sections 7 and 8 only, no RESULT line)")
        return
    print("\n1. training: IFT vs SHINE (Broyden forward, same init)")
    ift = deq()
    run_ift = train(ift, data, val, epochs=E, lr=lr, batch_size=B, seed=seed, label="ift")
    best = max(r["val_psnr"] for r in run_ift["history"])
    t_ift = time_to(run_ift["history"], best)
    # SHINE trains until it is within 0.2 dB of IFT's best or has used IFT's time to that
    # best (then the ratio is inf or above 1 either way), at most 3x IFT's epochs
    shine_model = deq(backward="shine")
    run_shine = train(shine_model, data, val, epochs=3 * E, lr=lr, batch_size=B, seed=seed, label="shine",
                      until=lambda row: row["val_psnr"] >= best - 0.2 or row["time_s"] >= t_ift)
    t_shine = time_to(run_shine["history"], best - 0.2)
    train_ratio = t_shine / t_ift
    shine_epochs = len(run_shine["history"])
    print(f"  IFT's best {best:.2f} dB after {t_ift:.1f} s; SHINE within 0.2 dB after {t_shine:.1f} s "
          f"({shine_epochs} epochs; fallback to JFB where rho >= 1)")

    print(f"  (section {time.perf_counter() - t_start:.0f} s)")
    print("\n2. backward cost on the IFT-trained weights")
    t_sec = time.perf_counter()
    bc = backward_cost(ift, batches(val, B), P["backward_batches"])
    rows = [[m, f"{bc['time'][m] * 1e3:.1f}", f"{bc['time']['ift'] / bc['time'][m]:.2f}",
             f"{bc['forward'][m] * 1e3:.1f}", f"{bc['cos'][m]:.3f}",
             f"{bc['fallback'][m]:.2f}" if m in bc["fallback"] else "-"] for m in BACKWARD_MODES]
    print(table(["backward", "ms/batch", "IFT/this", "forward ms", "cos vs IFT", "fallback"], rows))
    print(f"rho {bc['rho']:.3f}, IFT residual {bc['ift_residual']:.1e} "
          f"(SHINE paper: about 13x backward speed-up on CIFAR); shine-opa's extra cost is in its "
          f"forward (one map evaluation and VJP per Broyden iteration)")

    print(f"  (section {time.perf_counter() - t_sec:.0f} s)")
    if args.skip_warm_memory:  # sections 3 and 4 are measured by their own runs
        nan = float("nan")
        warm_model, last, warm_red, mem_ratio = None, {"fwd_iters": nan, "cold_iters": nan}, nan, nan
    else:
        print("\n3. warm start (the same batch also solved cold, plain-warm and, with one fixed draw "
              "per sample, warm and cold; same weights at every step; see _deq_warm.py)")
        t_sec = time.perf_counter()
        from _deq_warm import fixed_draws, warm_vs_cold

        warm_model = deq(solver="anderson", solver_options={"memory": 5}, backward="jfb", monitor_rho=True)
        run_warm = warm_vs_cold(warm_model, data, batches, fixed=fixed_draws(P["size"], P["coils"], seed),
                                epochs=E, lr=lr, batch_size=B, seed=seed)
        w = run_warm["history"][-1]
        last = {"fwd_iters": w["warm"], "cold_iters": w["cold"], "rho_max": w["rho_max"]}
        warm_red = 1.0 - w["warm"] / w["cold"]
        print(f"last epoch: fresh draws warm {w['warm']:.2f} (plain reuse {w['plain']:.2f}) vs cold {w['cold']:.2f} "
              f"iterations (reduction {warm_red:+.3f}, plain {1 - w['plain'] / w['cold']:+.3f}); one fixed draw "
              f"per sample: warm {w['fixed_warm']:.2f} vs cold {w['fixed_cold']:.2f} "
              f"({1 - w['fixed_warm'] / w['fixed_cold']:+.3f}); rho max {w['rho_max']:.3f}")
        d = run_warm["distances"]
        print(f"relative distance to the new fixed point (last epoch, first batch): A^H y {d['cold']:.3f}, "
              f"last point as stored {d['plain']:.3f}, moved into the new frame {d['framed']:.3f}")

        print(f"  (section {time.perf_counter() - t_sec:.0f} s)")
        t_sec = time.perf_counter()
        print(f"\n4. memory of one training step ({P['mem_size']}^2, batch {B}, same denoiser), fresh "
              "process per model (convexrecon.training.peak_memory)")
        import _deq_memory

        mem_cfg = dict(size=P["mem_size"], coils=P["coils"], batch=B, features=P["features"], depth=P["depth"],
                       skip=P["skip"], max_iter=P["max_iter"])
        # the live tensors ("fixed": within 0.5 MB between fresh processes, so one process per
        # model); glibc's default heap varies between processes: `_deq_memory.py --allocator both`
        repeats, allocs = 1, ("fixed",)
        mem = {}
        for alloc in allocs:
            mem[alloc] = {k: _deq_memory.measure(k, repeats=repeats, allocator=alloc, threads=args.threads,
                                                 **mem_cfg) for k in _deq_memory.KINDS}
            print(f"allocator {alloc}, median of {repeats} fresh process(es) per model:")
            print(table(*_deq_memory.table(mem[alloc])))
        mem_ratio = mem["fixed"]["deq-broyden-shine"]["median_mb"] / mem["fixed"]["modl-5"]["median_mb"]

        print(f"  (section {time.perf_counter() - t_sec:.0f} s)")
    sections_5_to_8(dict(P=P, args=args, data=data, val=val, test=test, B=B, E=E, lr=lr, seed=seed,
        deq=deq, modl=modl, ift=ift, shine_model=shine_model, warm_model=warm_model, bc=bc,
        train_ratio=train_ratio, shine_epochs=shine_epochs, t_ift=t_ift, t_shine=t_shine, best=best, t_start=t_start,
        last=last, warm_red=warm_red, mem_ratio=mem_ratio))


def sections_5_to_8(c: dict[str, Any]) -> None:
    """Quality (5), stability (6), radial (7), stack-of-stars (8) and the RESULT line;
    ``c`` holds main's configuration, data, model factories and earlier results
    (``warm_model`` None and NaN warm-start / memory figures with ``--skip-warm-memory``)."""
    (P, args, data, val, test, B, E, lr, seed, deq, modl, ift, shine_model, warm_model, bc, train_ratio,
     t_ift, t_shine, best, t_start, last, warm_red, mem_ratio) = (c[k] for k in (
        "P", "args", "data", "val", "test", "B", "E", "lr", "seed", "deq", "modl", "ift", "shine_model",
        "warm_model", "bc", "train_ratio", "t_ift", "t_shine", "best", "t_start", "last", "warm_red",
        "mem_ratio"))
    print("\n5. quality on the test slab")
    t_sec = time.perf_counter()
    m5 = modl(5)
    train(m5, data, val, epochs=E, lr=lr, batch_size=B, seed=seed, label="modl-5")
    m10 = modl(10)
    train(m10, data, val, epochs=E, lr=lr, batch_size=B, seed=seed, label="modl-10")
    lams = (0.003, 0.01, 0.03)
    val_l1 = {lam: l1_wavelet_quality(val, lam, P["l1_iters"])["psnr_mean"] for lam in lams}
    lam = max(val_l1, key=val_l1.get)
    q = {"deq (ift)": evaluate(ift, test, B),
         f"deq (shine, {c['shine_epochs']} epochs)": evaluate(shine_model, test, B)}
    if warm_model is not None:
        q["deq (jfb, warm-start training)"] = evaluate(warm_model, test, B)
    q.update({"modl-5": evaluate(m5, test, B), "modl-10": evaluate(m10, test, B),
              f"l1-wavelet (lam {lam})": l1_wavelet_quality(test, lam, P["l1_iters"])})
    print(f"  (quality section so far {time.perf_counter() - t_sec:.0f} s)")
    d5 = paired_ci(q["deq (ift)"]["psnr"], q["modl-5"]["psnr"])
    dl1 = paired_ci(q["deq (ift)"]["psnr"], q[f"l1-wavelet (lam {lam})"]["psnr"])
    print(f"DEQ - MoDL-5: {d5[0]:+.2f} dB [{d5[1]:+.2f}, {d5[2]:+.2f}]; DEQ - L1: {dl1[0]:+.2f} dB "
          f"[{dl1[1]:+.2f}, {dl1[2]:+.2f}] (paired 95%, n={len(q['modl-5']['psnr'])})")

    print("\n6. stability: vanilla vs spectral norm vs Jacobian regularisation vs the rho hinge "
          "(Anderson + JFB; rho measured on the validation fixed points after training)")
    t_sec = time.perf_counter()
    from _deq_stability import plot_curves, stability, table_rows

    st = stability(deq, train, evaluate, batches, data=data, val=val, test=test, seeds=P["seeds"],
                   epochs=P["stab_epochs"], lr=lr, batch_size=B)
    q.update(st["quality"])
    print(table(*table_rows(st["rows"])))
    png = plot_curves(st["curves"], args.out / "deq_stability.png")
    print(f"loss curves: {png}  (section {time.perf_counter() - t_sec:.0f} s)")
    print("\ntest-slab quality of every model (PSNR / SSIM of magnitudes)")
    print(table(["method", "PSNR dB", "SSIM"], [[k, f"{v['psnr_mean']:.2f}", f"{v['ssim_mean']:.4f}"] for k, v in q.items()]))

    radial_sections(P, deq, modl, E=E, B=B, lr=lr, seed=seed)

    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s")
    print(f"IFT train time to best {t_ift:.1f} s (best val PSNR {best:.2f} dB); SHINE to within 0.2 dB: {t_shine:.1f} s")
    print(f"warm start: {last['fwd_iters']:.1f} vs cold {last['cold_iters']:.1f} iterations in the last epoch "
          f"(rho max {last.get('rho_max', float('nan')):.3f})")
    print(f"RESULT shine_vs_ift_backward={bc['time']['shine'] / bc['time']['ift']:.3f} "
          f"shine_cosine={bc['cos']['shine']:.3f} shine_train_time_vs_ift={train_ratio:.3f} "
          f"memory_vs_modl5={mem_ratio:.3f} warmstart_iter_reduction={warm_red:.3f} "
          f"psnr_deq_minus_modl5_ci_low_db={d5[1]:.3f} psnr_deq_minus_l1_ci_low_db={dl1[1]:.3f}")


def radial_sections(P: dict, deq, modl, *, E: int, B: int, lr: float, seed: int) -> None:
    """Sections 7 (radial generalisation) and 8 (stack-of-stars); ``deq`` and ``modl``
    build freshly seeded models, so ``--radial-only`` reproduces the full run's figures."""
    print("\n7. radial generalisation: train on every-n-th spokes, test on equiangular spokes")
    t_sec = time.perf_counter()
    rdata, rval, rtest = datasets(P["size"], P["coils"], P["n_train"], P["n_val"], P["n_test"], seed,
                                  sampling=("every_nth", "equiangular"))
    deq_r, m5_r = deq(), modl(5)
    train(deq_r, rdata, rval, epochs=E, lr=lr, batch_size=B, seed=seed, label="radial deq")
    train(m5_r, rdata, rval, epochs=E, lr=lr, batch_size=B, seed=seed, label="radial modl-5")
    rlams = (0.0003, 0.001, 0.003, 0.01)
    rval_l1 = {lam_: l1_wavelet_quality(rval, lam_, P["l1_iters"])["psnr_mean"] for lam_ in rlams}
    rlam = max(rval_l1, key=rval_l1.get)
    rq = {"deq (ift)": evaluate(deq_r, rtest, B), "modl-5": evaluate(m5_r, rtest, B),
          f"l1-wavelet (lam {rlam})": l1_wavelet_quality(rtest, rlam, P["l1_iters"])}
    print(table(["method (equiangular test)", "PSNR dB", "SSIM"],
                [[k, f"{v['psnr_mean']:.2f}", f"{v['ssim_mean']:.4f}"] for k, v in rq.items()]))
    r5 = paired_ci(rq["deq (ift)"]["psnr"], rq["modl-5"]["psnr"])
    rl1 = paired_ci(rq["deq (ift)"]["psnr"], rq[f"l1-wavelet (lam {rlam})"]["psnr"])
    print(f"radial DEQ - MoDL-5: {r5[0]:+.2f} dB [{r5[1]:+.2f}, {r5[2]:+.2f}]; DEQ - L1: {rl1[0]:+.2f} dB "
          f"[{rl1[1]:+.2f}, {rl1[2]:+.2f}] (paired 95%, n={len(rq['modl-5']['psnr'])})  "
          f"(section {time.perf_counter() - t_sec:.0f} s)")
    stack_of_stars(deq_r, m5_r, rtest[0], rlam, P, seed)


def stack_of_stars(deq_r, m5_r, test_ds, lam: float, P: dict, seed: int) -> None:
    """Section 8: the radial models per partition of a stack-of-stars test volume."""
    from convexrecon.implicit.stack_of_stars import (partition_kspace, reconstruct_partitions,
                                                     simulate_stack_of_stars)
    from convexrecon.recon import l1_wavelet

    nz = P["sos_partitions"]
    print(f"\n8. stack-of-stars: {nz} consecutive test-slab partitions, one equiangular trajectory, "
          "fully sampled kz; the radial models of 7 per partition")
    t_sec = time.perf_counter()
    vol = simulate_stack_of_stars(test_ds, start=(len(test_ds) - nz) // 2, partitions=nz, seed=seed)
    B = P["batch"]
    recon = {"deq (ift)": reconstruct_partitions(deq_r, vol.kspace, vol.scaled_maps(), vol.traj, batch_size=B),
             "modl-5": reconstruct_partitions(m5_r, vol.kspace, vol.scaled_maps(), vol.traj, batch_size=B)}
    yz = partition_kspace(vol.kspace)
    recon[f"l1-wavelet (lam {lam})"] = torch.stack([
        l1_wavelet(yz[z], vol.maps[:, z], vol.traj, lam=lam, max_iter=P["l1_iters"]) * vol.op_scale
        for z in range(nz)])
    op3 = vol.operator()  # the 3-D StackOfStars operator: data consistency of each volume
    rows, per = [], {}
    for name, x in recon.items():
        per[name] = [psnr(x[z], vol.target[z]) for z in range(nz)]
        dc = float((op3(x) - vol.kspace).norm() / vol.kspace.norm())
        rows.append([name, f"{statistics.mean(per[name]):.2f}", f"{min(per[name]):.2f}",
                     f"{max(per[name]):.2f}", f"{dc:.3f}"])
    print(table(["method (stack-of-stars)", "PSNR dB mean", "min", "max", "||A x - y|| / ||y||"], rows))
    print("PSNR per partition (" + ", ".join(vol.labels) + "):")
    for name, v in per.items():
        print(f"  {name}: " + " ".join(f"{p:.2f}" for p in v))
    l1 = f"l1-wavelet (lam {lam})"
    s5 = paired_ci(per["deq (ift)"], per["modl-5"])
    sl1 = paired_ci(per["deq (ift)"], per[l1])
    print(f"stack-of-stars DEQ - MoDL-5: {s5[0]:+.2f} dB [{s5[1]:+.2f}, {s5[2]:+.2f}]; DEQ - L1: "
          f"{sl1[0]:+.2f} dB [{sl1[1]:+.2f}, {sl1[2]:+.2f}] (paired 95% over partitions, n={nz}; "
          f"neighbouring partitions are correlated)  (section {time.perf_counter() - t_sec:.0f} s)")


if __name__ == "__main__":
    main()
