"""D4RL Adroit (pen, door, hammer, relocate; hand_dapg v1 datasets) on gymnasium-robotics AdroitHand*-v1.

Observations: gymnasium-robotics' `_get_obs` builds the same vectors, in the same order, as D4RL's
hand_manipulation_suite `get_obs` (pen 45 = qpos[:-6], pen xyz, pen qvel 6, pen and target orientation, their
differences; door 39 = qpos[1:-2], latch, hinge, palm, handle, palm - handle, open flag; hammer 46 = qpos[:-6],
clipped qvel[-6:], palm, hammer xyz and euler, nail, nail impact; relocate 39 = qpos[:-6], palm - ball,
palm - target, ball - target). Models (frame_skip 5, timestep 0.002), actuator gains and action scaling
([-1, 1] to the control range) are the same; D4RL's v1 episode lengths are pen 100 (gymnasium registers 200) and
200 for the others, taken from `spec.max_episode_steps`.

Success: gymnasium's `info["success"]` is D4RL's `goal_achieved` (pen: within 0.075 and orientation > 0.95;
door: hinge >= 1.35; hammer: nail within 0.01 of its goal; relocate: ball within 0.1 of target); it is copied to
`info["goal_achieved"]` too. D4RL's `evaluate_success` counts an *episode* as a success when goal_achieved held on
more than 20 (pen) or 25 (door, hammer, relocate) steps: see `episode_success`.

Rewards. gymnasium-robotics 1.4.2 prints, on import:
  "AdroitHandRelocateDense-v1, AdroitHandHammerDense-v1, AdroitHandDoorDense-v1 environment's reward functions
  were updated in v1.2.1 without an environment version update. Therefore, use gymnasium-robotics==1.2.0 for v1
  reproducibility or use v2 in gymnasium-robotics>=1.4.3." (Gymnasium-Robotics PR #220)
In 1.4.2 the dense door, hammer and relocate rewards start with +0.1 ||palm - handle/hammer/ball|| where D4RL has
-0.1 || . ||: the agent is paid for keeping its hand *away* from the object. Returns of gymnasium's v1 dense
reward are therefore not D4RL returns, and normalizing them with D4RL's REF_MIN/REF_MAX scores (computed with
D4RL's reward) gives numbers that are not comparable with published D4RL scores (the gap grows with how far the
palm stays from the object over the episode). Pen's dense reward is unchanged. This adapter therefore recomputes
D4RL's dense reward from the simulator state after each step (`d4rl_reward=True`, the default; gymnasium's value
is kept in `info["gym_reward"]`); with `d4rl_reward=False` the env returns gymnasium's v1 reward unchanged.

Episode end: D4RL's pen env ends the episode (done=True, after the -5 penalty) when the pen falls below z = 0.075;
gymnasium never terminates. `terminate_on_drop=True` (default) restores D4RL's ending. door, hammer and relocate
never terminate in either.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from o2o.registry import DatasetSpec

ENV_IDS = {
    "pen": "AdroitHandPen-v1",
    "door": "AdroitHandDoor-v1",
    "hammer": "AdroitHandHammer-v1",
    "relocate": "AdroitHandRelocate-v1",
}
OBS_DIMS = {"pen": 45, "door": 39, "hammer": 46, "relocate": 39}
EPISODE_SUCCESS_STEPS = {"pen": 20, "door": 25, "hammer": 25, "relocate": 25}  # D4RL evaluate_success: sum > N
PEN_DROP_Z = 0.075
# Extra state a D4RL dataset stores per family (infos/<key>) -> (model array, index attribute of the env) it sets.
STATE_TARGETS: dict[str, dict[str, tuple[str, str]]] = {
    "pen": {"desired_orien": ("body_quat", "target_obj_body_id")},
    "door": {"door_body_pos": ("body_pos", "door_body_id")},
    "hammer": {"board_pos": ("body_pos", "target_body_id")},
    "relocate": {"obj_pos": ("body_pos", "obj_body_id"), "target_pos": ("site_pos", "target_obj_site_id")},
}


def _norm(v: np.ndarray) -> float:
    """Euclidean norm as a float."""
    return float(np.linalg.norm(v))


def d4rl_reward(family: str, env: Any) -> float:
    """D4RL's dense (ADD_BONUS_REWARDS) reward of the current simulator state of an unwrapped AdroitHand env."""
    d = env.data
    if family == "pen":
        obj = d.xpos[env.obj_body_id]
        dist = _norm(obj - d.site_xpos[env.eps_ball_site_id])
        orien = (d.site_xpos[env.obj_t_site_id] - d.site_xpos[env.obj_b_site_id]) / env.pen_length
        target = (d.site_xpos[env.tar_t_site_id] - d.site_xpos[env.tar_b_site_id]) / env.tar_length
        sim = float(np.dot(orien, target))
        r = -dist + sim
        r += 10.0 if dist < 0.075 and sim > 0.9 else 0.0
        r += 50.0 if dist < 0.075 and sim > 0.95 else 0.0
        r -= 5.0 if obj[2] < PEN_DROP_Z else 0.0
        return r
    if family == "door":
        hinge = float(d.qpos[env.door_hinge_addrs])
        r = -0.1 * _norm(d.site_xpos[env.grasp_site_id] - d.site_xpos[env.handle_site_id])
        r -= 0.1 * (hinge - 1.57) ** 2
        r -= 1e-5 * float(np.sum(d.qvel**2))
        r += (2.0 if hinge > 0.2 else 0.0) + (8.0 if hinge > 1.0 else 0.0) + (10.0 if hinge > 1.35 else 0.0)
        return r
    if family == "hammer":
        obj, palm, tool = d.xpos[env.obj_body_id], d.site_xpos[env.S_grasp_site_id], d.site_xpos[env.tool_site_id]
        nail, goal = d.site_xpos[env.target_obj_site_id], d.site_xpos[env.goal_site_id]
        nail_dist = _norm(nail - goal)
        r = -0.1 * _norm(palm - obj) - _norm(tool - nail) - 10.0 * nail_dist - 1e-2 * _norm(d.qvel.ravel())
        r += 2.0 if obj[2] > 0.04 and tool[2] > 0.04 else 0.0
        r += (25.0 if nail_dist < 0.020 else 0.0) + (75.0 if nail_dist < 0.010 else 0.0)
        return r
    if family == "relocate":
        obj, palm = d.xpos[env.obj_body_id], d.site_xpos[env.S_grasp_site_id]
        target = d.site_xpos[env.target_obj_site_id]
        obj_dist = _norm(obj - target)
        r = -0.1 * _norm(palm - obj)
        if obj[2] > 0.04:
            r += 1.0 - 0.5 * _norm(palm - target) - 0.5 * obj_dist
        r += (10.0 if obj_dist < 0.1 else 0.0) + (20.0 if obj_dist < 0.05 else 0.0)
        return r
    raise KeyError(f"not an adroit family: {family!r}")


def episode_success(family: str, successes: np.ndarray) -> bool:
    """D4RL's episode-level success: goal achieved on more than 20 (pen) / 25 (others) steps."""
    return bool(np.sum(np.asarray(successes, dtype=bool)) > EPISODE_SUCCESS_STEPS[family])


class D4RLAdroit(gym.Wrapper):
    """AdroitHand*-v1 with D4RL's dense reward, pen-drop ending and `success`/`goal_achieved` in info."""

    def __init__(self, env: gym.Env, family: str, use_d4rl_reward: bool = True, terminate_on_drop: bool = True) -> None:
        """Wrap an unwrapped AdroitHand*-v1 env of `family`."""
        super().__init__(env)
        self.family = family
        self.use_d4rl_reward = use_d4rl_reward
        self.terminate_on_drop = terminate_on_drop and family == "pen"

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Reset the env; info carries success=False."""
        obs, info = self.env.reset(seed=seed, options=options)
        info = dict(info)
        info.setdefault("success", False)
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Step; reward is D4RL's dense reward unless disabled; pen ends when dropped."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        base = self.env.unwrapped
        info = dict(info)
        success = bool(info.get("success", False))
        info.update(success=success, goal_achieved=success, gym_reward=float(reward))
        if self.use_d4rl_reward:
            reward = d4rl_reward(self.family, base)
        if self.terminate_on_drop and base.data.xpos[base.obj_body_id][2] < PEN_DROP_Z:
            terminated = True
        return obs, float(reward), bool(terminated), bool(truncated), info


def make_env(spec: DatasetSpec, render_mode: str | None = None, *, d4rl_reward: bool = True,
             terminate_on_drop: bool = True) -> gym.Env:
    """D4RL's evaluation env of an adroit dataset on gymnasium-robotics' dense AdroitHand*-v1."""
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    base = gym.make(ENV_IDS[spec.family], render_mode=render_mode, disable_env_checker=True).unwrapped
    env = D4RLAdroit(base, spec.family, use_d4rl_reward=d4rl_reward, terminate_on_drop=terminate_on_drop)
    return gym.wrappers.TimeLimit(env, max_episode_steps=spec.max_episode_steps)


def _family(env: gym.Env) -> str:
    """Adroit family of an env made by make_env (or of a bare AdroitHand env)."""
    e = env
    while not isinstance(e, D4RLAdroit):
        if not hasattr(e, "env"):
            name = type(env.unwrapped).__name__.lower()
            return next(f for f in ENV_IDS if f in name)
        e = e.env
    return e.family


def restore_state(env: gym.Env, qpos: np.ndarray, qvel: np.ndarray, **extra: np.ndarray) -> np.ndarray:
    """Set qpos/qvel and the family's STATE_TARGETS keys (others are ignored) as D4RL stores them; returns the obs."""
    base = env.unwrapped
    for key, (array, index) in STATE_TARGETS[_family(env)].items():
        if key in extra:
            getattr(base.model, array)[getattr(base, index)] = np.asarray(extra[key], dtype=np.float64)
    base.set_state(np.asarray(qpos, dtype=np.float64), np.asarray(qvel, dtype=np.float64))
    return base._get_obs()


def logged_state(env: gym.Env) -> dict[str, np.ndarray]:
    """qpos, qvel and the family's STATE_TARGETS under D4RL's infos/ names; restore_state's inverse."""
    base = env.unwrapped
    state = {"qpos": base.data.qpos.copy(), "qvel": base.data.qvel.copy()}
    for key, (array, index) in STATE_TARGETS[_family(env)].items():
        state[key] = np.array(getattr(base.model, array)[getattr(base, index)], dtype=np.float64)
    return state


def mj_data(env: gym.Env) -> Any:
    """The MuJoCo data of the hand."""
    return env.unwrapped.data
