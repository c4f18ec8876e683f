"""The one evaluator: any `policy(obs_batch) -> action_batch` over N episodes on one vector env; S seeds' policies at
once with `evaluate_members` (each seed plays the episodes it would play alone)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from o2o.envs import make_vector_env
from o2o.registry import DatasetSpec, normalized_score
from o2o.specs import get_spec

Policy = Callable[[np.ndarray], np.ndarray]
MemberPolicy = Callable[[np.ndarray], np.ndarray]  # obs (S, k, d) -> actions (S, k, a)


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
    successes: np.ndarray | None = None  # per episode
    normalized: np.ndarray | None = None  # per-episode normalised scores

    @property
    def length_mean(self) -> float:
        """Mean episode length."""
        return float(np.mean(self.lengths))


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
    return evaluate_members(lambda obs: np.asarray(policy(obs[0]))[None], spec, n_episodes, [seed], eval_index,
                            num_envs, obs_transform)[0]


def evaluate_members(
    policy: MemberPolicy,
    spec: DatasetSpec | str,
    n_episodes: int,
    seeds: Sequence[int],
    eval_index: int = 0,
    num_envs: int | None = None,
    obs_transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[EvalResult]:
    """Evaluate S policies at once in one vector env of S × `num_envs` envs: `policy(obs (S, k, d)) -> (S, k, a)`.

    Member s plays exactly the episodes it would play alone: env seeds eval_seeds(seeds[s], eval_index, n), in
    batches of `num_envs`, the last batch padded with extra starts whose results are dropped.
    """
    if isinstance(spec, str):
        spec = get_spec(spec)
    members = len(seeds)
    num_envs = min(n_episodes, num_envs or 10)
    member_seeds = [eval_seeds(s, eval_index, n_episodes) for s in seeds]
    envs = make_vector_env(spec, members * num_envs)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    n = members * num_envs
    returns, lengths, successes = [[] for _ in seeds], [[] for _ in seeds], [[] for _ in seeds]
    try:
        for start in range(0, n_episodes, num_envs):
            k = min(num_envs, n_episodes - start)
            reset_seeds = [x for ms in member_seeds for x in ms[start:start + k] + [y + 1 for y in ms[:num_envs - k]]]
            obs, _ = envs.reset(seed=reset_seeds)
            ret = np.zeros(n)
            length = np.zeros(n, dtype=np.int64)
            succ = np.zeros(n, dtype=np.int64)  # steps with info["success"] in each episode
            alive = np.zeros((members, num_envs), dtype=bool)
            alive[:, :k] = True
            alive = alive.reshape(n)
            poisoned = np.zeros(n, dtype=bool)
            while alive.any():
                x = obs.astype(np.float32)
                if obs_transform is not None:
                    x = obs_transform(x)
                act = np.asarray(policy(x.reshape(members, num_envs, -1)), dtype=np.float64).reshape(n, -1)
                bad = ~np.isfinite(act).all(1)
                poisoned |= bad & alive  # a diverged member's episodes score NaN; MuJoCo never sees its actions
                act = np.clip(np.where(bad[:, None], 0.0, act), low, high)
                obs, rew, term, trunc, info = envs.step(act)
                ret[alive] += rew[alive]
                length[alive] += 1
                if "success" in info:
                    s = np.asarray(info["success"], dtype=bool)
                    mask = info.get("_success", np.ones(n, dtype=bool))
                    succ += s & mask & alive
                alive &= ~(term | trunc)
            ret[poisoned] = np.nan
            for m in range(members):
                sl = slice(m * num_envs, m * num_envs + k)
                returns[m] += ret[sl].tolist()
                lengths[m] += length[sl].tolist()
                successes[m] += [episode_success(spec, int(c)) for c in succ[sl]]
    finally:
        envs.close()
    return [_result(spec, np.asarray(r), np.asarray(ln), np.asarray(sc, dtype=bool))
            for r, ln, sc in zip(returns, lengths, successes)]


def _result(spec: DatasetSpec, returns: np.ndarray, lengths: np.ndarray, successes: np.ndarray) -> EvalResult:
    norm = np.array([normalized_score(spec, x) for x in returns])
    return EvalResult(
        return_mean=float(returns.mean()),
        return_std=float(returns.std()),
        normalized_score=float(norm.mean()),
        normalized_std=float(norm.std()),
        success_rate=float(np.mean(successes)) if spec.has_success else None,
        returns=returns,
        lengths=lengths,
        successes=successes,
        normalized=norm,
    )
