"""Runner backends: the same packs executed by a local pool of processes or as Ray tasks.

A backend is a function `(packs, env, workers, out, progress, result) -> None` that executes every pack, at most
`workers` at a time, and records each outcome as it comes (`record`); BACKENDS maps `--backend` names to them.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from o2o.suite.plan import Plan
from o2o.suite.process import (
    Outcome,
    RunningPack,
    append_failure,
    conclude,
    execute_pack,
    launch,
    not_started,
    record_failure,
    stop,
)
from o2o.suite.progress import Progress
from o2o.suite.spec import SuiteError


@dataclass
class SweepResult:
    """What a sweep did; `ok` when every selected run is finished or diverged."""

    plans: list[Plan]
    outcomes: list[Outcome]
    out: Path
    interrupted: bool = False

    @property
    def failed(self) -> list[Outcome]:
        """Runs that failed in this sweep."""
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when nothing failed, nothing was left busy and the sweep was not interrupted."""
        done = sum(p.action == "skip" for p in self.plans)
        ended = sum(o.status in ("finished", "diverged") for o in self.outcomes)
        return not self.interrupted and done + ended == len(self.plans)


Backend = Callable[[list[list[Plan]], dict[str, str], int, Path, Progress, SweepResult], None]


def record(outcome: Outcome, out: Path, progress: Progress, result: SweepResult) -> None:
    """Keep an outcome: in the result, in failures.csv when it failed, and on the progress."""
    result.outcomes.append(outcome)
    if outcome.status == "failed":
        append_failure(out, outcome)
    progress.event(outcome)


def sweep_local(todo: list[list[Plan]], env: dict[str, str], workers: int, out: Path, progress: Progress,
                result: SweepResult) -> None:
    """A pool of `workers` subprocesses (one per pack of seeds) driven from this thread (children die with it)."""
    pending = deque(todo)
    active: list[RunningPack] = []
    try:
        while pending or active:
            while pending and len(active) < workers:
                act, left = launch(pending.popleft(), env)
                for run in left:
                    record(not_started(run), out, progress, result)
                if act is not None:
                    active.append(act)
                    progress.write(f"  started   {act.label}{' (resume)' if act.resumed else ''}")
            for act in list(active):
                rc = act.proc.poll()
                if rc is not None:
                    active.remove(act)
                    for outcome in conclude(act, rc):
                        record(outcome, out, progress, result)
            progress.tick(sum(len(a.runs) for a in active))
            if active:
                time.sleep(0.2)
    except BaseException:
        for act in active:
            stop(act)
        raise


def _ray_execute(pack: list[Plan], env: dict[str, str]) -> list[Outcome]:
    """Ray task body: one pack, executed where the task lands (run directories must be on a shared filesystem)."""
    return execute_pack(pack, env)


def sweep_ray(todo: list[list[Plan]], env: dict[str, str], workers: int, out: Path, progress: Progress,
              result: SweepResult) -> None:
    """The same runs as Ray tasks, at most `workers` at a time (RAY_ADDRESS names a cluster, else a local one)."""
    try:
        import ray
    except ImportError:
        raise SuiteError("the ray backend needs ray: pip install 'o2o-bench[ray]' (or pip install ray)") from None
    started_here = not ray.is_initialized()
    if started_here:
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=1, max_retries=0)(_ray_execute)
    pending = deque(todo)
    inflight: dict[Any, list[Plan]] = {}
    try:
        while pending or inflight:
            while pending and len(inflight) < workers:
                pack = pending.popleft()
                inflight[task.remote(pack, env)] = pack
                progress.write(f"  submitted {', '.join(p.run.id for p in pack)}")
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                pack = inflight.pop(ref)
                try:
                    outcomes = ray.get(ref)
                except Exception as e:  # a task that died without Outcomes (worker lost, ...)
                    error = f"ray task error: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}"
                    outcomes = []
                    for plan in pack:
                        record_failure(plan.run, None, error)
                        outcomes.append(Outcome(plan.run, "failed", None, 0.0, error))
                for outcome in outcomes:
                    record(outcome, out, progress, result)
            progress.tick(sum(len(p) for p in inflight.values()))
    except BaseException:
        for ref in inflight:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


BACKENDS: dict[str, Backend] = {"local": sweep_local, "ray": sweep_ray}
