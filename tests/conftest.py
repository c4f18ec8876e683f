"""Shared fixtures: tiny D4RL-layout datasets generated on the fly from the real environments."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# Tests never read or write the user's generated datasets (~/.o2o/datasets): they make tiny ones of their own.
os.environ["O2O_DATA_DIR"] = tempfile.mkdtemp(prefix="o2o-test-data-")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread per test: on 2 shared cores, torch's default threading makes small updates 10x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_policy(act_dim: int, scale: float = 1.0):
    """A uniform random policy in the rollout() signature."""
    def policy(obs: np.ndarray, rng: np.random.Generator):
        a = rng.uniform(-scale, scale, size=(len(obs), act_dim)).astype(np.float32)
        return a, np.zeros(len(obs), np.float32)

    return policy


@pytest.fixture(scope="session")
def hopper_arrays() -> dict[str, np.ndarray]:
    """1500 transitions of a random policy on the hopper evaluation env, in D4RL's layout."""
    from o2o.generate import rollout
    from o2o.specs import get_spec

    return rollout(get_spec("hopper-medium-v2"), random_policy(3), 1500, seed=0)


@pytest.fixture(scope="session")
def hopper_file(tmp_path_factory, hopper_arrays) -> str:
    """Path of an HDF5 file holding hopper_arrays."""
    from o2o.hdf5 import write_d4rl_hdf5

    path = tmp_path_factory.mktemp("data") / "hopper_tiny.hdf5"
    write_d4rl_hdf5(path, hopper_arrays, {"policy": "random"})
    return str(path)


def train_agent(mod, cfg, data: dict[str, np.ndarray], steps: int, seeds=(0,), max_action: float = 1.0):
    """Build `mod`'s agent for `seeds` as o2o.loop does and take `steps` offline gradient steps on `data`.

    mod: an algorithm module (baselines.iql, ...); data: the buffer's fields obs, act, rew, next_obs, done as numpy
    arrays, already as the engine's transforms leave them; batches of cfg.batch_size rows per seed from the engine's
    stream ("batches"). steps = 0 returns the freshly built agent. The Setup's spec is hopper's with `data`'s dims
    (the agents read only the dims, max_action and the observations from the Setup).
    """
    import dataclasses

    import torch

    from o2o import loop
    from o2o.buffer import ReplayBuffer
    from o2o.rng import MemberRNG
    from o2o.specs import get_spec

    seeds = list(seeds)
    obs_dim, act_dim = data["obs"].shape[1], data["act"].shape[1]
    spec = dataclasses.replace(get_spec("hopper-medium-v2"), obs_dim=obs_dim, act_dim=act_dim)
    setup = loop.Setup(seeds, spec, obs_dim, act_dim, max_action, torch.device("cpu"),
                       np.asarray(data["obs"], np.float32))
    agent = mod.algorithm(cfg).build(cfg, setup)
    buffer, rng = ReplayBuffer(data, len(seeds), 0), MemberRNG(seeds, "batches")
    for _ in range(steps):
        agent.update(buffer.sample(rng, cfg.batch_size), online=False)
    return agent


def bandit_data(n: int = 2048) -> dict[str, np.ndarray]:
    """One state, actions from two modes ±0.5 (σ 0.05); reward 1 for the +0.5 mode, 0 for the other; terminal."""
    rng = np.random.default_rng(1)
    good = rng.random(n) < 0.5
    act = np.where(good, 0.5, -0.5) + 0.05 * rng.standard_normal(n)
    return {"obs": np.zeros((n, 1)), "act": act[:, None], "rew": good.astype(np.float32),
            "next_obs": np.zeros((n, 1)), "done": np.ones(n)}


def chain_data(n: int = 4, reward: float = 1.0) -> dict[str, np.ndarray]:
    """Chain of n one-hot states; a = +0.5 advances (`reward` and terminal from the last state), a = −0.5 stays."""
    eye, rows = np.eye(n), []
    for s in range(n):
        last = s == n - 1
        rows.append((eye[s], [0.5], reward * last, eye[min(s + 1, n - 1)], float(last)))
        rows.append((eye[s], [-0.5], 0.0, eye[s], 0.0))
    return {k: np.array([r[i] for r in rows], np.float32)
            for i, k in enumerate(("obs", "act", "rew", "next_obs", "done"))}


def random_data(obs_dim: int, act_dim: int, n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """n random transitions in the buffer's layout."""
    rng = np.random.default_rng(seed)
    return {"obs": rng.standard_normal((n, obs_dim)), "act": rng.uniform(-1, 1, (n, act_dim)),
            "rew": rng.standard_normal(n), "next_obs": rng.standard_normal((n, obs_dim)), "done": np.zeros(n)}
