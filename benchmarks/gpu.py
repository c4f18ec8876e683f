"""`make bench-gpu`: the engine on one GPU, in one command that finishes in under 8 minutes.

1. For IQL, AWAC and CQL (default configs, HalfCheetah dims, batch 256 per seed): eager single-seed, compiled
   single-seed, compiled S = 5 and S = 10 packed seeds, `--updates` updates each after a warm-up (which includes
   torch.compile and CUDA-graph capture); reported as seconds per 1M updates per seed, wall time of the pack
   relative to S = 1, and compile time.
2. One packed IQL run end to end: `baselines/iql.py --seeds 0,1,2,3,4 --compile true` for `--run-steps` offline
   updates with its evaluations, on local:hopper-medium generated on the machine (`--dataset-size` transitions).
3. Writes `<out>/gpu-<device>.md`, `.json` and `.png` (and copies them to $OUT when that is set).

A deadline (`--budget-s`, the whole script's time) keeps it inside the device's time: the timings stop 220 s before
it (a configuration that runs into that point is timed on the updates it finished, and its row says how many), the
packed run is killed at it (its records say how far each seed got), and what does not fit is listed as skipped. The
dataset is generated in the background while the timings run.
The device is lent once, so nothing stops the script: a configuration that raises (a compile or capture failure,
out of memory) is recorded with its error line and the next one runs; the report is rewritten after every step, so
a run cut short still leaves what it measured. On a CPU (`--device cpu`, small `--updates`) the same script checks
itself; its numbers then mean nothing.

Usage: python -m benchmarks.gpu [--updates 20000] [--run-steps 100000] [--check-updates 100] [--device cuda]
       [--out results/bench]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from o2o.training import error_line

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [("eager", 1, False), ("compiled", 1, True), ("compiled", 5, True), ("compiled", 10, True)]
ALGOS = ("iql", "awac", "cql")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CHECK_UPDATES = 100  # compiled updates checked against eager ones before timing (--check-updates)
CHECK_TOLERANCE = 1e-4  # largest relative difference of a metric between the two updates from one state


def max_rel_diff(eager: dict[str, torch.Tensor], compiled: dict[str, torch.Tensor]) -> float:
    """The largest |compiled − eager| / (|eager| + 1e-3) over every metric of one update (inf if not finite)."""
    worst = 0.0
    for k, e in eager.items():
        d = ((compiled[k].float() - e.float()).abs() / (e.float().abs() + 1e-3)).max().item()
        worst = max(worst, d if d == d else float("inf"))
    return worst


def check_against_eager(compiled: Callable[[], dict], eager: Callable[[], dict], updates: int) -> float:
    """Before each of `updates` compiled updates (warm-ups, capture and replays), the eager twin takes the compiled
    agent's state and batch stream, and both make the update: the largest max_rel_diff of their metrics.

    From one state, Inductor's fused kernels differ from eager's in the last bits (about 1e-6 relative on a CPU); a
    CUDA graph that reads anything but the live state (a stale buffer count, a replaced tensor) differs by order
    one. Over many updates without this reset the two runs drift apart for AWAC and CQL however exact each update
    is (Adam's first steps turn the sign of near-zero gradients into steps of size lr), so the check is per update.
    """
    worst = 0.0
    for _ in range(updates):
        eager.agent.load_state_dict(copy.deepcopy(compiled.agent.state_dict()))  # a copy: never alias its tensors
        eager.rng.load_state_dict(copy.deepcopy(compiled.rng.state_dict()))
        worst = max(worst, max_rel_diff(eager(), compiled()))
    return worst


def time_config(algo: str, seeds: int, compiled: bool, updates: int, device: torch.device,
                check_updates: int = CHECK_UPDATES, stop_at: float = float("inf")) -> dict[str, float]:
    """Warm up (compile, capture; a compiled update is first checked against eager for `check_updates` updates),
    then time `updates` updates; seconds per 1M updates per seed. The timed updates run in chunks, and no chunk
    starts after `stop_at` (a time.time() value): a slow configuration is timed on fewer updates, and says so."""
    from benchmarks.bench_engine import engine_step

    t0 = time.perf_counter()
    step = engine_step(algo, seeds, compile=compiled, device=device)
    check: dict[str, float] = {}
    if compiled and check_updates > 0:
        check = {"updates": check_updates, "max_rel_diff": check_against_eager(
            step, engine_step(algo, seeds, compile=False, device=device), check_updates)}
    for _ in range(20):
        step()
    sync(device)
    warm = time.perf_counter() - t0
    chunk, done = max(1, min(1000, updates // 20)), 0
    t = time.perf_counter()
    while done < updates and (done == 0 or time.time() < stop_at):
        for _ in range(min(chunk, updates - done)):
            metrics = step()
        done += min(chunk, updates - done)
        sync(device)  # one host sync per chunk, so the clock check sees finished work
    wall = time.perf_counter() - t
    finite = all(bool(torch.isfinite(v).all()) for v in metrics.values())
    return {"algo": algo, "mode": "compiled" if compiled else "eager", "seeds": seeds, "updates": done,
            "wall_s": wall, "warmup_s": warm, "s_per_1M_per_seed": wall / done * 1e6 / seeds,
            "updates_per_s": done / wall, "finite": finite, "vs_eager": check}


def run_env(out: Path) -> dict[str, str]:
    return {**os.environ, "O2O_DATA_DIR": str(out / "data"), "PYTHONPATH": str(ROOT)}


def start_generation(size: int, out: Path) -> tuple[subprocess.Popen, float]:
    """Generate local:hopper-medium in the background (CPU work, while the timings use the GPU)."""
    cmd = [sys.executable, "-m", "o2o.generate", "one", "local:hopper-medium", "--size", str(size)]
    return subprocess.Popen(cmd, cwd=ROOT, env=run_env(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True), time.time()


def packed_run(steps: int, size: int, device: str, out: Path, deadline: float,
               generation: tuple[subprocess.Popen, float]) -> dict[str, object]:
    """The end-to-end packed IQL run (5 seeds, compiled) on the local:hopper-medium that `generation` makes; the
    run is killed at `deadline` (a time.time() value), and its records then show how far each seed got."""
    env = run_env(out)
    gen, t = generation
    try:
        log, _ = gen.communicate(timeout=max(deadline - time.time(), 1))
    except subprocess.TimeoutExpired:
        gen.kill()
        raise RuntimeError("o2o.generate did not finish before the deadline") from None
    if gen.returncode != 0:
        raise RuntimeError(f"o2o.generate exit {gen.returncode}: {log.strip()[-300:]}")
    made = [f.stat().st_mtime for f in (out / "data").rglob("*") if f.is_file()]
    generate_s = max(made) - t if made else float("nan")  # the file's own time: the wait above is not generation
    run_dir = out / "iql-packed"
    cmd = [sys.executable, "baselines/iql.py", "--dataset", "local:hopper-medium", "--seeds", "0,1,2,3,4",
           "--offline-steps", str(steps), "--eval-every", str(max(steps // 10, 1)), "--log-every",
           str(max(steps // 10, 1)), "--checkpoint-every", str(steps), "--compile", "true", "--device", device,
           "--out", str(run_dir)]
    t = time.perf_counter()
    try:
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=max(deadline - time.time(), 1))
        returncode, log = res.returncode, res.stdout + res.stderr
    except subprocess.TimeoutExpired as e:  # killed at the deadline: each seed's records show how far it got
        returncode = "timeout"
        log = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr))
    wall = time.perf_counter() - t
    seeds = []
    for s in range(5):
        p = run_dir / f"seed{s}" / "summary.json"
        if p.exists():
            sm = json.loads(p.read_text())
            seeds.append({"seed": s, "status": sm["status"], "last_score": sm["last_score"], "steps": sm["steps"],
                          "n_evals": sm["n_evals"],
                          "updates_per_s": (sm.get("extra") or {}).get("offline_updates_per_s")})
    return {"command": " ".join(cmd[1:]), "returncode": returncode, "wall_s": wall, "generate_s": generate_s,
            "dataset_size": size, "seeds": seeds, "log_tail": log[-2000:]}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def write_report(results: list[dict], run: dict | None, skipped: list[str], args: argparse.Namespace,
                 out: Path, name: str, total_s: float) -> list[Path]:
    """Markdown table, JSON and a bar chart of seconds per 1M updates per seed."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    lines = [f"# The engine on {name}", "",
             f"Command: `make bench-gpu` (`python -m benchmarks.gpu --updates {args.updates} --run-steps "
             f"{args.run_steps} --dataset-size {args.dataset_size} --check-updates {args.check_updates} --device "
             f"{args.device}`), commit {commit.stdout.strip() or '?'}, torch "
             f"{torch.__version__}, {time.strftime('%Y-%m-%d')}; {total_s / 60:.1f} min in all.", "",
             "Default config of each file, HalfCheetah dims (17/6), batch 256 per seed; the warm-up (the check "
             "below, 20 updates, torch.compile and CUDA-graph capture) is not timed.", "",
             f"A compiled row is first checked against eager: before each of {args.check_updates} compiled updates "
             "(warm-ups, CUDA-graph capture, replays) an eager twin takes the compiled agent's state and batch "
             "stream and both update; the column gives the largest relative difference of any metric (tolerance "
             f"{CHECK_TOLERANCE:.0e}: Inductor reorders float operations, so the last bits differ; a graph that read "
             "anything but the live state would differ by order one).", "",
             "| algorithm | mode | seeds | timed updates | s per 1M updates per seed | wall vs S = 1 (same mode) | "
             "warm-up s | vs eager, one update from one state |",
             "|---|---|---|---|---|---|---|---|"]
    timed = [r for r in results if "error" not in r]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['algo']} | {r['mode']} | {r['seeds']} | – | failed: {r['error']} | – | – | – |")
            continue
        base = next((b for b in timed if b["algo"] == r["algo"] and b["mode"] == r["mode"] and b["seeds"] == 1),
                    None)
        rel = f"{r['wall_s'] / r['updates'] / (base['wall_s'] / base['updates']):.2f}×" if base else "–"
        flag = "" if r["finite"] else " (non-finite metrics!)"
        check = r.get("vs_eager") or {}
        vs = "–" if not check else f"{check['max_rel_diff']:.1e}" + (
            "" if check["max_rel_diff"] <= CHECK_TOLERANCE else " (over tolerance!)")
        lines.append(f"| {r['algo']} | {r['mode']} | {r['seeds']} | {r['updates']} | "
                     f"{r['s_per_1M_per_seed']:.0f}{flag} | {rel} | {r['warmup_s']:.0f} | {vs} |")
    if skipped:
        lines += ["", "Not run (time budget): " + ", ".join(skipped) + "."]
    if run is not None and "error" in run:
        lines += ["", "## Packed IQL run (5 seeds, compiled) end to end", "", f"Failed: {run['error']}"]
    elif run is not None:
        lines += ["", "## Packed IQL run (5 seeds, compiled) end to end", "",
                  f"`{run['command']}` on local:hopper-medium ({run['dataset_size']} transitions, generated in the "
                  f"background in {run['generate_s']:.0f} s): exit {run['returncode']}, {run['wall_s']:.0f} s wall "
                  "including evaluations.", "",
                  "| seed | status | updates | last score | evaluations | updates/s of the pack |",
                  "|---|---|---|---|---|---|"]
        for s in run["seeds"]:
            score = "–" if s["last_score"] is None else f"{s['last_score']:.1f}"
            lines.append(f"| {s['seed']} | {s['status']} | {s['steps']} | {score} | {s['n_evals']} | "
                         f"{s['updates_per_s'] or '–'} |")
    out.mkdir(parents=True, exist_ok=True)
    md, js, png = out / f"gpu-{slug}.md", out / f"gpu-{slug}.json", out / f"gpu-{slug}.png"
    md.write_text("\n".join(lines) + "\n")
    js.write_text(json.dumps({"device": name, "results": results, "packed_run": run, "skipped": skipped}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{m} S={s}" for m, s, _ in CONFIGS]
    width = 0.8 / len(ALGOS)
    for i, algo in enumerate(ALGOS):
        vals = [next((r["s_per_1M_per_seed"] for r in timed if r["algo"] == algo and r["mode"] == m
                      and r["seeds"] == s), float("nan")) for m, s, _ in CONFIGS]
        ax.bar([j + i * width for j in range(len(CONFIGS))], vals, width, label=algo.upper())
    ax.set_xticks([j + width for j in range(len(CONFIGS))], labels)
    ax.set_ylabel("seconds per 1M updates per seed")
    ax.set_yscale("log")
    ax.set_title(f"Engine throughput on {name} (batch 256 per seed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return [md, js, png]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", type=int, default=20_000, help="timed updates per configuration")
    p.add_argument("--run-steps", type=int, default=100_000, help="offline updates of the packed IQL run")
    p.add_argument("--dataset-size", type=int, default=200_000, help="transitions of the generated dataset")
    p.add_argument("--device", default="cuda")
    p.add_argument("--check-updates", type=int, default=CHECK_UPDATES,
                   help="updates of each compiled configuration checked against eager before timing (0: none)")
    p.add_argument("--budget-s", type=float, default=460.0,
                   help="the whole script's time: the timings stop 220 s before it (a configuration started "
                        "earlier is timed on fewer updates), and the packed run is killed at it")
    p.add_argument("--out", default="results/bench")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(1 if device.type == "cpu" else torch.get_num_threads())
    start = time.time()
    deadline = start + args.budget_s
    name = device_name(device)
    print(f"[bench-gpu] {name}, torch {torch.__version__}, {args.updates} updates per configuration", flush=True)
    results: list[dict] = []
    skipped: list[str] = []
    run: dict | None = None

    def report() -> list[Path]:
        files = write_report(results, run, skipped, args, Path(args.out), name, time.time() - start)
        if os.environ.get("OUT"):
            for f in files:
                shutil.copy(f, Path(os.environ["OUT"]) / f.name)
        return files

    reserve = 220.0  # seconds kept for the packed run (compile, 100k updates, evaluations)
    with tempfile.TemporaryDirectory(prefix="o2o-bench-gpu-") as tmp:
        generation = start_generation(args.dataset_size, Path(tmp))
        try:
            for algo in ALGOS:
                for mode, seeds, compiled in CONFIGS:
                    label = f"{algo} {mode} S={seeds}"
                    if time.time() > deadline - reserve:
                        skipped.append(label)
                        continue
                    try:
                        r = time_config(algo, seeds, compiled, args.updates, device, args.check_updates,
                                        stop_at=deadline - reserve)
                        cut = f", cut to {r['updates']} updates by the deadline" if r["updates"] < args.updates else ""
                        print(f"[bench-gpu] {label}: {r['s_per_1M_per_seed']:.0f} s per 1M updates per seed "
                              f"(warm-up {r['warmup_s']:.0f} s{cut})", flush=True)
                    except Exception as e:  # recorded, and the next configuration runs: the device is lent once
                        r = {"algo": algo, "mode": mode, "seeds": seeds, "error": error_line(e)}
                        print(f"[bench-gpu] {label}: failed: {r['error']}", flush=True)
                    results.append(r)
                    torch._dynamo.reset()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    report()
            if deadline - time.time() > 60:
                try:
                    run = packed_run(args.run_steps, args.dataset_size, args.device, Path(tmp), deadline, generation)
                    print(f"[bench-gpu] packed IQL run: exit {run['returncode']}, {run['wall_s']:.0f} s", flush=True)
                except Exception as e:  # a failed dataset generation
                    run = {"error": error_line(e)}
                    print(f"[bench-gpu] packed IQL run: failed: {run['error']}", flush=True)
            else:
                skipped.append("packed IQL run")
        finally:
            if generation[0].poll() is None:
                generation[0].kill()
    files = report()
    print("[bench-gpu] wrote " + ", ".join(str(f) for f in files), flush=True)
    failed = any("error" in r or not r["finite"] or (r["vs_eager"] and r["vs_eager"]["max_rel_diff"] > CHECK_TOLERANCE)
                 for r in results) or (run is not None and ("error" in run or run["returncode"] != 0))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
