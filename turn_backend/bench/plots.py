"""The report's PNG plots: accuracy vs time, tau sensitivity, clean-set purity per round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.bench.grid import TAUS, Plan, parse_method
from turn_backend.bench.report import _json_list, _mean_of, time_with_features


def make_plots(df: pd.DataFrame, plan: Plan, features_once: float | None, plot_dir: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    made = []
    setting = plan.ablation_setting or (plan.settings[1] if len(plan.settings) > 1 else plan.settings[0])
    g = df[(df["setting"] == setting) & (df["group"] == "grid")].copy()
    if not g.empty:
        g["t"] = time_with_features(g, features_once)
        fig, ax = plt.subplots(figsize=(8, 5))
        points = [(gm["t"].mean(), gm["test_acc_last"].mean() * 100, m) for m, gm in g.groupby("method", sort=False)]
        for x, y, m in points:
            turn = parse_method(m)[0].startswith("turn")
            ax.scatter(x, y, s=60 if turn else 30, marker="*" if turn else "o")
        _label_without_overlap(fig, ax, points)
        ax.set_xlabel("wall time per run, s (the one-off feature extraction charged to every method)")
        ax.set_ylabel("last-round test accuracy, %")
        ax.set_title(f"Accuracy vs time, {setting} (Figure 3a)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(plot_dir / "accuracy_vs_time.png", dpi=110)
        plt.close(fig)
        made.append(("accuracy_vs_time.png", f"Accuracy vs wall time on {setting}"))
    if plan.ablation_setting:
        rows = []
        for t in TAUS:
            spec = "turn" if t == 0.6 else f"turn:tau={t:g}"
            gt = df[(df["method"] == spec) & (df["setting"] == plan.ablation_setting)
                    & (df["seed"].isin(plan.seeds[:1]))]
            if len(gt):
                rows.append((t, _mean_of(gt, "test_acc_best"), _mean_of(gt, "test_acc_last"),
                             _mean_of(gt, "clean_purity"), _mean_of(gt, "n_clean")))
        if rows:
            a = np.array(rows, dtype=float)
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(a[:, 0], a[:, 1] * 100, "o-", label="best test acc")
            ax.plot(a[:, 0], a[:, 2] * 100, "s--", label="last test acc")
            ax.plot(a[:, 0], a[:, 3] * 100, "^:", label="round-1 clean-set purity")
            ax2 = ax.twinx()
            ax2.bar(a[:, 0], a[:, 4], width=0.04, alpha=0.2, color="grey")
            ax2.set_ylabel("round-1 clean-set size (bars)")
            ax.set_xlabel("tau")
            ax.set_ylabel("%")
            ax.set_title(f"TURN's sensitivity to tau, {plan.ablation_setting} (Figure 3b)")
            ax.legend(loc="lower left", fontsize=8)
            fig.tight_layout()
            fig.savefig(plot_dir / "tau_sensitivity.png", dpi=110)
            plt.close(fig)
            made.append(("tau_sensitivity.png", "TURN's accuracy and clean-set purity against tau"))
    tg = df[(df["group"] == "grid") & (df["base_method"].isin(["turn", "turn+"]))]
    if not tg.empty:
        fig, axes = plt.subplots(1, len(plan.settings), figsize=(3.2 * len(plan.settings), 3.2), sharey=True,
                                 squeeze=False)
        for ax, s in zip(axes[0], plan.settings):
            for m, gm in tg[tg["setting"] == s].groupby("method", sort=False):
                curves = [_json_list(x) for x in gm["purity_per_round"]]
                curves = [c for c in curves if c and all(v is not None for v in c)]
                if curves:
                    k = min(len(c) for c in curves)
                    mean = np.mean([c[:k] for c in curves], axis=0) * 100
                    ax.plot(range(1, k + 1), mean, "o-", label=m)
            ax.set_title(s)
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("clean-set purity, %")
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot_dir / "purity_per_round.png", dpi=110)
        plt.close(fig)
        made.append(("purity_per_round.png", "Purity of TURN's clean set in each round"))
    return made


def _label_without_overlap(fig, ax, points: list[tuple[float, float, str]], fontsize: int = 8) -> None:
    """Each point's label at the first of a few offsets where it overlaps no label placed yet
    (greedy, in display pixels; a label's box is estimated from its length)."""
    fig.canvas.draw()  # fixes the axes' limits, so that data map to pixels
    char_w, height = 0.62 * fontsize * fig.dpi / 72, 1.2 * fontsize * fig.dpi / 72
    placed: list[tuple[float, float, float, float]] = []
    for x, y, text in sorted(points, key=lambda p: -p[1]):
        px, py = ax.transData.transform((x, y))
        width = char_w * len(text)
        for dx, dy in ((5, 3), (5, -height - 3), (-width - 5, 3), (-width - 5, -height - 3),
                       (5, height + 6), (5, -2 * height - 6)):
            box = (px + dx, py + dy, px + dx + width, py + dy + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(text, (x, y), textcoords="offset pixels", xytext=(dx, dy), fontsize=fontsize)
