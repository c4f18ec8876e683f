"""Collecting and reporting a suite's runs through the analysis, always in a subprocess: `python -m analysis.collect`
and `python -m analysis.report` (o2o/ sits below analysis/ and never imports it; it reads the analysis's output)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from o2o.suite.spec import ROOT, Suite, SuiteError, default_out, display_path, report_dir

REPORT_MODULE = "analysis.report"
COLLECT_MODULE = "analysis.collect"
COLLECTED = ("runs.parquet", "runs.csv", "evals.parquet", "evals.csv")


def analysis_env() -> dict[str, str]:
    """Environment of the analysis subprocesses: the project importable, a non-interactive matplotlib backend."""
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def collect(suite: Suite, runs: str | Path | None = None, out: str | Path | None = None,
            stream: TextIO | None = None) -> dict[str, Path]:
    """Tables of a suite's runs: `runs.parquet` and `evals.parquet` (and .csv) in report_dir, made by
    `python -m analysis.collect` in a subprocess (the runner reads the analysis's output, never imports it)."""
    stream = stream or sys.stdout
    out = Path(out or report_dir(suite, runs))
    runs = Path(runs or default_out(suite))
    if not runs.is_dir():
        raise SuiteError(f"{suite.name}: no runs directory {runs} (run the suite first)")
    cmd = [sys.executable, "-m", COLLECT_MODULE, str(runs), "--out", str(out)]
    done = subprocess.run(cmd, cwd=Path.cwd(), env=analysis_env(), stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SuiteError(f"{shlex.join(cmd)} failed (exit {done.returncode})")
    paths = {name: out / name for name in COLLECTED if (out / name).is_file()}
    print(f"collected {runs} -> {', '.join(str(p) for p in paths.values())}", file=stream, flush=True)
    return paths


def _module_exists(name: str) -> bool:
    """Whether `package.module` can be found, without importing the package (find_spec of a dotted name would)."""
    parent, _, child = name.rpartition(".")
    spec = importlib.util.find_spec(parent) if parent else None
    locations = spec.submodule_search_locations if spec is not None else None
    return bool(locations) and importlib.machinery.PathFinder.find_spec(child, list(locations)) is not None


def report_command() -> list[str] | None:
    """`python -m analysis.report`, or None while the analysis package has no report module."""
    return [sys.executable, "-m", REPORT_MODULE] if _module_exists(REPORT_MODULE) else None


def report(suite: Suite, runs: str | Path | None = None, out: str | Path | None = None,
           stream: TextIO | None = None, options: Sequence[str] = ()) -> int:
    """Tables and figures of a suite (`python -m analysis.report` with `options` added); skipped with a note when it
    is not there yet."""
    stream = stream or sys.stdout
    out = Path(out or report_dir(suite, runs))
    runs = Path(runs or default_out(suite))
    base = report_command()
    if base is None:
        print(f"{REPORT_MODULE} is not available yet: no tables or figures made (runs.parquet and evals.parquet "
              f"are in {out})", file=stream, flush=True)
        return 0
    cmd = [*base, display_path(runs), "--out", display_path(out), "--suite", suite.name]
    if suite.published:
        cmd += ["--published", suite.published]
    cmd += list(options)
    t0 = time.time()
    print(f"report: {shlex.join(cmd)}", file=stream, flush=True)
    rc = subprocess.run(cmd, cwd=Path.cwd(), env=analysis_env()).returncode
    if rc != 0:
        print(f"analysis.report failed (exit {rc})", file=stream, flush=True)
        return rc
    made = sorted(p for p in out.rglob("*") if p.is_file() and p.stat().st_mtime >= t0
                  and runs.resolve() not in p.resolve().parents)
    tables = [p for p in made if p.suffix == ".md"] or [p for p in made if p.suffix in (".csv", ".tex", ".html")]
    figures = [p for p in made if p.suffix == ".png"] or [p for p in made if p.suffix in (".pdf", ".svg")]
    print(f"tables:  {', '.join(map(str, tables)) or '(none)'}", file=stream)
    print(f"figures: {', '.join(map(str, figures)) or '(none)'}", file=stream, flush=True)
    return 0
