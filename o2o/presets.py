"""Presets by source: YAML files `configs/<algorithm>/<source>/<dataset or domain>.yaml`, chosen with `--preset`.

Sources: `paper` (the algorithm's paper), `corl` (CORL's per-dataset configs, field for field), `official` (the
seeds' released code). Each file names its source in its first comment lines. For a run, the first file that exists
of, in order: `finetune/<dataset>.yaml` and `finetune/<domain>.yaml` (runs with online steps only), `<dataset>.yaml`,
`<domain>.yaml`, in the requested source, then in the algorithm's fallback sources (with a note on stderr).

Presets in layers (`layered_preset`, Uni-O4 and PPO, whose official scripts set a domain's values, then a family's,
then a dataset's): every file that exists of a list of names, e.g. `<domain>.yaml`, `<family>.yaml`,
`<dataset stem>.yaml`, merged in that order (a later file overrides an earlier one), from the first source that has
any of them.

Besides the three sources, an algorithm may name a source of its own for a second set of published settings; PPO has
`unio4` (Uni-O4's online phase, ppo_finetune/), beside `official` (CleanRL's ppo_continuous_action.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from o2o.registry import DatasetSpec

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SOURCES = ("paper", "corl", "official")
Source = Literal["paper", "corl", "official"]


def dataset_file_name(dataset: str) -> str:
    """The file stem of a dataset's preset: its name with ':' and '/' as '_'."""
    return dataset.replace(":", "_").replace("/", "_")


def candidates(algorithm: str, source: str, spec: DatasetSpec, online: bool) -> list[Path]:
    """The preset files a run looks for in one source, most specific first."""
    base = CONFIGS / algorithm / source
    names = [dataset_file_name(spec.name), spec.domain]
    paths = [base / "finetune" / f"{n}.yaml" for n in names] if online else []
    return paths + [base / f"{n}.yaml" for n in names]


def find_preset(algorithm: str, spec: DatasetSpec, source: str, fallback: Sequence[str] = (),
                online: bool = False) -> Path | None:
    """The preset file of the run: the requested source first, then `fallback` in order; None when none has one."""
    for src in dict.fromkeys([source, *fallback]):
        for path in candidates(algorithm, src, spec, online):
            if path.is_file():
                return path
    return None


def read_preset(path: Path) -> dict[str, Any]:
    """A preset file's fields (an empty file is an empty preset); YAML lists become tuples, as config fields hold."""
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset is a mapping of field: value")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def load_preset(algorithm: str, spec: DatasetSpec, source: str, fallback: Sequence[str] = (),
                online: bool = False) -> dict[str, Any]:
    """The fields of the run's preset (empty when the algorithm has none for the dataset). A file from a fallback
    source is announced on stderr, since the run does not get the source it asked for."""
    path = find_preset(algorithm, spec, source, fallback, online)
    if path is None:
        if (CONFIGS / algorithm).is_dir():
            print(f"note: {algorithm} has no preset for {spec.name} (domain {spec.domain}); its config defaults apply",
                  file=sys.stderr, flush=True)
        return {}
    if path.parent.name != source and path.parent.parent.name != source:
        print(f"note: {algorithm} has no {source} preset for {spec.name}; using {path.relative_to(CONFIGS.parent)}",
              file=sys.stderr, flush=True)
    return read_preset(path)


def run_preset(algorithm: str, cfg: Any, spec: DatasetSpec, fallback: Sequence[str] = (),
               finetune_steps: int = 1_000_000) -> dict[str, Any]:
    """The preset of a run from its first-pass config: source `cfg.preset`, fine-tuning files when the run has online
    steps or `--finetune` (IQL, AWAC), which also adds CORL's `finetune_steps` online steps unless the file sets them
    (every step field is then scaled by --budget, in o2o.cli.apply_budget)."""
    finetune = bool(getattr(cfg, "finetune", False))
    preset = load_preset(algorithm, spec, cfg.preset, fallback, online=finetune or cfg.online_steps > 0)
    if finetune:
        preset.setdefault("online_steps", finetune_steps)
    return preset


def layered_preset(algorithm: str, names: Sequence[str], source: str, fallback: Sequence[str] = (),
                   what: str = "") -> dict[str, Any]:
    """The fields of `<name>.yaml` for every name whose file exists in configs/<algorithm>/<source>/, merged in order
    (later names override earlier ones): a preset in layers. The first of `source`, then `fallback`, that has any of
    the files is used; a fallback source is announced on stderr (naming `what`, the dataset). Names are file stems
    (dataset_file_name: no '/' or ':'); an empty result when no source has any."""
    stems = list(dict.fromkeys(dataset_file_name(n) for n in names))
    for src in dict.fromkeys([source, *fallback]):
        paths = [p for p in (CONFIGS / algorithm / src / f"{n}.yaml" for n in stems) if p.is_file()]
        if paths:
            if src != source:
                print(f"note: {algorithm} has no {source} preset for {what or stems[-1]}; using its {src} preset",
                      file=sys.stderr, flush=True)
            out: dict[str, Any] = {}
            for path in paths:
                out.update(read_preset(path))
            return out
    return {}
