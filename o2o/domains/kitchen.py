"""D4RL Kitchen (complete, partial, mixed; v0) on gymnasium-robotics FrankaKitchen-v1.

D4RL (d4rl/kitchen/kitchen_envs.py, adept_envs/franka/kitchen_multitask_v0.py) and what is reproduced here:

* Tasks: kitchen-complete-v0 and kitchen-partial-v0 use KitchenMicrowaveKettleLightSliderV0 (microwave, kettle,
  light switch, slide cabinet); kitchen-mixed-v0 uses KitchenMicrowaveKettleBottomBurnerLightV0 (microwave, kettle,
  bottom burner, light switch). 280 steps.
* Observation (60) = robot qpos (9) ++ object qpos (21) ++ goal (30). The goal is a 30-vector over the full qpos
  index space: zeros except OBS_ELEMENT_GOALS at OBS_ELEMENT_INDICES of every task of the dataset (all of them, also
  after completion; it is constant during an episode). gymnasium's `observation` (59) is robot qpos 9, robot qvel 9,
  object qpos 21, object qvel 20, with the same joint order as D4RL's model (panda joints 1-7, 2 fingers, 4 x (knob,
  burner), light switch, light, slide, left and right hinge, microwave, kettle free joint), so D4RL's first 30 dims
  are observation[0:9] ++ observation[18:39].
* Reward: for each task not yet completed, ||qpos[idx] - goal|| < 0.3 completes it; the step reward is the number
  of tasks completed at that step and completed tasks are removed (REMOVE_TASKS_WHEN_COMPLETE), so the return is
  the number of tasks done (0..4, the reference scores). gymnasium computes the same. The episode ends when all
  tasks are done (TERMINATE_ON_TASK_COMPLETE); `info["success"]` is exactly that. The *datasets* were relabelled
  with REMOVE_TASKS_WHEN_COMPLETE=False: their reward is the number of tasks in their goal state at each step,
  not the number newly completed.
* Actions: 9-dim in [-1, 1], joint velocity = 2 a, clipped to the velocity bounds; the position target sent to the
  position actuators is last observed robot qpos + velocity x 0.08 s (frame_skip 40 x timestep 0.002), clipped to
  the position bounds. gymnasium's FrankaRobot does the same computation with the same constants and actuators.
* Observation noise: D4RL's KitchenV0 sets robot_noise_ratio = 0.1 and applies it to robot *and* object qpos/qvel
  (U(-1, 1) x 0.1 x the config's noise amplitude: +-0.01 rad on robot joints); since the velocity control adds to
  the last *noisy* observation, the noise also enters the dynamics. gymnasium's defaults are 0.01 (robot) and
  0.0005 (objects). This adapter turns noise off (`noise_ratio=0`), so observations and control are noiseless;
  `noise_ratio=0.1` approximates D4RL's (gymnasium indexes the object amplitudes one joint earlier than D4RL does).
  D4RL also scored task completion on the noisy observation; gymnasium uses the true qpos.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np

from o2o.registry import DatasetSpec

N_ROBOT, N_OBJECT, GOAL_DIM = 9, 21, 30
BONUS_THRESH = 0.3
D4RL_NOISE_RATIO = 0.1

OBS_ELEMENT_INDICES: dict[str, tuple[int, ...]] = {
    "bottom burner": (11, 12),
    "top burner": (15, 16),
    "light switch": (17, 18),
    "slide cabinet": (19,),
    "hinge cabinet": (20, 21),
    "microwave": (22,),
    "kettle": (23, 24, 25, 26, 27, 28, 29),
}
OBS_ELEMENT_GOALS: dict[str, tuple[float, ...]] = {
    "bottom burner": (-0.88, -0.01),
    "top burner": (-0.92, -0.01),
    "light switch": (-0.69, -0.05),
    "slide cabinet": (0.37,),
    "hinge cabinet": (0.0, 1.45),
    "microwave": (-0.75,),
    "kettle": (-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06),
}
TASKS: dict[str, tuple[str, ...]] = {
    "complete": ("microwave", "kettle", "light switch", "slide cabinet"),
    "partial": ("microwave", "kettle", "light switch", "slide cabinet"),
    "mixed": ("microwave", "kettle", "bottom burner", "light switch"),
}


def tasks_of(name: str) -> tuple[str, ...]:
    """Tasks of a kitchen dataset name such as 'kitchen-mixed-v0' (or 'mixed')."""
    stem = name.split(":", 1)[-1]
    key = stem.split("-")[1] if stem.startswith("kitchen-") else stem
    if key not in TASKS:
        raise KeyError(f"not a kitchen dataset: {name!r}")
    return TASKS[key]


def goal_vector(tasks: Iterable[str]) -> np.ndarray:
    """D4RL's 30-dim goal: zeros except each task's OBS_ELEMENT_GOALS at its OBS_ELEMENT_INDICES."""
    goal = np.zeros(GOAL_DIM, dtype=np.float64)
    for task in tasks:
        goal[list(OBS_ELEMENT_INDICES[task])] = OBS_ELEMENT_GOALS[task]
    return goal


class D4RLKitchen(gym.Wrapper):
    """FrankaKitchen-v1 seen as D4RL's kitchen env: 60-dim flat obs with the goal, `success` when all tasks done."""

    def __init__(self, env: gym.Env, tasks: tuple[str, ...]) -> None:
        """Wrap a KitchenEnv whose tasks_to_complete are `tasks`."""
        super().__init__(env)
        self.tasks = tuple(tasks)
        self.goal = goal_vector(self.tasks)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(N_ROBOT + N_OBJECT + GOAL_DIM,),
                                                dtype=np.float64)
        self.action_space = env.action_space

    def _flat(self, obs: dict[str, Any]) -> np.ndarray:
        """D4RL's 60 dims from gymnasium's dict observation (keeps gymnasium's noise when enabled)."""
        o = obs["observation"]
        return np.concatenate([o[:N_ROBOT], o[2 * N_ROBOT:2 * N_ROBOT + N_OBJECT], self.goal])

    def d4rl_obs(self) -> np.ndarray:
        """D4RL's observation from the simulator state (noiseless)."""
        qpos = self.env.unwrapped.data.qpos
        return np.concatenate([qpos[:N_ROBOT], qpos[N_ROBOT:N_ROBOT + N_OBJECT], self.goal])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Reset to D4RL's initial kitchen state; info carries success=False."""
        obs, info = self.env.reset(seed=seed, options=options)
        info = dict(info)
        info.update(success=False, num_completed=0)
        return self._flat(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Step; reward = tasks newly completed, success (and termination) when every task is done."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        done = len(info.get("episode_task_completions", ())) == len(self.tasks)
        info.update(success=bool(done), num_completed=len(info.get("episode_task_completions", ())))
        return self._flat(obs), float(reward), bool(terminated or done), bool(truncated), info


def make_env(spec: DatasetSpec, render_mode: str | None = None, *, noise_ratio: float = 0.0) -> gym.Env:
    """D4RL's evaluation env of a kitchen dataset on gymnasium-robotics FrankaKitchen-v1 (noise off by default)."""
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import KitchenEnv

    tasks = tasks_of(spec.name)
    base = KitchenEnv(
        tasks_to_complete=list(tasks),
        terminate_on_tasks_completed=True,
        remove_task_when_completed=True,
        object_noise_ratio=noise_ratio,
        robot_noise_ratio=noise_ratio,
        render_mode=render_mode,
    )
    return gym.wrappers.TimeLimit(D4RLKitchen(base, tasks), max_episode_steps=spec.max_episode_steps)


def restore_state(env: gym.Env, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Set the kitchen's qpos (30) and qvel (29); returns D4RL's 60-dim observation of that state."""
    base = env.unwrapped
    base.robot_env.set_state(np.asarray(qpos, dtype=np.float64), np.asarray(qvel, dtype=np.float64))
    base.robot_env._get_obs()  # refresh the last robot qpos that the next velocity action is integrated from
    e = env
    while not isinstance(e, D4RLKitchen):
        if not hasattr(e, "env"):
            raise TypeError("not an env made by o2o.domains.kitchen.make_env")
        e = e.env
    return e.d4rl_obs()


def logged_state(env: gym.Env) -> dict[str, np.ndarray]:
    """The kitchen's qpos and qvel (infos/qpos, infos/qvel); restore_state's inverse."""
    data = env.unwrapped.robot_env.data
    return {"qpos": data.qpos.copy(), "qvel": data.qvel.copy()}


def mj_data(env: gym.Env) -> Any:
    """The MuJoCo data of the kitchen."""
    return env.unwrapped.robot_env.data
