"""Training-loop plumbing shared by every algorithm file: seeding, device metrics, checkpoints, divergence, eval."""

from __future__ import annotations

import csv
import ctypes
import hashlib
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from o2o.evaluation import EvalResult, evaluate_members
from o2o.nets import NETS_LAYOUT
from o2o.records import CORRUPT, RunRecorder, read_json
from o2o.registry import DatasetSpec, score_reference


class DivergenceError(RuntimeError):
    """A loss or metric became NaN or inf: the run stops and its record says it diverged."""


def run_recorded(name: str, recorder: RunRecorder | Sequence[RunRecorder], body: Callable[[], Any],
                 threads: int = 0) -> tuple[bool, Any]:
    """Run body() under its records: (True, result), or (False, None) after a DivergenceError recorded as 'diverged'.

    `recorder` is one run's record or the records of a pack of seeds; only those still 'running' are marked. Any
    other exception is recorded as 'failed' and re-raised. threads > 0 sets torch's CPU threads meanwhile. The
    caller finishes the records ('finished') after adding what it wants to the summary.
    """
    recorders = [recorder] if isinstance(recorder, RunRecorder) else list(recorder)
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return True, body()
    except DivergenceError as e:
        print(f"[{name}] diverged: {e}", flush=True)
        for r in recorders:
            if r.status == "running":
                r.finish("diverged", f"diverged: {e}")
        return False, None
    except BaseException as e:
        for r in recorders:
            if r.status == "running":
                r.finish("failed", f"{type(e).__name__}: {e}")
        raise
    finally:
        torch.set_num_threads(previous)


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def retain_freed_memory(device: torch.device) -> bool:
    """On a CPU device under glibc, keep freed memory in the process for the next update: every allocation from
    then on is served from the heap (mallopt M_MMAP_MAX = 0) and the heap's free top is not returned to the system
    below 2 GiB (M_TRIM_THRESHOLD). Without it, each large temporary of an update (a CQL critic activation: 16 MB
    per seed) is mapped afresh and faults its pages in again at every update (benchmarks/bench_engine.py,
    test_retained_memory, counts them). The same choice PyTorch's CPU launcher makes with jemalloc
    (torch.backends.xeon.run_cpu: dirty and muzzy decay off). Call it once setup is done, so that the temporaries
    of loading are still returned. A no-op elsewhere; returns whether it applied."""
    if device.type != "cpu" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


class GraphedStep:
    """A compiled update replayed as one CUDA graph: the whole step, batch sampling and optimiser steps included.

    LeanRL's recipe: torch.compile fuses the kernels, then the entire call is captured (torch.cuda.graph), graph
    breaks and all (backward passes, fused Adam, zero_grad run as captured kernels too), so an update costs one
    launch. Each argument tuple (offline / online) gets its own graph: its first `warmup` calls run `fn` as it is,
    on a side stream as capture requires (lazy compilation of the backward, library workspaces, optimiser state);
    the next call captures and replays. Every call is exactly one update, as in eager mode.

    A replay runs the captured kernels on fixed addresses and no Python: whatever the update reads that changes
    between steps must be a tensor changed in place (random-stream counters, buffer counts, IQL's lr, CQL's step),
    never a Python value (tests/test_engine.py::test_update_reads_no_python_value_that_changes). Outputs are the
    graph's own tensors, rewritten by the next replay: read them before the next call (MetricLog.add does).
    If capture fails, one warning line, and `fn` runs on uncaptured.
    """

    def __init__(self, fn: Callable[..., Any], warmup: int = 3) -> None:
        self.fn, self.warmup = fn, warmup
        self.calls: dict[tuple, int] = {}
        self.graphs: dict[tuple, tuple[Any, Any]] = {}  # args -> (graph, its output)
        self.failed: str | None = None
        self._stream: Any = None

    def __call__(self, *args: Any) -> Any:
        if args in self.graphs:
            graph, out = self.graphs[args]
            graph.replay()
            return out
        if self.failed is not None:
            return self.fn(*args)
        n = self.calls[args] = self.calls.get(args, 0) + 1
        if n <= self.warmup:
            return self._warm(args)
        try:
            graph, out = self._capture(args)
        except Exception as e:  # a host sync, a CPU tensor, an unsupported op in the update: run it uncaptured
            self.failed = error_line(e)
            warn(f"CUDA graph capture of the update failed ({self.failed}); it runs compiled, without a graph")
            return self.fn(*args)
        self.graphs[args] = (graph, out)
        graph.replay()  # capture records the kernels without running them: this is the call's update
        return out

    def _warm(self, args: tuple) -> Any:
        """One update on a side stream, ordered after and before the current stream's work."""
        if self._stream is None:
            self._stream = torch.cuda.Stream()
        current = torch.cuda.current_stream()
        self._stream.wait_stream(current)
        with torch.cuda.stream(self._stream):
            out = self.fn(*args)
        current.wait_stream(self._stream)
        return out

    def _capture(self, args: tuple) -> tuple[Any, Any]:
        """Record one call of `fn` as a CUDA graph (nothing runs); (graph, its output tensors)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fn(*args)
        return graph, out


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
    """Accumulates metrics as device tensors and syncs with the host once every `flush` (never per step).

    A metric is a scalar tensor, or a (S,) tensor with one value per seed of a pack; then `path` is the list of the
    seeds' CSV files and `flush_members` writes each seed's row to its own file. `recorders` (one per path, optional)
    get the same rows for their experiment logger (RunRecorder.log_metrics, `--logger`).
    """

    def __init__(self, path: str | Path | Sequence[str | Path] | None = None, total_steps: int | None = None,
                 name: str = "", recorders: Sequence[RunRecorder] | None = None) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        paths = list(path) if isinstance(path, (list, tuple)) else [path]
        self.paths = [Path(p) if p else None for p in paths]
        self.path = self.paths[0]
        self.recorders: list[RunRecorder | None] = list(recorders) if recorders else [None] * len(self.paths)
        if len(self.recorders) != len(self.paths):
            raise ValueError(f"MetricLog: {len(self.recorders)} recorders for {len(self.paths)} metric files")
        self.total = total_steps
        self.name = name
        self.t0 = time.time()
        self.last_t = self.t0
        self.last_step = 0

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        """Add this step's metrics (detached device tensors); no host sync."""
        if self.sums and self.sums.keys() == metrics.keys():  # the usual case: one fused add for all metrics
            keys = list(self.sums)
            torch._foreach_add_([self.sums[k] for k in keys], [metrics[k].detach().float() for k in keys])
        else:
            for k, v in metrics.items():
                v = v.detach().float()
                self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def flush(self, step: int, phase: str = "offline", quiet: bool = False) -> dict[str, float]:
        """Average since the last flush (one host sync); raise DivergenceError on NaN/inf; print and append to CSV."""
        out = self.flush_members(step, phase, quiet)
        if not out:
            return {}
        bad = [k for k, v in out[0].items() if not np.isfinite(v)]
        if bad:
            raise DivergenceError(f"{', '.join(bad)} became NaN/inf at step {step} ({phase})")
        return out[0]

    def flush_members(self, step: int, phase: str = "offline", quiet: bool = False,
                      active: Sequence[bool] | None = None) -> list[dict[str, float]]:
        """Each seed's averages since the last flush (one host sync), appended to its CSV when `active` (default:
        all); one progress line with the means over the active seeds. NaN/inf are returned, not raised."""
        if not self.sums:
            return []
        keys = list(self.sums)
        table = (torch.stack([self.sums[k].reshape(-1) for k in keys], 1) / max(self.count, 1)).cpu().tolist()
        self.sums, self.count = {}, 0
        out = [dict(zip(keys, row)) for row in table]
        active = [True] * len(out) if active is None else list(active)
        now = time.time()
        rate = (step - self.last_step) / max(now - self.last_t, 1e-9)
        self.last_t, self.last_step = now, step
        for path, row, on in zip(self.paths, table, active):
            if path is not None and on:
                new = not path.exists()
                with open(path, "a", newline="") as f:
                    w = csv.writer(f)
                    if new:
                        w.writerow(["step", "phase", *keys])
                    w.writerow([step, phase, *[f"{v:.6g}" for v in row]])
        for recorder, row, on in zip(self.recorders, out, active):
            if recorder is not None and on:
                recorder.log_metrics(step, row)
        if not quiet:
            live = [r for r, on in zip(out, active) if on] or out
            eta = ""
            if self.total and rate > 0:
                eta = f" eta {max(self.total - step, 0) / rate / 60:.1f} min"
            seeds = f" ×{len(live)} seeds" if len(out) > 1 else ""
            text = " ".join(f"{k}={np.mean([r[k] for r in live]):.4g}" for k in keys[:6])
            print(f"[{self.name} {phase} {step}{'/' + str(self.total) if self.total else ''}] {rate:.0f} it/s{seeds}"
                  f"{eta} {text}", flush=True)
        return out

    def reset_clock(self, step: int) -> None:
        """Restart the rate clock (after an evaluation, so it does not count as training time)."""
        self.last_t, self.last_step = time.time(), step


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


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (corrupt, truncated, or not this run's); the message is one line."""


class Checkpointer:
    """`<out>/checkpoint.pt` with its sidecar `<out>/checkpoint.json` (step, sha256), loaded with weights_only=True.

    A save is staged (`.checkpoint.pt.new` and `.checkpoint.json.new`, each fsynced) and then committed by two
    renames; `repair` finishes a commit cut between its renames. A pack of seeds stages every seed before it commits
    any (`save_pack`), so after a kill either no seed or every seed has the new checkpoint available
    (`recover_pack`). `load` verifies the sha256 and refuses a corrupt or truncated file in one line.
    """

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / "checkpoint.pt"
        self.meta = self.path.with_name("checkpoint.json")
        self.new_path = self.path.with_name(".checkpoint.pt.new")
        self.new_meta = self.path.with_name(".checkpoint.json.new")

    def stage(self, state: dict[str, Any]) -> None:
        """Write the state (stamped with the networks' layout, o2o.nets.NETS_LAYOUT) and its sidecar under the staging
        names (fsynced)."""
        with open(self.new_path, "wb") as f:
            torch.save({**state, "nets_layout": NETS_LAYOUT}, f)
            f.flush()
            os.fsync(f.fileno())
        meta = {"step": state.get("step"), "sha256": _sha256(self.new_path), "bytes": self.new_path.stat().st_size}
        with open(self.new_meta, "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())

    def commit(self) -> None:
        """Publish the staged checkpoint: checkpoint.pt first, then its sidecar."""
        os.replace(self.new_path, self.path)
        os.replace(self.new_meta, self.meta)

    def save(self, state: dict[str, Any]) -> None:
        """Stage and commit (one run)."""
        self.stage(state)
        self.commit()

    def repair(self) -> None:
        """Finish a commit cut between its two renames (checkpoint.pt renamed, its sidecar not yet)."""
        if self.new_meta.exists() and not self.new_path.exists() and self.path.exists():
            os.replace(self.new_meta, self.meta)

    def step(self) -> int | None:
        """Step of the committed checkpoint (from its sidecar), None when there is none."""
        meta = read_json(self.meta)
        return None if meta is None or not self.path.exists() else meta.get("step")

    def staged_step(self) -> int | None:
        """Step of a completely staged checkpoint, None when there is none."""
        meta = read_json(self.new_meta)
        return meta.get("step") if meta is not None and self.new_path.exists() else None

    def discard_staged(self) -> None:
        """Remove staging files (a save cut by a kill that no seed committed)."""
        for p in (self.new_path, self.new_meta):
            p.unlink(missing_ok=True)

    def load(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The last checkpoint (its sha256 verified when it has a sidecar), or None when there is none."""
        self.repair()
        if not self.path.exists():
            return None
        meta = read_json(self.meta)
        if meta is not None and meta.get("sha256") != _sha256(self.path):
            raise CheckpointError(f"{self.path} {CORRUPT} (its sha256 does not match checkpoint.json); delete it to "
                                  "start the run afresh")
        try:
            state = torch.load(self.path, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged file
            raise CheckpointError(f"{self.path} {CORRUPT} (torch.load: {type(e).__name__}); delete it to start the "
                                  "run afresh") from None
        layout = state.get("nets_layout", 1) if isinstance(state, dict) else None
        if layout != NETS_LAYOUT:
            raise CheckpointError(f"{self.path} holds networks in layout {layout} of an older o2o-bench (this version "
                                  f"reads layout {NETS_LAYOUT}); start the run afresh in another --out")
        return state


def save_pack(checkpointers: Sequence[Checkpointer], states: Sequence[dict[str, Any]]) -> None:
    """Checkpoint every seed of a pack: stage all, then commit all (see Checkpointer)."""
    for ck, state in zip(checkpointers, states):
        ck.stage(state)
    for ck in checkpointers:
        ck.commit()


def recover_pack(checkpointers: Sequence[Checkpointer]) -> None:
    """After a kill: commit the staged checkpoints of a save that some seed committed already, discard the others."""
    for ck in checkpointers:
        ck.repair()
    committed = [s for s in (ck.step() for ck in checkpointers) if s is not None]
    target = max(committed) if committed else None
    for ck in checkpointers:
        if target is not None and ck.staged_step() == target and ck.step() != target:
            ck.commit()
        ck.discard_staged()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Evaluator:
    """Evaluates a run's policy (or a pack's S policies) on the env with fresh deterministic seeds and logs each
    seed's row to its recorder (evals.csv) and its episodes to episodes.csv."""

    spec: DatasetSpec
    recorder: RunRecorder | Sequence[RunRecorder]
    seed: int | Sequence[int]
    episodes: int
    obs_transform: Callable[[np.ndarray], np.ndarray] | None = None
    index: int = 0

    def __post_init__(self) -> None:
        recorders = [self.recorder] if isinstance(self.recorder, RunRecorder) else self.recorder
        for r in recorders:
            r.extra["score_reference"] = score_reference(self.spec)  # which reference returns scores use

    def __call__(self, policy: Callable[[np.ndarray], np.ndarray], step: int, phase: str, env_steps: int = 0,
                 **extra: float) -> EvalResult:
        """One evaluation of one run's policy, logged as a row of evals.csv and printed."""
        return self.members(lambda obs: np.asarray(policy(obs[0]))[None], step, phase, env_steps, [extra])[0]

    def members(self, policy: Callable[[np.ndarray], np.ndarray], step: int, phase: str, env_steps: int,
                extras: Sequence[dict[str, Any]], active: Sequence[bool] | None = None) -> list[EvalResult]:
        """Evaluate S policies in one vector env (`policy(obs (S, k, d)) -> (S, k, a)`); log the active seeds."""
        recorders = [self.recorder] if isinstance(self.recorder, RunRecorder) else list(self.recorder)
        seeds = [self.seed] if isinstance(self.seed, int) else list(self.seed)
        active = [True] * len(seeds) if active is None else list(active)
        results = evaluate_members(policy, self.spec, n_episodes=self.episodes, seeds=seeds, eval_index=self.index,
                                   obs_transform=self.obs_transform)
        self.index += 1
        for rec, seed, res, extra, on in zip(recorders, seeds, results, extras, active):
            if not on:
                continue
            rec.log_eval(step, phase, env_steps, res.normalized_score, res.return_mean, res.return_std,
                         res.success_rate, res.length_mean, **extra)
            rec.log_episodes(step, phase, env_steps, res.returns, res.normalized, res.lengths, res.successes)
            sr = "" if res.success_rate is None else f" success {res.success_rate:.2f}"
            who = f" seed {seed}" if len(seeds) > 1 else ""
            print(f"[eval {phase} step {step}{who}] normalized {res.normalized_score:.1f} ± {res.normalized_std:.1f} "
                  f"return {res.return_mean:.1f} length {res.length_mean:.0f}{sr}", flush=True)
        return results


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


def error_line(e: BaseException) -> str:
    """One line naming what went wrong: the exception's type and the last line of its message (at most 300 chars)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:300]


def warn(msg: str) -> None:
    """One line to stderr."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)
