"""Published reference scores (results/published/*.csv): loading and validation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.names import domain_of

PUBLISHED_DIR = Path(__file__).resolve().parents[1] / "results" / "published"
COLUMNS = ["source", "table", "algorithm", "dataset", "phase", "score", "std", "flag"]
TOTAL_COLUMNS = ["source", "table", "algorithm", "domain", "phase", "kind", "n_datasets", "total", "ci_low", "ci_high",
                 "flag"]
PHASES = ("offline", "online")
TOTALS_FILE = "totals.csv"


def _files(pattern: str, root: Path) -> list[Path]:
    """Score CSVs under `root` matching the glob `pattern`, or one of its comma-separated globs (not totals.csv)."""
    found: set[Path] = set()
    for pat in filter(None, (p.strip() for p in pattern.split(","))):
        found.update(root.glob(pat if pat.endswith(".csv") else f"{pat}.csv"))
    return sorted(p for p in found if p.name != TOTALS_FILE)


def validate_published(df: pd.DataFrame, name: str = "published") -> pd.DataFrame:
    """Check columns, numeric scores, phases and sources; return a cleaned copy or raise ValueError."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}; need {COLUMNS}")
    out = df[COLUMNS].copy()
    for col in ("score", "std"):
        num = pd.to_numeric(out[col], errors="coerce")
        bad = num.isna() & out[col].notna() & (out[col].astype(str).str.strip() != "")
        if bad.any():
            raise ValueError(f"{name}: non-numeric {col} in rows {list(out.index[bad])[:5]}")
        out[col] = num.astype(float)
    if out["score"].isna().any():
        raise ValueError(f"{name}: empty score in rows {list(out.index[out['score'].isna()])[:5]}")
    bad_phase = ~out["phase"].isin(PHASES)
    if bad_phase.any():
        raise ValueError(f"{name}: unknown phase {sorted(set(out.loc[bad_phase, 'phase'].astype(str)))}; "
                         f"use one of {PHASES}")
    for col in ("source", "table", "algorithm", "dataset"):
        empty = out[col].isna() | (out[col].astype(str).str.strip() == "")
        if empty.any():
            raise ValueError(f"{name}: empty {col} in rows {list(out.index[empty])[:5]}")
    out["flag"] = out["flag"].fillna("").astype(str)
    return out


def load_published(pattern: str = "*", root: str | Path | None = None) -> pd.DataFrame:
    """Published score rows of the CSVs matching `pattern` (not totals.csv), validated, plus domain and file."""
    root = Path(root) if root is not None else PUBLISHED_DIR
    frames = []
    for path in _files(pattern, root):
        df = validate_published(pd.read_csv(path, dtype={"std": object, "flag": object}), path.name)
        df["file"] = path.name
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, "domain", "file"])
    out = pd.concat(frames, ignore_index=True)
    out["domain"] = [domain_of(d) for d in out["dataset"]]
    return out


def load_totals(root: str | Path | None = None) -> pd.DataFrame:
    """Stated totals/averages of the published tables (totals.csv), validated."""
    root = Path(root) if root is not None else PUBLISHED_DIR
    df = pd.read_csv(root / TOTALS_FILE, dtype={"flag": object})
    missing = [c for c in TOTAL_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{TOTALS_FILE}: missing columns {missing}")
    for col in ("total", "ci_low", "ci_high", "n_datasets"):
        df[col] = pd.to_numeric(df[col], errors="raise")
    if not df["kind"].isin(("sum", "mean")).all():
        raise ValueError(f"{TOTALS_FILE}: kind must be 'sum' or 'mean'")
    if not df["phase"].isin(PHASES).all():
        raise ValueError(f"{TOTALS_FILE}: unknown phase")
    df["flag"] = df["flag"].fillna("").astype(str)
    return df


def check_totals(published: pd.DataFrame, totals: pd.DataFrame) -> pd.DataFrame:
    """Recompute every stated total from its rows: adds n_rows, computed, diff (NaN where rows are incomplete)."""
    out = totals.copy()
    computed, n_rows = [], []
    for t in totals.itertuples(index=False):
        rows = published[(published["source"] == t.source) & (published["table"] == t.table)
                         & (published["algorithm"] == t.algorithm) & (published["phase"] == t.phase)]
        if t.domain != "all":
            rows = rows[rows["domain"] == t.domain]
        n_rows.append(len(rows))
        if len(rows) == 0 or len(rows) != t.n_datasets:
            computed.append(float("nan"))
        else:
            computed.append(float(rows["score"].sum() if t.kind == "sum" else rows["score"].mean()))
    out["n_rows"] = n_rows
    out["computed"] = computed
    out["diff"] = out["computed"] - out["total"]
    return out
