"""One gradient update of IQL and of AWAC (batch 256, HalfCheetah dims 17/6, CORL's network sizes).

CPU with one thread by default; O2O_BENCH_DEVICE=cuda times a GPU (each timed call ends with a synchronize).

Run: .venv/bin/pytest benchmarks/bench_iql_awac.py --benchmark-only --benchmark-columns=mean,ops,rounds
(updates/s = the `ops` column). The buffer sample is included, as in a training step.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from baselines import awac, iql
from o2o.buffer import ReplayBuffer

OBS_DIM, ACT_DIM, N = 17, 6, 100_000
DEVICE = torch.device(os.environ.get("O2O_BENCH_DEVICE", "cpu"))


def timed(fn):
    """`fn` followed by a device synchronize, so a GPU step is timed to its end."""
    def run():
        out = fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out
    return run


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def buffer() -> ReplayBuffer:
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, N, DEVICE)
    buf.add(rng.normal(size=(N, OBS_DIM)), rng.uniform(-1, 1, (N, ACT_DIM)), rng.normal(size=N),
            rng.normal(size=(N, OBS_DIM)), (rng.random(N) < 0.01).astype(np.float32))
    return buf


@pytest.mark.parametrize("deterministic", [False, True], ids=["gaussian", "deterministic"])
def test_iql_update(benchmark, buffer, deterministic):
    torch.manual_seed(0)
    cfg = iql.IQLConfig(deterministic_actor=deterministic)
    agent = iql.make_agent(OBS_DIM, ACT_DIM, cfg, DEVICE)
    for _ in range(5):
        iql.update(agent, buffer.sample(cfg.batch_size), cfg)
    metrics = benchmark(timed(lambda: iql.update(agent, buffer.sample(cfg.batch_size), cfg)))
    assert torch.isfinite(metrics["q_loss"])


def test_awac_update(benchmark, buffer):
    torch.manual_seed(0)
    cfg = awac.AWACConfig()
    agent = awac.make_agent(OBS_DIM, ACT_DIM, cfg, DEVICE)
    for _ in range(5):
        awac.update(agent, buffer.sample(cfg.batch_size), cfg)
    metrics = benchmark(timed(lambda: awac.update(agent, buffer.sample(cfg.batch_size), cfg)))
    assert torch.isfinite(metrics["critic_loss"])
