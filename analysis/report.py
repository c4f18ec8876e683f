"""Command line: collect run records, write tables and figures and an index README.

    python -m analysis.report RUNS_DIR --out OUT_DIR [--published PATTERN] [--suite NAME] [--min-seeds N]
        [--algorithms DIRS] [--datasets PATTERNS] [--versus NAME]
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import aggregate, figures, tables
from analysis.collect import RunRecordWarning, collect, write_frames
from analysis.header import ReportHeader, behaviour_scores, display_names, report_header
from analysis.names import canonical_algorithm
from analysis.published import load_published

CURVE_STATUSES = ("finished", "diverged", "running")


def _say(msg: str) -> None:
    """Progress message on stdout."""
    print(f"[analysis.report] {msg}", flush=True)


def _pairs(spec: str | None) -> list[tuple[str, str]] | None:
    """Parse 'X:Y,X:Z' into pairs; None when no spec is given."""
    if not spec:
        return None
    out = []
    for item in spec.split(","):
        x, sep, y = item.partition(":")
        if not sep:
            raise SystemExit(f"--pairs: expected X:Y, got {item!r}")
        out.append((x.strip(), y.strip()))
    return out


def _rel(path: Path, base: Path) -> str:
    """Path relative to `base` (links in the README, never a machine's absolute path)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def _names(spec: str | Sequence[str] | None) -> list[str]:
    """A comma-separated list (or a sequence) as a list of stripped, non-empty names."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or [])
    return [s.strip() for s in items if s.strip()]


def select_runs(runs_df: pd.DataFrame, evals_df: pd.DataFrame, algorithms: Sequence[str] = (),
                datasets: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs under RUNS_DIR/<a>/ for a in `algorithms` (the suite runner's layout) whose dataset matches one of
    the fnmatch `datasets` patterns (an empty selection keeps everything), and their evaluations."""
    keep = pd.Series(True, index=runs_df.index)
    if algorithms and not runs_df.empty:
        keep &= runs_df["run_id"].str.split("/").str[0].isin(list(algorithms))
    if datasets and not runs_df.empty:
        keep &= runs_df["dataset"].map(lambda d: any(fnmatch.fnmatchcase(str(d), p) for p in datasets))
    runs_df = runs_df[keep].reset_index(drop=True)
    return runs_df, evals_df[evals_df["run_id"].isin(runs_df["run_id"])].reset_index(drop=True)


def versus_pairs(name: str, algorithms: Sequence[str]) -> list[tuple[str, str]]:
    """(name, other) for every other algorithm: the probability of improvement of `name` over each of them."""
    x = canonical_algorithm(name)
    return [(x, a) for a in algorithms if a != x]


def suite_facts(suite: str | None) -> tuple[str, int | None]:
    """Description and min_seeds of a suite file in suites/ (or a path); ('', None) when `suite` names none."""
    if not suite:
        return "", None
    from o2o.suite import SuiteError, load_suite

    try:
        s = load_suite(suite, check_files=False)
    except SuiteError:
        return "", None
    return s.description, s.min_seeds


def default_columns(runs_df: pd.DataFrame) -> list[str]:
    """The scores to aggregate: final_score where the runs have one (a dedicated final evaluation), and last_score."""
    has_final = "final_score" in runs_df and pd.to_numeric(runs_df["final_score"], errors="coerce").notna().any()
    return ["final_score", "last_score"] if has_final else ["last_score"]


def behaviour_reference(mats: aggregate.ScoreMatrices, behaviour: dict[str, float]) -> dict[str, float] | None:
    """The behaviour policy's median, IQM, mean and optimality gap over the matrices' tasks (None if one lacks it)."""
    if not mats.tasks or any(t not in behaviour for t in mats.tasks):
        return None
    point = aggregate.aggregate_point(np.array([[behaviour[t] / aggregate.SCALE for t in mats.tasks]]))
    return {m: aggregate.SCALE * float(v) for m, v in zip(aggregate.METRICS, point)}


def build_report(runs_dir: str | Path, out: str | Path, published: str | None = "*", suite: str | None = None,
                 columns: Sequence[str] | None = None, reps: int = 2000, pairs: str | None = None,
                 curve_reps: int = 500, min_seeds: int | None = None, algorithms: str | Sequence[str] = (),
                 datasets: str | Sequence[str] = (), versus: str | None = None) -> dict[str, list[Path]]:
    """Run the whole pipeline; return the written files grouped by kind.

    `suite` names the report and, when it is a suite file, gives its description and `min_seeds` (which
    `min_seeds` overrides). `columns` defaults to default_columns. `algorithms` and `datasets` select runs
    (select_runs); `versus` names the algorithm whose probability of improvement over each other one is reported
    (default: every pair, or `pairs`).
    """
    runs_dir = Path(runs_dir)
    out = Path(out)
    if suite and (runs_dir / suite).is_dir():
        runs_dir = runs_dir / suite
    label = Path(suite).stem if suite else runs_dir.name
    description, suite_min = suite_facts(suite)
    min_seeds = min_seeds if min_seeds is not None else suite_min
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {"data": [], "tables": [], "figures": []}
    captions: dict[Path, str] = {}
    notes: list[str] = []

    _say(f"collecting run records under {runs_dir}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RunRecordWarning)
        runs_df, evals_df = collect(runs_dir)
    runs_df, evals_df = select_runs(runs_df, evals_df, _names(algorithms), _names(datasets))
    for w in caught:
        if issubclass(w.category, RunRecordWarning):
            _say(f"warning: {w.message}")
            notes.append(f"skipped/partial record: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    written["data"] += list(write_frames(runs_df, evals_df, out).values())
    algs = sorted(runs_df["algorithm"].unique()) if not runs_df.empty else []
    _say(f"{len(runs_df)} runs, {len(evals_df)} evaluations, algorithms: {', '.join(algs) or 'none'}")
    if runs_df.empty:
        _say(f"warning: no run records (summary.json) under {runs_dir}")
    head = report_header(runs_df, evals_df, label, description, min_seeds) if not runs_df.empty else None
    budget = head.caption() if head else ""
    labels = display_names(runs_df)
    behaviour = behaviour_scores(runs_df["dataset"]) if not runs_df.empty else {}

    pub = None
    if published and published.lower() != "none":
        pub = load_published(published)
        _say(f"published rows matching {published!r}: {len(pub)}")

    _say("writing tables")
    tdir = out / "tables"
    written["tables"] += list(tables.write_all_tables(runs_df, tdir, pub, budget=budget, behaviour=behaviour or None,
                                                      labels=labels, evals_df=evals_df).values())

    fdir = out / "figures"
    for col in columns or default_columns(runs_df):
        mats = aggregate.score_matrices(runs_df, col)
        notes += mats.notes
        if not mats.scores:
            _say(f"{col}: no runs to aggregate")
            continue
        what = tables.METRIC_LABELS.get(col, col)
        name = f"{what} score"
        _say(f"{col}: aggregate metrics over {len(mats.tasks)} task(s), {reps} bootstrap reps")
        met = aggregate.aggregate_metrics(mats, reps=reps)
        met.to_csv(tdir / f"aggregate_{col}.csv", index=False)
        written["tables"].append(tdir / f"aggregate_{col}.csv")
        ref = behaviour_reference(mats, behaviour)
        made = figures.plot_aggregate(met, fdir / f"aggregate_{col}", title=name, caption=budget, reference=ref,
                                      labels=labels)
        captions.update(dict.fromkeys(made, f"Aggregate {what} score over tasks (rliable)."))
        refs = [behaviour[t] for t in mats.tasks if t in behaviour]
        prof = aggregate.performance_profiles(mats, taus=aggregate.default_taus(mats, extra=refs), reps=reps)
        prof.to_csv(tdir / f"profile_{col}.csv", index=False)
        written["tables"].append(tdir / f"profile_{col}.csv")
        made += figures.plot_performance_profile(prof, fdir / f"profile_{col}", title=name, caption=budget,
                                                 behaviour=refs if len(refs) == len(mats.tasks) else (),
                                                 labels=labels)
        captions.update({p: f"Performance profile of the {what} score: fraction of runs above τ."
                         for p in made if p not in captions})
        chosen = versus_pairs(versus, mats.algorithms) if versus else _pairs(pairs)
        poi = aggregate.probability_of_improvement(mats, chosen, reps=reps)
        if not poi.empty:
            poi.to_csv(tdir / f"poi_{col}.csv", index=False)
            written["tables"].append(tdir / f"poi_{col}.csv")
            made += figures.plot_probability_of_improvement(poi, fdir / f"poi_{col}", title=name, caption=budget,
                                                            labels=labels)
            captions.update({p: f"Probability of improvement, {what} score." for p in made if p not in captions})
        else:
            _say(f"{col}: fewer than two algorithms, no probability of improvement")
        written["tables"] += list(tables.write_aggregate_tables(met, poi, tdir, col, budget, labels).values())
        written["figures"] += made
    if not evals_df.empty and not runs_df.empty:  # curves of failed runs are left out, running ones kept
        ok = runs_df.loc[runs_df["status"].isin(CURVE_STATUSES), "run_id"]
        evals_df = evals_df[evals_df["run_id"].isin(ok)]
    if not evals_df.empty:
        _say("learning curves")
        curves = figures.learning_curve_data(evals_df, reps=curve_reps)
        curves.to_csv(tdir / "learning_curves.csv", index=False)
        written["tables"].append(tdir / "learning_curves.csv")
        made = figures.plot_learning_curves(evals_df, fdir / "learning_curves", curves=curves, caption=budget,
                                            behaviour=behaviour, labels=labels)
        captions.update(dict.fromkeys(made, "Learning curves: normalised score at each evaluation."))
        famo2o = evals_df.dropna(subset=["beta_mean"])["algorithm"] if "beta_mean" in evals_df else []
        beta = figures.plot_beta(evals_df, fdir / "beta", caption=head.caption(famo2o) if head else "", labels=labels)
        if beta:
            _say("beta histogram (FamO2O beta_* columns found)")
            captions.update(dict.fromkeys(beta, "FamO2O's β at the evaluations."))
        written["figures"] += made + beta
    states = figures.beta_states(runs_df[runs_df["status"] == "finished"] if not runs_df.empty else runs_df)
    if not states.empty:
        _say(f"beta over states ({states.groupby(['algorithm', 'dataset', 'seed']).ngroups} runs with betas.npy)")
        states.groupby(["algorithm", "dataset", "seed"])["beta"].describe(percentiles=[0.1, 0.5, 0.9]).to_csv(
            tdir / "beta_states.csv")
        written["tables"].append(tdir / "beta_states.csv")
        made = figures.plot_beta_states(states, fdir / "beta_states", caption=head.caption(states["algorithm"])
                                        if head else "", labels=labels)
        captions.update(dict.fromkeys(made, "FamO2O's β over the dataset's states at the end of each run."))
        written["figures"] += made
    readme = write_readme(out, label, runs_dir, runs_df, written, notes, published, head, captions, behaviour)
    written["data"].append(readme)
    _say(f"done: index at {readme}")
    for kind, paths in written.items():
        _say(f"{kind}: {len(paths)} file(s) under {out}")
    return written


TABLE_ORDER = ("scores_final", "scores_last", "scores_best", "domain_totals", "regret", "aggregate", "poi",
               "published_comparison")


def _table_order(path: Path) -> tuple[int, str]:
    """Sort key of the README's inline tables: scores first, then totals, regret, aggregates, the comparison."""
    rank = [i for i, prefix in enumerate(TABLE_ORDER) if path.stem.startswith(prefix)]
    return (rank[0] if rank else len(TABLE_ORDER), path.stem)


def _status_table(runs_df: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    """Markdown lines: runs per algorithm and status."""
    counts = runs_df.groupby(["algorithm", "status"], dropna=False).size().unstack(fill_value=0)
    lines = ["| Algorithm | " + " | ".join(map(str, counts.columns)) + " |", "|:---|" + "---:|" * len(counts.columns)]
    return lines + [f"| {labels.get(a, a)} | " + " | ".join(str(v) for v in row) + " |" for a, row in counts.iterrows()]


def write_readme(out: Path, label: str, runs_dir: Path, runs_df: pd.DataFrame, written: dict[str, list[Path]],
                 notes: list[str], published: str | None, head: ReportHeader | None = None,
                 captions: dict[Path, str] | None = None, behaviour: dict[str, float] | None = None) -> Path:
    """Write OUT/README.md: the header (suite, budget, seeds, ...) and its warnings, every table inline with its
    caption, every figure with its caption, the data files and the notes on dropped or trimmed runs."""
    captions = captions or {}
    labels = display_names(runs_df)
    lines = [f"# Report: {label}", ""]
    if head is not None:
        lines += head.markdown() + [""]
    lines += [f"Run records: `{_rel(runs_dir, out)}` (relative to this file), {len(runs_df)} runs.", ""]
    if not runs_df.empty:
        lines += _status_table(runs_df, labels) + [""]
    known = ", ".join(f"{d} {v:.1f}" for d, v in sorted((behaviour or {}).items()))
    lines += ["Scores are D4RL normalized ×100. Tables and aggregates (rliable) use runs with status finished or "
              "diverged (learning curves also running ones); rliable receives scores / 100 and results are reported "
              "×100 again. `last` is the last evaluation; `best` is the maximum over a run's evaluations, a "
              "selection over the evaluations and so optimistic; `final` (where present) is a dedicated final "
              "evaluation.",
              "Behaviour policy (the reference level in tables and figures): "
              + (known + "." if known else "no dataset of these runs has its score in its metadata (generated "
                 "`local:` datasets do, once generated on this machine; D4RL files do not)."),
              f"Published numbers: pattern `{published}` of `results/published/` (compared by algorithm, dataset "
              "and phase).", "", "## Tables", ""]
    md_tables = sorted((p for p in written["tables"] if p.suffix == ".md"), key=_table_order)
    for p in md_tables:
        tex = p.with_suffix(".tex")
        lines += [p.read_text().replace("### ", "#### ", 1).rstrip(), "",
                  f"[{_rel(p, out)}]({_rel(p, out)})" + (f", [LaTeX]({_rel(tex, out)})" if tex.exists() else ""), ""]
    lines += ["## Figures", ""]
    for p in sorted(written["figures"]):
        if p.suffix == ".png":
            what = captions.get(p, "")
            lines += [f"### {p.stem}", "", f"![{p.stem}]({_rel(p, out)})", "",
                      f"{what} The budget is in the figure's caption. ([PDF]({_rel(p.with_suffix('.pdf'), out)}))"
                      .strip(), ""]
    lines += ["## Data", ""]
    lines += [f"- [{_rel(p, out)}]({_rel(p, out)})" for p in written["data"]]
    lines += [f"- [{_rel(p, out)}]({_rel(p, out)})" for p in sorted(written["tables"]) if p.suffix in (".csv",)]
    if notes:
        lines += ["", "## Notes (dropped, trimmed or skipped)", ""] + [f"- {n}" for n in notes]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m analysis.report`."""
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs_dir", help="directory holding run records (searched recursively for summary.json)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--published", default="*",
                    help="glob of results/published/*.csv to compare with ('none' to skip; default all)")
    ap.add_argument("--suite", default=None,
                    help="suite name: RUNS_DIR/NAME is used when it exists; also the report title")
    ap.add_argument("--columns", default=None,
                    help=f"comma-separated score columns to aggregate (of {', '.join(aggregate.SCORE_COLUMNS)}; "
                         "default final_score where the runs have it, and last_score)")
    ap.add_argument("--min-seeds", type=int, default=None,
                    help="warn at the top below this many seeds per algorithm and dataset (default: the suite's)")
    ap.add_argument("--reps", type=int, default=2000, help="bootstrap replications for rliable (default 2000)")
    ap.add_argument("--curve-reps", type=int, default=500, help="bootstrap replications per learning-curve point")
    ap.add_argument("--pairs", default=None, help="probability-of-improvement pairs 'X:Y,X:Z' (default all pairs)")
    ap.add_argument("--versus", default=None, help="probability of improvement of this algorithm over each other one")
    ap.add_argument("--algorithms", default="", help="only runs under RUNS_DIR/<name>/ for these comma-separated "
                                                     "names (a suite's algorithm directories)")
    ap.add_argument("--datasets", default="", help="only runs whose dataset matches a comma-separated fnmatch pattern")
    args = ap.parse_args(argv)
    cols = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    bad = [c for c in cols or [] if c not in aggregate.SCORE_COLUMNS]
    if bad:
        ap.error(f"unknown column(s) {bad}")
    try:
        build_report(args.runs_dir, args.out, args.published, args.suite, cols, args.reps, args.pairs,
                     args.curve_reps, args.min_seeds, args.algorithms, args.datasets, args.versus)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
