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
    for e in data["epochs"]:
        e.pop("time_s")
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
    assert sorted(ck["per_rank"][0]["order"].tolist()) == list(range(24))
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
