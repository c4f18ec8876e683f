"""Gymnasium adapters that reproduce D4RL's AntMaze, Adroit and Kitchen environments.

Each module (`antmaze`, `adroit`, `kitchen`) exposes `make_env(spec, render_mode=None)` returning a flat-Box
environment in D4RL's observation layout, wrapped in a TimeLimit of `spec.max_episode_steps`, whose step `info`
always carries `success`; `restore_state(env, qpos, qvel, ...)` that puts the simulator in a dataset's logged state,
`logged_state(env)` its inverse (what D4RL stores under infos/), and `mj_data(env)` the MuJoCo data being stepped.
Modules are imported lazily so that importing this package does not pull in MuJoCo.
"""

from __future__ import annotations

import importlib
from types import ModuleType

DOMAIN_MODULES = {"antmaze": "antmaze", "adroit": "adroit", "kitchen": "kitchen"}


def domain_module(domain: str) -> ModuleType:
    """The adapter module (antmaze, adroit or kitchen) of a DatasetSpec.domain."""
    if domain not in DOMAIN_MODULES:
        raise KeyError(f"no domain adapter for {domain!r}; known: {', '.join(DOMAIN_MODULES)}")
    return importlib.import_module(f"{__name__}.{DOMAIN_MODULES[domain]}")
