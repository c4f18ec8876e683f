"""Does a dataset agree with our env? Restore logged simulator states, apply the logged action, compare.

For a dataset with `infos/qpos` and `infos/qvel` (D4RL's locomotion files and every `local:` dataset), each checked
transition i is replayed as: `env.unwrapped.set_state(qpos[i], qvel[i])`, `env.step(actions[i])`, then the env's
observation and reward are compared with `next_observations[i]` and `rewards[i]`. A domain whose state is not
(qpos, qvel) can register its own `restore_state(env, ds, i)` in RESTORERS.

MuJoCo's solver warm start (qacc_warmstart) is not part of the logged state; it is zeroed before each step, which
can leave differences at the level of the solver tolerance on contact-rich steps (reported, not hidden).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from o2o.data import Dataset
from o2o.envs import make_env


def restore_qpos_qvel(env: Any, ds: Dataset, i: int) -> None:
    """MuJoCo envs: set the simulator to the logged (qpos, qvel) of transition i."""
    base = env.unwrapped
    base.set_state(ds.infos["infos/qpos"][i], ds.infos["infos/qvel"][i])
    base.data.qacc_warmstart[:] = 0.0


RESTORERS: dict[str, Callable[[Any, Dataset, int], None]] = {"locomotion": restore_qpos_qvel}


def check_dataset(ds: Dataset, n: int = 1000, seed: int = 0, atol: float = 1e-5) -> dict[str, Any]:
    """Replay n transitions (evenly spaced) in the dataset's env and report observation and reward errors."""
    restore = RESTORERS.get(ds.spec.domain)
    if restore is None or "infos/qpos" not in ds.infos or "infos/qvel" not in ds.infos:
        have = ", ".join(sorted(ds.infos)) or "none"
        raise ValueError(f"{ds.spec.name}: cannot restore states (needs infos/qpos and infos/qvel and a restorer for "
                         f"domain {ds.spec.domain!r}; infos present: {have})")
    env = make_env(ds.spec)
    env.reset(seed=seed)
    idx = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).astype(np.int64))
    obs_err = np.zeros(len(idx))
    rew_err = np.zeros(len(idx))
    since_reset = 0
    low, high = env.action_space.low, env.action_space.high
    for j, i in enumerate(idx):
        if since_reset >= 500:  # stay clear of the TimeLimit
            env.reset(seed=seed + j)
            since_reset = 0
        restore(env, ds, int(i))
        nobs, rew, _, _, _ = env.step(np.clip(ds.actions[i].astype(np.float64), low, high))
        since_reset += 1
        obs_err[j] = float(np.max(np.abs(np.asarray(nobs, np.float64) - ds.next_observations[i])))
        rew_err[j] = abs(float(rew) - float(ds.rewards[i]))
    env.close()
    within = (obs_err <= atol) & (rew_err <= atol)
    return {
        "dataset": ds.spec.name,
        "env": ds.spec.env_id,
        "checked": int(len(idx)),
        "obs_abs_error_mean": float(obs_err.mean()),
        "obs_abs_error_max": float(obs_err.max()),
        "reward_abs_error_mean": float(rew_err.mean()),
        "reward_abs_error_max": float(rew_err.max()),
        "fraction_within_atol": float(within.mean()),
        "atol": atol,
    }
