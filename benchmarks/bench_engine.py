"""The engine's throughput: seed-updates per second with S = 1, 5 and 10 seeds packed in one process.

For IQL, AWAC, CQL and FamO2O at CORL's network sizes (HalfCheetah dims 17/6, batch 256 per seed, buffer sampling
included). One torch thread on a CPU by default; O2O_BENCH_DEVICE=cuda times a GPU (synchronized).

- `test_engine_update[algo-S]`: pytest-benchmark rows; `ops` = updates/s of the pack, `seed_updates_per_s` (extra
  info, `--benchmark-json`) = S × ops.
- `test_packing_gain[algo]`: in one run, interleaved blocks of S = 1 and S = 5 (eager, and compiled unless
  O2O_BENCH_COMPILE=0) and of the pre-engine file (from git, see benchmarks/legacy.py); prints seed-updates/s of
  each, the split of an eager update into a shared part and a per-seed part (with the gain that split allows any
  number of seeds, the matrix products' share of the time, and each seed's operator time at S = 1 and 5, products
  and the rest), and checks the targets: S = 5 reaches ≥ 1.2× the seed-updates/s of S = 1 (CPU, one thread, eager),
  and the single-seed update is no slower than the pre-engine one (within NOISE, the run-to-run spread of this shared
  machine).
- `test_fixed_cost[algo]`: the single-seed update's fixed cost (batch 8) against the pre-engine file, and operators
  per update of each (informational).
- `test_narrow_layer[out-rows]`: a narrow layer's forward and backward, its weight gradient by o2o.nets.NarrowMatmul
  against autograd's order (informational); `test_narrow_matmul_choice[algo]`: the same choice in a whole single-seed
  update, checking that the one o2o.nets.narrow_matmul_pays makes for this processor is no slower.
- `test_retained_memory[algo]`: in a fresh process, page faults and ms per update at S = 1 and 5 before and after
  o2o.training.retain_freed_memory (CPU under glibc; informational).

The process keeps freed memory for reuse as training runs do (o2o.training.retain_freed_memory, CPU under glibc),
for the pre-engine update too; `test_packing_gain` prints the page faults per update that remain.

Run: make bench, or .venv/bin/pytest benchmarks/bench_engine.py --benchmark-only -s
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.legacy import LegacyUnavailable, legacy_step
from o2o import loop
from o2o.buffer import ReplayBuffer
from o2o.rng import MemberRNG
from o2o.specs import get_spec
from o2o.training import retain_freed_memory

OBS_DIM, ACT_DIM, N, BATCH = 17, 6, 100_000, 256
DEVICE = torch.device(os.environ.get("O2O_BENCH_DEVICE", "cpu"))
MODULES = {"iql": "baselines.iql", "awac": "baselines.awac", "cql": "baselines.cql", "famo2o": "algorithms.famo2o"}
CONFIGS = {"iql": "IQLConfig", "awac": "AWACConfig", "cql": "CQLConfig", "famo2o": "FamO2OConfig"}
PACK_TARGET = 1.2  # S = 5 seed-updates/s over S = 1, CPU one thread (issue: "at least 1.2x")
NOISE = 0.05  # relative spread of repeated timings on this machine


def dataset() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"obs": rng.normal(size=(N, OBS_DIM)).astype(np.float32),
            "act": rng.uniform(-1, 1, (N, ACT_DIM)).astype(np.float32),
            "rew": rng.normal(size=N).astype(np.float32),
            "next_obs": rng.normal(size=(N, OBS_DIM)).astype(np.float32),
            "done": (rng.random(N) < 0.01).astype(np.float32)}


DATA = dataset()
# as o2o.loop does before its first update; O2O_BENCH_RETAIN=0 leaves the allocator alone (test_retained_memory)
RETAINED = retain_freed_memory(DEVICE) if os.environ.get("O2O_BENCH_RETAIN", "1") != "0" else False


def synced(fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` followed by a device synchronize, so a GPU step is timed to its end."""
    def run() -> object:
        out = fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out
    return run


def engine_step(algo: str, seeds: int, compile: bool = False, device: torch.device = DEVICE,
                data: dict[str, np.ndarray] | None = None, batch: int = BATCH) -> Callable[[], dict[str, torch.Tensor]]:
    """One engine update of `seeds` packed seeds (default config of the file), with its batch sampling."""
    data = DATA if data is None else data
    mod = importlib.import_module(MODULES[algo])
    cfg = getattr(mod, CONFIGS[algo])()
    spec = dataclasses.replace(get_spec("halfcheetah-medium-v2"), obs_dim=data["obs"].shape[1],
                               act_dim=data["act"].shape[1])
    setup = loop.Setup(list(range(seeds)), spec, spec.obs_dim, spec.act_dim, 1.0, device, data["obs"])
    agent = mod.algorithm(cfg).build(cfg, setup)
    buf = ReplayBuffer(data, seeds, 0, device)
    rng = MemberRNG(list(range(seeds)), "batches", device)
    step = synced(loop.compile_step(lambda: agent.update(buf.sample(rng, batch), False), compile, device))
    step.agent, step.rng = agent, rng  # for checks that compare two updates from one state (benchmarks/gpu.py)
    return step


ROUNDS = {"iql": 30, "awac": 30, "famo2o": 20, "cql": 4}


@pytest.mark.parametrize("seeds", [1, 5, 10])
@pytest.mark.parametrize("algo", list(MODULES))
def test_engine_update(benchmark, algo: str, seeds: int) -> None:
    step = engine_step(algo, seeds)
    for _ in range(3):
        step()
    metrics = benchmark.pedantic(step, rounds=max(2, ROUNDS[algo] // seeds * 2), iterations=1, warmup_rounds=1)
    benchmark.extra_info["seeds"] = seeds
    benchmark.extra_info["seed_updates_per_s"] = seeds / benchmark.stats["mean"]
    assert all(torch.isfinite(v).all() for v in metrics.values())


def page_faults(fn: Callable[[], object], n: int) -> float:
    """Minor page faults of the process per call of `fn` (0 where getrusage has no count)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n


def rate(fn: Callable[[], object], n: int) -> float:
    """Calls per second of `fn` over n calls."""
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


COMPILE = os.environ.get("O2O_BENCH_COMPILE", "1") != "0"  # also time the compiled update (Inductor on a CPU)


def fixed_and_per_seed(t1: float, t5: float) -> tuple[float, float]:
    """Split an update's time T(S) = a + b·S from T(1) and T(5): `a` is what packing shares (Python, dispatch,
    launches), `b` the work each seed adds (its matrix products, elementwise passes, optimiser state)."""
    b = (t5 - t1) / 4
    return t1 - b, b


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profiled(fn: Callable[[], object], calls: int) -> list:
    """torch.profiler's per-operator averages (key_averages) over `calls` calls of `fn`."""
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(calls):
            fn()
    return list(prof.key_averages())


def operator_ms(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """The operators' own time per call of `fn` (torch.profiler, over `calls` calls), in ms: (matrix products
    (MATMULS), every other operator). On a CPU the products are the part of an update that packing cannot share."""
    own = {e.key: e.self_cpu_time_total for e in profiled(fn, calls)}
    products = sum(own.get(k, 0.0) for k in MATMULS)
    return products / calls / 1e3, (sum(own.values()) - products) / calls / 1e3


@pytest.mark.parametrize("algo", list(MODULES))
def test_packing_gain(benchmark, algo: str) -> None:
    """S = 5 against S = 1 and against the pre-engine file, measured in interleaved blocks of one run; eager, and
    compiled unless O2O_BENCH_COMPILE=0 (printed beside them). The targets are checked in eager mode, the engine's
    default on a CPU."""
    steps = {"S=1": engine_step(algo, 1), "S=5": engine_step(algo, 5)}
    if COMPILE:
        steps.update({"S=1 compiled": engine_step(algo, 1, compile=True),
                      "S=5 compiled": engine_step(algo, 5, compile=True)})
    try:
        data = tuple(torch.as_tensor(DATA[k], device=DEVICE) for k in ("obs", "act", "rew", "next_obs", "done"))
        steps["pre-engine"] = synced(legacy_step(algo, OBS_DIM, ACT_DIM, DEVICE, data))
    except LegacyUnavailable as e:
        print(f"\n[{algo}] pre-engine comparison skipped: {e}")
    per_block = {"cql": 2}.get(algo, 15)
    for fn in steps.values():
        rate(fn, 2)  # compiles
    rates: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range({"cql": 3}.get(algo, 7)):
        for k, fn in steps.items():
            rates[k].append(rate(fn, per_block) * (5 if k.startswith("S=5") else 1))  # seed-updates/s
    med = {k: statistics.median(v) for k, v in rates.items()}
    gain = med["S=5"] / med["S=1"]
    compiled_gain = med["S=5 compiled"] / med["S=1 compiled"] if COMPILE else None
    fixed, per_seed = fixed_and_per_seed(1 / med["S=1"], 5 / med["S=5"])
    calls = {"cql": 1}.get(algo, 5)  # profiled before the printing (the profiler logs)
    ops = {k: operator_ms(steps[k], calls) for k in ("S=1", "S=5")}
    products = ops["S=5"][0] / sum(ops["S=5"])
    line = ", ".join(f"{k} {v:.1f}" for k, v in med.items())
    print(f"\n[{algo} on {DEVICE}] seed-updates/s: {line}; S=5 / S=1 eager = {gain:.2f}", end="")
    if compiled_gain is not None:
        print(f", compiled = {compiled_gain:.2f}", end="")
    limit = (fixed + per_seed) / per_seed  # T(1) / (T(S) / S) as S grows: what packing can give at most
    print(f"; eager update = {fixed * 1e3:.2f} ms shared + {per_seed * 1e3:.2f} ms per seed (any number of seeds "
          f"gives at most {limit:.2f}x; matrix products {products:.0%} of S=5's operator time; operator ms per seed, "
          f"S=1 / S=5: matrix products {ops['S=1'][0]:.2f} / {ops['S=5'][0] / 5:.2f}, others {ops['S=1'][1]:.2f} / "
          f"{ops['S=5'][1] / 5:.2f})", end="")
    faults = {k: page_faults(steps[k], 2) for k in ("S=1", "S=5")}
    print(f"; page faults per update S=1 {faults['S=1']:.0f}, S=5 {faults['S=5']:.0f} (freed memory retained: "
          f"{RETAINED})", end="")
    if "pre-engine" in med:
        print(f"; S=1 / pre-engine = {med['S=1'] / med['pre-engine']:.2f}", end="")
    print()
    benchmark.extra_info.update({k: v for k, v in med.items()}, gain=gain, compiled_gain=compiled_gain,
                                shared_ms=fixed * 1e3, per_seed_ms=per_seed * 1e3, gain_limit=limit,
                                matmul_share=products, operator_ms=ops, page_faults=faults)
    benchmark.pedantic(lambda: None, rounds=1)  # the numbers are above; this registers the row
    if DEVICE.type == "cpu":
        assert gain >= PACK_TARGET, f"{algo}: S=5 gives {gain:.2f}x the seed-updates/s of S=1 (target {PACK_TARGET})"
    if "pre-engine" in med:
        assert med["S=1"] >= med["pre-engine"] * (1 - NOISE), f"{algo}: single-seed update slower than pre-engine"


def ops_per_call(fn: Callable[[], object], calls: int = 5) -> float:
    """Operators (torch.profiler events) per call of `fn`."""
    return sum(e.count for e in profiled(fn, calls)) / calls


@pytest.mark.parametrize("algo", list(MODULES))
def test_fixed_cost(benchmark, algo: str) -> None:
    """The single-seed update's fixed cost against the pre-engine file: at batch 8 the matrix products vanish and
    what is left is per-update overhead (Python, dispatch, small ops). Prints ms per update of each, in 30
    interleaved rounds (median and quartiles of the ratio), and operators per update. Informational: no target."""
    data = tuple(torch.as_tensor(DATA[k], device=DEVICE) for k in ("obs", "act", "rew", "next_obs", "done"))
    try:
        steps = {"engine": engine_step(algo, 1, batch=8),
                 "pre-engine": synced(legacy_step(algo, OBS_DIM, ACT_DIM, DEVICE, data, batch_size=8))}
    except LegacyUnavailable as e:
        pytest.skip(f"pre-engine file unavailable: {e}")
    for fn in steps.values():
        rate(fn, 5)
    ms: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(30):
        for k, fn in steps.items():
            ms[k].append(1e3 / rate(fn, 10))
    ratios = sorted(old / new for new, old in zip(ms["engine"], ms["pre-engine"]))
    q1, q2, q3 = (ratios[int(len(ratios) * q)] for q in (0.25, 0.5, 0.75))
    ops = {k: ops_per_call(fn) for k, fn in steps.items()}
    print(f"\n[{algo} on {DEVICE}, batch 8] ms per update: engine {statistics.median(ms['engine']):.2f}, pre-engine "
          f"{statistics.median(ms['pre-engine']):.2f}; speed engine / pre-engine {q2:.2f} "
          f"(quartiles {q1:.2f}-{q3:.2f}); ops per update: engine {ops['engine']:.0f}, "
          f"pre-engine {ops['pre-engine']:.0f}")
    benchmark.extra_info.update(ratio=q2, ops_engine=ops["engine"], ops_pre_engine=ops["pre-engine"])
    benchmark.pedantic(lambda: None, rounds=1)


RETAIN_PROBE = """
import sys, time, torch
torch.set_num_threads(1)
from benchmarks.bench_engine import engine_step, page_faults
from o2o.training import retain_freed_memory
algo, n = sys.argv[1], int(sys.argv[2])
steps = {s: engine_step(algo, s) for s in (1, 5)}
def measure():
    out = []
    for s, fn in steps.items():
        page_faults(fn, 2)  # warm (the heap grows to its size once)
        t = time.perf_counter()
        faults = page_faults(fn, n)
        out.append(f"{faults:.0f} {(time.perf_counter() - t) / n * 1e3:.1f}")
    return out
measure()  # a first round warms the process (its timings would favour what runs second)
before = measure()
applied = retain_freed_memory(torch.device("cpu"))
print(*before, applied, *measure())
"""


@pytest.mark.parametrize("algo", ["cql", "iql"])
def test_retained_memory(benchmark, algo: str) -> None:
    """What retain_freed_memory saves: page faults and ms per update at S = 1 and 5, measured in a fresh process
    (the setting cannot be undone) without it, then with it. CPU under glibc only; informational."""
    if DEVICE.type != "cpu" or platform.libc_ver()[0] != "glibc":
        pytest.skip("a CPU under glibc only")
    n = {"cql": 3}.get(algo, 30)
    res = subprocess.run([sys.executable, "-c", RETAIN_PROBE, algo, str(n)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "O2O_BENCH_RETAIN": "0"})
    assert res.returncode == 0, res.stderr[-2000:]
    v = res.stdout.split()
    (f1, t1, f5, t5), applied, (g1, u1, g5, u5) = v[:4], v[4], v[5:]
    print(f"\n[{algo} on cpu] per update, page faults and ms: S=1 {f1} faults {t1} ms, S=5 {f5} faults {t5} ms; "
          f"freed memory retained ({applied}): S=1 {g1} faults {u1} ms, S=5 {g5} faults {u5} ms")
    benchmark.extra_info.update(before={"S=1": [float(f1), float(t1)], "S=5": [float(f5), float(t5)]},
                                retained={"S=1": [float(g1), float(u1)], "S=5": [float(g5), float(u5)]})
    benchmark.pedantic(lambda: None, rounds=1)


def with_narrow_matmul(fn: Callable[[], object], on: bool) -> Callable[[], object]:
    """`fn` run with o2o.nets.NARROW_MATMUL set to `on` (narrow layers' weight gradient by NarrowMatmul or by
    autograd), the process's choice restored after each call."""
    from o2o import nets

    def run() -> object:
        saved, nets.NARROW_MATMUL = nets.NARROW_MATMUL, on
        try:
            return fn()
        finally:
            nets.NARROW_MATMUL = saved
    return run


@pytest.mark.parametrize("rows", [256, 2560])  # a batch; CQL's 10 sampled actions per state of a batch
@pytest.mark.parametrize("out", [1, 6])  # a critic's or value head (2 stored outputs); a HalfCheetah actor's mean
def test_narrow_layer(benchmark, out: int, rows: int) -> None:
    """A narrow layer's forward and backward (input, weight and bias gradients) for twin critics of one seed (M = 2,
    256 inputs) through EnsembleLinear's own forward, its weight gradient by o2o.nets.NarrowMatmul (gᵀ·x) against
    autograd's order (xᵀ·g), in interleaved blocks of one run. Informational: the layer alone leaves out what decides
    the choice in an update (test_narrow_matmul_choice checks that)."""
    from o2o.nets import EnsembleLinear

    layer = EnsembleLinear(2, 256, out).to(DEVICE)
    assert layer.narrow
    x = torch.randn(2, rows, 256, device=DEVICE, requires_grad=True)
    grad = torch.randn(2, rows, out, device=DEVICE)

    def forward_backward() -> None:
        layer(x).backward(grad)

    steps = {k: synced(with_narrow_matmul(forward_backward, on)) for k, on in (("NarrowMatmul", True),
                                                                                 ("autograd", False))}
    n = max(2, 20_000 // rows)
    for fn in steps.values():
        rate(fn, n)
    rates: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(15):
        for k, fn in steps.items():
            rates[k].append(rate(fn, n))
    med = {k: statistics.median(v) for k, v in rates.items()}
    gain = med["NarrowMatmul"] / med["autograd"]
    print(f"\n[{out}-output layer, 2 x {rows} rows, on {DEVICE}] us per forward and backward: NarrowMatmul "
          f"{1e6 / med['NarrowMatmul']:.0f}, autograd's order {1e6 / med['autograd']:.0f}; speed {gain:.2f}x")
    benchmark.extra_info.update(gain=gain, **{k: 1e6 / v for k, v in med.items()})
    benchmark.pedantic(lambda: None, rounds=1)


@pytest.mark.parametrize("algo", ["iql", "famo2o"])
def test_narrow_matmul_choice(benchmark, algo: str) -> None:
    """The single-seed update with narrow layers' weight gradients by NarrowMatmul and by autograd, in interleaved
    blocks of one run (two agents from one initialisation and batch stream): the choice o2o.nets.narrow_matmul_pays
    makes for this processor must be no slower than the other (within NOISE). Prints both, and whether the two
    agents' metrics are still bit-identical at the end."""
    from o2o import nets

    steps = {k: with_narrow_matmul(engine_step(algo, 1), on) for k, on in (("NarrowMatmul", True), ("autograd", False))}
    warm, blocks, per_block = 3, 9, 15
    for fn in steps.values():
        rate(fn, warm)
    rates: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(blocks):
        for k, fn in steps.items():
            rates[k].append(rate(fn, per_block))
    med = {k: statistics.median(v) for k, v in rates.items()}
    last = {k: fn() for k, fn in steps.items()}
    same = all(torch.equal(last["NarrowMatmul"][m], last["autograd"][m]) for m in last["autograd"])
    chosen = "NarrowMatmul" if nets.NARROW_MATMUL and DEVICE.type == "cpu" else "autograd"  # as EnsembleLinear
    other = "autograd" if chosen == "NarrowMatmul" else "NarrowMatmul"
    print(f"\n[{algo} on {DEVICE}, S=1, CPU vendor {nets.cpu_vendor() or 'unknown'}] updates/s: NarrowMatmul "
          f"{med['NarrowMatmul']:.1f}, autograd's order {med['autograd']:.1f}; this machine uses {chosen} "
          f"({med[chosen] / med[other]:.3f}x the other); metrics after {warm + blocks * per_block + 1} updates "
          f"{'bit-identical' if same else 'differ'}")
    benchmark.extra_info.update(chosen=chosen, identical=same, **med)
    benchmark.pedantic(lambda: None, rounds=1)
    if DEVICE.type == "cpu":
        assert med[chosen] >= med[other] * (1 - NOISE), f"{algo}: {other} is faster on this machine"
