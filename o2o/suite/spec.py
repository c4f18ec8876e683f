"""Suite files (`suites/*.yaml`): their typed schema, validation with one line per problem, and the runs they name.

A suite file is read in two steps. `parse_suite_file` checks the YAML mapping against the schema (SuiteFile and
AlgorithmFile: one dataclass field per key, with its type, default and checker) and normalises it (seed counts and
`{a,b}` names expanded); `load_suite` then resolves it into a Suite (algorithm files found, `args` merged, the
`min_seeds` rule applied). Every problem is a SuiteError whose message is one line `<file>: <key>: <problem>`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from o2o.cli import BUDGETS, Budget, path_part

ROOT = Path(__file__).resolve().parents[2]
SUITES_DIR = ROOT / "suites"
RESULTS_DIR = Path("results")
REPORTS_DIR = Path("reports")
RESERVED_ARGS = ("dataset", "env", "seed", "out", "budget", "resume", "device")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_ARG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_BRACE_RE = re.compile(r"\{([^{}]*)\}")

ArgValue = str | int | float | bool | None | list[str | int | float | bool | None]
Args = dict[str, ArgValue | dict[Budget, ArgValue]]  # a value, or one value per budget


class SuiteError(ValueError):
    """A suite file that cannot be used: a one-line message naming the file and the key."""


# ---------------------------------------------------------------------------------------------------- checking
class _Checker:
    """Validation helpers that raise SuiteError as `<file>: <key>: <problem>`."""

    def __init__(self, path: Path) -> None:
        self.where = display_path(path)

    def fail(self, key: str, problem: str) -> SuiteError:
        return SuiteError(f"{self.where}: {key}: {problem}" if key else f"{self.where}: {problem}")

    def keys(self, data: dict[str, Any], allowed: Sequence[str], prefix: str) -> None:
        for k in data:
            if k not in allowed:
                key = f"{prefix}.{k}" if prefix else str(k)
                raise self.fail(key, f"unknown key; allowed: {', '.join(allowed)}")

    def name(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not _NAME_RE.match(value):
            raise self.fail(key, f"not a usable name {value!r}")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, "must be a string")
        return value

    def pattern(self, value: Any, key: str) -> str | None:
        if value is not None and not isinstance(value, str):
            raise self.fail(key, f"must be a file pattern string, not {value!r}")
        return value

    def budget(self, value: Any, key: str) -> str:
        if value not in BUDGETS:
            raise self.fail(key, f"must be one of {', '.join(BUDGETS)}, not {value!r}")
        return value

    def count(self, value: Any, key: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self.fail(key, f"must be a positive integer, not {value!r}")
        return value

    def file(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, "missing (the algorithm's script, e.g. baselines/iql.py)")
        return value

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

    def algorithms(self, value: Any, key: str) -> dict[str, AlgorithmFile]:
        if not isinstance(value, dict) or not value:
            raise self.fail(key, "missing or empty (a mapping of names to {file: PATH, ...})")
        out = {}
        for name, entry in value.items():
            sub = f"{key}.{name}"
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise self.fail(sub, "not a usable name (letters, digits, _ . + -)")
            if isinstance(entry, str):
                entry = {"file": entry}
            if not isinstance(entry, dict):
                raise self.fail(sub, f"must be a mapping with a file, or a file path, not {entry!r}")
            out[name] = _parse(AlgorithmFile, entry, self, sub)
        return out


def _key(check: Callable[[_Checker, Any, str], Any], doc: str, missing: str = "", default: Any = MISSING,
         default_factory: Any = MISSING) -> Any:
    """A schema field: its checker (returns the normalised value), a one-line description, and the problem named
    when a required key is absent."""
    return field(default=default, default_factory=default_factory,
                 metadata={"check": check, "doc": doc, "missing": missing})


# ------------------------------------------------------------------------------------------------------ the schema
@dataclass(frozen=True, kw_only=True)
class AlgorithmFile:
    """An entry of a suite's `algorithms` as written (a bare path is `{file: PATH}`), checked and normalised."""

    file: str = _key(_Checker.file, "the algorithm's script, e.g. baselines/iql.py",
                     missing="missing (the algorithm's script, e.g. baselines/iql.py)")
    args: Args = _key(_Checker.args, "its fields, on top of the suite's args", default_factory=dict)
    datasets: tuple[str, ...] | None = _key(_Checker.datasets, "its datasets (default: the suite's)", default=None)
    seeds: tuple[int, ...] | None = _key(_Checker.seeds, "its seeds (default: the suite's)", default=None)


@dataclass(frozen=True, kw_only=True)
class SuiteFile:
    """The keys of a suite file, checked and normalised (seed counts and `{a,b}` dataset names expanded)."""

    name: str | None = _key(_Checker.name, "the suite's name (default: the file's stem)", default=None)
    description: str = _key(_Checker.text, "one line for `list`", default="")
    budget: Budget = _key(_Checker.budget, "the default of --budget", default="full")
    seeds: tuple[int, ...] = _key(_Checker.seeds, "a list of ints or a count",
                                  missing="missing (a list of integers or a count)")
    min_seeds: int = _key(_Checker.count, "fewest seeds an algorithm may run", default=1)
    datasets: tuple[str, ...] = _key(_Checker.datasets, "dataset names; `{a,b}` expands",
                                     missing="missing (a list of dataset names)")
    args: Args = _key(_Checker.args, "fields for every algorithm", default_factory=dict)
    published: str | None = _key(_Checker.pattern, "pattern of results/published/*.csv for the report", default=None)
    compare_args: Args = _key(_Checker.args, "fields `compare` adds to a compared file, on top of args",
                              default_factory=dict)
    algorithms: dict[str, AlgorithmFile] = _key(_Checker.algorithms, "name -> {file, args, datasets, seeds}",
                                                missing="missing or empty (a mapping of names to {file: PATH, ...})")


TOP_KEYS = tuple(f.name for f in fields(SuiteFile))
ALGORITHM_KEYS = tuple(f.name for f in fields(AlgorithmFile))


def _parse(schema: type, data: dict[str, Any], ck: _Checker, prefix: str = "") -> Any:
    """One schema dataclass from a YAML mapping: unknown keys refused, each present key checked, required ones
    demanded."""
    names = [f.name for f in fields(schema)]
    ck.keys(data, names, prefix)
    values = {}
    for f in fields(schema):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in data:
            values[f.name] = f.metadata["check"](ck, data[f.name], key)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ck.fail(key, f.metadata["missing"])
    return schema(**values)


def parse_suite_file(data: Any, path: Path) -> SuiteFile:
    """Check a suite file's YAML mapping against the schema; SuiteError with a one-line message on any problem."""
    ck = _Checker(path)
    if not isinstance(data, dict):
        raise ck.fail("", "a suite file must be a mapping with keys " + ", ".join(TOP_KEYS))
    return _parse(SuiteFile, data, ck)


# --------------------------------------------------------------------------------------------------- runs of a suite
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
        return {"algorithm": self.algorithm, "file": display_path(Path(self.file)), "dataset": self.dataset,
                "seed": self.seed, "budget": self.budget, "args": dict(self.args)}


@dataclass(frozen=True)
class AlgorithmEntry:
    """One algorithm of a suite: its file, its extra fields, and the datasets and seeds it runs on."""

    name: str
    file: Path
    args: dict[str, Any]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]


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
            args = tuple((k, cli_value(v)) for k, v in args_for_budget(algo.args, budget).items())
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
        where = display_path(self.path)
        return [f"{where}: algorithms.{n}.file: no such file {display_path(self.algorithms[n].file)}"
                for n in names if not self.algorithms[n].file.is_file()]


def _safe(dataset: str) -> str:
    return path_part(dataset)


def display_path(p: Path) -> str:
    """A path as the user would type it: relative to the working directory when under it, else as given."""
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def cli_value(v: Any) -> str:
    """A suite `args` value as a command-line value: true/false, none, comma-joined lists."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)):
        return ",".join(cli_value(x) for x in v)
    return str(v)


def args_for_budget(args: dict[str, Any], budget: str) -> dict[str, Any]:
    """The `args` fields at one budget: a per-budget mapping gives its value, or leaves the field unset."""
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
    raw = parse_suite_file(data, path)
    name = raw.name if raw.name is not None else ck.name(path.stem, "name")
    algorithms: dict[str, AlgorithmEntry] = {}
    for aname, entry in raw.algorithms.items():
        key = f"algorithms.{aname}"
        file = _resolve_file(entry.file, path)
        if check_files and not file.is_file():
            raise ck.fail(f"{key}.file", f"no such file {entry.file}")
        seeds = raw.seeds if entry.seeds is None else entry.seeds
        if len(seeds) < raw.min_seeds:
            raise ck.fail("seeds" if entry.seeds is None else f"{key}.seeds",
                          f"{len(seeds)} seed(s), fewer than min_seeds={raw.min_seeds}")
        datasets = raw.datasets if entry.datasets is None else entry.datasets
        algorithms[aname] = AlgorithmEntry(aname, file, {**raw.args, **entry.args}, datasets, seeds)
    return Suite(name, path, raw.description, raw.budget, raw.seeds, raw.datasets, algorithms, raw.published,
                 raw.min_seeds, {**raw.args, **raw.compare_args})


def default_out(suite: Suite) -> Path:
    """`results/<suite>/runs`."""
    return RESULTS_DIR / suite.name / "runs"


def report_dir(suite: Suite, runs: str | Path | None = None) -> Path:
    """Where a suite's tables and figures go: `reports/<suite>` (ignored by git, relative to the working directory),
    or beside `runs` when a runs directory is given."""
    return Path(display_path(Path(runs).parent)) if runs is not None else REPORTS_DIR / suite.name
