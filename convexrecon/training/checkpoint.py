"""Atomic training checkpoints and model rebuilding.

A checkpoint is one ``torch.save`` file holding a dict::

    {"format": "convexrecon-checkpoint", "version": 1,
     "model_spec": {"factory": "pkg.module:callable", "kwargs": {...}} or None,
     "model_state": {...}, ...}

The rest of the payload (optimiser, scheduler, RNG states, data order, epoch and
step, caches) is the training loop's business (:mod:`convexrecon.training.loop`).

- :func:`save_checkpoint` writes a temporary file in the target folder, flushes it to
  disk and renames it over the target, so a kill at any moment leaves either the old
  or the new checkpoint, never a torn one.
- :func:`load_checkpoint` reads with ``weights_only=True`` (no arbitrary code runs on
  load). A missing, corrupt, truncated or foreign file raises
  :class:`~convexrecon.errors.InputError` naming the file.
- :func:`load_model` rebuilds the module from ``model_spec`` and loads its weights.

Payloads may only contain tensors, numbers, strings, bytes, ``None``, lists, tuples
and dicts (and ``torch.Size``, ``torch.dtype``, ``torch.device``); anything else is
rejected at save time with the offending key path.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import InputError

__all__ = [
    "FORMAT",
    "VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "build_model",
    "check_model_spec",
]

FORMAT = "convexrecon-checkpoint"
VERSION = 1

_LEAVES = (torch.Tensor, int, float, bool, str, bytes, type(None), torch.dtype, torch.device)


def _check_payload(obj: Any, where: str) -> None:
    """Reject anything ``torch.load(weights_only=True)`` could not read back."""
    if isinstance(obj, _LEAVES):
        return
    if isinstance(obj, (dict, OrderedDict)):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise InputError(
                    f"checkpoint payload: key {key!r} at {where} must be a str or int, "
                    f"got {type(key).__name__}"
                )
            _check_payload(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):  # torch.Size is a tuple
        for i, value in enumerate(obj):
            _check_payload(value, f"{where}[{i}]")
        return
    raise InputError(
        f"checkpoint payload: {where} is a {type(obj).__name__}; expected tensors, numbers, "
        "strings, bytes, None, lists, tuples or dicts (convert numpy arrays with "
        "torch.from_numpy)"
    )


def check_model_spec(spec: Any) -> dict[str, Any] | None:
    """Validate a model spec ``{"factory": "pkg.module:callable", "kwargs": {...}}``.

    ``kwargs`` must be JSON-serialisable (numbers, strings, lists, dicts), so that a
    spec reads the same in any environment. Returns a plain-dict copy, or ``None``.
    """
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise InputError(f"model_spec: expected a dict with 'factory' and 'kwargs', got {type(spec).__name__}")
    unknown = set(spec) - {"factory", "kwargs"}
    if unknown:
        raise InputError(f"model_spec: unknown keys {sorted(unknown)}; expected 'factory' and 'kwargs'")
    factory = spec.get("factory")
    if not isinstance(factory, str) or factory.count(":") != 1 or not all(factory.split(":")):
        raise InputError(f"model_spec['factory']: expected 'package.module:callable', got {factory!r}")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, Mapping):
        raise InputError(f"model_spec['kwargs']: expected a dict, got {type(kwargs).__name__}")
    try:
        kwargs = json.loads(json.dumps(dict(kwargs)))
    except (TypeError, ValueError) as exc:
        raise InputError(f"model_spec['kwargs']: must be JSON-serialisable ({exc})") from None
    return {"factory": factory, "kwargs": kwargs}


def _resolve_factory(factory: str) -> Any:
    module_name, attr = factory.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"model_spec factory {factory!r}: cannot import {module_name!r} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"model_spec factory {factory!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"model_spec factory {factory!r} is not callable")
    return obj


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """Call ``spec["factory"](**spec["kwargs"])`` and record the spec on the module.

    The returned module carries ``module.model_spec``, which :func:`~convexrecon.training.fit`
    stores in every checkpoint so that :func:`load_model` can rebuild it.
    """
    checked = check_model_spec(spec)
    if checked is None:
        raise InputError("model_spec: expected a dict with 'factory' and 'kwargs', got None")
    factory = _resolve_factory(checked["factory"])
    try:
        module = factory(**checked["kwargs"])
    except TypeError as exc:
        raise InputError(f"model_spec factory {checked['factory']!r}: bad kwargs ({exc})") from None
    if not isinstance(module, nn.Module):
        raise InputError(
            f"model_spec factory {checked['factory']!r} returned {type(module).__name__}, expected an nn.Module"
        )
    module.model_spec = checked
    return module


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` atomically to ``path`` (temporary file, fsync, rename).

    ``format`` and ``version`` are filled in; ``model_spec`` is validated. Returns the path.
    """
    path = Path(path)
    if not isinstance(payload, Mapping):
        raise InputError(f"checkpoint payload: expected a dict, got {type(payload).__name__}")
    data = dict(payload)
    data["format"] = FORMAT
    data["version"] = VERSION
    data["model_spec"] = check_model_spec(data.get("model_spec"))
    _check_payload(data, "payload")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`InputError` naming the file when it is missing, unreadable,
    truncated, not a convexrecon checkpoint, or of a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {str(path)!r}: no such file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise InputError(
            f"checkpoint {str(path)!r}: corrupt, truncated or not a torch checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"checkpoint {str(path)!r}: not a convexrecon checkpoint (no format {FORMAT!r})")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise InputError(
            f"checkpoint {str(path)!r}: format version {version!r} is not supported (this build reads 1..{VERSION})"
        )
    if "model_state" not in data:
        raise InputError(f"checkpoint {str(path)!r}: has no 'model_state'")
    return data


def load_model(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the module saved in a checkpoint from its ``model_spec`` and load its weights.

    The module is returned in eval mode on ``map_location``.
    """
    data = load_checkpoint(path, map_location=map_location)
    spec = data.get("model_spec")
    if spec is None:
        raise InputError(
            f"checkpoint {str(path)!r}: has no model_spec; build the module yourself and load "
            "load_checkpoint(path)['model_state'] into it"
        )
    try:
        module = build_model(spec)
    except InputError as exc:
        raise InputError(f"checkpoint {str(path)!r}: {exc}") from None
    try:
        module.load_state_dict(data["model_state"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise InputError(
            f"checkpoint {str(path)!r}: weights do not fit the module built by {spec['factory']!r} "
            f"({str(exc).splitlines()[0]})"
        ) from None
    return module.to(map_location).eval()
