"""Figures of a selection report (matplotlib, Agg backend); each returns PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

POOL, SEL, QRY, FLAG = "#b8bcc4", "#1f6fd1", "#d62728", "#e6550d"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def project_2d(fit: np.ndarray, *others: np.ndarray, seed: int = 0) -> tuple[str, list[np.ndarray]]:
    """2-D coordinates of ``fit`` and ``others``: UMAP when umap-learn is installed, otherwise PCA."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (fit, *others)]
    try:  # optional dependency
        import umap  # type: ignore

        model = umap.UMAP(n_components=2, random_state=seed)
        model.fit(arrays[0])
        return "UMAP", [model.transform(a) if len(a) else np.zeros((0, 2)) for a in arrays]
    except Exception:  # noqa: BLE001 - not installed, or failed: PCA is always available
        pass
    mean = arrays[0].mean(0)
    xc = arrays[0] - mean
    _, vecs = np.linalg.eigh(xc.T @ xc)  # d x d: cheaper than an SVD of the sample
    top = vecs[:, ::-1][:, :2]
    return "PCA", [(a - mean) @ top if len(a) else np.zeros((0, 2)) for a in arrays]


def map_figure(pool: np.ndarray, selected: np.ndarray, queries: np.ndarray, query_target: np.ndarray,
               targets: list[str]) -> bytes:
    method, (p, s, q) = project_2d(pool, selected, queries)
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    ax.scatter(p[:, 0], p[:, 1], s=4, c=POOL, alpha=0.6, label=f"pool sample ({len(p)})", linewidths=0)
    ax.scatter(s[:, 0], s[:, 1], s=12, c=SEL, alpha=0.8, label=f"selected ({len(s)} distinct)", linewidths=0)
    markers = "*^sPDX"
    for t, name in enumerate(targets):
        m = query_target == t
        ax.scatter(q[m, 0], q[m, 1], s=110, marker=markers[t % len(markers)], c=QRY, edgecolors="black",
                   linewidths=0.6, label=f"queries{': ' + name if len(targets) > 1 else ''} ({int(m.sum())})")
    ax.set_title(f"{method} map of pool sample, queries and selection")
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    return _png(fig)


def mix_figure(pool_mix: dict[str, dict[str, float]], sel_mix: dict[str, dict[str, float]], top: int = 12) -> bytes:
    """Shares of each source and label value in the selection against the pool sample."""
    fields = [f for f in ("source", "label") if f in sel_mix or f in pool_mix]
    fig, axes = plt.subplots(1, max(1, len(fields)), figsize=(6.2 * max(1, len(fields)), 4.8), squeeze=False)
    for ax, f in zip(axes[0], fields or ["source"]):
        sm, pm = sel_mix.get(f, {}), pool_mix.get(f, {})
        keys = sorted(set(sm) | set(pm), key=lambda k: -(sm.get(k, 0) + 0.001 * pm.get(k, 0)))[:top][::-1]
        y = np.arange(len(keys))
        ax.barh(y - 0.2, [pm.get(k, 0) for k in keys], height=0.4, color=POOL, label="pool sample")
        ax.barh(y + 0.2, [sm.get(k, 0) for k in keys], height=0.4, color=SEL, label="selection")
        ax.set_yticks(y)
        ax.set_yticklabels([k[:28] for k in keys], fontsize=8)
        ax.set_xlabel("share of rows")
        ax.set_title(f"{f} mix (top {len(keys)} by share in the selection)")
        ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def distance_figure(pool_d: np.ndarray, sel_d: np.ndarray) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4))
    hi = float(max(pool_d.max(initial=0), sel_d.max(initial=0))) or 1.0
    bins = np.linspace(0, hi * 1.02, 50)
    ax.hist(pool_d, bins=bins, color=POOL, alpha=0.9, density=True, label="pool sample")
    ax.hist(sel_d, bins=bins, color=SEL, alpha=0.7, density=True, label="selected")
    ax.set_xlabel("distance to the nearest query")
    ax.set_ylabel("density of rows")
    ax.set_title("How close the selection is to the queries")
    ax.legend(fontsize=8)
    return _png(fig)


def plain_log_ticks(axis) -> None:
    """Log-axis ticks at 1, 2, 5 x 10^k written as plain numbers (no "2x10^0" minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def density_figure(neighbour_rho: np.ndarray, sel_rho: np.ndarray, sigma: float) -> bytes:
    return _png(density_axes(neighbour_rho, sel_rho, sigma))


def density_axes(neighbour_rho: np.ndarray, sel_rho: np.ndarray, sigma: float):
    """The density histogram as a matplotlib figure (log axes with plain tick labels)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    hi = max(2.0, float(max(neighbour_rho.max(initial=1), sel_rho.max(initial=1))))
    bins = np.logspace(0, np.log10(hi * 1.05), 40)
    ax.hist(neighbour_rho, bins=bins, color=POOL, alpha=0.9, label="candidates in the neighbour lists")
    ax.hist(sel_rho, bins=bins, color=SEL, alpha=0.75, label="selected rows")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.xaxis)
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel(f"kernel density rho (sigma = {sigma:.3g}); 1 = no near-duplicate")
    ax.set_ylabel("rows")
    ax.set_title("Near-duplicate density")
    ax.legend(fontsize=8)
    return fig


def coverage_figure(credited: np.ndarray, neighbours: np.ndarray, farthest: np.ndarray, flagged: np.ndarray,
                    typical: float | None) -> bytes:
    return _png(coverage_axes(credited, neighbours, farthest, flagged, typical))


def coverage_axes(credited: np.ndarray, neighbours: np.ndarray, farthest: np.ndarray, flagged: np.ndarray,
                  typical: float | None):
    """The per-query coverage figure as a matplotlib figure: every axis from 0, the legend below the bars."""
    m = credited.size
    x = np.arange(m)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(7.0, 0.28 * m + 2), 5.6), sharex=True)
    colors = np.where(flagged, FLAG, SEL)
    a1.bar(x, credited, color=colors)
    a1.set_ylabel("draws credited")
    a1.set_title("Per-query coverage: draws credited by the transport plan, neighbours used, reach")
    a1b = a1.twinx()
    a1b.plot(x, neighbours, "k.", ms=5)
    a1b.set_ylabel("neighbours with mass (dots)")
    a1.set_ylim(0, max(1.0, float(credited.max(initial=0))) * 1.1)  # from 0: one-neighbour differences stay small
    a1b.set_ylim(0, max(1.0, float(np.max(neighbours, initial=0))) * 1.1)
    a2.bar(x, farthest, color=colors)
    if typical is not None:
        a2.axhline(typical, color="black", ls="--", lw=1, label=f"pool's typical nearest-neighbour distance ({typical:.3f})")
        a2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)  # below: covers no bar
    a2.set_ylabel("farthest distance used")
    a2.set_ylim(0, max(float(farthest.max(initial=0)), typical or 0, 1e-9) * 1.1)
    a2.set_xlabel("query (orange: pulls from far away)")
    step = max(1, m // 40)
    a2.set_xticks(x[::step])
    return fig


def sweep_figure(rows: list[dict], budget: int | None = None) -> bytes:
    a = [r["alpha"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(a, [r["support"] for r in rows], "o-", color=SEL)
    if budget:
        a1.axhline(budget, color="black", ls="--", lw=1, label=f"budget {budget}")
        a1.legend(fontsize=8)
    a1.set_yscale("log")
    a1.set_xlabel("alpha")
    a1.set_ylabel("support of p")
    a2.plot(a, [r["alignment_term"] for r in rows], "o-", label="alignment term")
    a2.plot(a, [r["diversity_term"] for r in rows], "s-", label="diversity term")
    if rows and rows[0].get("ot_distance") is not None:
        a2.plot(a, [r["ot_distance"] for r in rows], "^-", label="OT distance to the queries")
    a2.set_xlabel("alpha")
    a2.legend(fontsize=8)
    fig.suptitle("alpha sweep")
    return _png(fig)
