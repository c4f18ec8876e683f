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
import csv
import fcntl
import fnmatch
import importlib.machinery
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from o2o.cli import BUDGETS, path_part
from o2o.records import (
    CORRUPT,
    LOCK_FILE,
    atomic_write,
    clear_records,
    is_finished,
    lock_run_dir,
    read_json,
    read_summary,
)

ROOT = Path(__file__).resolve().parent.parent
SUITES_DIR = ROOT / "suites"
RESULTS_DIR = Path("results")
REPORTS_DIR = Path("reports")
TOP_KEYS = ("name", "description", "budget", "seeds", "min_seeds", "datasets", "args", "published", "compare_args",
            "algorithms")
ALGORITHM_KEYS = ("file", "args", "datasets", "seeds")
RESERVED_ARGS = ("dataset", "env", "seed", "out", "budget", "resume", "device")
RUN_FILE = "run.json"
LOG_FILE = "log.txt"
FAILURES_FILE = "failures.csv"
REPORT_MODULE = "analysis.report"
COLLECT_MODULE = "analysis.collect"
COLLECTED = ("runs.parquet", "runs.csv", "evals.parquet", "evals.csv")
FAILURE_COLUMNS = ["time", "run_id", "algorithm", "dataset", "seed", "exit_code", "run_dir", "error"]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "O2O_NUM_THREADS")
TAIL_LINES = 30
TAIL_CHARS = 4000
HEARTBEAT_S = 30.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_ARG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_BRACE_RE = re.compile(r"\{([^{}]*)\}")

# Started as `python -c _EXEC <file> <args...>`: the run dies with the runner (SIGTERM on the parent's death), then
# the interpreter replaces itself with `python <file> <args...>`, so the algorithm sees its usual sys.argv.
_EXEC = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "parent = os.environ.get('O2O_SUITE_PARENT')\n"
    "if parent and os.getppid() != int(parent):\n"
    "    sys.exit(143)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


class SuiteError(ValueError):
    """A suite file that cannot be used: a one-line message naming the file and the key."""


# ------------------------------------------------------------------------------------------------------ suite files
@dataclass(frozen=True)
class AlgorithmEntry:
    """One algorithm of a suite: its file, its extra fields, and the datasets and seeds it runs on."""

    name: str
    file: Path
    args: dict[str, Any]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Run:
    """One run of a sweep: an algorithm file on a dataset with a seed, writing to its own directory."""

    algorithm: str
    file: str
    dataset: str
    seed: int
    budget: str
    args: tuple[tuple[str, str], ...]
    out: str
    device: str | None = None

    @property
    def id(self) -> str:
        """`algorithm/dataset/seedN`, the name `--only` patterns match."""
        return f"{self.algorithm}/{self.dataset}/seed{self.seed}"

    def command(self, resume: bool = False) -> list[str]:
        """The command line of the run (the common command line of every algorithm file plus its fields)."""
        cmd = [sys.executable, self.file, "--dataset", self.dataset, "--seed", str(self.seed), "--out", self.out,
               "--budget", self.budget]
        if self.device:
            cmd += ["--device", self.device]
        for key, value in self.args:
            cmd += [f"--{key.replace('_', '-')}", value]
        if resume:
            cmd += ["--resume", "true"]
        return cmd

    def pack_key(self) -> tuple[Any, ...]:
        """Runs with the same key differ only in their seed: one process can train them together."""
        return (self.algorithm, self.file, self.dataset, self.budget, self.args, self.device,
                str(Path(self.out).parent))

    def spec(self) -> dict[str, Any]:
        """What decides the run's result, recorded in run.json to tell a stale run directory."""
        return {"algorithm": self.algorithm, "file": _display_path(Path(self.file)), "dataset": self.dataset,
                "seed": self.seed, "budget": self.budget, "args": dict(self.args)}


def pack_command(runs: Sequence[Run], resume: bool = False) -> list[str]:
    """One process for the seeds of runs that share a pack_key: `--seeds a,b,c --out <parent of their seed dirs>`
    (each seed writes `<out>/seed<N>/`, the engine's layout); a single run keeps its own `--seed` command."""
    if len(runs) == 1:
        return runs[0].command(resume)
    first = runs[0]
    cmd = first.command(resume)
    i = cmd.index("--seed")
    cmd[i:i + 2] = ["--seeds", ",".join(str(r.seed) for r in runs)]
    j = cmd.index("--out")
    cmd[j + 1] = str(Path(first.out).parent)
    return cmd


@dataclass(frozen=True)
class Suite:
    """A validated suite file."""

    name: str
    path: Path
    description: str
    budget: str
    seeds: tuple[int, ...]
    datasets: tuple[str, ...]
    algorithms: dict[str, AlgorithmEntry]
    published: str | None = None
    min_seeds: int = 1
    compare_args: dict[str, Any] = field(default_factory=dict)  # `args` + `compare_args`: a compared file's fields

    def runs(self, out: str | Path, budget: str | None = None, device: str | None = None) -> list[Run]:
        """Every run of the suite, seed-major (all tasks of seed 0 first, so a partial sweep is balanced)."""
        budget = budget or self.budget
        if budget not in BUDGETS:
            raise SuiteError(f"budget must be one of {', '.join(BUDGETS)}, not {budget!r}")
        out = Path(out).resolve()
        items = []
        for algo in self.algorithms.values():
            args = tuple((k, _cli_value(v)) for k, v in _args_for_budget(algo.args, budget).items())
            for dataset in algo.datasets:
                for seed in algo.seeds:
                    run_dir = out / algo.name / _safe(dataset) / f"seed{seed}"
                    items.append(Run(algo.name, str(algo.file), dataset, seed, budget, args, str(run_dir), device))
        order = {name: i for i, name in enumerate(self.algorithms)}
        dorder = {name: i for i, name in enumerate(self._all_datasets())}
        return sorted(items, key=lambda r: (r.seed, dorder[r.dataset], order[r.algorithm]))

    def _all_datasets(self) -> list[str]:
        seen: dict[str, None] = dict.fromkeys(self.datasets)
        for algo in self.algorithms.values():
            seen.update(dict.fromkeys(algo.datasets))
        return list(seen)

    def missing_files(self, algorithms: Iterable[str] | None = None) -> list[str]:
        """One message per algorithm (of those named, default all) whose file does not exist."""
        names = list(self.algorithms) if algorithms is None else list(algorithms)
        where = _display_path(self.path)
        return [f"{where}: algorithms.{n}.file: no such file {_display_path(self.algorithms[n].file)}"
                for n in names if not self.algorithms[n].file.is_file()]


# Reads an algorithm file's config class in a fresh interpreter: the file is imported (not run), and its config is
# the most derived o2o.cli.RunConfig subclass in its namespace. Prints {file: [field names + old names] or null}.
_FIELDS_SCRIPT = """
import dataclasses, importlib.util, json, sys
from o2o.cli import RunConfig, renamed_fields
out = {}
for i, path in enumerate(sys.argv[1:]):
    try:
        spec = importlib.util.spec_from_file_location(f"_o2o_suite_algorithm_{i}", path)
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except BaseException:
        out[path] = None
        continue
    found = [c for c in vars(module).values() if isinstance(c, type) and dataclasses.is_dataclass(c)
             and issubclass(c, RunConfig)]
    own = [c for c in found if c.__module__ == module.__name__] or found  # its own config, not one it imports
    cls = max(own, key=lambda c: len(c.__mro__), default=RunConfig)
    out[path] = sorted({f.name for f in dataclasses.fields(cls)} | set(renamed_fields(cls)))
print(json.dumps(out))
"""
_FIELDS_CACHE: dict[tuple[str, int, int], set[str] | None] = {}


def _stamp(file: Path) -> tuple[str, int, int]:
    st = file.stat()
    return str(file.resolve()), st.st_mtime_ns, st.st_size


def load_config_fields(files: Iterable[Path]) -> None:
    """Read the config fields of the files not read yet (or changed since), all in one subprocess."""
    todo = {_stamp(f): f for f in {Path(f) for f in files} if f.is_file()}
    todo = {k: f for k, f in todo.items() if k not in _FIELDS_CACHE}
    if not todo:
        return
    proc = subprocess.run([sys.executable, "-c", _FIELDS_SCRIPT, *(k[0] for k in todo)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
    try:
        found = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        found = {}
    for key in todo:
        names = found.get(key[0])
        _FIELDS_CACHE[key] = None if names is None else set(names)


def config_fields(file: Path) -> set[str] | None:
    """The flags an algorithm file accepts: the fields of its config class (and their old names), read by importing
    the file in a subprocess; None for a file that cannot be imported."""
    file = Path(file)
    if not file.is_file():
        return None
    load_config_fields([file])
    return _FIELDS_CACHE.get(_stamp(file))


def supports_seeds(file: str | Path) -> bool:
    """Whether an algorithm file trains several seeds in one process (`--seeds`, the engine's o2o.loop)."""
    return "seeds" in (config_fields(Path(file)) or set())


def unknown_args(suite: Suite) -> list[str]:
    """One message per `args` field that the algorithm's file does not declare (files that exist only)."""
    where = _display_path(suite.path)
    out = []
    load_config_fields(a.file for a in suite.algorithms.values())
    for algo in suite.algorithms.values():
        fields = config_fields(algo.file) if algo.file.is_file() else None
        if fields is None:
            continue
        out += [f"{where}: algorithms.{algo.name}.args.{k}: {_display_path(algo.file)} has no field {k!r}"
                for k in algo.args if k not in fields]
    return out


def _safe(dataset: str) -> str:
    return path_part(dataset)


def _display_path(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _cli_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)):
        return ",".join(_cli_value(x) for x in v)
    return str(v)


def _args_for_budget(args: dict[str, Any], budget: str) -> dict[str, Any]:
    out = {}
    for k, v in args.items():
        if isinstance(v, dict):
            if budget in v:
                out[k] = v[budget]
        else:
            out[k] = v
    return out


def expand_braces(text: str) -> list[str]:
    """Expand `{a,b}` groups: 'x-{a,b}-{1,2}' -> ['x-a-1', 'x-a-2', 'x-b-1', 'x-b-2']."""
    m = _BRACE_RE.search(text)
    if m is None:
        return [text]
    head, tail = text[:m.start()], text[m.end():]
    return [x for alt in m.group(1).split(",") for x in expand_braces(head + alt.strip() + tail)]


def suite_names() -> list[str]:
    """Names of the suites in suites/."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def resolve_suite_path(suite: str | Path) -> Path:
    """A suite name in suites/ or a path to a YAML file."""
    p = Path(suite)
    named = p.suffix not in (".yaml", ".yml") and os.sep not in str(suite)
    if named and (SUITES_DIR / f"{suite}.yaml").is_file():
        return SUITES_DIR / f"{suite}.yaml"
    if p.is_file():
        return p
    if named:
        raise SuiteError(f"{suite}: unknown suite; known: {', '.join(suite_names()) or '(none)'} (or give a path)")
    raise SuiteError(f"{suite}: no such suite file")


def _resolve_file(value: str, suite_path: Path) -> Path:
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    for base in (ROOT, suite_path.resolve().parent, Path.cwd()):
        if (base / p).is_file():
            return (base / p).resolve()
    return (ROOT / p).resolve()


class _Checker:
    """Validation helpers that raise SuiteError as `<file>: <key>: <problem>`."""

    def __init__(self, path: Path) -> None:
        self.where = _display_path(path)

    def fail(self, key: str, problem: str) -> SuiteError:
        return SuiteError(f"{self.where}: {key}: {problem}" if key else f"{self.where}: {problem}")

    def keys(self, data: dict[str, Any], allowed: Sequence[str], prefix: str) -> None:
        for k in data:
            if k not in allowed:
                key = f"{prefix}.{k}" if prefix else str(k)
                raise self.fail(key, f"unknown key; allowed: {', '.join(allowed)}")

    def seeds(self, value: Any, key: str) -> tuple[int, ...]:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise self.fail(key, f"a seed count must be at least 1, not {value}")
            return tuple(range(value))
        if not isinstance(value, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
            raise self.fail(key, f"must be a list of integers or a count, not {value!r}")
        if not value:
            raise self.fail(key, "no seeds given")
        if len(set(value)) != len(value):
            raise self.fail(key, f"seeds repeat: {value}")
        if any(s < 0 for s in value):
            raise self.fail(key, f"seeds must be non-negative: {value}")
        return tuple(value)

    def datasets(self, value: Any, key: str) -> tuple[str, ...]:
        from o2o.registry import family_of
        from o2o.specs import get_spec

        if not isinstance(value, list) or not value or not all(isinstance(d, str) for d in value):
            raise self.fail(key, f"must be a non-empty list of dataset names, not {value!r}")
        names: list[str] = []
        for item in value:
            for name in expand_braces(item):
                try:  # a Minari id needs no local copy here: its runs fetch it
                    family_of(name) if name.startswith("minari:") else get_spec(name)
                except KeyError as e:
                    raise self.fail(key, e.args[0] if e.args else f"unknown dataset {name!r}") from None
                if name in names:
                    raise self.fail(key, f"dataset {name!r} is listed twice")
                names.append(name)
        return tuple(names)

    def args(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping of field names to values, not {value!r}")
        for k, v in value.items():
            sub = f"{key}.{k}"
            if not isinstance(k, str) or not _ARG_RE.match(k):
                raise self.fail(sub, "not a field name (letters, digits and _)")
            if k in RESERVED_ARGS:
                raise self.fail(sub, f"set by the runner; not allowed in args ({', '.join(RESERVED_ARGS)})")
            if isinstance(v, dict):
                bad = [b for b in v if b not in BUDGETS]
                if bad or not v:
                    raise self.fail(sub, f"a per-budget value needs keys among {', '.join(BUDGETS)}, not {list(v)}")
                for b, x in v.items():
                    self.value(x, f"{sub}.{b}")
            else:
                self.value(v, sub)
        return dict(value)

    def value(self, v: Any, key: str) -> None:
        if isinstance(v, list):
            for x in v:
                self.value(x, key) if not isinstance(x, list) else self.fail_value(x, key)
        elif v is not None and not isinstance(v, (str, int, float, bool)):
            self.fail_value(v, key)

    def fail_value(self, v: Any, key: str) -> None:
        raise self.fail(key, f"value must be a number, string, boolean, null or a list of them, not {v!r}")


def load_suite(suite: str | Path, check_files: bool = True) -> Suite:
    """Read and validate a suite file; SuiteError with a one-line message on any problem."""
    import yaml

    path = resolve_suite_path(suite)
    ck = _Checker(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ck.fail("", f"invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ck.fail("", "a suite file must be a mapping with keys " + ", ".join(TOP_KEYS))
    ck.keys(data, TOP_KEYS, "")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ck.fail("name", f"not a usable name {name!r}")
    budget = data.get("budget", "full")
    if budget not in BUDGETS:
        raise ck.fail("budget", f"must be one of {', '.join(BUDGETS)}, not {budget!r}")
    min_seeds = data.get("min_seeds", 1)
    if not isinstance(min_seeds, int) or isinstance(min_seeds, bool) or min_seeds < 1:
        raise ck.fail("min_seeds", f"must be a positive integer, not {min_seeds!r}")
    if "seeds" not in data:
        raise ck.fail("seeds", "missing (a list of integers or a count)")
    seeds = ck.seeds(data["seeds"], "seeds")
    if "datasets" not in data:
        raise ck.fail("datasets", "missing (a list of dataset names)")
    datasets = ck.datasets(data["datasets"], "datasets")
    common = ck.args(data.get("args"), "args")
    compare_args = {**common, **ck.args(data.get("compare_args"), "compare_args")}
    published = data.get("published")
    if published is not None and not isinstance(published, str):
        raise ck.fail("published", f"must be a file pattern string, not {published!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ck.fail("description", "must be a string")
    algos_raw = data.get("algorithms")
    if not isinstance(algos_raw, dict) or not algos_raw:
        raise ck.fail("algorithms", "missing or empty (a mapping of names to {file: PATH, ...})")
    algorithms: dict[str, AlgorithmEntry] = {}
    for aname, entry in algos_raw.items():
        key = f"algorithms.{aname}"
        if not isinstance(aname, str) or not _NAME_RE.match(aname):
            raise ck.fail(key, "not a usable name (letters, digits, _ . + -)")
        if isinstance(entry, str):
            entry = {"file": entry}
        if not isinstance(entry, dict):
            raise ck.fail(key, f"must be a mapping with a file, or a file path, not {entry!r}")
        ck.keys(entry, ALGORITHM_KEYS, key)
        if not isinstance(entry.get("file"), str) or not entry["file"]:
            raise ck.fail(f"{key}.file", "missing (the algorithm's script, e.g. baselines/iql.py)")
        file = _resolve_file(entry["file"], path)
        if check_files and not file.is_file():
            raise ck.fail(f"{key}.file", f"no such file {entry['file']}")
        a_seeds = ck.seeds(entry["seeds"], f"{key}.seeds") if "seeds" in entry else seeds
        if len(a_seeds) < min_seeds:
            raise ck.fail(f"{key}.seeds" if "seeds" in entry else "seeds",
                          f"{len(a_seeds)} seed(s), fewer than min_seeds={min_seeds}")
        a_data = ck.datasets(entry["datasets"], f"{key}.datasets") if "datasets" in entry else datasets
        args = {**common, **ck.args(entry.get("args"), f"{key}.args")}
        algorithms[aname] = AlgorithmEntry(aname, file, args, a_data, a_seeds)
    return Suite(name, path, description, budget, seeds, datasets, algorithms, published, min_seeds, compare_args)


# -------------------------------------------------------------------------------------------------------- planning
@dataclass
class Plan:
    """What the runner will do with one run: skip, start, resume, retry, rerun (stale) or leave (busy)."""

    run: Run
    action: str
    reason: str = ""

    @property
    def executes(self) -> bool:
        """Whether the run will be started."""
        return self.action in ("start", "resume", "retry", "rerun")


def _stale_reason(run: Run) -> str:
    out = Path(run.out)
    summary = read_summary(out)
    if summary and summary.get("budget") not in (None, run.budget):
        return f"budget {summary.get('budget')} -> {run.budget}"
    recorded = read_json(out / RUN_FILE)
    if recorded and isinstance(recorded.get("spec"), dict):
        old = recorded["spec"]
        for key in ("budget", "args", "dataset", "seed"):
            if key in old and old[key] != run.spec()[key]:
                return f"{key} {old[key]} -> {run.spec()[key]}"
    return ""


def _locked(run_dir: Path) -> bool:
    lock = run_dir / LOCK_FILE
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def plan_run(run: Run, retry_failed: bool = True) -> Plan:
    """Decide from the run directory alone what to do with a run (the runner's only state is on disk)."""
    out = Path(run.out)
    if not out.exists():
        return Plan(run, "start")
    if _locked(out):
        return Plan(run, "busy", "another process is running it")
    return _plan_from_records(run, retry_failed)


def _plan_from_records(run: Run, retry_failed: bool = True) -> Plan:
    """plan_run without the lock test: what the run directory's records say (also used under the run's lock)."""
    out = Path(run.out)
    if not out.exists():
        return Plan(run, "start")
    stale = _stale_reason(run)
    if stale:
        return Plan(run, "rerun", f"stale: {stale}")
    if is_finished(out):
        return Plan(run, "skip", (read_summary(out) or {}).get("status", "finished"))
    summary = read_summary(out) or {}
    failed = summary.get("status") == "failed"
    if failed and not retry_failed:
        return Plan(run, "skip-failed", "failed before")
    if (out / "checkpoint.pt").exists():
        if failed and CORRUPT in str(summary.get("error") or ""):  # never resumable: start afresh, once
            return Plan(run, "rerun", "its checkpoint is corrupt; from scratch")
        return Plan(run, "resume", "failed before; from checkpoint" if failed else "checkpoint")
    if failed:
        return Plan(run, "retry", "failed before")
    return Plan(run, "start", "interrupted before a checkpoint" if summary.get("status") == "running" else "")


def _checkpoint_step(out: Path) -> int | str | None:
    """Step of a run directory's committed (or completely staged) checkpoint; None without one."""
    if not (out / "checkpoint.pt").exists():
        return None
    for name in ("checkpoint.json", ".checkpoint.json.new"):
        meta = read_json(out / name)
        if meta is not None and isinstance(meta.get("step"), int):
            return meta["step"]
    return f"unknown:{out}"  # no sidecar: a pack of its own


def make_packs(plans: Sequence[Plan], pack: int = 0) -> list[list[Plan]]:
    """Group the runs to execute into processes: the seeds of one (algorithm, dataset, args) whose file supports
    `--seeds`, at most `pack` together (0: no cap; 1: one process per run), split by checkpoint step so that a
    pack resumes together (the engine resumes seeds only from one common step). Order of first appearance."""
    groups: dict[tuple[Any, ...], list[Plan]] = {}
    capable: dict[str, bool] = {}
    for p in plans:
        file = p.run.file
        if file not in capable:
            capable[file] = pack != 1 and supports_seeds(file)
        if not capable[file]:
            groups[("single", p.run.id)] = [p]
            continue
        step = None if p.action == "rerun" else _checkpoint_step(Path(p.run.out))
        groups.setdefault((*p.run.pack_key(), step), []).append(p)
    out: list[list[Plan]] = []
    for members in groups.values():
        size = len(members) if pack <= 0 else pack
        out += [members[i:i + size] for i in range(0, len(members), size)]
    return out


# ------------------------------------------------------------------------------------------------------- executing
@dataclass
class Outcome:
    """How one started run ended."""

    run: Run
    status: str  # finished | diverged | failed | busy | interrupted
    returncode: int | None = None
    seconds: float = 0.0
    error: str | None = None
    score: float | None = None
    resumed: bool = False


@dataclass
class _Active:
    runs: list[Run]  # the seeds this process trains (one, or a pack)
    proc: subprocess.Popen[bytes]
    lock_fds: list[int]
    log: Any
    log_path: Path
    offset: int
    started: float
    resumed: bool

    @property
    def label(self) -> str:
        """`algo/dataset/seedN`, or `algo/dataset/seed{a,b,c}` for a pack."""
        if len(self.runs) == 1:
            return self.runs[0].id
        first = self.runs[0]
        return f"{first.algorithm}/{first.dataset}/seed{{{','.join(str(r.seed) for r in self.runs)}}}"


def worker_env(workers: int, threads: int | None = None) -> dict[str, str]:
    """Environment of every run: thread caps of max(1, cores // workers), unbuffered output, the project importable."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = threads if threads else max(1, cores // max(1, workers))
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(n)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _launch(pack: Sequence[Plan], env: dict[str, str]) -> tuple[_Active | None, list[Run]]:
    """Lock the run directories of a pack and start one process for the runs that still need it.

    Returns the started process (None when nothing is left to run) and the runs it did not start: locked by another
    process, or finished by another runner since they were planned.
    """
    fds: list[int] = []
    runs: list[Run] = []
    left: list[Run] = []
    try:
        for plan in pack:
            run = plan.run
            out = Path(run.out)
            fd = lock_run_dir(out)
            if fd is None:
                left.append(run)
                continue
            now = _plan_from_records(run)  # planned before the lock: another runner may have run it since
            if now.action == "skip":
                os.close(fd)
                left.append(run)
                continue
            if now.action == "rerun":
                clear_records(out)
            fds.append(fd)
            runs.append(run)
        if not runs:
            return None, left
        resume = any((Path(r.out) / "checkpoint.pt").exists() for r in runs)
        cmd = pack_command(runs, resume)
        log_path = Path(runs[0].out) / LOG_FILE
        for run in runs:
            out = Path(run.out)
            previous = read_json(out / RUN_FILE) or {}
            atomic_write(out / RUN_FILE, json.dumps({
                "spec": run.spec(), "command": shlex.join(cmd), "resume": resume,
                "pack": [r.seed for r in runs] if len(runs) > 1 else None,
                "attempts": int(previous.get("attempts", 0)) + 1,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }, indent=2) + "\n")
            if out / LOG_FILE != log_path:  # a pack writes one log, in its first seed's directory
                with open(out / LOG_FILE, "ab") as f:
                    f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} packed with seeds {[r.seed for r in runs]}: "
                            f"output in {log_path}\n".encode())
        log = open(log_path, "ab")
        offset = log.tell()
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if resume else 'start'}: {shlex.join(cmd)}\n"
                  .encode())
        log.flush()
        child_env = {**env, "O2O_SUITE_PARENT": str(os.getpid())}
        try:
            proc = subprocess.Popen([sys.executable, "-c", _EXEC, *cmd[1:]], cwd=ROOT, env=child_env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=tuple(fds),
                                    start_new_session=True)
        except BaseException:
            log.close()
            raise
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return _Active(runs, proc, fds, log, log_path, offset, time.time(), resume), left


def _log_tail(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("=== ")]
    return "\n".join(lines[-TAIL_LINES:])[-TAIL_CHARS:]


def record_failure(run: Run, returncode: int | None, error: str, log: Path | None = None) -> None:
    """Give the run's summary.json status 'failed' and the error (written from scratch when the run left none)."""
    out = Path(run.out)
    summary = read_summary(out)
    if summary is None:
        summary = {"algorithm": run.algorithm, "dataset": run.dataset, "seed": run.seed, "budget": run.budget,
                   "last_score": None, "best_score": None, "steps": 0, "env_steps": 0, "n_evals": 0,
                   "config": {"args": dict(run.args)}, "extra": {}}
    summary["status"] = "failed"
    summary["error"] = error
    extra = summary.get("extra") if isinstance(summary.get("extra"), dict) else {}
    summary["extra"] = {**extra, "exit_code": returncode, "log": str(log or out / LOG_FILE)}
    summary["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def _conclude(act: _Active, returncode: int) -> list[Outcome]:
    """Close the process's files and locks, read how each of its runs ended and record failures."""
    act.log.close()
    try:
        seconds = (time.time() - act.started) / len(act.runs)  # each seed's share of the process
        tail = None
        outcomes = []
        for run in act.runs:
            out = Path(run.out)
            if is_finished(out):
                s = read_summary(out) or {}
                outcomes.append(Outcome(run, str(s.get("status")), returncode, seconds, s.get("error"),
                                        s.get("last_score"), act.resumed))
                continue
            tail = _log_tail(act.log_path, act.offset) if tail is None else tail
            why = f"exit code {returncode}" if returncode != 0 else "exit code 0 but no finished summary.json"
            if returncode < 0:
                why = f"killed by signal {-returncode}"
            error = f"{why}\n{tail}".strip()
            record_failure(run, returncode, error, act.log_path)
            outcomes.append(Outcome(run, "failed", returncode, seconds, error, None, act.resumed))
        return outcomes
    finally:
        for fd in act.lock_fds:
            os.close(fd)


def _stop(act: _Active, grace: float = 10.0) -> None:
    """Stop a running process (SIGTERM to its process group, SIGKILL after `grace` seconds); nothing is recorded."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(act.proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            act.proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    act.log.close()
    for fd in act.lock_fds:
        os.close(fd)


def _not_started(run: Run) -> Outcome:
    """How a run _launch did not start ended: finished by another runner since it was planned, else busy."""
    out = Path(run.out)
    if is_finished(out) and not _stale_reason(run):
        s = read_summary(out) or {}
        return Outcome(run, str(s.get("status")), None, 0.0, s.get("error"), s.get("last_score"))
    return Outcome(run, "busy")


def execute_pack(pack: Sequence[Plan], env: dict[str, str]) -> list[Outcome]:
    """Run one planned pack (or single run) to its end (blocking): lock, start, wait, record."""
    act, left = _launch(pack, env)
    outcomes = [_not_started(r) for r in left]
    if act is None:
        return outcomes
    try:
        rc = act.proc.wait()
    except BaseException:
        _stop(act)
        raise
    return outcomes + _conclude(act, rc)


def execute_run(plan: Plan, env: dict[str, str]) -> Outcome:
    """Run one planned run to its end (blocking): lock, start, wait, record."""
    return execute_pack([plan], env)[0]


def append_failure(out: Path, outcome: Outcome) -> None:
    """One line in `<suite out>/failures.csv` for a failed run."""
    path = out / FAILURES_FILE
    new = not path.exists()
    last = (outcome.error or "").strip().splitlines()
    row = [time.strftime("%Y-%m-%dT%H:%M:%S%z"), outcome.run.id, outcome.run.algorithm, outcome.run.dataset,
           outcome.run.seed, outcome.returncode, outcome.run.out, last[-1] if last else ""]
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(FAILURE_COLUMNS)
        w.writerow(row)
        f.flush()
        os.fsync(f.fileno())


# -------------------------------------------------------------------------------------------------------- progress
def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class Progress:
    """Counts of a sweep and its ETA, printed as lines."""

    name: str
    total: int
    workers: int
    stream: TextIO
    skipped: int = 0
    done: int = 0
    failed: int = 0
    busy: int = 0
    running: int = 0
    durations: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    last_print: float = 0.0

    def line(self) -> str:
        """`[suite] 3/24 done, 2 running, 1 failed, ... ETA`."""
        remaining = self.total - self.skipped - self.done - self.failed - self.busy
        eta = "?"
        if self.durations:
            mean = sum(self.durations) / len(self.durations)
            eta = _fmt_time(mean * max(remaining - self.running / 2, 0) / max(1, self.workers))
        elif remaining == 0:
            eta = "0s"
        parts = [f"{self.done + self.skipped}/{self.total} done", f"{self.running} running", f"{self.failed} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} were done before")
        if self.busy:
            parts.append(f"{self.busy} busy elsewhere")
        return f"[{self.name}] {', '.join(parts)}; elapsed {_fmt_time(time.time() - self.started)}, ETA {eta}"

    def show(self, force: bool = True) -> None:
        """Print the progress line (when forced, or every HEARTBEAT_S seconds)."""
        now = time.time()
        if force or now - self.last_print >= HEARTBEAT_S:
            print(self.line(), file=self.stream, flush=True)
            self.last_print = now

    def event(self, outcome: Outcome) -> None:
        """Count an ended run and print a line about it."""
        if outcome.status == "busy":
            self.busy += 1
            print(f"  busy      {outcome.run.id} (locked by another process)", file=self.stream, flush=True)
            return
        self.durations.append(outcome.seconds)
        if outcome.status == "failed":
            self.failed += 1
            last = (outcome.error or "").strip().splitlines()
            print(f"  FAILED    {outcome.run.id} after {_fmt_time(outcome.seconds)}: {last[-1] if last else ''} "
                  f"(log: {Path(outcome.run.out) / LOG_FILE})", file=self.stream, flush=True)
        else:
            self.done += 1
            score = "" if outcome.score is None else f", score {outcome.score:.1f}"
            print(f"  {outcome.status:9s} {outcome.run.id} in {_fmt_time(outcome.seconds)}{score}",
                  file=self.stream, flush=True)


# ---------------------------------------------------------------------------------------------------------- sweep
@dataclass
class SweepResult:
    """What a sweep did; `ok` when every selected run is finished or diverged."""

    plans: list[Plan]
    outcomes: list[Outcome]
    out: Path
    interrupted: bool = False

    @property
    def failed(self) -> list[Outcome]:
        """Runs that failed in this sweep."""
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when nothing failed, nothing was left busy and the sweep was not interrupted."""
        done = sum(p.action == "skip" for p in self.plans)
        ended = sum(o.status in ("finished", "diverged") for o in self.outcomes)
        return not self.interrupted and done + ended == len(self.plans)


def select(runs: list[Run], only: str | None) -> list[Run]:
    """Runs whose id, algorithm or dataset matches one of the comma-separated fnmatch patterns."""
    if not only:
        return runs
    pats = [p.strip() for p in only.split(",") if p.strip()]
    return [r for r in runs if any(fnmatch.fnmatchcase(x, p) for p in pats for x in (r.id, r.algorithm, r.dataset))]


def default_out(suite: Suite) -> Path:
    """`results/<suite>/runs`."""
    return RESULTS_DIR / suite.name / "runs"


def report_dir(suite: Suite, runs: str | Path | None = None) -> Path:
    """Where a suite's tables and figures go: `reports/<suite>` (ignored by git, relative to the working directory),
    or beside `runs` when a runs directory is given."""
    return Path(_display_path(Path(runs).parent)) if runs is not None else REPORTS_DIR / suite.name


# What a run's loader does with a `local:` name (o2o.generate.local_path): generate it when missing, keep an existing
# file whatever its size, regenerate it (at its own size and seed) only when its behaviour policy changed.
_PREPARE = "import sys\nfrom o2o.generate import local_path\nprint(local_path(sys.argv[1], create=True))\n"


def prepare_datasets(plans: list[Plan], env: dict[str, str], out: Path, stream: TextIO) -> None:
    """Make the `local:` datasets of the runs to execute once, before the sweep (not once per worker)."""
    names = sorted({p.run.dataset for p in plans if p.executes and p.run.dataset.startswith("local:")})
    for name in names:
        t0 = time.time()
        with open(out / "prepare.log", "ab") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} prepare {name}\n".encode())
            log.flush()
            rc = subprocess.run([sys.executable, "-c", _PREPARE, name], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        state = "ok" if rc == 0 else f"FAILED (exit {rc}; see {out / 'prepare.log'}; its runs will fail)"
        print(f"  dataset   {name}: {state} in {_fmt_time(time.time() - t0)}", file=stream, flush=True)


def run_suite(suite: Suite, budget: str | None = None, workers: int = 1, backend: str = "local",
              out: str | Path | None = None, only: str | None = None, dry_run: bool = False,
              device: str | None = None, threads: int | None = None, prepare: bool = True,
              retry_failed: bool = True, stream: TextIO | None = None, pack: int = 0) -> SweepResult:
    """Run (or with dry_run list) every run of a suite that is not finished yet.

    The seeds of one (algorithm, dataset) train in one process when the file supports `--seeds`, at most `pack`
    together (0: all of them; 1: one process per run)."""
    stream = stream or sys.stdout
    workers = max(1, int(workers))
    if backend not in ("local", "ray"):
        raise SuiteError(f"backend must be local or ray, not {backend!r}")
    out = Path(out or default_out(suite)).resolve()
    runs = select(suite.runs(out, budget, device), only)
    if not runs:
        raise SuiteError(f"{suite.name}: no run matches --only {only!r}")
    plans = [plan_run(r, retry_failed) for r in runs]
    todo = [p for p in plans if p.executes]
    packs = make_packs(todo, pack)
    budget = runs[0].budget
    header = (f"suite {suite.name} ({_display_path(suite.path)}), budget {budget}: {len(runs)} runs, "
              f"{len(todo)} to run in {len(packs)} process(es), {len(runs) - len(todo)} skipped; out {out}")
    print(header, file=stream, flush=True)
    if dry_run:
        for p in plans:
            if not p.executes:
                print(f"  {p.action:11s} {p.run.id}{f' ({p.reason})' if p.reason else ''}", file=stream)
        for group in packs:
            resume = any(p.action == "resume" for p in group)
            for p in group:
                print(f"  {p.action:11s} {p.run.id}{f' ({p.reason})' if p.reason else ''}", file=stream)
            print(f"      {shlex.join(pack_command([p.run for p in group], resume))}", file=stream)
        counts: dict[str, int] = {}
        for p in plans:
            counts[p.action] = counts.get(p.action, 0) + 1
        print("dry run: " + ", ".join(f"{n} {a}" for a, n in counts.items()), file=stream, flush=True)
        return SweepResult(plans, [], out)
    missing = suite.missing_files({p.run.algorithm for p in todo})
    if missing:
        raise SuiteError(missing[0])
    out.mkdir(parents=True, exist_ok=True)
    env = worker_env(workers, threads)
    print(f"workers {workers} ({backend}), {env['OMP_NUM_THREADS']} thread(s) each", file=stream, flush=True)
    if prepare and todo:
        prepare_datasets(todo, env, out, stream)
    progress = Progress(suite.name, len(runs), workers, stream, skipped=len(runs) - len(todo))
    progress.skipped -= sum(p.action in ("busy", "skip-failed") for p in plans)
    progress.busy = sum(p.action == "busy" for p in plans)
    progress.failed = sum(p.action == "skip-failed" for p in plans)
    result = SweepResult(plans, [], out)
    runner = _sweep_ray if backend == "ray" else _sweep_local
    try:
        runner(packs, env, workers, out, progress, result)
    except KeyboardInterrupt:
        result.interrupted = True
        print(f"interrupted: stopped the running runs; the same command resumes the sweep ({out})", file=stream,
              flush=True)
        return result
    if not todo:
        progress.show()
    if result.failed:
        print(f"{len(result.failed)} run(s) failed; see {out / FAILURES_FILE}", file=stream, flush=True)
    return result


def _record(outcome: Outcome, out: Path, progress: Progress, result: SweepResult) -> None:
    result.outcomes.append(outcome)
    if outcome.status == "failed":
        append_failure(out, outcome)
    progress.event(outcome)


def _sweep_local(todo: list[list[Plan]], env: dict[str, str], workers: int, out: Path, progress: Progress,
                 result: SweepResult) -> None:
    """A pool of `workers` subprocesses (one per pack of seeds) driven from this thread (children die with it)."""
    pending = deque(todo)
    active: list[_Active] = []
    try:
        while pending or active:
            changed = False
            while pending and len(active) < workers:
                act, left = _launch(pending.popleft(), env)
                for run in left:
                    _record(_not_started(run), out, progress, result)
                if act is not None:
                    active.append(act)
                    print(f"  started   {act.label}{' (resume)' if act.resumed else ''}", file=progress.stream,
                          flush=True)
            for act in list(active):
                rc = act.proc.poll()
                if rc is not None:
                    active.remove(act)
                    for outcome in _conclude(act, rc):
                        _record(outcome, out, progress, result)
                    changed = True
            progress.running = sum(len(a.runs) for a in active)
            progress.show(force=changed)
            if active:
                time.sleep(0.2)
    except BaseException:
        for act in active:
            _stop(act)
        raise


def _ray_execute(pack: list[Plan], env: dict[str, str]) -> list[Outcome]:
    """Ray task body: one pack, executed where the task lands (run directories must be on a shared filesystem)."""
    return execute_pack(pack, env)


def _sweep_ray(todo: list[list[Plan]], env: dict[str, str], workers: int, out: Path, progress: Progress,
               result: SweepResult) -> None:
    """The same runs as Ray tasks, at most `workers` at a time (RAY_ADDRESS names a cluster, else a local one)."""
    try:
        import ray
    except ImportError:
        raise SuiteError("the ray backend needs ray: pip install 'o2o-bench[ray]' (or pip install ray)") from None
    started_here = not ray.is_initialized()
    if started_here:
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=1, max_retries=0)(_ray_execute)
    pending = deque(todo)
    inflight: dict[Any, list[Plan]] = {}
    try:
        while pending or inflight:
            changed = False
            while pending and len(inflight) < workers:
                pack = pending.popleft()
                inflight[task.remote(pack, env)] = pack
                print(f"  submitted {', '.join(p.run.id for p in pack)}", file=progress.stream, flush=True)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                pack = inflight.pop(ref)
                try:
                    outcomes = ray.get(ref)
                except Exception as e:  # a task that died without Outcomes (worker lost, ...)
                    error = f"ray task error: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}"
                    outcomes = []
                    for plan in pack:
                        record_failure(plan.run, None, error)
                        outcomes.append(Outcome(plan.run, "failed", None, 0.0, error))
                for outcome in outcomes:
                    _record(outcome, out, progress, result)
                changed = True
            progress.running = sum(len(p) for p in inflight.values())
            progress.show(force=changed)
    except BaseException:
        for ref in inflight:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


# ------------------------------------------------------------------------------------------- collecting, reporting
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
    cmd = [*base, _display_path(runs), "--out", _display_path(out), "--suite", suite.name]
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


# ------------------------------------------------------------------------------------------------------------ CLI
def suite_problems(name: str | Path) -> list[str]:
    """One line per problem that makes runs of a suite fail: schema, missing algorithm file, unknown field."""
    try:
        s = load_suite(name, check_files=False)
    except SuiteError as e:
        return [str(e)]
    return s.missing_files() + unknown_args(s)


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
        sp.add_argument("--backend", choices=("local", "ray"), default="local")
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
        print(f"results of {suite.name}: {_display_path(out)}")
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


if __name__ == "__main__":
    sys.exit(main())
