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
    from o2o.registry import get_spec

    return rollout(get_spec("hopper-medium-v2"), random_policy(3), 1500, seed=0)


@pytest.fixture(scope="session")
def hopper_file(tmp_path_factory, hopper_arrays) -> str:
    """Path of an HDF5 file holding hopper_arrays."""
    from o2o.generate import write_d4rl_hdf5

    path = tmp_path_factory.mktemp("data") / "hopper_tiny.hdf5"
    write_d4rl_hdf5(path, hopper_arrays, {"policy": "random"})
    return str(path)
