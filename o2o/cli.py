"""The one command line of every algorithm file (tyro over the config dataclasses): presets, budgets, config files.

Precedence, lowest first: dataclass default < preset (of the dataset, from the algorithm's preset source) < budget
(`apply_budget`, the one place that scales step fields) < `--config FILE.yaml` < explicit flags.

`--help` lists every field with its one-line description (the comment after the field, or its docstring) and its
allowed values (`Literal` types); an unknown flag gets one line with the closest flag name. Values are written as
before: booleans `--resume`, `--resume true|false`; lists `--seeds 0,1,2` or `--seeds 0 1 2`; optional fields `none`.
A field renamed in a config class's `RENAMED` table ({old: new}) keeps its old flag, with a deprecation line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import tyro
import tyro._errors as tyro_errors  # the parse-error hook (tyro is pinned exactly in requirements.lock)
import yaml

from o2o.registry import DatasetSpec, spec_for_env
from o2o.specs import get_spec

BUDGETS = ("smoke", "short", "full")
Budget = Literal["smoke", "short", "full"]
C = TypeVar("C", bound="RunConfig")
Presets = Callable[[Any, DatasetSpec], dict[str, Any]]  # (first-pass config, dataset spec) -> preset fields
_BOOL_WORDS = {"1": "True", "true": "True", "yes": "True", "y": "True", "on": "True",
               "0": "False", "false": "False", "no": "False", "n": "False", "off": "False"}


def steps(full: int, smoke: int) -> Any:
    """A step-count field: `full` is the published count, `short` a tenth of it, `smoke` the given small number."""
    return field(default=full, metadata={"smoke": smoke})


def smoke_only(full: int, smoke: int) -> Any:
    """A count that only the smoke budget lowers (short keeps the full value: e.g. evaluation episodes)."""
    return field(default=full, metadata={"smoke": smoke, "short": "keep"})


@dataclass
class RunConfig:
    """Fields every algorithm file shares."""

    dataset: str = "local:hopper-medium"  # D4RL name, local:<env>-<quality>, minari:<id> or an HDF5 path
    env: str | None = None  # gymnasium id of the evaluation env, for a bring-your-own HDF5 file
    seed: int = 0  # the run's seed (network init, batches, exploration, evaluation episodes)
    out: str = ""  # run directory; default runs/<algorithm>/<dataset>/seed<seed>
    budget: Budget = "full"  # full: the published step counts; short: a tenth; smoke: a few hundred (a test)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    resume: bool = False  # continue from <out>/checkpoint.pt
    eval_episodes: int = smoke_only(10, 2)  # evaluation episodes (smoke: 2; short keeps the full count)
    log_every: int = field(default=5000, metadata={"smoke": 500})  # steps between metrics.csv rows
    checkpoint_every: int = field(default=50_000, metadata={"smoke": 1000})  # steps between checkpoints
    # csv: the run records only (always written); tensorboard / wandb: also <out>/tensorboard/ or an offline W&B run
    # in <out>/wandb/ (optional extras; o2o/loggers.py)
    logger: Literal["csv", "tensorboard", "wandb"] = "csv"
    config: str = ""  # a YAML file of field values (a run's config.yaml reproduces it), read as flags; flags override

    RENAMED: ClassVar[dict[str, str]] = {}  # old field name -> new one (old flags still work, with a deprecation line)


class ConfigError(ValueError):
    """A config file or preset that cannot be used (one line)."""


def dataset_spec(cfg: RunConfig) -> DatasetSpec:
    """Spec of the run's dataset (a bring-your-own file gets its env from --env; a Minari id is fetched if absent)."""
    if cfg.dataset.startswith("minari:"):
        from o2o.minari_source import minari_spec

        return minari_spec(cfg.dataset.split(":", 1)[1], download=True)
    if cfg.env is not None and not cfg.dataset.startswith("local:"):
        from o2o.data import with_file_dims

        return with_file_dims(spec_for_env(cfg.dataset, cfg.env), cfg.env)
    return get_spec(cfg.dataset)


# ------------------------------------------------------------------------------------------------------------ budget
def apply_budget(cfg: C, budget: str, skip: set[str] = frozenset()) -> C:
    """Scale the fields that carry a smoke value (`steps`, `smoke_only`): full as declared, smoke the smoke value,
    short a tenth (at least the smoke value) unless the field keeps its full value at short. The one place where
    --budget acts; fields in `skip` are left alone."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, not {budget!r}")
    changes = {}
    for f in dataclasses.fields(cfg):
        if "smoke" not in f.metadata or f.name in skip or budget == "full":
            continue
        value, smoke = getattr(cfg, f.name), f.metadata["smoke"]
        if budget == "smoke":
            changes[f.name] = min(value, smoke) if value else value
        elif f.metadata.get("short") != "keep":
            changes[f.name] = max(value // 10, min(value, smoke)) if value else value
    return dataclasses.replace(cfg, **changes)


# ------------------------------------------------------------------------------------------------------------ fields
def renamed_fields(cls: type) -> dict[str, str]:
    """Old field name -> new one, merged over the class hierarchy (RENAMED tables)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        out.update(vars(klass).get("RENAMED", {}))
    return out


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> its resolved type annotation."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def flag(name: str) -> str:
    """The flag of a field: --offline-steps for offline_steps."""
    return "--" + name.replace("_", "-")


def _kind(tp: Any) -> tuple[str, bool]:
    """('bool' | 'list' | 'other', optional) of a field type."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0] if len(args) == 1 else tp
    if tp is bool:
        return "bool", optional
    if typing.get_origin(tp) in (tuple, list):
        return "list", optional
    return "other", optional


def _rename(cls: type, name: str, shown: Callable[[str], str] = flag) -> str:
    """The current name of a field given by its old name, with a one-line deprecation warning."""
    new = renamed_fields(cls).get(name)
    if new is None:
        return name
    print(f"warning: {shown(name)} is deprecated, use {shown(new)} (the old name goes in the next release)",
          file=sys.stderr, flush=True)
    return new


def normalize_argv(cls: type, argv: Sequence[str]) -> list[str]:
    """The command line in tyro's spelling: old names renamed, `--x=v` split, booleans True/False (a bare boolean flag
    means True), `a,b` lists split, none/null -> None."""
    kinds = {name: _kind(tp) for name, tp in field_types(cls).items()}
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if not tok.startswith("--") or tok == "--":
            out.append(tok)
            continue
        name, eq, inline = tok[2:].partition("=")
        key = _rename(cls, name.replace("-", "_"))
        if key not in kinds:
            out.append(tok)
            continue
        kind, optional = kinds[key]
        if eq:
            values = [inline]
        elif i < len(args) and not args[i].startswith("--"):
            values = [args[i]]
            i += 1
            if kind == "list":  # space-separated values: take every token up to the next flag
                while i < len(args) and not args[i].startswith("--"):
                    values.append(args[i])
                    i += 1
        else:
            values = ["True"] if kind == "bool" else []
        if optional and len(values) == 1 and values[0].lower() in ("none", "null", ""):
            values = ["None"]
        elif kind == "bool":
            values = [_BOOL_WORDS.get(v.lower(), v) for v in values]
        elif kind == "list":
            values = [x for v in values for x in v.split(",") if x.strip()]
        out += [flag(key), *values]
    return out


# ------------------------------------------------------------------------------------------------------------ files
def read_config_file(cls: type, path: str) -> list[str]:
    """A YAML mapping of field values as command-line tokens (so that they are checked and typed like flags).

    The `config` key (the file a run's config.yaml was read from) is ignored; an unknown key is a ConfigError."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of field: value, not a {type(data).__name__}")
    names = set(field_types(cls))
    tokens: list[str] = []
    for raw, value in data.items():
        key = _rename(cls, str(raw), lambda n: f"{path}: field {n!r}")
        if key == "config":
            continue
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"--config {path}: unknown field {key!r}{hint}")
        tokens += [flag(key), *_tokens(value)]
    return tokens


def _tokens(value: Any) -> list[str]:
    """Command-line tokens of a YAML value."""
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tokens(v)]
    if value is None:
        return ["None"]
    if isinstance(value, bool):
        return [str(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return ["-inf" if value < 0 else "inf"] if not math.isnan(value) else ["nan"]
    return [str(value)]


def config_yaml(cfg: Any) -> str:
    """A config as the YAML that `--config` reads back (field order kept)."""
    data = {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    return yaml.safe_dump(data, sort_keys=False)


def _plain(v: Any) -> Any:
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


# ------------------------------------------------------------------------------------------------------------ parsing
def fail(message: str) -> typing.NoReturn:
    """One line on stderr and exit status 2 (bad command line, config file or dataset)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _parse_error(cls: type) -> Callable[[Any], None]:
    """tyro's parse-error hook: one line naming the problem instead of tyro's box (unknown events fall through)."""
    flags = sorted({flag(n) for n in field_types(cls)} | {flag(n) for n in renamed_fields(cls)})

    def hook(event: Any) -> None:
        if isinstance(event, tyro_errors.UnrecognizedArgs):
            bad = next((t for t in event.tokens if t.startswith("-")), event.tokens[0] if event.tokens else "")
            if not bad.startswith("-"):
                fail(f"unexpected argument {bad!r} (every value follows its --flag)")
            name = bad.partition("=")[0]
            close = difflib.get_close_matches(name, flags, n=1)
            fail(f"unknown flag {name}" + (f" (did you mean {close[0]}?)" if close else "") + "; --help lists them")
        arg = getattr(getattr(getattr(event, "argument", None), "field", None), "intern_name", None)
        where = flag(arg) if arg else "the command line"
        if isinstance(event, tyro_errors.InvalidChoice):
            fail(f"{where}: {event.value!r} is not one of {', '.join(event.choices)}")
        if isinstance(event, tyro_errors.BadValue):
            fail(f"{where} needs a value" if event.offending_value is None
                 else f"{where}: unexpected value {event.offending_value!r}")
        if isinstance(event, tyro_errors.InstantiationFailure):
            fail(f"{where}: {event.message.splitlines()[0] if event.message else 'invalid value'}")

    return hook


def _tyro(cls: type[C], default: C, args: list[str], description: str) -> C:
    """One tyro parse of `args` over `default` (booleans take a value: the project's --flag true|false)."""
    with tyro_errors.on_parse_error(_parse_error(cls)):
        return tyro.cli(cls, args=args, default=default, description=description or None,
                        config=(tyro.conf.FlagConversionOff,))


def configure(cls: type[C], presets: Presets | None = None, argv: Sequence[str] | None = None,
              description: str = "") -> C:
    """The run's config: defaults < presets(first-pass config, dataset) < budget < --config file < flags.

    A first parse reads the flags and the file over the defaults (the preset may depend on any of them: the dataset,
    --preset, --budget, FamO2O's --base, the online steps); the second parses them again over the preset, scaled by
    the budget. Bad input exits 2 with one line."""
    args = normalize_argv(cls, sys.argv[1:] if argv is None else argv)
    first = _tyro(cls, cls(), args, description)
    try:
        file_args = normalize_argv(cls, read_config_file(cls, first.config)) if first.config else []
    except ConfigError as e:
        fail(str(e))
    if file_args:
        first = _tyro(cls, cls(), file_args + args, description)
    base = cls()
    if presets is not None:
        try:
            preset = presets(first, dataset_spec(first))
        except (KeyError, ValueError) as e:  # unknown name, a dataset that cannot be used (DatasetError), a preset
            fail(e.args[0] if e.args else str(e))
        unknown = set(preset) - set(field_types(cls))
        if unknown:
            raise ValueError(f"preset sets unknown field(s) {sorted(unknown)}")
        base = dataclasses.replace(base, **preset)
    base = apply_budget(base, first.budget)
    return _tyro(cls, base, file_args + args, description)


def parse_config(cls: type[C], presets: Callable[[DatasetSpec], dict[str, Any]] | None = None,
                 argv: list[str] | None = None, description: str = "") -> C:
    """`configure` with presets that depend on the dataset only."""
    return configure(cls, None if presets is None else (lambda cfg, spec: presets(spec)), argv, description)


def path_part(name: str) -> str:
    """`name` as one directory name: ':', '/' and '\\' become '_', and leading dots too (so '..' cannot climb)."""
    safe = re.sub(r"[:/\\]", "_", name)
    return re.sub(r"^\.+", lambda m: "_" * len(m.group()), safe) or "_"


def default_out(algorithm: str, cfg: RunConfig) -> str:
    """runs/<algorithm>/<dataset>/seed<seed> when --out is not given (the dataset as one directory name)."""
    return cfg.out or f"runs/{algorithm}/{path_part(cfg.dataset)}/seed{cfg.seed}"
