"""Plots: accuracy against budget per difficulty level (more in the report issue)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_budget_curves(
    curves: dict[str, dict[int, float]],
    cot: dict[str, float],
    path: str | Path,
    title: str,
) -> Path:
    """One line per level: majority@k accuracy vs k (log2 x axis); CoT as a dashed reference per level."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, curve) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        ks = sorted(curve)
        ax.plot(ks, [100 * curve[k] for k in ks], marker="o", color=color, label=f"majority, {label}")
        if label in cot:
            ax.axhline(100 * cot[label], color=color, linestyle="--", linewidth=1, alpha=0.7)
    ax.set_xscale("log", base=2)
    all_ks = sorted({k for c in curves.values() for k in c})
    ax.set_xticks(all_ks, [str(k) for k in all_ks])
    ax.minorticks_off()
    ax.set_xlabel("samples per problem (N)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="dashed: CoT (greedy)", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
