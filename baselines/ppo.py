"""PPO-clip with GAE for continuous control, single file (CleanRL ppo_continuous_action.py style), S seeds per process.

Presets by source (`--preset`, configs/ppo/<source>/: default.yaml, then the domain's and the family's file):
- `official` (the default, for PPO from scratch): CleanRL `ppo_continuous_action.py` (Huang et al. 2022, "The 37
  implementation details of PPO"): 1 env x 2048 steps, 10 epochs of 32 minibatches (64), lr 3e-4 annealed linearly, γ
  0.99, GAE λ 0.95, clip 0.2 (also for the value), advantage normalisation, entropy 0, value coefficient 0.5,
  grad-norm clip 0.5, Adam eps 1e-5, 64x64 tanh MLPs with orthogonal init, state-independent log std, running
  observation normalisation (clip 10), reward scaling by the running std of the discounted return (clip 10).
  CleanRL stands in for PPO's official code: it reproduces OpenAI baselines' ppo2 with its MuJoCo settings.
  They are also the config's defaults (what `PPOConfig()` gives in code). `cleanrl` is the old name of `official`.
- `unio4`: the online phase of Uni-O4 (Lei-Kun/Uni-O4 ppo_finetune/main.py and its scripts): 2048-step
  rollouts from one env, minibatch 128 (Adroit 256), 30 epochs (hopper 10), actor lr 2e-5 (walker2d and
  halfcheetah scripts 3e-5), critic lr 2e-4, clip 0.05 for the ratio and the value, entropy 0.01, grad clip 0.5,
  Adam eps 1e-5, linear lr decay, fixed observation normalisation with the offline statistics, no reward norm.

Differences from CleanRL, on purpose: actor and critic have separate Adam optimisers (Uni-O4 does so; the nets share
no parameters, so this equals CleanRL's joint Adam except that grad-norm clipping is per net); `vf_coef` multiplies
CleanRL's 0.5·(v − R)² (Uni-O4's (v − R)² is `vf_coef = 2`); log σ is clamped to [−20, 2] (o2o.nets.GaussianActor).

Seeds packed (`--seeds 0,1,2`): the networks are o2o.nets modules with a leading member axis, S seeds × `num_envs`
envs run in one vector env, and every random number (action noise, minibatch order) comes from the seed's own
stream (o2o.rng.MemberRNG), so each seed gets the records it gets alone (tests/test_ppo.py). Seed s's env j starts
with `reset(seed=env_seed(s) + j)`; observation and reward statistics, losses, gradient clipping and divergence are
per seed; one run directory per seed (`<out>/seed<N>/`), one checkpoint file each (o2o.training.save_pack).

Truncation (time limits): the vector env autoresets in the same step and hands back the last observation of a
truncated episode in `info["final_obs"]`. A truncated (not terminated) step is bootstrapped with γ·V(s_final): the
rollout stores it in `final_values`, and `gae` adds it to that step's TD target; `dones` (terminated or truncated)
cut the advantage trace so that no value leaks across episodes. A terminated step gets no bootstrap.

Command line: `python baselines/ppo.py --dataset local:hopper-medium --seed 0 --out DIR --budget smoke|short|full`
(the dataset only names the env; PPO from scratch reads no data); `--seeds 0,1` trains both in one process.
`--preset unio4` trains this file's actor from scratch with Uni-O4's online settings (Uni-O4 itself builds its
PPOConfig from its own online_* fields and hands run_ppo its BC policy and offline V).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn as nn

if __package__ in (None, ""):  # `python baselines/ppo.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from o2o.cli import RunConfig, configure, dataset_spec, steps  # noqa: E402
from o2o.envs import make_vector_env  # noqa: E402
from o2o.nets import (  # noqa: E402
    EnsembleLinear,
    GaussianActor,
    ValueNet,
    clip_grad_norm_per_member,
    join_members,
    split_members,
)
from o2o.presets import layered_preset  # noqa: E402
from o2o.records import RunRecorder, atomic_save, truncate_csv  # noqa: E402
from o2o.registry import DatasetSpec  # noqa: E402
from o2o.rng import MemberRNG, member_generators, stream_key  # noqa: E402
from o2o.training import (  # noqa: E402
    Checkpointer,
    CheckpointError,
    Evaluator,
    MetricLog,
    config_dict,
    pick_device,
    recover_pack,
    retain_freed_memory,
    run_recorded,
    save_pack,
)

ALGORITHM = "ppo"
ROW_PAD = 64  # rows per seed are padded to a multiple of this when acting (see pad_rows)


# ----------------------------------------------------------------------------------------------------- config
PPOSource = Literal["official", "unio4", "cleanrl"]  # cleanrl: the old name of official (deprecated)


@dataclass
class PPOConfig(RunConfig):
    """PPO hyperparameters (defaults: CleanRL's ppo_continuous_action.py); step fields count env steps per seed."""

    seeds: tuple[int, ...] = ()  # train these seeds in one process, each in <out>/seed<N>/ (empty: --seed alone)
    online_steps: int = steps(1_000_000, 4096)  # env steps of training, per seed (CleanRL total_timesteps)
    eval_every: int = steps(20_000, 2048)  # env steps between evaluations (checked after each update)
    num_envs: int = 1  # envs per seed (CleanRL num_envs)
    rollout_steps: int = 2048  # steps per env per update (CleanRL num_steps)
    minibatch_size: int = 64  # transitions per gradient step (CleanRL: 2048 / num_minibatches 32)
    epochs: int = 10  # passes over each rollout (CleanRL update_epochs)
    actor_lr: float = 3e-4  # actor Adam lr (CleanRL learning_rate)
    critic_lr: float = 3e-4  # critic (V) Adam lr (CleanRL learning_rate)
    anneal_lr: bool = True  # both lrs decay linearly to 0 over online_steps (CleanRL anneal_lr)
    discount: float = 0.99  # γ of the returns and of the reward scaling (CleanRL gamma)
    gae_lambda: float = 0.95  # λ of GAE (CleanRL gae_lambda)
    clip: float = 0.2  # ε of the clipped ratio (CleanRL clip_coef)
    value_clip: float | None = 0.2  # clip of the value update around the old value; None: unclipped value loss
    ent_coef: float = 0.0  # weight of the entropy bonus (CleanRL ent_coef)
    vf_coef: float = 0.5  # weight of the value loss 0.5·(v − R)² (CleanRL vf_coef; Uni-O4's (v − R)² is 2)
    max_grad_norm: float = 0.5  # gradient-norm clip of actor and critic, each per seed (CleanRL max_grad_norm)
    normalize_advantages: bool = True  # z-score advantages per minibatch (CleanRL norm_adv)
    # z-score observations with running mean/std (CleanRL NormalizeObservation; ignored when run_ppo is given a fixed
    # normaliser, as Uni-O4's online phase)
    normalize_states: bool = True
    normalize_rewards: bool = True  # divide rewards by the running std of the discounted return (CleanRL)
    clip_obs: float = 10.0  # clip of the normalised observations (CleanRL ±10)
    clip_reward: float = 10.0  # clip of the scaled rewards (CleanRL ±10)
    target_kl: float | None = None  # stop an update's epochs early when the approximate KL exceeds it (one seed only)
    hidden: tuple[int, ...] = (64, 64)  # the actor's hidden widths, all equal (o2o.nets.MLP; CleanRL 64×64)
    critic_hidden: tuple[int, ...] = (64, 64)  # the critic's hidden widths, all equal (CleanRL 64×64)
    activation: Literal["tanh", "relu"] = "tanh"  # hidden activation of both nets (CleanRL tanh; Uni-O4 relu)
    init_log_std: float = 0.0  # initial state-independent log σ of the actor (CleanRL 0)
    # configs/ppo/<preset>/{default,<domain>,<family>}.yaml merged in that order: official = CleanRL's
    # ppo_continuous_action.py, unio4 = Uni-O4's online phase (ppo_finetune/)
    preset: PPOSource = "official"
    snapshot_every: int = 0  # env steps; >0 keeps policy snapshots in the result (behaviour-policy training)
    record_actions: bool = False  # keep every env's executed actions in the result (medium-replay source)
    threads: int = 1  # torch.set_num_threads (0 = torch's default)

    RENAMED: ClassVar[dict[str, str]] = {"gamma": "discount", "norm_obs": "normalize_states",
                                         "norm_adv": "normalize_advantages", "norm_reward": "normalize_rewards",
                                         "total_steps": "online_steps"}


def presets(cfg: PPOConfig, spec: DatasetSpec) -> dict[str, Any]:
    """The preset of --preset in layers from configs/ppo/<preset>/: `default.yaml`, then the dataset's domain and
    family files (official: CleanRL's defaults for every env; unio4: Uni-O4's online settings per domain, and per
    locomotion family where its scripts differ)."""
    source = cfg.preset
    if source == "cleanrl":
        print("warning: --preset cleanrl is deprecated, use --preset official (the old name goes in the next release)",
              file=sys.stderr, flush=True)
        source = "official"
    return layered_preset(ALGORITHM, ("default", spec.domain, spec.family), source, what=spec.name)


# ----------------------------------------------------------------------------------------------------- networks
def widths(hidden: Sequence[int], what: str) -> tuple[int, int]:
    """(width, layers) of a hidden-layer tuple of equal widths (o2o.nets.MLP); ValueError otherwise."""
    if not hidden or len(set(hidden)) != 1:
        raise ValueError(f"{what} must be one or more equal widths, not {tuple(hidden)}")
    return int(hidden[0]), len(hidden)


def make_actor(cfg: PPOConfig, obs_dim: int, act_dim: int, seeds: Sequence[int]) -> GaussianActor:
    """CleanRL's actor for S seeds: orthogonal init (gain √2, output 0.01), state-independent log σ (init_log_std)."""
    width, depth = widths(cfg.hidden, "--hidden")
    actor = GaussianActor(obs_dim, act_dim, member_generators(seeds, "ppo/actor"), width, depth, tanh_mean=False,
                          init="orthogonal", out_gain=0.01, activation=cfg.activation)
    with torch.no_grad():
        actor.log_std.fill_(cfg.init_log_std)
    return actor


def make_critic(cfg: PPOConfig, obs_dim: int, seeds: Sequence[int]) -> ValueNet:
    """CleanRL's critic for S seeds: orthogonal init (gain √2, output 1)."""
    width, depth = widths(cfg.critic_hidden, "--critic-hidden")
    return ValueNet(obs_dim, member_generators(seeds, "ppo/critic"), width, depth, init="orthogonal", out_gain=1.0,
                    activation=cfg.activation)


def pad_rows(x: torch.Tensor) -> torch.Tensor:
    """(S, n, d) padded with zero rows to a multiple of ROW_PAD rows per seed: elementwise kernels then treat a seed's
    rows alike whatever S is (bit-identical alone and packed, as o2o.loop.act_padded)."""
    pad = -x.shape[1] % ROW_PAD
    return torch.cat([x, x.new_zeros(x.shape[0], pad, x.shape[2])], 1) if pad else x


class PPOAgent:
    """S seeds' actor (`mean_log_std(obs) -> (μ, log σ)`, o2o.nets) and critic, their Adams (eps 1e-5, fused) and the
    seeds' random streams; every tensor with the member axis first."""

    def __init__(self, cfg: PPOConfig, actor: nn.Module, critic: nn.Module, seeds: Sequence[int]) -> None:
        self.actor, self.critic, self.seeds = actor, critic, list(seeds)
        device = next(actor.parameters()).device
        self.rng = MemberRNG(seeds, "ppo", device)
        self.opt_a = torch.optim.Adam(actor.parameters(), lr=cfg.actor_lr, eps=1e-5, fused=True)
        self.opt_c = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr, eps=1e-5, fused=True)

    @property
    def members(self) -> int:
        """S."""
        return len(self.seeds)

    def dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and log σ, each (S, B, act_dim)."""
        mean, log_std = self.actor.mean_log_std(obs)
        return mean, log_std.expand_as(mean)

    @torch.no_grad()
    def explore(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For observations (S, n, d): sampled actions (S, n, a), their log π (S, n) and V (S, n)."""
        x = pad_rows(obs)
        mean, log_std = self.dist(x)
        eps = self.rng.randn(*mean.shape[1:])
        act = mean + log_std.exp() * eps
        logp = gaussian_log_prob(act, mean, log_std)
        n = obs.shape[1]
        return act[:, :n], logp[:, :n], self.critic(x)[:, :n]

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic (evaluation) actions, the mean: (S, n, d) -> (S, n, a)."""
        return self.actor.act(pad_rows(obs))[:, :obs.shape[1]]

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V: (S, n, d) -> (S, n)."""
        return self.critic(pad_rows(obs))[:, :obs.shape[1]]

    def state_dict(self) -> dict[str, Any]:
        """Everything trainable (member axis first)."""
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "opt_actor": self.opt_a.state_dict(), "opt_critic": self.opt_c.state_dict(),
                "rng": self.rng.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict()."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.opt_a.load_state_dict(state["opt_actor"])
        self.opt_c.load_state_dict(state["opt_critic"])
        self.rng.load_state_dict(state["rng"])


def make_agent(cfg: PPOConfig, spec: DatasetSpec, seeds: Sequence[int] | None = None,
               device: torch.device | str = "cpu") -> PPOAgent:
    """Fresh actor and critic of the config's sizes for `seeds` (default: cfg.seeds, else cfg.seed)."""
    seeds = list(seeds or cfg.seeds or [cfg.seed])
    actor = make_actor(cfg, spec.obs_dim, spec.act_dim, seeds).to(device)
    return PPOAgent(cfg, actor, make_critic(cfg, spec.obs_dim, seeds).to(device), seeds)


def plain_actor_state(actor: GaussianActor, member: int, tanh_mean: bool = False) -> dict[str, torch.Tensor]:
    """Seed `member`'s actor in the portable layout of policy files (o2o.generate.NumpyGaussianPolicy reads it):
    mean_net.{2i}.weight (out, in), mean_net.{2i}.bias, log_std (act_dim,), the clamped value the actor uses."""
    out: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(actor.net.layers):
        out[f"mean_net.{2 * i}.weight"] = layer.weight[member].detach().T.cpu().clone()
        out[f"mean_net.{2 * i}.bias"] = layer.bias[member, 0].detach().cpu().clone()
    out["log_std"] = actor.log_std[member, :actor.act_dim].detach().clamp(actor.log_std_min, actor.log_std_max).cpu()
    return out


def random_actor_state(obs_dim: int, act_dim: int, seed: int) -> dict[str, torch.Tensor]:
    """The randomly initialised 64×64 tanh actor of the earlier single-seed PPO under torch.manual_seed(seed), in the
    portable layout: the draws of nn.Linear's own init, then orthogonal W (gain √2, output 0.01) and zero bias, layer by
    layer, reproduced from one generator (o2o.generate's random datasets stay what they were)."""
    gen = torch.Generator().manual_seed(seed)
    dims, gains = [obs_dim, 64, 64, act_dim], [math.sqrt(2), math.sqrt(2), 0.01]
    out: dict[str, torch.Tensor] = {}
    for i, (fan_in, fan_out, gain) in enumerate(zip(dims[:-1], dims[1:], gains)):
        layer = EnsembleLinear(1, fan_in, fan_out)
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear.reset_parameters: kaiming_uniform(a=√5) weight, uniform bias
        torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=gen)
        torch.empty(fan_out).uniform_(-bound, bound, generator=gen)
        layer.init_member_(0, gen, "orthogonal", gain)
        out[f"mean_net.{2 * i}.weight"] = layer.weight[0].detach().T.clone()
        out[f"mean_net.{2 * i}.bias"] = layer.bias[0, 0].detach().clone()
    out["log_std"] = torch.zeros(act_dim)
    return out


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
    """Clipped surrogate, to minimise: −E[min(ρA, clip(ρ, 1−ε, 1+ε)A)], ρ = exp(new − old), the mean over the last
    dim: (B,) -> scalar, (M, B) -> one loss per member (M,)."""
    ratio = (new_logp - old_logp).exp()
    return -torch.min(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv).mean(-1)


def value_loss(v: torch.Tensor, v_old: torch.Tensor, returns: torch.Tensor, clip: float | None) -> torch.Tensor:
    """0.5·E[max((v−R)², (v_old + clip(v − v_old, ±ε) − R)²)] (CleanRL); unclipped 0.5·E[(v−R)²] when clip is None.
    The mean over the last dim, as ppo_loss."""
    err = (v - returns).pow(2)
    if clip is None:
        return 0.5 * err.mean(-1)
    v_clipped = v_old + (v - v_old).clamp(-clip, clip)
    return 0.5 * torch.max(err, (v_clipped - returns).pow(2)).mean(-1)


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
def gaussian_log_prob(act: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(a; μ, σ²) summed over the last dim, from log σ (no log of σ: exact alone and packed)."""
    return (-0.5 * ((act - mean) * (-log_std).exp()).square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def ppo_update(agent: PPOAgent, cfg: PPOConfig, obs: torch.Tensor, act: torch.Tensor, old_logp: torch.Tensor,
               adv: torch.Tensor, returns: torch.Tensor, old_v: torch.Tensor) -> dict[str, torch.Tensor]:
    """One minibatch step of every seed's actor and critic on (S, B, ...) tensors; metrics (S,) (no host sync)."""
    mean, log_std = agent.dist(obs)
    new_logp = gaussian_log_prob(act, mean, log_std)
    entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1).mean(-1)
    if cfg.normalize_advantages:  # per seed over its minibatch
        adv = (adv - adv.mean(-1, keepdim=True)) / (adv.std(-1, keepdim=True) + 1e-8)
    pg = ppo_loss(new_logp, old_logp, adv, cfg.clip)
    vl = value_loss(agent.critic(obs), old_v, returns, cfg.value_clip)
    agent.opt_a.zero_grad(set_to_none=True)
    agent.opt_c.zero_grad(set_to_none=True)
    # one backward for both: the nets share no parameters, so each gets exactly its own loss's gradient; the seeds'
    # losses are summed, so each seed's parameters get exactly their own gradient too
    (pg - cfg.ent_coef * entropy + cfg.vf_coef * vl).sum().backward()
    gn_a = clip_grad_norm_per_member(agent.actor, cfg.max_grad_norm, agent.members)
    clip_grad_norm_per_member(agent.critic, cfg.max_grad_norm, agent.members)
    agent.opt_a.step()
    agent.opt_c.step()
    with torch.no_grad():
        logr = new_logp.detach() - old_logp
        approx_kl = ((logr.exp() - 1) - logr).mean(-1)
        clipfrac = ((logr.exp() - 1.0).abs() > cfg.clip).float().mean(-1)
    return {"policy_loss": pg.detach(), "value_loss": vl.detach(), "entropy": entropy.detach(),
            "approx_kl": approx_kl, "clipfrac": clipfrac, "grad_norm_actor": gn_a.detach()}


def env_seed(seed: int, update: int = 0) -> int:
    """First env seed of run seed `seed` (its env j starts with env_seed + j); after a resume at `update`, another."""
    return stream_key(seed, f"ppo-envs-{update}") & 0x3FFFFFFF


def _finite_members(module: nn.Module, members: int) -> torch.Tensor:
    """(S,) bool: every parameter of the seed finite."""
    return torch.stack([torch.isfinite(p.detach()).reshape(members, -1).all(1) for p in module.parameters()]).all(0)


@dataclass
class _SeedState:
    """What run_ppo keeps per seed on the host."""

    norm: ObsNorm
    rscale: RewardScaler | None
    episode_returns: list[float] = dataclasses.field(default_factory=list)
    recent: list[float] = dataclasses.field(default_factory=list)
    snapshots: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    actions: list[np.ndarray] = dataclasses.field(default_factory=list)
    log_probs: list[np.ndarray] = dataclasses.field(default_factory=list)


def run_ppo(cfg: PPOConfig, spec: DatasetSpec, agent: PPOAgent, *, recorders: Sequence[RunRecorder],
            evaluator: Evaluator | None, obs_normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
            reward_transform: Callable[[np.ndarray], np.ndarray] | None = None, step_offset: int = 0,
            checkpointers: Sequence[Checkpointer] | None = None, phase: str = "online") -> list[dict[str, Any]]:
    """Train the agent's S seeds with PPO in place, S × num_envs envs in one vector env; records per seed.

    recorders: one per seed (their `out` gets metrics.csv); a seed that diverges is finished 'diverged' there and
    the others go on. obs_normalizer: fixed observation transform (e.g. the offline z-score); when given there is no
    running normalisation. The evaluator (of the S seeds) must then have `obs_transform=None` or that same transform
    (it is not applied twice); with running normalisation it must have none (run_ppo normalises with each seed's
    current statistics). reward_transform: applied to env rewards before the optional reward scaling (Uni-O4's
    r · 0.1). step_offset: added to the step column of evaluations and logs (env steps before this phase).
    Returns one dict per seed: final env step, last evaluation, training episode returns, normaliser stats, and
    (when enabled in cfg) policy snapshots and the executed actions of its envs.
    """
    seeds, n_seeds, device = agent.seeds, agent.members, next(agent.actor.parameters()).device
    if evaluator is not None and evaluator.obs_transform is not None and obs_normalizer is None \
            and cfg.normalize_states:
        raise ValueError("run_ppo normalises observations itself; give the evaluator obs_transform=None")
    if cfg.target_kl is not None and n_seeds > 1:
        raise ValueError("--target-kl stops one seed's epochs early; train such seeds one per process")
    n_envs, T = cfg.num_envs, cfg.rollout_steps
    batch = n_envs * T  # per seed
    num_updates = max(cfg.online_steps // batch, 1)
    envs = make_vector_env(spec, n_seeds * n_envs)
    act_low = envs.single_action_space.low.astype(np.float32)
    act_high = envs.single_action_space.high.astype(np.float32)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    state = [_SeedState(ObsNorm(obs_dim, obs_normalizer, cfg.normalize_states, cfg.clip_obs),
                        RewardScaler(n_envs, cfg.discount, cfg.clip_reward) if cfg.normalize_rewards else None)
             for _ in seeds]
    paths = [r.out / "metrics.csv" for r in recorders]
    log = MetricLog(paths, total_steps=step_offset + num_updates * batch, name=ALGORITHM)
    active = [r.status == "running" for r in recorders]

    start_update = 0
    if checkpointers is not None and cfg.resume:
        recover_pack(checkpointers)
        loaded = [ck.load(device) for ck in checkpointers]
        mine = [ck is not None and ck.get("phase") == phase for ck in loaded]
        if any(mine) and not all(mine):
            raise CheckpointError(f"--resume: seeds {[s for s, m in zip(seeds, mine) if m]} have checkpoints of the "
                                  f"{phase} phase and {[s for s, m in zip(seeds, mine) if not m]} not; resume them in "
                                  "separate runs")
        if all(mine):
            at = sorted({int(ck["update"]) for ck in loaded})
            if len(at) > 1:
                raise CheckpointError(f"--resume: the seeds' checkpoints are at different updates {at}; resume them "
                                      "in separate runs")
            agent.load_state_dict(join_members([ck["agent"] for ck in loaded]))
            for st, ck, r in zip(state, loaded, recorders):
                st.norm.rms.load(ck["obs_rms"])
                if st.rscale is not None:
                    st.rscale.rms.load(ck["ret_rms"])
                st.episode_returns = list(ck.get("episode_returns", []))
                r.truncate_after(step_offset + at[0] * batch)
                truncate_csv(r.out / "metrics.csv", step_offset + at[0] * batch)
            active = [a and bool(ck["active"]) for a, ck in zip(active, loaded)]
            if evaluator is not None:
                evaluator.index = int(loaded[0].get("eval_index", evaluator.index))
            start_update = at[0]
            print(f"[{ALGORITHM}] resumed at update {start_update} ({start_update * batch} env steps)", flush=True)
    if start_update == 0:
        for p in paths:
            p.unlink(missing_ok=True)
    retain_freed_memory(device)

    def diverge(s: int, why: str) -> None:
        if active[s]:
            active[s] = False
            print(f"[{ALGORITHM}] seed {seeds[s]} diverged: {why}", flush=True)
            recorders[s].finish("diverged", f"diverged: {why}")

    def normalize(raw: np.ndarray, update: bool = False) -> np.ndarray:
        """(S·E, d) raw observations -> (S, E, d), each seed with its own statistics."""
        per = raw.reshape(n_seeds, n_envs, -1)
        return np.stack([st.norm(per[s], update=update) for s, st in enumerate(state)])

    def policy_np(obs: np.ndarray) -> np.ndarray:
        x = obs if (evaluator is not None and evaluator.obs_transform is not None) else \
            np.stack([st.norm(obs[s]) for s, st in enumerate(state)])
        return agent.act(torch.as_tensor(x, dtype=torch.float32, device=device)).cpu().numpy()

    def evaluate(update: int) -> list[Any]:
        if evaluator is None:
            return [None] * n_seeds
        was_training = agent.actor.training
        agent.actor.eval()
        step = step_offset + update * batch
        res = evaluator.members(policy_np, step, phase, step, [{} for _ in seeds], active)
        agent.actor.train(was_training)
        for s, r in enumerate(res):
            if active[s] and not math.isfinite(r.return_mean):
                diverge(s, f"evaluation return became NaN/inf at env step {update * batch}")
        log.reset_clock(step)
        return res

    def snapshot(s: int, update: int) -> dict[str, Any]:
        st = state[s]
        return {"env_steps": update * batch, "train_return": float(np.mean(st.recent)) if st.recent else float("nan"),
                "actor": plain_actor_state(agent.actor, s), "obs_norm": st.norm.stats()}

    def save_checkpoint(update: int) -> None:
        if checkpointers is None:
            return
        parts = split_members(agent.state_dict(), n_seeds)
        save_pack(checkpointers, [{
            "phase": phase, "update": update, "agent": parts[s], "obs_rms": st.norm.rms.state(),
            "ret_rms": st.rscale.rms.state() if st.rscale is not None else {}, "active": active[s],
            "episode_returns": st.episode_returns[-1000:], "eval_index": evaluator.index if evaluator else 0,
            "config": config_dict(dataclasses.replace(cfg, seed=seeds[s], seeds=())),
        } for s, st in enumerate(state)])

    def flat(x: torch.Tensor) -> torch.Tensor:
        """(T, S, E, ...) -> (S, T·E, ...)."""
        return x.transpose(0, 1).reshape(n_seeds, batch, *x.shape[3:])

    # rollout storage (time-major, seed axis next)
    b_obs = torch.zeros(T, n_seeds, n_envs, obs_dim, device=device)
    b_act = torch.zeros(T, n_seeds, n_envs, act_dim, device=device)
    b_logp, b_rew, b_done, b_val, b_final = (torch.zeros(T, n_seeds, n_envs, device=device) for _ in range(5))

    reset_seeds = [env_seed(s, start_update) for s in seeds]
    raw_obs, _ = envs.reset(seed=[b + j for b in reset_seeds for j in range(n_envs)])
    obs = normalize(raw_obs, update=True)
    ep_ret = np.zeros((n_seeds, n_envs))
    last_eval = last_log = last_ck = last_snap = start_update * batch
    result_eval: list[Any] = [None] * n_seeds
    t0 = time.time()
    try:
        for update in range(start_update, num_updates):
            if not any(active):
                break
            if cfg.anneal_lr:
                frac = 1.0 - update / num_updates
                for g in agent.opt_a.param_groups:
                    g["lr"] = frac * cfg.actor_lr
                for g in agent.opt_c.param_groups:
                    g["lr"] = frac * cfg.critic_lr
            # ---- rollout (in the module's own train/eval mode, the same as in the update)
            for t in range(T):
                o = torch.as_tensor(obs, device=device)
                a, logp, v = agent.explore(o)
                a_np = a.cpu().numpy()
                exec_a = np.clip(a_np, act_low, act_high).astype(np.float32)
                for s in range(n_seeds):
                    if not active[s] or not np.isfinite(exec_a[s]).all():
                        exec_a[s] = 0.0  # a diverged seed's envs keep stepping in line, never with NaN
                for s, st in enumerate(state):
                    if cfg.record_actions:
                        st.actions.append(exec_a[s].copy())
                        st.log_probs.append(logp[s].cpu().numpy().astype(np.float32))
                raw_next, r, term, trunc, info = envs.step(exec_a.reshape(n_seeds * n_envs, act_dim))
                done = term | trunc
                ep_ret += r.reshape(n_seeds, n_envs)
                r_t = np.asarray(r, np.float64).reshape(n_seeds, n_envs)
                if reward_transform is not None:
                    r_t = np.asarray(reward_transform(r_t), np.float64)
                done_se = done.reshape(n_seeds, n_envs)
                if cfg.normalize_rewards:
                    r_t = np.stack([st.rscale(r_t[s], done_se[s]) for s, st in enumerate(state)])
                b_obs[t], b_act[t], b_logp[t], b_val[t] = o, a, logp, v
                b_rew[t] = torch.as_tensor(r_t, dtype=torch.float32, device=device)
                b_done[t] = torch.as_tensor(done_se, dtype=torch.float32, device=device)
                b_final[t] = 0.0
                tr_only = (trunc & ~term).reshape(n_seeds, n_envs)
                if tr_only.any():  # V(s_final) of the truncated envs (all rows computed: fixed shapes per seed)
                    fo = np.asarray(raw_next, np.float64).reshape(n_seeds, n_envs, -1).copy()
                    for i in np.flatnonzero(tr_only.reshape(-1)):
                        fo[i // n_envs, i % n_envs] = info["final_obs"][i]
                    fv = agent.value(torch.as_tensor(normalize(fo.reshape(n_seeds * n_envs, -1)), device=device))
                    b_final[t] = torch.where(torch.as_tensor(tr_only, device=device), fv, 0.0)
                for i in np.flatnonzero(done):
                    s, j = divmod(int(i), n_envs)
                    state[s].episode_returns.append(float(ep_ret[s, j]))
                    state[s].recent.append(float(ep_ret[s, j]))
                    ep_ret[s, j] = 0.0
                obs = normalize(raw_next, update=True)
            next_v = agent.value(torch.as_tensor(obs, device=device))
            adv, ret = gae(b_rew, b_val, b_done, next_v, cfg.discount, cfg.gae_lambda, b_final)
            # ---- optimise: each seed's own shuffled minibatches, drawn from its stream
            f_obs, f_act, f_logp, f_adv, f_ret, f_val = map(flat, (b_obs, b_act, b_logp, adv, ret, b_val))
            train_return = torch.tensor([float(np.mean(st.recent[-20:])) if st.recent else math.nan for st in state],
                                        device=device)
            rows = torch.arange(n_seeds, device=device).unsqueeze(1)
            stop = False
            for _ in range(cfg.epochs):
                perm = agent.rng.bits(batch).argsort(dim=-1, stable=True)  # (S, batch): a permutation per seed
                for start in range(0, batch, cfg.minibatch_size):
                    idx = perm[:, start:start + cfg.minibatch_size]
                    m = ppo_update(agent, cfg, f_obs[rows, idx], f_act[rows, idx], f_logp[rows, idx], f_adv[rows, idx],
                                   f_ret[rows, idx], f_val[rows, idx])
                    log.add({**m, "train_return": train_return})
                    if cfg.target_kl is not None and bool(m["approx_kl"][0] > cfg.target_kl):
                        stop = True
                        break
                if stop:
                    break
            done_steps = (update + 1) * batch
            for r in recorders:
                r.progress(step_offset + done_steps, step_offset + done_steps)
            last = update + 1 == num_updates
            if done_steps - last_log >= cfg.log_every or last:
                last_log = done_steps
                finite = _finite_members(agent.actor, n_seeds) & _finite_members(agent.critic, n_seeds)
                for s, ok in enumerate(finite.cpu().tolist()):
                    if not ok:
                        diverge(s, f"actor/critic parameters became NaN/inf at env step {done_steps}")
                for s, row in enumerate(log.flush_members(step_offset + done_steps, phase, active=list(active))):
                    bad = [k for k, v in row.items() if k != "train_return" and not math.isfinite(v)]
                    if bad:
                        diverge(s, f"{', '.join(bad)} became NaN/inf at env step {done_steps}")
            if cfg.snapshot_every and (done_steps - last_snap >= cfg.snapshot_every or last):
                last_snap = done_steps
                for s, st in enumerate(state):
                    st.snapshots.append(snapshot(s, update + 1))
                    st.recent = []
            if done_steps - last_eval >= cfg.eval_every or last:
                last_eval = done_steps
                result_eval = evaluate(update + 1)
            if done_steps - last_ck >= cfg.checkpoint_every or last:
                last_ck = done_steps
                save_checkpoint(update + 1)
    finally:
        envs.close()
    elapsed = time.time() - t0
    results = []
    for s, st in enumerate(state):
        out: dict[str, Any] = {
            "env_steps": num_updates * batch, "last_eval": result_eval[s], "episode_returns": st.episode_returns,
            "obs_norm": st.norm.stats(), "wall_time_s": elapsed,
            "env_steps_per_s": (num_updates - start_update) * batch / max(elapsed, 1e-9), "active": active[s],
        }
        if cfg.snapshot_every:
            out["snapshots"] = st.snapshots
        if cfg.record_actions:
            out["actions"] = np.stack(st.actions, 0) if st.actions else np.zeros((0, n_envs, act_dim), np.float32)
            out["log_probs"] = np.stack(st.log_probs, 0) if st.log_probs else np.zeros((0, n_envs), np.float32)
            out["reset_seed"] = reset_seeds[s]
        results.append(out)
    return results


def policy_state(actor: GaussianActor, member: int, obs_norm: dict[str, torch.Tensor], cfg: PPOConfig,
                 **extra: Any) -> dict[str, Any]:
    """A small weights_only-loadable file content: seed `member`'s actor (portable layout), its architecture and the
    observation normaliser."""
    return {"actor": plain_actor_state(actor, member),
            "arch": {"obs_dim": actor.net.layers[0].in_dim, "act_dim": actor.act_dim, "hidden": list(cfg.hidden),
                     "activation": cfg.activation, "tanh_mean": False},
            "obs_norm": obs_norm, **extra}


def run_dirs(cfg: PPOConfig) -> list[Path]:
    """One directory per seed, as the engine's (o2o.loop.run_dirs)."""
    from o2o.loop import run_dirs as engine_run_dirs

    return engine_run_dirs(ALGORITHM, cfg)


def train(cfg: PPOConfig) -> list[dict[str, Any]]:
    """PPO from scratch in the env of cfg.dataset for the run's seeds (--seeds, else --seed); each seed's summary."""
    seeds = list(cfg.seeds) or [cfg.seed]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds repeats a seed: {','.join(map(str, seeds))}")
    spec = dataset_spec(cfg)
    device = pick_device(cfg.device)
    dirs = run_dirs(cfg)
    configs = [dataclasses.replace(cfg, seed=s, seeds=(), out=str(d)) for s, d in zip(seeds, dirs)]
    recorders = [RunRecorder(d, ALGORITHM, cfg.dataset, s, config_dict(c), budget=cfg.budget, resume=cfg.resume)
                 for s, d, c in zip(seeds, dirs, configs)]
    if len(seeds) > 1:
        for r in recorders:
            r.extra["pack"] = seeds
    evaluator = Evaluator(spec, recorders, seeds, cfg.eval_episodes)
    agent = make_agent(cfg, spec, seeds, device)

    def body() -> None:
        results = run_ppo(cfg, spec, agent, recorders=recorders, evaluator=evaluator,
                          checkpointers=[Checkpointer(d) for d in dirs])
        for s, (r, res) in enumerate(zip(recorders, results)):
            if r.status != "running":
                continue
            r.extra.update({"env_steps_per_s": round(res["env_steps_per_s"], 1),
                            "train_return_last": float(np.mean(res["episode_returns"][-10:]))
                            if res["episode_returns"] else None})
            state = policy_state(agent.actor, s, res["obs_norm"], cfg)
            atomic_save(Path(r.out) / "policy.pt", lambda f, state=state: torch.save(state, f))
            r.finish("finished")

    run_recorded(ALGORITHM, recorders, body, cfg.threads)
    return [r.summary() for r in recorders]


def main(argv: list[str] | None = None) -> int:
    """Command line: train PPO from scratch in the env of --dataset; exit 0 (all finished) or 3 (a seed diverged)."""
    cfg = configure(PPOConfig, presets, argv, description=__doc__.split("\n\n")[0])
    if cfg.preset == "cleanrl":  # the records name the source by its current name
        cfg = dataclasses.replace(cfg, preset="official")
    statuses = [s["status"] for s in train(cfg)]
    return 0 if all(s == "finished" for s in statuses) else 3 if "diverged" in statuses else 1


if __name__ == "__main__":
    sys.exit(main())
