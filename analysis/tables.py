"""Result tables: per-dataset mean ± std, domain totals, ours beside published; Markdown and LaTeX."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.collect import json_dict
from analysis.names import canonical_algorithm

DOMAIN_ORDER = ("locomotion", "antmaze", "adroit", "kitchen", "other")
OPTIMISTIC = "selected over evaluations, optimistic"
METRIC_LABELS = {
    "final_score": "final (dedicated final evaluation)",
    "last_score": "last",
    "best_score": f"best ({OPTIMISTIC})",
    "offline_score": "offline (last)",
    "online_score": "online (last)",
    "offline_best": f"offline best ({OPTIMISTIC})",
    "online_best": f"online best ({OPTIMISTIC})",
}
SCORE_TABLE_COLUMNS = ("final_score", "last_score", "best_score")
BEHAVIOUR = "Behaviour"
SUCCESS_DOMAINS = ("antmaze", "adroit", "kitchen")


def _domain_key(d: str) -> int:
    """Sort key putting domains in the order the papers use."""
    return DOMAIN_ORDER.index(d) if d in DOMAIN_ORDER else len(DOMAIN_ORDER)


def _fmt(x: float, digits: int = 1) -> str:
    """Number with `digits` decimals, '–' when missing."""
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _pm(mean: float, std: float, n: int, digits: int = 1) -> str:
    """'mean ± std' (just the mean for a single run), '–' when missing."""
    if not np.isfinite(mean):
        return "–"
    if n <= 1 or not np.isfinite(std):
        return _fmt(mean, digits)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def per_dataset(runs_df: pd.DataFrame, columns: Sequence[str] = ("last_score", "best_score"),
                statuses: Sequence[str] | None = ("finished", "diverged")) -> pd.DataFrame:
    """Long table: algorithm, domain, dataset, metric, mean, std (ddof=1 over seeds), n runs."""
    df = runs_df
    if statuses is not None and "status" in df.columns:
        df = df[df["status"].isin(statuses)]
    rows = []
    for col in columns:
        if col not in df.columns:
            continue
        vals = df.assign(_v=pd.to_numeric(df[col], errors="coerce")).dropna(subset=["_v"])
        for (alg, dom, ds), g in vals.groupby(["algorithm", "domain", "dataset"], sort=True):
            v = g["_v"].to_numpy(float)
            rows.append(dict(algorithm=alg, domain=dom, dataset=ds, metric=col, mean=float(v.mean()),
                             std=float(v.std(ddof=1)) if v.size > 1 else float("nan"), n=int(v.size)))
    return pd.DataFrame(rows, columns=["algorithm", "domain", "dataset", "metric", "mean", "std", "n"])


def domain_totals(table: pd.DataFrame, min_datasets: int = 2) -> pd.DataFrame:
    """Per algorithm, metric and domain: sum and mean over datasets of the per-dataset means, as papers print them.

    Only domains with at least `min_datasets` datasets get a total (a 'total' of one dataset is that dataset's
    score again). `complete` is False where the algorithm lacks a dataset that another algorithm has in that domain,
    so its total is not comparable.
    """
    rows = []
    for (metric, dom), g in table.groupby(["metric", "domain"], sort=False):
        all_ds = set(g["dataset"])
        if len(all_ds) < min_datasets:
            continue
        for alg, ga in g.groupby("algorithm", sort=True):
            rows.append(dict(algorithm=alg, metric=metric, domain=dom, total=float(ga["mean"].sum()),
                             average=float(ga["mean"].mean()), n_datasets=int(len(ga)),
                             complete=set(ga["dataset"]) == all_ds))
    out = pd.DataFrame(rows, columns=["algorithm", "metric", "domain", "total", "average", "n_datasets", "complete"])
    if not out.empty:
        out = out.sort_values(["metric", "domain", "algorithm"], key=lambda s: s.map(_domain_key)
                              if s.name == "domain" else s, ignore_index=True)
    return out


def train_regret(run: pd.Series) -> float:
    """CORL's regret over the training episodes: summary `train_regret`, else extra `final_regret` or `regret`."""
    for value in (run.get("train_regret"), json_dict(run.get("extra")).get("final_regret"),
                  json_dict(run.get("extra")).get("regret")):
        if value is not None and isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return float("nan")


def eval_regret(run: pd.Series, evals_df: pd.DataFrame) -> float:
    """Regret of the evaluation policy: summary `eval_regret`, else mean(1 - success_rate) over online evaluations."""
    value = run.get("eval_regret")
    if value is not None and isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    if evals_df.empty:
        return float("nan")
    ev = evals_df[(evals_df["run_id"] == run["run_id"]) & (evals_df["phase"] == "online")]
    succ = pd.to_numeric(ev["success_rate"], errors="coerce").dropna()
    return float((1.0 - succ).mean()) if len(succ) else float("nan")


def regrets(runs_df: pd.DataFrame, evals_df: pd.DataFrame,
            statuses: Sequence[str] | None = ("finished", "diverged")) -> pd.DataFrame:
    """Train and eval regret (mean ± std over seeds) per algorithm and dataset, for datasets with a success rate.

    Train regret (CORL's) counts the training episodes' failures, eval regret the evaluation episodes' failures in
    the online phase; both in [0, 1]. Locomotion has no success, so it has no regret.
    """
    cols = ["algorithm", "domain", "dataset", "kind", "mean", "std", "n"]
    df = runs_df
    if statuses is not None and "status" in df.columns:
        df = df[df["status"].isin(statuses)]
    df = df[df["domain"].isin(SUCCESS_DOMAINS)] if "domain" in df.columns else df.iloc[:0]
    rows = []
    for (alg, dom, ds), g in df.groupby(["algorithm", "domain", "dataset"], sort=True):
        for kind, values in (("train", [train_regret(r) for _, r in g.iterrows()]),
                             ("eval", [eval_regret(r, evals_df) for _, r in g.iterrows()])):
            v = np.array([x for x in values if math.isfinite(x)])
            if v.size:
                rows.append(dict(algorithm=alg, domain=dom, dataset=ds, kind=kind, mean=float(v.mean()),
                                 std=float(v.std(ddof=1)) if v.size > 1 else float("nan"), n=int(v.size)))
    return pd.DataFrame(rows, columns=cols)


def compare_published(runs_df: pd.DataFrame, published: pd.DataFrame | None,
                      statuses: Sequence[str] | None = ("finished", "diverged")) -> pd.DataFrame:
    """Our mean ± std per algorithm, dataset and phase beside every published score that matches it.

    Matching is by canonical algorithm name, dataset name and phase: published 'offline' numbers are compared with
    our offline_score (the last offline evaluation; last_score for runs without an online phase), 'online' numbers
    with our online_score. diff = ours - published. Our rows without a published counterpart are kept (published
    NaN) so that every algorithm of the run records appears. `preset` names the preset source(s) of our runs (config
    `preset`: paper, corl, official; empty for files without presets by source).
    """
    cols = ["algorithm", "domain", "dataset", "phase", "preset", "ours_mean", "ours_std", "n", "published",
            "published_std", "diff", "source", "table", "flag"]
    if runs_df.empty:
        return pd.DataFrame(columns=cols)
    df = runs_df
    if statuses is not None and "status" in df.columns:
        df = df[df["status"].isin(statuses)]
    nan = pd.Series(np.nan, index=df.index)
    off = pd.to_numeric(df["offline_score"], errors="coerce") if "offline_score" in df else nan
    onl = pd.to_numeric(df["online_score"], errors="coerce") if "online_score" in df else nan
    last = pd.to_numeric(df["last_score"], errors="coerce") if "last_score" in df else nan
    df = df.assign(_alg=df["algorithm"].map(canonical_algorithm),
                   _offline=off.where(off.notna(), last.where(onl.isna())), _online=onl)
    pub = published if published is not None else pd.DataFrame(columns=["algorithm", "dataset", "phase"])
    pub = pub.assign(_alg=pub["algorithm"].map(canonical_algorithm))
    rows = []
    for (alg, ds), sub in df.groupby(["algorithm", "dataset"], sort=True):
        for phase in ("offline", "online"):
            v = sub[f"_{phase}"].dropna().to_numpy(float)
            if v.size == 0:
                continue
            mean = float(v.mean())
            std = float(v.std(ddof=1)) if v.size > 1 else float("nan")
            base = dict(algorithm=alg, domain=sub["domain"].iloc[0], dataset=ds, phase=phase,
                        preset=run_presets(sub), ours_mean=mean, ours_std=std, n=int(v.size))
            match = pub[(pub["_alg"] == sub["_alg"].iloc[0]) & (pub["dataset"] == ds) & (pub["phase"] == phase)]
            if match.empty:
                rows.append(dict(base, published=float("nan"), published_std=float("nan"), diff=float("nan"),
                                 source="", table="", flag=""))
            for p in match.itertuples(index=False):
                pstd = float(p.std) if p.std is not None and np.isfinite(p.std) else float("nan")
                rows.append(dict(base, published=float(p.score), published_std=pstd, diff=mean - float(p.score),
                                 source=p.source, table=p.table, flag=p.flag or ""))
    out = pd.DataFrame(rows, columns=cols)
    if not out.empty:
        out = out.sort_values(["domain", "dataset", "algorithm", "phase", "source"],
                              key=lambda s: s.map(_domain_key) if s.name == "domain" else s, ignore_index=True)
    return out


# ---------------------------------------------------------------- rendering


def _escape_latex(s: str) -> str:
    """Text with LaTeX special characters escaped."""
    rep = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\~{}",
           "^": r"\^{}", "±": r"$\pm$", "–": "--", "→": r"$\to$", "<": r"$<$", ">": r"$>$", "−": r"$-$",
           "×": r"$\times$", "≥": r"$\geq$"}
    return "".join(rep.get(ch, ch) for ch in str(s))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A GitHub-flavoured Markdown table (first column left-aligned, the rest right-aligned by default)."""
    align = align or ("l" + "r" * (len(header) - 1))
    sep = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def latex_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "", label: str = "",
                rules_before: Sequence[int] = ()) -> str:
    """A booktabs LaTeX table; `rules_before` lists row indices that get a \\midrule above them."""
    spec = "l" + "r" * (len(header) - 1)
    out = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        out.append(rf"\caption{{{_escape_latex(caption)}}}")
    if label:
        out.append(rf"\label{{{label}}}")
    out += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(_escape_latex(h) for h in header) + r" \\",
            r"\midrule"]
    for i, r in enumerate(rows):
        if i in rules_before:
            out.append(r"\midrule")
        out.append(" & ".join(_escape_latex(c) for c in r) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def score_table_rows(table: pd.DataFrame, metric: str, totals: pd.DataFrame | None = None,
                     algorithms: Sequence[str] | None = None, behaviour: dict[str, float] | None = None,
                     labels: dict[str, str] | None = None) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows and domain-break indices of a datasets x algorithms 'mean ± std' table with domain totals.

    With `behaviour` (dataset -> the behaviour policy's normalised score) a Behaviour column follows the dataset;
    `labels` renames algorithm columns (e.g. with their regime).
    """
    t = table[table["metric"] == metric]
    algs = list(algorithms) if algorithms is not None else sorted(t["algorithm"].unique())
    labels = labels or {}
    ref = behaviour is not None
    header = ["Dataset", *([BEHAVIOUR] if ref else []), *(labels.get(a, a) for a in algs)]
    rows: list[list[str]] = []
    breaks: list[int] = []
    totals = totals if totals is not None else domain_totals(t)
    for dom in sorted(t["domain"].unique(), key=_domain_key):
        if rows:
            breaks.append(len(rows))
        td = t[t["domain"] == dom]
        datasets = sorted(td["dataset"].unique())
        for ds in datasets:
            cells = [ds] + ([_fmt(behaviour.get(ds, float("nan")))] if ref else [])
            for a in algs:
                r = td[(td["dataset"] == ds) & (td["algorithm"] == a)]
                cells.append(_pm(r["mean"].iloc[0], r["std"].iloc[0], int(r["n"].iloc[0])) if len(r) else "–")
            rows.append(cells)
        tot = totals[(totals["metric"] == metric) & (totals["domain"] == dom)]
        if tot.empty:
            continue
        refs = [behaviour.get(ds, float("nan")) for ds in datasets] if ref else []
        cells = [f"{dom} total"] + ([_fmt(float(np.sum(refs)))] if ref else [])
        for a in algs:
            r = tot[tot["algorithm"] == a]
            if r.empty:
                cells.append("–")
            else:
                mark = "" if bool(r["complete"].iloc[0]) else f" ({int(r['n_datasets'].iloc[0])} ds)"
                cells.append(_fmt(float(r["total"].iloc[0])) + mark)
        rows.append(cells)
    return header, rows, breaks


def run_presets(runs: pd.DataFrame) -> str:
    """The preset sources of the runs' configs ('corl', 'paper, corl' for a mix; '' when none records one)."""
    if "config" not in runs:
        return ""
    return ", ".join(sorted({str(p) for p in (json_dict(c).get("preset") for c in runs["config"]) if p}))


def comparison_rows(comp: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the ours-vs-published table (Preset: which preset source made our row)."""
    header = ["Dataset", "Algorithm", "Preset", "Phase", "Ours", "n", "Published", "Diff", "Source", "Flag"]
    rows = []
    for r in comp.itertuples(index=False):
        flag = "UNVERIFIED" if str(r.flag).startswith("UNVERIFIED") else ("note" if r.flag else "")
        src = f"{r.source}: {r.table}" if r.source else "no published number"
        rows.append([r.dataset, r.algorithm, getattr(r, "preset", "") or "–", r.phase,
                     _pm(r.ours_mean, r.ours_std, r.n, 2), str(r.n), _pm(r.published, r.published_std, 2, 2),
                     _signed(r.diff), src, flag])
    return header, rows


def unmatched_text(comp: pd.DataFrame) -> str:
    """One sentence naming our (algorithm, dataset, phase) results that no published row matches; '' when none."""
    miss = comp[comp["source"] == ""]
    if miss.empty:
        return ""
    parts = []
    for (alg, ds), g in miss.groupby(["algorithm", "dataset"], sort=True):
        parts.append(f"{alg} on {ds} ({', '.join(sorted(g['phase']))})")
    return "No published number for: " + "; ".join(parts) + "."


def _signed(x: float) -> str:
    """Signed number with two decimals, '–' when missing."""
    return "–" if x is None or not math.isfinite(x) else f"{x:+.2f}"


def _with_budget(caption: str, budget: str) -> str:
    """The caption followed by the budget paragraph (when there is one)."""
    return f"{caption}. {budget}" if budget else caption


def _write(out: Path, stem: str, caption: str, header: list[str], rows: list[list[str]], align: str | None = None,
           breaks: Sequence[int] = ()) -> dict[str, Path]:
    """Write OUT/stem.md (caption as a heading) and OUT/stem.tex (caption in \\caption); return both paths."""
    md, tex = out / f"{stem}.md", out / f"{stem}.tex"
    md.write_text(f"### {caption}\n\n" + markdown_table(header, rows, align))
    tex.write_text(latex_table(header, rows, caption, f"tab:{stem}", breaks))
    return {md.name: md, tex.name: tex}


def aggregate_rows(met: pd.DataFrame, labels: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the rliable aggregates: one row per algorithm, 'value [low, high]' or the value alone
    with the reason in the Interval column (never a zero-width or small-sample interval)."""
    from analysis.aggregate import METRICS

    header = ["Algorithm", *METRICS, "Runs per task", "Interval"]
    rows = []
    for alg, g in met.groupby("algorithm", sort=True):
        g = g.set_index("metric")
        cells = [(labels or {}).get(alg, alg)]
        for m in METRICS:
            r = g.loc[m] if m in g.index else None
            if r is None:
                cells.append("–")
            elif np.isfinite(r["ci_low"]):
                cells.append(f"{r['value']:.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}]")
            else:
                cells.append(_fmt(r["value"]))
        notes = sorted(set(g["interval"]))
        cells += [str(int(g["n_runs"].iloc[0])), "; ".join(notes)]
        rows.append(cells)
    return header, rows


def poi_rows(poi: pd.DataFrame, labels: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the probability of improvement: P and its interval, or the reason it has none."""
    header = ["X", "Y", "P(X > Y)", "95% interval", "runs per task (X, Y)"]
    rows = []
    for r in poi.itertuples(index=False):
        ci = f"[{r.ci_low:.2f}, {r.ci_high:.2f}]" if np.isfinite(r.ci_low) else r.interval
        rows.append([(labels or {}).get(r.algorithm_x, r.algorithm_x), (labels or {}).get(r.algorithm_y, r.algorithm_y),
                     f"{r.probability:.2f}", ci, f"{r.n_x}, {r.n_y}"])
    return header, rows


def write_aggregate_tables(met: pd.DataFrame, poi: pd.DataFrame, out: str | Path, column: str, budget: str = "",
                           labels: dict[str, str] | None = None) -> dict[str, Path]:
    """aggregate_<column>.md/.tex and poi_<column>.md/.tex (when there are pairs), captions ending in the budget."""
    out = Path(out)
    label = METRIC_LABELS.get(column, column)
    paths: dict[str, Path] = {}
    if not met.empty:
        header, rows = aggregate_rows(met, labels)
        cap = _with_budget(f"Aggregate normalised score ({label}) over {int(met['n_tasks'].iloc[0])} task(s), rliable "
                           "point estimates with 95% stratified-bootstrap intervals where reported", budget)
        paths.update(_write(out, f"aggregate_{column}", cap, header, rows, "l" + "r" * (len(header) - 2) + "l"))
    if not poi.empty:
        header, rows = poi_rows(poi, labels)
        cap = _with_budget(f"Probability of improvement P(X > Y) ({label}), averaged over tasks", budget)
        paths.update(_write(out, f"poi_{column}", cap, header, rows, "llrlr"))
    return paths


def write_all_tables(runs_df: pd.DataFrame, out: str | Path, published: pd.DataFrame | None = None,
                     columns: Sequence[str] = SCORE_TABLE_COLUMNS, budget: str = "",
                     behaviour: dict[str, float] | None = None, labels: dict[str, str] | None = None,
                     evals_df: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write per-dataset score tables, domain totals, regrets and the published comparison (Markdown, LaTeX, CSV).

    `budget` (ReportHeader.caption) ends every caption; `behaviour` adds the reference column; `labels` names the
    algorithm columns (with their regime where regimes are mixed).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    columns = [c for c in columns if c in runs_df.columns and pd.to_numeric(runs_df[c], errors="coerce").notna().any()]
    table = per_dataset(runs_df, columns)
    totals = domain_totals(table)
    table.to_csv(out / "per_dataset.csv", index=False)
    totals.to_csv(out / "domain_totals.csv", index=False)
    paths["per_dataset.csv"] = out / "per_dataset.csv"
    paths["domain_totals.csv"] = out / "domain_totals.csv"
    algs = sorted(runs_df["algorithm"].unique()) if not runs_df.empty else []
    labels = labels or {}
    ns = sorted(set(table["n"])) if not table.empty else []
    n_text = f"n = {'–'.join(map(str, (ns[0], ns[-1]) if len(ns) > 1 else ns))} seeds" if ns else ""
    ref_text = ("; Behaviour = the normalised score of the policy that collected the dataset (its metadata; "
                "'–' where it has none)" if behaviour is not None else "")
    for metric in columns:
        if metric not in set(table["metric"]):
            continue
        header, rows, breaks = score_table_rows(table, metric, totals, algs, behaviour, labels)
        label = METRIC_LABELS.get(metric, metric)
        caption = _with_budget(f"Normalised score ({label}), mean ± std over seeds ({n_text}){ref_text}; domain rows "
                               "sum the per-dataset means ('(k ds)': only k datasets)", budget)
        paths.update(_write(out, f"scores_{metric.replace('_score', '')}", caption, header, rows, breaks=breaks))
    # domain totals as their own table: rows algorithm, columns domain x metric (sum and average)
    if not totals.empty:
        doms = sorted(totals["domain"].unique(), key=_domain_key)
        metrics_ = [m for m in columns if m in set(totals["metric"])]
        header = ["Algorithm"] + [f"{d} {METRIC_LABELS.get(m, m)} (sum / avg)" for m in metrics_ for d in doms]
        rows = []
        for a in algs:
            cells = [labels.get(a, a)]
            for m in metrics_:
                for d in doms:
                    r = totals[(totals["algorithm"] == a) & (totals["metric"] == m) & (totals["domain"] == d)]
                    if r.empty:
                        cells.append("–")
                    else:
                        mark = "" if bool(r["complete"].iloc[0]) else "*"
                        cells.append(f"{r['total'].iloc[0]:.1f} / {r['average'].iloc[0]:.1f}{mark}")
            rows.append(cells)
        cap = _with_budget("Domain totals (sum and average of per-dataset means, domains with 2 or more datasets); "
                           "* = algorithm lacks some datasets of the domain", budget)
        paths.update(_write(out, "domain_totals", cap, header, rows))
    reg = regrets(runs_df, evals_df if evals_df is not None else pd.DataFrame(), ("finished", "diverged"))
    if not reg.empty:
        reg.to_csv(out / "regret.csv", index=False)
        paths["regret.csv"] = out / "regret.csv"
        rows = []
        for (alg, ds), g in reg.groupby(["algorithm", "dataset"], sort=True):
            cell = {k: _pm(r["mean"], r["std"], int(r["n"]), 3) for k, r in g.set_index("kind").iterrows()}
            rows.append([ds, labels.get(alg, alg), cell.get("train", "–"), cell.get("eval", "–")])
        cap = _with_budget("Regret, mean ± std over seeds: train = CORL's mean(1 − success) over the online training "
                           "episodes; eval = mean(1 − success rate) over the online evaluations", budget)
        paths.update(_write(out, "regret", cap, ["Dataset", "Algorithm", "Train regret", "Eval regret"], rows,
                            "llrr"))
    comp = compare_published(runs_df, published)
    if not comp.empty:
        comp.to_csv(out / "published_comparison.csv", index=False)
        paths["published_comparison.csv"] = out / "published_comparison.csv"
        matched = comp[comp["source"] != ""]
        missing = unmatched_text(comp)
        cap = _with_budget("Ours (offline_score for published offline numbers, online_score for online ones; mean ± "
                           "std) beside published scores; Diff = ours - published", budget)
        md = out / "published_comparison.md"
        if matched.empty:
            md.write_text(f"### {cap}\n\nNo published row matches these runs (same algorithm, dataset and phase), "
                          f"so there is nothing to compare. {missing}\n")
            paths[md.name] = md
        else:
            header, rows = comparison_rows(matched)
            paths.update(_write(out, "published_comparison", cap, header, rows, "llllrrrrll"))
            if missing:
                md.write_text(md.read_text() + f"\n{missing}\n")
    return paths
