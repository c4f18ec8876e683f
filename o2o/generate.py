"""Datasets the project makes itself, in D4RL's exact HDF5 layout: rollouts of a policy in an env.

`local:<env>-<quality>` datasets are rollouts of committed behaviour policies (see `behaviour/`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from o2o.envs import make_env
from o2o.registry import DatasetSpec

GENERATOR_VERSION = "1"


def data_dir() -> Path:
    """Where local datasets live: `$O2O_DATA_DIR`, default ~/.o2o/datasets."""
    return Path(os.environ.get("O2O_DATA_DIR", "~/.o2o/datasets")).expanduser()


def rollout(spec: DatasetSpec, policy: Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]],
            n_transitions: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Roll out `policy(obs, rng) -> (action, log_prob)` for n transitions, recording D4RL's keys and infos."""
    env = make_env(spec)
    rng = np.random.default_rng(seed)
    base = env.unwrapped
    keys = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts",
            "infos/qpos", "infos/qvel", "infos/action_log_probs")
    buf: dict[str, list[Any]] = {k: [] for k in keys}
    obs, _ = env.reset(seed=seed)
    episode = 0
    while len(buf["rewards"]) < n_transitions:
        qpos, qvel = base.data.qpos.copy(), base.data.qvel.copy()
        act, logp = policy(obs[None].astype(np.float32), rng)
        act = np.clip(act[0], env.action_space.low, env.action_space.high)
        nobs, rew, term, trunc, _ = env.step(act)
        last = len(buf["rewards"]) + 1 == n_transitions
        for k, v in zip(keys, (obs, act, rew, nobs, term, trunc or (last and not term), qpos, qvel, logp[0])):
            buf[k].append(v)
        obs = nobs
        if term or trunc:
            episode += 1
            obs, _ = env.reset(seed=seed + 1000003 * episode)
    env.close()
    out = {k: np.asarray(v) for k, v in buf.items()}
    for k in ("observations", "actions", "next_observations", "rewards", "infos/action_log_probs"):
        out[k] = out[k].astype(np.float32)
    out["terminals"] = out["terminals"].astype(bool)
    out["timeouts"] = out["timeouts"].astype(bool)
    return out


def write_d4rl_hdf5(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, Any] | None = None) -> Path:
    """Write arrays (keys like 'observations', 'infos/qpos') and metadata ('metadata/...') atomically."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v, compression="gzip" if np.asarray(v).size > 10000 else None)
        for k, v in (metadata or {}).items():
            f.create_dataset(f"metadata/{k}", data=v)
    os.replace(tmp, path)
    return path
