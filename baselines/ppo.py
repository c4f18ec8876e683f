"""PPO-clip with GAE for continuous control, single file (CleanRL ppo_continuous_action.py style).

Sources of the defaults:
- From scratch: CleanRL `ppo_continuous_action.py` (Huang et al. 2022, "The 37 implementation details of PPO"):
  1 env x 2048 steps, 10 epochs of 32 minibatches (64), lr 3e-4 annealed linearly, gamma 0.99, GAE lambda 0.95,
  clip 0.2 (also for the value), advantage normalisation, entropy 0, value coefficient 0.5, grad-norm clip 0.5,
  Adam eps 1e-5, 64x64 tanh MLPs with orthogonal init, state-independent log std, running observation
  normalisation (clip 10), reward scaling by the running std of the discounted return (clip 10).
- `UNIO4_ONLINE`: the online phase of Uni-O4 (Lei-Kun/Uni-O4 ppo_finetune/main.py and its scripts): 2048-step
  rollouts from one env, minibatch 128 (Adroit 256), 30 epochs (hopper 10), actor lr 2e-5 (walker2d and
  halfcheetah scripts 3e-5), critic lr 2e-4, clip 0.05 for the ratio and the value, entropy 0.01, grad clip 0.5,
  Adam eps 1e-5, linear lr decay, fixed observation normalisation with the offline statistics, no reward norm.

Differences from CleanRL, on purpose: actor and critic have separate Adam optimisers (Uni-O4 does so; the nets share
no parameters, so this equals CleanRL's joint Adam except that grad-norm clipping is per net); `vf_coef` multiplies
CleanRL's 0.5·(v − R)² (Uni-O4's (v − R)² is `vf_coef = 2`).

Truncation (time limits): the vector env autoresets in the same step and hands back the last observation of a
truncated episode in `info["final_obs"]`. A truncated (not terminated) step is bootstrapped with γ·V(s_final): the
rollout stores it in `final_values`, and `gae` adds it to that step's TD target; `dones` (terminated or truncated)
cut the advantage trace so that no value leaks across episodes. A terminated step gets no bootstrap.

Command line: `python baselines/ppo.py --dataset local:hopper-medium --seed 0 --out DIR --budget smoke|short|full`
(the dataset only names the env; PPO from scratch reads no data). `--preset unio4` uses `UNIO4_ONLINE` (from
scratch that still trains this file's GaussianActor; Uni-O4 itself passes its BC policy and offline V to run_ppo).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Normal

if __package__ in (None, ""):  # `python baselines/ppo.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from o2o.cli import RunConfig, dataset_spec, default_out, parse_config, steps  # noqa: E402
from o2o.envs import make_vector_env  # noqa: E402
from o2o.records import RunRecorder  # noqa: E402
from o2o.registry import DatasetSpec  # noqa: E402
from o2o.training import (  # noqa: E402
    Checkpointer,
    DivergenceError,
    Evaluator,
    MetricLog,
    config_dict,
    rng_state,
    run_recorded,
    set_rng_state,
    set_seed,
)

ALGORITHM = "ppo"


# ----------------------------------------------------------------------------------------------------- config
@dataclass
class PPOConfig(RunConfig):
    """PPO hyperparameters (CleanRL defaults); step fields count env steps."""

    total_steps: int = steps(1_000_000, 4096)  # env steps
    eval_every: int = steps(20_000, 2048)  # env steps between evaluations (checked after each update)
    num_envs: int = 1
    rollout_steps: int = 2048  # steps per env per update
    minibatch_size: int = 64
    epochs: int = 10
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    anneal_lr: bool = True  # linear decay to 0 over total_steps
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    value_clip: float | None = 0.2  # None: unclipped value loss
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    norm_obs: bool = True  # running mean/std (ignored when a fixed normaliser is given to run_ppo)
    norm_reward: bool = True  # divide by the running std of the discounted return
    clip_obs: float = 10.0
    clip_reward: float = 10.0
    target_kl: float | None = None  # stop an update's epochs early when the approximate KL exceeds it
    hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    init_log_std: float = 0.0
    preset: str = "cleanrl"  # cleanrl | unio4 (UNIO4_ONLINE of the dataset's domain)
    snapshot_every: int = 0  # env steps; >0 keeps policy snapshots in the result (behaviour-policy training)
    record_actions: bool = False  # keep every env's executed actions in the result (medium-replay source)


# Uni-O4 online phase (ppo_finetune/main.py defaults and scripts/*.sh); actor lr per family where scripts differ.
UNIO4_ONLINE: dict[str, dict[str, Any]] = {
    "locomotion": dict(num_envs=1, rollout_steps=2048, minibatch_size=128, epochs=30, actor_lr=2e-5, critic_lr=2e-4,
                       gamma=0.99, gae_lambda=0.95, clip=0.05, value_clip=0.05, ent_coef=0.01, vf_coef=2.0,
                       max_grad_norm=0.5, norm_adv=True, norm_obs=False, norm_reward=False, anneal_lr=True,
                       hidden=(256, 256, 256), critic_hidden=(256, 256, 256), activation="relu"),
    "adroit": dict(num_envs=1, rollout_steps=2048, minibatch_size=256, epochs=10, actor_lr=3e-6, critic_lr=2e-4,
                   gamma=0.99, gae_lambda=0.95, clip=0.05, value_clip=0.05, ent_coef=0.01, vf_coef=2.0,
                   max_grad_norm=0.5, norm_adv=True, norm_obs=False, norm_reward=False, anneal_lr=True,
                   hidden=(256, 256, 256), critic_hidden=(256, 256, 256), activation="relu"),
    # no official online scripts for AntMaze or Kitchen: the ppo_finetune/main.py defaults
    "antmaze": dict(num_envs=1, rollout_steps=2048, minibatch_size=128, epochs=30, actor_lr=2e-5, critic_lr=2e-4,
                    gamma=0.99, gae_lambda=0.95, clip=0.05, value_clip=0.05, ent_coef=0.01, vf_coef=2.0,
                    max_grad_norm=0.5, norm_adv=True, norm_obs=False, norm_reward=False, anneal_lr=True,
                    hidden=(256, 256, 256), critic_hidden=(256, 256, 256), activation="relu"),
}
UNIO4_ONLINE["kitchen"] = dict(UNIO4_ONLINE["antmaze"])
# per-family actor lr / epochs from the official scripts (hm.sh: 2e-5, 10 epochs; wm.sh, halfm.sh: 3e-5, 30 epochs)
UNIO4_FAMILY: dict[str, dict[str, Any]] = {
    "hopper": dict(actor_lr=2e-5, epochs=10),
    "walker2d": dict(actor_lr=3e-5, epochs=30),
    "halfcheetah": dict(actor_lr=3e-5, epochs=30),
}


def presets(spec: DatasetSpec, preset: str = "cleanrl") -> dict[str, Any]:
    """Per-domain preset: CleanRL's defaults (the dataclass) for from-scratch PPO, or Uni-O4's online settings."""
    if preset == "cleanrl":
        return {}
    if preset == "unio4":
        out = dict(UNIO4_ONLINE[spec.domain])
        out.update(UNIO4_FAMILY.get(spec.family, {}))
        out["preset"] = "unio4"
        return out
    raise ValueError(f"unknown preset {preset!r}; use cleanrl or unio4")


# ----------------------------------------------------------------------------------------------------- networks
def _layer(fan_in: int, fan_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: str = "tanh", out_gain: float = 1.0
        ) -> nn.Sequential:
    """MLP with orthogonal init (gain √2 hidden, `out_gain` last), as CleanRL's layer_init."""
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [_layer(d, h, math.sqrt(2)), act()]
        d = h
    layers.append(_layer(d, out_dim, out_gain))
    return nn.Sequential(*layers)


class GaussianActor(nn.Module):
    """Diagonal Gaussian policy: MLP mean (optionally tanh-bounded) and a state-independent log std (CleanRL)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64), activation: str = "tanh",
                 init_log_std: float = 0.0, tanh_mean: bool = False) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.tanh_mean = obs_dim, act_dim, tanh_mean
        self.mean_net = mlp(obs_dim, tuple(hidden), act_dim, activation, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        """Mean action (tanh-bounded when tanh_mean)."""
        mu = self.mean_net(obs)
        return torch.tanh(mu) if self.tanh_mean else mu

    def dist(self, obs: torch.Tensor) -> Normal:
        """Per-dimension Normal; sum log_prob over the last dim."""
        mu = self.mean(obs)
        return Normal(mu, self.log_std.exp().expand_as(mu), validate_args=False)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action (the mean)."""
        return self.mean(obs)

    forward = act


class ValueCritic(nn.Module):
    """State-value function V(s) -> (B,)."""

    def __init__(self, obs_dim: int, hidden: tuple[int, ...] = (64, 64), activation: str = "tanh") -> None:
        super().__init__()
        self.net = mlp(obs_dim, tuple(hidden), 1, activation, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


# ----------------------------------------------------------------------------------------------------- losses
def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, next_value: torch.Tensor, gamma: float,
        lam: float, final_values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation on time-major (T, ...) tensors.

    `dones[t]` is 1 when step t ended its episode (terminated or truncated): the trace and the bootstrap from
    values[t+1] (which belongs to the next episode) are cut. `final_values[t]` is V(s_final) of a *truncated* step
    (0 elsewhere, and 0 for terminations); it is added as γ·final_values[t] to the TD target, so a time limit is
    bootstrapped and a termination is not. `next_value` is V of the observation after the last step.
    Returns (advantages, returns = advantages + values).
    """
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    not_done = 1.0 - dones.float()
    for t in reversed(range(T)):
        nv = next_value if t == T - 1 else values[t + 1]
        target = rewards[t] + gamma * not_done[t] * nv
        if final_values is not None:
            target = target + gamma * final_values[t]
        delta = target - values[t]
        last = delta + gamma * lam * not_done[t] * last
        adv[t] = last
    return adv, adv + values


def ppo_loss(new_logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """Clipped surrogate, to minimise: −E[min(ρA, clip(ρ, 1−ε, 1+ε)A)], ρ = exp(new − old)."""
    ratio = (new_logp - old_logp).exp()
    return -torch.min(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv).mean()


def value_loss(v: torch.Tensor, v_old: torch.Tensor, returns: torch.Tensor, clip: float | None) -> torch.Tensor:
    """0.5·E[max((v−R)², (v_old + clip(v − v_old, ±ε) − R)²)] (CleanRL); unclipped 0.5·E[(v−R)²] when clip is None."""
    err = (v - returns).pow(2)
    if clip is None:
        return 0.5 * err.mean()
    v_clipped = v_old + (v - v_old).clamp(-clip, clip)
    return 0.5 * torch.max(err, (v_clipped - returns).pow(2)).mean()


# ----------------------------------------------------------------------------------------------------- normalisers
class RunningMeanStd:
    """Running mean and variance (parallel algorithm of Chan et al.), float64, as gymnasium's NormalizeObservation."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = epsilon

    def update(self, x: np.ndarray) -> None:
        """Fold in a batch (first axis)."""
        x = np.asarray(x, np.float64)
        b_mean, b_var, b_count = x.mean(0), x.var(0), x.shape[0]
        delta = b_mean - self.mean
        tot = self.count + b_count
        self.mean = self.mean + delta * b_count / tot
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / tot
        self.var = m2 / tot
        self.count = tot

    def state(self) -> dict[str, Any]:
        """weights_only-loadable state."""
        return {"mean": torch.from_numpy(np.array(self.mean)), "var": torch.from_numpy(np.array(self.var)),
                "count": float(self.count)}

    def load(self, st: dict[str, Any]) -> None:
        """Restore state()."""
        self.mean, self.var, self.count = st["mean"].numpy().copy(), st["var"].numpy().copy(), float(st["count"])


class ObsNorm:
    """Observation normalisation of a run: fixed (given statistics, no update) or running (CleanRL, clipped)."""

    def __init__(self, obs_dim: int, fixed: Callable[[np.ndarray], np.ndarray] | None, running: bool,
                 clip: float = 10.0, eps: float = 1e-8) -> None:
        self.fixed, self.running, self.clip, self.eps = fixed, running and fixed is None, clip, eps
        self.rms = RunningMeanStd((obs_dim,))

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        if self.fixed is not None:
            return np.asarray(self.fixed(obs), np.float32)
        if not self.running:
            return np.asarray(obs, np.float32)
        if update:
            self.rms.update(obs)
        z = (obs - self.rms.mean) / np.sqrt(self.rms.var + self.eps)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def stats(self) -> dict[str, torch.Tensor]:
        """(mean, std, clip) of the current normalisation, for a policy used outside the run."""
        if self.fixed is not None and hasattr(self.fixed, "mean"):
            return {"mean": torch.as_tensor(np.asarray(self.fixed.mean), dtype=torch.float64),
                    "std": torch.as_tensor(np.asarray(self.fixed.std), dtype=torch.float64),
                    "clip": torch.tensor(math.inf)}
        if not self.running:
            d = self.rms.mean.shape[0]
            return {"mean": torch.zeros(d, dtype=torch.float64), "std": torch.ones(d, dtype=torch.float64),
                    "clip": torch.tensor(math.inf)}
        return {"mean": torch.from_numpy(self.rms.mean.copy()),
                "std": torch.from_numpy(np.sqrt(self.rms.var + self.eps)), "clip": torch.tensor(self.clip)}


class RewardScaler:
    """CleanRL's NormalizeReward: r / std(discounted return), clipped; the return accumulator resets at episode end."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8) -> None:
        self.ret = np.zeros(num_envs)
        self.rms = RunningMeanStd(())
        self.gamma, self.clip, self.eps = gamma, clip, eps

    def __call__(self, r: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.ret = self.ret * self.gamma + r
        self.rms.update(self.ret)
        out = np.clip(r / np.sqrt(self.rms.var + self.eps), -self.clip, self.clip)
        self.ret[done] = 0.0
        return out


# ----------------------------------------------------------------------------------------------------- training
def _finite_params(*modules: nn.Module) -> torch.Tensor:
    return torch.stack([torch.isfinite(p).all() for m in modules for p in m.parameters()]).all()


def ppo_update(actor: nn.Module, critic: nn.Module, opt_a: torch.optim.Optimizer, opt_c: torch.optim.Optimizer,
               cfg: PPOConfig, obs: torch.Tensor, act: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor,
               returns: torch.Tensor, old_v: torch.Tensor) -> dict[str, torch.Tensor]:
    """One minibatch step of actor and critic; returns detached metrics (no host sync)."""
    d = actor.dist(obs)
    new_logp = d.log_prob(act).sum(-1)
    entropy = d.entropy().sum(-1).mean()
    if cfg.norm_adv:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg = ppo_loss(new_logp, old_logp, adv, cfg.clip)
    vl = value_loss(critic(obs), old_v, returns, cfg.value_clip)
    opt_a.zero_grad(set_to_none=True)
    opt_c.zero_grad(set_to_none=True)
    # one backward for both: the nets share no parameters, so each gets exactly its own loss's gradient
    (pg - cfg.ent_coef * entropy + cfg.vf_coef * vl).backward()
    gn_a = nn.utils.clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)
    nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
    opt_a.step()
    opt_c.step()
    with torch.no_grad():
        logr = new_logp.detach() - old_logp
        approx_kl = ((logr.exp() - 1) - logr).mean()
        clipfrac = ((logr.exp() - 1.0).abs() > cfg.clip).float().mean()
    return {"policy_loss": pg.detach(), "value_loss": vl.detach(), "entropy": entropy.detach(),
            "approx_kl": approx_kl, "clipfrac": clipfrac, "grad_norm_actor": gn_a.detach()}


def make_optimizers(cfg: PPOConfig, actor: nn.Module, critic: nn.Module) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Separate Adam (eps 1e-5) for actor and critic."""
    return (torch.optim.Adam(actor.parameters(), lr=cfg.actor_lr, eps=1e-5, foreach=True),
            torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr, eps=1e-5, foreach=True))


def run_ppo(cfg: PPOConfig, spec: DatasetSpec, actor: nn.Module, critic: nn.Module, *, recorder: RunRecorder,
            evaluator: Evaluator | None, obs_normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
            reward_transform: Callable[[np.ndarray], np.ndarray] | None = None, step_offset: int = 0,
            checkpointer: Checkpointer | None = None, phase: str = "online") -> dict[str, Any]:
    """Train `actor` (has `dist(obs)` and `act(obs)`) and `critic` (`critic(obs) -> (B,)`) with PPO in place.

    obs_normalizer: fixed observation transform (e.g. the offline z-score); when given there is no running
    normalisation. The evaluator must then have `obs_transform=None` or that same transform (it is not applied
    twice); with running normalisation the evaluator must have none (run_ppo normalises with its current stats).
    reward_transform: applied to env rewards before the optional reward scaling (e.g. Uni-O4's r · 0.1).
    step_offset: added to the step column of evaluations and logs (env steps before this phase).
    Returns a dict with the final env step, the last evaluation, training episode returns, the normaliser stats,
    and (when enabled in cfg) policy snapshots and the executed actions of every env.
    """
    device = next(actor.parameters()).device
    if evaluator is not None and evaluator.obs_transform is not None and obs_normalizer is None and cfg.norm_obs:
        raise ValueError("run_ppo normalises observations itself; give the evaluator obs_transform=None")
    n_envs, T = cfg.num_envs, cfg.rollout_steps
    batch = n_envs * T
    num_updates = max(cfg.total_steps // batch, 1)
    envs = make_vector_env(spec, n_envs)
    act_low = envs.single_action_space.low.astype(np.float32)
    act_high = envs.single_action_space.high.astype(np.float32)
    obs_dim = envs.single_observation_space.shape[0]
    act_dim = envs.single_action_space.shape[0]
    norm = ObsNorm(obs_dim, obs_normalizer, cfg.norm_obs, cfg.clip_obs)
    rscale = RewardScaler(n_envs, cfg.gamma, cfg.clip_reward) if cfg.norm_reward else None
    opt_a, opt_c = make_optimizers(cfg, actor, critic)
    log = MetricLog(recorder.out / "metrics.csv", total_steps=step_offset + num_updates * batch, name=ALGORITHM)

    start_update, episode_returns, snapshots = 0, [], []
    ep_seed = cfg.seed
    if checkpointer is not None and cfg.resume:
        ck = checkpointer.load(device)
        if ck is not None and ck.get("phase") == phase:
            actor.load_state_dict(ck["actor"])
            critic.load_state_dict(ck["critic"])
            opt_a.load_state_dict(ck["opt_actor"])
            opt_c.load_state_dict(ck["opt_critic"])
            norm.rms.load(ck["obs_rms"])
            if rscale is not None:
                rscale.rms.load(ck["ret_rms"])
            start_update = int(ck["update"])
            episode_returns = list(ck.get("episode_returns", []))
            if evaluator is not None:
                evaluator.index = int(ck.get("eval_index", evaluator.index))
            set_rng_state(ck["rng"])
            recorder.truncate_after(step_offset + start_update * batch)
            ep_seed = cfg.seed + 7919 * start_update  # env states are not saved: fresh episodes after a resume
            print(f"[{ALGORITHM}] resumed at update {start_update} ({start_update * batch} env steps)", flush=True)

    def policy_np(obs: np.ndarray) -> np.ndarray:
        x = obs if (evaluator is not None and evaluator.obs_transform is not None) else norm(obs)
        with torch.no_grad():
            return actor.act(torch.as_tensor(x, device=device)).cpu().numpy()

    def evaluate(update: int) -> Any:
        if evaluator is None:
            return None
        was_training = actor.training
        actor.eval()
        res = evaluator(policy_np, step_offset + update * batch, phase, env_steps=step_offset + update * batch)
        actor.train(was_training)
        log.reset_clock(step_offset + update * batch)
        return res

    def snapshot(update: int, recent: list[float]) -> dict[str, Any]:
        return {"env_steps": update * batch, "train_return": float(np.mean(recent)) if recent else float("nan"),
                "actor": {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()},
                "obs_norm": norm.stats()}

    def save_checkpoint(update: int) -> None:
        if checkpointer is None:
            return
        checkpointer.save({
            "phase": phase, "update": update, "actor": actor.state_dict(), "critic": critic.state_dict(),
            "opt_actor": opt_a.state_dict(), "opt_critic": opt_c.state_dict(), "obs_rms": norm.rms.state(),
            "ret_rms": rscale.rms.state() if rscale is not None else {}, "rng": rng_state(),
            "episode_returns": episode_returns[-1000:], "eval_index": evaluator.index if evaluator else 0,
            "config": config_dict(cfg),
        })

    # rollout storage (time-major)
    b_obs = torch.zeros(T, n_envs, obs_dim)
    b_act = torch.zeros(T, n_envs, act_dim)
    b_logp = torch.zeros(T, n_envs)
    b_rew = torch.zeros(T, n_envs)
    b_done = torch.zeros(T, n_envs)
    b_val = torch.zeros(T, n_envs)
    b_final = torch.zeros(T, n_envs)
    actions_log: list[np.ndarray] = []
    logp_log: list[np.ndarray] = []

    raw_obs, _ = envs.reset(seed=ep_seed)
    obs = norm(raw_obs, update=True)
    ep_ret = np.zeros(n_envs)
    last_eval = start_update * batch
    last_log = start_update * batch
    last_ck = start_update * batch
    last_snap = start_update * batch
    recent: list[float] = []
    result_eval = None
    t0 = time.time()
    for update in range(start_update, num_updates):
        if cfg.anneal_lr:
            frac = 1.0 - update / num_updates
            for g in opt_a.param_groups:
                g["lr"] = frac * cfg.actor_lr
            for g in opt_c.param_groups:
                g["lr"] = frac * cfg.critic_lr
        # ---- rollout (in the module's own train/eval mode, the same as in the update: old and new log-probs agree)
        for t in range(T):
            with torch.no_grad():
                o = torch.as_tensor(obs)
                d = actor.dist(o.to(device))
                a = d.sample()
                logp = d.log_prob(a).sum(-1)
                v = critic(o.to(device))
            a_np = a.cpu().numpy()
            exec_a = np.clip(a_np, act_low, act_high).astype(np.float32)
            if cfg.record_actions:
                actions_log.append(exec_a.copy())
                logp_log.append(logp.cpu().numpy().astype(np.float32))
            raw_next, r, term, trunc, info = envs.step(exec_a)
            done = term | trunc
            ep_ret += r
            r_t = np.asarray(r, np.float64)
            if reward_transform is not None:
                r_t = np.asarray(reward_transform(r_t), np.float64)
            if rscale is not None:
                r_t = rscale(r_t, done)
            b_obs[t] = o
            b_act[t] = a.cpu()
            b_logp[t] = logp.cpu()
            b_val[t] = v.cpu()
            b_rew[t] = torch.as_tensor(r_t, dtype=torch.float32)
            b_done[t] = torch.as_tensor(done, dtype=torch.float32)
            b_final[t] = 0.0
            if trunc.any():
                tr_only = trunc & ~term
                if tr_only.any():
                    fo = np.stack([info["final_obs"][i] for i in np.flatnonzero(tr_only)])
                    with torch.no_grad():
                        fv = critic(torch.as_tensor(norm(fo), device=device)).cpu()
                    b_final[t, torch.as_tensor(np.flatnonzero(tr_only))] = fv
            for i in np.flatnonzero(done):
                episode_returns.append(float(ep_ret[i]))
                recent.append(float(ep_ret[i]))
                ep_ret[i] = 0.0
            obs = norm(raw_next, update=True)
        with torch.no_grad():
            next_v = critic(torch.as_tensor(obs, device=device)).cpu()
        adv, ret = gae(b_rew, b_val, b_done, next_v, cfg.gamma, cfg.gae_lambda, b_final)
        # ---- optimise
        f_obs, f_act = b_obs.reshape(batch, obs_dim).to(device), b_act.reshape(batch, act_dim).to(device)
        f_logp, f_adv = b_logp.reshape(batch).to(device), adv.reshape(batch).to(device)
        f_ret, f_val = ret.reshape(batch).to(device), b_val.reshape(batch).to(device)
        stop = False
        for _ in range(cfg.epochs):
            perm = torch.randperm(batch, device=device)
            for s in range(0, batch, cfg.minibatch_size):
                idx = perm[s:s + cfg.minibatch_size]
                m = ppo_update(actor, critic, opt_a, opt_c, cfg, f_obs[idx], f_act[idx], f_logp[idx], f_adv[idx],
                               f_ret[idx], f_val[idx])
                approx_kl = m["approx_kl"]
                log.add(m)
                if cfg.target_kl is not None and bool(approx_kl > cfg.target_kl):
                    stop = True
                    break
            if stop:
                break
        done_steps = (update + 1) * batch
        recorder.progress(step_offset + done_steps, step_offset + done_steps)
        if done_steps - last_log >= cfg.log_every or update + 1 == num_updates:
            last_log = done_steps
            if not bool(_finite_params(actor, critic)):
                raise DivergenceError(f"actor/critic parameters became NaN/inf at env step {done_steps}")
            if recent:
                log.add({"train_return": torch.tensor(float(np.mean(recent[-20:])))})
            log.flush(step_offset + done_steps, phase)
        if cfg.snapshot_every and (done_steps - last_snap >= cfg.snapshot_every or update + 1 == num_updates):
            last_snap = done_steps
            snapshots.append(snapshot(update + 1, recent))
            recent = []
        if done_steps - last_eval >= cfg.eval_every or update + 1 == num_updates:
            last_eval = done_steps
            result_eval = evaluate(update + 1)
        if done_steps - last_ck >= cfg.checkpoint_every or update + 1 == num_updates:
            last_ck = done_steps
            save_checkpoint(update + 1)
    envs.close()
    elapsed = time.time() - t0
    out: dict[str, Any] = {
        "env_steps": num_updates * batch, "last_eval": result_eval, "episode_returns": episode_returns,
        "obs_norm": norm.stats(), "wall_time_s": elapsed,
        "env_steps_per_s": (num_updates - start_update) * batch / max(elapsed, 1e-9),
    }
    if cfg.snapshot_every:
        out["snapshots"] = snapshots
    if cfg.record_actions:
        out["actions"] = np.stack(actions_log, 0) if actions_log else np.zeros((0, n_envs, act_dim), np.float32)
        out["log_probs"] = np.stack(logp_log, 0) if logp_log else np.zeros((0, n_envs), np.float32)
        out["reset_seed"] = ep_seed
    return out


def make_agent(cfg: PPOConfig, spec: DatasetSpec) -> tuple[GaussianActor, ValueCritic]:
    """Fresh actor and critic of the config's sizes."""
    actor = GaussianActor(spec.obs_dim, spec.act_dim, cfg.hidden, cfg.activation, cfg.init_log_std)
    critic = ValueCritic(spec.obs_dim, cfg.critic_hidden, cfg.activation)
    return actor, critic


def policy_state(actor: GaussianActor, obs_norm: dict[str, torch.Tensor], cfg: PPOConfig, **extra: Any
                 ) -> dict[str, Any]:
    """A small weights_only-loadable file content: actor weights, its architecture and the obs normaliser."""
    return {"actor": {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()},
            "arch": {"obs_dim": actor.obs_dim, "act_dim": actor.act_dim, "hidden": list(cfg.hidden),
                     "activation": cfg.activation, "tanh_mean": actor.tanh_mean},
            "obs_norm": obs_norm, **extra}


def main(argv: list[str] | None = None) -> int:
    """Command line: train PPO from scratch in the env of --dataset."""
    torch.set_num_threads(1)
    args = list(sys.argv[1:] if argv is None else argv)
    preset_name = "cleanrl"
    if "--preset" in args:
        preset_name = args[args.index("--preset") + 1]
    cfg = parse_config(PPOConfig, lambda spec: presets(spec, preset_name), argv=args,
                       description="PPO (CleanRL-style, or Uni-O4's online settings with --preset unio4)")
    cfg = dataclasses.replace(cfg, out=default_out(ALGORITHM, cfg))
    spec = dataset_spec(cfg)
    set_seed(cfg.seed)
    device = torch.device("cpu") if cfg.device == "auto" else torch.device(cfg.device)
    recorder = RunRecorder(cfg.out, ALGORITHM, cfg.dataset, cfg.seed, config_dict(cfg), budget=cfg.budget,
                           resume=cfg.resume)
    evaluator = Evaluator(spec, recorder, cfg.seed, cfg.eval_episodes)
    actor, critic = make_agent(cfg, spec)
    actor.to(device)
    critic.to(device)
    ck = Checkpointer(cfg.out)
    ok, res = run_recorded(ALGORITHM, recorder, lambda: run_ppo(cfg, spec, actor, critic, recorder=recorder,
                                                                evaluator=evaluator, checkpointer=ck))
    if not ok:
        return 3  # diverged, as every algorithm file
    recorder.extra.update({"env_steps_per_s": round(res["env_steps_per_s"], 1),
                           "train_return_last": float(np.mean(res["episode_returns"][-10:]))
                           if res["episode_returns"] else None})
    torch.save(policy_state(actor, res["obs_norm"], cfg), Path(cfg.out) / "policy.pt")
    recorder.finish("finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["PPOConfig", "UNIO4_ONLINE", "GaussianActor", "ValueCritic", "gae", "ppo_loss", "value_loss", "run_ppo",
           "ppo_update", "make_optimizers", "presets", "make_agent", "policy_state", "RunningMeanStd"]
