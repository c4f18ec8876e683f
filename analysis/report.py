"""Command line: collect run records, write tables and figures and an index README.

    python -m analysis.report RUNS_DIR --out OUT_DIR [--published PATTERN] [--suite NAME]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import aggregate, figures, tables
from analysis.collect import RunRecordWarning, write_tables
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
    """Path relative to `base` when possible (links in the README)."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def build_report(runs_dir: str | Path, out: str | Path, published: str | None = "*", suite: str | None = None,
                 columns: Sequence[str] = ("last_score",), reps: int = 2000, pairs: str | None = None,
                 curve_reps: int = 500) -> dict[str, list[Path]]:
    """Run the whole pipeline; return the written files grouped by kind."""
    runs_dir = Path(runs_dir)
    out = Path(out)
    if suite and (runs_dir / suite).is_dir():
        runs_dir = runs_dir / suite
    label = suite or runs_dir.name
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {"data": [], "tables": [], "figures": []}
    notes: list[str] = []

    _say(f"collecting run records under {runs_dir}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RunRecordWarning)
        data_paths = write_tables(runs_dir, out)
    for w in caught:
        if issubclass(w.category, RunRecordWarning):
            _say(f"warning: {w.message}")
            notes.append(f"skipped/partial record: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    written["data"] += list(data_paths.values())
    runs_df = pd.read_parquet(data_paths["runs.parquet"])
    evals_df = pd.read_parquet(data_paths["evals.parquet"])
    algs = sorted(runs_df["algorithm"].unique()) if not runs_df.empty else []
    _say(f"{len(runs_df)} runs, {len(evals_df)} evaluations, algorithms: {', '.join(algs) or 'none'}")
    if runs_df.empty:
        _say(f"warning: no run records (summary.json) under {runs_dir}")

    pub = None
    if published and published.lower() != "none":
        pub = load_published(published)
        _say(f"published rows matching {published!r}: {len(pub)}")

    _say("writing tables")
    tdir = out / "tables"
    written["tables"] += list(tables.write_all_tables(runs_df, tdir, pub).values())

    fdir = out / "figures"
    for col in columns:
        mats = aggregate.score_matrices(runs_df, col)
        notes += mats.notes
        if not mats.scores:
            _say(f"{col}: no runs to aggregate")
            continue
        _say(f"{col}: aggregate metrics over {len(mats.tasks)} task(s), {reps} bootstrap reps")
        met = aggregate.aggregate_metrics(mats, reps=reps)
        met.to_csv(tdir / f"aggregate_{col}.csv", index=False)
        written["tables"].append(tdir / f"aggregate_{col}.csv")
        written["figures"] += figures.plot_aggregate(met, fdir / f"aggregate_{col}", title=col)
        prof = aggregate.performance_profiles(mats, reps=reps)
        prof.to_csv(tdir / f"profile_{col}.csv", index=False)
        written["tables"].append(tdir / f"profile_{col}.csv")
        written["figures"] += figures.plot_performance_profile(prof, fdir / f"profile_{col}", title=col)
        poi = aggregate.probability_of_improvement(mats, _pairs(pairs), reps=reps)
        if not poi.empty:
            poi.to_csv(tdir / f"poi_{col}.csv", index=False)
            written["tables"].append(tdir / f"poi_{col}.csv")
            written["figures"] += figures.plot_probability_of_improvement(poi, fdir / f"poi_{col}", title=col)
        else:
            _say(f"{col}: fewer than two algorithms, no probability of improvement")
    if not evals_df.empty and not runs_df.empty:  # curves of failed runs are left out, running ones kept
        ok = runs_df.loc[runs_df["status"].isin(CURVE_STATUSES), "run_id"]
        evals_df = evals_df[evals_df["run_id"].isin(ok)]
    if not evals_df.empty:
        _say("learning curves")
        curves = figures.learning_curve_data(evals_df, reps=curve_reps)
        curves.to_csv(tdir / "learning_curves.csv", index=False)
        written["tables"].append(tdir / "learning_curves.csv")
        written["figures"] += figures.plot_learning_curves(evals_df, fdir / "learning_curves", curves=curves)
        beta = figures.plot_beta(evals_df, fdir / "beta")
        if beta:
            _say("beta histogram (FamO2O beta_* columns found)")
        written["figures"] += beta
    states = figures.beta_states(runs_df[runs_df["status"] == "finished"] if not runs_df.empty else runs_df)
    if not states.empty:
        _say(f"beta over states ({states.groupby(['algorithm', 'dataset', 'seed']).ngroups} runs with betas.npy)")
        states.groupby(["algorithm", "dataset", "seed"])["beta"].describe(percentiles=[0.1, 0.5, 0.9]).to_csv(
            tdir / "beta_states.csv")
        written["tables"].append(tdir / "beta_states.csv")
        written["figures"] += figures.plot_beta_states(states, fdir / "beta_states")
    readme = write_readme(out, label, runs_dir, runs_df, written, notes, published)
    written["data"].append(readme)
    _say(f"done: index at {readme}")
    for kind, paths in written.items():
        _say(f"{kind}: {len(paths)} file(s) under {out}")
    return written


def write_readme(out: Path, label: str, runs_dir: Path, runs_df: pd.DataFrame, written: dict[str, list[Path]],
                 notes: list[str], published: str | None) -> Path:
    """Write OUT/README.md linking every table and figure, with the notes on dropped or trimmed runs."""
    lines = [f"# Report: {label}", "", f"Run records: `{runs_dir}`  ", f"Runs: {len(runs_df)}  "]
    if not runs_df.empty:
        counts = runs_df.groupby(["algorithm", "status"], dropna=False).size().unstack(fill_value=0)
        lines += ["", "| Algorithm | " + " | ".join(map(str, counts.columns)) + " |",
                  "|:---|" + "---:|" * len(counts.columns)]
        lines += [f"| {a} | " + " | ".join(str(v) for v in row) + " |" for a, row in counts.iterrows()]
    lines += ["", "Scores are D4RL normalized ×100. Tables and aggregates (rliable) use runs with status finished or "
              "diverged (learning curves also running ones); rliable receives scores / 100 and results are reported "
              "×100 again.",
              f"Published numbers: pattern `{published}` of `results/published/` (compare by algorithm, dataset "
              "and phase).", "", "## Tables", ""]
    for p in sorted(written["tables"]):
        if p.suffix in (".md", ".tex", ".csv"):
            lines.append(f"- [{_rel(p, out)}]({_rel(p, out)})")
    md_tables = sorted(p for p in written["tables"] if p.suffix == ".md")
    lines += ["", "## Figures", ""]
    for p in sorted(written["figures"]):
        if p.suffix == ".png":
            lines += [f"### {p.stem}", "", f"![{p.stem}]({_rel(p, out)}) ([PDF]({_rel(p.with_suffix('.pdf'), out)}))",
                      ""]
    lines += ["## Data", ""]
    lines += [f"- [{_rel(p, out)}]({_rel(p, out)})" for p in written["data"]]
    if notes:
        lines += ["", "## Notes (dropped, trimmed or skipped)", ""] + [f"- {n}" for n in notes]
    if md_tables:
        lines += ["", "## Tables inline", ""]
        for p in md_tables:
            lines += [p.read_text(), ""]
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
    ap.add_argument("--columns", default="last_score",
                    help=f"comma-separated score columns to aggregate (of {', '.join(aggregate.SCORE_COLUMNS)})")
    ap.add_argument("--reps", type=int, default=2000, help="bootstrap replications for rliable (default 2000)")
    ap.add_argument("--curve-reps", type=int, default=500, help="bootstrap replications per learning-curve point")
    ap.add_argument("--pairs", default=None, help="probability-of-improvement pairs 'X:Y,X:Z' (default all pairs)")
    args = ap.parse_args(argv)
    cols = [c.strip() for c in args.columns.split(",") if c.strip()]
    bad = [c for c in cols if c not in aggregate.SCORE_COLUMNS]
    if bad:
        ap.error(f"unknown column(s) {bad}")
    try:
        build_report(args.runs_dir, args.out, args.published, args.suite, cols, args.reps, args.pairs,
                     args.curve_reps)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
