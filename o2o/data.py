"""One loader for every dataset source: D4RL names, `minari:` ids, `local:` datasets and D4RL-layout HDF5 files.

Transition semantics (documented in the README, "Datasets"):
- A file *with* `next_observations` keeps every transition; `timeouts` mark truncated episode ends (no terminal).
- A file *without* them gets next_observations exactly as `d4rl.qlearning_dataset` builds them: s'_i = s_{i+1};
  a transition whose `timeouts[i]` is set is dropped (its s_{i+1} starts the next episode), and so is the file's
  last transition. Files without `timeouts` end an episode every `max_episode_steps` steps, as d4rl does.
- `terminals` are true environment terminations (no bootstrap); `timeouts` are truncations (bootstrap);
  `episode_ends` marks the last kept transition of every episode (terminal, timeout or end of data).

Command line: `python -m o2o.data list | info NAME [--env ID] | generate local:NAME [--size N] | check NAME`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from o2o.registry import (
    DOMAIN_OF_FAMILY,
    FAMILY_DIMS,
    MINARI_DATASETS,
    REGISTRY,
    DatasetSpec,
    family_of,
    get_spec,
    is_file_name,
    normalized_score,
    score_reference,
    spec_for_env,
)

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
FLAG_KEYS = ("terminals", "timeouts")
# How far (as a fraction of the action box's half-width) an action may lie outside the env's bounds: float rounding
# of data clipped to the bounds passes, anything beyond would make tanh-policy log-likelihoods meaningless.
ACTION_TOLERANCE = 1e-3


class DatasetError(ValueError):
    """A dataset that cannot be used: the message names the file and the problem."""


@dataclass
class Dataset:
    """A typed in-memory offline dataset of N transitions."""

    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminals: np.ndarray  # (N,) bool: true terminations
    timeouts: np.ndarray  # (N,) bool: truncations (time limit)
    episode_ends: np.ndarray  # (N,) bool: last transition of each episode
    spec: DatasetSpec
    metadata: dict[str, Any] = field(default_factory=dict)
    infos: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. infos/qpos, infos/qvel, aligned with rows

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def obs_dim(self) -> int:
        """Observation dimension."""
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        """Action dimension."""
        return self.actions.shape[1]

    def episode_slices(self) -> list[slice]:
        """Slices of consecutive transitions, one per episode."""
        ends = np.flatnonzero(self.episode_ends) + 1
        starts = np.concatenate([[0], ends[:-1]])
        return [slice(int(s), int(e)) for s, e in zip(starts, ends)]

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode."""
        ends = np.flatnonzero(self.episode_ends)
        csum = np.concatenate([[0.0], np.cumsum(self.rewards, dtype=np.float64)])
        starts = np.concatenate([[0], ends[:-1] + 1])
        return csum[ends + 1] - csum[starts]

    def next_actions(self) -> np.ndarray:
        """a_{t+1} within an episode (SARSA targets); the episode's last action repeats at its end."""
        nxt = np.empty_like(self.actions)
        nxt[:-1] = self.actions[1:]
        nxt[-1] = self.actions[-1]
        last = self.episode_ends
        nxt[last] = self.actions[last]
        return nxt

    def mc_returns(self, gamma: float) -> np.ndarray:
        """Discounted Monte-Carlo return-to-go of every transition within its episode."""
        out = np.zeros(len(self), dtype=np.float64)
        acc = 0.0
        for i in range(len(self) - 1, -1, -1):
            if self.episode_ends[i]:
                acc = 0.0
            acc = float(self.rewards[i]) + gamma * acc
            out[i] = acc
        return out.astype(np.float32)

    def subset(self, idx: np.ndarray) -> Dataset:
        """A dataset of the rows `idx` (boolean mask or indices); episode ends are kept as flags."""
        infos = {k: v[idx] for k, v in self.infos.items()}
        return Dataset(
            self.observations[idx], self.actions[idx], self.rewards[idx], self.next_observations[idx],
            self.terminals[idx], self.timeouts[idx], self.episode_ends[idx], self.spec, dict(self.metadata), infos,
        )


def _fail(path: Any, msg: str) -> DatasetError:
    return DatasetError(f"{path}: {msg}")


def read_hdf5(path: str | Path) -> dict[str, np.ndarray]:
    """Read every dataset of a D4RL-layout HDF5 file into numpy, with a clear error when it is corrupt."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise _fail(path, "file does not exist")
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    out[name] = obj[()]
            f.visititems(visit)
            out.update({f"attrs/{k}": np.asarray(v) for k, v in f.attrs.items()})
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise _fail(path, f"not a readable HDF5 file (truncated or corrupt?): {e}") from None
    return out


def check_hdf5(path: str | Path, spec: DatasetSpec | None = None) -> None:
    """Raise DatasetError unless the file is a readable D4RL-layout HDF5 file (and, given `spec`, of its dims).

    Reads shapes and each array's last row only (a truncated file fails there), not the data: a quick check of a
    download or a cached file before it is trusted.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_KEYS if not isinstance(f.get(k), h5py.Dataset)]
            if missing:
                raise _fail(path, f"missing key(s) {', '.join(missing)} (a D4RL file has {', '.join(REQUIRED_KEYS)})")
            rows = {k: f[k].shape[0] if f[k].shape else 0 for k in (*REQUIRED_KEYS, "timeouts") if k in f}
            if len(set(rows.values())) != 1:
                raise _fail(path, f"length mismatch: {', '.join(f'{k} has {n} rows' for k, n in rows.items())}")
            for k in rows:
                if rows[k]:
                    f[k][-1]
            obs, act = f["observations"].shape, f["actions"].shape
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        if isinstance(e, DatasetError):
            raise
        raise _fail(path, f"not a readable HDF5 file (truncated or corrupt?): {e}") from None
    if spec is not None and (obs[1:] != (spec.obs_dim,) or act[1:] != (spec.act_dim,)):
        raise _fail(path, f"observations {obs} and actions {act} do not have {spec.name}'s dims "
                          f"({spec.obs_dim} and {spec.act_dim})")


def _numeric(origin: Any, key: str, arr: np.ndarray) -> np.ndarray:
    """`arr` unchanged if it holds numbers (bool, int or float); DatasetError naming `key` otherwise."""
    if arr.dtype.kind not in "biuf":
        raise _fail(origin, f"{key} must be numeric, but its dtype is {arr.dtype}")
    return arr


def _flags(origin: Any, key: str, arr: np.ndarray) -> np.ndarray:
    """A terminals/timeouts array as bool; DatasetError unless it is boolean or holds only 0 and 1 (NaN is neither)."""
    arr = _numeric(origin, key, np.asarray(arr)).reshape(-1)
    if arr.dtype.kind == "b":
        return arr
    bad = ~((arr == 0) | (arr == 1))
    if bad.any():
        raise _fail(origin, f"{key} must be boolean or 0/1, but {int(bad.sum())} value(s) are not "
                            f"(first: {arr[bad][0].item()!r} at row {int(np.flatnonzero(bad)[0])})")
    return arr.astype(bool)


def _check_action_bounds(origin: Any, act: np.ndarray, spec: DatasetSpec) -> None:
    """DatasetError when an action lies outside the env's action bounds by more than ACTION_TOLERANCE."""
    low, high = spec.action_bounds
    slack = ACTION_TOLERANCE * (high - low) / 2 if np.isfinite(high - low) else 0.0
    out = (act < low - slack) | (act > high + slack)
    if out.any():
        raise _fail(origin, f"{int(out.sum())} action value(s) lie outside the action bounds [{low:g}, {high:g}] of "
                            f"{spec.env_id} (seen [{float(act.min()):.4g}, {float(act.max()):.4g}], "
                            f"tolerance {slack:g})")


def from_arrays(raw: dict[str, np.ndarray], spec: DatasetSpec, origin: str = "<arrays>") -> Dataset:
    """Build a validated Dataset from D4RL-layout arrays (keys as in the HDF5 file)."""
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise _fail(origin, f"missing key(s) {', '.join(missing)} (a D4RL file has {', '.join(REQUIRED_KEYS)})")
    obs = _numeric(origin, "observations", np.asarray(raw["observations"]))
    act = _numeric(origin, "actions", np.asarray(raw["actions"]))
    rew = _numeric(origin, "rewards", np.asarray(raw["rewards"])).reshape(-1)
    term = _flags(origin, "terminals", raw["terminals"])
    n = len(rew)
    if n == 0:
        raise _fail(origin, "the dataset is empty")
    if obs.ndim != 2 or act.ndim != 2:
        raise _fail(origin, f"observations and actions must be 2-D, got shapes {obs.shape} and {act.shape}")
    tout = _flags(origin, "timeouts", raw["timeouts"]) if "timeouts" in raw else None
    for key, arr in (("observations", obs), ("actions", act), ("terminals", term), ("timeouts", tout)):
        if arr is not None and len(arr) != n:
            raise _fail(origin, f"length mismatch: {key} has {len(arr)} rows, rewards has {n}")
    if obs.shape[1] != spec.obs_dim:
        raise _fail(origin, f"observation dim {obs.shape[1]} does not match {spec.env_id} ({spec.obs_dim})")
    if act.shape[1] != spec.act_dim:
        raise _fail(origin, f"action dim {act.shape[1]} does not match {spec.env_id} ({spec.act_dim})")
    nxt = raw.get("next_observations")
    if nxt is not None:
        nxt = _numeric(origin, "next_observations", np.asarray(nxt))
        if nxt.shape != obs.shape:
            raise _fail(origin, f"next_observations shape {nxt.shape} != observations shape {obs.shape}")
    for key, arr in (("observations", obs), ("actions", act), ("rewards", rew), ("next_observations", nxt)):
        if arr is not None and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise _fail(origin, f"{key} holds {bad} NaN/inf value(s)")
    _check_action_bounds(origin, act, spec)
    infos = {k: np.asarray(v) for k, v in raw.items() if k.startswith("infos/") and len(np.asarray(v)) == n}

    if nxt is not None:
        keep = np.ones(n, dtype=bool)
        timeouts = tout if tout is not None else np.zeros(n, dtype=bool)
        ends = term | timeouts
    else:
        # d4rl.qlearning_dataset: s' = s_{i+1}; drop timeout transitions and the last one.
        if tout is None:
            step = np.zeros(n, dtype=np.int64)
            # episode_step resets after a terminal or after max_episode_steps - 1 (d4rl's final_timestep)
            tout = np.zeros(n, dtype=bool)
            k = 0
            for i in range(n):
                step[i] = k
                final = k == spec.max_episode_steps - 1
                tout[i] = final
                k = 0 if (final or term[i]) else k + 1
        keep = ~tout
        keep[-1] = False
        nxt = np.empty_like(obs)
        nxt[:-1] = obs[1:]
        nxt[-1] = obs[-1]
        # an episode is truncated after the last kept transition before a dropped timeout
        timeouts = np.zeros(n, dtype=bool)
        timeouts[:-1] = tout[1:] & keep[:-1] & ~term[:-1]
        ends = term | timeouts
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        raise _fail(origin, "no usable transitions after dropping timeouts")
    ends = ends[idx].copy()
    ends[-1] = True
    ds = Dataset(
        observations=obs[idx].astype(np.float32),
        actions=act[idx].astype(np.float32),
        rewards=rew[idx].astype(np.float32),
        next_observations=nxt[idx].astype(np.float32),
        terminals=term[idx],
        timeouts=timeouts[idx],
        episode_ends=ends,
        spec=spec,
        metadata={"name": spec.name, "env_id": spec.env_id, "origin": str(origin), "raw_transitions": n},
        infos={k: v[idx] for k, v in infos.items()},
    )
    meta = {k.split("/", 1)[1]: v.tolist() for k, v in raw.items() if k.startswith("attrs/")}
    meta.update({k: _scalar(v) for k, v in raw.items() if k.startswith("metadata/")})
    ds.metadata.update(meta)
    return ds


def _scalar(v: np.ndarray) -> Any:
    v = np.asarray(v)
    if v.dtype.kind in "SO":
        return v.tolist().decode() if isinstance(v.tolist(), bytes) else str(v.tolist())
    return v.tolist()


def load_file(path: str | Path, env_id: str | None = None, name: str | None = None) -> Dataset:
    """Load a D4RL-layout HDF5 file evaluated in gymnasium env `env_id` (or the D4RL env of `name`)."""
    path = Path(path)
    if name is not None and env_id is None:
        spec = get_spec(name)
    elif env_id is not None:
        spec = spec_for_env(name or path.stem, env_id)
        spec = _with_file_dims(spec, env_id)
    else:
        raise DatasetError(f"{path}: say which environment evaluates this file with --env <gymnasium id>")
    return from_arrays(read_hdf5(path), spec, origin=str(path))


def _with_file_dims(spec: DatasetSpec, env_id: str) -> DatasetSpec:
    """For a bring-your-own env id, take dims, action bounds and time limit from the gymnasium env itself."""
    from o2o.envs import env_action_bounds, env_dims

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
        from o2o.generate import local_path

        spec = get_spec(name)
        path = local_path(name, create=True)
        return from_arrays(read_hdf5(path), spec, origin=str(path))
    if is_file_name(name):
        return load_file(name, env_id=env_id)
    spec = get_spec(name)
    from o2o.download import fetch_d4rl

    path = fetch_d4rl(spec, validate=lambda p: check_hdf5(p, spec), progress=progress)
    return from_arrays(read_hdf5(path), spec, origin=str(path))


def _open_minari(dataset_id: str, download: bool) -> Any:
    """The MinariDataset of an id, from MINARI_DATASETS_PATH (default ~/.minari/datasets); fetched when absent and
    `download` is set (Minari's own download, which needs the network)."""
    try:
        import minari
    except ImportError as e:  # pragma: no cover - minari is a pinned dependency
        raise DatasetError(f"minari:{dataset_id}: the minari package is not installed ({e})") from None
    if not download and not _minari_local(dataset_id):
        from minari.storage import get_dataset_path

        raise DatasetError(f"minari:{dataset_id}: not in the local Minari directory {get_dataset_path()}; fetch it "
                           f"with `minari download {dataset_id}` or `python -m o2o.data info minari:{dataset_id}`")
    try:
        return minari.load_dataset(dataset_id, download=download)
    except Exception as e:  # minari raises many types: missing file, no network, unknown remote id
        msg = str(e).splitlines()[0] if str(e) else ""
        raise DatasetError(f"minari:{dataset_id}: cannot load ({type(e).__name__}: {msg})") from None


def minari_spec(dataset_id: str, mds: Any = None, download: bool = False) -> DatasetSpec:
    """Spec of a Minari dataset, read from the dataset itself (`mds`, else opened; fetched first when `download`).

    - env: what Minari recovers for evaluation (`recover_environment(eval_env=True)`: the eval env spec, else the
      collection env spec), made by `o2o.envs.make_minari_env` with observations flattened by
      `o2o.envs.flatten_observation`; its time limit is the spec's max_episode_steps;
    - dims: the flattened dataset observation and the action; a DatasetError when they differ from the env's;
    - reference returns: the dataset's `ref_min_score`/`ref_max_score` when it has both (ref_source 'minari'),
      else D4RL's of the family (ref_source 'd4rl');
    - family: the id's env_name part (D4RL/<family>/..., mujoco/<family>/...), else guessed from the env id.
    """
    import gymnasium as gym

    from o2o.envs import _register_robotics

    mds = mds if mds is not None else _open_minari(dataset_id, download)
    name = f"minari:{dataset_id}"
    _register_robotics()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = mds.recover_environment(eval_env=True)
    except Exception as e:
        raise DatasetError(f"{name}: cannot make its evaluation environment ({type(e).__name__}: {e})") from None
    try:
        env_spec = env.spec
        env_obs, env_act = env.observation_space, env.action_space
    finally:
        env.close()
    try:
        family = family_of(name)
    except KeyError:
        try:
            family = spec_for_env(name, env_spec.id).family
        except KeyError:
            raise DatasetError(f"{name}: not a dataset of the four domains (env {env_spec.id!r}); no reference "
                               f"scores for it") from None
    obs_dim, act_dim = gym.spaces.flatdim(mds.observation_space), gym.spaces.flatdim(mds.action_space)
    env_obs_dim, env_act_dim = gym.spaces.flatdim(env_obs), gym.spaces.flatdim(env_act)
    if (obs_dim, act_dim) != (env_obs_dim, env_act_dim):
        raise DatasetError(f"{name}: dataset observations/actions flatten to {obs_dim}/{act_dim} dims but its "
                           f"evaluation env {env_spec.id} gives {env_obs_dim}/{env_act_dim}")
    meta = mds.storage.metadata
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    spec = replace(spec_for_env(name, env_spec.id, family=family), source="minari", obs_dim=obs_dim,
                   act_dim=act_dim, max_episode_steps=env_spec.max_episode_steps or FAMILY_DIMS[family][2],
                   env_spec=env_spec.to_json())
    if lo is not None and hi is not None:
        spec = replace(spec, ref_min=float(lo), ref_max=float(hi), ref_source="minari")
    return spec


def load_minari(dataset_id: str) -> Dataset:
    """Load a Minari dataset (local, or downloaded when the network allows) into D4RL layout.

    Observations are flattened with `o2o.envs.flatten_observation` (the evaluation env's wrapper uses the same
    function); every episode's last step is a terminal when Minari says `terminations`, else a timeout.
    """
    from o2o.envs import flatten_observation

    mds = _open_minari(dataset_id, download=True)
    spec = minari_spec(dataset_id, mds)
    space = mds.observation_space
    obs, nobs, act, rew, term, trunc = [], [], [], [], [], []
    for ep in mds.iterate_episodes():
        o = flatten_observation(space, ep.observations)
        obs.append(o[:-1])
        nobs.append(o[1:])
        act.append(np.asarray(ep.actions).reshape(len(ep.rewards), -1))
        rew.append(ep.rewards)
        term.append(ep.terminations)
        trunc.append(ep.truncations)
    if not rew:
        raise DatasetError(f"minari:{dataset_id}: the dataset has no episodes")
    raw = {
        "observations": np.concatenate(obs), "next_observations": np.concatenate(nobs),
        "actions": np.concatenate(act), "rewards": np.concatenate(rew),
        "terminals": np.concatenate(term), "timeouts": np.concatenate(trunc).astype(bool),
    }
    # every episode ends at its last step: mark it as a timeout unless it terminated
    ends = np.cumsum([len(r) for r in rew]) - 1
    raw["timeouts"][ends] |= ~raw["terminals"][ends].astype(bool)
    ds = from_arrays(raw, spec, origin=f"minari:{dataset_id}")
    ds.metadata.update(minari_version=mds.spec.minari_version, score_reference=score_reference(spec))
    return ds


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


def _minari_local(dataset_id: str) -> bool:
    """Whether a Minari dataset is in the local Minari directory (MINARI_DATASETS_PATH or ~/.minari/datasets)."""
    from minari.storage import get_dataset_path

    return (get_dataset_path(dataset_id) / "data").is_dir()


def _cmd_list(args: argparse.Namespace) -> int:
    from o2o.download import cache_dir

    cache = cache_dir()
    print(f"{'dataset':32s} {'domain':10s} {'env':22s} {'ref min':>12s} {'ref max':>12s}  cached")
    for name, spec in REGISTRY.items():
        if args.domain and spec.domain != args.domain:
            continue
        have = "yes" if (cache / spec.filename).exists() else ""
        print(f"{name:32s} {spec.domain:10s} {spec.env_id:22s} {spec.ref_min:12.4f} {spec.ref_max:12.4f}  {have}")
    if not args.domain:
        from o2o.registry import LOCAL_FAMILIES, LOCAL_QUALITIES

        print(f"\nlocally generated: local:<{'|'.join(LOCAL_FAMILIES)}>-<{'|'.join(LOCAL_QUALITIES)}>")
    print("\nMinari ids (source minari; env as collected, reference returns from the dataset's metadata when it has "
          "them):")
    print(f"{'dataset':40s} {'source':7s} {'domain':10s} {'env':30s} local")
    for dataset_id, env_id in MINARI_DATASETS.items():
        domain = DOMAIN_OF_FAMILY[family_of(f"minari:{dataset_id}")]
        if args.domain and domain != args.domain:
            continue
        have = "yes" if _minari_local(dataset_id) else ""
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
    from o2o.generate import generate

    path = generate(args.name, size=args.size, seed=args.seed, force=args.force)
    print(path)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from o2o.consistency import check_dataset

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
    except (DatasetError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:
        from o2o.download import DownloadError

        if isinstance(e, DownloadError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
