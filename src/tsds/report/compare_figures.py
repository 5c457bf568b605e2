"""Figures of a comparison report (two selections of one pool store); each returns PNG bytes."""

from __future__ import annotations

import numpy as np

from tsds.report.figures import _png, plt

A_COLOR, B_COLOR = "#1f6fd1", "#e6550d"


def mix_pair_figure(mix_a: dict[str, dict[str, float]], mix_b: dict[str, dict[str, float]], names: tuple[str, str],
                    top: int = 12) -> bytes:
    """Shares of each source and label value in selection A next to selection B."""
    fields = [f for f in ("source", "label") if mix_a.get(f) or mix_b.get(f)] or ["source"]
    fig, axes = plt.subplots(1, len(fields), figsize=(6.2 * len(fields), 4.8), squeeze=False)
    for ax, f in zip(axes[0], fields):
        ma, mb = mix_a.get(f, {}), mix_b.get(f, {})
        keys = sorted(set(ma) | set(mb), key=lambda k: -(ma.get(k, 0) + mb.get(k, 0)))[:top][::-1]
        y = np.arange(len(keys))
        ax.barh(y + 0.2, [ma.get(k, 0) for k in keys], height=0.4, color=A_COLOR, label=names[0])
        ax.barh(y - 0.2, [mb.get(k, 0) for k in keys], height=0.4, color=B_COLOR, label=names[1])
        ax.set_yticks(y)
        ax.set_yticklabels([k[:28] for k in keys], fontsize=8)
        ax.set_xlim(0, max([0.05] + [ma.get(k, 0) for k in keys] + [mb.get(k, 0) for k in keys]) * 1.1)
        ax.set_xlabel("share of drawn rows")
        ax.set_title(f"{f} mix (top {len(keys)})")
        ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def distance_pair_figure(d_a: np.ndarray, d_b: np.ndarray, names: tuple[str, str]) -> bytes:
    """Histograms of each selected row's distance to its nearest query, both selections on one axis."""
    fig, ax = plt.subplots(figsize=(7, 4))
    hi = float(max(d_a.max(initial=0), d_b.max(initial=0))) or 1.0
    bins = np.linspace(0, hi * 1.02, 40)
    for d, name, color in ((d_a, names[0], A_COLOR), (d_b, names[1], B_COLOR)):
        med = float(np.median(d)) if d.size else float("nan")
        ax.hist(d, bins=bins, histtype="step", lw=2, color=color, label=f"{name} (median {med:.3f})")
        if d.size:
            ax.axvline(med, color=color, ls="--", lw=1)
    ax.set_xlim(0, hi * 1.05)
    ax.set_xlabel("distance of a distinct selected row to its nearest query")
    ax.set_ylabel("rows")
    ax.set_title("Distance to the queries")
    ax.legend(fontsize=8)
    return _png(fig)


def duplicate_pair_figure(shares: list[dict], names: tuple[str, str], radius: float) -> bytes:
    """Near-duplicate share (distinct rows with another selected row within ``radius``) and repeat-draw share."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    labels = ["distinct rows with a near-duplicate\nin the same selection", "draws that repeat a row"]
    y = np.arange(len(labels))
    for off, s, name, color in ((0.2, shares[0], names[0], A_COLOR), (-0.2, shares[1], names[1], B_COLOR)):
        vals = [s["near_duplicate_share"], s["repeat_share"]]
        ax.barh(y + off, vals, height=0.4, color=color, label=name)
        for yy, v in zip(y + off, vals):
            ax.text(v, yy, f" {v:.1%}", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, max(0.1, max(max(s["near_duplicate_share"], s["repeat_share"]) for s in shares)) * 1.2)
    ax.set_xlabel(f"share (near-duplicate: distance <= {radius:.3g})")
    ax.set_title("Near-duplicates")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    return _png(fig)


def coverage_pair_figure(c_a: np.ndarray, c_b: np.ndarray, names: tuple[str, str]) -> bytes:
    """Draws per query (each draw credited to its nearest query), grouped bars on an axis from 0."""
    m = c_a.size
    x = np.arange(m)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.32 * m + 2), 4))
    ax.bar(x - 0.2, c_a, width=0.4, color=A_COLOR, label=names[0])
    ax.bar(x + 0.2, c_b, width=0.4, color=B_COLOR, label=names[1])
    ax.set_ylim(0, max(1.0, float(c_a.max(initial=0)), float(c_b.max(initial=0))) * 1.1)
    ax.set_xlabel("query")
    ax.set_ylabel("draws whose nearest query it is")
    ax.set_title("Per-query coverage")
    ax.set_xticks(x[::max(1, m // 40)])
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    return _png(fig)
