"""Does a dataset agree with our env? Restore logged simulator states, apply the logged action, compare.

For a dataset with `infos/qpos` and `infos/qvel` (D4RL's locomotion, AntMaze, Adroit and Kitchen files and every
`local:` dataset), each checked transition i is replayed as: restore the logged state of row i, `env.step(actions[i])`,
then compare the env's observation and reward with `next_observations[i]` and `rewards[i]`. The state of a row is
what D4RL logs under infos/, read per domain:
- locomotion and kitchen: (qpos, qvel) of the simulator;
- antmaze: qpos (15, torso xy in D4RL's frame, mapped to gymnasium's by the adapter) and qvel (14); the reward is
  that of the dataset's goal cell centre without noise (rows labelled with a noisy goal can differ at its edge);
- adroit: qpos, qvel and the episode's randomised target that D4RL logs beside them (pen desired_orien, door
  door_body_pos, hammer board_pos, relocate obj_pos and target_pos). Without those infos the target stays where the
  last reset put it, and the report lists them under `missing_infos`.
`logged_state(env, domain)` reads the same state from an env (the stand-in and local generators record it with it).

MuJoCo's solver warm start (qacc_warmstart) is not part of the logged state; it is zeroed before each step, which
can leave differences at the level of the solver tolerance on contact-rich steps (reported, not hidden).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from o2o.dataset import Dataset
from o2o.domains import DOMAIN_MODULES, domain_module
from o2o.envs import make_env


def _mj_data(env: Any, domain: str) -> Any:
    """The MuJoCo data that stepping `env` advances."""
    return domain_module(domain).mj_data(env) if domain in DOMAIN_MODULES else env.unwrapped.data


def logged_state(env: Any, domain: str) -> dict[str, np.ndarray]:
    """The env's current state as D4RL logs it under infos/ (keys without the prefix: qpos, qvel, extras)."""
    if domain in DOMAIN_MODULES:
        return domain_module(domain).logged_state(env)
    data = env.unwrapped.data
    return {"qpos": data.qpos.copy(), "qvel": data.qvel.copy()}


def state_keys(env: Any, domain: str) -> list[str]:
    """The infos/ keys (without prefix) a full restore of this domain reads."""
    return list(logged_state(env, domain))


def restore(env: Any, domain: str, state: dict[str, np.ndarray]) -> None:
    """Put the env in a logged state (qpos, qvel and any domain extras) with the solver warm start zeroed."""
    extra = {k: v for k, v in state.items() if k not in ("qpos", "qvel")}
    if domain in DOMAIN_MODULES:
        domain_module(domain).restore_state(env, state["qpos"], state["qvel"], **extra)
    else:
        env.unwrapped.set_state(state["qpos"], state["qvel"])
    _mj_data(env, domain).qacc_warmstart[:] = 0.0


def _reset(env: Any, ds: Dataset, seed: int) -> None:
    """Reset; AntMaze gets the goal cell's centre (no noise) so rewards compare with the dataset's."""
    if ds.spec.domain == "antmaze":
        from o2o.domains import antmaze

        env.reset(seed=seed, options={"goal": antmaze.goal_and_start(ds.spec.name)[0]})
    else:
        env.reset(seed=seed)


def check_dataset(ds: Dataset, n: int = 1000, seed: int = 0, atol: float = 1e-5) -> dict[str, Any]:
    """Replay n transitions (evenly spaced) in the dataset's env and report observation and reward errors."""
    domain = ds.spec.domain
    if "infos/qpos" not in ds.infos or "infos/qvel" not in ds.infos:
        have = ", ".join(sorted(ds.infos)) or "none"
        raise ValueError(f"{ds.spec.name}: cannot restore states (needs infos/qpos and infos/qvel; infos present: "
                         f"{have})")
    env = make_env(ds.spec)
    _reset(env, ds, seed)
    wanted = state_keys(env, domain)
    missing = [k for k in wanted if f"infos/{k}" not in ds.infos]
    keys = [k for k in wanted if f"infos/{k}" in ds.infos]
    idx = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).astype(np.int64))
    obs_err = np.zeros(len(idx))
    rew_err = np.zeros(len(idx))
    since_reset = 0
    reset_every = max(1, min(500, ds.spec.max_episode_steps // 2))  # stay clear of the TimeLimit
    low, high = env.action_space.low, env.action_space.high
    for j, i in enumerate(idx):
        if since_reset >= reset_every:
            _reset(env, ds, seed + j)
            since_reset = 0
        restore(env, domain, {k: ds.infos[f"infos/{k}"][i] for k in keys})
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
        "restored_infos": keys,
        "missing_infos": missing,
    }
