"""AWAC: Advantage-Weighted Actor-Critic (Nair, Gupta, Dalal & Levine, arXiv 2006.09359), offline and offline-to-online.

Reference implementation: CORL (corl-team/CORL, algorithms/offline/awac.py and algorithms/finetune/awac.py,
configs/), reimplemented in one file. Twin critics learn Q^π by TD with next actions from the current policy; the
actor does advantage-weighted maximum likelihood on the buffer's actions:
  L_Q(θ_i) = E_(s,a,s')~D [ (Q_θi(s,a) − (r + γ (1 − d) min_j Q_θ̂j(s', a')))² ],  a' ~ π(·|s')   (summed over i)
  L_π(φ)   = −E_(s,a)~D [ min(exp(A(s,a) / λ), 100) · log π_φ(a|s) ],  A(s,a) = min_j Q_θj(s,a) − min_j Q_θj(s, ã),
             ã ~ π(·|s)   (the AWAC paper's weights exp(A/λ), λ the Lagrange multiplier, clipped at 100 as CORL)

Usage:
  python baselines/awac.py --dataset antmaze-umaze-v2 --seed 0 --out DIR --budget smoke|short|full --device cpu
  python baselines/awac.py --dataset pen-cloned-v1 --finetune true      # CORL's finetune protocol (1M + 1M)
  python baselines/awac.py --dataset data.hdf5 --env Hopper-v5 --online-steps 100000 --resume true
Every config field is a flag (`--help` lists them with their defaults). Exit status: 0 finished, 3 diverged, 1 failed.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # `python baselines/awac.py` without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baselines.common import GaussianActor, TwinQ, adam, soft_update, truncate_csv
from o2o.buffer import ReplayBuffer
from o2o.cli import RunConfig, apply_budget, default_out, parse_config, steps
from o2o.data import load_dataset
from o2o.envs import make_env
from o2o.records import RunRecorder
from o2o.registry import DatasetSpec, normalized_score
from o2o.training import (
    Checkpointer,
    DivergenceError,
    Evaluator,
    MetricLog,
    config_dict,
    pick_device,
    rng_state,
    run_recorded,
    set_rng_state,
    set_seed,
    torch_policy,
)
from o2o.transforms import ObsNormalizer, reward_transform

ALGORITHM = "awac"
EXP_ADV_MAX = 100.0  # clip of exp(A/λ) (CORL AdvantageWeightedActorCritic exp_adv_max)
FINETUNE_ONLINE_STEPS = 1_000_000  # CORL configs/finetune/awac/*: online_iterations 1e6


# ----------------------------------------------------------------------------------------------------------------------
# Config and per-domain presets
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class AWACConfig(RunConfig):
    """AWAC run: the shared RunConfig fields plus AWAC's hyperparameters (defaults = CORL's, locomotion)."""

    offline_steps: int = steps(1_000_000, 1000)  # gradient steps offline (CORL num_train_ops / offline_iterations)
    online_steps: int = steps(0, 1000)  # env steps online, one gradient step each (0 = offline only)
    finetune: bool = False  # offline-to-online with CORL's 1M online steps (scaled by --budget) unless --online-steps
    batch_size: int = 256  # CORL batch_size
    discount: float = 0.99  # γ (CORL gamma)
    tau: float = 0.005  # Polyak rate of the target critics (CORL tau)
    awac_lambda: float = 1.0 / 3.0  # λ of exp(A/λ) (CORL awac_lambda 0.3333 locomotion, 0.1 AntMaze and Adroit)
    exp_adv_max: float = EXP_ADV_MAX  # clip of exp(A/λ)
    actor_lr: float = 3e-4  # CORL learning_rate (one lr for actor and critics)
    critic_lr: float = 3e-4  # CORL learning_rate
    hidden_dim: int = 256  # CORL hidden_dim
    n_hidden: int = 3  # hidden layers of actor and critics: CORL's Actor and Critic have 3 (baselines.md says 2)
    normalize_states: bool = True  # z-score observations with dataset statistics (CORL always does for AWAC)
    reward_kind: str = "auto"  # none | locomotion | antmaze | ...; auto = the domain's preset
    eval_every: int = steps(5000, 500)  # gradient steps between evaluations (CORL eval_frequency: see PRESETS)
    threads: int = 1  # torch.set_num_threads (0 = torch's default)


# Per-domain presets; every value names its source. Flags override them, --budget scales the step fields after them.
# Evaluation every 5000 steps everywhere but AntMaze (CORL's offline AWAC configs evaluate every 1000 steps; we use
# IQL's 5000 so that best-score statistics of the baselines see the same number of evaluations).
PRESETS: dict[str, dict[str, Any]] = {
    "locomotion": dict(
        # CORL configs/offline/awac/{halfcheetah,hopper,walker2d}/*: awac_lambda 0.3333, normalize_reward false (the
        # AWAC paper does not scale rewards either).
        awac_lambda=1.0 / 3.0, reward_kind="none",
    ),
    "antmaze": dict(
        # CORL configs/{offline,finetune}/awac/antmaze/*: awac_lambda 0.1, normalize_reward (r − 1), n_test_episodes
        # 100, finetune eval_frequency 50000.
        awac_lambda=0.1, reward_kind="antmaze", eval_episodes=100, eval_every=50_000,
    ),
    "adroit": dict(
        # CORL configs/{offline,finetune}/awac/{pen,door,hammer,relocate}/*: awac_lambda 0.1, normalize_reward false.
        awac_lambda=0.1, reward_kind="none",
    ),
    "kitchen": dict(
        # No CORL or paper setting for Kitchen: the Adroit one (sparse manipulation tasks, unscaled rewards).
        awac_lambda=0.1, reward_kind="none",
    ),
}


def presets(spec: DatasetSpec) -> dict[str, Any]:
    """The preset of the dataset's domain (empty for an unknown domain)."""
    return dict(PRESETS.get(spec.domain, {}))


def resolve_config(cfg: AWACConfig) -> AWACConfig:
    """--finetune without --online-steps: CORL's 1M online steps, scaled by the budget like every step field."""
    if cfg.finetune and cfg.online_steps == 0:
        others = {f.name for f in dataclasses.fields(cfg)} - {"online_steps"}
        cfg = apply_budget(dataclasses.replace(cfg, online_steps=FINETUNE_ONLINE_STEPS), cfg.budget, skip=others)
    return cfg


# ----------------------------------------------------------------------------------------------------------------------
# Networks (from baselines.common): CORL's Actor is a Gaussian with a raw (unbounded) mean and a state-independent
# log-std clamped to [−20, 2]; its samples are clamped to the action box [−1, 1].
# ----------------------------------------------------------------------------------------------------------------------
def make_actor(obs_dim: int, act_dim: int, cfg: AWACConfig) -> GaussianActor:
    """CORL's AWAC actor."""
    return GaussianActor(obs_dim, act_dim, cfg.hidden_dim, cfg.n_hidden, tanh_mean=False)


@torch.no_grad()
def sample_action(actor: GaussianActor, obs: torch.Tensor) -> torch.Tensor:
    """ã ~ π(·|s), clamped to the action box (CORL Actor.forward); used for targets, advantages and exploration."""
    return actor.sample(obs).clamp(-1.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------------
def critic_loss(critic: TwinQ, critic_target: TwinQ, actor: GaussianActor, obs: torch.Tensor, act: torch.Tensor,
                rew: torch.Tensor, next_obs: torch.Tensor, done: torch.Tensor,
                discount: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L_Q: TD regression of both critics onto r + γ (1 − d) min_j Q̂_j(s', a'), a' ~ π(·|s'); the twin MSEs summed as
    CORL. Returns (loss, Q₁ of the batch, detached)."""
    with torch.no_grad():
        target = rew + discount * (1.0 - done) * critic_target(next_obs, sample_action(actor, next_obs))
    qs = critic.all(obs, act)
    return 2.0 * F.mse_loss(qs, target.expand_as(qs)), qs[0].detach()


def awac_weights(adv: torch.Tensor, awac_lambda: float, max_weight: float = EXP_ADV_MAX) -> torch.Tensor:
    """exp(A / λ), clipped above at max_weight; no gradient."""
    return torch.exp(adv.detach() / awac_lambda).clamp(max=max_weight)


def actor_loss(actor: GaussianActor, critic: TwinQ, obs: torch.Tensor, act: torch.Tensor, awac_lambda: float,
               max_weight: float = EXP_ADV_MAX) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_π: −mean(w · log π(a|s)) with w = awac_weights(min Q(s,a) − min Q(s,ã)), ã ~ π(·|s).

    Returns (loss, advantages, weights), the last two detached.
    """
    with torch.no_grad():
        adv = critic(obs, act) - critic(obs, sample_action(actor, obs))
        weights = awac_weights(adv, awac_lambda, max_weight)
    return -(weights * actor.log_prob(obs, act)).mean(), adv, weights


# ----------------------------------------------------------------------------------------------------------------------
# The update
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class AWACAgent:
    """Networks and their optimizers."""

    actor: GaussianActor
    critic: TwinQ
    critic_target: TwinQ
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer

    def state_dict(self) -> dict[str, Any]:
        """Everything trainable, for checkpoints."""
        return {k: getattr(self, k).state_dict() for k in ("actor", "critic", "critic_target", "actor_opt",
                                                           "critic_opt")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict()."""
        for k in ("actor", "critic", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, k).load_state_dict(state[k])


def make_agent(obs_dim: int, act_dim: int, cfg: AWACConfig, device: torch.device) -> AWACAgent:
    """Fresh networks (PyTorch default init, as CORL) and Adam optimizers."""
    actor = make_actor(obs_dim, act_dim, cfg).to(device)
    critic = TwinQ(obs_dim, act_dim, cfg.hidden_dim, cfg.n_hidden).to(device)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    return AWACAgent(actor, critic, critic_target, adam(actor.parameters(), cfg.actor_lr),
                     adam(critic.parameters(), cfg.critic_lr))


def update(agent: AWACAgent, batch: tuple[torch.Tensor, ...], cfg: AWACConfig) -> dict[str, torch.Tensor]:
    """One AWAC gradient step on (s, a, r, s', done), in CORL's order: critics, actor (with the new critics), targets.

    Returns detached device tensors (no host sync).
    """
    obs, act, rew, next_obs, done = batch
    loss_q, q1 = critic_loss(agent.critic, agent.critic_target, agent.actor, obs, act, rew, next_obs, done,
                             cfg.discount)
    agent.critic_opt.zero_grad(set_to_none=True)
    loss_q.backward()
    agent.critic_opt.step()

    loss_pi, adv, weights = actor_loss(agent.actor, agent.critic, obs, act, cfg.awac_lambda, cfg.exp_adv_max)
    agent.actor_opt.zero_grad(set_to_none=True)
    loss_pi.backward()
    agent.actor_opt.step()

    soft_update(agent.critic_target, agent.critic, cfg.tau)
    return {"critic_loss": loss_q.detach(), "actor_loss": loss_pi.detach(), "q1_mean": q1.mean(),
            "adv_mean": adv.mean(), "weight_mean": weights.mean()}


# ----------------------------------------------------------------------------------------------------------------------
# Training loop: offline steps, then (optionally) online env steps with one update each
# ----------------------------------------------------------------------------------------------------------------------
def train(cfg: AWACConfig) -> dict[str, Any]:
    """Train and evaluate one run; writes summary.json, evals.csv, metrics.csv and checkpoint.pt under the run dir.

    Returns the run's summary (status 'finished', or 'diverged' when a loss or score became NaN/inf).
    """
    cfg = resolve_config(cfg)
    out = Path(default_out(ALGORITHM, cfg))
    recorder = RunRecorder(out, ALGORITHM, cfg.dataset, cfg.seed, config_dict(cfg), cfg.budget, resume=cfg.resume)
    ok, _ = run_recorded(ALGORITHM, recorder, lambda: _train(cfg, out, recorder), cfg.threads)
    if ok:
        recorder.finish("finished")
    return recorder.summary()


def _train(cfg: AWACConfig, out: Path, recorder: RunRecorder) -> None:
    device = pick_device(cfg.device)
    set_seed(cfg.seed)

    # Data: state normalisation and reward transform fitted on the dataset, applied to online data as well.
    ds = load_dataset(cfg.dataset, env_id=cfg.env)
    spec = ds.spec
    norm = ObsNormalizer.fit(ds) if cfg.normalize_states else ObsNormalizer.identity(ds.obs_dim)
    kind = cfg.reward_kind if cfg.reward_kind != "auto" else PRESETS.get(spec.domain, {}).get("reward_kind", "none")
    rt = reward_transform(ds, kind)
    buffer = ReplayBuffer.from_dataset(ds, norm(ds.observations), norm(ds.next_observations),
                                       np.asarray(rt(ds.rewards), np.float32), capacity=len(ds) + cfg.online_steps,
                                       device=device)
    n_data = len(ds)
    recorder.extra.update(dataset_transitions=n_data, reward_kind=kind, reward_scale=rt.scale, reward_bias=rt.bias)

    agent = make_agent(ds.obs_dim, ds.act_dim, cfg, device)
    total = cfg.offline_steps + cfg.online_steps
    metrics = MetricLog(out / "metrics.csv", total, ALGORITHM)
    evaluator = Evaluator(spec, recorder, cfg.seed, cfg.eval_episodes, obs_transform=norm)
    ckpt = Checkpointer(out)

    step, env_steps, successes, train_scores = 0, 0, [], []
    state = ckpt.load("cpu") if cfg.resume else None  # modules/optimizers move it to the device
    if state is not None:
        agent.load_state_dict(state["agent"])
        step, env_steps = int(state["step"]), int(state["env_steps"])
        successes, train_scores = list(state["successes"]), list(state["train_scores"])
        buffer.add_rows(state["online_buffer"])
        set_rng_state(state["rng"])
        print(f"[{ALGORITHM}] resumed from {ckpt.path} at step {step} ({env_steps} env steps)", flush=True)
    else:
        (out / "metrics.csv").unlink(missing_ok=True)
    recorder.truncate_after(step)
    truncate_csv(out / "metrics.csv", step)
    evaluator.index = len(recorder.rows)
    recorder.progress(step, env_steps)
    metrics.reset_clock(step)

    def save() -> None:
        ckpt.save({
            "agent": agent.state_dict(), "step": step, "env_steps": env_steps, "successes": successes,
            "train_scores": train_scores, "rng": rng_state(), "config": config_dict(cfg),
            "online_buffer": buffer.rows_since(n_data),
        })

    eval_time = [0.0]  # seconds spent evaluating (kept out of the updates/s figure)

    def evaluate(phase: str) -> None:
        t = time.time()
        extra: dict[str, float | None] = {}
        if phase == "online":
            extra["train_score"] = float(np.mean(train_scores[-10:])) if train_scores else None
            if spec.has_success:  # CORL: regret = mean(1 − success) over all training episodes so far
                extra["regret"] = float(np.mean(1.0 - np.asarray(successes))) if successes else None
        res = evaluator(torch_policy(agent.actor.act, device), step, phase, env_steps, **extra)
        if not np.isfinite(res.return_mean):
            raise DivergenceError(f"evaluation return became NaN/inf at step {step} ({phase})")
        metrics.reset_clock(step)
        eval_time[0] += time.time() - t

    def after_update(phase: str, last_of_phase: bool) -> None:
        if step % cfg.log_every == 0 or last_of_phase:
            metrics.flush(step, phase)
            recorder.progress(step, env_steps)
        if step % cfg.eval_every == 0 or last_of_phase:
            evaluate(phase)
        if step % cfg.checkpoint_every == 0 or step == total:
            save()

    # ---- offline phase ----
    t0, s0 = time.time(), step
    while step < cfg.offline_steps:
        metrics.add(update(agent, buffer.sample(cfg.batch_size), cfg))
        step += 1
        after_update("offline", step == cfg.offline_steps)
    if step > s0:  # training throughput of this process's offline steps, evaluations excluded
        recorder.extra["offline_updates_per_s"] = round((step - s0) / max(time.time() - t0 - eval_time[0], 1e-9), 1)

    # ---- online phase: one env step, then one update (CORL finetune) ----
    if step < total:
        env = make_env(spec)
        low, high = env.action_space.low, env.action_space.high
        obs, _ = env.reset(seed=cfg.seed + 10_000 + env_steps)  # a resumed run restarts its episode
        ep_ret, ep_success = 0.0, False
        try:
            while step < total:
                x = norm(obs[None].astype(np.float32))
                act = sample_action(agent.actor, torch.as_tensor(x, device=device)).cpu().numpy()[0]
                if not np.all(np.isfinite(act)):
                    raise DivergenceError(f"the policy produced NaN/inf actions at step {step} (online)")
                act = np.clip(act, low, high)
                next_obs, rew, term, trunc, info = env.step(act)
                ep_ret += float(rew)
                ep_success |= bool(info.get("success", False))
                # done = true terminal only: a time-limit truncation bootstraps (CORL: real_done)
                buffer.add(x, act[None], np.asarray([rt(float(rew))], np.float32),
                           norm(next_obs[None].astype(np.float32)), np.asarray([float(term)], np.float32))
                env_steps += 1
                obs = next_obs
                if term or trunc:
                    successes.append(float(ep_success))
                    train_scores.append(normalized_score(spec, ep_ret))
                    obs, _ = env.reset()
                    ep_ret, ep_success = 0.0, False
                metrics.add(update(agent, buffer.sample(cfg.batch_size), cfg))
                step += 1
                after_update("online", step == total)
        finally:
            env.close()
        if successes:
            recorder.extra["final_regret"] = float(np.mean(1.0 - np.asarray(successes)))
    recorder.progress(step, env_steps)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 finished, 3 diverged)."""
    cfg = parse_config(AWACConfig, presets, argv, description=__doc__)
    summary = train(cfg)
    return {"finished": 0, "diverged": 3}.get(summary["status"], 1)


if __name__ == "__main__":
    raise SystemExit(main())
