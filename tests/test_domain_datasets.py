"""Each domain end to end: a D4RL-layout stand-in file in the d4rl cache loads, adapts, evaluates and `info`s."""

from __future__ import annotations

import json

import numpy as np
import pytest

from o2o import data
from o2o.consistency import check_dataset
from o2o.data import load_dataset
from o2o.evaluation import episode_success, evaluate
from o2o.generate import rollout
from o2o.hdf5 import write_d4rl_hdf5
from o2o.specs import get_spec

from .conftest import random_policy

NAMES = ["ant-medium-v2", "antmaze-umaze-v2", "antmaze-large-diverse-v0", "pen-human-v1", "door-cloned-v1",
         "kitchen-mixed-v0"]


def _place_stand_in(cache, spec, raw) -> None:
    """Write a stand-in under the file name d4rl itself would have cached, pinned in the cache's checksums.txt (it is
    not D4RL's file, whose sha256 the registry knows for most names)."""
    from o2o.download import sha256_file

    path = cache / spec.filename
    write_d4rl_hdf5(path, raw)
    with open(cache / "checksums.txt", "a") as f:
        f.write(f"{sha256_file(path)}  {spec.filename}\n")


@pytest.mark.parametrize("name", NAMES)
def test_stand_in_loads_adapts_and_evaluates(name, tmp_path, monkeypatch, capsys):
    spec = get_spec(name)
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    monkeypatch.delenv("O2O_D4RL_BASE_URL", raising=False)
    raw = rollout(spec, random_policy(spec.act_dim, 0.3), 120, seed=1)
    _place_stand_in(tmp_path, spec, raw)
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


RESTORE_NAMES = ["antmaze-umaze-v2", "antmaze-large-diverse-v2", "pen-human-v1", "door-cloned-v1", "hammer-expert-v1",
                 "relocate-human-v1", "kitchen-mixed-v0"]
EXTRAS = {"pen": ["desired_orien"], "door": ["door_body_pos"], "hammer": ["board_pos"],
          "relocate": ["obj_pos", "target_pos"]}


def _stand_in(name, tmp_path, monkeypatch, n=150, edit=None):
    """A D4RL-layout stand-in with D4RL's infos (random actions), written to the d4rl cache and loaded."""
    spec = get_spec(name)
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    monkeypatch.delenv("O2O_D4RL_BASE_URL", raising=False)
    raw = rollout(spec, random_policy(spec.act_dim, 0.5), n, seed=3)
    if edit is not None:
        edit(raw)
    _place_stand_in(tmp_path, spec, raw)
    return raw, load_dataset(name, progress=False)


@pytest.mark.parametrize("name", RESTORE_NAMES)
def test_consistency_check_restores_each_domain(name, tmp_path, monkeypatch, capsys):
    """Logged states (D4RL frame, Adroit targets) replayed in a freshly reset env give the logged next obs/reward."""
    spec = get_spec(name)
    raw, _ = _stand_in(name, tmp_path, monkeypatch)
    for key in ["qpos", "qvel", *EXTRAS.get(spec.family, [])]:
        assert f"infos/{key}" in raw
    if spec.domain == "antmaze":  # the logged xy is D4RL's: the first observation's xy
        np.testing.assert_allclose(raw["infos/qpos"][:, :2], raw["observations"][:, :2], atol=1e-6)
    assert data.main(["check", name, "--n", "60"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["missing_infos"] == [] and rep["checked"] == 60
    assert rep["fraction_within_atol"] == 1.0, rep
    assert rep["obs_abs_error_max"] < 1e-5 and rep["reward_abs_error_max"] < 1e-5


def test_consistency_check_fails_in_gym_frame(tmp_path, monkeypatch):
    """AntMaze: states logged in gymnasium's frame instead of D4RL's are caught (the frame transform matters)."""
    from o2o.domains import antmaze

    def to_gym(raw):
        raw["infos/qpos"][:, :2] = np.stack([antmaze.d4rl_to_gym_xy("umaze", xy) for xy in raw["infos/qpos"][:, :2]])

    _, ds = _stand_in("antmaze-umaze-v2", tmp_path, monkeypatch, edit=to_gym)
    rep = check_dataset(ds, n=40)
    assert rep["fraction_within_atol"] == 0.0 and rep["obs_abs_error_mean"] > 1.0


@pytest.mark.parametrize("name", ["door-cloned-v1", "pen-human-v1"])
def test_consistency_check_needs_adroit_targets(name, tmp_path, monkeypatch):
    """Adroit: without the logged target (door position / pen goal) the replay misses it, and says which is missing."""
    family = get_spec(name).family
    _, ds = _stand_in(name, tmp_path, monkeypatch, edit=lambda raw: [raw.pop(f"infos/{k}") for k in EXTRAS[family]])
    rep = check_dataset(ds, n=60)
    assert rep["missing_infos"] == EXTRAS[family]
    assert rep["fraction_within_atol"] < 0.5, rep
