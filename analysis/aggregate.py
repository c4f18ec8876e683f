"""Aggregate metrics with rliable: score matrices, IQM/median/mean/optimality gap, profiles, P(X > Y)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from rliable import library as rly
from rliable import metrics

SCORE_COLUMNS = ("final_score", "last_score", "best_score", "offline_score", "online_score", "offline_best",
                 "online_best")
METRICS = ("Median", "IQM", "Mean", "Optimality Gap")
SCALE = 100.0  # run records hold D4RL scores x100; rliable gets them /100 and results are reported x100 again
DEFAULT_STATUSES = ("finished", "diverged")
# Below this many runs per task a bootstrap interval is little more than the sample's [min, max]: none is reported.
MIN_RUNS_FOR_INTERVALS = 5
INTERVAL = "95% stratified bootstrap"


def interval_note(n_runs: int, low: float, high: float, min_runs: int = MIN_RUNS_FOR_INTERVALS) -> str:
    """How an interval is reported: INTERVAL, or why it is left out (too few runs, or zero width)."""
    if n_runs < min_runs:
        return f"none: n < {min_runs} runs per task"
    if not (np.isfinite(low) and np.isfinite(high)) or high - low <= 1e-12:
        return "none: zero width (every bootstrap sample gives the same value)"
    return INTERVAL


def honest_intervals(df: pd.DataFrame, n_runs: pd.Series, min_runs: int = MIN_RUNS_FOR_INTERVALS) -> pd.DataFrame:
    """Copy of `df` with an `interval` note per row and ci_low/ci_high blanked (NaN) where no interval is reported."""
    notes = [interval_note(int(n), lo, hi, min_runs) for n, lo, hi in zip(n_runs, df["ci_low"], df["ci_high"])]
    keep = np.array([n == INTERVAL for n in notes], dtype=bool)
    return df.assign(ci_low=df["ci_low"].where(keep), ci_high=df["ci_high"].where(keep), interval=notes)


@dataclass
class ScoreMatrices:
    """Per-algorithm (runs x tasks) score matrices on a common task list, x100 scale, plus what was dropped."""

    column: str
    tasks: list[str]
    scores: dict[str, np.ndarray]
    seeds: dict[str, list[int]]
    notes: list[str] = field(default_factory=list)

    @property
    def algorithms(self) -> list[str]:
        """Algorithms in the matrices, in order."""
        return list(self.scores)

    def scaled(self) -> dict[str, np.ndarray]:
        """Matrices divided by 100 (the scale rliable's optimality gap and profiles expect)."""
        return {k: v / SCALE for k, v in self.scores.items()}


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed numpy's global RNG (rliable's bootstrap draws from it) and restore the previous state afterwards."""
    state = np.random.get_state()
    if seed is not None:
        np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def score_matrices(
    runs_df: pd.DataFrame,
    column: str = "last_score",
    tasks: Sequence[str] | None = None,
    algorithms: Sequence[str] | None = None,
    statuses: Sequence[str] | None = DEFAULT_STATUSES,
) -> ScoreMatrices:
    """Build (runs x tasks) matrices of `column` per algorithm on the tasks every algorithm has.

    rliable needs the same tasks for every algorithm and a rectangular matrix per algorithm, so: tasks are the
    intersection over algorithms (others are dropped and noted); an algorithm with unequal seeds across tasks keeps,
    per task, its lowest-numbered seeds up to the smallest per-task count (trimmed, noted). Algorithms may differ in
    their number of runs: rliable bootstraps each algorithm independently.
    """
    if column not in runs_df.columns:
        raise KeyError(f"no column {column!r} in runs; have {list(runs_df.columns)}")
    df = runs_df
    if statuses is not None and "status" in df.columns:
        df = df[df["status"].isin(statuses)]
    df = df[np.isfinite(pd.to_numeric(df[column], errors="coerce"))]
    notes: list[str] = []
    algs = list(algorithms) if algorithms is not None else sorted(df["algorithm"].unique())
    algs = [a for a in algs if (df["algorithm"] == a).any()]
    per_alg_tasks = {a: set(df.loc[df["algorithm"] == a, "dataset"]) for a in algs}
    if tasks is None:
        common = set.intersection(*per_alg_tasks.values()) if per_alg_tasks else set()
        task_list = sorted(common)
        for a in algs:
            extra = sorted(per_alg_tasks[a] - common)
            if extra:
                notes.append(f"{column}: {a}: tasks not shared by all algorithms dropped: {', '.join(extra)}")
    else:
        task_list = list(tasks)
        for a in list(algs):
            lacking = [t for t in task_list if t not in per_alg_tasks[a]]
            if lacking:
                notes.append(f"{column}: {a} dropped: no runs on {', '.join(lacking)}")
                algs.remove(a)
    scores: dict[str, np.ndarray] = {}
    seeds: dict[str, list[int]] = {}
    if not task_list:
        notes.append(f"{column}: no task is shared by all algorithms; nothing to aggregate")
        return ScoreMatrices(column, [], {}, {}, notes)
    for a in algs:
        sub = df[(df["algorithm"] == a) & df["dataset"].isin(task_list)].sort_values(["dataset", "seed", "run_id"]
                                                                                   if "run_id" in df.columns
                                                                                   else ["dataset", "seed"])
        per_task = {t: sub.loc[sub["dataset"] == t, column].to_numpy(float) for t in task_list}
        per_seed = {t: sub.loc[sub["dataset"] == t, "seed"].tolist() for t in task_list}
        counts = {t: len(v) for t, v in per_task.items()}
        n = min(counts.values())
        if len(set(counts.values())) > 1:
            trimmed = ", ".join(f"{t}: {c}->{n}" for t, c in counts.items() if c != n)
            notes.append(f"{column}: {a}: unequal runs per task; trimmed to {n} run(s) per task ({trimmed})")
        scores[a] = np.stack([per_task[t][:n] for t in task_list], axis=1)
        seeds[a] = per_seed[task_list[0]][:n]
    counts = {a: m.shape[0] for a, m in scores.items()}
    if len(set(counts.values())) > 1:
        notes.append(f"{column}: runs per algorithm differ ({', '.join(f'{a}: {c}' for a, c in counts.items())}); "
                     "each algorithm is bootstrapped over its own runs")
    return ScoreMatrices(column, task_list, scores, seeds, notes)


def aggregate_point(scores: np.ndarray) -> np.ndarray:
    """Median, IQM, mean and optimality gap (gamma=1) of a /100-scaled (runs x tasks) matrix."""
    return np.array([
        metrics.aggregate_median(scores),
        metrics.aggregate_iqm(scores),
        metrics.aggregate_mean(scores),
        metrics.aggregate_optimality_gap(scores, gamma=1.0),
    ])


def aggregate_metrics(mats: ScoreMatrices, reps: int = 2000, confidence: float = 0.95,
                      seed: int | None = 0, min_runs: int = MIN_RUNS_FOR_INTERVALS) -> pd.DataFrame:
    """Median, IQM, mean, optimality gap per algorithm with stratified-bootstrap CIs, reported x100.

    Intervals of algorithms with fewer than `min_runs` runs per task, and zero-width ones, are left out (NaN) and
    the `interval` column says why.
    """
    cols = ["column", "algorithm", "metric", "value", "ci_low", "ci_high", "n_runs", "n_tasks", "interval"]
    if not mats.scores:
        return pd.DataFrame(columns=cols)
    with _seeded(seed):
        point, interval = rly.get_interval_estimates(mats.scaled(), aggregate_point, reps=reps,
                                                     confidence_interval_size=confidence)
    rows = []
    for alg in mats.algorithms:
        for k, name in enumerate(METRICS):
            rows.append(dict(column=mats.column, algorithm=alg, metric=name, value=SCALE * float(point[alg][k]),
                             ci_low=SCALE * float(interval[alg][0, k]), ci_high=SCALE * float(interval[alg][1, k]),
                             n_runs=mats.scores[alg].shape[0], n_tasks=len(mats.tasks)))
    out = pd.DataFrame(rows, columns=cols[:-1])
    return honest_intervals(out, out["n_runs"], min_runs)[cols]


def default_taus(mats: ScoreMatrices, n: int = 81, extra: Sequence[float] = ()) -> np.ndarray:
    """Thresholds (x100 scale) spanning the data: from min(0, lowest score) to 5% of the range above the highest.

    `extra` (e.g. reference levels drawn in the same figure) widens the span to include those values.
    """
    values = [float(v) for m in mats.scores.values() for v in (np.min(m), np.max(m))] + [float(x) for x in extra]
    lo, hi = min([*values, 0.0]), max(values)
    return np.linspace(lo, hi + 0.05 * max(hi - lo, 1.0), n)


def performance_profiles(mats: ScoreMatrices, taus: Sequence[float] | None = None, reps: int = 2000,
                         seed: int | None = 0, min_runs: int = MIN_RUNS_FOR_INTERVALS) -> pd.DataFrame:
    """Score-distribution performance profiles P(score > tau) with bootstrap CIs; tau on the x100 scale.

    Bands of algorithms with fewer than `min_runs` runs per task are left out (NaN), with the reason in `interval`.
    """
    cols = ["column", "algorithm", "tau", "fraction", "ci_low", "ci_high", "n_runs", "interval"]
    if not mats.scores:
        return pd.DataFrame(columns=cols)
    tau = np.asarray(taus if taus is not None else default_taus(mats), dtype=float)
    with _seeded(seed):
        prof, cis = rly.create_performance_profile(mats.scaled(), tau / SCALE, reps=reps)
    rows = []
    for alg in mats.algorithms:
        for k, t in enumerate(tau):
            rows.append(dict(column=mats.column, algorithm=alg, tau=float(t), fraction=float(prof[alg][k]),
                             ci_low=float(cis[alg][0, k]), ci_high=float(cis[alg][1, k]),
                             n_runs=mats.scores[alg].shape[0]))
    out = pd.DataFrame(rows, columns=cols[:-1])
    few = out["n_runs"] < min_runs  # zero-width bands at fractions 0 and 1 are expected; only n decides here
    return out.assign(ci_low=out["ci_low"].mask(few), ci_high=out["ci_high"].mask(few),
                      interval=np.where(few, f"none: n < {min_runs} runs per task", INTERVAL))[cols]


def default_pairs(algorithms: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair (X, Y) of the algorithms, X before Y in the given order."""
    return list(itertools.combinations(list(algorithms), 2))


def probability_of_improvement(mats: ScoreMatrices, pairs: Sequence[tuple[str, str]] | None = None,
                               reps: int = 2000, seed: int | None = 0,
                               min_runs: int = MIN_RUNS_FOR_INTERVALS) -> pd.DataFrame:
    """P(X > Y) averaged over tasks for each pair, with stratified independent-bootstrap CIs (probabilities, 0..1).

    No interval (NaN, reason in `interval`) where X or Y has fewer than `min_runs` runs per task or where it has
    zero width (every bootstrap sample gives the same P, e.g. when every run of X beats every run of Y).
    """
    cols = ["column", "algorithm_x", "algorithm_y", "probability", "ci_low", "ci_high", "n_x", "n_y", "interval"]
    if pairs is None:  # better-scoring algorithm as X, so most bars read P(X > Y) >= 0.5
        order = sorted(mats.algorithms, key=lambda a: (-float(np.mean(mats.scores[a])), a))
        pairs = default_pairs(order)
    pairs = list(pairs)
    pairs = [(x, y) for x, y in pairs if x in mats.scores and y in mats.scores and x != y]
    if not pairs:
        return pd.DataFrame(columns=cols)
    data = {f"{x}\t{y}": [mats.scores[x] / SCALE, mats.scores[y] / SCALE] for x, y in pairs}
    with _seeded(seed):
        point, interval = rly.get_interval_estimates(data, metrics.probability_of_improvement, reps=reps)
    rows = []
    for key in data:
        x, y = key.split("\t")
        rows.append(dict(column=mats.column, algorithm_x=x, algorithm_y=y, probability=float(point[key]),
                         ci_low=float(np.ravel(interval[key])[0]), ci_high=float(np.ravel(interval[key])[1]),
                         n_x=mats.scores[x].shape[0], n_y=mats.scores[y].shape[0]))
    out = pd.DataFrame(rows, columns=cols[:-1])
    return honest_intervals(out, out[["n_x", "n_y"]].min(axis=1), min_runs)[cols]


def iqm(values: np.ndarray) -> float:
    """Interquartile mean of all values (25% trimmed from each end), as rliable computes it."""
    return float(metrics.aggregate_iqm(np.asarray(values, dtype=float)))


def bootstrap_iqm(values: np.ndarray, reps: int = 1000, confidence: float = 0.95,
                  rng: np.random.Generator | None = None) -> tuple[float, float, float]:
    """IQM of a 1-D sample and a percentile-bootstrap CI over the sample (used across seeds for curves)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"),) * 3
    point = iqm(v)
    if v.size == 1:
        return point, point, point
    rng = rng if rng is not None else np.random.default_rng(0)
    idx = rng.integers(0, v.size, size=(reps, v.size))
    from scipy.stats import trim_mean

    boots = trim_mean(v[idx], 0.25, axis=1)
    alpha = (1.0 - confidence) / 2.0
    return point, float(np.quantile(boots, alpha)), float(np.quantile(boots, 1.0 - alpha))
