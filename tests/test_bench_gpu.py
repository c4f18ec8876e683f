"""`make bench-gpu`'s script (benchmarks/gpu.py) on the CPU: the device is lent once, so a failing configuration
must not stop the script or lose what was measured before it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu


def test_one_configuration_times_a_real_update_on_the_cpu() -> None:
    r = gpu.time_config("iql", 2, False, 3, torch.device("cpu"))
    assert r["finite"] and r["seeds"] == 2 and r["updates"] == 3
    assert r["s_per_1M_per_seed"] == pytest.approx(r["wall_s"] / 3 * 1e6 / 2)


def test_a_compiled_configuration_is_checked_against_eager_first() -> None:
    """Inductor on the CPU (no CUDA graph here): each compiled update agrees with eager's from the same state."""
    r = gpu.time_config("awac", 2, True, 2, torch.device("cpu"), check_updates=5)
    assert r["vs_eager"]["updates"] == 5 and r["vs_eager"]["max_rel_diff"] < gpu.CHECK_TOLERANCE
    torch._dynamo.reset()


def test_the_check_against_eager_sees_an_update_that_reads_a_stale_state() -> None:
    """Control: a 'compiled' update that samples one frozen batch (a counter a graph would have baked in) fails."""
    from benchmarks.bench_engine import engine_step

    eager, stale = engine_step("iql", 1), engine_step("iql", 1)
    frozen = stale.rng.counter.clone()

    def replay():
        stale.rng.counter.copy_(frozen)  # every update samples the batch of the first one
        return stale()

    replay.agent, replay.rng = stale.agent, stale.rng
    assert gpu.check_against_eager(eager, engine_step("iql", 1), 3) == 0.0  # eager against eager: exact
    assert gpu.check_against_eager(replay, eager, 3) > 100 * gpu.CHECK_TOLERANCE
    torch._dynamo.reset()


def test_a_configuration_past_the_deadline_is_timed_on_fewer_updates() -> None:
    """The timed loop runs in chunks (updates // 20, at most 1000) and starts none after stop_at."""
    r = gpu.time_config("iql", 1, False, 40, torch.device("cpu"), stop_at=0.0)
    assert r["updates"] == 2 and r["finite"]
    assert r["s_per_1M_per_seed"] == pytest.approx(r["wall_s"] / 2 * 1e6)
    assert gpu.time_config("iql", 1, False, 40, torch.device("cpu"))["updates"] == 40  # control: no deadline


def idle_generation(size, out):
    """A stand-in for the background dataset generation: a process that does nothing."""
    return subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE, text=True), 0.0


def test_a_packed_run_killed_at_the_deadline_keeps_how_far_each_seed_got(tmp_path, monkeypatch) -> None:
    def killed_run(cmd, **kw):  # the run wrote two seeds' records, then the deadline came
        out = Path(cmd[cmd.index("--out") + 1])
        for s in (0, 1):
            (out / f"seed{s}").mkdir(parents=True)
            (out / f"seed{s}" / "summary.json").write_text(json.dumps(
                {"status": "running", "last_score": 12.5, "steps": 30000, "n_evals": 3}))
        raise subprocess.TimeoutExpired(cmd, kw["timeout"], output=b"step 30000", stderr=None)

    monkeypatch.setattr(gpu.subprocess, "run", killed_run)
    run = gpu.packed_run(100_000, 3000, "cpu", tmp_path, time.time() + 5, idle_generation(3000, tmp_path))
    assert run["returncode"] == "timeout" and run["log_tail"] == "step 30000"
    assert [(s["seed"], s["status"], s["steps"], s["n_evals"]) for s in run["seeds"]] == [
        (0, "running", 30000, 3), (1, "running", 30000, 3)]


def test_max_rel_diff() -> None:
    e = {"loss": torch.tensor([1.0, 2.0]), "q": torch.tensor([[0.5, -0.5]])}
    assert gpu.max_rel_diff(e, {k: v.clone() for k, v in e.items()}) == 0.0
    assert gpu.max_rel_diff(e, {"loss": torch.tensor([1.0, 2.0 + 2e-6]), "q": e["q"]}) < 1e-5
    assert gpu.max_rel_diff(e, {"loss": torch.tensor([1.3, 2.0]), "q": e["q"]}) == pytest.approx(0.3 / 1.001)
    assert gpu.max_rel_diff(e, {"loss": torch.tensor([float("nan"), 2.0]), "q": e["q"]}) == float("inf")


def test_a_failing_configuration_is_recorded_and_the_rest_still_run(tmp_path, monkeypatch) -> None:
    calls = []

    def fake_time_config(algo, seeds, compiled, updates, device, check_updates, stop_at):
        calls.append((algo, seeds, compiled))
        if algo == "awac" and compiled and seeds == 5:
            raise RuntimeError("CUDA graph capture failed\nout of memory at capture")
        wall = 0.001 * updates * (1 + seeds / 10)
        return {"algo": algo, "mode": "compiled" if compiled else "eager", "seeds": seeds, "updates": updates,
                "wall_s": wall, "warmup_s": 0.0, "s_per_1M_per_seed": wall / updates * 1e6 / seeds,
                "updates_per_s": updates / wall, "finite": True,
                "vs_eager": {"updates": 100, "max_rel_diff": 2e-6 if algo != "cql" else 0.5} if compiled else {}}

    def failing_packed_run(*args):
        raise TimeoutError("the packed run ran past the deadline")

    monkeypatch.setattr(gpu, "time_config", fake_time_config)
    monkeypatch.setattr(gpu, "packed_run", failing_packed_run)
    monkeypatch.setattr(gpu, "start_generation", idle_generation)
    monkeypatch.delenv("OUT", raising=False)
    rc = gpu.main(["--device", "cpu", "--updates", "10", "--out", str(tmp_path)])

    assert rc == 1  # something failed: the exit says so, the report says what
    assert len(calls) == len(gpu.ALGOS) * len(gpu.CONFIGS)  # every configuration after the failure still ran
    md = (tmp_path / "gpu-cpu.md").read_text()
    assert "| awac | compiled | 5 | – | failed: RuntimeError: out of memory at capture | – | – | – |" in md
    assert "| awac | compiled | 10 | " in md and "| cql | compiled | 10 | " in md
    assert "| iql | compiled | 5 | 10 | 300 | 1.36× | 0 | 2.0e-06 |" in md
    assert md.count("5.0e-01 (over tolerance!)") == 3  # cql's compiled rows: a frozen graph would look so
    assert "Failed: TimeoutError: the packed run ran past the deadline" in md
    data = json.loads((tmp_path / "gpu-cpu.json").read_text())
    assert data["packed_run"] == {"error": "TimeoutError: the packed run ran past the deadline"}
    assert sum("error" in r for r in data["results"]) == 1
    timed = [r for r in data["results"] if "error" not in r]
    assert all(math.isfinite(r["s_per_1M_per_seed"]) for r in timed) and len(timed) == 11
    assert (tmp_path / "gpu-cpu.png").stat().st_size > 0


def test_the_report_is_rewritten_after_every_configuration(tmp_path, monkeypatch) -> None:
    """A run cut short (the device's time limit) leaves the rows measured so far under --out and $OUT."""
    out_dir = tmp_path / "OUT"
    out_dir.mkdir()
    seen = []

    def fake_time_config(algo, seeds, compiled, updates, device, check_updates, stop_at):
        md = out_dir / "gpu-cpu.md"
        seen.append(md.read_text().count("\n| ") if md.exists() else 0)
        if len(seen) == 3:
            raise KeyboardInterrupt  # the device run is killed here
        return {"algo": algo, "mode": "compiled" if compiled else "eager", "seeds": seeds, "updates": updates,
                "wall_s": 1.0, "warmup_s": 0.0, "s_per_1M_per_seed": 1e6 / updates / seeds,
                "updates_per_s": updates, "finite": True, "vs_eager": {}}

    monkeypatch.setattr(gpu, "time_config", fake_time_config)
    monkeypatch.setattr(gpu, "start_generation", idle_generation)
    monkeypatch.setenv("OUT", str(out_dir))
    with pytest.raises(KeyboardInterrupt):
        gpu.main(["--device", "cpu", "--updates", "10", "--out", str(tmp_path / "bench")])
    # the header line and one row per finished configuration were there before each next one started
    assert seen == [0, 2, 3]
    assert "| iql | compiled | 1 | " in (tmp_path / "bench" / "gpu-cpu.md").read_text()
