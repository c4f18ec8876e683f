"""One pack of runs as one process: lock the run directories, start the algorithm file, wait, read how each run
ended and record failures (in the run's summary.json and the sweep's failures.csv). Both backends execute packs
with these functions; nothing that matters is kept in memory."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from o2o.records import atomic_write, clear_records, is_finished, lock_run_dir, read_json, read_summary
from o2o.suite.plan import RUN_FILE, Plan, pack_command, plan_from_records, stale_reason
from o2o.suite.spec import ROOT, Run

LOG_FILE = "log.txt"
FAILURES_FILE = "failures.csv"
FAILURE_COLUMNS = ["time", "run_id", "algorithm", "dataset", "seed", "exit_code", "run_dir", "error"]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "O2O_NUM_THREADS")
TAIL_LINES = 30
TAIL_CHARS = 4000

# Started as `python -c _EXEC <file> <args...>`: the run dies with the runner (SIGTERM on the parent's death), then
# the interpreter replaces itself with `python <file> <args...>`, so the algorithm sees its usual sys.argv.
_EXEC = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "parent = os.environ.get('O2O_SUITE_PARENT')\n"
    "if parent and os.getppid() != int(parent):\n"
    "    sys.exit(143)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


@dataclass
class Outcome:
    """How one started run ended."""

    run: Run
    status: str  # finished | diverged | failed | busy | interrupted
    returncode: int | None = None
    seconds: float = 0.0
    error: str | None = None
    score: float | None = None
    resumed: bool = False


@dataclass
class RunningPack:
    """A started process and what it holds: its runs (one, or the seeds of a pack), their locks and its log."""

    runs: list[Run]
    proc: subprocess.Popen[bytes]
    lock_fds: list[int]
    log: Any
    log_path: Path
    offset: int
    started: float
    resumed: bool

    @property
    def label(self) -> str:
        """`algo/dataset/seedN`, or `algo/dataset/seed{a,b,c}` for a pack."""
        if len(self.runs) == 1:
            return self.runs[0].id
        first = self.runs[0]
        return f"{first.algorithm}/{first.dataset}/seed{{{','.join(str(r.seed) for r in self.runs)}}}"


def worker_env(workers: int, threads: int | None = None) -> dict[str, str]:
    """Environment of every run: thread caps of max(1, cores // workers), unbuffered output, the project importable."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = threads if threads else max(1, cores // max(1, workers))
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(n)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def launch(pack: Sequence[Plan], env: dict[str, str]) -> tuple[RunningPack | None, list[Run]]:
    """Lock the run directories of a pack and start one process for the runs that still need it.

    Returns the started process (None when nothing is left to run) and the runs it did not start: locked by another
    process, or finished by another runner since they were planned.
    """
    fds: list[int] = []
    runs: list[Run] = []
    left: list[Run] = []
    try:
        for plan in pack:
            run = plan.run
            out = Path(run.out)
            fd = lock_run_dir(out)
            if fd is None:
                left.append(run)
                continue
            now = plan_from_records(run)  # planned before the lock: another runner may have run it since
            if now.action == "skip":
                os.close(fd)
                left.append(run)
                continue
            if now.action == "rerun":
                clear_records(out)
            fds.append(fd)
            runs.append(run)
        if not runs:
            return None, left
        resume = any((Path(r.out) / "checkpoint.pt").exists() for r in runs)
        cmd = pack_command(runs, resume)
        log_path = Path(runs[0].out) / LOG_FILE
        for run in runs:
            out = Path(run.out)
            previous = read_json(out / RUN_FILE) or {}
            atomic_write(out / RUN_FILE, json.dumps({
                "spec": run.spec(), "command": shlex.join(cmd), "resume": resume,
                "pack": [r.seed for r in runs] if len(runs) > 1 else None,
                "attempts": int(previous.get("attempts", 0)) + 1,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }, indent=2) + "\n")
            if out / LOG_FILE != log_path:  # a pack writes one log, in its first seed's directory
                with open(out / LOG_FILE, "ab") as f:
                    f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} packed with seeds {[r.seed for r in runs]}: "
                            f"output in {log_path}\n".encode())
        log = open(log_path, "ab")
        offset = log.tell()
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if resume else 'start'}: {shlex.join(cmd)}\n"
                  .encode())
        log.flush()
        child_env = {**env, "O2O_SUITE_PARENT": str(os.getpid())}
        try:
            proc = subprocess.Popen([sys.executable, "-c", _EXEC, *cmd[1:]], cwd=ROOT, env=child_env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=tuple(fds),
                                    start_new_session=True)
        except BaseException:
            log.close()
            raise
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return RunningPack(runs, proc, fds, log, log_path, offset, time.time(), resume), left


def _log_tail(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("=== ")]
    return "\n".join(lines[-TAIL_LINES:])[-TAIL_CHARS:]


def record_failure(run: Run, returncode: int | None, error: str, log: Path | None = None) -> None:
    """Give the run's summary.json status 'failed' and the error (written from scratch when the run left none)."""
    out = Path(run.out)
    summary = read_summary(out)
    if summary is None:
        summary = {"algorithm": run.algorithm, "dataset": run.dataset, "seed": run.seed, "budget": run.budget,
                   "last_score": None, "best_score": None, "steps": 0, "env_steps": 0, "n_evals": 0,
                   "config": {"args": dict(run.args)}, "extra": {}}
    summary["status"] = "failed"
    summary["error"] = error
    extra = summary.get("extra") if isinstance(summary.get("extra"), dict) else {}
    summary["extra"] = {**extra, "exit_code": returncode, "log": str(log or out / LOG_FILE)}
    summary["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def conclude(act: RunningPack, returncode: int) -> list[Outcome]:
    """Close the process's files and locks, read how each of its runs ended and record failures."""
    act.log.close()
    try:
        seconds = (time.time() - act.started) / len(act.runs)  # each seed's share of the process
        tail = None
        outcomes = []
        for run in act.runs:
            out = Path(run.out)
            if is_finished(out):
                s = read_summary(out) or {}
                outcomes.append(Outcome(run, str(s.get("status")), returncode, seconds, s.get("error"),
                                        s.get("last_score"), act.resumed))
                continue
            tail = _log_tail(act.log_path, act.offset) if tail is None else tail
            why = f"exit code {returncode}" if returncode != 0 else "exit code 0 but no finished summary.json"
            if returncode < 0:
                why = f"killed by signal {-returncode}"
            error = f"{why}\n{tail}".strip()
            record_failure(run, returncode, error, act.log_path)
            outcomes.append(Outcome(run, "failed", returncode, seconds, error, None, act.resumed))
        return outcomes
    finally:
        for fd in act.lock_fds:
            os.close(fd)


def stop(act: RunningPack, grace: float = 10.0) -> None:
    """Stop a running process (SIGTERM to its process group, SIGKILL after `grace` seconds); nothing is recorded."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(act.proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            act.proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    act.log.close()
    for fd in act.lock_fds:
        os.close(fd)


def not_started(run: Run) -> Outcome:
    """How a run `launch` did not start ended: finished by another runner since it was planned, else busy."""
    out = Path(run.out)
    if is_finished(out) and not stale_reason(run):
        s = read_summary(out) or {}
        return Outcome(run, str(s.get("status")), None, 0.0, s.get("error"), s.get("last_score"))
    return Outcome(run, "busy")


def execute_pack(pack: Sequence[Plan], env: dict[str, str]) -> list[Outcome]:
    """Run one planned pack (or single run) to its end (blocking): lock, start, wait, record."""
    act, left = launch(pack, env)
    outcomes = [not_started(r) for r in left]
    if act is None:
        return outcomes
    try:
        rc = act.proc.wait()
    except BaseException:
        stop(act)
        raise
    return outcomes + conclude(act, rc)


def execute_run(plan: Plan, env: dict[str, str]) -> Outcome:
    """Run one planned run to its end (blocking): lock, start, wait, record."""
    return execute_pack([plan], env)[0]


def append_failure(out: Path, outcome: Outcome) -> None:
    """One line in `<suite out>/failures.csv` for a failed run."""
    path = out / FAILURES_FILE
    new = not path.exists()
    last = (outcome.error or "").strip().splitlines()
    row = [time.strftime("%Y-%m-%dT%H:%M:%S%z"), outcome.run.id, outcome.run.algorithm, outcome.run.dataset,
           outcome.run.seed, outcome.returncode, outcome.run.out, last[-1] if last else ""]
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(FAILURE_COLUMNS)
        w.writerow(row)
        f.flush()
        os.fsync(f.fileno())
