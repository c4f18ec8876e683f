"""Gymnasium adapters that reproduce D4RL's AntMaze, Adroit and Kitchen environments.

Each module (`antmaze`, `adroit`, `kitchen`) exposes `make_env(spec, render_mode=None)` returning a flat-Box
environment in D4RL's observation layout, wrapped in a TimeLimit of `spec.max_episode_steps`, whose step `info`
always carries `success`; `restore_state(env, qpos, qvel, ...)` that puts the simulator in a dataset's logged state,
`logged_state(env)` its inverse (what D4RL stores under infos/), and `mj_data(env)` the MuJoCo data being stepped.
Modules are imported lazily so that importing this package does not pull in MuJoCo. `register_robotics()` makes
gymnasium-robotics' envs (which these adapters, Minari's recorded envs and bring-your-own ids build on) known to
gymnasium.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from types import ModuleType

DOMAIN_MODULES = {"antmaze": "antmaze", "adroit": "adroit", "kitchen": "kitchen"}


def domain_module(domain: str) -> ModuleType:
    """The adapter module (antmaze, adroit or kitchen) of a DatasetSpec.domain."""
    if domain not in DOMAIN_MODULES:
        raise KeyError(f"no domain adapter for {domain!r}; known: {', '.join(DOMAIN_MODULES)}")
    return importlib.import_module(f"{__name__}.{DOMAIN_MODULES[domain]}")


def register_robotics() -> None:
    """Register gymnasium-robotics' envs. Its import prints a notice to stderr (the Dense-v1 Adroit rewards changed in
    1.2.1; the Adroit adapter, o2o/domains/adroit.py, computes D4RL's own rewards, so it does not concern us): kept
    out of stderr, where an error must stay one line."""
    import gymnasium as gym

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
    except ImportError:  # pragma: no cover - a pinned dependency
        pass
