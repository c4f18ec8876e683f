"""`python -m o2o.suite compare TABLE FILE` (= `make compare ALGO=FILE TABLE=...`): a new algorithm beside a table.

The file is checked against the contract before any run of the table starts (README, "Add your algorithm"):
1. its command line: `python FILE --help` lists the flags the runner and the engine use (those of
   o2o.loop.LoopConfig: --dataset, --seed, --seeds, --out, --budget, ...) and the table's `compare_args` fields;
2. its records: a probe of PROBE_SEEDS for a few steps on the table's first dataset (in a temporary directory)
   writes, per seed, <out>/seed<N>/summary.json (status finished, its algorithm, dataset and seed) and evals.csv
   (the record columns; an evaluation in each phase the table has).
A file that fails gets one line naming what is missing. Its runs then join the table's runs directory
(`results/<table>/runs/<algorithm>/...`, the name its records carry) and are run like any suite run (skipped when
finished, resumed from a checkpoint). The baselines' finished runs there are reused; missing ones run only with
`baselines=True`. The report (analysis.report) covers the table's algorithms and the new one on the chosen datasets,
with the probability of improvement of the new algorithm over each baseline.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fnmatch
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from o2o.cli import BUDGETS, path_part
from o2o.records import EVAL_COLUMNS, atomic_write, read_summary
from o2o.suite import (
    ROOT,
    AlgorithmEntry,
    Suite,
    SuiteError,
    args_for_budget,
    cli_value,
    default_out,
    display_path,
    load_suite,
    plan_run,
    report,
    run_suite,
    worker_env,
)

# Flags every compared file must take: the runner's (o2o.suite.Run.command) and the engine's that the probe sets.
REQUIRED_FLAGS = ("dataset", "seed", "seeds", "out", "budget", "resume", "device", "offline_steps", "online_steps",
                  "eval_every", "eval_episodes")
PROBE_SEEDS = (0, 1)
PROBE_OFFLINE_STEPS = 4
PROBE_ONLINE_STEPS = 3
PROBE_TIMEOUT_S = 600
SOURCE_FILE = "compare.json"  # in <runs>/<algorithm>/: the sha256 of the file its runs came from
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# a flag at the start of a help line: argparse's "  --name", or inside tyro's box "│ --name"
_OPTION_RE = re.compile(r"^(?:\s{2}|│\s)(?:-\w, )?--([a-z][a-z0-9-]*)", re.M)


class ContractError(SuiteError):
    """A file that does not honour the algorithm contract: one line naming what is missing."""


# ------------------------------------------------------------------------------------------------------- contract
def help_flags(file: Path, env: dict[str, str]) -> set[str]:
    """Field names of the flags `python FILE --help` lists (dashes as underscores)."""
    where = display_path(file)
    try:
        res = subprocess.run([sys.executable, str(file), "--help"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ContractError(f"{where}: `--help` did not return within {PROBE_TIMEOUT_S} s") from None
    if res.returncode != 0:
        raise ContractError(f"{where}: `python {where} --help` failed (exit {res.returncode}): "
                            f"{_last_line(res.stderr or res.stdout)}")
    text = res.stdout
    head = re.search(r"^(options|optional arguments):\s*$|^╭─ options ─", text, re.M)
    flags = {f.replace("-", "_") for f in _OPTION_RE.findall(text[head.end():] if head else "")}
    if "dataset" not in flags:
        raise ContractError(f"{where}: `--help` shows no command line: the file must end with `if __name__ == "
                            "\"__main__\": raise SystemExit(main())`, main calling o2o.loop.main")
    return flags


def check_flags(file: Path, flags: set[str], fields: list[str]) -> None:
    """ContractError naming the required flags (and table fields) the file's command line lacks."""
    missing = [f for f in REQUIRED_FLAGS if f not in flags]
    where = display_path(file)
    if missing:
        raise ContractError(f"{where}: no {', '.join('--' + m.replace('_', '-') for m in missing)}: its config "
                            "must inherit o2o.loop.LoopConfig (README, 'Add your algorithm')")
    unknown = [f for f in fields if f not in flags]
    if unknown:
        raise ContractError(f"{where}: no field {', '.join(unknown)}, which this table sets for every compared "
                            "algorithm (its compare_args)")


def probe_command(file: Path, dataset: str, out: Path, args: dict[str, Any], online: bool,
                  device: str | None) -> list[str]:
    """The probe run: PROBE_SEEDS packed, a few steps of each phase the table has, one evaluation episode."""
    cmd = [sys.executable, str(file)]
    for key, value in args.items():
        cmd += [f"--{key.replace('_', '-')}", cli_value(value)]
    cmd += ["--dataset", dataset, "--seeds", ",".join(map(str, PROBE_SEEDS)), "--out", str(out),
            "--budget", "smoke", "--offline-steps", str(PROBE_OFFLINE_STEPS),
            "--online-steps", str(PROBE_ONLINE_STEPS if online else 0), "--eval-every", str(PROBE_OFFLINE_STEPS),
            "--eval-episodes", "1"]
    return cmd + (["--device", device] if device else [])


def record_problem(out: Path, dataset: str, online: bool) -> str | None:
    """What is wrong with the probe's records in `out` (None when they honour the contract)."""
    names = set()
    steps = PROBE_OFFLINE_STEPS + (PROBE_ONLINE_STEPS if online else 0)
    for seed in PROBE_SEEDS:
        run = out / f"seed{seed}"
        summary = read_summary(run)
        if summary is None:
            return f"no seed{seed}/summary.json: with --seeds each seed writes its records to <out>/seed<N>/"
        for key, want in (("dataset", dataset), ("seed", seed), ("status", "finished")):
            if summary.get(key) != want:
                return f"seed{seed}/summary.json has {key} {summary.get(key)!r}, not {want!r}"
        names.add(summary.get("algorithm"))
        if not isinstance(summary.get("last_score"), (int, float)) or not math.isfinite(summary["last_score"]):
            return f"seed{seed}/summary.json has no finite last_score"
        try:
            with open(run / "evals.csv", newline="") as f:
                rows = list(csv.DictReader(f))
                columns = rows[0].keys() if rows else []
        except OSError:
            return f"no seed{seed}/evals.csv"
        lacking = [c for c in EVAL_COLUMNS[:4] if c not in columns]
        if lacking:
            return f"seed{seed}/evals.csv has no rows or lacks the columns {', '.join(lacking)}"
        phases = {r["phase"] for r in rows}
        for phase in ("offline", "online") if online else ("offline",):
            if phase not in phases:
                return f"seed{seed}/evals.csv has no {phase} evaluation"
        if int(float(rows[-1]["step"])) != steps:
            return f"seed{seed}/evals.csv ends at step {rows[-1]['step']}, not at the last step {steps}"
    name = names.pop() if len(names) == 1 else None
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return (f"the seeds' summary.json name the algorithm {sorted(map(str, names | {name}))}: one name of letters, "
                "digits and _ . + - is needed")
    return None


def check_contract(file: Path, dataset: str, args: dict[str, Any], device: str | None = None,
                   stream: TextIO | None = None) -> str:
    """Check `file` against the contract (command line, then a probe's records); return its algorithm name."""
    stream = stream or sys.stdout
    where = display_path(file)
    if not file.is_file() or file.suffix != ".py":
        raise ContractError(f"{where}: no such Python file")
    env = worker_env(1)
    check_flags(file, help_flags(file, env), list(args))
    online = int(args.get("online_steps") or 0) > 0
    tmp = Path(tempfile.mkdtemp(prefix="o2o-probe-"))
    try:
        cmd = probe_command(file, dataset, tmp / "run", args, online, device)
        print(f"checking {where}: a probe of seeds {','.join(map(str, PROBE_SEEDS))} on {dataset} "
              f"({PROBE_OFFLINE_STEPS} offline{f' + {PROBE_ONLINE_STEPS} online' if online else ''} steps)",
              file=stream, flush=True)
        with open(tmp / "log.txt", "w") as log:
            try:
                rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=PROBE_TIMEOUT_S).returncode
            except subprocess.TimeoutExpired:
                raise ContractError(f"{where}: the probe run did not end within {PROBE_TIMEOUT_S} s") from None
        if rc != 0:
            raise ContractError(f"{where}: the probe run failed (exit {rc}): "
                                f"{_last_line((tmp / 'log.txt').read_text(errors='replace'))}")
        problem = record_problem(tmp / "run", dataset, online)
        if problem:
            raise ContractError(f"{where}: wrong records: {problem} (README, 'Run records')")
        return str(read_summary(tmp / "run" / f"seed{PROBE_SEEDS[0]}")["algorithm"])  # type: ignore[index]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


# ------------------------------------------------------------------------------------------------------- the suite
def select_datasets(suite: Suite, pattern: str | None) -> tuple[str, ...]:
    """The table's datasets matching one of the comma-separated fnmatch patterns (all without a pattern)."""
    if not pattern:
        return suite.datasets
    pats = [p.strip() for p in pattern.split(",") if p.strip()]
    chosen = tuple(d for d in suite.datasets if any(fnmatch.fnmatchcase(d, p) for p in pats))
    if not chosen:
        raise SuiteError(f"{suite.name}: no dataset matches {pattern!r}; its datasets: {', '.join(suite.datasets)}")
    return chosen


def compare_suite(suite: Suite, name: str, file: Path, datasets: tuple[str, ...]) -> Suite:
    """The table with `name` added (its compare_args, the table's seeds) and every algorithm on `datasets` only."""
    taken = {_key(a): a for a in suite.algorithms}
    if _key(name) in taken:
        raise ContractError(f"{display_path(file)}: its records name the algorithm {name!r}, as the table's "
                            f"{taken[_key(name)]!r}: rename ALGORITHM in the file")
    algos = {}
    for entry in suite.algorithms.values():
        mine = tuple(d for d in entry.datasets if d in datasets)
        if mine:
            algos[entry.name] = dataclasses.replace(entry, datasets=mine)
    algos[name] = AlgorithmEntry(name, file, dict(suite.compare_args), datasets, suite.seeds)
    published = f"{suite.published},{name}" if suite.published else None
    return dataclasses.replace(suite, datasets=datasets, algorithms=algos, published=published)


def _key(name: str) -> str:
    """An algorithm name as the analysis tells names apart (case and punctuation ignored)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def file_digest(file: Path) -> str:
    """sha256 of the file's bytes."""
    return hashlib.sha256(file.read_bytes()).hexdigest()


def claim_runs_dir(runs: Path, name: str, file: Path) -> None:
    """Record which file <runs>/<name>/ holds runs of; refuse when they came from a different version of it."""
    path = runs / name / SOURCE_FILE
    digest = file_digest(file)
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        old = None
    if isinstance(old, dict) and old.get("sha256") not in (None, digest):
        raise ContractError(f"{display_path(runs / name)} holds runs of another version of {old.get('file')}: "
                            f"delete that folder, or rename ALGORITHM, to compare {display_path(file)}")
    atomic_write(path, json.dumps({"file": display_path(file), "sha256": digest}, indent=2) + "\n")


def missing_baselines(suite: Suite, name: str, runs: Path, budget: str) -> dict[str, tuple[int, int]]:
    """Per baseline with unusable runs: (runs not finished at this budget and args, runs of the table)."""
    out: dict[str, list[int]] = {}
    for run in suite.runs(runs, budget):
        if run.algorithm != name:
            counts = out.setdefault(run.algorithm, [0, 0])
            counts[0] += plan_run(run).action != "skip"
            counts[1] += 1
    return {a: (n, total) for a, (n, total) in out.items() if n}


def report_dir(table: Suite, name: str) -> Path:
    """Where the comparison's report goes: reports/<table>/compare-<name>."""
    return Path("reports") / table.name / f"compare-{path_part(name)}"


def compare(table: str | Path, file: str | Path, budget: str | None = None, datasets: str | None = None,
            baselines: bool = False, workers: int = 1, runs: str | Path | None = None, out: str | Path | None = None,
            device: str | None = None, threads: int | None = None, pack: int = 0,
            stream: TextIO | None = None) -> int:
    """Check `file`, run it (and with `baselines` the missing baseline runs) on the table, report; exit status.

    `pack` caps the seeds per process as in run_suite (0: all seeds of an algorithm and dataset together)."""
    stream = stream or sys.stdout
    suite = load_suite(table, check_files=False)
    budget = budget or suite.budget
    if budget not in BUDGETS:
        raise SuiteError(f"budget must be one of {', '.join(BUDGETS)}, not {budget!r}")
    file = Path(file).expanduser().resolve()
    chosen = select_datasets(suite, datasets)
    args = args_for_budget(suite.compare_args, budget)
    name = check_contract(file, chosen[0], args, device, stream)
    both = compare_suite(suite, name, file, chosen)
    runs = Path(runs) if runs else default_out(suite)
    print(f"{display_path(file)} honours the contract; its runs: {display_path(runs / name)}", file=stream)
    claim_runs_dir(runs, name, file)
    lacking = missing_baselines(both, name, runs, budget)
    for algo, (n, total) in lacking.items():
        what = "run now" if baselines else "--baselines runs them"
        print(f"  {algo}: {n} of {total} runs not finished at budget {budget} in {display_path(runs)}: {what}",
              file=stream)
    result = run_suite(both, budget=budget, workers=workers, out=runs, only=None if baselines else name,
                       device=device, threads=threads, stream=stream, pack=pack)
    if result.interrupted:
        return 130
    out = Path(out) if out else report_dir(suite, name)
    options = ["--algorithms", ",".join(both.algorithms), "--versus", name]
    if datasets:
        options += ["--datasets", ",".join(chosen)]
    rc = report(both, runs, out, stream, options)
    if rc == 0 and (out / "README.md").is_file():
        print(f"report of {name} against {suite.name}: {display_path(out / 'README.md')}", file=stream, flush=True)
    if not result.ok:
        print(f"warning: {len(result.failed)} run(s) failed; see {display_path(runs / 'failures.csv')}",
              file=sys.stderr)
        return 1
    return rc


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m o2o.compare (or python -m o2o.suite compare)",
                                description="A new algorithm file beside a suite's baselines: check, run, report.")
    p.add_argument("suite", help="suite name in suites/ (the table) or path to a suite YAML file")
    p.add_argument("file", help="the algorithm file (README, 'Add your algorithm')")
    p.add_argument("--budget", choices=BUDGETS, default=None, help="default: the suite file's budget")
    p.add_argument("--datasets", default=None, help="comma-separated fnmatch patterns on the suite's datasets")
    p.add_argument("--baselines", action="store_true", help="also run the baselines' unfinished runs")
    p.add_argument("--workers", type=int, default=1, help="processes at the same time (default 1)")
    p.add_argument("--pack", type=int, default=0, help="at most N seeds per process (default 0: all; 1: one each)")
    p.add_argument("--runs", default=None, help="runs directory (default results/<suite>/runs)")
    p.add_argument("--out", default=None, help="report directory (default reports/<suite>/compare-<algorithm>)")
    p.add_argument("--device", default=None, help="--device for every run (default: each file's own)")
    p.add_argument("--threads", type=int, default=None, help="threads per run (default cores // workers)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m o2o.compare` (and of `python -m o2o.suite compare`)."""
    args = _parser().parse_args(argv)
    try:
        return compare(args.suite, args.file, args.budget, args.datasets, args.baselines, args.workers, args.runs,
                       args.out, args.device, args.threads, args.pack)
    except SuiteError as e:  # a contract, suite or dataset problem: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
