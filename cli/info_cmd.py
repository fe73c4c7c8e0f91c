"""``convexrecon info FILE`` and ``convexrecon problems``: describe data, list problems."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from convexrecon.cli._errors import cli_errors, reading
from convexrecon.cli._options import check_input_path
from convexrecon.cli._progress import stdout_console

__all__ = ["info", "problems", "describe", "INFO_EPILOG"]

_FORMATS = {
    "fastmri": "fastMRI HDF5",
    "ismrmrd": "ISMRMRD HDF5",
    "cfl": "BART cfl/hdr",
    "npy": "numpy .npy",
}

INFO_EPILOG = "\n\n".join([
    "[bold]Examples[/bold]",
    "  convexrecon info file_brain_AXT2_200_2000019.h5",
    "  convexrecon info kspace.cfl      # or kspace.hdr; any 2-D/3-D BART layout",
    "  convexrecon info kspace.npy      # (C, H, W) or (S, C, H, W) complex",
])


def _shape(t: Any) -> str:
    return "(" + ", ".join(str(int(s)) for s in t.shape) + ")"


def _dtype(t: Any) -> str:
    return str(t.dtype).replace("torch.", "")


def describe(data: Any, path: Path) -> list[tuple[str, str]]:
    """Rows ``(field, value)`` describing a loaded :class:`KspaceData`."""
    from convexrecon.sampling import acceleration

    ksp = data.kspace
    traj = data.traj
    rows: list[tuple[str, str]] = [
        ("file", str(path)),
        ("format", _FORMATS.get(data.source, str(data.source))),
    ]
    if traj is None:
        layout = "(slices, coils, H, W)" if ksp.ndim == 4 else "(slices, coils, D, H, W)"
    else:
        layout = "(slices, coils, K)"
    rows.append(("k-space", f"{_shape(ksp)} {_dtype(ksp)}  {layout}"))
    rows.append(("slices", str(int(ksp.shape[0]))))
    rows.append(("coils", str(int(ksp.shape[1]))))
    layout = data.attrs.get("bart_layout") if data.attrs else None
    if layout is not None:
        dims = " x ".join(str(n) for n in data.attrs.get("bart_dims", []))
        rows.append(("BART dims", f"{dims}  ({layout.describe()})"))
    for note in (data.attrs.get("notes", []) if data.attrs else []):
        rows.append(("note", str(note)))
    if traj is None:
        spatial = [int(s) for s in ksp.shape[2:]]
        if layout is not None:
            from convexrecon.io.cfl import BART_DIM_NAMES

            axes = " x ".join(BART_DIM_NAMES[d] for d in layout.spatial)
            label = f"({'D x ' if len(spatial) == 3 else ''}H x W = {axes})"
        else:
            label = "(readout x phase encode)"
        rows.append(("matrix", " x ".join(map(str, spatial)) + f"  {label}"))
        mask = data.mask
        if mask is not None and bool(mask.any()):
            accel = acceleration(mask)
            plane = mask.reshape(-1, *mask.shape[-2:])
            per = sorted({round(acceleration(m), 2) for m in plane if bool(m.any())})
            kind = "1-D (columns)" if _is_1d(mask) else "2-D"
            detail = f"{accel:.2f}x  ({kind} Cartesian mask {_shape(mask)})"
            if len(per) > 1:
                detail += f", per slice {per[0]:g}x to {per[-1]:g}x"
            rows.append(("acceleration", detail))
        else:
            rows.append(("acceleration", "unknown (no sampled entry found)"))
    else:
        rows.append(("sampling", f"non-Cartesian, {int(traj.shape[-1])} samples, "
                                 f"trajectory {_shape(traj)} {_dtype(traj)}"))
    ref = data.reference
    if ref is not None:
        key = data.attrs.get("reference_key", "reference") if data.attrs else "reference"
        rows.append(("reference", f"yes: {key} {_shape(ref)} {_dtype(ref)}"))
    else:
        rows.append(("reference", "no (metrics need a fully sampled reference)"))
    finite = bool(ksp.isfinite().all())
    rows.append(("max |k|", f"{float(ksp.abs().max()):.4g}" + ("" if finite else " (non-finite values)")))
    for key in ("acquisition", "patient_id", "max", "norm"):
        if data.attrs and key in data.attrs:
            rows.append((f"attr {key}", str(data.attrs[key])))
    return rows


def _is_1d(mask: Any) -> bool:
    """True when the mask is constant along the readout axis (``-2``)."""
    m = mask.reshape(-1, *mask.shape[-2:])
    return bool((m == m[:, :1, :]).all())


@cli_errors
def info(
    file: Path = typer.Argument(..., help="A k-space file: fastMRI .h5, BART .cfl/.hdr or .npy.",
                                show_default=False),
) -> None:
    """Describe a k-space file: format, shapes, dtype, coils, acceleration, reference.

    The k-space is reported in the package layout (slices, coils, H, W): H is the
    readout (frequency-encode) axis and W the phase-encode axis. The acceleration is
    total / sampled over the phase-encode plane.
    """
    from convexrecon.io import load_kspace

    import warnings

    from convexrecon.io.cfl import BartLayoutWarning

    path = check_input_path(file)
    with reading(path), warnings.catch_warnings():
        warnings.simplefilter("ignore", BartLayoutWarning)  # reported as a 'note' row
        data = load_kspace(path)
    table = Table(title=None, show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in describe(data, path):
        table.add_row(name, value)
    stdout_console().print(table)


@cli_errors
def problems() -> None:
    """List the named, seeded problem instances (data, operator, ground truth)."""
    from convexrecon import problems as registry

    table = Table(title="named problems")
    table.add_column("name", style="bold")
    table.add_column("description")
    describe_fn = getattr(registry, "describe", None)
    for name in registry.names():
        text = ""
        if describe_fn is not None:
            text = str(describe_fn(name))
            if text.startswith(f"{name}: "):
                text = text[len(name) + 2:]
        table.add_row(name, text)
    stdout_console().print(table)
