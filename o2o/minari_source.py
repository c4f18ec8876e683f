"""The `minari:` dataset source: where Minari keeps a dataset, opening it, its spec, and its transitions.

A `minari:<id>` dataset is read from MINARI_DATASETS_PATH (default ~/.minari/datasets). Its spec (evaluation env,
dims, reference returns) is read from the dataset itself; its observations are flattened by `flatten_observation`,
the one layout that both the loader here and the evaluation env's wrapper (`o2o.envs.FlatDictObservation`) use.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np

from o2o.dataset import Dataset, DatasetError, from_arrays
from o2o.domains import register_robotics
from o2o.registry import FAMILY_DIMS, DatasetSpec, family_of, score_reference, spec_for_env


def flatten_observation(space: gym.Space, obs: Any) -> np.ndarray:
    """One observation vector from a Box or (nested) Dict observation: the single layout of Minari datasets.

    Order: depth first over the Dict keys *in the observation space's order* (gymnasium sorts a Dict's keys, so
    AntMaze gives achieved_goal ⊕ desired_goal ⊕ observation and Kitchen achieved_goal[task...] ⊕
    desired_goal[task...] ⊕ observation), each Box raveled in C order. Leaves may carry leading batch axes:
    (*batch, *leaf_shape) -> (*batch, flat_dim). For one observation this equals gymnasium.spaces.flatten; the
    dataset loader and FlatDictObservation both call this function, so training and evaluation see the same vector.
    """
    if isinstance(space, gym.spaces.Dict):
        parts = [flatten_observation(sub, obs[key]) for key, sub in space.spaces.items()]
        return np.concatenate(parts, axis=-1)
    if isinstance(space, gym.spaces.Box):
        x = np.asarray(obs)
        batch = x.shape[: x.ndim - len(space.shape)]
        return x.reshape(*batch, int(np.prod(space.shape, dtype=np.int64)))
    raise TypeError(f"cannot flatten a {type(space).__name__} observation (Box and Dict of Boxes only)")


def minari_local(dataset_id: str) -> bool:
    """Whether a Minari dataset is in the local Minari directory (MINARI_DATASETS_PATH or ~/.minari/datasets)."""
    from minari.storage import get_dataset_path

    return (get_dataset_path(dataset_id) / "data").is_dir()


def open_minari(dataset_id: str, download: bool) -> Any:
    """The MinariDataset of an id, from MINARI_DATASETS_PATH (default ~/.minari/datasets); fetched when absent and
    `download` is set (Minari's own download, which needs the network)."""
    try:
        import minari
    except ImportError as e:  # pragma: no cover - minari is a pinned dependency
        raise DatasetError(f"minari:{dataset_id}: the minari package is not installed ({e})") from None
    if not download and not minari_local(dataset_id):
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
      `flatten_observation`; its time limit is the spec's max_episode_steps;
    - dims: the flattened dataset observation and the action; a DatasetError when they differ from the env's;
    - reference returns: the dataset's `ref_min_score`/`ref_max_score` when it has both (ref_source 'minari'),
      else D4RL's of the family (ref_source 'd4rl');
    - family: the id's env_name part (D4RL/<family>/..., mujoco/<family>/...), else guessed from the env id.
    """
    mds = mds if mds is not None else open_minari(dataset_id, download)
    name = f"minari:{dataset_id}"
    register_robotics()
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

    Observations are flattened with `flatten_observation` (the evaluation env's wrapper uses the same function);
    every episode's last step is a terminal when Minari says `terminations`, else a timeout.
    """
    mds = open_minari(dataset_id, download=True)
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
