"""The config fields of algorithm files: which flags a file accepts, to check a suite's `args` and to know whether a
file trains several seeds in one process (`--seeds`).

A file is imported (not run) in a fresh interpreter, since importing one pulls in torch and its own module state;
the runner never imports an algorithm file itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from o2o.suite.spec import ROOT, Suite, SuiteError, display_path, load_suite

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
    where = display_path(suite.path)
    out = []
    load_config_fields(a.file for a in suite.algorithms.values())
    for algo in suite.algorithms.values():
        fields = config_fields(algo.file) if algo.file.is_file() else None
        if fields is None:
            continue
        out += [f"{where}: algorithms.{algo.name}.args.{k}: {display_path(algo.file)} has no field {k!r}"
                for k in algo.args if k not in fields]
    return out


def suite_problems(name: str | Path) -> list[str]:
    """One line per problem that makes runs of a suite fail: schema, missing algorithm file, unknown field."""
    try:
        s = load_suite(name, check_files=False)
    except SuiteError as e:
        return [str(e)]
    return s.missing_files() + unknown_args(s)
