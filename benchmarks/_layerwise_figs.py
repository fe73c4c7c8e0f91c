"""Figures of ``benchmarks/layerwise.py`` (PNG): PSNR against layer per mask with the
end-to-end and FISTA lines, memory against depth, reconstructions with error maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def psnr_vs_layer(path: Path, per_mask: dict[str, dict[str, Any]], set_key: str = "test@0.05") -> None:
    """One panel per mask: layer-wise test PSNR after each layer, and horizontal lines
    for end-to-end (plateau, equal time), FISTA and zero-filled."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(per_mask), figsize=(4.6 * len(per_mask), 3.6), squeeze=False)
    for ax, (mask, sets) in zip(axes[0], per_mask.items()):
        row = sets[set_key]["vs_fista"]
        layers = sorted(int(k.rsplit("L", 1)[1]) for k in row if k.startswith("layer-wise L"))
        ax.plot(layers, [row[f"layer-wise L{k}"]["mean"] for k in layers], "o-", label="layer-wise")
        styles = {"end-to-end (plateau)": ("C1", "-"), "end-to-end (equal time)": ("C1", "--"),
                  "L1-wavelet FISTA": ("gray", "-."), "zero-filled": ("gray", ":")}
        for name, (color, ls) in styles.items():
            if name in row:
                ax.axhline(row[name]["mean"], color=color, linestyle=ls, label=name)
        ax.set_title(f"{mask}, {set_key}", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel("mean slice PSNR (dB)")
        ax.set_xticks(layers)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def memory_vs_depth(path: Path, rows: list[dict[str, Any]], patterns: int) -> None:
    """Median peak (bars: range over the repeats) per depth at ``patterns``."""
    plt = _plt()
    sel = sorted((r for r in rows if r["patterns"] == patterns), key=lambda r: r["depth"])
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for key, marker, label in (("layerwise", "o-", "layer-wise step"), ("e2e", "s-", "end-to-end step")):
        d = [r["depth"] for r in sel]
        med = [r[key]["median_mb"] for r in sel]
        err = [[m - r[key]["min_mb"] for m, r in zip(med, sel)], [r[key]["max_mb"] - m for m, r in zip(med, sel)]]
        ax.errorbar(d, med, yerr=err, fmt=marker, capsize=3, label=label)
    if sel:
        ax.set_title(f"one training step, batch {sel[0]['batch']}, {sel[0]['size']}^2, P={patterns}",
                     fontsize=9)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("peak training memory (MB)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reconstructions(path: Path, images: dict[str, Any], scores: dict[str, float], *, depth: int) -> None:
    """Two test slices: each method and its error map (x5)."""
    from convexrecon.viz import comparison_figure

    keep = ["zero-filled", "L1-wavelet FISTA", "end-to-end (plateau)", f"layer-wise L{depth}"]
    imgs = {k: images[k].detach().cpu() for k in keep if k in images}
    comparison_figure(path, imgs, reference=images["target"].detach().cpu(),
                      scores={k: f"{scores[k]:.2f} dB" for k in imgs if k in scores}, max_rows=2,
                      title="test slab: reconstructions and |error| x5")
