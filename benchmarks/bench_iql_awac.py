"""One gradient update of IQL and of AWAC (batch 256, HalfCheetah dims 17/6, CORL's network sizes, CPU, 1 thread).

Run: .venv/bin/pytest benchmarks/bench_iql_awac.py --benchmark-only --benchmark-columns=mean,ops,rounds
(updates/s = the `ops` column). The buffer sample is included, as in a training step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines import awac, iql
from o2o.buffer import ReplayBuffer

OBS_DIM, ACT_DIM, N = 17, 6, 100_000


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def buffer() -> ReplayBuffer:
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, N)
    buf.add(rng.normal(size=(N, OBS_DIM)), rng.uniform(-1, 1, (N, ACT_DIM)), rng.normal(size=N),
            rng.normal(size=(N, OBS_DIM)), (rng.random(N) < 0.01).astype(np.float32))
    return buf


@pytest.mark.parametrize("deterministic", [False, True], ids=["gaussian", "deterministic"])
def test_iql_update(benchmark, buffer, deterministic):
    torch.manual_seed(0)
    cfg = iql.IQLConfig(deterministic_actor=deterministic)
    agent = iql.make_agent(OBS_DIM, ACT_DIM, cfg, torch.device("cpu"))
    for _ in range(5):
        iql.update(agent, buffer.sample(cfg.batch_size), cfg)
    metrics = benchmark(lambda: iql.update(agent, buffer.sample(cfg.batch_size), cfg))
    assert torch.isfinite(metrics["q_loss"])


def test_awac_update(benchmark, buffer):
    torch.manual_seed(0)
    cfg = awac.AWACConfig()
    agent = awac.make_agent(OBS_DIM, ACT_DIM, cfg, torch.device("cpu"))
    for _ in range(5):
        awac.update(agent, buffer.sample(cfg.batch_size), cfg)
    metrics = benchmark(lambda: awac.update(agent, buffer.sample(cfg.batch_size), cfg))
    assert torch.isfinite(metrics["critic_loss"])
