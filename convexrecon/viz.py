"""Figures of reconstructions: image grids, zero-filled baselines and error maps.

Everything here draws with matplotlib's object-oriented API on an Agg canvas, so
importing this module never changes the global backend and works without a
display. Figures are written atomically: to a temporary file next to the target,
then renamed, so a failure leaves no partial PNG behind.

Images are given as complex or real tensors or arrays, shaped ``(H, W)`` or
``(*batch, H, W)``; magnitudes are shown. When a reference is given, images are
centre-cropped to its shape (fastMRI references are cropped to 320 x 320 while the
k-space keeps the full field of view), and the error map is
``|x| - |reference|`` in absolute value, magnified by ``error_gain``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from convexrecon.errors import InputError

__all__ = [
    "magnitude",
    "center_crop",
    "save_figure",
    "image_grid",
    "reconstruction_figure",
    "comparison_figure",
]


def magnitude(x: Any) -> np.ndarray:
    """Absolute value of a tensor or array as a float64 numpy array (on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    return np.abs(arr).astype(np.float64, copy=False)


def center_crop(img: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Centre-crop the last two axes of ``img`` to ``shape`` (no-op when equal).

    Axes smaller than ``shape`` are left as they are.
    """
    h, w = int(shape[-2]), int(shape[-1])
    H, W = img.shape[-2], img.shape[-1]
    top = max((H - h) // 2, 0)
    left = max((W - w) // 2, 0)
    return img[..., top:top + min(h, H), left:left + min(w, W)]


def _as_stack(x: Any, name: str) -> np.ndarray:
    """Magnitude of ``x`` reshaped to ``(N, H, W)``."""
    mag = magnitude(x)
    if mag.ndim < 2:
        raise InputError(f"{name}: expected an image (*batch, H, W), got shape {mag.shape}")
    return mag.reshape(-1, mag.shape[-2], mag.shape[-1])


def save_figure(fig: Any, path: Path | str, *, dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG to ``path`` atomically; return the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"png: expected a path ending in .png, got {str(path)!r}")
    if not path.parent.exists():
        raise InputError(f"png: the folder {str(path.parent)!r} does not exist")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=dpi)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _display_max(images: Sequence[np.ndarray]) -> float:
    """A robust common upper display limit: the 99.5th percentile of the first image."""
    vmax = float(np.percentile(images[0], 99.5)) if images[0].size else 0.0
    if not np.isfinite(vmax) or vmax <= 0:
        vmax = max((float(np.max(im)) for im in images if im.size), default=1.0) or 1.0
    return vmax


def image_grid(
    rows: Sequence[Sequence[np.ndarray | None]],
    path: Path | str,
    *,
    col_titles: Sequence[str] = (),
    row_titles: Sequence[str] = (),
    cell_titles: Sequence[Sequence[str]] | None = None,
    vmax: Sequence[float | None] | None = None,
    cmaps: Sequence[str] | None = None,
    suptitle: str | None = None,
    cell_size: float = 2.8,
) -> Path:
    """Draw a grid of real images (``None`` leaves a cell empty) and save it as PNG.

    Args:
        rows: ``rows[i][j]`` is the image of row ``i``, column ``j``.
        path: the ``.png`` to write (atomically).
        col_titles / row_titles: labels on top of columns / left of rows.
        cell_titles: optional per-cell titles (overrides the column title).
        vmax: per-row upper display limit (``None``: from the row's first image).
        cmaps: per-column colour maps (default grey).
        suptitle: figure title.
    """
    from matplotlib.figure import Figure

    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    if n_rows == 0 or n_cols == 0:
        raise InputError("images: expected at least one image to draw, got none")
    fig = Figure(figsize=(cell_size * n_cols, cell_size * n_rows + (0.4 if suptitle else 0.0)))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, row in enumerate(rows):
        present = [im for im in row if im is not None]
        limit = vmax[i] if vmax is not None and i < len(vmax) and vmax[i] else None
        row_max = limit if limit is not None else (_display_max(present) if present else 1.0)
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            im = row[j] if j < len(row) else None
            if im is None:
                ax.axis("off")
                continue
            cmap = cmaps[j] if cmaps is not None and j < len(cmaps) else "gray"
            ax.imshow(im, cmap=cmap, vmin=0.0, vmax=row_max, interpolation="nearest")
            title = ""
            if cell_titles is not None and i < len(cell_titles) and j < len(cell_titles[i]):
                title = cell_titles[i][j]
            elif i == 0 and j < len(col_titles):
                title = col_titles[j]
            if title:
                ax.set_title(title, fontsize=8)
            if j == 0 and i < len(row_titles) and row_titles[i]:
                ax.set_ylabel(row_titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _pick(n: int, max_rows: int) -> list[int]:
    """Up to ``max_rows`` indices spread evenly over ``range(n)``."""
    if n <= max_rows:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, max_rows)})


def comparison_figure(
    path: Path | str,
    images: Mapping[str, Any],
    *,
    reference: Any | None = None,
    scores: Mapping[str, str] | None = None,
    error_gain: float = 5.0,
    max_rows: int = 4,
    title: str | None = None,
) -> Path:
    """Columns of named reconstructions (and the reference), rows of slices.

    With a reference, each slice gets a second row: the error maps
    ``| |x| - |ref| | * error_gain`` on the same display scale.

    Args:
        path: ``.png`` to write.
        images: name -> image ``(*batch, H, W)``; all with the same batch size.
        reference: optional ground truth ``(*batch, h, w)``; images are centre-cropped
            to ``(h, w)``.
        scores: optional name -> short text appended to the column title
            (e.g. ``"PSNR 31.2 dB"``).
        error_gain: magnification of the error maps.
        max_rows: at most this many slices are drawn (spread over the batch).
        title: figure title.
    """
    if not images:
        raise InputError("images: expected at least one image, got none")
    stacks = {name: _as_stack(im, f"images[{name!r}]") for name, im in images.items()}
    ref = _as_stack(reference, "reference") if reference is not None else None
    if ref is not None:
        stacks = {k: center_crop(v, ref.shape[-2:]) for k, v in stacks.items()}
    n = {v.shape[0] for v in stacks.values()}
    if len(n) != 1 or (ref is not None and ref.shape[0] not in n):
        raise InputError(f"images: expected the same number of slices in every image, got {sorted(n)}")
    names = list(stacks)
    scores = dict(scores or {})
    col_titles = [f"{k}\n{scores[k]}" if k in scores else k for k in names]
    if ref is not None:
        col_titles.append("reference")
    rows: list[list[np.ndarray | None]] = []
    row_titles: list[str] = []
    vmax: list[float | None] = []
    total = next(iter(n))
    for s in _pick(total, max_rows):
        row: list[np.ndarray | None] = [stacks[k][s] for k in names]
        if ref is not None:
            row.append(ref[s])
        limit = _display_max([ref[s]] if ref is not None else [row[0]])  # type: ignore[list-item]
        rows.append(row)
        row_titles.append(f"slice {s}" if total > 1 else "")
        vmax.append(limit)
        if ref is not None:
            err = [np.abs(stacks[k][s] - ref[s]) * error_gain for k in names]
            rows.append([*err, None])
            row_titles.append(f"error x{error_gain:g}")
            vmax.append(limit)
    return image_grid(rows, path, col_titles=col_titles, row_titles=row_titles,
                      vmax=vmax, suptitle=title)


def reconstruction_figure(
    path: Path | str,
    recon: Any,
    *,
    zero_filled: Any | None = None,
    reference: Any | None = None,
    method: str = "reconstruction",
    scores: Mapping[str, str] | None = None,
    error_gain: float = 5.0,
    max_rows: int = 4,
    title: str | None = None,
) -> Path:
    """The standard figure of ``convexrecon recon --png``.

    Columns: the reconstruction, the zero-filled image (if given) and the reference
    (if given); with a reference, a row of error maps under each slice.
    """
    images: dict[str, Any] = {method: recon}
    if zero_filled is not None:
        images["zero-filled"] = zero_filled
    return comparison_figure(path, images, reference=reference, scores=scores,
                             error_gain=error_gain, max_rows=max_rows, title=title)
