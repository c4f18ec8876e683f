"""The one command line of every algorithm file: common run fields, presets, budgets and field overrides.

Precedence: dataclass default < per-domain preset of the algorithm < budget (smoke/short scaling) < explicit flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from o2o.registry import DatasetSpec, get_spec, spec_for_env

BUDGETS = ("smoke", "short", "full")
C = TypeVar("C", bound="RunConfig")


def steps(full: int, smoke: int) -> Any:
    """A step-count field: `full` is the published count, `short` a tenth of it, `smoke` the given small number."""
    return field(default=full, metadata={"smoke": smoke})


@dataclass
class RunConfig:
    """Fields every algorithm file shares."""

    dataset: str = "local:hopper-medium"  # D4RL name, local:<env>-<quality>, minari:<id> or an HDF5 path
    env: str | None = None  # gymnasium id of the evaluation env, for a bring-your-own HDF5 file
    seed: int = 0
    out: str = ""  # run directory; default runs/<algorithm>/<dataset>/seed<seed>
    budget: str = "full"  # smoke | short | full (full = the published step counts)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    resume: bool = False  # continue from <out>/checkpoint.pt
    eval_episodes: int = field(default=10, metadata={"smoke": 2})
    log_every: int = field(default=5000, metadata={"smoke": 500})
    checkpoint_every: int = field(default=50_000, metadata={"smoke": 1000})
    # csv: the run records only (always written); tensorboard / wandb: also <out>/tensorboard/ or an offline W&B run
    # in <out>/wandb/ (optional extras; o2o/loggers.py)
    logger: Literal["csv", "tensorboard", "wandb"] = "csv"


def _str2bool(v: str) -> bool:
    low = v.lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


def _caster(tp: Any) -> Callable[[str], Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _caster(args[0])
        return lambda v: None if v.lower() in ("none", "null", "") else inner(v)
    if origin in (tuple, list):
        (elem, *_) = typing.get_args(tp) or (float,)
        inner = _caster(elem)
        return lambda v: tuple(inner(x) for x in v.split(",") if x.strip())
    if tp is bool:
        return _str2bool
    if tp in (int, float, str):
        return tp
    return str


def dataset_spec(cfg: RunConfig) -> DatasetSpec:
    """Spec of the run's dataset (a bring-your-own file gets its env from --env; a Minari id is fetched if absent)."""
    if cfg.dataset.startswith("minari:"):
        from o2o.data import minari_spec

        return minari_spec(cfg.dataset.split(":", 1)[1], download=True)
    if cfg.env is not None and not cfg.dataset.startswith("local:"):
        from o2o.data import _with_file_dims

        return _with_file_dims(spec_for_env(cfg.dataset, cfg.env), cfg.env)
    return get_spec(cfg.dataset)


def apply_budget(cfg: C, budget: str, skip: set[str] = frozenset()) -> C:
    """Scale the step fields: full as published, short a tenth, smoke the field's smoke value."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, not {budget!r}")
    changes = {}
    for f in dataclasses.fields(cfg):
        if "smoke" not in f.metadata or f.name in skip or budget == "full":
            continue
        value = getattr(cfg, f.name)
        if budget == "smoke":
            changes[f.name] = min(value, f.metadata["smoke"]) if value else value
        elif f.name not in ("eval_episodes",):
            changes[f.name] = max(value // 10, min(value, f.metadata["smoke"])) if value else value
    return dataclasses.replace(cfg, **changes)


def parse_config(cls: type[C], presets: Callable[[DatasetSpec], dict[str, Any]] | None = None,
                 argv: list[str] | None = None, description: str = "") -> C:
    """Parse the command line into `cls`: defaults, then presets for the dataset, then budget, then flags."""
    hints = typing.get_type_hints(cls)
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Every field can be set with --name VALUE (booleans: true/false). Presets for "
                                       "the dataset's domain apply first; flags you give override them.")
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        tp = hints[f.name]
        scaled = ", scaled by --budget" if "smoke" in f.metadata else ""
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, type=_caster(tp),
                                  help=f"(default: {default!r}{scaled})")
        if tp is bool:
            kw.update(nargs="?", const=True)
        if f.name == "budget":
            kw["choices"] = BUDGETS
        p.add_argument(f"--{f.name.replace('_', '-')}", **kw)
    given = vars(p.parse_args(argv))
    cfg = cls(**{k: v for k, v in given.items() if k in ("dataset", "env")})
    if presets is not None:
        try:
            spec = dataset_spec(cfg)
        except (KeyError, ValueError) as e:  # unknown name, or a dataset that cannot be used (DatasetError)
            p.error(e.args[0] if e.args else str(e))
        preset = presets(spec)
        unknown = set(preset) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"preset sets unknown field(s) {sorted(unknown)}")
        cfg = dataclasses.replace(cfg, **preset)
    cfg = apply_budget(cfg, given.get("budget", cfg.budget), skip=set(given))
    cfg = dataclasses.replace(cfg, **given)
    return cfg


def path_part(name: str) -> str:
    """`name` as one directory name: ':', '/' and '\\' become '_', and leading dots too (so '..' cannot climb)."""
    safe = re.sub(r"[:/\\]", "_", name)
    return re.sub(r"^\.+", lambda m: "_" * len(m.group()), safe) or "_"


def default_out(algorithm: str, cfg: RunConfig) -> str:
    """runs/<algorithm>/<dataset>/seed<seed> when --out is not given (the dataset as one directory name)."""
    return cfg.out or f"runs/{algorithm}/{path_part(cfg.dataset)}/seed{cfg.seed}"
