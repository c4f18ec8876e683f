"""Paper-style figures (matplotlib, Agg): aggregate intervals, profiles, P(X > Y), learning curves, FamO2O beta."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import EngFormatter, MaxNLocator  # noqa: E402

from analysis.aggregate import METRICS, MIN_RUNS_FOR_INTERVALS, bootstrap_iqm  # noqa: E402

BETA_COLUMNS = ("beta_mean", "beta_std", "beta_q10", "beta_q50", "beta_q90")
REFERENCE_STYLE = dict(color="0.35", linestyle=(0, (4, 2)), linewidth=0.9)  # the behaviour policy's level
CURVE_BAND = (f"Thick line: IQM over seeds; band: 95% percentile-bootstrap interval of that IQM over seeds, drawn only "
              f"with {MIN_RUNS_FOR_INTERVALS} or more seeds; with fewer, thin lines show the individual seeds.")
SEED_STYLES = ("-", "--", ":", "-.")
SWITCH = "switch offline → online (0 env steps)"
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


def axes_grid(n: int, ncols: int = 4, size: tuple[float, float] = (2.6, 2.0)) -> tuple[plt.Figure, np.ndarray]:
    """A figure with n axes on a grid of at most `ncols` columns (spare axes hidden)."""
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def figure_legend(fig: plt.Figure, axes: Sequence, top: float, ncol: int = 6, loc: str = "upper center") -> None:
    """One legend above the figure with each label of `axes` once, in at most `ncol` columns (`loc` anchors it)."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc=loc, ncol=max(1, min(len(labels), ncol)), frameon=False,
               bbox_to_anchor=(0.5, top))


def add_caption(fig: plt.Figure, text: str) -> None:
    """A caption under the axes (wrapped to the figure's width), kept in the saved file by the tight bounding box."""
    if not text:
        return
    width = max(40, int(fig.get_figwidth() * 15))
    fig.text(0.0, -0.01, textwrap.fill(text, width), ha="left", va="top", fontsize=7, color="0.2")


def _label(labels: dict[str, str] | None, algorithm: str) -> str:
    """The display label of an algorithm (its name unless `labels` says otherwise)."""
    return (labels or {}).get(algorithm, algorithm)


def _interval_or_point(ax: plt.Axes, i: int, value: float, low: float, high: float, color: tuple) -> bool:
    """A horizontal interval bar with the point estimate, or the point alone (hollow) when there is no interval."""
    if np.isfinite(low) and np.isfinite(high):
        ax.barh(i, high - low, left=low, height=0.6, color=color, alpha=0.75)
        ax.vlines(value, i - 0.3, i + 0.3, color="k", linewidth=1.2)
        return True
    ax.plot(value, i, "o", markerfacecolor="white", markeredgecolor=color, markeredgewidth=1.5, markersize=6)
    return False


def plot_aggregate(metrics_df: pd.DataFrame, out: str | Path, title: str = "", caption: str = "",
                   reference: dict[str, float] | None = None, labels: dict[str, str] | None = None) -> list[Path]:
    """Interval plot (rliable style) of median, IQM, mean and optimality gap with 95% CIs per algorithm.

    Rows without an interval (too few runs, zero width) show a hollow point only. `reference` (metric -> value)
    draws the behaviour policy's level of each metric as a dashed line.
    """
    if metrics_df.empty:
        return []
    algs = sorted(metrics_df["algorithm"].unique())
    colors = algorithm_colors(algs)
    bare = False
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(1, len(METRICS), figsize=(2.4 * len(METRICS), 0.35 * len(algs) + 1.0),
                                 squeeze=False)
        for ax, metric in zip(axes[0], METRICS):
            m = metrics_df[metrics_df["metric"] == metric].set_index("algorithm")
            for i, a in enumerate(algs):
                if a in m.index:
                    r = m.loc[a]
                    bare |= not _interval_or_point(ax, i, r["value"], r["ci_low"], r["ci_high"], colors[a])
            if reference and np.isfinite(reference.get(metric, np.nan)):
                ax.axvline(reference[metric], **REFERENCE_STYLE, label="behaviour policy")
            ax.set_yticks(range(len(algs)))
            ax.set_yticklabels([_label(labels, a) for a in algs] if ax is axes[0][0] else [])
            ax.set_title(metric)
            ax.grid(axis="y", visible=False)
            ax.set_ylim(-0.6, len(algs) - 0.4)
        fig.supxlabel("Normalized score (×100)" + (f" — {title}" if title else ""), fontsize=9)
        if reference:
            figure_legend(fig, axes[0], 1.0, loc="lower center")
        fig.tight_layout()
        note = (f"Hollow points: point estimates without an interval (fewer than {MIN_RUNS_FOR_INTERVALS} runs per "
                "task, or zero width); bars: 95% stratified-bootstrap intervals. " if bare else
                "Bars: 95% stratified-bootstrap intervals; black ticks: point estimates. ")
        add_caption(fig, note + ("Dashed: the behaviour policy. " if reference else "") + caption)
        return save_figure(fig, out)


def plot_performance_profile(profile_df: pd.DataFrame, out: str | Path, title: str = "", caption: str = "",
                             behaviour: Sequence[float] = (), labels: dict[str, str] | None = None) -> list[Path]:
    """Score-distribution performance profiles, with bootstrap bands where there are enough runs.

    `behaviour` (the behaviour policy's score on each task) adds its profile as a dashed step line. The x axis spans
    the thresholds the profile was computed on (fitted to the data).
    """
    if profile_df.empty:
        return []
    algs = sorted(profile_df["algorithm"].unique())
    colors = algorithm_colors(algs)
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(6.4, 3.2))
        for a in algs:
            d = profile_df[profile_df["algorithm"] == a].sort_values("tau")
            ax.plot(d["tau"], d["fraction"], color=colors[a], label=_label(labels, a))
            if d["ci_low"].notna().any():
                ax.fill_between(d["tau"], d["ci_low"], d["ci_high"], color=colors[a], alpha=0.2, linewidth=0)
        tau = np.sort(profile_df["tau"].unique())
        if len(behaviour):
            b = np.asarray(behaviour, dtype=float)
            ax.step(tau, [(b > t).mean() for t in tau], where="post", **REFERENCE_STYLE, label="behaviour policy")
        ax.set_xlim(tau[0], tau[-1])
        ax.set_xlabel(r"Normalized score (×100) $\tau$")
        ax.set_ylabel(r"Fraction of runs with score $> \tau$")
        ax.set_ylim(-0.02, 1.02)
        if title:
            ax.set_title(title)
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        banded = profile_df["ci_low"].notna().any()
        note = ("Bands: 95% bootstrap intervals. " if banded else
                f"No bands: fewer than {MIN_RUNS_FOR_INTERVALS} runs per task. ")
        add_caption(fig, note + caption)
        return save_figure(fig, out)


def plot_probability_of_improvement(poi_df: pd.DataFrame, out: str | Path, title: str = "", caption: str = "",
                                    labels: dict[str, str] | None = None) -> list[Path]:
    """P(X > Y) per algorithm pair with CIs, X labelled left and Y right; pairs without an interval say why."""
    if poi_df.empty:
        return []
    colors = algorithm_colors(list(poi_df["algorithm_x"]) + list(poi_df["algorithm_y"]))
    n = len(poi_df)
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(6.0, 0.4 * n + 1.0))
        for i, r in enumerate(poi_df.itertuples(index=False)):
            _interval_or_point(ax, i, r.probability, r.ci_low, r.ci_high, colors[r.algorithm_x])
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.set_yticks(range(n))
        ax.set_yticklabels([_label(labels, a) for a in poi_df["algorithm_x"]])
        ax.set_ylim(-0.6, n - 0.4)
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel("P(X > Y)")
        ax.set_ylabel("Algorithm X")
        ax.grid(axis="y", visible=False)
        twin = ax.twinx()
        twin.set_ylim(ax.get_ylim())
        twin.set_yticks(range(n))
        twin.set_yticklabels([_label(labels, a) for a in poi_df["algorithm_y"]])
        twin.set_ylabel("Algorithm Y")
        twin.spines["right"].set_visible(True)
        twin.grid(False)
        if title:
            ax.set_title(title)
        fig.tight_layout()
        add_caption(fig, f"Hollow points: P without an interval (fewer than {MIN_RUNS_FOR_INTERVALS} runs per task, "
                         "or every bootstrap sample gives the same P); bars: 95% stratified-bootstrap intervals. "
                    + caption)
        return save_figure(fig, out)


def curve_evals(evals_df: pd.DataFrame) -> pd.DataFrame:
    """The evaluations a learning curve shows: scored rows, without per-member rows (evals.csv `member` set and
    `stage` other than 'selected', as Uni-O4 logs each ensemble member before selecting one)."""
    df = evals_df.dropna(subset=["normalized_score"])
    if "member" in df.columns:
        stage = df["stage"] if "stage" in df.columns else pd.Series("", index=df.index)
        df = df[df["member"].isna() | (stage == "selected")]
    return df


def curve_x(evals_df: pd.DataFrame) -> pd.Series:
    """The x of each evaluation: gradient steps (`step`) in the offline phase, env steps (`env_steps`) online."""
    return pd.Series(np.where(evals_df["phase"] == "online", evals_df["env_steps"], evals_df["step"]),
                     index=evals_df.index, dtype=float)


def learning_curve_data(evals_df: pd.DataFrame, reps: int = 500, confidence: float = 0.95, seed: int = 0,
                        min_runs: int = MIN_RUNS_FOR_INTERVALS) -> pd.DataFrame:
    """IQM over seeds of normalized_score at each evaluation point of each phase, with a bootstrap CI over seeds.

    x is the offline phase's gradient steps and the online phase's env steps (curve_x): the two phases are on
    different axes and are never joined through an offset. No interval (NaN) from fewer than `min_runs` seeds.
    """
    cols = ["algorithm", "dataset", "phase", "x", "x_unit", "iqm", "ci_low", "ci_high", "n_seeds"]
    if evals_df.empty:
        return pd.DataFrame(columns=cols)
    df = curve_evals(evals_df)
    df = df.assign(x=curve_x(df))
    rng = np.random.default_rng(seed)
    rows = []
    for (alg, ds, phase, x), g in df.groupby(["algorithm", "dataset", "phase", "x"], sort=True):
        point, lo, hi = bootstrap_iqm(g["normalized_score"].to_numpy(float), reps=reps, confidence=confidence,
                                      rng=rng)
        n = int(g["seed"].nunique())
        if n < min_runs:
            lo = hi = float("nan")
        rows.append(dict(algorithm=alg, dataset=ds, phase=phase, x=x, iqm=point, ci_low=lo, ci_high=hi, n_seeds=n,
                         x_unit="env steps" if phase == "online" else "gradient steps"))
    return pd.DataFrame(rows, columns=cols)


def _curve_layout(curves: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Datasets (rows of panel pairs) and phases (panels per dataset) present in the curves."""
    phases = [p for p in ("offline", "online") if (curves["phase"] == p).any()]
    return sorted(curves["dataset"].unique()), phases


def plot_learning_curves(evals_df: pd.DataFrame, out: str | Path, reps: int = 500,
                         curves: pd.DataFrame | None = None, caption: str = "",
                         behaviour: dict[str, float] | None = None, labels: dict[str, str] | None = None
                         ) -> list[Path]:
    """Per dataset, an offline panel (x: gradient steps) and an online panel (x: env steps).

    Lines are the IQM over seeds; the band its bootstrap interval (enough seeds) or thin lines the seeds (too few).
    The online panel starts at 0 env steps from the last offline point (the switch, labelled) for algorithms that
    ran both phases; the behaviour policy's score is a dashed line.
    """
    curves = curves if curves is not None else learning_curve_data(evals_df, reps=reps)
    if curves.empty:
        return []
    datasets, phases = _curve_layout(curves)
    colors = algorithm_colors(curves["algorithm"].unique())
    seeds = curve_evals(evals_df)
    seeds = seeds.assign(x=curve_x(seeds))
    pairs = 1 if len(datasets) == 1 else 2
    ncols = pairs * len(phases)
    nrows = math.ceil(len(datasets) / pairs)
    width = 3.6 if pairs == 1 else 2.7
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 2.4 * nrows), squeeze=False)
        for ax in axes.flat[len(datasets) * len(phases):]:
            ax.set_visible(False)
        for k, ds in enumerate(datasets):
            row, first = divmod(k, pairs)
            panel = dict(zip(phases, axes[row, first * len(phases):(first + 1) * len(phases)]))
            d = curves[curves["dataset"] == ds]
            for alg, g in d.groupby("algorithm", sort=True):
                c = colors[alg]
                off = g[g["phase"] == "offline"].sort_values("x")
                for phase, ax in panel.items():
                    gp = g[g["phase"] == phase].sort_values("x")
                    x, y = gp["x"].to_numpy(float), gp["iqm"].to_numpy(float)
                    if len(x):
                        ax.plot(x, y, color=c, marker="o", markersize=2.5, label=_label(labels, alg))
                    if phase == "online" and len(off) and len(gp) and x[0] > 0:  # start from the switch
                        start = off["iqm"].iloc[-1]
                        ax.plot([0.0, x[0]], [start, y[0]], color=c, linestyle=":")
                        ax.plot(0.0, start, "o", markerfacecolor="white", markeredgecolor=c, markersize=4, zorder=3)
                    if gp["ci_low"].notna().any():
                        ax.fill_between(gp["x"], gp["ci_low"], gp["ci_high"], color=c, alpha=0.2, linewidth=0)
                    elif len(gp):
                        sd = seeds[(seeds["algorithm"] == alg) & (seeds["dataset"] == ds) & (seeds["phase"] == phase)]
                        for _, gs in sd.groupby("run_id"):
                            gs = gs.sort_values("x")
                            ax.plot(gs["x"], gs["normalized_score"], color=c, linewidth=0.6, alpha=0.45)
            for phase, ax in panel.items():
                if not (d["phase"] == phase).any():
                    ax.text(0.5, 0.5, f"no {phase} phase", transform=ax.transAxes, ha="center", va="center",
                            color="0.4")
                    ax.set_xticks([])
                    ax.set_yticks([])
                elif behaviour and ds in behaviour:
                    ax.axhline(behaviour[ds], **REFERENCE_STYLE, label="behaviour policy")
                name = Path(ds).name if "/" in ds else ds  # a file path: its name
                ax.set_title(f"{name}: {phase}" if len(phases) > 1 else name)
                ax.set_xlabel("gradient steps (offline phase)" if phase == "offline" else
                              "env steps (online phase)")
                ax.xaxis.set_major_formatter(EngFormatter(sep=""))
                if phase == "online" and "offline" in panel and (d["phase"] == phase).any():
                    ax.axvline(0.0, color="0.6", linewidth=0.8, label=SWITCH)
                ax.set_ylabel("Normalized score" if ax is axes[row, 0] else "")
        figure_legend(fig, axes.flat, 1.0, ncol=max(1, int(width * ncols / 2.3)), loc="lower center")
        fig.tight_layout()
        switch = ("Online panels start at the switch (0 env steps) from the last offline evaluation (hollow point, "
                  "dotted to the first online one). "
                  if "online" in phases and "offline" in phases else "")
        add_caption(fig, f"Offline phase against gradient steps, online phase against environment steps. {switch}"
                         f"{CURVE_BAND} " + ("Dashed: the behaviour policy. " if behaviour else "") + caption)
        return save_figure(fig, out)


def has_beta(evals_df: pd.DataFrame) -> bool:
    """Whether the evaluations carry FamO2O beta statistics (beta_* columns with values)."""
    cols = [c for c in evals_df.columns if c.startswith("beta_")]
    return bool(cols) and bool(evals_df[cols].notna().any().any())


def beta_states(runs_df: pd.DataFrame, root: str | Path = ".") -> pd.DataFrame:
    """β of each recorded dataset state at the end of every run (betas.npy): columns dataset, algorithm, seed, beta.

    Relative run directories are taken relative to `root`.
    """
    frames = []
    if runs_df.empty or "run_dir" not in runs_df.columns:
        return pd.DataFrame(columns=["dataset", "algorithm", "seed", "beta"])
    for r in runs_df.itertuples(index=False):
        path = Path(root) / str(r.run_dir) / "betas.npy"
        if not path.is_file():
            continue
        b = np.load(path).reshape(-1)
        frames.append(pd.DataFrame({"dataset": r.dataset, "algorithm": r.algorithm, "seed": r.seed, "beta": b}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["dataset", "algorithm", "seed",
                                                                                       "beta"])


def plot_beta_states(states: pd.DataFrame, out: str | Path, caption: str = "",
                     labels: dict[str, str] | None = None) -> list[Path]:
    """Histogram of β over dataset states per dataset: one outline per run (algorithm colour, a line style per
    seed, each run in the legend), final balance model."""
    if states.empty:
        return []
    datasets = sorted(states["dataset"].unique())
    colors = algorithm_colors(states["algorithm"].unique())
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(1, len(datasets), figsize=(3.4 * len(datasets) + 0.6, 2.6), squeeze=False)
        for ax, ds in zip(axes[0], datasets):
            d = states[states["dataset"] == ds]
            lo, hi = float(d["beta"].min()), float(d["beta"].max())
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
            for alg, ga in d.groupby("algorithm", sort=True):
                for k, (seed, g) in enumerate(ga.groupby("seed", sort=True)):
                    ax.hist(g["beta"], bins=bins, histtype="step", color=colors[alg], density=True, linewidth=1.2,
                            linestyle=SEED_STYLES[k % len(SEED_STYLES)], label=f"{_label(labels, alg)} seed {seed}")
            ax.set_title(ds)
            ax.set_xlabel(r"$\beta$ chosen by the balance model")
            ax.set_ylabel("density over dataset states" if ax is axes[0, 0] else "")
        figure_legend(fig, axes[0], 1.0, ncol=4, loc="lower center")
        fig.tight_layout()
        add_caption(fig, "One outline per run (final balance model over the dataset's states). " + caption)
        return save_figure(fig, out)


def plot_beta(evals_df: pd.DataFrame, out: str | Path, caption: str = "",
              labels: dict[str, str] | None = None) -> list[Path]:
    """Histogram of each run's beta (beta_mean over its evaluations) per dataset, and per-run last-eval quantiles."""
    if evals_df.empty or not has_beta(evals_df) or "beta_mean" not in evals_df.columns:
        return []
    df = evals_df.dropna(subset=["beta_mean"])
    datasets = sorted(df["dataset"].unique())
    colors = algorithm_colors(df["algorithm"].unique())
    n = len(datasets)
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(2, n, figsize=(3.2 * n + 0.6, 4.6), squeeze=False)
        for j, ds in enumerate(datasets):
            d = df[df["dataset"] == ds]
            lo, hi = float(d["beta_mean"].min()), float(d["beta_mean"].max())
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 21)
            ax = axes[0, j]
            for alg, g in d.groupby("algorithm", sort=True):
                ax.hist(g["beta_mean"], bins=bins, histtype="stepfilled", color=colors[alg], alpha=0.35,
                        edgecolor=colors[alg], label=_label(labels, alg))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
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
        figure_legend(fig, axes[0], 1.0, loc="lower center")
        fig.tight_layout()
        add_caption(fig, r"Top: histogram of each evaluation's mean $\beta$ over states. Bottom: one row per run; "
                         r"bar = $\beta$ q10–q90 over states, | = median, dot = mean. " + caption)
        return save_figure(fig, out)
