"""Throughput of every Uni-O4 stage at the official locomotion sizes (hopper dims, batch sizes of main.py).

  pytest benchmarks/bench_uni_o4.py --benchmark-only [--benchmark-columns=mean,ops,rounds]

One benchmark per stage: a critic update (IQL path: V 3×512, twin Q 2×1024, batch 512), an ensemble-BC update
(4 × 3×256 policies, batch 512), a dynamics-model update (7 × 4×200 Swish, batch 256), an improvement update
(4 members, batch 512, advantage from the twin Q), and an AM-Q rollout of 4 members × 512 start states over
10 model steps (the official horizon is 1000: multiply the time by 100). `ops` is updates (rollouts) per second.
Set O2O_BENCH_DEVICE=cuda to time a GPU; the default is the CPU with one thread.
"""

from __future__ import annotations

import os

import pytest
import torch

from algorithms import uni_o4 as U

DEVICE = torch.device(os.environ.get("O2O_BENCH_DEVICE", "cpu"))
OBS, ACT, N = 11, 3, 100_000  # hopper dims; a 100k-transition synthetic dataset


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = U.UniO4Config()  # official defaults (= hopper-medium preset for everything timed here)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    obs = torch.randn(N, OBS, device=DEVICE)
    act = torch.rand(N, ACT, device=DEVICE) * 2 - 1
    nxt = obs + 0.01 * torch.randn(N, OBS, device=DEVICE)
    rew = torch.randn(N, device=DEVICE)
    data = U.OfflineData(obs=obs, act=act, rew=rew, next_obs=nxt, next_act=act, not_done=torch.ones(N, device=DEVICE),
                         mc_return=rew, raw_obs=obs, raw_next_obs=nxt, bc_index=torch.arange(N, device=DEVICE),
                         obs_mean=torch.zeros(OBS, device=DEVICE), obs_std=torch.ones(OBS, device=DEVICE),
                         normalizer=None, reward_fn=None)
    critic = U.ValueLearner(cfg, OBS, ACT).to(DEVICE)
    policy = U.PolicyEnsemble(cfg.n_policies, OBS, ACT, cfg.pi_hidden, cfg.pi_depth, cfg.pi_activation).to(DEVICE)
    dyn = U.DynamicsEnsemble(OBS, ACT, cfg.dyn_members, cfg.dyn_elites, cfg.dyn_hidden, cfg.dyn_weight_decay
                             ).to(DEVICE)
    return cfg, g, data, critic, policy, dyn


def test_critic_step(benchmark, setup):
    cfg, g, data, critic, *_ = setup

    def step():
        critic.update(data, U.sample_index(N, cfg.critic_batch, g, DEVICE))
        _sync()

    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=1)


def test_bc_step(benchmark, setup):
    cfg, g, data, _, policy, _ = setup
    bc = U.BCEnsemble(policy, cfg)

    def step():
        idx = U.sample_index(N, cfg.bc_batch, g, DEVICE)
        bc.update(data.obs[idx], data.act[idx])
        _sync()

    benchmark.pedantic(step, rounds=20, iterations=1, warmup_rounds=2)


def test_dynamics_step(benchmark, setup):
    cfg, g, data, *_, dyn = setup
    opt = torch.optim.Adam(dyn.parameters(), lr=cfg.dyn_lr)
    x = torch.cat([data.raw_obs, data.act], -1)
    y = torch.cat([data.raw_next_obs - data.raw_obs, data.rew[:, None]], -1)

    def step():
        rows = torch.randint(0, N, (dyn.members, cfg.dyn_batch), generator=g, device=DEVICE)
        U.dynamics_update(dyn, opt, x[rows], y[rows], cfg.dyn_logvar_coef)
        _sync()

    benchmark.pedantic(step, rounds=20, iterations=1, warmup_rounds=2)


def test_improvement_step(benchmark, setup):
    cfg, g, data, critic, policy, _ = setup
    imp = U.Improver(policy, critic, cfg)
    critic.requires_grad_(False)

    def step():
        imp.update(data.obs[U.sample_index(N, cfg.improve_batch, g, DEVICE)], 0)
        _sync()

    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=1)
    critic.requires_grad_(True)


def test_am_q_rollout_10_steps(benchmark, setup):
    cfg, g, data, critic, policy, dyn = setup
    done = U.termination_fn(__import__("o2o.registry", fromlist=["get_spec"]).get_spec("hopper-medium-v2"))
    start = data.raw_obs[:cfg.ope_batch]

    def rollout():
        U.am_q(policy, critic.q_value, dyn, start, data.normalize, 10, done, g)
        _sync()

    benchmark.pedantic(rollout, rounds=3, iterations=1, warmup_rounds=1)
