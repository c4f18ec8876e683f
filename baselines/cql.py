"""CQL: Conservative Q-Learning (Kumar et al. 2020, arXiv:2006.04779), CQL(H) on a SAC backbone, offline and
offline-to-online.

Reference implementation: CORL (corl-team/CORL, algorithms/offline/cql.py and algorithms/finetune/cql.py, one YAML
per dataset in configs/{offline,finetune}/cql/), itself a port of young-geng/CQL (JaxCQL). Reimplemented here, not
copied. Deliberate differences from CORL (all value-neutral except where noted):

- The twin critics are one stacked module (parameters of shape (2, in, out)); each layer is one batched matmul for
  both critics, and the dataset, random, current-policy and next-policy actions go through the critics in a single
  forward of B·(1 + 3N) rows. CORL does six separate critic calls per critic.
- All losses are built from the same pre-update parameters and applied with one backward pass; gradients are
  routed with detach (the policy's Q uses detached critic weights, the α and α' losses detach their inputs). The
  gradients equal CORL's sequence of separate backward passes.
- Orthogonal init (hidden layers gain √2, output layer gain 1e-2) for actor and critics, as JaxCQL. CORL's offline
  file ignores `orthogonal_init` for the actor and its finetune file uses gain √2 on the output layer too.
- CORL's offline file builds critic 2 with 3 hidden layers even when `q_n_hidden_layers` is 5 (AntMaze); both
  critics get `q_hidden_layers` here (as CORL's finetune file).
- Locomotion rewards are not rescaled (29 of CORL's 30 locomotion configs and the CQL paper; the odd one out,
  hopper-medium-v2, sets normalize_reward: true). AntMaze uses 10 r − 5 (CORL's cql configs).
- Online done mask = gymnasium's `terminated` (true terminals only). CORL infers it from the step count.
- The online `regret` is CORL's: mean of 1 − success over finished training episodes, an episode succeeding when
  `info["success"]` held on any of its steps.

Command line: `python baselines/cql.py --dataset NAME --seed 0 --out DIR --budget smoke|short|full --device cpu`
(`--help` lists every field; `--online-steps N` adds the online phase). Exit status: 0 finished, 3 diverged,
1 failed.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from o2o.buffer import ReplayBuffer
from o2o.cli import RunConfig, default_out, parse_config, steps
from o2o.data import load_dataset
from o2o.records import RunRecorder
from o2o.registry import DatasetSpec
from o2o.training import (
    Checkpointer,
    Evaluator,
    MetricLog,
    check_finite,
    config_dict,
    pick_device,
    rng_state,
    run_recorded,
    set_rng_state,
    set_seed,
    torch_policy,
    warn,
)
from o2o.transforms import ObsNormalizer, reward_transform

ALGORITHM = "cql"
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # clamp of the policy's log std (JaxCQL, CORL)
ALPHA_PRIME_MAX = 1e6  # clamp of the Lagrange multiplier α' (JaxCQL, CORL)


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class CQLConfig(RunConfig):
    """CQL hyperparameters; defaults are CORL's locomotion configs (configs/offline/cql/hopper/*.yaml)."""

    offline_steps: int = steps(1_000_000, 100)  # gradient steps on the dataset (CORL max_timesteps, offline_iterations)
    online_steps: int = steps(0, 100)  # env steps after the offline phase, one gradient step each (CORL finetune)
    eval_every: int = steps(5000, 50)  # steps between evaluations (CORL eval_freq; AntMaze 50000)
    batch_size: int = 256
    gamma: float = 0.99  # discount
    tau: float = 5e-3  # soft target update rate
    target_update_period: int = 1
    policy_lr: float = 3e-5  # actor and SAC temperature learning rate (AntMaze/Adroit 1e-4)
    qf_lr: float = 3e-4  # critics and α' learning rate
    hidden_dim: int = 256
    q_hidden_layers: int = 3  # hidden layers of each critic (AntMaze 5)
    actor_hidden_layers: int = 3
    orthogonal_init: bool = True
    auto_entropy: bool = True  # tune the SAC temperature towards target_entropy
    target_entropy: float | None = None  # default −act_dim
    alpha_multiplier: float = 1.0  # SAC temperature = alpha_multiplier · exp(log α) (or the constant without tuning)
    backup_entropy: bool = False  # subtract α log π in the Bellman target
    bc_steps: int = 0  # behaviour-cloning warm-up steps of the policy (0 in every CORL config)
    log_std_multiplier: float = 1.0  # initial value of the policy's learned log-std multiplier
    log_std_offset: float = -1.0  # initial value of the policy's learned log-std offset
    cql_alpha: float = 10.0  # weight α of the CQL(H) penalty (AntMaze 5, Adroit 1)
    cql_alpha_online: float | None = None  # α during the online phase (default: cql_alpha, as every CORL config)
    cql_n_actions: int = 10  # N sampled actions per source (random, current policy, next policy)
    cql_importance_sample: bool = True  # importance-sampled logsumexp (CQL paper, appendix F)
    cql_lagrange: bool = False  # tune α' by dual gradient descent towards cql_target_action_gap
    cql_target_action_gap: float = -1.0  # τ of the Lagrange version (AntMaze 0.8)
    cql_temp: float = 1.0  # temperature of the logsumexp
    cql_max_target_backup: bool = False  # Bellman target = max over N sampled next actions (AntMaze)
    cql_clip_diff_min: float = -math.inf  # clip of (logsumexp − Q(s, a_data)) per sample (AntMaze −200)
    cql_clip_diff_max: float = math.inf
    normalize_obs: bool = True  # z-score observations with dataset statistics (AntMaze: off)
    reward_kind: str = "none"  # o2o.transforms.reward_transform: none | locomotion | cql_antmaze | ...
    threads: int = 1  # torch.set_num_threads (0 = torch's default); 1 as every algorithm file: parallel sweeps


# Per-domain presets. Sources: CORL configs/offline/cql/<env>/*.yaml and configs/finetune/cql/<env>/*.yaml
# (commit eeeeef2), which agree within each domain apart from hopper-medium-v2's normalize_reward.
PRESETS: dict[str, dict[str, Any]] = {
    # configs/offline/cql/{halfcheetah,hopper,walker2d}/*.yaml: α 10, policy lr 3e-5, 3 hidden layers, no Lagrange.
    "locomotion": dict(cql_alpha=10.0, policy_lr=3e-5, q_hidden_layers=3, reward_kind="none", normalize_obs=True),
    # configs/{offline,finetune}/cql/antmaze/*.yaml: α 5 with Lagrange, gap 0.8, max-target backup, 5 hidden layers,
    # clip_diff_min −200, reward 10 r − 5, no state normalisation, policy lr 1e-4, eval every 50k steps, 100 episodes.
    "antmaze": dict(cql_alpha=5.0, cql_lagrange=True, cql_target_action_gap=0.8, cql_max_target_backup=True,
                    q_hidden_layers=5, cql_clip_diff_min=-200.0, reward_kind="cql_antmaze", normalize_obs=False,
                    policy_lr=1e-4, eval_every=50_000, eval_episodes=100),
    # configs/offline/cql/{pen,door,hammer,relocate}/*.yaml: α 1, policy lr 1e-4, states normalised.
    "adroit": dict(cql_alpha=1.0, policy_lr=1e-4, q_hidden_layers=3, reward_kind="none", normalize_obs=True),
}
# configs/finetune/cql/{pen,door,hammer,relocate}/cloned_v1.yaml differ from the offline ones: max-target backup,
# clip_diff_min −200 and no state normalisation. Applied when --online-steps > 0.
ONLINE_PRESETS: dict[str, dict[str, Any]] = {
    "adroit": dict(cql_max_target_backup=True, cql_clip_diff_min=-200.0, normalize_obs=False),
}


def presets(spec: DatasetSpec, online: bool = False) -> dict[str, Any]:
    """Preset fields of the dataset's domain (and its fine-tuning variant when `online`)."""
    if spec.domain not in PRESETS:
        warn(f"CORL has no CQL config for domain {spec.domain!r}; using the locomotion defaults")
    out = dict(PRESETS.get(spec.domain, {}))
    if online:
        out.update(ONLINE_PRESETS.get(spec.domain, {}))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------------

def mlp(in_dim: int, out_dim: int, hidden: int, n_hidden: int, orthogonal: bool = True) -> nn.Sequential:
    """ReLU MLP; orthogonal init with gain √2 on hidden layers and 1e-2 on the output layer (JaxCQL)."""
    dims = [in_dim] + [hidden] * n_hidden
    layers: list[nn.Module] = []
    for i, o in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(i, o), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], out_dim))
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    for k, m in enumerate(linears):
        last = k == len(linears) - 1
        if orthogonal:
            nn.init.orthogonal_(m.weight, gain=1e-2 if last else math.sqrt(2))
            nn.init.zeros_(m.bias)
        elif last:
            nn.init.xavier_uniform_(m.weight, gain=1e-2)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


class TanhGaussianActor(nn.Module):
    """π(a|s) = max_action · tanh(u), u ~ N(μ(s), σ(s)); log σ = m · raw + c with learned scalars m and c."""

    def __init__(self, obs_dim: int, act_dim: int, max_action: float = 1.0, hidden: int = 256, n_hidden: int = 3,
                 orthogonal: bool = True, log_std_multiplier: float = 1.0, log_std_offset: float = -1.0) -> None:
        super().__init__()
        self.act_dim = act_dim
        self.max_action = float(max_action)
        self.net = mlp(obs_dim, 2 * act_dim, hidden, n_hidden, orthogonal)
        self.log_std_multiplier = nn.Parameter(torch.tensor(float(log_std_multiplier)))
        self.log_std_offset = nn.Parameter(torch.tensor(float(log_std_offset)))

    def dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (clamped) log std of the pre-tanh Gaussian."""
        mean, raw = self.net(obs).split(self.act_dim, dim=-1)
        log_std = (self.log_std_multiplier * raw + self.log_std_offset).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std

    def sample(self, mean: torch.Tensor, log_std: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n reparameterised samples per state: actions (B, n, act_dim) and their log-probabilities (B, n)."""
        eps = torch.randn(mean.shape[0], n, mean.shape[-1], device=mean.device, dtype=mean.dtype)
        u = mean.unsqueeze(1) + log_std.exp().unsqueeze(1) * eps
        logp = gaussian_tanh_log_prob(eps, log_std.unsqueeze(1), u)
        return self.max_action * torch.tanh(u), logp

    def forward(self, obs: torch.Tensor, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample n actions per state."""
        return self.sample(*self.dist(obs), n)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log π(a|s) of actions (B, act_dim) clipped to ±(1 − 1e-5) before atanh, as o2o.transforms.clip_actions."""
        mean, log_std = self.dist(obs)
        u = torch.atanh((actions / self.max_action).clamp(-1 + 1e-5, 1 - 1e-5))
        return gaussian_tanh_log_prob((u - mean) / log_std.exp(), log_std, u)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action max_action · tanh(μ(s)) (evaluation)."""
        return self.max_action * torch.tanh(self.dist(obs)[0])


def gaussian_tanh_log_prob(eps: torch.Tensor, log_std: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """log N(u; μ, σ) − log|d tanh(u)/du| summed over action dims, with eps = (u − μ)/σ.

    log(1 − tanh(u)²) = 2 (log 2 − u − softplus(−2u)) is the numerically stable form.
    """
    normal = -0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return (normal - log_det).sum(-1)


class VectorizedCritic(nn.Module):
    """E critics Q_e(s, a) as one module: weights stacked as (E, in, out), each layer one batched matmul."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, n_hidden: int = 3, n_critics: int = 2,
                 orthogonal: bool = True) -> None:
        super().__init__()
        dims = [obs_dim + act_dim] + [hidden] * n_hidden + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, o in zip(dims[:-1], dims[1:]):
            self.weights.append(nn.Parameter(torch.empty(n_critics, i, o)))
            self.biases.append(nn.Parameter(torch.zeros(n_critics, 1, o)))
        self.n_critics = n_critics
        self.reset_parameters(orthogonal)

    @torch.no_grad()
    def reset_parameters(self, orthogonal: bool = True) -> None:
        """Each critic initialised like an independent `mlp` (orthogonal √2 hidden, 1e-2 output)."""
        n = len(self.weights)
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            last = k == n - 1
            for e in range(self.n_critics):
                lin = nn.Linear(w.shape[1], w.shape[2])  # torch's default init as the non-orthogonal fallback
                if orthogonal:
                    nn.init.orthogonal_(lin.weight, gain=1e-2 if last else math.sqrt(2))
                    nn.init.zeros_(lin.bias)
                elif last:
                    nn.init.xavier_uniform_(lin.weight, gain=1e-2)
                    nn.init.zeros_(lin.bias)
                w[e].copy_(lin.weight.T)
                b[e, 0].copy_(lin.bias)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """Q of every critic: obs (B, obs_dim), actions (B, act_dim) -> (E, B) or (B, K, act_dim) -> (E, B, K).

        `detach=True` evaluates with detached weights (gradients reach the inputs, never the critics).
        """
        lead = actions.shape[:-1]
        if actions.dim() == 3:
            obs = obs.unsqueeze(1).expand(-1, actions.shape[1], -1)
        x = torch.cat([obs, actions], dim=-1).reshape(-1, obs.shape[-1] + actions.shape[-1])
        h = x.unsqueeze(0).expand(self.n_critics, -1, -1)
        n = len(self.weights)
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            if detach:
                w, b = w.detach(), b.detach()
            h = torch.baddbmm(b, h, w)
            if k < n - 1:
                h = h.relu_()
        return h.reshape(self.n_critics, *lead)


# ----------------------------------------------------------------------------------------------------------------
# Losses (names as in the paper)
# ----------------------------------------------------------------------------------------------------------------

def cql_logsumexp(q_rand: torch.Tensor, q_next: torch.Tensor, q_cur: torch.Tensor, logp_next: torch.Tensor,
                  logp_cur: torch.Tensor, log_density_rand: float, temp: float = 1.0, importance_sample: bool = True,
                  q_data: torch.Tensor | None = None) -> torch.Tensor:
    """Sample estimate of log Σ_a exp Q(s, a), the first term of the CQL(H) regulariser (paper eq. 4, appendix F).

    q_rand: Q at N uniform actions (density exp(log_density_rand)); q_cur / q_next: Q(s, ·) at N actions sampled
    from π(·|s) / π(·|s') with log-probabilities logp_cur / logp_next. With importance sampling every sample is
    weighted by 1/density: temp · logsumexp([q_rand − log U, q_next − log π(a'|s'), q_cur − log π(a|s)] / temp)
    (the constant −log 3N of the sample mean is dropped, as in JaxCQL and CORL). Without it, the plain logsumexp
    over the samples and the dataset action q_data. Shapes (..., N) for the samples, (..., ) for q_data.
    """
    if importance_sample:
        cat = torch.cat([q_rand - log_density_rand, q_next - logp_next, q_cur - logp_cur], dim=-1)
    else:
        if q_data is None:
            raise ValueError("the plain logsumexp needs q_data")
        cat = torch.cat([q_rand, q_data.unsqueeze(-1), q_next, q_cur], dim=-1)
    return torch.logsumexp(cat / temp, dim=-1) * temp


def cql_h_gap(logsumexp_q: torch.Tensor, q_data: torch.Tensor, clip_min: float = -math.inf,
              clip_max: float = math.inf) -> torch.Tensor:
    """E_s[log Σ_a exp Q(s, a) − E_{a~D} Q(s, a)], each sample's difference clipped to [clip_min, clip_max]."""
    return (logsumexp_q - q_data).clamp(clip_min, clip_max).mean(dim=-1)


def alpha_prime_value(log_alpha_prime: torch.Tensor) -> torch.Tensor:
    """α' = exp(log α') clamped to [0, 1e6]."""
    return log_alpha_prime.exp().clamp(0.0, ALPHA_PRIME_MAX)


def alpha_prime_loss(log_alpha_prime: torch.Tensor, cql_gap: torch.Tensor, cql_alpha: float,
                     target_action_gap: float) -> torch.Tensor:
    """Dual loss of the Lagrange version (paper eq. 30): −α' · α · (gap − τ), averaged over the critics.

    Gradient descent on it raises α' while the gap exceeds τ and lowers it otherwise; the gap is detached.
    """
    return -(alpha_prime_value(log_alpha_prime) * cql_alpha * (cql_gap.detach() - target_action_gap)).mean()


# ----------------------------------------------------------------------------------------------------------------
# Agent and update
# ----------------------------------------------------------------------------------------------------------------

class CQL:
    """Actor, stacked twin critics and their target, SAC temperature α and CQL multiplier α', with optimisers."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: CQLConfig, max_action: float = 1.0,
                 device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.act_dim = act_dim
        self.max_action = float(max_action)
        self.actor = TanhGaussianActor(obs_dim, act_dim, max_action, cfg.hidden_dim, cfg.actor_hidden_layers,
                                       cfg.orthogonal_init, cfg.log_std_multiplier, cfg.log_std_offset).to(device)
        self.critic = VectorizedCritic(obs_dim, act_dim, cfg.hidden_dim, cfg.q_hidden_layers, 2,
                                       cfg.orthogonal_init).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=device, requires_grad=True)  # SAC temperature (JaxCQL: 0)
        self.log_alpha_prime = torch.ones((), device=device, requires_grad=True)  # CQL multiplier (JaxCQL: 1)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.policy_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.qf_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.policy_lr)
        self.alpha_prime_opt = torch.optim.Adam([self.log_alpha_prime], lr=cfg.qf_lr)
        self.target_entropy = -float(act_dim) if cfg.target_entropy is None else float(cfg.target_entropy)
        self.log_density_rand = -act_dim * math.log(2.0 * self.max_action)  # uniform on [−max, max]^d
        self.cql_alpha = float(cfg.cql_alpha)  # switched to cql_alpha_online in the online phase
        self.total_it = 0

    def update(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """One CQL step on a batch (s, a, r, s', done); returns detached device-tensor metrics (no host sync)."""
        cfg = self.cfg
        obs, actions, rewards, next_obs, dones = batch
        n = cfg.cql_n_actions
        self.total_it += 1

        # Policy samples: with gradient at s (policy and α losses), without at s' (targets and the penalty).
        mean, log_std = self.actor.dist(obs)
        pi, logp_pi = self.actor.sample(mean, log_std, 1)
        pi, logp_pi = pi.squeeze(1), logp_pi.squeeze(1)
        with torch.no_grad():
            next_mean, next_log_std = self.actor.dist(next_obs)
            cur_actions, logp_cur = self.actor.sample(mean.detach(), log_std.detach(), n)
            next_actions, logp_next = self.actor.sample(next_mean, next_log_std, n)
            rand_actions = torch.empty_like(cur_actions).uniform_(-self.max_action, self.max_action)

        # SAC temperature.
        if cfg.auto_entropy:
            alpha_loss = -(self.log_alpha * (logp_pi.detach() + self.target_entropy)).mean()
            alpha = self.log_alpha.detach().exp() * cfg.alpha_multiplier
        else:
            alpha_loss = torch.zeros((), device=obs.device)
            alpha = torch.full((), cfg.alpha_multiplier, device=obs.device)

        # Policy: SAC objective (behaviour cloning during the first bc_steps), critics' weights detached.
        if self.total_it <= cfg.bc_steps:
            policy_loss = (alpha * logp_pi - self.actor.log_prob(obs, actions)).mean()
        else:
            q_pi = self.critic(obs, pi, detach=True).min(dim=0).values
            policy_loss = (alpha * logp_pi - q_pi).mean()

        # Bellman target from the target critics.
        with torch.no_grad():
            if cfg.cql_max_target_backup:
                t_actions, t_logp = self.actor.sample(next_mean, next_log_std, n)
                q_next = self.target_critic(next_obs, t_actions).min(dim=0).values  # (B, N)
                target_q, idx = q_next.max(dim=-1)
                t_logp = t_logp.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
            else:
                t_actions, t_logp = self.actor.sample(next_mean, next_log_std, 1)
                target_q = self.target_critic(next_obs, t_actions).min(dim=0).values.squeeze(-1)
                t_logp = t_logp.squeeze(-1)
            if cfg.backup_entropy:
                target_q = target_q - alpha * t_logp
            td_target = rewards + (1.0 - dones) * cfg.gamma * target_q

        # One critic forward over dataset, random, next-policy and current-policy actions: (2, B, 1 + 3N).
        all_actions = torch.cat([actions.unsqueeze(1), rand_actions, next_actions, cur_actions], dim=1)
        q_all = self.critic(obs, all_actions)
        q_data = q_all[..., 0]
        q_rand, q_next_pi, q_cur_pi = q_all[..., 1:].split(n, dim=-1)
        bellman_error = (q_data - td_target).pow(2).mean(dim=-1)  # (2,)

        # CQL(H) regulariser: α · (log Σ_a exp Q(s, a) − Q(s, a_data)), Lagrange-weighted when enabled.
        lse = cql_logsumexp(q_rand, q_next_pi, q_cur_pi, logp_next, logp_cur, self.log_density_rand, cfg.cql_temp,
                            cfg.cql_importance_sample, q_data)
        cql_gap = cql_h_gap(lse, q_data, cfg.cql_clip_diff_min, cfg.cql_clip_diff_max)  # (2,)
        if cfg.cql_lagrange:
            alpha_prime = alpha_prime_value(self.log_alpha_prime.detach())
            cql_penalty = alpha_prime * self.cql_alpha * (cql_gap - cfg.cql_target_action_gap)
            ap_loss = alpha_prime_loss(self.log_alpha_prime, cql_gap, self.cql_alpha, cfg.cql_target_action_gap)
        else:
            alpha_prime = torch.zeros((), device=obs.device)
            cql_penalty = self.cql_alpha * cql_gap
            ap_loss = torch.zeros((), device=obs.device)
        qf_loss = (bellman_error + cql_penalty).sum()

        # The four losses touch disjoint parameters: one backward, then every optimiser steps.
        opts = [self.actor_opt, self.critic_opt]
        if cfg.auto_entropy:
            opts.append(self.alpha_opt)
        if cfg.cql_lagrange:
            opts.append(self.alpha_prime_opt)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        (qf_loss + policy_loss + alpha_loss + ap_loss).backward()
        for opt in opts:
            opt.step()
        if self.total_it % cfg.target_update_period == 0:
            self.soft_update(cfg.tau)

        return {
            "qf_loss": qf_loss.detach(), "bellman_error": bellman_error.detach().mean(),
            "policy_loss": policy_loss.detach(), "alpha": alpha, "alpha_loss": alpha_loss.detach(),
            "log_pi": logp_pi.detach().mean(), "q_data": q_data.detach().mean(), "target_q": target_q.mean(),
            "cql_gap": cql_gap.detach().mean(), "cql_penalty": cql_penalty.detach().mean(),
            "q_rand": q_rand.detach().mean(), "q_cur_pi": q_cur_pi.detach().mean(), "alpha_prime": alpha_prime,
            "alpha_prime_loss": ap_loss.detach(),
        }

    @torch.no_grad()
    def soft_update(self, tau: float) -> None:
        """θ' ← θ' + τ (θ − θ') for the target critics."""
        torch._foreach_lerp_(list(self.target_critic.parameters()), list(self.critic.parameters()), tau)

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimisers and counters (weights_only-loadable)."""
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "log_alpha": self.log_alpha.detach().cpu(), "log_alpha_prime": self.log_alpha_prime.detach().cpu(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(), "alpha_prime_opt": self.alpha_prime_opt.state_dict(),
            "total_it": self.total_it, "cql_alpha": self.cql_alpha,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict() saved."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
            self.log_alpha_prime.copy_(state["log_alpha_prime"])
        for name in ("actor_opt", "critic_opt", "alpha_opt", "alpha_prime_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.total_it = int(state["total_it"])
        self.cql_alpha = float(state["cql_alpha"])


# ----------------------------------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class OnlineState:
    """Progress of the online phase that a checkpoint must carry."""

    env_steps: int = 0
    episodes: int = 0
    successes: list[float] | None = None  # per finished training episode (success domains)
    episode_return: float = 0.0
    episode_success: bool = False

    def regret(self) -> float | None:
        """Mean of 1 − success over finished training episodes (CORL finetune), None before the first."""
        if not self.successes:
            return None
        return float(1.0 - np.mean(self.successes))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows logged after `step` (a resumed run continues from its checkpoint's step)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)


def train(cfg: CQLConfig) -> dict[str, Any]:
    """Train CQL offline (then online when cfg.online_steps > 0); returns the run's summary.

    The summary's status is 'diverged' (and the run stops) when a metric becomes NaN/inf. A run resumed in the
    online phase keeps the online transitions gathered so far but starts a fresh training episode.
    """
    out = Path(default_out(ALGORITHM, cfg))
    recorder = RunRecorder(out, ALGORITHM, cfg.dataset, cfg.seed, config_dict(cfg), budget=cfg.budget,
                           resume=cfg.resume)
    ok, _ = run_recorded(ALGORITHM, recorder, lambda: _train(cfg, out, recorder), cfg.threads)
    if ok:
        recorder.finish("finished")
    return recorder.summary()


def _train(cfg: CQLConfig, out: Path, recorder: RunRecorder) -> None:
    from o2o.envs import make_env

    set_seed(cfg.seed)
    device = pick_device(cfg.device)
    ds = load_dataset(cfg.dataset, env_id=cfg.env, progress=False)
    spec = ds.spec

    norm = ObsNormalizer.fit(ds) if cfg.normalize_obs else ObsNormalizer.identity(ds.obs_dim)
    rew_tf = reward_transform(ds, cfg.reward_kind)
    buffer = ReplayBuffer.from_dataset(ds, norm(ds.observations), norm(ds.next_observations),
                                       np.asarray(rew_tf(ds.rewards), np.float32),
                                       capacity=len(ds) + cfg.online_steps, device=device)
    n_data = buffer.size
    env = make_env(spec)
    max_action = float(np.max(env.action_space.high))
    agent = CQL(ds.obs_dim, ds.act_dim, cfg, max_action, device)
    evaluator = Evaluator(spec, recorder, cfg.seed, cfg.eval_episodes, obs_transform=norm)
    ckpt = Checkpointer(out)
    metrics_path = out / "metrics.csv"
    total = cfg.offline_steps + cfg.online_steps
    online = OnlineState(successes=[] if spec.has_success else None)
    step = 0
    obs = None

    if cfg.resume:
        state = ckpt.load(map_location=device)
        if state is None:
            warn(f"--resume: no checkpoint in {out}; starting from scratch")
            recorder.truncate_after(0)
            metrics_path.unlink(missing_ok=True)
        else:
            agent.load_state_dict(state["agent"])
            step = int(state["step"])
            evaluator.index = int(state["eval_index"])
            evaluator.history = [float(x) for x in state["eval_history"].tolist()]
            if "online_buffer" in state:
                buffer.add_rows(state["online_buffer"])
            o = state["online"]
            online = OnlineState(int(o["env_steps"]), int(o["episodes"]),
                                 o["successes"].tolist() if spec.has_success else None)
            set_rng_state(state["rng"])
            recorder.truncate_after(step)
            _truncate_metrics(metrics_path, step)
            print(f"[cql] resumed from step {step}", flush=True)
    else:
        metrics_path.unlink(missing_ok=True)

    def save_checkpoint(at: int) -> None:
        state = {"agent": agent.state_dict(), "step": at, "eval_index": evaluator.index,
                 "eval_history": torch.tensor(evaluator.history, dtype=torch.float64), "rng": rng_state(),
                 "online": {"env_steps": online.env_steps, "episodes": online.episodes,
                            "successes": torch.tensor(online.successes or [], dtype=torch.float64)}}
        if buffer.size > n_data:
            state["online_buffer"] = buffer.rows_since(n_data)
        ckpt.save(state)

    policy = torch_policy(agent.actor.act, device)
    log = MetricLog(metrics_path, total_steps=total, name=ALGORITHM)
    log.reset_clock(step)
    last: dict[str, torch.Tensor] = {}
    t_start, step_start = time.time(), step
    try:
        while step < total:
            phase = "offline" if step < cfg.offline_steps else "online"
            if phase == "online":
                agent.cql_alpha = cfg.cql_alpha if cfg.cql_alpha_online is None else cfg.cql_alpha_online
                if obs is None:  # first online step, or resumed mid-phase: a fresh episode
                    obs, _ = env.reset(seed=cfg.seed + online.env_steps)
                    online.episode_return, online.episode_success = 0.0, False
                obs_n = norm(obs.astype(np.float32))
                with torch.no_grad():
                    action = agent.actor(torch.as_tensor(obs_n[None], device=device))[0][0, 0].cpu().numpy()
                next_obs, reward, terminated, truncated, info = env.step(action)
                online.env_steps += 1
                online.episode_return += float(reward)
                online.episode_success |= bool(info.get("success", False))
                buffer.add(obs_n[None], action[None], np.asarray([rew_tf(float(reward))], np.float32),
                           norm(np.asarray(next_obs, np.float32))[None], np.asarray([float(terminated)]))
                obs = next_obs
                if terminated or truncated:
                    online.episodes += 1
                    if online.successes is not None:
                        online.successes.append(float(online.episode_success))
                    obs = None

            last = agent.update(buffer.sample(cfg.batch_size))
            log.add(last)
            step += 1
            phase_end = step in (cfg.offline_steps, total)
            if step % cfg.log_every == 0 or phase_end:
                log.flush(step, phase)
            if step % cfg.eval_every == 0 or phase_end:
                extra = {}
                if phase == "online" and online.regret() is not None:
                    extra["regret"] = online.regret()
                evaluator(policy, step, phase, online.env_steps, **extra)
                log.reset_clock(step)
            if step % cfg.checkpoint_every == 0 or step == total:
                check_finite(**last)
                save_checkpoint(step)
            recorder.progress(step, online.env_steps)
    finally:
        recorder.progress(step, online.env_steps)
        env.close()
    if step > step_start:
        recorder.extra.update(updates_per_s=round((step - step_start) / max(time.time() - t_start, 1e-9), 2))
    if online.successes is not None and cfg.online_steps > 0:
        recorder.extra.update(regret=online.regret(), train_episodes=online.episodes)


def parse(argv: list[str] | None = None) -> CQLConfig:
    """Command line -> CQLConfig (fine-tuning presets apply when --online-steps > 0)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--online-steps", type=int, default=0)
    known, _ = pre.parse_known_args(argv)
    return parse_config(CQLConfig, lambda spec: presets(spec, online=known.online_steps > 0), argv,
                        description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status: 0 finished, 3 diverged (1 for a failure, which raises)."""
    summary = train(parse(argv))
    print(f"[{ALGORITHM}] {summary['status']}: last score {summary['last_score']}, best {summary['best_score']} "
          f"({summary['extra'].get('updates_per_s')} updates/s)", flush=True)
    return {"finished": 0, "diverged": 3}.get(summary["status"], 1)


if __name__ == "__main__":
    sys.exit(main())
