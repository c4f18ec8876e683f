"""Uni-O4's offline improvement against BC of the same ensemble: member scores over improvement steps, per run.

Reads the `bc` and `improve` rows of each run's evals.csv (written with --offline-eval-every), prints a markdown
table (BC members, members after the improvement, the mean change) and draws one panel per dataset: the mean over
the members against the improvement step (0 = the BC ensemble), with the members' range shaded.

  python results/uni_o4/improvement_plot.py OUT_STEM RUN_DIR[=LABEL] [RUN_DIR[=LABEL] ...]
writes OUT_STEM.png and OUT_STEM.pdf.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from analysis.figures import PAPER_RC, algorithm_colors, axes_grid, figure_legend, plt, save_figure  # noqa: E402
from o2o.records import read_summary  # noqa: E402


def member_curve(run: Path) -> pd.DataFrame:
    """Rows (improve_step, member, score) of the BC ensemble (step 0) and every improvement evaluation."""
    ev = pd.read_csv(run / "evals.csv")
    ev = ev[ev["stage"].isin(["bc", "improve"])].copy()
    if ev.empty:
        raise SystemExit(f"{run}: no bc/improve rows in evals.csv (an offline Uni-O4 run?)")
    start = ev.loc[ev["stage"] == "bc", "step"].max()
    ev["improve_step"] = ev["step"] - start
    return ev[["improve_step", "member", "normalized_score"]].sort_values(["improve_step", "member"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("runs", nargs="+")
    args = p.parse_args(argv)
    runs = []
    for item in args.runs:
        path, _, label = item.partition("=")
        run = Path(path)
        summary = read_summary(run)
        if summary is None:
            raise SystemExit(f"{run}: no readable summary.json (not a run directory?)")
        runs.append((label or run.name, summary["dataset"], member_curve(run)))
    print("| run | dataset | BC members | after improvement | mean change |\n|---|---|---|---|---|")
    for label, dataset, cur in runs:
        bc = cur[cur["improve_step"] == 0]["normalized_score"]
        end = cur[cur["improve_step"] == cur["improve_step"].max()]["normalized_score"]
        print(f"| {label} | {dataset} | {', '.join(f'{v:.1f}' for v in bc)} | {', '.join(f'{v:.1f}' for v in end)} "
              f"| {end.mean() - bc.mean():+.1f} |")
    datasets = list(dict.fromkeys(d for _, d, _ in runs))
    colors = dict(zip([r[0] for r in runs], plt.get_cmap("tab10").colors)) if len(runs) <= 10 else \
        algorithm_colors([r[0] for r in runs])
    with plt.rc_context(PAPER_RC):
        fig, axes = axes_grid(len(datasets), ncols=len(datasets), size=(3.2, 2.4))
        for ax, ds in zip(axes.flat, datasets):
            for label, dataset, cur in runs:
                if dataset != ds:
                    continue
                g = cur.groupby("improve_step")["normalized_score"]
                x = g.mean().index.to_numpy()
                ax.plot(x, g.mean().to_numpy(), marker="o", markersize=3, label=label, color=colors[label])
                ax.fill_between(x, g.min().to_numpy(), g.max().to_numpy(), color=colors[label], alpha=0.15)
            ax.set_title(ds)
            ax.set_xlabel("improvement step (0 = BC)")
            ax.set_ylabel("normalized score")
        figure_legend(fig, axes.flat, top=1.03 + 0.07 * ((len(runs) + 2) // 3), ncol=3)
        for path in save_figure(fig, args.out):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
