"""Run records: `summary.json` and `evals.csv` in a run's output directory, written atomically.

They are the contract between the algorithm files, the suite runner and the analysis (README, "Run records").
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from o2o.loggers import Logger, check_logger, numbers, open_logger

EVAL_COLUMNS = ["step", "phase", "env_steps", "normalized_score", "return_mean", "return_std", "success_rate",
                "length_mean"]
EPISODE_COLUMNS = ["step", "phase", "env_steps", "episode", "return", "normalized_score", "length", "success"]
STATUSES = ("running", "finished", "diverged", "failed")
PACKAGES = ("torch", "numpy", "gymnasium", "gymnasium-robotics", "mujoco", "h5py", "minari")


def atomic_write(path: str | Path, text: str) -> None:
    """Write text to `path` through a temporary file and os.replace (never a half-written file)."""
    atomic_save(path, lambda f: f.write(text.encode()))


def atomic_save(path: str | Path, write: Any) -> None:
    """Write a file through `write(binary file object)` to a temporary file, then os.replace (never half-written)."""
    with staged_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


@contextlib.contextmanager
def staged_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` to write (for writers that want a path, such as h5py): on success it is synced
    and replaces `path`; on an error it is removed. Either way `path` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; records are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


CORRUPT = "is corrupt or truncated"  # in the message of every checkpoint that cannot be read (the suite looks for it)
LOCK_FILE = ".lock"  # a run directory's lock: held by whoever trains the run (the suite runner or the run itself)


def lock_run_dir(out: str | Path) -> int | None:
    """Take `<out>/.lock` (flock, non-blocking): the open descriptor, to keep while the run lives; None when another
    process holds it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a result."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    import platform

    out["python"] = platform.python_version()
    return out


def git_commit() -> str | None:
    """HEAD of the project's checkout, with '-dirty' when it has uncommitted changes; None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(requested: Any = "auto") -> str:
    """The device a run's `--device` resolves to, as the report prints it: 'cpu' or 'cuda:0 (GPU name)'."""
    try:
        import torch
    except ImportError:
        return str(requested)
    if requested in (None, "auto"):
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    name = str(requested)
    if name.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(name).index or 0
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return name


def _clean(x: Any) -> Any:
    """JSON-safe value: NaN/inf become None, numpy scalars become Python numbers, paths strings."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            x = x.item()
        except (ValueError, AttributeError):
            return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class RunRecorder:
    """Keeps a run's evaluations and writes summary.json and evals.csv after every change.

    `config["logger"]` (the `--logger` of o2o.cli.RunConfig; csv when absent) names an experiment logger that gets
    the same rows as well: evaluations from log_eval, training metrics from log_metrics (o2o.loggers). It is opened at
    the first row and closed by finish.
    """

    def __init__(self, out: str | Path, algorithm: str, dataset: str, seed: int, config: dict[str, Any],
                 budget: str | None = None, resume: bool = False) -> None:
        self.logger_name = str(config.get("logger", "csv"))
        check_logger(self.logger_name)  # before anything is written
        self.logger: Logger | None = None
        self.logger_keep_until: int | None = None if resume else -1  # what the logger keeps of an earlier one's
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.base = {"algorithm": algorithm, "dataset": dataset, "seed": int(seed), "budget": budget}
        self.config = config
        self.device = device_name(config.get("device", "auto"))
        self.rows: list[dict[str, Any]] = []
        self.extra_columns: list[str] = []
        self.started = time.time()
        self.elapsed_before = 0.0
        self.steps = 0
        self.env_steps = 0
        self.status = "running"
        self.error: str | None = None
        self.extra: dict[str, Any] = {}
        self.final: dict[str, Any] = {}  # the final evaluation (--final-eval-episodes), when there is one
        if resume:
            self._load()
        else:
            (self.out / "episodes.csv").unlink(missing_ok=True)
        self.write()

    def _load(self) -> None:
        ev = self.out / "evals.csv"
        if ev.exists():
            with open(ev) as f:
                reader = csv.DictReader(f)
                self.extra_columns = [c for c in (reader.fieldnames or []) if c not in EVAL_COLUMNS]
                for row in reader:
                    self.rows.append({k: _parse(v) for k, v in row.items()})
        sm = self.out / "summary.json"
        if sm.exists():
            try:
                old = json.loads(sm.read_text())
                self.elapsed_before = float(old.get("wall_time_s") or 0.0)
                self.extra = old.get("extra") or {}
            except (json.JSONDecodeError, ValueError):
                pass

    def truncate_after(self, step: int) -> None:
        """Drop evaluations (and their episodes) logged after `step` (a resumed run continues from its checkpoint)."""
        self.rows = [r for r in self.rows if int(r["step"]) <= step]
        self.write()
        truncate_csv(self.out / "episodes.csv", step)
        self.logger_keep_until = int(step)  # the experiment logger drops what it had after `step`

    def log_episodes(self, step: int, phase: str, env_steps: int, returns: Any, normalized: Any, lengths: Any,
                     successes: Any) -> None:
        """Append one evaluation's episodes to episodes.csv (one row each: return, score, length, success)."""
        path = self.out / "episodes.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(EPISODE_COLUMNS)
            for i, (r, z, n, ok) in enumerate(zip(returns, normalized, lengths, successes)):
                w.writerow([int(step), phase, int(env_steps), i, f"{float(r):.6g}", f"{float(z):.6g}", int(n),
                            int(bool(ok))])

    def log_eval(self, step: int, phase: str, env_steps: int, normalized_score: float, return_mean: float,
                 return_std: float, success_rate: float | None = None, length_mean: float | None = None,
                 **extra: float) -> None:
        """Append one evaluation row (phase 'offline' or 'online'); extra columns are kept after the standard ones."""
        if phase not in ("offline", "online"):
            raise ValueError(f"phase must be 'offline' or 'online', not {phase!r}")
        row = dict(step=int(step), phase=phase, env_steps=int(env_steps), normalized_score=float(normalized_score),
                   return_mean=float(return_mean), return_std=float(return_std),
                   success_rate=None if success_rate is None else float(success_rate),
                   length_mean=None if length_mean is None else float(length_mean))
        for k, v in extra.items():
            if k not in self.extra_columns:
                self.extra_columns.append(k)
            row[k] = v
        self.rows.append(row)
        self.steps = max(self.steps, int(step))
        self.env_steps = max(self.env_steps, int(env_steps))
        self.write()
        self._log("eval", int(step), numbers({k: v for k, v in row.items() if k != "step"}))

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Hand one row of training metrics (the row metrics.csv gets) to the experiment logger; csv: nothing."""
        self._log("train", int(step), numbers(metrics))

    def _log(self, group: str, step: int, values: dict[str, float]) -> None:
        """Log to the experiment logger of `--logger`, opening it at the first row (none for csv)."""
        if self.logger_name == "csv":
            return
        if self.logger is None:
            title = f"{self.base['algorithm']}/{self.base['dataset']}/seed{self.base['seed']}"
            self.logger = open_logger(self.logger_name, self.out, self.config, title, self.logger_keep_until,
                                      self.extra)
            self.write()  # the summary keeps what a resumed run needs to continue this log (extra.wandb_run_id)
        self.logger.log(group, step, values)

    def log_final(self, normalized_score: float, success_rate: float | None, episodes: int) -> None:
        """Record the final evaluation (many episodes after training): summary.json's final_score."""
        self.final = {"normalized_score": float(normalized_score), "episodes": int(episodes),
                      "success_rate": None if success_rate is None else float(success_rate)}
        self.write()

    def progress(self, steps: int, env_steps: int = 0) -> None:
        """Record how far training got (written with the next summary)."""
        self.steps, self.env_steps = int(steps), int(env_steps)

    def finish(self, status: str = "finished", error: str | None = None) -> None:
        """Mark the run finished, diverged or failed and write the final records."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        self.status, self.error = status, error
        self.write()
        if self.logger is not None:
            self.logger.close()
            self.logger = None

    def summary(self) -> dict[str, Any]:
        """The summary.json content computed from the evaluations so far."""
        def scores(phase: str | None) -> list[float]:
            return [r["normalized_score"] for r in self.rows if phase is None or r["phase"] == phase]

        def last(xs: list[float]) -> float | None:
            return xs[-1] if xs else None

        def best(xs: list[float]) -> float | None:
            return max(xs) if xs else None

        allx, off, on = scores(None), scores("offline"), scores("online")
        succ = [r["success_rate"] for r in self.rows if r.get("success_rate") is not None]
        return _clean({
            **self.base,
            "status": self.status,
            "last_score": last(allx), "best_score": best(allx),
            "offline_score": last(off), "online_score": last(on),
            "offline_best": best(off), "online_best": best(on),
            "last_success_rate": last(succ),
            "final_score": self.final.get("normalized_score"),
            "final_success_rate": self.final.get("success_rate"),
            "final_episodes": self.final.get("episodes"),
            "wall_time_s": round(self.elapsed_before + time.time() - self.started, 3),
            "steps": self.steps, "env_steps": self.env_steps,
            "n_evals": len(self.rows),
            "config": self.config,
            "versions": package_versions(),
            "device": self.device,
            "git_commit": git_commit(),
            "error": self.error,
            "extra": self.extra,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })

    def write(self) -> None:
        """Write evals.csv then summary.json, each atomically."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EVAL_COLUMNS + self.extra_columns, extrasaction="ignore")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        atomic_write(self.out / "evals.csv", buf.getvalue())
        atomic_write(self.out / "summary.json", json.dumps(self.summary(), indent=2, sort_keys=False) + "\n")


def _parse(v: str) -> Any:
    if v == "":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def truncate_csv(path: str | Path, step: int) -> None:
    """Keep the header and the rows whose first column (step) is <= `step`, atomically; malformed rows (a line cut
    by a kill) are dropped. Nothing happens when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = rows[:1] + [r for r in rows[1:] if len(r) == len(rows[0]) and r[0].isdigit() and int(r[0]) <= step]
    buf = io.StringIO()
    csv.writer(buf).writerows(keep)
    atomic_write(path, buf.getvalue())


# What a run writes into its directory (the suite's run.json and log.txt aside): removed before it trains afresh.
RUN_RECORDS = ("summary.json", "config.yaml", "evals.csv", "episodes.csv", "metrics.csv", "checkpoint.pt",
               "checkpoint.json", "betas.npy", "policy.pt")


def clear_records(out: str | Path, also: tuple[str, ...] = ()) -> None:
    """Remove a run directory's records (RUN_RECORDS and `also`), so that nothing of an earlier run is left."""
    for name in (*RUN_RECORDS, *also):
        (Path(out) / name).unlink(missing_ok=True)


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None when absent, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_summary(out: str | Path) -> dict[str, Any] | None:
    """summary.json of a run directory, or None when absent or unreadable."""
    p = Path(out) / "summary.json"
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_finished(out: str | Path) -> bool:
    """True when the run directory holds a valid summary of a run that ended (finished or diverged)."""
    s = read_summary(out)
    return bool(s) and s.get("status") in ("finished", "diverged") and (Path(out) / "evals.csv").exists()
