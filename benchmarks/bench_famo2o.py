"""Throughput of one FamO2O gradient step (batch 256, official 2×256 nets; AWAC base with its 3×256 nets).

  pytest benchmarks/bench_famo2o.py --benchmark-only [--benchmark-columns=mean,ops,rounds]
  python benchmarks/bench_famo2o.py            # the same numbers without pytest-benchmark

One step = V (IQL) or Q (AWAC), balance model, α, universal model, Q (IQL), Polyak target, sampled from a
device-resident buffer, offline (β ~ U) and online (β from the balance model). `ops` is updates per second.
Walker2d dims (17 / 6). Set O2O_BENCH_DEVICE=cuda to time a GPU; the default is the CPU with one thread.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from algorithms import famo2o as fam  # noqa: E402
from o2o.buffer import ReplayBuffer  # noqa: E402

DEVICE = torch.device(os.environ.get("O2O_BENCH_DEVICE", "cpu"))
OBS, ACT, N, BATCH = 17, 6, 100_000, 256


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def make(base: str) -> tuple[fam.FamO2O, ReplayBuffer]:
    """An agent with the preset sizes of `base` and a buffer of N synthetic transitions."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = fam.FamO2OConfig(base=base, n_hidden=3 if base == "awac" else 2, batch_size=BATCH)
    agent = fam.FamO2O(cfg, OBS, ACT, DEVICE)
    buf = ReplayBuffer(OBS, ACT, N, DEVICE)
    obs = torch.randn(N, OBS)
    buf.add(obs.numpy(), (torch.rand(N, ACT) * 2 - 1).numpy(), torch.randn(N).numpy(),
            (obs + 0.01 * torch.randn(N, OBS)).numpy(), torch.zeros(N).numpy())
    return agent, buf


@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
@pytest.mark.parametrize("base", ["iql", "awac"])
def test_update(benchmark, base: str, online: bool) -> None:
    agent, buf = make(base)

    def step() -> None:
        agent.update(buf.sample(BATCH), online)
        _sync()

    benchmark.pedantic(step, rounds=50, iterations=1, warmup_rounds=5)


if __name__ == "__main__":
    for base in ("iql", "awac"):
        agent, buf = make(base)
        for online in (False, True):
            for _ in range(10):
                agent.update(buf.sample(BATCH), online)
            _sync()
            t0, n = time.perf_counter(), 200
            for _ in range(n):
                agent.update(buf.sample(BATCH), online)
            _sync()
            dt = time.perf_counter() - t0
            print(f"{base:4s} {'online' if online else 'offline':7s} {n / dt:7.1f} updates/s "
                  f"({1000 * dt / n:.2f} ms/update, batch {BATCH}, {DEVICE})")
