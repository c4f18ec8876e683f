"""One loader for every dataset source: D4RL names, `minari:` ids, `local:` datasets and D4RL-layout HDF5 files.

`load_dataset(name)` returns a validated `o2o.dataset.Dataset` (the transition semantics are documented there and in
the README, "Datasets"). The sources: D4RL files fetched by o2o/download.py, `local:` files made by o2o/generate.py,
Minari datasets read by o2o/minari_source.py, and bring-your-own files evaluated in a gymnasium env (`--env`).

Command line: `python -m o2o.data list | info NAME [--env ID] | generate local:NAME [--size N] | check NAME`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from o2o.consistency import check_dataset
from o2o.dataset import Dataset, DatasetError, from_arrays
from o2o.download import DownloadError, cache_dir, fetch_d4rl
from o2o.envs import env_action_bounds, env_dims
from o2o.generate import generate, local_path
from o2o.hdf5 import check_hdf5, read_hdf5
from o2o.minari_source import load_minari, minari_local
from o2o.registry import (
    DOMAIN_OF_FAMILY,
    LOCAL_FAMILIES,
    LOCAL_QUALITIES,
    MINARI_DATASETS,
    REGISTRY,
    DatasetSpec,
    family_of,
    is_file_name,
    normalized_score,
    spec_for_env,
)
from o2o.specs import get_spec


def load_file(path: str | Path, env_id: str | None = None, name: str | None = None) -> Dataset:
    """Load a D4RL-layout HDF5 file evaluated in gymnasium env `env_id` (or the D4RL env of `name`)."""
    path = Path(path)
    if name is not None and env_id is None:
        spec = get_spec(name)
    elif env_id is not None:
        spec = spec_for_env(name or path.stem, env_id)
        spec = with_file_dims(spec, env_id)
    else:
        raise DatasetError(f"{path}: say which environment evaluates this file with --env <gymnasium id>")
    return from_arrays(read_hdf5(path), spec, origin=str(path))


def with_file_dims(spec: DatasetSpec, env_id: str) -> DatasetSpec:
    """For a bring-your-own env id, take dims, action bounds and time limit from the gymnasium env itself."""
    try:
        obs_dim, act_dim, steps = env_dims(env_id)
        bounds = env_action_bounds(env_id)
    except Exception as e:  # gymnasium raises many types for an unknown id
        raise DatasetError(f"cannot create environment {env_id!r}: {e}") from None
    return replace(spec, obs_dim=obs_dim, act_dim=act_dim, max_episode_steps=steps or spec.max_episode_steps,
                   action_bounds=bounds)


def load_dataset(name: str, env_id: str | None = None, progress: bool = True) -> Dataset:
    """Load any dataset the project knows: a D4RL name, `minari:<id>`, `local:<env>-<quality>` or an HDF5 path."""
    if name.startswith("minari:"):
        return load_minari(name.split(":", 1)[1])
    if name.startswith("local:"):
        spec = get_spec(name)
        path = local_path(name, create=True)
        return from_arrays(read_hdf5(path), spec, origin=str(path))
    if is_file_name(name):
        return load_file(name, env_id=env_id)
    spec = get_spec(name)
    path = fetch_d4rl(spec, validate=lambda p: check_hdf5(p, spec), progress=progress)
    return from_arrays(read_hdf5(path), spec, origin=str(path))


def describe(ds: Dataset) -> dict[str, Any]:
    """Summary statistics of a dataset: transitions, episodes, dims, returns (raw and normalized)."""
    rets = ds.episode_returns()
    spec = ds.spec
    return {
        "name": spec.name,
        "env": spec.env_id,
        "domain": spec.domain,
        "transitions": len(ds),
        "episodes": int(ds.episode_ends.sum()),
        "terminals": int(ds.terminals.sum()),
        "timeouts": int(ds.timeouts.sum()),
        "obs_dim": ds.obs_dim,
        "act_dim": ds.act_dim,
        "return_mean": float(rets.mean()),
        "return_std": float(rets.std()),
        "return_min": float(rets.min()),
        "return_max": float(rets.max()),
        "normalized_mean": normalized_score(spec, float(rets.mean())),
        "ref_source": spec.ref_source,
        "reward_mean": float(ds.rewards.mean()),
        "action_abs_max": float(np.abs(ds.actions).max()),
        "origin": ds.metadata.get("origin"),
    }


def _cmd_list(args: argparse.Namespace) -> int:
    cache = cache_dir()
    print(f"{'dataset':32s} {'domain':10s} {'env':22s} {'ref min':>12s} {'ref max':>12s}  cached")
    for name, spec in REGISTRY.items():
        if args.domain and spec.domain != args.domain:
            continue
        have = "yes" if (cache / spec.filename).exists() else ""
        print(f"{name:32s} {spec.domain:10s} {spec.env_id:22s} {spec.ref_min:12.4f} {spec.ref_max:12.4f}  {have}")
    if not args.domain:
        print(f"\nlocally generated: local:<{'|'.join(LOCAL_FAMILIES)}>-<{'|'.join(LOCAL_QUALITIES)}>")
    print("\nMinari ids (source minari; env as collected, reference returns from the dataset's metadata when it has "
          "them):")
    print(f"{'dataset':40s} {'source':7s} {'domain':10s} {'env':30s} local")
    for dataset_id, env_id in MINARI_DATASETS.items():
        domain = DOMAIN_OF_FAMILY[family_of(f"minari:{dataset_id}")]
        if args.domain and domain != args.domain:
            continue
        have = "yes" if minari_local(dataset_id) else ""
        print(f"{'minari:' + dataset_id:40s} {'minari':7s} {domain:10s} {env_id:30s} {have}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    ds = load_dataset(args.name, env_id=args.env)
    info = describe(ds)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:16s} {v:.4f}" if isinstance(v, float) else f"{k:16s} {v}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    path = generate(args.name, size=args.size, seed=args.seed, force=args.force)
    print(path)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    report = check_dataset(load_dataset(args.name, env_id=args.env), n=args.n)
    print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m o2o.data`."""
    p = argparse.ArgumentParser(prog="python -m o2o.data", description="o2o-bench datasets")
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("list", help="list every registered D4RL dataset and Minari id")
    pl.add_argument("--domain", choices=["locomotion", "antmaze", "adroit", "kitchen"])
    pi = sub.add_parser("info", help="transitions, episodes, dims and return statistics of a dataset")
    pi.add_argument("name", help="D4RL name, local:<env>-<quality>, minari:<id> or path to a D4RL-layout HDF5 file")
    pi.add_argument("--env", default=None, help="gymnasium id of the evaluation env (for a bring-your-own file)")
    pi.add_argument("--json", action="store_true")
    pg = sub.add_parser("generate", help="generate a local:<env>-<quality> dataset")
    pg.add_argument("name")
    pg.add_argument("--size", type=int, default=None, help="transitions (default: D4RL's size)")
    pg.add_argument("--seed", type=int, default=0)
    pg.add_argument("--force", action="store_true", help="regenerate even if the file exists")
    pc = sub.add_parser("check", help="replay logged states (infos/qpos, infos/qvel) in our env and compare")
    pc.add_argument("name")
    pc.add_argument("--env", default=None)
    pc.add_argument("--n", type=int, default=1000, help="transitions to check")
    args = p.parse_args(argv)
    try:
        return {"list": _cmd_list, "info": _cmd_info, "generate": _cmd_generate, "check": _cmd_check}[args.cmd](args)
    except (DatasetError, DownloadError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
