"""IQL: Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022, arXiv 2110.06169), offline and offline-to-online.

Reference implementation: CORL (corl-team/CORL, algorithms/offline/iql.py and algorithms/finetune/iql.py, configs/),
reimplemented in one file. Three losses (paper §4):
  L_V(ψ) = E_(s,a)~D [ L₂^τ(Q_θ̂(s,a) − V_ψ(s)) ],   L₂^τ(u) = |τ − 1(u < 0)| u²     (expectile value regression)
  L_Q(θ) = E_(s,a,s')~D [ (r + γ (1 − d) V_ψ(s') − Q_θ(s,a))² ]                        (for each of the twin Qs)
  L_π(φ) = −E_(s,a)~D [ min(exp(β (Q_θ̂(s,a) − V_ψ(s))), 100) · log π_φ(a|s) ]          (AWR policy extraction)
with Q_θ̂ the Polyak-averaged target of min(Q₁, Q₂).

Usage:
  python baselines/iql.py --dataset antmaze-umaze-v2 --seed 0 --out DIR --budget smoke|short|full --device cpu
  python baselines/iql.py --dataset hopper-medium-v2 --finetune true      # CORL's finetune protocol (1M + 1M)
  python baselines/iql.py --dataset data.hdf5 --env Hopper-v5 --online-steps 100000 --resume true
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
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.lr_scheduler import CosineAnnealingLR

if __package__ in (None, ""):  # `python baselines/iql.py` without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baselines.common import DeterministicActor, GaussianActor, TwinQ, adam, mlp, soft_update, truncate_csv
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

ALGORITHM = "iql"
EXP_ADV_MAX = 100.0  # clip of exp(β·A) (CORL EXP_ADV_MAX; the IQL code clips at 100 too)
FINETUNE_ONLINE_STEPS = 1_000_000  # CORL configs/finetune/iql/*: online_iterations 1e6


# ----------------------------------------------------------------------------------------------------------------------
# Config and per-domain presets
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class IQLConfig(RunConfig):
    """IQL run: the shared RunConfig fields plus IQL's hyperparameters (defaults = CORL's, locomotion)."""

    offline_steps: int = steps(1_000_000, 1000)  # gradient steps offline (CORL max_timesteps / offline_iterations)
    online_steps: int = steps(0, 1000)  # env steps online, one gradient step each (0 = offline only)
    finetune: bool = False  # offline-to-online with CORL's 1M online steps (scaled by --budget) unless --online-steps
    batch_size: int = 256  # CORL batch_size
    discount: float = 0.99  # γ (CORL discount)
    tau: float = 0.005  # Polyak rate of the target Q (CORL tau)
    expectile: float = 0.7  # τ of L₂^τ (CORL iql_tau; paper: 0.7 locomotion, 0.9 AntMaze)
    beta: float = 3.0  # inverse temperature β of the AWR weights (paper: 3 locomotion, 10 AntMaze)
    exp_adv_max: float = EXP_ADV_MAX  # clip of exp(β·A)
    actor_lr: float = 3e-4  # CORL actor_lr
    q_lr: float = 3e-4  # CORL qf_lr
    v_lr: float = 3e-4  # CORL vf_lr
    actor_cosine: bool = True  # cosine-annealed actor lr with period 2·offline_steps (CORL CosineAnnealingLR)
    deterministic_actor: bool = False  # tanh-MLP actor + MSE AWR instead of the Gaussian (CORL iql_deterministic)
    actor_dropout: float = 0.0  # dropout in the actor's hidden layers (CORL actor_dropout; Adroit 0.1)
    hidden_dim: int = 256  # width of every MLP (CORL 256)
    n_hidden: int = 2  # hidden layers of actor, Q and V (CORL 2)
    expl_noise: float = 0.03  # online exploration noise of the deterministic actor (CORL expl_noise)
    noise_clip: float = 0.5  # its clip (CORL noise_clip)
    normalize_states: bool = True  # z-score observations with dataset statistics (CORL normalize)
    reward_kind: str = "auto"  # none | locomotion | antmaze | ...; auto = the domain's preset (o2o.transforms)
    eval_every: int = steps(5000, 500)  # gradient steps between evaluations (CORL eval_freq 5000)
    threads: int = 1  # torch.set_num_threads (0 = torch's default)


# Per-domain presets; every value names its source. Flags override them, --budget scales the step fields after them.
PRESETS: dict[str, dict[str, Any]] = {
    "locomotion": dict(
        # IQL paper (App. B): expectile 0.7, β 3, rewards scaled by 1000 / (max − min episode return). CORL's 18
        # locomotion configs disagree among themselves: 16 use a Gaussian actor and unscaled rewards, hopper-medium and
        # hopper-medium-replay a deterministic actor, scaled rewards and τ 0.001, hopper-medium-expert β 6 and
        # expectile 0.5. As baselines.md asks, we follow the paper there (scaled rewards) and CORL's majority for the
        # actor (Gaussian). CORL's hopper-medium exactly: --deterministic-actor true --tau 0.001.
        expectile=0.7, beta=3.0, deterministic_actor=False, reward_kind="locomotion",
    ),
    "antmaze": dict(
        # CORL configs/{offline,finetune}/iql/antmaze/*: iql_tau 0.9, beta 10, Gaussian, normalize_reward (r − 1),
        # n_episodes 100; eval_freq 50000 as in CORL's finetune configs (its offline configs evaluate every 5000,
        # which with 100-episode evaluations costs more than training).
        expectile=0.9, beta=10.0, deterministic_actor=False, reward_kind="antmaze", eval_episodes=100,
        eval_every=50_000,
    ),
    "adroit": dict(
        # CORL configs/{offline,finetune}/iql/{pen,door,hammer,relocate}/*: iql_tau 0.8, beta 3, actor_dropout 0.1,
        # Gaussian, normalize_reward false.
        expectile=0.8, beta=3.0, actor_dropout=0.1, deterministic_actor=False, reward_kind="none",
    ),
    "kitchen": dict(
        # IQL code configs/kitchen_config.py (paper App. B, Kitchen): expectile 0.7, β 0.5, actor dropout 0.1, no
        # reward transform; CORL ships no kitchen IQL config.
        expectile=0.7, beta=0.5, actor_dropout=0.1, deterministic_actor=False, reward_kind="none",
    ),
}


def presets(spec: DatasetSpec) -> dict[str, Any]:
    """The preset of the dataset's domain (empty for an unknown domain)."""
    return dict(PRESETS.get(spec.domain, {}))


def resolve_config(cfg: IQLConfig) -> IQLConfig:
    """--finetune without --online-steps: CORL's 1M online steps, scaled by the budget like every step field."""
    if cfg.finetune and cfg.online_steps == 0:
        others = {f.name for f in dataclasses.fields(cfg)} - {"online_steps"}
        cfg = apply_budget(dataclasses.replace(cfg, online_steps=FINETUNE_ONLINE_STEPS), cfg.budget, skip=others)
    return cfg


# ----------------------------------------------------------------------------------------------------------------------
# Networks (actors and TwinQ come from baselines.common)
# ----------------------------------------------------------------------------------------------------------------------
class ValueFunction(nn.Module):
    """V_ψ(s): an MLP with a scalar output, shape (B,)."""

    def __init__(self, obs_dim: int, hidden_dim: int = 256, n_hidden: int = 2) -> None:
        super().__init__()
        self.net = mlp(obs_dim, 1, hidden_dim, n_hidden)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


def make_actor(obs_dim: int, act_dim: int, cfg: IQLConfig) -> nn.Module:
    """CORL's deterministic tanh policy or its Gaussian policy (tanh mean, state-independent log-std)."""
    if cfg.deterministic_actor:
        return DeterministicActor(obs_dim, act_dim, cfg.hidden_dim, cfg.n_hidden, cfg.actor_dropout)
    return GaussianActor(obs_dim, act_dim, cfg.hidden_dim, cfg.n_hidden, cfg.actor_dropout, tanh_mean=True)


# ----------------------------------------------------------------------------------------------------------------------
# Losses (importable: FamO2O reuses the value and Q pieces)
# ----------------------------------------------------------------------------------------------------------------------
def expectile_loss(u: torch.Tensor, expectile: float) -> torch.Tensor:
    """L₂^τ averaged: mean(|τ − 1(u < 0)| · u²), with u = target − prediction."""
    weight = torch.where(u < 0, 1.0 - expectile, expectile)
    return (weight * u.square()).mean()


def value_loss(value: ValueFunction, q_target: TwinQ, obs: torch.Tensor, act: torch.Tensor,
               expectile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L_V: expectile regression of V(s) onto min target Q(s, a). Returns (loss, advantage Q̂ − V, detached)."""
    with torch.no_grad():
        target_q = q_target(obs, act)
    v = value(obs)
    adv = target_q - v
    return expectile_loss(adv, expectile), adv.detach()


def q_loss(q: TwinQ, next_v: torch.Tensor, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor,
           done: torch.Tensor, discount: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L_Q: each Q regresses r + γ (1 − d) V(s') (next_v carries no gradient); the mean over the twins, as CORL.

    Returns (loss, Q₁ of the batch, detached).
    """
    target = rew + discount * (1.0 - done) * next_v.detach()
    qs = q.all(obs, act)
    return F.mse_loss(qs, target.expand_as(qs)), qs[0].detach()


def awr_weights(adv: torch.Tensor, beta: float, max_weight: float = EXP_ADV_MAX) -> torch.Tensor:
    """exp(β · A), clipped above at max_weight; no gradient."""
    return torch.exp(beta * adv.detach()).clamp(max=max_weight)


def awr_policy_loss(actor: nn.Module, obs: torch.Tensor, act: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_π: weighted negative log-likelihood (Gaussian actor) or weighted squared error (deterministic actor)."""
    if isinstance(actor, DeterministicActor):
        bc = (actor(obs) - act).square().sum(-1)
    else:
        bc = -actor.log_prob(obs, act)
    return (weights * bc).mean()


# ----------------------------------------------------------------------------------------------------------------------
# The update
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class IQLAgent:
    """Networks, their optimizers and the actor's lr schedule."""

    actor: nn.Module
    q: TwinQ
    q_target: TwinQ
    value: ValueFunction
    actor_opt: torch.optim.Optimizer
    q_opt: torch.optim.Optimizer
    v_opt: torch.optim.Optimizer
    actor_sched: torch.optim.lr_scheduler.LRScheduler | None

    def state_dict(self) -> dict[str, Any]:
        """Everything trainable, for checkpoints."""
        out = {k: getattr(self, k).state_dict() for k in ("actor", "q", "q_target", "value", "actor_opt", "q_opt",
                                                           "v_opt")}
        out["actor_sched"] = self.actor_sched.state_dict() if self.actor_sched is not None else {}
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict()."""
        for k in ("actor", "q", "q_target", "value", "actor_opt", "q_opt", "v_opt"):
            getattr(self, k).load_state_dict(state[k])
        if self.actor_sched is not None:
            self.actor_sched.load_state_dict(state["actor_sched"])


def make_agent(obs_dim: int, act_dim: int, cfg: IQLConfig, device: torch.device) -> IQLAgent:
    """Fresh networks (PyTorch default init, as CORL) and Adam optimizers."""
    actor = make_actor(obs_dim, act_dim, cfg).to(device)
    q = TwinQ(obs_dim, act_dim, cfg.hidden_dim, cfg.n_hidden).to(device)
    q_target = copy.deepcopy(q).requires_grad_(False)
    value = ValueFunction(obs_dim, cfg.hidden_dim, cfg.n_hidden).to(device)
    actor_opt = adam(actor.parameters(), cfg.actor_lr)
    # CORL steps CosineAnnealingLR(T_max = offline steps) at every update, online ones too, so the actor lr reaches 0
    # at the end of the offline phase and climbs back along the cosine while fine-tuning; we keep that.
    t_max = cfg.offline_steps or cfg.online_steps or 1
    sched = CosineAnnealingLR(actor_opt, t_max) if cfg.actor_cosine else None
    return IQLAgent(actor, q, q_target, value, actor_opt, adam(q.parameters(), cfg.q_lr),
                    adam(value.parameters(), cfg.v_lr), sched)


def update(agent: IQLAgent, batch: tuple[torch.Tensor, ...], cfg: IQLConfig) -> dict[str, torch.Tensor]:
    """One IQL gradient step on (s, a, r, s', done), in CORL's order: V, then Q, then the actor, then the target.

    V(s') for the Q target and the advantage for the actor come from V before its step (as CORL). Returns detached
    device tensors (no host sync).
    """
    obs, act, rew, next_obs, done = batch
    with torch.no_grad():
        next_v = agent.value(next_obs)

    loss_v, adv = value_loss(agent.value, agent.q_target, obs, act, cfg.expectile)
    agent.v_opt.zero_grad(set_to_none=True)
    loss_v.backward()
    agent.v_opt.step()

    loss_q, q1 = q_loss(agent.q, next_v, obs, act, rew, done, cfg.discount)
    agent.q_opt.zero_grad(set_to_none=True)
    loss_q.backward()
    agent.q_opt.step()
    soft_update(agent.q_target, agent.q, cfg.tau)

    weights = awr_weights(adv, cfg.beta, cfg.exp_adv_max)
    loss_pi = awr_policy_loss(agent.actor, obs, act, weights)
    agent.actor_opt.zero_grad(set_to_none=True)
    loss_pi.backward()
    agent.actor_opt.step()
    if agent.actor_sched is not None:
        agent.actor_sched.step()

    return {"value_loss": loss_v.detach(), "q_loss": loss_q.detach(), "actor_loss": loss_pi.detach(),
            "q1_mean": q1.mean(), "adv_mean": adv.mean(), "weight_mean": weights.mean()}


@torch.no_grad()
def explore(actor: nn.Module, obs: torch.Tensor, cfg: IQLConfig) -> torch.Tensor:
    """Online action (CORL finetune): a sample of the Gaussian, or the tanh action plus clipped Gaussian noise."""
    if isinstance(actor, DeterministicActor):
        a = actor(obs)
        a = a + (torch.randn_like(a) * cfg.expl_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
    else:
        a = actor.sample(obs)
    return a.clamp(-1.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------------
# Training loop: offline steps, then (optionally) online env steps with one update each
# ----------------------------------------------------------------------------------------------------------------------
def train(cfg: IQLConfig) -> dict[str, Any]:
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


def _train(cfg: IQLConfig, out: Path, recorder: RunRecorder) -> None:
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
        agent.actor.eval()
        extra: dict[str, float | None] = {}
        if phase == "online":
            extra["train_score"] = float(np.mean(train_scores[-10:])) if train_scores else None
            if spec.has_success:  # CORL: regret = mean(1 − success) over all training episodes so far
                extra["regret"] = float(np.mean(1.0 - np.asarray(successes))) if successes else None
        res = evaluator(torch_policy(agent.actor.act, device), step, phase, env_steps, **extra)
        agent.actor.train()
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
                act = explore(agent.actor, torch.as_tensor(x, device=device), cfg).cpu().numpy()[0]
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
    cfg = parse_config(IQLConfig, presets, argv, description=__doc__)
    summary = train(cfg)
    return {"finished": 0, "diverged": 3}.get(summary["status"], 1)


if __name__ == "__main__":
    raise SystemExit(main())
