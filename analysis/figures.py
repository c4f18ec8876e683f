"""Paper-style figures (matplotlib, Agg): aggregate intervals, profiles, P(X > Y), learning curves, FamO2O beta."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

from analysis.aggregate import METRICS, bootstrap_iqm  # noqa: E402

BETA_COLUMNS = ("beta_mean", "beta_std", "beta_q10", "beta_q50", "beta_q90")
PAPER_RC = {
    "font.family": "serif",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.4,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
}


def algorithm_colors(algorithms: Sequence[str]) -> dict[str, tuple]:
    """A stable colour per algorithm (sorted names over tab10, tab20 beyond ten)."""
    names = sorted(set(algorithms))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {a: cmap(i % cmap.N) for i, a in enumerate(names)}


def save_figure(fig: plt.Figure, stem: str | Path) -> list[Path]:
    """Save `fig` as stem.png (200 dpi) and stem.pdf, close it, return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=200)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def _grid(n: int, ncols: int = 4, size: tuple[float, float] = (2.6, 2.0)) -> tuple[plt.Figure, np.ndarray]:
    """A figure with n axes on a grid of at most `ncols` columns (spare axes hidden)."""
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _figure_legend(fig: plt.Figure, axes: Sequence, top: float, ncol: int = 6) -> None:
    """One legend above the figure with each label of `axes` once, in at most `ncol` columns."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), ncol), frameon=False,
               bbox_to_anchor=(0.5, top))


def plot_aggregate(metrics_df: pd.DataFrame, out: str | Path, title: str = "") -> list[Path]:
    """Interval plot (rliable style) of median, IQM, mean and optimality gap with 95% CIs per algorithm."""
    if metrics_df.empty:
        return []
    algs = sorted(metrics_df["algorithm"].unique())
    colors = algorithm_colors(algs)
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(1, len(METRICS), figsize=(2.3 * len(METRICS), 0.35 * len(algs) + 0.9),
                                 squeeze=False)
        for ax, metric in zip(axes[0], METRICS):
            m = metrics_df[metrics_df["metric"] == metric].set_index("algorithm")
            for i, a in enumerate(algs):
                if a not in m.index:
                    continue
                r = m.loc[a]
                ax.barh(i, r["ci_high"] - r["ci_low"], left=r["ci_low"], height=0.6, color=colors[a], alpha=0.75)
                ax.vlines(r["value"], i - 0.3, i + 0.3, color="k", linewidth=1.2)
            ax.set_yticks(range(len(algs)))
            ax.set_yticklabels(algs if ax is axes[0][0] else [])
            ax.set_title(metric)
            ax.grid(axis="y", visible=False)
            ax.set_ylim(-0.6, len(algs) - 0.4)
        fig.supxlabel("Normalized score (×100)" + (f" — {title}" if title else ""), fontsize=9)
        fig.tight_layout()
        return save_figure(fig, out)


def plot_performance_profile(profile_df: pd.DataFrame, out: str | Path, title: str = "") -> list[Path]:
    """Score-distribution performance profiles with bootstrap CI bands."""
    if profile_df.empty:
        return []
    algs = sorted(profile_df["algorithm"].unique())
    colors = algorithm_colors(algs)
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(4.2, 3.0))
        for a in algs:
            d = profile_df[profile_df["algorithm"] == a].sort_values("tau")
            ax.plot(d["tau"], d["fraction"], color=colors[a], label=a)
            ax.fill_between(d["tau"], d["ci_low"], d["ci_high"], color=colors[a], alpha=0.2, linewidth=0)
        ax.set_xlabel(r"Normalized score (×100) $\tau$")
        ax.set_ylabel(r"Fraction of runs with score $> \tau$")
        ax.set_ylim(-0.02, 1.02)
        if title:
            ax.set_title(title)
        ax.legend(frameon=False, loc="best")
        fig.tight_layout()
        return save_figure(fig, out)


def plot_probability_of_improvement(poi_df: pd.DataFrame, out: str | Path, title: str = "") -> list[Path]:
    """P(X > Y) per algorithm pair with CIs, X labelled left and Y right."""
    if poi_df.empty:
        return []
    colors = algorithm_colors(list(poi_df["algorithm_x"]) + list(poi_df["algorithm_y"]))
    n = len(poi_df)
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(4.2, 0.4 * n + 0.9))
        for i, r in enumerate(poi_df.itertuples(index=False)):
            ax.barh(i, r.ci_high - r.ci_low, left=r.ci_low, height=0.6, color=colors[r.algorithm_x], alpha=0.75)
            ax.vlines(r.probability, i - 0.3, i + 0.3, color="k", linewidth=1.2)
            ax.plot(r.probability, i, "o", color=colors[r.algorithm_x], markersize=4, markeredgecolor="k")
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.set_yticks(range(n))
        ax.set_yticklabels(poi_df["algorithm_x"])
        ax.set_ylim(-0.6, n - 0.4)
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel("P(X > Y)")
        ax.set_ylabel("Algorithm X")
        ax.grid(axis="y", visible=False)
        twin = ax.twinx()
        twin.set_ylim(ax.get_ylim())
        twin.set_yticks(range(n))
        twin.set_yticklabels(poi_df["algorithm_y"])
        twin.set_ylabel("Algorithm Y")
        twin.spines["right"].set_visible(True)
        twin.grid(False)
        if title:
            ax.set_title(title)
        fig.tight_layout()
        return save_figure(fig, out)


def _with_x(evals_df: pd.DataFrame) -> pd.DataFrame:
    """Evaluations with a training-progress axis x: offline steps, then online steps after the offline ones."""
    parts = []
    for _, g in evals_df.groupby("run_id", sort=False):
        off = g[g["phase"] == "offline"]
        onl = g[g["phase"] == "online"]
        switch = float(off["step"].max()) if len(off) else 0.0
        offset = switch if len(off) and len(onl) and onl["step"].min() <= switch else 0.0
        g = g.assign(x=np.where(g["phase"] == "online", g["step"] + offset, g["step"]).astype(float),
                     switch=switch if len(off) and len(onl) else np.nan)
        parts.append(g)
    return pd.concat(parts, ignore_index=True) if parts else evals_df.assign(x=[], switch=[])


def learning_curve_data(evals_df: pd.DataFrame, reps: int = 500, confidence: float = 0.95,
                        seed: int = 0) -> pd.DataFrame:
    """IQM over seeds of normalized_score at each evaluation point, with a bootstrap CI over seeds."""
    cols = ["algorithm", "dataset", "phase", "x", "iqm", "ci_low", "ci_high", "n_seeds", "switch"]
    if evals_df.empty:
        return pd.DataFrame(columns=cols)
    df = _with_x(evals_df.dropna(subset=["normalized_score"]))
    rng = np.random.default_rng(seed)
    rows = []
    for (alg, ds, phase, x), g in df.groupby(["algorithm", "dataset", "phase", "x"], sort=True):
        point, lo, hi = bootstrap_iqm(g["normalized_score"].to_numpy(float), reps=reps, confidence=confidence,
                                      rng=rng)
        rows.append(dict(algorithm=alg, dataset=ds, phase=phase, x=x, iqm=point, ci_low=lo, ci_high=hi,
                         n_seeds=int(g["seed"].nunique()),
                         switch=float(g["switch"].median()) if g["switch"].notna().any() else float("nan")))
    return pd.DataFrame(rows, columns=cols)


def plot_learning_curves(evals_df: pd.DataFrame, out: str | Path, reps: int = 500,
                         curves: pd.DataFrame | None = None) -> list[Path]:
    """Per-dataset learning curves: IQM over seeds with bootstrap band; dashed line at the offline->online switch."""
    curves = curves if curves is not None else learning_curve_data(evals_df, reps=reps)
    if curves.empty:
        return []
    datasets = sorted(curves["dataset"].unique())
    colors = algorithm_colors(curves["algorithm"].unique())
    with plt.rc_context(PAPER_RC):
        fig, axes = _grid(len(datasets))
        for ax, ds in zip(axes.flat, datasets):
            d = curves[curves["dataset"] == ds]
            for alg, g in d.groupby("algorithm", sort=True):
                g = g.sort_values("x")
                ax.plot(g["x"], g["iqm"], color=colors[alg], label=alg)
                ax.fill_between(g["x"], g["ci_low"], g["ci_high"], color=colors[alg], alpha=0.2, linewidth=0)
            for sw in sorted(set(d["switch"].dropna().round(0))):
                ax.axvline(sw, color="grey", linestyle="--", linewidth=0.8)
            ax.set_title(ds)
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        for ax in axes[-1]:
            ax.set_xlabel("Step (offline, then online)")
        for ax in axes[:, 0]:
            ax.set_ylabel("Normalized score (IQM)")
        _figure_legend(fig, axes.flat, 1.02)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        return save_figure(fig, out)


def has_beta(evals_df: pd.DataFrame) -> bool:
    """Whether the evaluations carry FamO2O beta statistics (beta_* columns with values)."""
    cols = [c for c in evals_df.columns if c.startswith("beta_")]
    return bool(cols) and bool(evals_df[cols].notna().any().any())


def beta_states(runs_df: pd.DataFrame) -> pd.DataFrame:
    """β of each recorded dataset state at the end of every run (betas.npy): columns dataset, algorithm, seed, beta."""
    frames = []
    if runs_df.empty or "run_dir" not in runs_df.columns:
        return pd.DataFrame(columns=["dataset", "algorithm", "seed", "beta"])
    for r in runs_df.itertuples(index=False):
        path = Path(str(r.run_dir)) / "betas.npy"
        if not path.is_file():
            continue
        b = np.load(path).reshape(-1)
        frames.append(pd.DataFrame({"dataset": r.dataset, "algorithm": r.algorithm, "seed": r.seed, "beta": b}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["dataset", "algorithm", "seed",
                                                                                       "beta"])


def plot_beta_states(states: pd.DataFrame, out: str | Path) -> list[Path]:
    """Histogram of β over dataset states per dataset: one outline per run (algorithm colour), final balance model."""
    if states.empty:
        return []
    datasets = sorted(states["dataset"].unique())
    colors = algorithm_colors(states["algorithm"].unique())
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 2.6), squeeze=False)
        for ax, ds in zip(axes[0], datasets):
            d = states[states["dataset"] == ds]
            lo, hi = float(d["beta"].min()), float(d["beta"].max())
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
            for (alg, _seed), g in d.groupby(["algorithm", "seed"], sort=True):
                ax.hist(g["beta"], bins=bins, histtype="step", color=colors[alg], density=True, linewidth=1.2,
                        label=alg)
            ax.set_title(ds)
            ax.set_xlabel(r"$\beta$ chosen by the balance model")
            ax.set_ylabel("density over dataset states" if ax is axes[0, 0] else "")
        _figure_legend(fig, axes[0], 1.04)
        fig.tight_layout(rect=(0, 0, 1, 0.92))
        return save_figure(fig, out)


def plot_beta(evals_df: pd.DataFrame, out: str | Path) -> list[Path]:
    """Histogram of each run's beta (beta_mean over its evaluations) per dataset, and per-run last-eval quantiles."""
    if evals_df.empty or not has_beta(evals_df) or "beta_mean" not in evals_df.columns:
        return []
    df = evals_df.dropna(subset=["beta_mean"])
    datasets = sorted(df["dataset"].unique())
    colors = algorithm_colors(df["algorithm"].unique())
    n = len(datasets)
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(2, n, figsize=(3.0 * n, 4.6), squeeze=False)
        for j, ds in enumerate(datasets):
            d = df[df["dataset"] == ds]
            lo, hi = float(d["beta_mean"].min()), float(d["beta_mean"].max())
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 21)
            ax = axes[0, j]
            for alg, g in d.groupby("algorithm", sort=True):
                ax.hist(g["beta_mean"], bins=bins, histtype="stepfilled", color=colors[alg], alpha=0.35,
                        edgecolor=colors[alg], label=alg)
            ax.set_title(ds)
            ax.set_xlabel(r"$\beta$ mean over states, all evaluations")
            ax.set_ylabel("Evaluations" if j == 0 else "")
            ax2 = axes[1, j]
            last = d.sort_values("step").groupby("run_id", sort=True).tail(1).sort_values(["algorithm", "seed"])
            for i, r in enumerate(last.itertuples(index=False)):
                c = colors[r.algorithm]
                q10 = getattr(r, "beta_q10", np.nan)
                q90 = getattr(r, "beta_q90", np.nan)
                q50 = getattr(r, "beta_q50", np.nan)
                if np.isfinite(q10) and np.isfinite(q90):
                    ax2.hlines(i, q10, q90, color=c, linewidth=2.0, alpha=0.7)
                if np.isfinite(q50):
                    ax2.plot(q50, i, "|", color="k", markersize=8)
                ax2.plot(r.beta_mean, i, "o", color=c, markersize=3)
            ax2.set_yticks(range(len(last)))
            ax2.set_yticklabels([f"{r.algorithm} s{r.seed}" for r in last.itertuples(index=False)])
            ax2.set_xlabel(r"$\beta$ at the last evaluation")
            ax2.grid(axis="y", visible=False)
        _figure_legend(fig, axes[0], 1.02)
        fig.text(0.5, 0.0, r"Bottom: one row per run; bar = $\beta$ q10–q90 over states, | = median, dot = mean.",
                 ha="center", fontsize=8)
        fig.tight_layout(rect=(0, 0.03, 1, 0.95))
        return save_figure(fig, out)
