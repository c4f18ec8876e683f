"""Minari as a dataset source, on Minari datasets made here with Minari's own DataCollector (a few episodes each, in a
private MINARI_DATASETS_PATH): Hopper-v5, AntMaze, an Adroit hand and FrankaKitchen. Each is loaded as
`minari:<id>`, checked against its evaluation env, normalised, and run end to end through IQL's smoke budget."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from o2o import data as D
from o2o.dataset import DatasetError
from o2o.envs import make_env
from o2o.minari_source import flatten_observation
from o2o.registry import MINARI_DATASETS, REF_SCORES, family_of, normalized_score
from o2o.specs import get_spec

minari = pytest.importorskip("minari")

KITCHEN_TASKS = ["microwave", "kettle", "light switch", "slide cabinet"]  # D4RL's complete/partial goal
HOPPER_REF = (-20.0, 3000.0)
ANTMAZE_REF = (0.0, 20.0)

# id -> (domain, flattened obs dim, reference source); pen uses an id outside the registry (family from its name)
CASES = {
    "mujoco/hopper/medium-v0": ("locomotion", 11, "minari"),
    "D4RL/antmaze/umaze-v1": ("antmaze", 2 + 2 + 27, "minari"),
    "D4RL/pen/probe-v2": ("adroit", 45, "d4rl"),
    "D4RL/kitchen/complete-v2": ("kitchen", 2 * (1 + 7 + 2 + 1) + 59, "d4rl"),
}


def _robotics() -> None:
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)


def collect(dataset_id: str, env: gym.Env, episodes: int, **create: object) -> None:
    """A Minari dataset of `episodes` random-action episodes, episode e reset with seed e."""
    collector = minari.DataCollector(env, **create.pop("collector", {}))
    collector.action_space.seed(0)
    for e in range(episodes):
        collector.reset(seed=e)
        done = False
        while not done:
            _, _, term, trunc, _ = collector.step(collector.action_space.sample())
            done = term or trunc
    collector.create_dataset(dataset_id=dataset_id, author="o2o-bench tests", author_email="tests@o2o",
                             code_permalink="tests/test_minari.py", algorithm_name="random",
                             description="random actions", **create)
    collector.close()


class DropLast(minari.StepDataCallback):
    """Stores observations without their last dim: a dataset whose layout differs from its env's."""

    def __call__(self, env, obs, info, action=None, rew=None, terminated=None, truncated=None):  # noqa: ANN001
        step = super().__call__(env, obs, info, action, rew, terminated, truncated)
        step["observation"] = step["observation"][:-1]
        return step


@pytest.fixture(scope="module", autouse=True)
def minari_root(tmp_path_factory: pytest.TempPathFactory):
    """The four datasets (and one with a mismatching layout) in a private MINARI_DATASETS_PATH."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari's advice on metadata, gymnasium's on AntMaze-v4's age
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        _robotics()
        collect("mujoco/hopper/medium-v0", gym.make("Hopper-v5"), 5, ref_min_score=HOPPER_REF[0],
                ref_max_score=HOPPER_REF[1])
        # Minari's AntMaze: a continuing task without goal resets, and an eval env spec of its own (here: a shorter
        # time limit, so a run evaluated in the collection env would show 40-step episodes)
        maze = gym.make("AntMaze_UMaze-v4", max_episode_steps=40, continuing_task=True, reset_target=False)
        collect("D4RL/antmaze/umaze-v1", maze, 2, eval_env=replace(maze.spec, max_episode_steps=30),
                ref_min_score=ANTMAZE_REF[0], ref_max_score=ANTMAZE_REF[1])
        collect("D4RL/pen/probe-v2", gym.make("AdroitHandPen-v1", max_episode_steps=30), 2)
        collect("D4RL/kitchen/complete-v2",
                gym.make("FrankaKitchen-v1", max_episode_steps=30, tasks_to_complete=KITCHEN_TASKS,
                         remove_task_when_completed=False, terminate_on_tasks_completed=False), 2)
        hopper = gym.make("Hopper-v5")
        short = gym.spaces.Box(-np.inf, np.inf, (10,), np.float64)
        collect("mujoco/hopper/dropped-v0", hopper, 1, collector={"observation_space": short,
                                                                  "step_data_callback": DropLast})
        yield root


def test_flatten_observation_is_gymnasiums_order_for_one_or_many():
    """Nested Dicts flatten depth first in the space's key order, with or without batch axes."""
    space = gym.spaces.Dict({
        "observation": gym.spaces.Box(-1, 1, (3,)),
        "achieved_goal": gym.spaces.Dict({"kettle": gym.spaces.Box(-1, 1, (2, 2)),
                                          "microwave": gym.spaces.Box(-1, 1, (1,))}),
    })
    space.seed(0)
    samples = [space.sample() for _ in range(4)]
    one = flatten_observation(space, samples[0])
    assert one.shape == (8,) and np.array_equal(one, gym.spaces.flatten(space, samples[0]))
    assert np.array_equal(one[:4], samples[0]["achieved_goal"]["kettle"].ravel())  # 'achieved_goal' sorts first
    batch = {"observation": np.stack([s["observation"] for s in samples]),
             "achieved_goal": {k: np.stack([s["achieved_goal"][k] for s in samples]) for k in ("kettle", "microwave")}}
    many = flatten_observation(space, batch)
    assert many.shape == (4, 8)
    assert np.array_equal(many, np.stack([gym.spaces.flatten(space, s) for s in samples]))


def test_family_of_minari_names_and_the_registry():
    """Every registered Minari id is of the four domains; a Minari name's family (and domain) is its env_name part."""
    assert len(MINARI_DATASETS) == 12 + 6 + 12 + 3
    assert family_of("minari:D4RL/pen/human-v2") == "pen"
    assert family_of("minari:mujoco/walker2d/simple-v0") == "walker2d"
    with pytest.raises(KeyError):
        family_of("minari:mujoco/humanoid/medium-v0")
    from analysis.names import domain_of

    assert domain_of("minari:D4RL/door/human-v2") == "adroit"  # from the name: no dataset needed


@pytest.mark.parametrize("dataset_id", list(CASES))
def test_loads_in_the_layout_of_its_evaluation_env(dataset_id: str):
    """The dataset's first observation is exactly what the evaluation env returns on the same reset."""
    domain, obs_dim, _ = CASES[dataset_id]
    ds = D.load_dataset(f"minari:{dataset_id}")
    assert ds.spec.source == "minari" and ds.spec.domain == domain and ds.obs_dim == obs_dim
    env = make_env(ds.spec)
    try:
        assert env.observation_space.shape == (obs_dim,) and env.action_space.shape == (ds.act_dim,)
        obs, _ = env.reset(seed=0)  # episode 0 was collected from reset(seed=0)
        assert np.array_equal(obs.astype(np.float32), ds.observations[0])
        _, _, _, _, info = env.step(env.action_space.sample())
        assert ("success" in info) == (domain != "locomotion")
    finally:
        env.close()
    mds = minari.load_dataset(dataset_id)
    assert len(ds) == mds.total_steps and int(ds.episode_ends.sum()) == mds.total_episodes
    assert np.array_equal(ds.observations[1:5], ds.next_observations[:4])  # within episode 0


def test_antmaze_is_evaluated_in_the_env_minari_recovers():
    """The eval env spec, not the collection env, decides the evaluation env (here its 30-step time limit)."""
    spec = get_spec("minari:D4RL/antmaze/umaze-v1")
    recovered = minari.load_dataset("D4RL/antmaze/umaze-v1").recover_environment(eval_env=True)
    assert spec.max_episode_steps == recovered.spec.max_episode_steps == 30
    assert spec.env_id == "AntMaze_UMaze-v4" and json.loads(spec.env_spec)["kwargs"]["continuing_task"] is True
    env = make_env(spec)
    env.reset(seed=1)
    steps, done = 0, False
    while not done:
        *_, term, trunc, _ = env.step(env.action_space.sample())
        steps, done = steps + 1, term or trunc
    assert steps == 30


def test_scores_use_the_dataset_reference_returns_else_d4rl():
    """Minari's ref_min/max_score when the dataset has them (as minari.get_normalized_score), else D4RL's."""
    hopper = get_spec("minari:mujoco/hopper/medium-v0")
    assert (hopper.ref_source, hopper.ref_min, hopper.ref_max) == ("minari", *HOPPER_REF)
    mds = minari.load_dataset("mujoco/hopper/medium-v0")
    for ret in (0.0, 1234.5):
        assert normalized_score(hopper, ret) == pytest.approx(100 * minari.get_normalized_score(mds, ret))
    pen = get_spec("minari:D4RL/pen/probe-v2")
    assert (pen.ref_source, (pen.ref_min, pen.ref_max)) == ("d4rl", REF_SCORES["pen"])
    with pytest.raises(ValueError):  # Minari itself cannot normalise it
        minari.get_normalized_score(minari.load_dataset("D4RL/pen/probe-v2"), 1.0)
    assert D.describe(D.load_dataset("minari:D4RL/kitchen/complete-v2"))["ref_source"] == "d4rl"


def test_layout_mismatch_fails_in_one_line(capsys: pytest.CaptureFixture[str]):
    """A dataset whose flattened observation differs from its env's is refused, in one line, by every entry point."""
    with pytest.raises(DatasetError, match=r"flatten to 10/3 dims but its evaluation env Hopper-v5 gives 11/3"):
        D.load_dataset("minari:mujoco/hopper/dropped-v0")
    assert D.main(["info", "minari:mujoco/hopper/dropped-v0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "10/3 dims" in err
    from baselines import iql

    with pytest.raises(SystemExit) as stop:
        iql.main(["--dataset", "minari:mujoco/hopper/dropped-v0", "--budget", "smoke"])
    assert stop.value.code == 2 and "10/3 dims" in capsys.readouterr().err


def test_absent_dataset_is_one_line_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """get_spec reads only the local copy: an absent id is a KeyError saying how to fetch it."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(KeyError, match="minari download D4RL/door/human-v2"):
        get_spec("minari:D4RL/door/human-v2")


def test_list_marks_minari_ids(capsys: pytest.CaptureFixture[str]):
    """`python -m o2o.data list` shows every Minari id of the four domains, marked minari, with local copies."""
    assert D.main(["list"]) == 0
    lines = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines() if ln.startswith("minari:")}
    assert set(lines) == {f"minari:{i}" for i in MINARI_DATASETS}
    assert lines["minari:D4RL/kitchen/complete-v2"][1:] == ["minari", "kitchen", "FrankaKitchen-v1", "yes"]
    assert lines["minari:D4RL/kitchen/mixed-v2"][-1] == "FrankaKitchen-v1"  # not here


@pytest.mark.parametrize("dataset_id", list(CASES))
def test_iql_smoke_run_end_to_end(dataset_id: str, tmp_path: Path):
    """`python baselines/iql.py --dataset minari:<id> --budget smoke` trains, evaluates offline and online, and
    its record says which reference returns the scores use."""
    from baselines import iql

    domain, _, source = CASES[dataset_id]
    out = tmp_path / "run"
    rc = iql.main(["--dataset", f"minari:{dataset_id}", "--budget", "smoke", "--out", str(out), "--eval-episodes", "1",
                   "--online-steps", "40", "--hidden-dim", "32", "--batch-size", "64", "--device", "cpu"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["dataset"] == f"minari:{dataset_id}"
    spec = get_spec(f"minari:{dataset_id}")
    assert summary["extra"]["score_reference"] == {"source": source, "ref_min": spec.ref_min, "ref_max": spec.ref_max}
    assert summary["offline_score"] is not None and summary["online_score"] is not None
    assert (summary["last_success_rate"] is None) == (domain == "locomotion")
