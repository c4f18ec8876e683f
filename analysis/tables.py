"""Result tables: per-dataset mean ± std, domain totals, ours beside published; Markdown and LaTeX."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.published import canonical_algorithm

DOMAIN_ORDER = ("locomotion", "antmaze", "adroit", "kitchen", "other")
METRIC_LABELS = {
    "last_score": "last",
    "best_score": "best",
    "offline_score": "offline (last)",
    "online_score": "online (last)",
    "offline_best": "offline (best)",
    "online_best": "online (best)",
}


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


def domain_totals(table: pd.DataFrame) -> pd.DataFrame:
    """Per algorithm, metric and domain: sum and mean over datasets of the per-dataset means, as papers print them.

    `complete` is False where the algorithm lacks a dataset that another algorithm has in that domain, so its
    total is not comparable.
    """
    rows = []
    for (metric, dom), g in table.groupby(["metric", "domain"], sort=False):
        all_ds = set(g["dataset"])
        for alg, ga in g.groupby("algorithm", sort=True):
            rows.append(dict(algorithm=alg, metric=metric, domain=dom, total=float(ga["mean"].sum()),
                             average=float(ga["mean"].mean()), n_datasets=int(len(ga)),
                             complete=set(ga["dataset"]) == all_ds))
    out = pd.DataFrame(rows, columns=["algorithm", "metric", "domain", "total", "average", "n_datasets", "complete"])
    if not out.empty:
        out = out.sort_values(["metric", "domain", "algorithm"], key=lambda s: s.map(_domain_key)
                              if s.name == "domain" else s, ignore_index=True)
    return out


def compare_published(runs_df: pd.DataFrame, published: pd.DataFrame | None,
                      statuses: Sequence[str] | None = ("finished", "diverged")) -> pd.DataFrame:
    """Our mean ± std per algorithm, dataset and phase beside every published score that matches it.

    Matching is by canonical algorithm name, dataset name and phase: published 'offline' numbers are compared with
    our offline_score (the last offline evaluation; last_score for runs without an online phase), 'online' numbers
    with our online_score. diff = ours - published. Our rows without a published counterpart are kept (published
    NaN) so that every algorithm of the run records appears.
    """
    cols = ["algorithm", "domain", "dataset", "phase", "ours_mean", "ours_std", "n", "published", "published_std",
            "diff", "source", "table", "flag"]
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
            base = dict(algorithm=alg, domain=sub["domain"].iloc[0], dataset=ds, phase=phase, ours_mean=mean,
                        ours_std=std, n=int(v.size))
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
           "^": r"\^{}", "±": r"$\pm$", "–": "--", "→": r"$\to$"}
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
                     algorithms: Sequence[str] | None = None) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows and domain-break indices of a datasets x algorithms 'mean ± std' table with domain totals."""
    t = table[table["metric"] == metric]
    algs = list(algorithms) if algorithms is not None else sorted(t["algorithm"].unique())
    header = ["Dataset", *algs]
    rows: list[list[str]] = []
    breaks: list[int] = []
    totals = totals if totals is not None else domain_totals(t)
    for dom in sorted(t["domain"].unique(), key=_domain_key):
        if rows:
            breaks.append(len(rows))
        td = t[t["domain"] == dom]
        for ds in sorted(td["dataset"].unique()):
            cells = [ds]
            for a in algs:
                r = td[(td["dataset"] == ds) & (td["algorithm"] == a)]
                cells.append(_pm(r["mean"].iloc[0], r["std"].iloc[0], int(r["n"].iloc[0])) if len(r) else "–")
            rows.append(cells)
        tot = totals[(totals["metric"] == metric) & (totals["domain"] == dom)]
        cells = [f"{dom} total"]
        for a in algs:
            r = tot[tot["algorithm"] == a]
            if r.empty:
                cells.append("–")
            else:
                mark = "" if bool(r["complete"].iloc[0]) else f" ({int(r['n_datasets'].iloc[0])} ds)"
                cells.append(_fmt(float(r["total"].iloc[0])) + mark)
        rows.append(cells)
    return header, rows, breaks


def comparison_rows(comp: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the ours-vs-published table."""
    header = ["Dataset", "Algorithm", "Phase", "Ours", "n", "Published", "Diff", "Source", "Flag"]
    rows = []
    for r in comp.itertuples(index=False):
        flag = "UNVERIFIED" if str(r.flag).startswith("UNVERIFIED") else ("note" if r.flag else "")
        src = f"{r.source}: {r.table}" if r.source else "no published number"
        rows.append([r.dataset, r.algorithm, r.phase, _pm(r.ours_mean, r.ours_std, r.n, 2), str(r.n),
                     _pm(r.published, r.published_std, 2, 2), _signed(r.diff), src, flag])
    return header, rows


def _signed(x: float) -> str:
    """Signed number with two decimals, '–' when missing."""
    return "–" if x is None or not math.isfinite(x) else f"{x:+.2f}"


def write_all_tables(runs_df: pd.DataFrame, out: str | Path, published: pd.DataFrame | None = None,
                     columns: Sequence[str] = ("last_score", "best_score")) -> dict[str, Path]:
    """Write per-dataset score tables, domain totals and the published comparison as Markdown, LaTeX and CSV."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    table = per_dataset(runs_df, columns)
    totals = domain_totals(table)
    table.to_csv(out / "per_dataset.csv", index=False)
    totals.to_csv(out / "domain_totals.csv", index=False)
    paths["per_dataset.csv"] = out / "per_dataset.csv"
    paths["domain_totals.csv"] = out / "domain_totals.csv"
    algs = sorted(runs_df["algorithm"].unique()) if not runs_df.empty else []
    for metric in columns:
        if metric not in set(table["metric"]):
            continue
        header, rows, breaks = score_table_rows(table, metric, totals, algs)
        label = METRIC_LABELS.get(metric, metric)
        caption = (f"Normalized score ({label}), mean ± std over seeds; domain rows sum the per-dataset means "
                   "('(k ds)': only k datasets)")
        stem = f"scores_{metric.replace('_score', '')}"
        (out / f"{stem}.md").write_text(f"### {caption}\n\n" + markdown_table(header, rows))
        (out / f"{stem}.tex").write_text(latex_table(header, rows, caption, f"tab:{stem}", breaks))
        paths[f"{stem}.md"] = out / f"{stem}.md"
        paths[f"{stem}.tex"] = out / f"{stem}.tex"
    # domain totals as their own table: rows algorithm, columns domain x metric (sum and average)
    if not totals.empty:
        doms = sorted(totals["domain"].unique(), key=_domain_key)
        metrics_ = [m for m in columns if m in set(totals["metric"])]
        header = ["Algorithm"] + [f"{d} {METRIC_LABELS.get(m, m)} (sum / avg)" for m in metrics_ for d in doms]
        rows = []
        for a in algs:
            cells = [a]
            for m in metrics_:
                for d in doms:
                    r = totals[(totals["algorithm"] == a) & (totals["metric"] == m) & (totals["domain"] == d)]
                    if r.empty:
                        cells.append("–")
                    else:
                        mark = "" if bool(r["complete"].iloc[0]) else "*"
                        cells.append(f"{r['total'].iloc[0]:.1f} / {r['average'].iloc[0]:.1f}{mark}")
            rows.append(cells)
        cap = "Domain totals (sum and average of per-dataset means); * = algorithm lacks some datasets of the domain"
        (out / "domain_totals.md").write_text(f"### {cap}\n\n" + markdown_table(header, rows))
        (out / "domain_totals.tex").write_text(latex_table(header, rows, cap, "tab:domain_totals"))
        paths["domain_totals.md"] = out / "domain_totals.md"
        paths["domain_totals.tex"] = out / "domain_totals.tex"
    comp = compare_published(runs_df, published)
    if not comp.empty:
        comp.to_csv(out / "published_comparison.csv", index=False)
        header, rows = comparison_rows(comp)
        cap = ("Ours (offline_score for published offline numbers, online_score for online ones; mean ± std) beside "
               "published scores; Diff = ours - published")
        (out / "published_comparison.md").write_text(f"### {cap}\n\n" + markdown_table(header, rows, "lllrrrrll"))
        (out / "published_comparison.tex").write_text(latex_table(header, rows, cap, "tab:published"))
        for k in ("published_comparison.csv", "published_comparison.md", "published_comparison.tex"):
            paths[k] = out / k
    return paths
