"""Tests of the AntMaze, Adroit and Kitchen adapters (o2o.domains) against D4RL's layouts, frames and rules."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from o2o.domains import adroit, antmaze, kitchen
from o2o.registry import REGISTRY

MODULES = {"antmaze": antmaze, "adroit": adroit, "kitchen": kitchen}
NAMES = [n for n, s in REGISTRY.items() if s.domain in MODULES]
MAZES = ("umaze", "medium", "large")


def _make(name: str) -> gym.Env:
    spec = REGISTRY[name]
    return MODULES[spec.domain].make_env(spec)


@pytest.mark.parametrize("name", NAMES)
def test_dims_time_limit_and_success(name: str) -> None:
    spec = REGISTRY[name]
    env = _make(name)
    assert isinstance(env, gym.wrappers.TimeLimit)
    assert env._max_episode_steps == spec.max_episode_steps
    assert isinstance(env.observation_space, gym.spaces.Box)
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.observation_space.dtype in (np.float32, np.float64)
    assert env.action_space.shape == (spec.act_dim,)
    low, high = spec.action_bounds  # what o2o.data checks the dataset's actions against
    assert env.action_space.low.min() == low and env.action_space.high.max() == high
    obs, _ = env.reset(seed=0)
    assert obs.shape == (spec.obs_dim,) and np.all(np.isfinite(obs))
    for _ in range(2):
        obs, reward, terminated, truncated, info = env.step(np.zeros(spec.act_dim, dtype=np.float32))
        assert obs.shape == (spec.obs_dim,)
        assert isinstance(info["success"], bool)
        assert np.isfinite(reward)
    env.close()


def test_episode_lengths_follow_d4rl() -> None:
    assert REGISTRY["antmaze-umaze-v2"].max_episode_steps == 700
    assert REGISTRY["antmaze-large-play-v0"].max_episode_steps == 1000
    assert _make("pen-human-v1")._max_episode_steps == 100  # gymnasium registers 200
    assert _make("door-human-v1")._max_episode_steps == 200


# ---------------------------------------------------------------- AntMaze


@pytest.fixture(scope="module")
def maze_envs() -> dict[str, gym.Env]:
    names = {"umaze": "antmaze-umaze-v2", "medium": "antmaze-medium-play-v2", "large": "antmaze-large-diverse-v2"}
    return {m: _make(n) for m, n in names.items()}


@pytest.mark.parametrize("maze", MAZES)
def test_antmaze_frame_is_a_translation_of_d4rl(maze: str, maze_envs: dict[str, gym.Env]) -> None:
    expected = {"umaze": (4.0, 4.0), "medium": (10.0, 10.0), "large": (18.0, 12.0)}[maze]
    np.testing.assert_allclose(antmaze.frame_offset(maze), expected)
    base = maze_envs[maze].unwrapped
    # gymnasium's own reset and goal cells land on D4RL's start (origin) and goal.
    np.testing.assert_allclose(antmaze.gym_to_d4rl_xy(maze, base.maze.unique_reset_locations[0]), (0.0, 0.0))
    goal = {"umaze": (0.0, 8.0), "medium": (20.0, 20.0), "large": (32.0, 24.0)}[maze]
    np.testing.assert_allclose(antmaze.gym_to_d4rl_xy(maze, base.maze.unique_goal_locations[0]), goal)
    for name, g in antmaze.GOALS.items():
        if antmaze.maze_key(name) == maze:
            assert g == goal and antmaze.STARTS[name] == (0.0, 0.0)
    gym_goal, gym_start = antmaze.goal_and_start(maze, "gym")
    np.testing.assert_allclose(antmaze.gym_to_d4rl_xy(maze, gym_goal), goal)
    np.testing.assert_allclose(antmaze.gym_to_d4rl_xy(maze, gym_start), (0.0, 0.0))
    # round trip
    pts = np.random.default_rng(0).uniform(-30, 30, size=(50, 2))
    np.testing.assert_allclose(antmaze.d4rl_to_gym_xy(maze, antmaze.gym_to_d4rl_xy(maze, pts)), pts)
    # every D4RL cell (wall or free) maps onto the same kind of gymnasium cell
    rows = antmaze.MAZES[maze]
    for i, row in enumerate(rows):
        for j, ch in enumerate(row):
            d4rl_xy = np.array([4.0 * (j - 1), 4.0 * (i - 1)])  # D4RL: cell (i, j) at (4j - 4c, 4i - 4r), r = c = 1
            gi, gj = base.maze.cell_xy_to_rowcol(antmaze.d4rl_to_gym_xy(maze, d4rl_xy))
            assert (base.maze.maze_map[gi][gj] == 1) == (ch == "#"), (i, j)
    # the MuJoCo wall blocks sit exactly where D4RL puts its blocks (not mirrored)
    model = base.ant_env.model
    blocks = sorted(
        tuple(np.round(antmaze.gym_to_d4rl_xy(maze, model.geom_pos[g][:2]), 6))
        for g in range(model.ngeom)
        if (mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) or "").startswith("block_")
    )
    d4rl_blocks = sorted((4.0 * (j - 1), 4.0 * (i - 1)) for i, row in enumerate(rows) for j, ch in enumerate(row)
                         if ch == "#")
    assert blocks == d4rl_blocks


def test_antmaze_known_umaze_relation_is_a_mirror() -> None:
    # The often quoted d4rl = (x + 4, 4 - y) holds for gymnasium fed D4RL's map unreversed; ours is a translation.
    rows = antmaze.MAZES["umaze"]
    assert rows != tuple(reversed(rows))  # only r/g differ: the U is symmetric, the goal is not
    np.testing.assert_allclose(antmaze.gym_to_d4rl_xy("umaze", (-4.0, 4.0)), (0.0, 8.0))


@pytest.mark.parametrize("offset,expected", [(0.47, True), (0.53, False)])
def test_antmaze_success_radius_is_d4rls_half_metre(offset: float, expected: bool,
                                                    maze_envs: dict[str, gym.Env]) -> None:
    env = maze_envs["umaze"]
    goal = np.array(antmaze.GOALS["antmaze-umaze-v2"])
    env.reset(seed=0, options={"goal": goal})
    qpos = env.unwrapped.ant_env.model.qpos0.copy()
    qpos[:2] = goal + np.array([0.0, offset])
    obs = antmaze.restore_state(env, qpos, np.zeros(antmaze.ANT_NV))
    np.testing.assert_allclose(obs[:2], qpos[:2])
    obs, reward, terminated, _, info = env.step(np.zeros(8, dtype=np.float32))
    assert abs(info["distance"] - offset) < 0.01
    assert info["success"] is expected and reward == float(expected) and terminated is expected
    assert info["gym_success"] is False  # gymnasium's 0.45 radius says no in both cases


def test_antmaze_reset_goal_and_layout_follow_d4rl(maze_envs: dict[str, gym.Env]) -> None:
    env = maze_envs["medium"]
    nominal = np.array(antmaze.GOALS["antmaze-medium-play-v2"])
    goals = []
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        assert np.all(np.abs(obs[:2]) <= 0.1 + 1e-9)  # D4RL: reset cell (origin) + U(-0.1, 0.1)
        assert np.all(info["goal"] >= nominal) and np.all(info["goal"] <= nominal + 1.5)
        goals.append(info["goal"])
        ant = env.unwrapped.ant_env
        np.testing.assert_allclose(obs[2:15], ant.data.qpos[2:15])
        np.testing.assert_allclose(obs[15:], ant.data.qvel[:14])
        np.testing.assert_allclose(obs[:2], antmaze.gym_to_d4rl_xy("medium", ant.data.qpos[:2]))
    assert len({tuple(g) for g in goals}) == 5  # v2 redraws the goal at every reset
    v0 = _make("antmaze-medium-play-v0")
    assert len({tuple(v0.reset(seed=s)[1]["goal"]) for s in range(3)}) == 1  # v0 keeps one goal per env


def test_antmaze_ant_dynamics_are_d4rls(maze_envs: dict[str, gym.Env]) -> None:
    model = maze_envs["umaze"].unwrapped.ant_env.model
    assert model.opt.timestep == pytest.approx(0.02)
    assert maze_envs["umaze"].unwrapped.ant_env.frame_skip == 5
    np.testing.assert_allclose(model.actuator_gear[:, 0], 30.0)  # D4RL: ctrl 30 a, gear 1
    np.testing.assert_allclose(model.actuator_ctrlrange, np.tile([-1.0, 1.0], (8, 1)))
    np.testing.assert_allclose(model.geom_solimp[0, :3], (0.8, 0.8, 0.01))


def test_antmaze_restore_state_round_trip(maze_envs: dict[str, gym.Env]) -> None:
    env = maze_envs["large"]
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    qpos = env.unwrapped.ant_env.model.qpos0.copy()
    qpos[:2] = (12.0, 8.0)  # D4RL frame: a free cell (row 3, col 4)
    qpos[7:] += rng.uniform(-0.2, 0.2, 8)
    qvel = rng.normal(size=14)
    obs = antmaze.restore_state(env, qpos, qvel)
    np.testing.assert_allclose(obs, np.concatenate([qpos, qvel]))


# ---------------------------------------------------------------- Kitchen

D4RL_GOALS = {  # d4rl/kitchen/kitchen_envs.py OBS_ELEMENT_INDICES -> OBS_ELEMENT_GOALS, written out
    "microwave": {22: -0.75},
    "kettle": {23: -0.23, 24: 0.75, 25: 1.62, 26: 0.99, 27: 0.0, 28: 0.0, 29: -0.06},
    "light switch": {17: -0.69, 18: -0.05},
    "slide cabinet": {19: 0.37},
    "bottom burner": {11: -0.88, 12: -0.01},
}


@pytest.mark.parametrize("key", ["complete", "partial", "mixed"])
def test_kitchen_goal_vector_and_tasks(key: str) -> None:
    tasks = {"complete": ("microwave", "kettle", "light switch", "slide cabinet"),
             "partial": ("microwave", "kettle", "light switch", "slide cabinet"),
             "mixed": ("microwave", "kettle", "bottom burner", "light switch")}[key]
    assert kitchen.tasks_of(f"kitchen-{key}-v0") == tasks
    expected = np.zeros(30)
    for task in tasks:
        for idx, value in D4RL_GOALS[task].items():
            expected[idx] = value
    np.testing.assert_array_equal(kitchen.goal_vector(tasks), expected)
    from gymnasium_robotics.envs.franka_kitchen import kitchen_env as gk

    for task in kitchen.OBS_ELEMENT_INDICES:  # same table as gymnasium-robotics uses to score tasks
        np.testing.assert_array_equal(kitchen.OBS_ELEMENT_INDICES[task], gk.OBS_ELEMENT_INDICES[task])
        np.testing.assert_array_equal(kitchen.OBS_ELEMENT_GOALS[task], gk.OBS_ELEMENT_GOALS[task])


@pytest.fixture(scope="module")
def kitchen_env() -> gym.Env:
    return _make("kitchen-complete-v0")


def test_kitchen_observation_noise_off(kitchen_env: gym.Env) -> None:
    def rollout(seed: int) -> np.ndarray:
        obs, _ = kitchen_env.reset(seed=seed)
        out = [obs]
        for _ in range(3):
            obs, *_ = kitchen_env.step(np.zeros(9))
            # the observation is the simulator state itself, no jitter on top
            np.testing.assert_array_equal(obs, kitchen_env.env.d4rl_obs())
            out.append(obs)
        return np.array(out)

    a, b = rollout(0), rollout(1)
    np.testing.assert_array_equal(a, b)
    base = kitchen_env.unwrapped
    np.testing.assert_array_equal(a[0, :30], base.robot_env.init_qpos)
    np.testing.assert_array_equal(a[:, 30:], np.tile(kitchen.goal_vector(kitchen.TASKS["complete"]), (4, 1)))
    assert base.robot_env.robot_noise_ratio == 0.0 and base.object_noise_ratio == 0.0


def test_kitchen_reward_counts_new_completions_and_success(kitchen_env: gym.Env) -> None:
    kitchen_env.reset(seed=0)
    base = kitchen_env.unwrapped
    qpos, qvel = base.data.qpos.copy(), np.zeros(base.model.nv)
    qpos[22] = -0.75  # microwave open
    kitchen.restore_state(kitchen_env, qpos, qvel)
    _, r1, term1, _, info1 = kitchen_env.step(np.zeros(9))
    _, r2, _, _, info2 = kitchen_env.step(np.zeros(9))
    assert (r1, r2) == (1.0, 0.0) and not term1 and not info1["success"] and info2["num_completed"] == 1
    qpos = base.data.qpos.copy()
    for task in ("light switch", "slide cabinet"):
        qpos[list(kitchen.OBS_ELEMENT_INDICES[task])] = kitchen.OBS_ELEMENT_GOALS[task]
    kitchen.restore_state(kitchen_env, qpos, np.zeros(base.model.nv))
    _, r3, term3, _, info3 = kitchen_env.step(np.zeros(9))
    assert r3 == 2.0 and not term3 and not info3["success"]
    qpos = base.data.qpos.copy()
    qpos[23:30] = kitchen.OBS_ELEMENT_GOALS["kettle"]
    kitchen.restore_state(kitchen_env, qpos, np.zeros(base.model.nv))
    _, r4, term4, _, info4 = kitchen_env.step(np.zeros(9))
    assert r4 == 1.0 and term4 and info4["success"] and info4["num_completed"] == 4


# ---------------------------------------------------------------- Adroit


@pytest.mark.parametrize("family", ["pen", "door", "hammer", "relocate"])
def test_adroit_success_info_and_d4rl_reward(family: str) -> None:
    env = _make(f"{family}-human-v1")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    base = env.unwrapped
    for _ in range(3):
        _, reward, _, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        assert isinstance(info["success"], bool) and info["goal_achieved"] == info["success"]
        # gymnasium-robotics >= 1.2.1 pays +0.1 ||palm - object|| where D4RL charges -0.1 || . || (pen unchanged)
        d = base.data
        if family == "pen":
            near = 0.0
        elif family == "door":
            near = np.linalg.norm(d.site_xpos[base.grasp_site_id] - d.site_xpos[base.handle_site_id])
        else:
            near = np.linalg.norm(d.site_xpos[base.S_grasp_site_id] - d.xpos[base.obj_body_id])
        assert reward == pytest.approx(info["gym_reward"] - 0.2 * near, abs=1e-9)


def test_adroit_success_true_and_restore_state() -> None:
    env = _make("door-expert-v1")
    env.reset(seed=0)
    base = env.unwrapped
    state = base.get_env_state()
    fresh = _make("door-expert-v1")
    fresh.reset(seed=1)
    obs = adroit.restore_state(fresh, state["qpos"], state["qvel"], door_body_pos=state["door_body_pos"])
    np.testing.assert_allclose(obs, base._get_obs())
    qpos = state["qpos"].copy()
    qpos[base.door_hinge_addrs] = 1.45
    adroit.restore_state(env, qpos, state["qvel"])
    _, _, _, _, info = env.step(np.zeros(28, dtype=np.float32))
    assert info["success"] is True
    assert adroit.episode_success("door", [True] * 26) and not adroit.episode_success("door", [True] * 25)


def test_adroit_pen_drop_ends_episode_like_d4rl() -> None:
    env = _make("pen-cloned-v1")
    env.reset(seed=0)
    state = env.unwrapped.get_env_state()
    qpos = state["qpos"].copy()
    qpos[-6] = 0.2  # OBJTx moves the pen along world -z: 0.25 -> 0.05, below D4RL's 0.075 drop line
    adroit.restore_state(env, qpos, state["qvel"])
    _, reward, terminated, _, info = env.step(np.zeros(24, dtype=np.float32))
    assert terminated and reward == pytest.approx(info["gym_reward"]) and reward < -4.0


def test_antmaze_model_xml_is_checked_before_reuse(tmp_path, monkeypatch) -> None:
    """The D4RL ant XML is reused only when its content is the expected one, from a directory only we can write."""
    import hashlib
    import os
    import stat
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = antmaze.d4rl_ant_xml()
    expected = open(first).read()
    digest = hashlib.sha256(expected.encode()).hexdigest()[:16]
    planted = tmp_path / f"o2o_d4rl_ant_{digest}.xml"  # the predictable shared path another user could write
    planted.write_text("<mujoco><worldbody/></mujoco>")
    path = antmaze.d4rl_ant_xml()
    assert open(path).read() == expected and path != str(planted)
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    open(path, "w").write("<mujoco/>")  # damaged or replaced since: written afresh
    assert antmaze.d4rl_ant_xml() == path and open(path).read() == expected
    os.chmod(os.path.dirname(path), 0o777)  # a directory others can write is not used
    assert os.path.dirname(antmaze.d4rl_ant_xml()) != os.path.dirname(path)
