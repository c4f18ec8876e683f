"""The one evaluator: any `policy(obs_batch) -> action_batch` over N episodes on a synchronous vector env."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from o2o.envs import make_vector_env
from o2o.registry import DatasetSpec, get_spec, normalized_score

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass
class EvalResult:
    """Returns, D4RL-normalised score and success rate of one evaluation."""

    return_mean: float
    return_std: float
    normalized_score: float
    normalized_std: float
    success_rate: float | None
    returns: np.ndarray
    lengths: np.ndarray


def episode_success(spec: DatasetSpec, success_steps: int) -> bool:
    """An episode succeeds when `success` held on any step; Adroit needs D4RL's >20 (pen) / >25 steps."""
    if spec.domain == "adroit":
        from o2o.domains.adroit import EPISODE_SUCCESS_STEPS

        return success_steps > EPISODE_SUCCESS_STEPS[spec.family]
    return success_steps > 0


def eval_seeds(run_seed: int, eval_index: int, n: int) -> list[int]:
    """Distinct, reproducible env seeds for the `eval_index`-th evaluation of a run (new start states each time)."""
    rng = np.random.default_rng([run_seed, eval_index, 0xE7A1])
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=n)]


def evaluate(
    policy: Policy,
    spec: DatasetSpec | str,
    n_episodes: int = 10,
    seed: int = 0,
    eval_index: int = 0,
    num_envs: int | None = None,
    obs_transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> EvalResult:
    """Run `n_episodes` episodes with the (deterministic) policy in batches of `num_envs` envs."""
    if isinstance(spec, str):
        spec = get_spec(spec)
    num_envs = min(n_episodes, num_envs or 10)
    seeds = eval_seeds(seed, eval_index, n_episodes)
    envs = make_vector_env(spec, num_envs)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    returns, lengths, successes = [], [], []
    try:
        for start in range(0, n_episodes, num_envs):
            batch = seeds[start:start + num_envs]
            k = len(batch)
            obs, _ = envs.reset(seed=batch + [s + 1 for s in seeds[: num_envs - k]])
            ret = np.zeros(num_envs)
            length = np.zeros(num_envs, dtype=np.int64)
            succ = np.zeros(num_envs, dtype=np.int64)  # steps with info["success"] in each episode
            alive = np.zeros(num_envs, dtype=bool)
            alive[:k] = True
            while alive.any():
                x = obs.astype(np.float32)
                if obs_transform is not None:
                    x = obs_transform(x)
                act = np.clip(np.asarray(policy(x), dtype=np.float64), low, high)
                obs, rew, term, trunc, info = envs.step(act)
                ret[alive] += rew[alive]
                length[alive] += 1
                if "success" in info:
                    s = np.asarray(info["success"], dtype=bool)
                    mask = info.get("_success", np.ones(num_envs, dtype=bool))
                    succ += s & mask & alive
                alive &= ~(term | trunc)
            returns += ret[:k].tolist()
            lengths += length[:k].tolist()
            successes += [episode_success(spec, int(c)) for c in succ[:k]]
    finally:
        envs.close()
    r = np.asarray(returns)
    norm = np.array([normalized_score(spec, x) for x in r])
    return EvalResult(
        return_mean=float(r.mean()),
        return_std=float(r.std()),
        normalized_score=float(norm.mean()),
        normalized_std=float(norm.std()),
        success_rate=float(np.mean(successes)) if spec.has_success else None,
        returns=r,
        lengths=np.asarray(lengths),
    )
