"""convexrecon.training: loop, checkpoints, lossless resume, memory, distributed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import training_tiny as T
from convexrecon.errors import InputError
from convexrecon.training import (CHECKPOINT_NAME, Hooks, build_model, fit, load_checkpoint, load_model,
                                  save_checkpoint)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _losses(out: Path) -> dict:
    data = json.loads((out / "metrics.json").read_text())
    assert len(data.pop("epoch_time_s")) == len(data["epochs"])  # wall times: the one thing allowed to differ
    return data


# ----------------------------------------------------------------------------- checkpoints
def test_fit_writes_checkpoint_that_load_model_rebuilds(tmp_path):
    model, history = T.train(tmp_path, epochs=2)
    assert len(history.epochs) == 2 and len(history.step_loss) == 12
    assert history.epochs[1]["train_loss"] < history.epochs[0]["train_loss"] * 1.5  # finite, sane
    rebuilt = load_model(tmp_path / CHECKPOINT_NAME)
    assert _same_weights(model, rebuilt) and not rebuilt.training
    ck = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ck["model_spec"] == T.SPEC and ck["epoch"] == 2 and ck["global_step"] == 12
    assert set(ck) >= {"optimizer_state", "scheduler_state", "hook_state", "per_rank", "config"}
    assert ck["hook_state"] == {"steps": 12}
    rng = ck["per_rank"][0]["rng"]
    assert set(rng) >= {"torch", "numpy", "python"}
    assert ck["step_in_epoch"] == 0 and ck["per_rank"][0]["order"].numel() == 0  # taken between epochs
    metrics = _losses(tmp_path)
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1] and len(metrics["step_loss"]) == 12


def test_bad_checkpoints_raise_input_error_naming_the_file(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", {"model_state": {"w": torch.ones(3)}, "model_spec": None})
    assert load_checkpoint(good)["model_state"]["w"].sum() == 3
    with pytest.raises(InputError, match="model_spec"):
        load_model(good)
    raw = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "foreign.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    for name in ["trunc.pt", "junk.pt", "foreign.pt", "list.pt", "missing.pt"]:
        with pytest.raises(InputError, match=name):
            load_checkpoint(tmp_path / name)
    future = save_checkpoint(tmp_path / "v.pt", {"model_state": {}})
    data = torch.load(future, weights_only=True)
    data["version"] = 99
    torch.save(data, tmp_path / "v.pt")
    with pytest.raises(InputError, match="version"):
        load_checkpoint(tmp_path / "v.pt")


def test_save_is_atomic_and_rejects_unloadable_payloads(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model_state": {"w": torch.zeros(2)}})
    with pytest.raises(InputError, match=r"payload\['extra'\]\['f'\]"):
        save_checkpoint(path, {"model_state": {"w": torch.ones(2)}, "extra": {"f": object()}})
    # the failed save left the old file intact and no temporary behind
    assert load_checkpoint(path)["model_state"]["w"].sum() == 0
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    with pytest.raises(InputError, match="factory"):
        save_checkpoint(path, {"model_state": {}, "model_spec": {"factory": "nocolon", "kwargs": {}}})
    with pytest.raises(InputError, match="JSON"):
        save_checkpoint(path, {"model_state": {}, "model_spec": {"factory": "a:b", "kwargs": {"t": torch.ones(1)}}})


def test_load_model_rejects_mismatched_weights(tmp_path):
    model = build_model(T.SPEC)
    spec = {"factory": T.SPEC["factory"], "kwargs": {"hidden": 5, "dropout": 0.0}}
    path = save_checkpoint(tmp_path / "m.pt", {"model_state": model.state_dict(), "model_spec": spec})
    with pytest.raises(InputError, match="m.pt"):
        load_model(path)
    with pytest.raises(InputError, match="cannot import"):
        build_model({"factory": "no_such_module_xyz:f", "kwargs": {}})


# ----------------------------------------------------------------------------- resume
def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training script exited early: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("no checkpoint appeared")
        time.sleep(0.02)


def test_sigkill_then_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    delay = 0.2
    proc = subprocess.Popen([sys.executable, str(HERE / "training_tiny.py"), str(killed), "--delay", str(delay)],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        ref_model, ref_history = T.train(ref)  # the uninterrupted run, while the other one starts
        _wait_for(killed / CHECKPOINT_NAME, proc)
        time.sleep(1.5 * delay)  # let it take a step past the checkpoint (lost, then replayed)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "done").exists()
    at = load_checkpoint(killed / CHECKPOINT_NAME)["global_step"]
    assert 0 < at < 18, at  # killed in the middle
    model, history = T.train(killed, resume=True)
    assert history.resumed_from_step == at
    assert _same_weights(model, ref_model)
    assert history.step_loss == ref_history.step_loss and history.epochs == ref_history.epochs
    assert _losses(killed) == _losses(ref)
    assert load_checkpoint(killed / CHECKPOINT_NAME)["hook_state"] == {"steps": 18}


class _SignalAt(T.Slow):
    def __init__(self, at: int, sig: int = signal.SIGINT) -> None:
        super().__init__(0.0)
        self.at, self.sig = at, sig

    def on_step_end(self, *, epoch: int, step: int, loss: float, skipped: bool) -> None:
        super().on_step_end(epoch=epoch, step=step, loss=loss, skipped=skipped)
        if step == self.at:
            os.kill(os.getpid(), self.sig)


def test_sigint_and_sigterm_checkpoint_at_the_step_and_resume_is_exact(tmp_path):
    # the handlers fit must restore: whatever the process had (a shell's background job
    # starts with SIGINT ignored)
    int_before, term_before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    ref_model, ref_history = T.train(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        T.train(tmp_path / "int", hooks=_SignalAt(7))  # 7: mid-epoch 1, not a checkpoint_every step
    ck = load_checkpoint(tmp_path / "int" / CHECKPOINT_NAME)
    assert ck["global_step"] == 7 and ck["epoch"] == 1 and ck["step_in_epoch"] == 1
    assert sorted(ck["per_rank"][0]["order"].tolist()) == list(range(24))  # epoch 1's permutation
    assert signal.getsignal(signal.SIGINT) is int_before  # handler restored
    model, history = T.train(tmp_path / "int", resume=True)
    assert _same_weights(model, ref_model) and history.step_loss == ref_history.step_loss
    assert _losses(tmp_path / "int") == _losses(tmp_path / "ref")
    # SIGTERM (what torchrun and schedulers send) does the same, exiting with 143
    with pytest.raises(SystemExit) as stopped:
        T.train(tmp_path / "term", hooks=_SignalAt(11, signal.SIGTERM))
    assert stopped.value.code == 143 and signal.getsignal(signal.SIGTERM) is term_before
    assert load_checkpoint(tmp_path / "term" / CHECKPOINT_NAME)["global_step"] == 11
    model, history = T.train(tmp_path / "term", resume=True)
    assert _same_weights(model, ref_model) and history.step_loss == ref_history.step_loss
    # a finished run resumes to a no-op
    again, h2 = T.train(tmp_path / "int", resume=True)
    assert _same_weights(again, ref_model) and len(h2.epochs) == 3
    # a run stopped between epochs continues with more epochs, also exactly
    T.train(tmp_path / "short", epochs=1)
    longer, h3 = T.train(tmp_path / "short", epochs=3, resume=True)
    assert h3.resumed_from_step == 6 and _same_weights(longer, ref_model) and h3.step_loss == ref_history.step_loss


def test_resume_guards(tmp_path):
    T.train(tmp_path, epochs=1)
    with pytest.raises(InputError, match="resume=True"):
        T.train(tmp_path, epochs=1)
    with pytest.raises(InputError, match="batch_size"):
        T.train(tmp_path, epochs=2, resume=True, batch_size=3)
    with pytest.raises(InputError, match="epochs"):
        T.train(tmp_path / "x", epochs=0)


# ----------------------------------------------------------------------------- hooks, logging
class _RejectStep(Hooks):
    def __init__(self, reject: int) -> None:
        self.reject = reject
        self.weights: list[torch.Tensor] = []
        self.model: torch.nn.Module | None = None

    def accept(self, loss, *, epoch, step):
        return step != self.reject

    def on_step_end(self, *, epoch, step, loss, skipped):
        self.weights.append(torch.cat([p.detach().flatten().clone() for p in self.model.parameters()]))


def test_hook_can_skip_a_batch_without_an_optimiser_step(tmp_path):
    hooks = _RejectStep(reject=4)
    torch.manual_seed(7)
    model = build_model(T.SPEC)
    hooks.model = model
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = fit(model, loss_fn=T.loss_fn, dataset=T.TinyData(), optimizer=opt, epochs=1, out_dir=tmp_path,
                  batch_size=4, progress=False, hooks=hooks)
    assert history.epochs[0]["skipped"] == 1
    assert torch.isnan(torch.tensor(history.step_loss[3])) and all(
        v == v for i, v in enumerate(history.step_loss) if i != 3)
    assert torch.equal(hooks.weights[3], hooks.weights[2])  # the skipped step changed nothing
    assert not torch.equal(hooks.weights[4], hooks.weights[3])
    assert int(opt.state[next(iter(model.parameters()))]["step"]) == 5
    assert json.loads((tmp_path / "metrics.json").read_text())["step_loss"][3] is None
    # an epoch where every batch diverges: weights untouched, metrics.json still valid JSON
    hooks.reject, before = None, [p.detach().clone() for p in model.parameters()]
    hooks.accept = lambda loss, *, epoch, step: False
    history = fit(model, loss_fn=T.loss_fn, dataset=T.TinyData(), optimizer=opt, epochs=2, out_dir=tmp_path,
                  batch_size=4, progress=False, hooks=hooks, resume=True)
    assert history.epochs[1]["skipped"] == 6 and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"][1]["train_loss"] is None


def test_loss_extras_validation_and_tensorboard(tmp_path):
    def loss_fn(model, batch):
        loss = T.loss_fn(model, batch)
        return loss, {"half": 0.5 * loss.item()}

    def val_fn(model, batch):
        return {"mse": T.loss_fn(model, batch), "one": 1.0}

    torch.manual_seed(0)
    model = T.make_model(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    history = fit(model, loss_fn=loss_fn, dataset=T.TinyData(), optimizer=opt, epochs=2, out_dir=tmp_path,
                  batch_size=5, progress=True, val_dataset=T.TinyData(7, seed=1), val_fn=val_fn, tensorboard=True)
    e = history.epochs[-1]
    assert e["train_half"] == pytest.approx(0.5 * e["train_loss"], rel=1e-6)
    assert e["val_one"] == pytest.approx(1.0) and e["val_mse"] > 0
    assert len(history.step_loss) == 10  # 24 samples, batches of 5 (last one of 4)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    steps = acc.Scalars("train/loss_step")
    assert [s.step for s in steps] == list(range(1, 11))
    assert steps[-1].value == pytest.approx(history.step_loss[-1], rel=1e-6)
    assert acc.Scalars("epoch/val_mse")[-1].value == pytest.approx(e["val_mse"], rel=1e-6)
    with pytest.raises(InputError, match="no model_spec"):
        load_model(tmp_path / CHECKPOINT_NAME)


# ----------------------------------------------------------------------------- distributed
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(T.ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp"), 8), nprocs=2, join=True)
    single = T.train_plain(tmp_path / "single", batch_size=8)
    ddp_model = load_model(tmp_path / "ddp" / CHECKPOINT_NAME)
    one_model = load_model(tmp_path / "single" / CHECKPOINT_NAME)
    for (name, a), b in zip(ddp_model.state_dict().items(), one_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(one_model[0].weight, build_model(T.SPEC)[0].weight)  # it did train
    ddp = _losses(tmp_path / "ddp")
    assert len(ddp["step_loss"]) == len(single.step_loss) == 6
    assert ddp["step_loss"] == pytest.approx(single.step_loss, rel=1e-5)
    for e_ddp, e_one in zip(ddp["epochs"], single.epochs):
        assert e_ddp["val_loss"] == pytest.approx(e_one["val_loss"], rel=1e-5)
        assert e_ddp["train_loss"] == pytest.approx(e_one["train_loss"], rel=1e-5)
    ck = load_checkpoint(tmp_path / "ddp" / CHECKPOINT_NAME)
    assert ck["config"]["world_size"] == 2 and len(ck["per_rank"]) == 2


@pytest.mark.distributed
def test_torchrun_two_processes_match_one_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "training_tiny.py"), str(tmp_path / "ddp"), "--plain-global-batch", "8"]
    subprocess.run(cmd, env=env, check=True, timeout=300, capture_output=True)
    T.train_plain(tmp_path / "single", batch_size=8)
    for a, b in zip(load_model(tmp_path / "ddp" / CHECKPOINT_NAME).state_dict().values(),
                    load_model(tmp_path / "single" / CHECKPOINT_NAME).state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_distributed_helpers_in_a_single_process():
    from convexrecon.training import distributed as D

    x = torch.tensor([1.0 + 2.0j])
    assert not D.is_distributed() and D.world_size() == 1 and D.is_main_process()
    assert torch.equal(D.all_reduce_sum(x), x) and torch.equal(D.all_reduce_mean(x), x)
    model = torch.nn.Linear(2, 2)
    assert D.wrap_ddp(model) is model and D.unwrap(model) is model
    sampler = D.make_sampler(T.TinyData(), seed=1)
    sampler.set_epoch(3)
    assert sorted(sampler) == list(range(24))
    assert D.init_from_env().world_size == 1 or "WORLD_SIZE" in os.environ
    with pytest.raises(InputError, match="rank"):
        D.init_process_group(rank=2, world_size=2, init_method="file:///nonexistent")


# ----------------------------------------------------------------------------- memory
def test_peak_memory_in_fresh_processes():
    from concurrent.futures import ThreadPoolExecutor

    from convexrecon.training import peak_memory

    mlp = {"batch": 128, "d_in": 256, "hidden": 512, "d_out": 32}
    jobs = [("training_tiny:alloc_step", {"mb": 8}), ("training_tiny:alloc_step", {"mb": 72}),
            ("training_tiny:mlp_step", mlp), ("training_tiny:no_such_factory", {})]
    with ThreadPoolExecutor(len(jobs)) as pool:  # one fresh process each
        futures = [pool.submit(peak_memory, spec, kwargs=kwargs, threads=1) for spec, kwargs in jobs]
        small, big, step = (f.result() for f in futures[:3])
        with pytest.raises(InputError, match="no_such_factory"):
            futures[3].result()
    assert small.method == big.method == "vmhwm" and small.device == "cpu"
    # 64 MiB more touched in the step -> about 64 MiB more peak (pages, allocator slack aside)
    assert 0.9 * 64 * 2**20 <= big.peak_bytes - small.peak_bytes <= 1.25 * 64 * 2**20
    assert big.baseline_bytes > 100 * 2**20  # torch's import baseline ...
    assert small.peak_bytes < 0.5 * small.baseline_bytes  # ... is excluded from the peak
    assert small.saved_bytes == 0 and small.saved_tensors == 0  # no autograd
    # float32 x, tanh's output and the last product are saved; the saved parameter W2 is not counted
    assert step.saved_bytes == 4 * mlp["batch"] * (mlp["d_in"] + mlp["hidden"] + mlp["d_out"])
    assert step.saved_tensors == 3
    with pytest.raises(InputError, match="cannot find module"):
        peak_memory("no_such_module_xyz:f")
    with pytest.raises(InputError, match="spec"):
        peak_memory("no-colon")


# ----------------------------------------------------------------------------- complex batches
class _Batch:
    """A stand-in for convexrecon.data's Batch: tensors behind a ``.to(device)``."""

    def __init__(self, y: torch.Tensor, target: torch.Tensor) -> None:
        self.y, self.target = y, target

    def to(self, device):
        return _Batch(self.y.to(device), self.target.to(device))


class _ComplexData(torch.utils.data.Dataset):
    def __init__(self, n: int = 12) -> None:
        g = torch.Generator().manual_seed(0)
        self.target = torch.randn(n, 6, dtype=torch.complex64, generator=g)
        self.y = 2.0 * self.target

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.y[i], self.target[i]


def test_fit_takes_any_dataset_collate_and_complex_parameters(tmp_path):
    def collate(items):
        return _Batch(torch.stack([a for a, _ in items]), torch.stack([b for _, b in items]))

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(6, dtype=torch.complex64))

        def forward(self, y):
            return self.w * y

    model = Scale()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    history = fit(model, loss_fn=lambda m, b: torch.mean(torch.abs(m(b.y) - b.target) ** 2), dataset=_ComplexData(),
                  collate_fn=collate, batch_size=4, optimizer=opt, epochs=30, out_dir=tmp_path, progress=False)
    assert history.epochs[-1]["train_loss"] < 1e-2 * history.epochs[0]["train_loss"]
    ck = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ck["model_state"]["w"].dtype == torch.complex64
    torch.testing.assert_close(ck["model_state"]["w"], torch.full((6,), 0.5 + 0j), atol=0.05, rtol=0)


def test_worker_processes_give_the_same_run(tmp_path):
    def run(out, workers):
        torch.manual_seed(1)
        model = T.make_model(dropout=0.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        fit(model, loss_fn=T.loss_fn, dataset=T.TinyData(noisy=False), optimizer=opt, epochs=2, out_dir=out,
            batch_size=6, num_workers=workers, progress=False)
        return model

    assert _same_weights(run(tmp_path / "w0", 0), run(tmp_path / "w2", 2))


class _CrashAt(T.Slow):
    def __init__(self, at: int) -> None:
        super().__init__(0.0)
        self.at = at

    def on_step_end(self, *, epoch: int, step: int, loss: float, skipped: bool) -> None:
        super().on_step_end(epoch=epoch, step=step, loss=loss, skipped=skipped)
        if step == self.at:
            raise RuntimeError("simulated crash")


def test_tensorboard_after_a_crash_and_resume_has_each_step_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with pytest.raises(RuntimeError, match="simulated"):
        T.train(tmp_path, tensorboard=True, hooks=_CrashAt(10))  # step 9 logged, last checkpoint at 8
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["global_step"] == 8
    _, history = T.train(tmp_path, tensorboard=True, resume=True)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("train/loss_step")
    assert [e.step for e in events] == list(range(1, 19))  # the replayed steps 9.. are not doubled
    assert [e.value for e in events] == pytest.approx(history.step_loss, rel=1e-6)
