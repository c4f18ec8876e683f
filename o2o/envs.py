"""Environment factory: dataset spec -> the gymnasium env it is evaluated in, with D4RL's observation layout.

Each domain has an adapter `make_env(spec, render_mode=None) -> gym.Env`; locomotion is here, the others live in
`o2o.domains.<domain>`. Every env returned has a flat Box observation of `spec.obs_dim`, a TimeLimit of
`spec.max_episode_steps`, and puts `success` in `info` where the domain has one.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from o2o.domains import register_robotics
from o2o.minari_source import flatten_observation
from o2o.registry import DatasetSpec
from o2o.specs import get_spec

ASYNC_MIN_CORES = 4  # evaluation runs its envs in subprocesses from this many cores on
ANT_CONTACT_DIMS = 84  # D4RL's ant-v2 observations carry 84 contact-force dims that mujoco-py 2.x left at zero


class ZeroPadObservation(gym.ObservationWrapper):
    """Append `n` zeros to a flat observation (D4RL ant: 27 dims + 84 all-zero contact forces = 111)."""

    def __init__(self, env: gym.Env, n: int) -> None:
        super().__init__(env)
        self.n = n
        low = np.concatenate([env.observation_space.low, np.zeros(n)])
        high = np.concatenate([env.observation_space.high, np.zeros(n)])
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float64)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.concatenate([observation, np.zeros(self.n, dtype=observation.dtype)])


class FlatDictObservation(gym.ObservationWrapper):
    """A (nested) Dict observation seen as the flat vector of `flatten_observation`."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        dim = gym.spaces.flatdim(env.observation_space)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), dtype=np.float64)

    def observation(self, observation: Any) -> np.ndarray:
        return flatten_observation(self.env.observation_space, observation)


class KitchenTaskSuccess(gym.Wrapper):
    """FrankaKitchen-v1 with `info["success"]`: every goal task completed at some step of the episode (D4RL's)."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        info["success"] = False
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, rew, term, trunc, info = self.env.step(action)
        goal = set(self.env.unwrapped.goal)
        info["success"] = goal <= set(info.get("episode_task_completions", ()))
        return obs, rew, term, trunc, info


def make_minari_env(spec: DatasetSpec, render_mode: str | None = None) -> gym.Env:
    """The env a Minari dataset records for evaluation (its eval env spec, else its env spec), flat observations."""
    from gymnasium.envs.registration import EnvSpec

    if spec.env_spec is None:
        raise ValueError(f"{spec.name}: the dataset records no environment to evaluate in")
    register_robotics()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(EnvSpec.from_json(spec.env_spec), render_mode=render_mode, disable_env_checker=True)
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = FlatDictObservation(env)
    if spec.domain == "kitchen":
        env = KitchenTaskSuccess(env)
    return env


def make_locomotion_env(spec: DatasetSpec, render_mode: str | None = None) -> gym.Env:
    """Hopper/HalfCheetah/Walker2d/Ant in D4RL's layout (see README for the v4/v5 choice per family)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*out of date.*")
        env = gym.make(spec.env_id, max_episode_steps=spec.max_episode_steps, render_mode=render_mode,
                       disable_env_checker=True)
    if spec.family == "ant" and env.observation_space.shape[0] + ANT_CONTACT_DIMS == spec.obs_dim:
        env = ZeroPadObservation(env, ANT_CONTACT_DIMS)
    return env


def make_generic_env(spec: DatasetSpec, render_mode: str | None = None) -> gym.Env:
    """Any gymnasium env by id (bring-your-own datasets), flattened when it has a dict observation."""
    env = gym.make(spec.env_id, max_episode_steps=spec.max_episode_steps, render_mode=render_mode,
                   disable_env_checker=True)
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = FlatDictObservation(env)
    return env


# domain -> "module:function"; a domain issue can plug a new adapter in here or through register_adapter.
ADAPTERS: dict[str, str | Callable[..., gym.Env]] = {
    "locomotion": make_locomotion_env,
    "antmaze": "o2o.domains.antmaze:make_env",
    "adroit": "o2o.domains.adroit:make_env",
    "kitchen": "o2o.domains.kitchen:make_env",
}


def register_adapter(domain: str, factory: Callable[..., gym.Env]) -> None:
    """Plug in (or replace) the env adapter of a domain."""
    ADAPTERS[domain] = factory


def _adapter(domain: str) -> Callable[..., gym.Env]:
    fn = ADAPTERS[domain]
    if isinstance(fn, str):
        mod, attr = fn.split(":")
        fn = getattr(importlib.import_module(mod), attr)
    return fn


def make_env(spec: DatasetSpec | str, render_mode: str | None = None) -> gym.Env:
    """The evaluation env of a dataset (spec or name), observations in the dataset's layout."""
    if isinstance(spec, str):
        spec = get_spec(spec)
    if spec.source == "minari":
        return make_minari_env(spec, render_mode)
    if spec.source == "file":
        register_robotics()
        return make_generic_env(spec, render_mode)
    if spec.domain != "locomotion":
        register_robotics()
    return _adapter(spec.domain)(spec, render_mode=render_mode)


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def make_vector_env(spec: DatasetSpec | str, num_envs: int,
                    asynchronous: bool | None = None) -> gym.vector.VectorEnv:
    """A vector env of `num_envs` copies: asynchronous (one process per env) when the machine has more than
    ASYNC_MIN_CORES cores and there is more than one env, synchronous otherwise (faster on 2 cores, where the
    processes would only compete with training). Both give the same episodes for the same seeds."""
    if asynchronous is None:
        asynchronous = num_envs > 1 and usable_cores() >= ASYNC_MIN_CORES
    fns = [lambda: make_env(spec) for _ in range(num_envs)]
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def _make_quiet(env_id: str) -> gym.Env:
    """gym.make(env_id) without the env checker and its warnings."""
    register_robotics()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make(env_id, disable_env_checker=True)


def env_dims(env_id: str) -> tuple[int, int, int | None]:
    """(obs_dim, act_dim, max_episode_steps) of a gymnasium env id."""
    env = _make_quiet(env_id)
    space = env.observation_space
    obs_dim = int(gym.spaces.flatdim(space))
    steps = env.spec.max_episode_steps if env.spec else None
    env.close()
    return obs_dim, int(np.prod(env.action_space.shape)), steps


def env_action_bounds(env_id: str) -> tuple[float, float]:
    """(lowest, highest) bound over the components of a gymnasium env's Box action space (±inf when unbounded)."""
    env = _make_quiet(env_id)
    space = env.action_space
    env.close()
    if not isinstance(space, gym.spaces.Box):
        return -np.inf, np.inf
    return float(np.min(space.low)), float(np.max(space.high))
