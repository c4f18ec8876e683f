"""Training-loop plumbing shared by every algorithm file: seeding, device metrics, checkpoints, divergence, eval."""

from __future__ import annotations

import csv
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from o2o.evaluation import EvalResult, evaluate
from o2o.records import RunRecorder
from o2o.registry import DatasetSpec, score_reference


class DivergenceError(RuntimeError):
    """A loss or metric became NaN or inf: the run stops and its record says it diverged."""


def run_recorded(name: str, recorder: RunRecorder, body: Callable[[], Any], threads: int = 0) -> tuple[bool, Any]:
    """Run body() under its record: (True, result), or (False, None) after a DivergenceError recorded as 'diverged'.

    Any other exception is recorded as 'failed' and re-raised. threads > 0 sets torch's CPU threads meanwhile.
    The caller finishes the record ('finished') after adding what it wants to the summary.
    """
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return True, body()
    except DivergenceError as e:
        print(f"[{name}] diverged: {e}", flush=True)
        recorder.finish("diverged", f"diverged: {e}")
        return False, None
    except BaseException as e:
        recorder.finish("failed", f"{type(e).__name__}: {e}")
        raise
    finally:
        torch.set_num_threads(previous)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class MetricLog:
    """Accumulates metrics as device tensors and syncs with the host once every `flush` (never per step)."""

    def __init__(self, path: str | Path | None = None, total_steps: int | None = None, name: str = "") -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.path = Path(path) if path else None
        self.total = total_steps
        self.name = name
        self.t0 = time.time()
        self.last_t = self.t0
        self.last_step = 0

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        """Add this step's metrics (detached device tensors); no host sync."""
        for k, v in metrics.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def flush(self, step: int, phase: str = "offline", quiet: bool = False) -> dict[str, float]:
        """Average since the last flush (one host sync); raise DivergenceError on NaN/inf; print and append to CSV."""
        if not self.sums:
            return {}
        keys = list(self.sums)
        values = (torch.stack([self.sums[k] for k in keys]) / max(self.count, 1)).cpu().tolist()
        out = dict(zip(keys, values))
        self.sums, self.count = {}, 0
        bad = [k for k, v in out.items() if not np.isfinite(v)]
        if bad:
            raise DivergenceError(f"{', '.join(bad)} became NaN/inf at step {step} ({phase})")
        now = time.time()
        rate = (step - self.last_step) / max(now - self.last_t, 1e-9)
        self.last_t, self.last_step = now, step
        if self.path is not None:
            new = not self.path.exists()
            with open(self.path, "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(["step", "phase", *keys])
                w.writerow([step, phase, *[f"{v:.6g}" for v in values]])
        if not quiet:
            eta = ""
            if self.total and rate > 0:
                eta = f" eta {max(self.total - step, 0) / rate / 60:.1f} min"
            text = " ".join(f"{k}={v:.4g}" for k, v in list(out.items())[:6])
            print(f"[{self.name} {phase} {step}{'/' + str(self.total) if self.total else ''}] {rate:.0f} it/s{eta} "
                  f"{text}", flush=True)
        return out

    def reset_clock(self, step: int) -> None:
        """Restart the rate clock (after an evaluation, so it does not count as training time)."""
        self.last_t, self.last_step = time.time(), step


def check_finite(**tensors: torch.Tensor) -> None:
    """Raise DivergenceError when any tensor holds NaN/inf (one host sync; use at log intervals only)."""
    flags = torch.stack([torch.isfinite(t).all() for t in tensors.values()]).cpu().tolist()
    bad = [k for k, ok in zip(tensors, flags) if not ok]
    if bad:
        raise DivergenceError(f"{', '.join(bad)} became NaN/inf")


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a weights_only-loadable form."""
    np_state = np.random.get_state()
    return {
        "python": repr(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() saved."""
    import ast

    random.setstate(ast.literal_eval(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Atomic checkpoints in `<out>/checkpoint.pt`, loaded with weights_only=True."""

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / "checkpoint.pt"

    def save(self, state: dict[str, Any]) -> None:
        """torch.save to a temporary file, then os.replace."""
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The last checkpoint, or None when there is none."""
        if not self.path.exists():
            return None
        return torch.load(self.path, map_location=map_location, weights_only=True)


@dataclass
class Evaluator:
    """Evaluates a policy on the run's env with fresh deterministic seeds and logs the row to the recorder."""

    spec: DatasetSpec
    recorder: RunRecorder
    seed: int
    episodes: int
    obs_transform: Callable[[np.ndarray], np.ndarray] | None = None
    index: int = 0
    history: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.recorder.extra["score_reference"] = score_reference(self.spec)  # which reference returns scores use

    def __call__(self, policy: Callable[[np.ndarray], np.ndarray], step: int, phase: str, env_steps: int = 0,
                 **extra: float) -> EvalResult:
        """One evaluation, logged as a row of evals.csv and printed."""
        res = evaluate(policy, self.spec, n_episodes=self.episodes, seed=self.seed, eval_index=self.index,
                       obs_transform=self.obs_transform)
        self.index += 1
        self.recorder.log_eval(step, phase, env_steps, res.normalized_score, res.return_mean, res.return_std,
                               res.success_rate, **extra)
        self.history.append(res.normalized_score)
        sr = "" if res.success_rate is None else f" success {res.success_rate:.2f}"
        print(f"[eval {phase} step {step}] normalized {res.normalized_score:.1f} ± {res.normalized_std:.1f} "
              f"return {res.return_mean:.1f}{sr}", flush=True)
        return res


def torch_policy(actor: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> Callable[[np.ndarray],
                                                                                                  np.ndarray]:
    """Wrap a torch module's deterministic action function as `policy(obs_batch) -> action_batch` (numpy)."""
    @torch.no_grad()
    def policy(obs: np.ndarray) -> np.ndarray:
        return actor(torch.as_tensor(obs, device=device)).cpu().numpy()

    return policy


def config_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict."""
    return asdict(cfg)


def warn(msg: str) -> None:
    """One line to stderr."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)
