"""pytest-benchmark of one CQL update (batch 256, Hopper dimensions, CORL's locomotion networks) (CPU by default).

Run: `.venv/bin/pytest benchmarks/bench_cql.py --benchmark-only -p no:cacheprovider` (ops = updates/s).
CQL is compute-bound: each update pushes B·(1 + 3N) = 7936 state-action rows through both critics forward and
backward (about 13 GFLOP with 3 hidden layers of 256), so one CPU core gives a few updates per second.
O2O_BENCH_DEVICE=cuda times a GPU (synchronized).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from baselines import cql

OBS_DIM, ACT_DIM, BATCH = 11, 3, 256  # hopper
DEVICE = torch.device(os.environ.get("O2O_BENCH_DEVICE", "cpu"))


def make_agent(threads: int, **overrides: object) -> tuple[cql.CQL, tuple[torch.Tensor, ...]]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = cql.CQLConfig(**overrides)  # type: ignore[arg-type]
    agent = cql.CQL(OBS_DIM, ACT_DIM, cfg, device=DEVICE)
    batch = tuple(t.to(DEVICE) for t in (torch.randn(BATCH, OBS_DIM), torch.rand(BATCH, ACT_DIM) * 2 - 1,
                                         torch.randn(BATCH), torch.randn(BATCH, OBS_DIM), torch.zeros(BATCH)))
    for _ in range(2):  # warm-up (allocator, Adam state)
        agent.update(batch)
    return agent, batch


def step(agent: cql.CQL, batch: tuple[torch.Tensor, ...]) -> None:
    """One update, synchronized on a GPU so it is timed to its end."""
    agent.update(batch)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("threads", [1])
def test_cql_update_locomotion(benchmark: Any, threads: int) -> None:
    """One update with the locomotion preset (α 10, no Lagrange, 3 hidden layers)."""
    agent, batch = make_agent(threads)
    benchmark.pedantic(step, args=(agent, batch), rounds=10, iterations=1, warmup_rounds=1)


def test_cql_update_antmaze(benchmark: Any) -> None:
    """One update with the AntMaze preset (Lagrange, max-target backup over 10 actions, 5 hidden layers)."""
    agent, batch = make_agent(1, **cql.PRESETS["antmaze"])
    benchmark.pedantic(step, args=(agent, batch), rounds=10, iterations=1, warmup_rounds=1)
