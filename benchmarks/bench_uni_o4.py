"""Throughput of every Uni-O4 stage at the official locomotion sizes, one seed and five seeds packed.

  pytest benchmarks/bench_uni_o4.py --benchmark-only [--benchmark-columns=mean,ops,rounds]

One benchmark per stage and pack size S ∈ {1, 5} (hopper dims, batch sizes of main.py, a 100k-transition synthetic
dataset): a critic update (IQL path: V 3×512, twin Q 2×1024, batch 512), an ensemble-BC update (4 × 3×256
policies, batch 512), a dynamics-model update (7 × 4×200 Swish, batch 256), an improvement update (4 members,
batch 512, advantage from the twin Q), and an AM-Q rollout of 4 members × 512 start states over 10 model steps (the
official horizon is 1000: multiply the time by 100), each for all S seeds at once. `ops` is packed updates
(rollouts) per second; `extra_info.seed_updates_per_s` = S × ops, the throughput per seed-run that packing buys.
Set O2O_BENCH_DEVICE=cuda to time a GPU; the default is the CPU with one thread.
"""

from __future__ import annotations

import os

import pytest
import torch

from algorithms import uni_o4 as U
from o2o.rng import MemberRNG
from o2o.specs import get_spec

DEVICE = torch.device(os.environ.get("O2O_BENCH_DEVICE", "cpu"))
OBS, ACT, N = 11, 3, 100_000  # hopper dims; a 100k-transition synthetic dataset
PACKS = (1, 5)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module")
def data() -> U.OfflineData:
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(N, OBS, generator=g).to(DEVICE)
    act = (torch.rand(N, ACT, generator=g) * 2 - 1).to(DEVICE)
    nxt = obs + 0.01 * torch.randn(N, OBS, generator=g).to(DEVICE)
    rew = torch.randn(N, generator=g).to(DEVICE)
    return U.OfflineData(obs=obs, act=act, rew=rew, next_obs=nxt, next_act=act, not_done=torch.ones(N, device=DEVICE),
                         mc_return=rew, raw_obs=obs, raw_next_obs=nxt, bc_index=torch.arange(N, device=DEVICE),
                         obs_mean=torch.zeros(OBS, device=DEVICE), obs_std=torch.ones(OBS, device=DEVICE),
                         normalizer=None, reward_fn=None)


@pytest.fixture(params=PACKS, ids=lambda s: f"S{s}")
def seeds(request) -> list[int]:
    torch.set_num_threads(1)
    return list(range(request.param))


def _time(benchmark, fn, seeds: list[int], rounds: int) -> None:
    def run() -> None:
        fn()
        _sync()

    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info["seeds"] = len(seeds)
    benchmark.extra_info["seed_updates_per_s"] = len(seeds) / benchmark.stats.stats.mean


def test_critic_step(benchmark, data, seeds):
    cfg = U.UniO4Config()  # official defaults (= hopper-medium preset for everything timed here)
    critic = U.ValueLearner(cfg, OBS, ACT, seeds).to(DEVICE)
    rng = MemberRNG(seeds, "bench", DEVICE)
    _time(benchmark, lambda: critic.update(data, rng.randint(N, cfg.critic_batch)), seeds, 10)


def test_bc_step(benchmark, data, seeds):
    cfg = U.UniO4Config()
    bc = U.BCEnsemble(U.make_policy(cfg, OBS, ACT, seeds).to(DEVICE), cfg)
    rng = MemberRNG(seeds, "bench", DEVICE)

    def step() -> None:
        idx = rng.randint(N, cfg.bc_batch)
        bc.update(data.obs[idx], data.act[idx])

    _time(benchmark, step, seeds, 20)


def test_dynamics_step(benchmark, data, seeds):
    cfg = U.UniO4Config()
    dyn = U.make_dynamics(cfg, OBS, ACT, seeds).to(DEVICE)
    opt = U.adam(dyn.parameters(), cfg.dyn_lr)
    x = torch.cat([data.raw_obs, data.act], -1)
    y = torch.cat([data.raw_next_obs - data.raw_obs, data.rew[:, None]], -1)
    rng = MemberRNG(seeds, "bench", DEVICE)

    def step() -> None:
        rows = rng.randint(N, cfg.dyn_members, cfg.dyn_batch)
        loss = U.dynamics_loss(dyn, x[rows], y[rows], cfg.dyn_weight_decay, cfg.dyn_logvar_coef)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()

    _time(benchmark, step, seeds, 20)


def test_improvement_step(benchmark, data, seeds):
    cfg = U.UniO4Config()
    critic = U.ValueLearner(cfg, OBS, ACT, seeds).to(DEVICE).requires_grad_(False)
    imp = U.Improver(U.make_policy(cfg, OBS, ACT, seeds).to(DEVICE), critic, cfg, seeds)
    rng = MemberRNG(seeds, "bench", DEVICE)
    _time(benchmark, lambda: imp.update(data.obs[rng.randint(N, cfg.improve_batch)], 0), seeds, 10)


def test_am_q_rollout_10_steps(benchmark, data, seeds):
    cfg = U.UniO4Config()
    critic = U.ValueLearner(cfg, OBS, ACT, seeds).to(DEVICE)
    policy = U.make_policy(cfg, OBS, ACT, seeds).to(DEVICE)
    dyn = U.make_dynamics(cfg, OBS, ACT, seeds).to(DEVICE)
    done = U.termination_fn(get_spec("hopper-medium-v2"))
    rng = MemberRNG(seeds, "bench", DEVICE)
    start = data.raw_obs[rng.randint(N, cfg.ope_batch)]
    _time(benchmark, lambda: U.am_q(policy, critic.q_value, dyn, start, data.normalize, 10, done, rng,
                                    cfg.n_policies), seeds, 3)
