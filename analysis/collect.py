"""Collect run records (summary.json + evals.csv) into tidy tables of runs and evaluations."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.names import canonical_algorithm, domain_of

SUMMARY = "summary.json"
EVALS = "evals.csv"
STATUSES = ("finished", "diverged", "failed", "running")
SCORE_KEYS = ("final_score", "last_score", "best_score", "offline_score", "online_score", "offline_best", "online_best")
NUMERIC_KEYS = (*SCORE_KEYS, "last_success_rate", "wall_time_s", "steps", "env_steps", "n_evals")
RUN_KEYS = ("algorithm", "dataset", "seed", "status", *NUMERIC_KEYS, "budget", "git_commit", "error")
EVAL_COLUMNS = ("step", "phase", "env_steps", "normalized_score", "return_mean", "return_std", "success_rate")
EVAL_NUMERIC = ("step", "env_steps", "normalized_score", "return_mean", "return_std", "success_rate")


RESERVED = ("run_id", "run_dir", "domain", "algorithm_raw")


class RunRecordWarning(UserWarning):
    """A run record that was skipped or only partly read."""


def _warn(msg: str) -> None:
    """Emit a RunRecordWarning pointing at the caller."""
    warnings.warn(msg, RunRecordWarning, stacklevel=3)


def _number(value: Any) -> float:
    """A float, or NaN for None, booleans and non-numbers."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _scalar(value: Any) -> Any:
    """The value, with dicts and lists turned into JSON strings."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def json_dict(value: Any) -> dict[str, Any]:
    """A dict column of the collected runs (`config`, `extra`: JSON text) as a dict; empty when missing or invalid."""
    if isinstance(value, dict):
        return value
    try:
        data = json.loads(value) if isinstance(value, str) else {}
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def read_summary(path: Path) -> dict[str, Any] | None:
    """One summary.json as a flat dict, or None (with a warning) when it is unreadable or malformed."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _warn(f"skipping {path}: unreadable summary ({exc})")
        return None
    if not isinstance(data, dict):
        _warn(f"skipping {path}: summary is not a JSON object")
        return None
    missing = [k for k in ("algorithm", "dataset", "seed") if k not in data or data[k] in (None, "")]
    if missing:
        _warn(f"skipping {path}: summary lacks {', '.join(missing)}")
        return None
    try:
        seed = int(data["seed"])
    except (TypeError, ValueError):
        _warn(f"skipping {path}: seed {data['seed']!r} is not an integer")
        return None
    row: dict[str, Any] = {k: _scalar(data.get(k)) for k in RUN_KEYS}
    row.update({k: _scalar(v) for k, v in data.items() if k not in row and k not in RESERVED})
    row["algorithm"] = canonical_algorithm(str(data["algorithm"]))
    row["algorithm_raw"] = str(data["algorithm"])
    row["dataset"] = str(data["dataset"])
    row["seed"] = seed
    for k in NUMERIC_KEYS:
        row[k] = _number(data.get(k))
    status = data.get("status")
    if status not in STATUSES:
        _warn(f"{path}: unknown status {status!r}; recorded as given")
    row["status"] = None if status is None else str(status)
    for k in ("config", "versions"):
        val = data.get(k)
        row[k] = json.dumps(val, sort_keys=True, default=str) if val is not None else None
    return row


def read_evals(path: Path) -> pd.DataFrame | None:
    """One evals.csv with numeric columns, or None (with a warning) when it is unreadable or lacks columns."""
    try:
        df = pd.read_csv(path, on_bad_lines="skip")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        _warn(f"skipping {path}: unreadable evals ({exc})")
        return None
    missing = [c for c in ("step", "phase", "normalized_score") if c not in df.columns]
    if missing:
        _warn(f"skipping {path}: evals lack columns {missing}")
        return None
    for col in df.columns:
        if col in EVAL_NUMERIC or col.startswith("beta_"):
            df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in EVAL_COLUMNS:
        if col not in df.columns:
            df[col] = math.nan
    bad = df["step"].isna() | ~df["phase"].isin(("offline", "online"))
    if bad.any():
        _warn(f"{path}: dropped {int(bad.sum())} malformed evaluation row(s)")
        df = df[~bad]
    df = df.copy()
    df["step"] = df["step"].astype("int64")
    return df


def collect(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Walk `root` for run directories; return (runs_df, evals_df), skipping malformed records with a warning."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such runs directory: {root}")
    rows, evals = [], []
    for path in sorted(root.rglob(SUMMARY)):
        row = read_summary(path)
        if row is None:
            continue
        run_dir = path.parent
        rel = run_dir.relative_to(root).as_posix() if run_dir != root else "."
        row["run_id"] = rel
        row["run_dir"] = str(run_dir)
        row["domain"] = domain_of(row["dataset"])
        rows.append(row)
        epath = run_dir / EVALS
        if not epath.exists():
            if row["status"] not in ("running", "failed"):
                _warn(f"{run_dir}: no {EVALS} (status {row['status']})")
            continue
        ev = read_evals(epath)
        if ev is None or ev.empty:
            continue
        ev.insert(0, "run_id", rel)
        ev.insert(1, "algorithm", row["algorithm"])
        ev.insert(2, "dataset", row["dataset"])
        ev.insert(3, "seed", row["seed"])
        ev.insert(4, "domain", row["domain"])
        evals.append(ev)
    run_cols = ["run_id", "algorithm", "dataset", "domain", "seed", "status", *NUMERIC_KEYS, "budget", "config",
                "versions", "git_commit", "error", "algorithm_raw", "run_dir"]
    extra_cols = sorted({k for r in rows for k in r} - set(run_cols))
    runs_df = pd.DataFrame(rows, columns=run_cols + extra_cols)
    if not runs_df.empty:
        runs_df["seed"] = runs_df["seed"].astype("int64")
        dup = runs_df.duplicated(["algorithm", "dataset", "seed"], keep=False)
        if dup.any():
            keys = runs_df.loc[dup, ["algorithm", "dataset", "seed"]].drop_duplicates().to_records(index=False)
            _warn(f"{len(keys)} (algorithm, dataset, seed) combination(s) occur in more than one run directory "
                  f"(e.g. {tuple(keys[0])}); all are kept, each counts as a run")
        runs_df = runs_df.sort_values(["algorithm", "dataset", "seed", "run_id"], ignore_index=True)
    base_eval = ["run_id", "algorithm", "dataset", "seed", "domain", *EVAL_COLUMNS]
    evals_df = pd.concat(evals, ignore_index=True) if evals else pd.DataFrame(columns=base_eval)
    return runs_df, evals_df


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Copy whose object columns hold only strings (JSON for anything else), for parquet."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            vals = out[col].dropna()
            if not all(isinstance(v, str) for v in vals):
                out[col] = out[col].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v))
                                        else (v if isinstance(v, str) else json.dumps(v, default=str)))
    return out


def portable(runs_df: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """Copy of the runs whose paths (`run_dir`, config `out`) are relative to `out`: no machine's absolute paths."""
    base = Path(out).resolve()

    def rel(path: Any) -> Any:
        if not isinstance(path, str) or not os.path.isabs(path):
            return path
        return Path(os.path.relpath(path, base)).as_posix()

    def config(text: Any) -> Any:
        data = json_dict(text)
        if "out" not in data:
            return text
        return json.dumps({**data, "out": rel(data["out"])}, sort_keys=True, default=str)

    df = runs_df.copy()
    if "run_dir" in df:
        df["run_dir"] = df["run_dir"].map(rel)
    if "config" in df:
        df["config"] = df["config"].map(config)
    return df


def write_frames(runs_df: pd.DataFrame, evals_df: pd.DataFrame, out: str | Path) -> dict[str, Path]:
    """Write runs/evals as parquet and csv under `out` (paths relative to it); return the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, df in (("runs", portable(runs_df, out)), ("evals", evals_df)):
        safe = _parquet_safe(df)
        paths[f"{name}.parquet"] = out / f"{name}.parquet"
        safe.to_parquet(paths[f"{name}.parquet"], index=False)
        paths[f"{name}.csv"] = out / f"{name}.csv"
        df.to_csv(paths[f"{name}.csv"], index=False)
    return paths


def write_tables(root: str | Path, out: str | Path) -> dict[str, Path]:
    """Collect `root` and write runs/evals as parquet and csv under `out`; return the written paths."""
    return write_frames(*collect(root), out)


def main(argv: list[str] | None = None) -> int:
    """`python -m analysis.collect RUNS --out DIR`: runs and evals tables (parquet and csv) of the records in RUNS."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m analysis.collect", description=main.__doc__)
    p.add_argument("runs", help="directory searched for run records (summary.json, evals.csv)")
    p.add_argument("--out", required=True, help="directory the tables are written to")
    args = p.parse_args(argv)
    try:
        paths = write_tables(args.runs, args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"collected {args.runs} -> {', '.join(str(v) for v in paths.values())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
