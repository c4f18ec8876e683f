"""A sweep: plan a suite's runs, make their `local:` datasets once, execute the packs on a backend, and show it."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from o2o.suite.backends import BACKENDS, SweepResult
from o2o.suite.plan import Plan, make_packs, pack_command, plan_run, select
from o2o.suite.process import FAILURES_FILE, worker_env
from o2o.suite.progress import Progress, fmt_time
from o2o.suite.spec import ROOT, Suite, SuiteError, default_out, display_path

# What a run's loader does with a `local:` name (o2o.generate.local_path): generate it when missing, keep an existing
# file whatever its size, regenerate it (at its own size and seed) only when its behaviour policy changed.
_PREPARE = "import sys\nfrom o2o.generate import local_path\nprint(local_path(sys.argv[1], create=True))\n"


def prepare_datasets(plans: list[Plan], env: dict[str, str], out: Path, stream: TextIO) -> None:
    """Make the `local:` datasets of the runs to execute once, before the sweep (not once per worker)."""
    names = sorted({p.run.dataset for p in plans if p.executes and p.run.dataset.startswith("local:")})
    for name in names:
        t0 = time.time()
        with open(out / "prepare.log", "ab") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} prepare {name}\n".encode())
            log.flush()
            rc = subprocess.run([sys.executable, "-c", _PREPARE, name], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        state = "ok" if rc == 0 else f"FAILED (exit {rc}; see {out / 'prepare.log'}; its runs will fail)"
        print(f"  dataset   {name}: {state} in {fmt_time(time.time() - t0)}", file=stream, flush=True)


def _print_dry_run(plans: list[Plan], packs: list[list[Plan]], stream: TextIO) -> None:
    """What a sweep would do: the runs it leaves, then each process with its runs and its command line."""
    for p in plans:
        if not p.executes:
            print(f"  {p.action:11s} {p.run.id}{f' ({p.reason})' if p.reason else ''}", file=stream)
    for group in packs:
        resume = any(p.action == "resume" for p in group)
        for p in group:
            print(f"  {p.action:11s} {p.run.id}{f' ({p.reason})' if p.reason else ''}", file=stream)
        print(f"      {shlex.join(pack_command([p.run for p in group], resume))}", file=stream)
    counts: dict[str, int] = {}
    for p in plans:
        counts[p.action] = counts.get(p.action, 0) + 1
    print("dry run: " + ", ".join(f"{n} {a}" for a, n in counts.items()), file=stream, flush=True)


def run_suite(suite: Suite, budget: str | None = None, workers: int = 1, backend: str = "local",
              out: str | Path | None = None, only: str | None = None, dry_run: bool = False,
              device: str | None = None, threads: int | None = None, prepare: bool = True,
              retry_failed: bool = True, stream: TextIO | None = None, pack: int = 0) -> SweepResult:
    """Run (or with dry_run list) every run of a suite that is not finished yet.

    The seeds of one (algorithm, dataset) train in one process when the file supports `--seeds`, at most `pack`
    together (0: all of them; 1: one process per run). Run lines go to `stream` (default stdout), the progress bar
    to stderr."""
    stream = stream or sys.stdout
    workers = max(1, int(workers))
    if backend not in BACKENDS:
        raise SuiteError(f"backend must be {' or '.join(BACKENDS)}, not {backend!r}")
    out = Path(out or default_out(suite)).resolve()
    runs = select(suite.runs(out, budget, device), only)
    if not runs:
        raise SuiteError(f"{suite.name}: no run matches --only {only!r}")
    plans = [plan_run(r, retry_failed) for r in runs]
    todo = [p for p in plans if p.executes]
    packs = make_packs(todo, pack)
    budget = runs[0].budget
    header = (f"suite {suite.name} ({display_path(suite.path)}), budget {budget}: {len(runs)} runs, "
              f"{len(todo)} to run in {len(packs)} process(es), {len(runs) - len(todo)} skipped; out {out}")
    print(header, file=stream, flush=True)
    if dry_run:
        _print_dry_run(plans, packs, stream)
        return SweepResult(plans, [], out)
    missing = suite.missing_files({p.run.algorithm for p in todo})
    if missing:
        raise SuiteError(missing[0])
    out.mkdir(parents=True, exist_ok=True)
    env = worker_env(workers, threads)
    print(f"workers {workers} ({backend}), {env['OMP_NUM_THREADS']} thread(s) each", file=stream, flush=True)
    if prepare and todo:
        prepare_datasets(todo, env, out, stream)
    result = SweepResult(plans, [], out)
    progress = Progress(suite.name, len(runs), stream, skipped=sum(p.action == "skip" for p in plans),
                        failed=sum(p.action == "skip-failed" for p in plans),
                        busy=sum(p.action == "busy" for p in plans))
    try:
        with progress:
            BACKENDS[backend](packs, env, workers, out, progress, result)
    except KeyboardInterrupt:
        result.interrupted = True
        print(f"interrupted: stopped the running runs; the same command resumes the sweep ({out})", file=stream,
              flush=True)
        return result
    print(progress.line(), file=stream, flush=True)
    if result.failed:
        print(f"{len(result.failed)} run(s) failed; see {out / FAILURES_FILE}", file=stream, flush=True)
    return result
