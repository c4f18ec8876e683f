"""Each domain end to end: a D4RL-layout stand-in file in the d4rl cache loads, adapts, evaluates and `info`s."""

from __future__ import annotations

import numpy as np
import pytest

from o2o import data
from o2o.data import load_dataset
from o2o.evaluation import episode_success, evaluate
from o2o.generate import rollout, write_d4rl_hdf5
from o2o.registry import get_spec

from .conftest import random_policy

NAMES = ["ant-medium-v2", "antmaze-umaze-v2", "antmaze-large-diverse-v0", "pen-human-v1", "door-cloned-v1",
         "kitchen-mixed-v0"]


@pytest.mark.parametrize("name", NAMES)
def test_stand_in_loads_adapts_and_evaluates(name, tmp_path, monkeypatch, capsys):
    spec = get_spec(name)
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    monkeypatch.delenv("O2O_D4RL_BASE_URL", raising=False)
    raw = rollout(spec, random_policy(spec.act_dim, 0.3), 120, seed=1)
    write_d4rl_hdf5(tmp_path / spec.filename, raw)  # the file name d4rl itself would have cached
    ds = load_dataset(name, progress=False)
    assert ds.obs_dim == spec.obs_dim and ds.act_dim == spec.act_dim and len(ds) == 120
    assert data.main(["info", name]) == 0
    out = capsys.readouterr().out
    assert f"obs_dim          {spec.obs_dim}" in out and "episodes" in out
    res = evaluate(lambda o: np.zeros((len(o), spec.act_dim)), spec, n_episodes=2, seed=0, num_envs=2)
    assert np.isfinite(res.return_mean) and (res.success_rate is None) == (not spec.has_success)
    assert res.success_rate is None or 0 <= res.success_rate <= 1
    assert (res.lengths <= spec.max_episode_steps).all()


def test_adroit_success_needs_d4rl_step_counts():
    pen, door = get_spec("pen-human-v1"), get_spec("door-human-v1")
    assert not episode_success(pen, 20) and episode_success(pen, 21)
    assert not episode_success(door, 25) and episode_success(door, 26)
    assert episode_success(get_spec("antmaze-umaze-v2"), 1) and not episode_success(get_spec("kitchen-mixed-v0"), 0)
