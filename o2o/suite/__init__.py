"""Suites of runs (algorithms x datasets x seeds, `suites/*.yaml`): validate, run, collect and report them.

`python -m o2o.suite --help` lists the commands. The package, lowest module first:
  spec       the suite file's typed schema and validation (SuiteFile, AlgorithmFile), Suite, Run, load_suite
  fields     the config fields of algorithm files (read in a subprocess): unknown `args`, `--seeds` support
  plan       skip/resume/retry/rerun decisions from each run directory, seed packs and their command lines
  process    one pack as one locked process: launch, wait, conclude, failure records
  progress   the tqdm bar on stderr and the run lines of a sweep
  backends   the local process pool and Ray, one interface (BACKENDS)
  runner     run_suite: plan, prepare local: datasets, execute on a backend
  reporting  collect and report through the analysis, in subprocesses
  cli        the command line (main)
"""

from o2o.suite.backends import BACKENDS, SweepResult
from o2o.suite.cli import main, validate_suites
from o2o.suite.fields import config_fields, suite_problems, supports_seeds, unknown_args
from o2o.suite.plan import RUN_FILE, Plan, make_packs, pack_command, plan_run, select
from o2o.suite.process import FAILURES_FILE, LOG_FILE, Outcome, execute_pack, execute_run, worker_env
from o2o.suite.reporting import collect, report
from o2o.suite.runner import prepare_datasets, run_suite
from o2o.suite.spec import (
    ROOT,
    AlgorithmEntry,
    AlgorithmFile,
    Run,
    Suite,
    SuiteError,
    SuiteFile,
    args_for_budget,
    cli_value,
    default_out,
    display_path,
    load_suite,
    report_dir,
    suite_names,
)

__all__ = [
    "BACKENDS", "FAILURES_FILE", "LOG_FILE", "ROOT", "RUN_FILE", "AlgorithmEntry", "AlgorithmFile", "Outcome", "Plan",
    "Run", "Suite", "SuiteError", "SuiteFile", "SweepResult", "args_for_budget", "cli_value", "collect",
    "config_fields", "default_out", "display_path", "execute_pack", "execute_run", "load_suite", "main",
    "make_packs", "pack_command", "plan_run", "prepare_datasets", "report", "report_dir", "run_suite", "select",
    "suite_names", "suite_problems", "supports_seeds", "unknown_args", "validate_suites", "worker_env",
]
