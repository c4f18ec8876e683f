"""Suites of runs (algorithms x datasets x seeds, `suites/*.yaml`): validate, run, collect and report them.

Command line (`python -m o2o.suite ...`):
  run SUITE [--budget B] [--workers N] [--pack N] [--backend local|ray] [--out DIR] [--only PATTERN] [--dry-run]
  collect SUITE [--runs DIR] [--out DIR]
  report SUITE [--runs DIR] [--out DIR]
  reproduce SUITE [--budget B] [--workers N] [--backend local|ray]   (run, collect, report)
  list | validate [SUITE ...]
  compare SUITE FILE [--budget B] [--datasets PATTERN] [--baselines] [--workers N] [--pack N]   (o2o.compare)

SUITE is a name in suites/ (`offline`, `o2o`, `famo2o`, `local`, `quickstart`) or a path to a YAML file. Runs go to
`results/<suite>/runs/<algorithm>/<dataset>/seed<N>/`; tables and figures to `reports/<suite>/` (both ignored by git;
with `--out`/`--runs` the report goes beside the runs directory instead). The committed evidence under
`results/<suite>/` is rewritten only on purpose, by `make evidence`.

Suite file keys: `description`, `budget` (smoke|short|full, the default of --budget), `seeds` (a list of ints or a
count), `min_seeds`, `datasets` (names; `{a,b}` expands, e.g. `{hopper,walker2d}-medium-v2`), `args` (fields for every
algorithm), `published` (pattern of results/published/*.csv for the report), `compare_args` (fields for an algorithm
that `compare` adds, on top of `args`: the table's protocol, e.g. its online steps) and `algorithms`: a mapping of a
name to `{file: PATH, args: {...}, datasets: [...], seeds: [...]}` or just to its file. An `args` value is a scalar, a
list, or a mapping by budget (`{smoke: 1000, short: 100000, full: 1000000}`; a budget it lacks leaves the field unset).

The sweep is resumable and idempotent: a run whose directory holds a finished (or diverged) summary is skipped; one
with a checkpoint is restarted with `--resume true` (one whose checkpoint proved corrupt starts from scratch instead,
since it can never be resumed); a failed run is recorded (its summary.json gets status 'failed'
and the tail of its log.txt, `<out>/failures.csv` a line) and the sweep goes on. The runner keeps nothing that
matters in memory: a killed runner loses no finished run, and run directories are locked while a run is alive.

Seeds are packed: the seeds of one (algorithm, dataset) whose file supports `--seeds` (the engine, o2o/loop.py) train
in one process, `--pack N` at most together (1: one process per run). Each seed keeps its own run directory, record,
skip/resume decision and failure record; a pack's output goes to its first seed's log.txt.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from o2o.cli import BUDGETS
from o2o.suite.backends import BACKENDS, SweepResult
from o2o.suite.fields import suite_problems
from o2o.suite.process import FAILURES_FILE
from o2o.suite.reporting import collect, report
from o2o.suite.runner import run_suite
from o2o.suite.spec import Suite, SuiteError, default_out, display_path, load_suite, report_dir, suite_names


def validate_suites(names: Iterable[str | Path], stream: TextIO | None = None) -> int:
    """`validate`: 'ok' per sound suite, 'error: ...' on stderr per problem; 1 when any suite has a problem."""
    stream = stream or sys.stdout
    bad = 0
    for name in names:
        problems = suite_problems(name)
        for m in problems:
            print(f"error: {m}", file=sys.stderr)
        if problems:
            bad += 1
        else:
            s = load_suite(name, check_files=False)
            print(f"ok: {name}: {len(s.runs(default_out(s)))} runs", file=stream)
    return 1 if bad else 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m o2o.suite", description=__doc__.split("\n", 1)[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    sub = p.add_subparsers(dest="cmd", required=True)

    def runner_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("suite", help="suite name in suites/ or path to a suite YAML file")
        sp.add_argument("--budget", choices=BUDGETS, default=None, help="default: the suite file's budget")
        sp.add_argument("--workers", type=int, default=1, help="runs at the same time (default 1)")
        sp.add_argument("--backend", choices=tuple(BACKENDS), default="local")
        sp.add_argument("--out", default=None, help="runs directory (default results/<suite>/runs; reproduce then "
                                                    "reports beside it instead of in reports/<suite>)")
        sp.add_argument("--only", default=None, help="comma-separated fnmatch patterns on algo/dataset/seedN, "
                                                     "the algorithm or the dataset")
        sp.add_argument("--device", default=None, help="--device for every run (default: each file's own)")
        sp.add_argument("--threads", type=int, default=None, help="threads per run (default cores // workers)")
        sp.add_argument("--no-prepare", action="store_true", help="do not generate local: datasets beforehand")
        sp.add_argument("--skip-failed", action="store_true", help="leave runs that failed before (default: retry)")
        sp.add_argument("--pack", type=int, default=0,
                        help="at most N seeds of one algorithm and dataset per process, for files that support "
                             "--seeds (default 0: all of them; 1: one process per run)")

    sp = sub.add_parser("run", help="run every unfinished run of a suite")
    runner_opts(sp)
    sp.add_argument("--dry-run", action="store_true", help="list what would run and what is skipped")
    sr = sub.add_parser("reproduce", help="run a suite into results/<suite>/runs/, report it into reports/<suite>/")
    runner_opts(sr)
    for name, text in (("collect", "write reports/<suite>/runs.parquet and evals.parquet"),
                       ("report", "tables and figures of a collected suite")):
        sc = sub.add_parser(name, help=text)
        sc.add_argument("suite")
        sc.add_argument("--runs", default=None, help="runs directory (default results/<suite>/runs)")
        sc.add_argument("--out", default=None,
                        help="output directory (default reports/<suite>, or beside --runs when given)")
    sm = sub.add_parser("compare", add_help=False, help="a new algorithm file beside a suite's baselines: check, run, "
                                                         "report (= python -m o2o.compare; its --help lists the flags)")
    sm.add_argument("rest", nargs=argparse.REMAINDER)
    sub.add_parser("list", help="the suites in suites/")
    sv = sub.add_parser("validate", help="check suite files (default: all in suites/)")
    sv.add_argument("suites", nargs="*")
    return p


def _sweep_from_args(args: argparse.Namespace, suite: Suite, dry_run: bool) -> SweepResult:
    return run_suite(suite, budget=args.budget, workers=args.workers, backend=args.backend, out=args.out,
                     only=args.only, dry_run=dry_run, device=args.device, threads=args.threads,
                     prepare=not args.no_prepare, retry_failed=not args.skip_failed, pack=args.pack)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM stops the sweep like Ctrl-C: the running runs are stopped and keep their checkpoints."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m o2o.suite`."""
    args = _parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.cmd == "list":
            for name in suite_names():
                s = load_suite(name, check_files=False)
                print(f"{name:12s} {len(s.runs(default_out(s))):5d} runs, budget {s.budget:5s} {s.description}")
            return 0
        if args.cmd == "validate":
            return validate_suites(args.suites or suite_names())
        if args.cmd == "compare":  # o2o.compare builds on this module: it runs as its own command, never imported here
            return subprocess.call([sys.executable, "-m", "o2o.compare", *args.rest])
        suite = load_suite(args.suite, check_files=False)
        if args.cmd == "collect":
            collect(suite, args.runs, args.out)
            return 0
        if args.cmd == "report":
            return report(suite, args.runs, args.out)
        result = _sweep_from_args(args, suite, dry_run=args.cmd == "run" and args.dry_run)
        if args.cmd == "run" or result.interrupted:
            return 130 if result.interrupted else (0 if result.ok or args.dry_run else 1)
        runs_dir = result.out
        out = report_dir(suite, runs_dir if args.out else None)
        collect(suite, runs_dir, out)
        rc = report(suite, runs_dir, out)
        print(f"results of {suite.name}: {display_path(out)}")
        if not result.ok:
            print(f"warning: {len(result.failed)} run(s) failed; see {runs_dir / FAILURES_FILE}", file=sys.stderr)
            return 1
        return rc
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`
        sys.stderr.close()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


