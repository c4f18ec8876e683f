"""Planning a sweep: which runs to start, resume, retry, rerun or skip (decided from each run directory alone), and
how the runs to execute are packed into processes (the seeds of one algorithm and dataset together)."""

from __future__ import annotations

import fcntl
import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from o2o.records import CORRUPT, LOCK_FILE, is_finished, read_json, read_summary
from o2o.suite.fields import supports_seeds
from o2o.suite.spec import Run

RUN_FILE = "run.json"


@dataclass
class Plan:
    """What the runner will do with one run: skip, start, resume, retry, rerun (stale) or leave (busy)."""

    run: Run
    action: str
    reason: str = ""

    @property
    def executes(self) -> bool:
        """Whether the run will be started."""
        return self.action in ("start", "resume", "retry", "rerun")


def select(runs: list[Run], only: str | None) -> list[Run]:
    """Runs whose id, algorithm or dataset matches one of the comma-separated fnmatch patterns."""
    if not only:
        return runs
    pats = [p.strip() for p in only.split(",") if p.strip()]
    return [r for r in runs if any(fnmatch.fnmatchcase(x, p) for p in pats for x in (r.id, r.algorithm, r.dataset))]


def stale_reason(run: Run) -> str:
    """Why a run directory's records belong to another run (budget, args, dataset or seed changed); '' if not."""
    out = Path(run.out)
    summary = read_summary(out)
    if summary and summary.get("budget") not in (None, run.budget):
        return f"budget {summary.get('budget')} -> {run.budget}"
    recorded = read_json(out / RUN_FILE)
    if recorded and isinstance(recorded.get("spec"), dict):
        old = recorded["spec"]
        for key in ("budget", "args", "dataset", "seed"):
            if key in old and old[key] != run.spec()[key]:
                return f"{key} {old[key]} -> {run.spec()[key]}"
    return ""


def _locked(run_dir: Path) -> bool:
    lock = run_dir / LOCK_FILE
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def plan_run(run: Run, retry_failed: bool = True) -> Plan:
    """Decide from the run directory alone what to do with a run (the runner's only state is on disk)."""
    out = Path(run.out)
    if not out.exists():
        return Plan(run, "start")
    if _locked(out):
        return Plan(run, "busy", "another process is running it")
    return plan_from_records(run, retry_failed)


def plan_from_records(run: Run, retry_failed: bool = True) -> Plan:
    """plan_run without the lock test: what the run directory's records say (also used under the run's lock)."""
    out = Path(run.out)
    if not out.exists():
        return Plan(run, "start")
    stale = stale_reason(run)
    if stale:
        return Plan(run, "rerun", f"stale: {stale}")
    if is_finished(out):
        return Plan(run, "skip", (read_summary(out) or {}).get("status", "finished"))
    summary = read_summary(out) or {}
    failed = summary.get("status") == "failed"
    if failed and not retry_failed:
        return Plan(run, "skip-failed", "failed before")
    if (out / "checkpoint.pt").exists():
        if failed and CORRUPT in str(summary.get("error") or ""):  # never resumable: start afresh, once
            return Plan(run, "rerun", "its checkpoint is corrupt; from scratch")
        return Plan(run, "resume", "failed before; from checkpoint" if failed else "checkpoint")
    if failed:
        return Plan(run, "retry", "failed before")
    return Plan(run, "start", "interrupted before a checkpoint" if summary.get("status") == "running" else "")


def _checkpoint_step(out: Path) -> int | str | None:
    """Step of a run directory's committed (or completely staged) checkpoint; None without one."""
    if not (out / "checkpoint.pt").exists():
        return None
    for name in ("checkpoint.json", ".checkpoint.json.new"):
        meta = read_json(out / name)
        if meta is not None and isinstance(meta.get("step"), int):
            return meta["step"]
    return f"unknown:{out}"  # no sidecar: a pack of its own


def make_packs(plans: Sequence[Plan], pack: int = 0) -> list[list[Plan]]:
    """Group the runs to execute into processes: the seeds of one (algorithm, dataset, args) whose file supports
    `--seeds`, at most `pack` together (0: no cap; 1: one process per run), split by checkpoint step so that a
    pack resumes together (the engine resumes seeds only from one common step). Order of first appearance."""
    groups: dict[tuple[Any, ...], list[Plan]] = {}
    capable: dict[str, bool] = {}
    for p in plans:
        file = p.run.file
        if file not in capable:
            capable[file] = pack != 1 and supports_seeds(file)
        if not capable[file]:
            groups[("single", p.run.id)] = [p]
            continue
        step = None if p.action == "rerun" else _checkpoint_step(Path(p.run.out))
        groups.setdefault((*p.run.pack_key(), step), []).append(p)
    out: list[list[Plan]] = []
    for members in groups.values():
        size = len(members) if pack <= 0 else pack
        out += [members[i:i + size] for i in range(0, len(members), size)]
    return out


def pack_command(runs: Sequence[Run], resume: bool = False) -> list[str]:
    """One process for the seeds of runs that share a pack_key: `--seeds a,b,c --out <parent of their seed dirs>`
    (each seed writes `<out>/seed<N>/`, the engine's layout); a single run keeps its own `--seed` command."""
    if len(runs) == 1:
        return runs[0].command(resume)
    first = runs[0]
    cmd = first.command(resume)
    i = cmd.index("--seed")
    cmd[i:i + 2] = ["--seeds", ",".join(str(r.seed) for r in runs)]
    j = cmd.index("--out")
    cmd[j + 1] = str(Path(first.out).parent)
    return cmd
