"""The training engine: one offline-to-online loop for every algorithm on it, S seeds packed in one process.

An algorithm file hands the loop an `Algorithm`: its record name, how to build an `Agent` for S seeds, and its data
transforms. The loop does the rest, once for all of them:
- data: the dataset loaded once and transformed (state z-scoring, reward transform, action clipping), one copy on
  the device (o2o.buffer.ReplayBuffer); each seed samples its own batches from its own stream (o2o.rng);
- the protocol (CORL's finetune): `offline_steps` gradient steps, then `online_steps` env steps with one gradient
  step after each; online transitions get the dataset's transforms and go to that seed's own rows;
- all S policies evaluated in one vector env; one run directory per seed under the records contract (summary.json,
  evals.csv, episodes.csv, metrics.csv); checkpoints, exact resume, divergence per seed, success and regret.

Conventions (README, "Training engine"):
- Evaluation clock: offline, every `eval_every` gradient steps and at the end of the offline phase; online, every
  `eval_every` env steps counted from the start of the online phase, and at its end. A record's `step` counts
  gradient steps over both phases (offline_steps + env steps once online).
- Env seeds: training episode k of seed s starts with `reset(seed=episode_seed(s, k))`; evaluation i of seed s uses
  o2o.evaluation.eval_seeds(s, i, n). A run resumed inside an episode restarts that episode with its seed.
- Checkpoints every `checkpoint_every` steps and at the end of each phase, one file per seed (o2o.training.save_pack).
  Resume is exact in the offline phase (same numbers as an uninterrupted run); online, the interrupted training
  episode restarts.
- A seed whose metrics, evaluation or actions become NaN/inf is recorded 'diverged' and is no longer evaluated or
  recorded; the others go on. Seeds never share anything but the dataset: no gradient, statistic or random number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from o2o.buffer import ReplayBuffer
from o2o.cli import Presets, RunConfig, config_yaml, configure, default_out, renamed_fields, steps
from o2o.data import load_dataset
from o2o.envs import make_env
from o2o.evaluation import evaluate_members
from o2o.nets import join_members, split_members
from o2o.presets import Source
from o2o.records import (
    LOCK_FILE,
    RunRecorder,
    atomic_write,
    clear_records,
    is_finished,
    lock_run_dir,
    read_summary,
    truncate_csv,
)
from o2o.registry import DatasetSpec, normalized_score
from o2o.rng import MemberRNG, stream_key
from o2o.training import (
    Checkpointer,
    CheckpointError,
    Evaluator,
    GraphedStep,
    MetricLog,
    config_dict,
    pick_device,
    recover_pack,
    retain_freed_memory,
    run_recorded,
    save_pack,
    warn,
)
from o2o.transforms import ObsNormalizer, clip_actions, reward_transform

Batch = tuple[torch.Tensor, ...]  # (obs, act, rew, next_obs, done), each (S, B, ...)
ROW_PAD = 64  # acting pads each seed's observations to a multiple of this many rows (see act_padded)


@dataclass
class LoopConfig(RunConfig):
    """Fields of every algorithm on the engine (the files override the defaults that differ)."""

    seeds: tuple[int, ...] = ()  # train these seeds in one process, each in <out>/seed<N>/ (empty: --seed alone)
    offline_steps: int = steps(1_000_000, 1000)  # gradient steps on the dataset
    online_steps: int = steps(0, 1000)  # env steps online, one gradient step each (0 = offline only)
    batch_size: int = 256  # transitions per gradient step, per seed
    eval_every: int = steps(5000, 500)  # offline: gradient steps between evaluations; online: env steps
    buffer_size: int = 0  # keep only the newest N transitions of dataset + online data (FIFO); 0 = keep all
    compile: bool = False  # torch.compile the whole update (CUDA graphs on a GPU); same numbers within float error
    threads: int = 1  # torch.set_num_threads (0 = torch's default); 1 suits parallel sweeps on small machines
    force: bool = False  # train again a run directory that holds a finished run (its old records are cleared)
    final_eval_episodes: int = 0  # after training, one evaluation of this many episodes: summary.json final_score
    # where the dataset's preset comes from: configs/<algorithm>/<preset>/<dataset or domain>.yaml (README, "Presets")
    preset: Source = "corl"


# Fields a resumed run may change: they do not change what is trained (evaluations draw no training randomness),
# or they extend it (the step counts: a run resumed with more steps goes on; the offline count only while the run is
# still offline; IQL's cosine actor schedule then follows the new count from the resume on). Every other field, the
# algorithm, the dataset (name and content) and the seed must equal the checkpoint's.
SAFE_TO_CHANGE = ("eval_episodes", "eval_every", "log_every", "checkpoint_every", "device", "threads", "out",
                  "resume", "seeds", "compile", "budget", "force", "offline_steps", "online_steps", "logger",
                  "final_eval_episodes", "config", "preset")  # config, preset: where the (checked) values came from
FINAL_EVAL_INDEX = 1_000_000  # evaluation index of the final evaluation: start states unlike the periodic ones


class RunLocked(RuntimeError):
    """Another process holds the run directory."""


@dataclass(frozen=True)
class Transforms:
    """What the algorithm does to the data (applied to the dataset and to online transitions alike)."""

    normalize_states: bool = True  # z-score with dataset mean/std + 1e-3 (the env's observations too)
    reward_kind: str = "none"  # o2o.transforms.reward_transform
    clip_actions: bool = False  # dataset actions clipped to ±(1 − 1e-5) (log-likelihood losses)


@dataclass
class Setup:
    """What an agent builder gets to know about the run."""

    seeds: list[int]
    spec: DatasetSpec
    obs_dim: int
    act_dim: int
    max_action: float
    device: torch.device
    observations: np.ndarray  # the dataset's observations after the state transform


class Agent(Protocol):
    """The engine's view of an algorithm: S seeds' networks and optimisers with a leading member axis.

    Optional: `eval_extras() -> list[dict]` (extra evals.csv columns per seed, host values) and
    `save_final(dirs, active)` (files written at the end of training, e.g. the final policy).
    """

    def update(self, batch: Batch, online: bool) -> dict[str, torch.Tensor]:
        """One gradient step of every seed; metrics of shape (S,) as device tensors (no host sync)."""

    def act(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """Actions (S, N, act_dim) for observations (S, N, obs_dim): exploration sample or evaluation action."""

    def state_dict(self) -> dict[str, Any]:
        """Everything trainable; tensors with the member axis first (o2o.nets.split_members)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict()."""


@dataclass
class Algorithm:
    """An algorithm file's contribution to the engine."""

    name: str  # the run records' `algorithm`
    build: Callable[[Any, Setup], Agent]
    transforms: Callable[[Any, DatasetSpec], Transforms]


@dataclass
class OnlineStats:
    """One seed's training episodes (checkpointed with it)."""

    episodes: int = 0
    train_scores: list[float] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        """weights_only-loadable state."""
        return {"episodes": self.episodes, "train_scores": list(self.train_scores), "successes": list(self.successes)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> OnlineStats:
        """Inverse of state()."""
        return cls(int(state["episodes"]), [float(x) for x in state["train_scores"]],
                   [float(x) for x in state["successes"]])


class _AllDiverged(Exception):
    """Every seed of the pack diverged: nothing left to train."""


def episode_seed(seed: int, episode: int) -> int:
    """Env seed of training episode `episode` of run seed `seed` (stable, distinct from the evaluation seeds)."""
    return stream_key(seed, f"online-episode-{episode}") & 0x7FFFFFFF


def run_dirs(name: str, cfg: LoopConfig) -> list[Path]:
    """One directory per seed: --seeds: <out>/seed<N> (default out runs/<algorithm>/<dataset>); --seed: <out>."""
    if not cfg.seeds:
        return [Path(default_out(name, cfg))]
    base = Path(cfg.out) if cfg.out else Path(default_out(name, dataclasses.replace(cfg, out=""))).parent
    return [base / f"seed{s}" for s in cfg.seeds]


def compile_step(fn: Callable[..., Any], enabled: bool, device: torch.device) -> Callable[..., Any]:
    """`fn` itself, or torch.compile(fn): Inductor kernels, and on a GPU the whole update replayed as one CUDA graph
    (o2o.training.GraphedStep)."""
    if not enabled:
        return fn
    compiled = torch.compile(fn)
    return GraphedStep(compiled) if device.type == "cuda" else compiled


def main(config_cls: type[LoopConfig], presets: Presets | None, algorithm: Callable[[Any], Algorithm],
         argv: list[str] | None = None, description: str = "") -> int:
    """An algorithm file's command line: parse, train every seed; exit 0 (all finished), 3 (a seed diverged), or 2
    with one line on stderr for a dataset, config, checkpoint or lock problem (the run's summary.json, when it got
    that far, says 'failed' with the same line; no traceback). `presets(first-pass config, spec)` gives the
    dataset's preset fields (o2o.cli.configure)."""
    cfg = configure(config_cls, presets, argv, description=description)
    try:
        summaries = train(cfg, algorithm(cfg))
    except (ValueError, KeyError, CheckpointError, RunLocked) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr, flush=True)
        return 2
    statuses = [s["status"] for s in summaries]
    return 0 if all(s == "finished" for s in statuses) else 3 if "diverged" in statuses else 1


def lock_run_dirs(dirs: list[Path]) -> list[int]:
    """Hold each run directory's lock for this process (the suite's lock file); RunLocked when one is taken.

    A run started by the suite runner (O2O_SUITE_PARENT set) is already covered by the runner's locks."""
    if os.environ.get("O2O_SUITE_PARENT"):
        return []
    fds: list[int] = []
    for d in dirs:
        fd = lock_run_dir(d)
        if fd is None:
            for f in fds:
                os.close(f)
            raise RunLocked(f"{d} is in use by another process (its {LOCK_FILE} is locked); choose another --out")
        fds.append(fd)
    return fds


def train(cfg: LoopConfig, algo: Algorithm) -> list[dict[str, Any]]:
    """Train the run's seeds (--seeds, else --seed) in this process; returns each seed's summary.

    A seed whose directory holds a finished (or diverged) run is left alone unless --force, which clears its
    records and trains it afresh.
    """
    seeds = list(cfg.seeds) or [cfg.seed]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds repeats a seed: {','.join(map(str, seeds))}")
    dirs = run_dirs(algo.name, cfg)
    fds = lock_run_dirs(dirs)
    try:
        total = cfg.offline_steps + cfg.online_steps
        done = [is_finished(d) and not (cfg.resume and (read_summary(d) or {}).get("steps", 0) < total) for d in dirs]
        if cfg.force:
            for d in dirs:
                clear_records(d, also=("run.json", "log.txt"))
            done = [False] * len(dirs)
        for d, finished in zip(dirs, done):
            if finished:
                print(f"[{algo.name}] {d} holds a {read_summary(d)['status']} run; nothing to do (--force trains it "
                      "again)", flush=True)
        todo = [i for i, finished in enumerate(done) if not finished]
        if todo:
            _train_pack(cfg, algo, [seeds[i] for i in todo], [dirs[i] for i in todo])
        return [read_summary(d) or {"status": "failed"} for d in dirs]
    finally:
        for fd in fds:
            os.close(fd)


def _train_pack(cfg: LoopConfig, algo: Algorithm, seeds: list[int], dirs: list[Path]) -> None:
    configs = [dataclasses.replace(cfg, seed=s, seeds=(), out=str(d)) for s, d in zip(seeds, dirs)]
    recorders = [RunRecorder(d, algo.name, cfg.dataset, s, config_dict(c), cfg.budget, resume=cfg.resume)
                 for s, d, c in zip(seeds, dirs, configs)]
    if len(seeds) > 1:
        for r in recorders:
            r.extra["pack"] = seeds
    for d, c in zip(dirs, configs):  # the resolved config: `--config <dir>/config.yaml` trains the same run
        atomic_write(d / "config.yaml", config_yaml(c))
    run_recorded(algo.name, recorders, lambda: _train(cfg, algo, seeds, dirs, configs, recorders), cfg.threads)
    for r in recorders:
        if r.status == "running":
            r.finish("finished")


def identity(algorithm: str, cfg: LoopConfig, dataset_sha256: str) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it: algorithm, dataset (name and content), seed and
    every config field but SAFE_TO_CHANGE."""
    return {"algorithm": algorithm, "dataset": cfg.dataset, "dataset_sha256": dataset_sha256, "seed": cfg.seed,
            **{f"config.{k}": v for k, v in config_dict(cfg).items() if k not in SAFE_TO_CHANGE}}


def identity_changes(saved: dict[str, Any], now: dict[str, Any], cls: type | None = None) -> list[str]:
    """`name: old -> new` for every identity entry that differs; a checkpoint's config fields written under names
    that `cls` has since renamed (its RENAMED tables) are compared under the current names."""
    renamed = {f"config.{old}": f"config.{new}" for old, new in (renamed_fields(cls) if cls else {}).items()}
    saved = {renamed.get(k, k): v for k, v in saved.items()}
    keys = sorted(set(saved) | set(now))
    return [f"{k.removeprefix('config.')}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys
            if _norm(saved.get(k)) != _norm(now.get(k))]


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


def dataset_sha256(ds: Any) -> str:
    """Content hash of a dataset's arrays (observations, actions, rewards, terminals, timeouts)."""
    h = hashlib.sha256()
    for a in (ds.observations, ds.actions, ds.rewards, ds.terminals, ds.timeouts):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _train(cfg: LoopConfig, algo: Algorithm, seeds: list[int], dirs: list[Path], configs: list[LoopConfig],
           recorders: list[RunRecorder]) -> None:
    for k in ("eval_every", "log_every", "checkpoint_every", "batch_size", "eval_episodes"):
        if getattr(cfg, k) <= 0:
            raise ValueError(f"--{k.replace('_', '-')} must be positive, not {getattr(cfg, k)}")
    n_seeds = len(seeds)
    device = pick_device(cfg.device)

    # ---- data: transformed once, one copy on the device ----
    ds = load_dataset(cfg.dataset, env_id=cfg.env)
    spec = ds.spec
    tf = algo.transforms(cfg, spec)
    norm = ObsNormalizer.fit(ds) if tf.normalize_states else ObsNormalizer.identity(ds.obs_dim)
    rt = reward_transform(ds, tf.reward_kind)
    observations = norm(ds.observations)
    buffer = ReplayBuffer({"obs": observations, "act": clip_actions(ds.actions) if tf.clip_actions else ds.actions,
                           "rew": np.asarray(rt(ds.rewards), np.float32), "next_obs": norm(ds.next_observations),
                           "done": ds.terminals}, n_seeds, cfg.online_steps, device, cfg.buffer_size)
    data_sha = dataset_sha256(ds)
    identities = [identity(algo.name, c, data_sha) for c in configs]
    for r in recorders:
        r.extra.update(dataset_transitions=len(ds), dataset_sha256=data_sha, reward_kind=tf.reward_kind,
                       reward_scale=rt.scale, reward_bias=rt.bias)
    probe = make_env(spec)
    low, high = probe.action_space.low, probe.action_space.high
    probe.close()
    agent = algo.build(cfg, Setup(seeds, spec, ds.obs_dim, ds.act_dim, float(np.max(high)), device, observations))
    rng = MemberRNG(seeds, "batches", device)
    step_fn = compile_step(lambda online: agent.update(buffer.sample(rng, cfg.batch_size), online), cfg.compile,
                           device)

    # ---- state, or its checkpoint ----
    total = cfg.offline_steps + cfg.online_steps
    cks = [Checkpointer(d) for d in dirs]
    step, env_steps = 0, 0
    online = [OnlineStats() for _ in seeds]
    active = [True] * n_seeds
    if cfg.resume:
        recover_pack(cks)
        loaded = [ck.load("cpu") for ck in cks]
        have = [st is not None for st in loaded]
        if any(have) and not all(have):
            raise CheckpointError(f"--resume: seeds {[s for s, h in zip(seeds, have) if h]} have checkpoints and "
                                  f"{[s for s, h in zip(seeds, have) if not h]} not; resume them in separate runs")
        if not any(have):
            warn(f"--resume: no checkpoint in {dirs[0] if n_seeds == 1 else dirs[0].parent}; starting from scratch")
        else:
            for d, st, ident in zip(dirs, loaded, identities):
                changes = identity_changes(st.get("identity", {}), ident, type(cfg))
                if changes:
                    raise CheckpointError(f"--resume: {d / 'checkpoint.pt'} was trained with other settings ("
                                          f"{'; '.join(changes)}); use another --out, or --force to start afresh")
                old_offline = int(st.get("config", {}).get("offline_steps", cfg.offline_steps))
                if old_offline != cfg.offline_steps and int(st["step"]) > min(old_offline, cfg.offline_steps):
                    raise CheckpointError(f"--resume: {d / 'checkpoint.pt'} is at step {st['step']}, past the "
                                          f"offline phase of {old_offline} steps; --offline-steps cannot change now")
            at = sorted({int(st["step"]) for st in loaded})
            if len(at) > 1:
                raise CheckpointError(f"--resume: the seeds' checkpoints are at different steps {at}; resume them "
                                      "in separate runs")
            agent.load_state_dict(join_members([st["agent"] for st in loaded]))
            rng.load_state_dict(join_members([st["rng"] for st in loaded]))
            buffer.load_online_rows([st["buffer"] for st in loaded])
            step, env_steps = at[0], int(loaded[0]["env_steps"])
            online = [OnlineStats.from_state(st["online"]) for st in loaded]
            active = [bool(st["active"]) for st in loaded]
            for r, on in zip(recorders, active):
                if not on:
                    r.finish("diverged", "diverged before the checkpoint this run resumed from")
            print(f"[{algo.name}] resumed from step {step} ({env_steps} env steps)", flush=True)
    if step == 0:
        for d in dirs:
            (d / "metrics.csv").unlink(missing_ok=True)
    for r, d in zip(recorders, dirs):
        r.truncate_after(step)
        truncate_csv(d / "metrics.csv", step)
        r.progress(step, env_steps)
    evaluator = Evaluator(spec, recorders, seeds, cfg.eval_episodes, obs_transform=norm,
                          index=len(recorders[0].rows))
    metrics = MetricLog([d / "metrics.csv" for d in dirs], total, algo.name, recorders=recorders)
    metrics.reset_clock(step)
    eval_time = 0.0

    def diverge(s: int, why: str) -> None:
        if not active[s]:
            return
        active[s] = False
        print(f"[{algo.name}] seed {seeds[s]} diverged: {why}", flush=True)
        recorders[s].finish("diverged", f"diverged: {why}")
        if not any(active):
            raise _AllDiverged

    def flush(phase: str) -> None:
        for s, row in enumerate(metrics.flush_members(step, phase, active=active)):
            bad = [k for k, v in row.items() if not math.isfinite(v)]
            if bad:
                diverge(s, f"{', '.join(bad)} became NaN/inf at step {step} ({phase})")
        for r in recorders:
            r.progress(step, env_steps)

    def policy(obs: np.ndarray) -> np.ndarray:
        return act_padded(agent, torch.as_tensor(obs, device=device), explore=False).cpu().numpy()

    def evaluate(phase: str) -> None:
        nonlocal eval_time
        t = time.time()
        extras = agent.eval_extras() if hasattr(agent, "eval_extras") else [{} for _ in seeds]
        for s, extra in enumerate(extras):
            if phase == "online":
                scores, succ = online[s].train_scores, online[s].successes
                extra["train_score"] = float(np.mean(scores[-10:])) if scores else None
                if spec.has_success:  # CORL: regret = mean(1 − success) over all training episodes so far
                    extra["regret"] = float(np.mean(1.0 - np.asarray(succ))) if succ else None
        for s, extra in enumerate(extras):
            bad = [k for k, v in extra.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                diverge(s, f"{', '.join(bad)} became NaN/inf at step {step} ({phase})")
        for s, res in enumerate(evaluator.members(policy, step, phase, env_steps, extras, active)):
            if not math.isfinite(res.return_mean):
                diverge(s, f"evaluation return became NaN/inf at step {step} ({phase})")
        metrics.reset_clock(step)
        eval_time += time.time() - t

    def save() -> None:
        parts = split_members({"agent": agent.state_dict(), "rng": rng.state_dict()}, n_seeds)
        save_pack(cks, [{**parts[s], "step": step, "env_steps": env_steps, "online": online[s].state(),
                         "buffer": buffer.online_rows(s), "active": active[s], "config": config_dict(configs[s]),
                         "identity": identities[s]}
                        for s in range(n_seeds)])

    def after_update(phase: str, phase_step: int, last_of_phase: bool) -> None:
        if step % cfg.log_every == 0 or last_of_phase:
            flush(phase)
        if phase_step % cfg.eval_every == 0 or last_of_phase:
            evaluate(phase)
        if step % cfg.checkpoint_every == 0 or last_of_phase:
            save()

    retain_freed_memory(device)  # setup done: from here on, an update's freed temporaries are reused (CPU, glibc)
    try:
        # ---- offline phase ----
        t0, s0 = time.time(), step
        while step < cfg.offline_steps:
            metrics.add(step_fn(False))
            step += 1
            after_update("offline", step, step == cfg.offline_steps)
        if step > s0:  # this process's training throughput (seed-updates/s = this × seeds), evaluations excluded
            rate = round((step - s0) / max(time.time() - t0 - eval_time, 1e-9), 1)
            for r in recorders:
                r.extra["offline_updates_per_s"] = rate

        # ---- online phase: one env step per seed, then one update (CORL finetune) ----
        if step < total:
            envs = [make_env(spec) for _ in seeds]
            obs = [_reset(envs[s], seeds[s], online[s].episodes) for s in range(n_seeds)]
            ep_ret, ep_success = [0.0] * n_seeds, [False] * n_seeds
            try:
                while step < total:
                    x = norm(np.stack(obs).astype(np.float32))  # (S, obs_dim)
                    acts = act_padded(agent, torch.as_tensor(x[:, None], device=device), True)[:, 0].cpu().numpy()
                    rows = []
                    for s in range(n_seeds):
                        act = np.clip(acts[s], low, high)
                        if active[s] and not np.all(np.isfinite(act)):
                            diverge(s, f"the policy produced NaN/inf actions at step {step} (online)")
                        if not active[s]:  # a diverged seed keeps a row in step with the others, never stepped
                            rows.append(buffer.rows(x[s], np.zeros_like(low), 0.0, x[s], 1.0))
                            continue
                        nxt, rew, term, trunc, info = envs[s].step(act)
                        ep_ret[s] += float(rew)
                        ep_success[s] |= bool(info.get("success", False))
                        # done = true terminal only: a time-limit truncation bootstraps (CORL: real_done)
                        rows.append(buffer.rows(x[s], act, rt(float(rew)), norm(nxt[None].astype(np.float32)),
                                                float(term)))
                        obs[s] = nxt
                        if term or trunc:
                            st = online[s]
                            st.episodes += 1
                            st.successes.append(float(ep_success[s]))
                            st.train_scores.append(normalized_score(spec, ep_ret[s]))
                            obs[s] = _reset(envs[s], seeds[s], st.episodes)
                            ep_ret[s], ep_success[s] = 0.0, False
                    buffer.add(np.concatenate(rows))
                    env_steps += 1
                    metrics.add(step_fn(True))
                    step += 1
                    after_update("online", env_steps, step == total)
            finally:
                for env in envs:
                    env.close()
    except _AllDiverged:
        pass
    finally:
        for r in recorders:
            r.progress(step, env_steps)

    if cfg.final_eval_episodes > 0 and any(active):
        final = evaluate_members(policy, spec, cfg.final_eval_episodes, seeds, FINAL_EVAL_INDEX, obs_transform=norm)
        for s, (r, res) in enumerate(zip(recorders, final)):
            if active[s]:
                r.log_final(res.normalized_score, res.success_rate, cfg.final_eval_episodes)
                r.log_episodes(step, "final", env_steps, res.returns, res.normalized, res.lengths, res.successes)
                print(f"[final eval seed {seeds[s]}] normalized {res.normalized_score:.1f} ± "
                      f"{res.normalized_std:.1f} over {cfg.final_eval_episodes} episodes", flush=True)
    for s, r in enumerate(recorders):
        if active[s] and cfg.online_steps > 0:
            st = online[s]
            r.extra.update(online_episodes=st.episodes,
                           train_score_last10=float(np.mean(st.train_scores[-10:])) if st.train_scores else None)
            if spec.has_success and st.successes:  # CORL's regret over the training episodes
                r.extra["final_regret"] = float(np.mean(1.0 - np.asarray(st.successes)))
    if hasattr(agent, "save_final"):
        agent.save_final(dirs, active)


def act_padded(agent: Agent, obs: torch.Tensor, explore: bool) -> torch.Tensor:
    """agent.act on obs (S, N, d) padded with zero rows to a multiple of ROW_PAD: the elementwise kernels then treat
    each seed's rows the same whatever S is (a seed's actions are bit-identical alone and packed)."""
    n = obs.shape[1]
    pad = -n % ROW_PAD
    if pad:
        obs = torch.cat([obs, obs.new_zeros(obs.shape[0], pad, obs.shape[2])], 1)
    return agent.act(obs, explore)[:, :n]


def _reset(env: Any, seed: int, episode: int) -> np.ndarray:
    """Start training episode `episode` of seed `seed` (o2o.loop's env-seed convention)."""
    return env.reset(seed=episode_seed(seed, episode))[0]
