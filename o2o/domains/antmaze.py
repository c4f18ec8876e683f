"""D4RL AntMaze (umaze / medium / large, v0 and v2) rebuilt on gymnasium-robotics' AntMaze-v5.

What D4RL's evaluation env does (d4rl/locomotion/{ant,maze_env,goal_reaching_env}.py and the registrations in
d4rl/locomotion/__init__.py), and how it is reproduced here:

* Mazes: the eval envs use U_MAZE_TEST, BIG_MAZE_TEST and HARDEST_MAZE_TEST, which have the same walls as the
  data-collection maps U_MAZE, BIG_MAZE, HARDEST_MAZE and a single goal cell. Cells are 4 m (`maze_size_scaling=4`).
* Frame: D4RL puts cell (row i, col j) at world (4 j - 4 c, 4 i - 4 r), with (r, c) = (1, 1) the reset cell, so the
  ant starts at the origin and +y runs *down* the rows. gymnasium-robotics centres the maze and runs +y *up* the
  rows. Feeding gymnasium D4RL's map as is gives a mirror image of D4RL's world (the often quoted umaze relation
  d4rl = (x + 4, 4 - y) is that mirror: fine for positions but it flips the sign of the y velocity and mirrors the
  torso quaternion and the legs, so the other 27 observation dims would not match). We therefore hand gymnasium the
  map with its rows reversed; the two worlds are then a pure translation, d4rl_xy = gym_xy + offset, with
  offset = (2 W - 2 - 4 c, 2 H - 2 - 4 r) for a map of H rows and W columns:
  umaze (5x5) (4, 4), medium (8x8) (10, 10), large (9 rows x 12 cols) (18, 12).
* Ant: D4RL's ant.xml differs from gymnasium's in timestep (0.02 vs 0.01), actuation (gear 1, ctrlrange +-30 behind
  a NormalizedBoxEnv that maps [-1, 1] to +-30, i.e. torque = 30 a, vs gear 150) and the default contact solimp
  (.8 .8 .01). We load gymnasium's ant.xml with those three changes (gear 30 on a [-1, 1] ctrlrange is the same torque);
  the compiled model then equals D4RL's and steps bit-identically in MuJoCo 3. frame_skip is 5 in both (dt = 0.1 s).
* Observation (29): D4RL's `expose_all_qpos=True` obs = qpos[:15] ++ qvel[:14], i.e. ant xy in D4RL's frame,
  then qpos[2:15] (z, quaternion w x y z, 8 hinge angles in hip_1, ankle_1, ..., hip_4, ankle_4 order) and qvel[:14].
  gymnasium's AntEnv-v5 with `include_cfrc_ext_in_observation=False` and the positions kept gives the same 27 dims
  after xy in the same order (same joint tree); only xy needs the frame shift. The goal is not in the observation
  (D4RL's eval envs set `eval=True`, which drops the goal direction).
* Reset: qpos = init + U(-0.1, 0.1) on every coordinate (xy included, at the reset cell), qvel = 0.1 N(0, 1)
  (`non_zero_reset=False`). gymnasium's own reset (cell centre + U(-1, 1) m, no joint noise) is replaced by this.
* Goal: `goal_sampler` takes the goal cell's centre plus U(0, 1) + U(0, 0.5) m on each axis (so always towards
  +x, +y of the centre, up to 1.5 m), then clips at 0. v0 draws it once per env instance; v2
  (`v2_resets=True`) redraws it at every reset. `GOALS` holds the noiseless goal cell centres.
* Reward and end: sparse reward 1.0 when ||xy - goal|| <= 0.5 (gymnasium uses 0.45). With `eval=True` D4RL also
  sets done=True at that moment, so evaluation episodes *do* end on success; the return is then 1 for a success and
  0 otherwise, and the normalized score (ref 0..1) is 100 x the success rate. `terminate_on_success=False` keeps
  going instead (the reward then counts steps spent at the goal). `info["success"]` is the same 0.5 test.
* Episode length: 700 steps (umaze) and 1000 (medium, large), from `spec.max_episode_steps`.

Remaining differences: MuJoCo 3 instead of mujoco-py/MuJoCo 2.0 (contact solver details), and randomness comes from
gymnasium's seeded generator instead of numpy's global one.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import xml.etree.ElementTree as ET
from typing import Any

import gymnasium as gym
import numpy as np

from o2o.registry import DatasetSpec

SCALE = 4.0  # maze_size_scaling of every D4RL antmaze
SUCCESS_RADIUS = 0.5  # D4RL goal_reaching_env: reward/done when within 0.5
RESET_QPOS_NOISE = 0.1  # AntEnv.reset_model: qpos + U(-0.1, 0.1)
RESET_QVEL_STD = 0.1  # AntEnv.reset_model: qvel + 0.1 N(0, 1)
GOAL_NOISE = (1.0, 0.5)  # goal = cell + U(0, 0.25 * SCALE) + U(0, 0.5 * 0.25 * SCALE) per axis
ANT_NQ, ANT_NV = 15, 14

# D4RL's maze walls in D4RL's row order ('#' wall, '.' free, 'r' reset cell, 'g' goal cell of the eval map).
MAZES: dict[str, tuple[str, ...]] = {
    "umaze": (  # U_MAZE / U_MAZE_TEST
        "#####",
        "#r..#",
        "###.#",
        "#g..#",
        "#####",
    ),
    "medium": (  # BIG_MAZE / BIG_MAZE_TEST
        "########",
        "#r.##..#",
        "#..#...#",
        "##...###",
        "#..#...#",
        "#.#..#.#",
        "#...#.g#",
        "########",
    ),
    "large": (  # HARDEST_MAZE / HARDEST_MAZE_TEST
        "############",
        "#r...#.....#",
        "#.##.#.#.#.#",
        "#......#...#",
        "#.####.###.#",
        "#..#.#.....#",
        "##.#.#.#.###",
        "#..#...#.g.#",
        "############",
    ),
}
D4RL_MAP_NAMES = {"umaze": "u-maze", "medium": "big-maze", "large": "hardest-maze"}
_ALIASES = {"u-maze": "umaze", "big-maze": "medium", "hardest-maze": "large", "umaze": "umaze", "medium": "medium",
            "large": "large"}


def maze_key(name: str) -> str:
    """'umaze' | 'medium' | 'large' from a maze key, D4RL map name or dataset name such as 'antmaze-large-play-v2'."""
    stem = name.split(":", 1)[-1]
    if stem in _ALIASES:
        return _ALIASES[stem]
    parts = stem.split("-")
    if len(parts) >= 2 and parts[0] == "antmaze" and parts[1] in _ALIASES:
        return _ALIASES[parts[1]]
    raise KeyError(f"not an antmaze maze or dataset: {name!r}")


def _cell(maze: str, mark: str) -> tuple[int, int]:
    """(row, col) of the first cell marked `mark` in D4RL's map."""
    rows = MAZES[maze_key(maze)]
    return next((i, j) for i, row in enumerate(rows) for j, ch in enumerate(row) if ch == mark)


def d4rl_cell_xy(maze: str, cell: tuple[int, int]) -> np.ndarray:
    """Centre of D4RL cell (row, col) in D4RL's frame (origin at the reset cell, +y down the rows)."""
    r, c = _cell(maze, "r")
    return np.array([(cell[1] - c) * SCALE, (cell[0] - r) * SCALE])


def gym_maze_map(maze: str) -> list[list[int | str]]:
    """The map handed to gymnasium: D4RL's rows reversed so that gymnasium's world is a translation of D4RL's."""
    code = {"#": 1, ".": 0, "r": "r", "g": "g"}
    return [[code[ch] for ch in row] for row in reversed(MAZES[maze_key(maze)])]


def gym_cell_xy(maze: str, cell: tuple[int, int]) -> np.ndarray:
    """Centre of gymnasium cell (row, col) of `gym_maze_map` in gymnasium's frame (Maze.cell_rowcol_to_xy)."""
    rows = MAZES[maze_key(maze)]
    height, width = len(rows) * SCALE, len(rows[0]) * SCALE
    return np.array([(cell[1] + 0.5) * SCALE - width / 2, height / 2 - (cell[0] + 0.5) * SCALE])


def frame_offset(maze: str) -> np.ndarray:
    """d4rl_xy - gym_xy (a constant): (4, 4) umaze, (10, 10) medium, (18, 12) large."""
    n_rows = len(MAZES[maze_key(maze)])
    cell = (1, 1)
    return d4rl_cell_xy(maze, cell) - gym_cell_xy(maze, (n_rows - 1 - cell[0], cell[1]))


def gym_to_d4rl_xy(maze_name: str, xy: np.ndarray) -> np.ndarray:
    """Positions (..., 2) from gymnasium's frame to D4RL's."""
    return np.asarray(xy, dtype=np.float64) + frame_offset(maze_name)


def d4rl_to_gym_xy(maze_name: str, xy: np.ndarray) -> np.ndarray:
    """Positions (..., 2) from D4RL's frame to gymnasium's."""
    return np.asarray(xy, dtype=np.float64) - frame_offset(maze_name)


def _dataset_names() -> list[str]:
    """The twelve D4RL antmaze dataset names."""
    keys = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
    return [f"antmaze-{k}-{v}" for k in keys for v in ("v0", "v2")]


# Noiseless evaluation goal (centre of the eval map's goal cell) and start of each dataset, in D4RL's frame.
GOALS: dict[str, tuple[float, float]] = {
    n: tuple(float(v) for v in d4rl_cell_xy(maze_key(n), _cell(maze_key(n), "g"))) for n in _dataset_names()
}
STARTS: dict[str, tuple[float, float]] = {n: (0.0, 0.0) for n in _dataset_names()}


def goal_and_start(name: str, frame: str = "d4rl") -> tuple[np.ndarray, np.ndarray]:
    """(goal, start) cell centres of a dataset or maze in frame 'd4rl' or 'gym'."""
    maze = maze_key(name)
    goal, start = d4rl_cell_xy(maze, _cell(maze, "g")), d4rl_cell_xy(maze, _cell(maze, "r"))
    if frame == "gym":
        return d4rl_to_gym_xy(maze, goal), d4rl_to_gym_xy(maze, start)
    if frame != "d4rl":
        raise ValueError(f"frame must be 'd4rl' or 'gym', not {frame!r}")
    return goal, start


def sample_d4rl_goal(name: str, rng: np.random.Generator) -> np.ndarray:
    """A goal drawn as D4RL's MazeEnv.goal_sampler does, in D4RL's frame."""
    goal, _ = goal_and_start(name)
    noise = rng.uniform(0.0, GOAL_NOISE[0], size=2) + rng.uniform(0.0, GOAL_NOISE[1], size=2)
    return np.maximum(goal + noise, 0.0)


def is_success(xy: np.ndarray, goal: np.ndarray) -> bool:
    """D4RL's goal test: within SUCCESS_RADIUS (0.5) of the goal (both in the same frame)."""
    return bool(np.linalg.norm(np.asarray(xy) - np.asarray(goal)) <= SUCCESS_RADIUS)


def d4rl_ant_xml() -> str:
    """Path of gymnasium's ant.xml changed to D4RL's dynamics (timestep 0.02, torque 30 a, solimp .8 .8 .01)."""
    from gymnasium.envs.mujoco import ant_v5

    src = os.path.join(os.path.dirname(ant_v5.__file__), "assets", "ant.xml")
    tree = ET.parse(src)
    root = tree.getroot()
    root.find("option").set("timestep", "0.02")
    root.find("default").find("geom").set("solimp", ".8 .8 .01")
    for motor in root.find("actuator"):
        motor.set("gear", "30")
        motor.set("ctrlrange", "-1.0 1.0")
    text = ET.tostring(root, encoding="unicode")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = _private_dir()
    path = os.path.join(folder, f"o2o_d4rl_ant_{digest}.xml")
    if _read_own_file(path) != text:  # missing, replaced or damaged: written afresh
        fd, tmp = tempfile.mkstemp(prefix="o2o_d4rl_ant_", suffix=".xml.tmp", dir=folder)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path


def _private_dir() -> str:
    """<tmp>/o2o-<uid>, a directory only this user can write (created 0700); a fresh one if that is not so."""
    path = os.path.join(tempfile.gettempdir(), f"o2o-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return tempfile.mkdtemp(prefix="o2o-")
    return path


def _read_own_file(path: str) -> str | None:
    """Text of a regular file (not followed through a link), None when it is missing or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd) as f:
        try:
            return f.read()
        except (OSError, UnicodeDecodeError):
            return None


class D4RLAntMaze(gym.Wrapper):
    """gymnasium AntMaze-v5 seen as D4RL's eval env: 29-dim obs in D4RL's frame, D4RL reset, goal and reward."""

    def __init__(self, env: gym.Env, dataset: str, goal_noise: bool = True, resample_goal: bool = True,
                 terminate_on_success: bool = True) -> None:
        """Wrap gymnasium's AntMazeEnv built on gym_maze_map(dataset)."""
        super().__init__(env)
        self.maze = maze_key(dataset)
        self.dataset = dataset
        self.goal_noise = goal_noise
        self.resample_goal = resample_goal
        self.terminate_on_success = terminate_on_success
        self.goal: np.ndarray | None = None  # D4RL frame
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(ANT_NQ + ANT_NV,), dtype=np.float64)
        self.action_space = env.action_space
        n_rows = len(MAZES[self.maze])
        gi, gj = _cell(self.maze, "g")
        ri, rj = _cell(self.maze, "r")
        self._gym_goal_cell = np.array([n_rows - 1 - gi, gj])
        self._gym_reset_cell = np.array([n_rows - 1 - ri, rj])

    @property
    def ant(self) -> Any:
        """The inner gymnasium AntEnv holding model and data."""
        return self.env.unwrapped.ant_env

    def xy(self) -> np.ndarray:
        """Ant torso xy in D4RL's frame."""
        return gym_to_d4rl_xy(self.maze, self.ant.data.qpos[:2].copy())

    def d4rl_obs(self) -> np.ndarray:
        """D4RL's observation: qpos[:15] (xy in D4RL's frame) ++ qvel[:14]."""
        data = self.ant.data
        return np.concatenate([self.xy(), data.qpos[2:ANT_NQ], data.qvel[:ANT_NV]]).astype(np.float64)

    def set_goal(self, goal: np.ndarray) -> None:
        """Set the goal (D4RL frame) in the wrapper and in gymnasium's env (target site)."""
        self.goal = np.asarray(goal, dtype=np.float64).copy()
        base = self.env.unwrapped
        base.goal = d4rl_to_gym_xy(self.maze, self.goal)
        base.update_target_site_pos()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """D4RL reset (reset cell, U(-0.1, 0.1) qpos, 0.1 N(0,1) qvel; goal per v0/v2 or options["goal"], D4RL xy)."""
        options = dict(options or {})
        base = self.env.unwrapped
        base.reset(seed=seed, options={"goal_cell": self._gym_goal_cell, "reset_cell": self._gym_reset_cell})
        rng = base.np_random
        if options.get("goal") is not None:
            goal = np.asarray(options["goal"], dtype=np.float64)
        elif self.goal is None or self.resample_goal:
            goal = sample_d4rl_goal(self.maze, rng) if self.goal_noise else goal_and_start(self.maze)[0]
        else:
            goal = self.goal
        self.set_goal(goal)
        ant = self.ant
        qpos = ant.model.qpos0.copy()
        qpos[:2] = d4rl_to_gym_xy(self.maze, goal_and_start(self.maze)[1])
        qpos = qpos + rng.uniform(-RESET_QPOS_NOISE, RESET_QPOS_NOISE, size=ant.model.nq)
        qvel = RESET_QVEL_STD * rng.standard_normal(ant.model.nv)
        ant.set_state(qpos, qvel)
        obs = self.d4rl_obs()
        return obs, {"success": is_success(obs[:2], self.goal), "goal": self.goal.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Step the ant; sparse D4RL reward (1 within 0.5 of the goal), ending the episode there by default."""
        _, _, _, truncated, info = self.env.step(action)
        obs = self.d4rl_obs()
        success = is_success(obs[:2], self.goal)
        info = dict(info)
        info["gym_success"] = info.get("success")
        info.update(success=success, goal=self.goal.copy(), distance=float(np.linalg.norm(obs[:2] - self.goal)))
        return obs, float(success), bool(success and self.terminate_on_success), bool(truncated), info


def make_env(spec: DatasetSpec, render_mode: str | None = None, *, goal_noise: bool = True,
             terminate_on_success: bool = True) -> gym.Env:
    """D4RL's evaluation env of an antmaze dataset on gymnasium-robotics AntMaze-v5 (see module docstring)."""
    from gymnasium_robotics.envs.maze.ant_maze_v5 import AntMazeEnv

    base = AntMazeEnv(
        render_mode=render_mode,
        maze_map=gym_maze_map(spec.name),
        reward_type="sparse",
        continuing_task=True,  # ending and goal handling are done by the wrapper
        reset_target=False,
        xml_file=d4rl_ant_xml(),
        include_cfrc_ext_in_observation=False,
    )
    env = D4RLAntMaze(base, spec.name, goal_noise=goal_noise, resample_goal=not spec.name.endswith("-v0"),
                      terminate_on_success=terminate_on_success)
    return gym.wrappers.TimeLimit(env, max_episode_steps=spec.max_episode_steps)


def _find(env: gym.Env) -> D4RLAntMaze:
    """The D4RLAntMaze wrapper inside an env made by make_env."""
    e = env
    while not isinstance(e, D4RLAntMaze):
        if not hasattr(e, "env"):
            raise TypeError("not an env made by o2o.domains.antmaze.make_env")
        e = e.env
    return e


def restore_state(env: gym.Env, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Set the ant to a D4RL state (qpos 15 with xy in D4RL's frame, qvel 14); returns the D4RL observation."""
    wrapper = _find(env)
    qpos = np.asarray(qpos, dtype=np.float64).copy()
    qpos[:2] = d4rl_to_gym_xy(wrapper.maze, qpos[:2])
    wrapper.ant.set_state(qpos[:ANT_NQ], np.asarray(qvel, dtype=np.float64)[:ANT_NV])
    return wrapper.d4rl_obs()


def logged_state(env: gym.Env) -> dict[str, np.ndarray]:
    """The state as D4RL logs it (infos/qpos with xy in D4RL's frame, infos/qvel); restore_state's inverse."""
    wrapper = _find(env)
    qpos = wrapper.ant.data.qpos[:ANT_NQ].copy()
    qpos[:2] = wrapper.xy()
    return {"qpos": qpos, "qvel": wrapper.ant.data.qvel[:ANT_NV].copy()}


def mj_data(env: gym.Env) -> Any:
    """The MuJoCo data of the ant."""
    return _find(env).ant.data
