"""The config fields of algorithm files: which flags a file accepts, to check a suite's `args` and to know whether a
file trains several seeds in one process (`--seeds`).

A file is imported (not run) in a fresh interpreter, since importing one pulls in torch and its own module state;
the runner never imports an algorithm file itself.

The answer is kept between commands in a cache file (`cache_file()`, in the user's cache directory) for each
interpreter, checkout, PYTHONPATH and algorithm file, with the sha256 of every source file the import loaded outside
the interpreter's own directories (the algorithm file, o2o/, the modules beside it) and the modification times of
site-packages: a changed file, or a package installed or removed, makes the entry stale and the file is read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import site
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from o2o.records import atomic_write, read_json
from o2o.suite.spec import ROOT, Suite, SuiteError, display_path, load_suite

# Reads an algorithm file's config class in a fresh interpreter: the file is imported (not run), and its config is
# the most derived o2o.cli.RunConfig subclass in its namespace. Prints {file: {"fields": [field names + old names],
# "sources": [every module file loaded so far outside the interpreter's prefixes]} or null}.
_FIELDS_SCRIPT = """
import dataclasses, importlib.util, json, os, sys
from o2o.cli import RunConfig, renamed_fields
prefixes = tuple(os.path.join(os.path.realpath(p), "") for p in
                 {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix})


def sources():
    files = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
    files = {os.path.realpath(f) for f in files if isinstance(f, str) and os.path.isfile(f)}
    return sorted(f for f in files if not f.startswith(prefixes))


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
    out[path] = {"fields": sorted({f.name for f in dataclasses.fields(cls)} | set(renamed_fields(cls))),
                 "sources": sources()}
print(json.dumps(out))
"""
_FIELDS_CACHE: dict[tuple[str, int, int], set[str] | None] = {}


def _stamp(file: Path) -> tuple[str, int, int]:
    st = file.stat()
    return str(file.resolve()), st.st_mtime_ns, st.st_size


def cache_file() -> Path:
    """The file that keeps read config fields between commands: `$XDG_CACHE_HOME/o2o-bench/config-fields.json`
    (default ~/.cache/o2o-bench/config-fields.json)."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "o2o-bench" / "config-fields.json"


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


class _Digests(dict):
    """sha256 of source files, each read once per command (the algorithm files share most of their sources)."""

    def __missing__(self, path: str) -> str | None:
        self[path] = digest = _sha256(path)
        return digest


def _scope() -> str:
    """The cache's section for this interpreter, this checkout (whose o2o/ the files import) and PYTHONPATH."""
    return f"{sys.executable} {ROOT} {os.environ.get('PYTHONPATH', '')}".rstrip()


def _environment() -> dict[str, int]:
    """The modification times of site-packages: installing, upgrading or removing a package changes them."""
    dirs = sorted({*site.getsitepackages(), site.getusersitepackages()})
    return {d: os.stat(d).st_mtime_ns for d in dirs if os.path.isdir(d)}


def _from_cache(cache: dict[str, Any], path: str, environment: dict[str, int], digests: _Digests) -> set[str] | None:
    """The cached fields of a file, or None when there are none or they are stale."""
    section = cache.get(_scope())
    entry = section.get(path) if isinstance(section, dict) else None
    if not isinstance(entry, dict) or entry.get("environment") != environment:
        return None
    sources, names = entry.get("sources"), entry.get("fields")
    if not isinstance(sources, dict) or not sources or not isinstance(names, list):
        return None
    if any(digests[p] != digest for p, digest in sources.items()):
        return None
    return set(names)


def _save_cache(found: dict[str, dict[str, Any]], environment: dict[str, int], digests: _Digests) -> None:
    """Add read files to the cache file (best effort: a cache that cannot be written is only slower)."""
    cache = read_json(cache_file()) or {}
    section = cache[_scope()] = cache.get(_scope()) if isinstance(cache.get(_scope()), dict) else {}
    for path, entry in found.items():
        sources = {p: digests[p] for p in {*entry["sources"], path}}
        if all(sources.values()):
            section[path] = {"environment": environment, "sources": sources, "fields": entry["fields"]}
    try:
        atomic_write(cache_file(), json.dumps(cache, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass


def load_config_fields(files: Iterable[Path]) -> None:
    """Read the config fields of the files not read yet (or changed since): from the cache file when its entry is
    current, else all in one subprocess."""
    todo = {_stamp(f): f for f in {Path(f) for f in files} if f.is_file()}
    todo = {k: f for k, f in todo.items() if k not in _FIELDS_CACHE}
    if not todo:
        return
    cache = read_json(cache_file()) or {}
    environment, digests = _environment(), _Digests()
    for key in list(todo):
        names = _from_cache(cache, key[0], environment, digests)
        if names is not None:
            _FIELDS_CACHE[key] = names
            del todo[key]
    if not todo:
        return
    proc = subprocess.run([sys.executable, "-c", _FIELDS_SCRIPT, *(k[0] for k in todo)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
    try:
        found = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        found = {}
    read = {path: entry for path, entry in found.items() if isinstance(entry, dict)}
    for key in todo:
        entry = read.get(key[0])
        _FIELDS_CACHE[key] = None if entry is None else set(entry["fields"])
    if read:
        _save_cache(read, environment, digests)


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
