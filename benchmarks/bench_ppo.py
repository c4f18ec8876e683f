"""PPO throughput: env steps/s of whole PPO iterations and gradient updates/s, on one CPU thread.

  pytest benchmarks/bench_ppo.py --benchmark-only [--benchmark-columns=mean,ops,rounds]

- `test_env_step_hopper`: one Hopper-v5 step in o2o's vector env (1 env), random actions: the simulator's ceiling.
- `test_iteration_cleanrl`: one PPO iteration with CleanRL's defaults (1 env x 2048 steps, then 10 epochs of 32
  minibatches of 64): env steps/s = 2048 x ops.
- `test_iteration_behaviour`: the behaviour-policy settings of o2o.generate (4 envs x 512, minibatch 128).
- `test_iteration_packed_5_seeds`: the CleanRL iteration for 5 seeds packed (5 envs in one vector env, one
  batched update per minibatch): env steps/s over the 5 seeds = 5 x 2048 x ops.
- `test_update_cleanrl` / `test_update_unio4`: one actor+critic minibatch step (64x64 tanh, batch 64; Uni-O4's
  3x256 relu, batch 128): ops = updates/s.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from baselines import ppo
from o2o.envs import make_vector_env
from o2o.records import RunRecorder
from o2o.specs import get_spec

SPEC = get_spec("local:hopper-medium")


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def test_env_step_hopper(benchmark):
    envs = make_vector_env(SPEC, 1)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)

    def step():
        envs.step(rng.uniform(-1, 1, (1, 3)).astype(np.float32))

    benchmark.pedantic(step, rounds=2000, iterations=1, warmup_rounds=10)
    envs.close()


def _iteration(benchmark, tmp_path, seeds=(0,), **overrides):
    cfg = dataclasses.replace(ppo.PPOConfig(dataset=SPEC.name, eval_every=10**9, log_every=10**9,
                                            checkpoint_every=10**9), **overrides)
    cfg = dataclasses.replace(cfg, online_steps=cfg.num_envs * cfg.rollout_steps)
    recs = [RunRecorder(tmp_path / f"seed{s}", "ppo", SPEC.name, s, {}) for s in seeds]
    agent = ppo.make_agent(cfg, SPEC, seeds)

    def run():
        ppo.run_ppo(cfg, SPEC, agent, recorders=recs, evaluator=None)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info["env_steps_per_iteration"] = cfg.online_steps * len(seeds)


def test_iteration_cleanrl(benchmark, tmp_path):
    _iteration(benchmark, tmp_path)


def test_iteration_behaviour(benchmark, tmp_path):
    from behaviour.train import BEHAVIOUR_PPO

    _iteration(benchmark, tmp_path, **BEHAVIOUR_PPO)


def test_iteration_packed_5_seeds(benchmark, tmp_path):
    _iteration(benchmark, tmp_path, seeds=(0, 1, 2, 3, 4))


def _update(benchmark, cfg, batch):
    agent = ppo.make_agent(cfg, SPEC)
    g = torch.Generator().manual_seed(0)
    obs, act = torch.randn(1, batch, SPEC.obs_dim, generator=g), torch.randn(1, batch, SPEC.act_dim, generator=g)
    logp, adv, ret, v = (torch.randn(1, batch, generator=g) + c for c in (-3.0, 0.0, 0.0, 0.0))

    def step():
        ppo.ppo_update(agent, cfg, obs, act, logp, adv, ret, v)

    benchmark.pedantic(step, rounds=300, iterations=1, warmup_rounds=10)


def test_update_cleanrl(benchmark):
    _update(benchmark, ppo.PPOConfig(), 64)


def test_update_unio4(benchmark):
    cfg = dataclasses.replace(ppo.PPOConfig(), **ppo.presets(ppo.PPOConfig(preset="unio4"), SPEC))
    _update(benchmark, cfg, cfg.minibatch_size)
