"""CQL: Conservative Q-Learning (Kumar et al. 2020, arXiv:2006.04779), CQL(H) on a SAC backbone, offline and
offline-to-online.

Reference implementation: CORL (corl-team/CORL, algorithms/offline/cql.py and algorithms/finetune/cql.py, one YAML
per dataset in configs/{offline,finetune}/cql/), itself a port of young-geng/CQL (JaxCQL). Reimplemented here, not
copied, on the project's engine (o2o/loop.py: data, protocol, evaluation, records, S seeds per process; each seed has
its own SAC temperature α and Lagrange multiplier α', and every loss is that seed's own mean). Deliberate
differences from CORL (all value-neutral except where noted):

- The twin critics are one stacked module (parameters of shape (2, in, out)); each layer is one batched matmul for
  both critics, and the dataset, random, current-policy and next-policy actions go through the critics in a single
  forward of B·(1 + 3N) rows. CORL does six separate critic calls per critic.
- All losses are built from the same pre-update parameters and applied with one backward pass; gradients are
  routed with detach (the policy's Q uses detached critic weights, the α and α' losses detach their inputs). The
  gradients equal CORL's sequence of separate backward passes.
- Orthogonal init (hidden layers gain √2, output layer gain `orthogonal_out_gain`, 1e-2) for the critics, and for
  the actor unless `--actor-orthogonal-init false` (PyTorch default, xavier-uniform output of gain 1e-2: CORL's
  offline file, whose actor ignores `orthogonal_init`; the CORL offline presets set it). CORL's finetune file
  initialises every layer of the actor and both critics orthogonally with gain √2 and zero bias, the output layers
  too: its presets (configs/cql/corl/finetune/) set `orthogonal_out_gain: √2` and `actor_orthogonal_init: true`.
- CORL's offline file builds critic 2 with 3 hidden layers even when `q_n_hidden_layers` is 5 (AntMaze); both
  critics get `q_hidden_layers` here (as CORL's finetune file).
- Rewards and every other hyperparameter come from the dataset's preset (configs/cql/<source>/, CORL's per-dataset
  configs by default: hopper-medium-v2 normalises locomotion rewards, AntMaze uses 10 r − 5).
- Online done mask = gymnasium's `terminated` (true terminals only). CORL infers it from the step count.
- The online `regret` is CORL's: mean of 1 − success over finished training episodes, an episode succeeding when
  `info["success"]` held on any of its steps.

Command line: `python baselines/cql.py --dataset NAME --seed 0 --out DIR --budget smoke|short|full --device cpu`
(`--help` lists every field; `--online-steps N` adds the online phase; `--seeds 0,1,2` trains three seeds in one
process). Exit status: 0 finished, 3 diverged,
1 failed.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

if __package__ in (None, ""):  # `python baselines/cql.py` without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from o2o import loop
from o2o.cli import steps
from o2o.loop import Algorithm, LoopConfig, Setup, Transforms
from o2o.nets import TanhGaussianActor, TwinQ, adam, mean_per_member, member_parameter, soft_update
from o2o.presets import run_preset
from o2o.registry import DatasetSpec
from o2o.rng import MemberRNG, member_generators
from o2o.transforms import RewardKind

ALGORITHM = "cql"
ALPHA_PRIME_MAX = 1e6  # clamp of the Lagrange multiplier α' (JaxCQL, CORL)
FALLBACK = ("corl",)  # preset sources tried after --preset's


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class CQLConfig(LoopConfig):
    """CQL hyperparameters; defaults are CORL's locomotion configs (configs/offline/cql/hopper/*.yaml)."""

    offline_steps: int = steps(1_000_000, 100)  # gradient steps on the dataset (CORL max_timesteps, offline_iterations)
    online_steps: int = steps(0, 100)  # env steps after the offline phase, one gradient step each (CORL finetune)
    eval_every: int = steps(5000, 50)  # offline: steps between evaluations (CORL eval_freq; AntMaze 50000)
    discount: float = 0.99  # discount γ of the critics' TD target (CORL discount)
    tau: float = 5e-3  # Polyak rate of the target critics (CORL soft_target_update_rate)
    target_update_period: int = 1  # gradient steps between target updates (CORL target_update_period)
    actor_lr: float = 3e-5  # actor and SAC temperature Adam lr (CORL policy_lr; AntMaze/Adroit 1e-4)
    critic_lr: float = 3e-4  # critics and α' Adam lr (CORL qf_lr)
    hidden_dim: int = 256  # width of every hidden layer (CORL 256)
    q_hidden_layers: int = 3  # hidden layers of each critic (CORL q_n_hidden_layers; AntMaze 5)
    actor_hidden_layers: int = 3  # hidden layers of the actor (CORL 3)
    orthogonal_init: bool = True  # orthogonal init of the critics: gain √2, output 1e-2 (CORL orthogonal_init)
    # the actor's init: true = like the critics (JaxCQL); false = PyTorch default with a xavier-uniform output layer
    # of gain 1e-2 (CORL's offline cql.py, whose actor ignores orthogonal_init)
    actor_orthogonal_init: bool = True
    # gain of the orthogonal output layers (JaxCQL, CORL's offline cql.py: 1e-2; CORL's finetune cql.py: √2, as its
    # hidden layers)
    orthogonal_out_gain: float = 1e-2
    auto_entropy: bool = True  # tune the SAC temperature towards target_entropy (CORL use_automatic_entropy_tuning)
    target_entropy: float | None = None  # of the SAC temperature; None = −act_dim
    alpha_multiplier: float = 1.0  # SAC temperature = alpha_multiplier · exp(log α) (or the constant without tuning)
    backup_entropy: bool = False  # subtract α log π in the Bellman target
    bc_steps: int = 0  # behaviour-cloning warm-up steps of the policy (0 in every CORL config)
    log_std_multiplier: float = 1.0  # initial value of the policy's learned log-std multiplier
    log_std_offset: float = -1.0  # initial value of the policy's learned log-std offset
    cql_alpha: float = 10.0  # weight α of the CQL(H) penalty (AntMaze 5, Adroit 1)
    cql_alpha_online: float | None = None  # α during the online phase (None: cql_alpha, as every CORL config)
    cql_n_actions: int = 10  # N sampled actions per source (random, current policy, next policy)
    cql_importance_sample: bool = True  # importance-sampled logsumexp (CQL paper, appendix F)
    cql_lagrange: bool = False  # tune α' by dual gradient descent towards cql_target_action_gap
    cql_target_action_gap: float = -1.0  # τ of the Lagrange version (AntMaze 0.8)
    cql_temp: float = 1.0  # temperature of the logsumexp
    cql_max_target_backup: bool = False  # Bellman target = max over N sampled next actions (AntMaze)
    cql_clip_diff_min: float = -math.inf  # clip of (logsumexp − Q(s, a_data)) per sample (AntMaze −200)
    cql_clip_diff_max: float = math.inf  # upper clip of (logsumexp − Q(s, a_data)) per sample
    normalize_states: bool = True  # z-score observations with dataset statistics (CORL normalize; AntMaze off)
    reward_kind: RewardKind = "none"  # o2o.transforms; CORL normalize_reward: locomotion, or cql_antmaze (10 r − 5)

    RENAMED: ClassVar[dict[str, str]] = {"normalize_obs": "normalize_states", "gamma": "discount",
                                         "policy_lr": "actor_lr", "qf_lr": "critic_lr"}


def presets(cfg: CQLConfig, spec: DatasetSpec) -> dict[str, Any]:
    """The dataset's preset from configs/cql/<--preset>/; the fine-tuning files when --online-steps > 0 (CORL's
    Adroit fine-tuning configs differ from the offline ones: max-target backup, clip −200, raw states)."""
    return run_preset(ALGORITHM, cfg, spec, FALLBACK)


def transforms(cfg: CQLConfig, spec: DatasetSpec) -> Transforms:
    """State z-scoring (AntMaze: off) and the preset's reward transform."""
    return Transforms(normalize_states=cfg.normalize_states, reward_kind=cfg.reward_kind)


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


def alpha_prime_loss(alpha_prime: torch.Tensor, cql_gap: torch.Tensor, cql_alpha: float,
                     target_action_gap: float) -> torch.Tensor:
    """Dual loss of the Lagrange version (paper eq. 30): −α' · α · (gap − τ), averaged over the critics (last dim).

    α' = alpha_prime_value(log α') carries the gradient; descent on the loss raises α' while the gap exceeds τ and
    lowers it otherwise; the gap is detached.
    """
    return -(alpha_prime * cql_alpha * (cql_gap.detach() - target_action_gap)).mean(-1)


# ----------------------------------------------------------------------------------------------------------------
# Agent and update
# ----------------------------------------------------------------------------------------------------------------

class CQL:
    """Actor, twin critics and their target, SAC temperature α and CQL multiplier α' per seed, with optimisers."""

    def __init__(self, cfg: CQLConfig, setup: Setup) -> None:
        self.cfg, seeds, dev = cfg, setup.seeds, setup.device
        self.max_action = setup.max_action
        self.rng = MemberRNG(seeds, ALGORITHM, dev)

        def inits(orthogonal: bool) -> dict[str, Any]:  # orthogonal (output gain from the config) or CORL's default
            return dict(init="orthogonal" if orthogonal else "default",
                        out_init="orthogonal" if orthogonal else "xavier",
                        out_gain=cfg.orthogonal_out_gain if orthogonal else 1e-2)

        init, actor_init = inits(cfg.orthogonal_init), inits(cfg.actor_orthogonal_init)
        od, ad, h = setup.obs_dim, setup.act_dim, cfg.hidden_dim
        self.actor = TanhGaussianActor(od, ad, member_generators(seeds, "cql/actor"), h, cfg.actor_hidden_layers,
                                       setup.max_action, "state", log_std_multiplier=cfg.log_std_multiplier,
                                       log_std_offset=cfg.log_std_offset, **actor_init).to(dev)
        self.critic = TwinQ(od, ad, member_generators(seeds, "cql/critic"), h, cfg.q_hidden_layers, **init).to(dev)
        self.target_critic = TwinQ(od, ad, member_generators(seeds, "cql/critic"), h, cfg.q_hidden_layers,
                                   **init).to(dev).requires_grad_(False)
        n = len(seeds)
        self.log_alpha = member_parameter(n, 1, 0.0).to(dev)  # SAC temperature (JaxCQL: log α = 0)
        self.log_alpha_prime = member_parameter(n, 1, 1.0).to(dev)  # CQL multiplier (JaxCQL: log α' = 1)
        self.actor_opt = adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), cfg.critic_lr)
        self.alpha_opt = adam([self.log_alpha], cfg.actor_lr)
        self.alpha_prime_opt = adam([self.log_alpha_prime], cfg.critic_lr)
        self.target_entropy = -float(ad) if cfg.target_entropy is None else float(cfg.target_entropy)
        self.log_density_rand = -ad * math.log(2.0 * self.max_action)  # uniform on [−max, max]^d
        self.total_it = torch.zeros((), dtype=torch.int64, device=dev)  # on the device: no host value in update

    def update(self, batch: tuple[torch.Tensor, ...], online: bool) -> dict[str, torch.Tensor]:
        """One CQL step of every seed on its batch (s, a, r, s', done); metrics (S,), no host sync."""
        cfg = self.cfg
        obs, actions, rewards, next_obs, dones = batch
        n = cfg.cql_n_actions
        cql_alpha = cfg.cql_alpha_online if online and cfg.cql_alpha_online is not None else cfg.cql_alpha
        self.total_it.add_(1)

        # Policy samples: with gradient at s (policy and α losses), without at s' (targets and the penalty).
        mean, log_std = self.actor.dist(obs)
        pi, logp_pi = self.actor.sample_from(mean, log_std, self.rng, 1)
        pi, logp_pi = pi.squeeze(2), logp_pi.squeeze(2)  # (S, B, act_dim), (S, B)
        with torch.no_grad():
            next_mean, next_log_std = self.actor.dist(next_obs)
            cur_actions, logp_cur = self.actor.sample_from(mean.detach(), log_std.detach(), self.rng, n)
            next_actions, logp_next = self.actor.sample_from(next_mean, next_log_std, self.rng, n)
            rand_actions = self.rng.uniform(-self.max_action, self.max_action, *cur_actions.shape[1:])

        # SAC temperature, one per seed.
        log_alpha = self.log_alpha[:, :1]  # (S, 1)
        if cfg.auto_entropy:
            alpha_loss = -(log_alpha * (logp_pi.detach() + self.target_entropy)).mean(-1)
            alpha = self.log_alpha.detach().exp()[:, :1] * cfg.alpha_multiplier
        else:
            alpha_loss = torch.zeros_like(log_alpha[:, 0])
            alpha = torch.full_like(log_alpha, cfg.alpha_multiplier).detach()

        # Policy: SAC objective (behaviour cloning during the first bc_steps), critics' weights detached.
        q_pi = self.critic(obs, pi, detach=True)
        policy_loss = (alpha * logp_pi - q_pi).mean(-1)
        if cfg.bc_steps > 0:
            bc_loss = (alpha * logp_pi - self.actor.log_prob(obs, actions)).mean(-1)
            policy_loss = torch.where(self.total_it <= cfg.bc_steps, bc_loss, policy_loss)

        # Bellman target from the target critics.
        with torch.no_grad():
            if cfg.cql_max_target_backup:
                t_actions, t_logp = self.actor.sample_from(next_mean, next_log_std, self.rng, n)
                q_next = self.target_critic(next_obs, t_actions)  # (S, B, N)
                target_q, idx = q_next.max(dim=-1)
                t_logp = t_logp.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
            else:
                t_actions, t_logp = self.actor.sample_from(next_mean, next_log_std, self.rng, 1)
                target_q = self.target_critic(next_obs, t_actions).squeeze(-1)
                t_logp = t_logp.squeeze(-1)
            if cfg.backup_entropy:
                target_q = target_q - alpha * t_logp
            td_target = rewards + (1.0 - dones) * cfg.discount * target_q  # (S, B)

        # One critic forward over dataset, random, next-policy and current-policy actions: (S, 2, B, 1 + 3N).
        all_actions = torch.cat([actions.unsqueeze(2), rand_actions, next_actions, cur_actions], dim=2)
        q_all = self.critic.all(obs, all_actions)
        q_data = q_all[..., 0]  # (S, 2, B)
        q_rand, q_next_pi, q_cur_pi = q_all[..., 1:].split(n, dim=-1)
        bellman_error = (q_data - td_target.unsqueeze(1)).pow(2).mean(dim=-1)  # (S, 2)

        # CQL(H) regulariser: α · (log Σ_a exp Q(s, a) − Q(s, a_data)), Lagrange-weighted when enabled.
        lse = cql_logsumexp(q_rand, q_next_pi, q_cur_pi, logp_next.unsqueeze(1), logp_cur.unsqueeze(1),
                            self.log_density_rand, cfg.cql_temp, cfg.cql_importance_sample, q_data)
        cql_gap = cql_h_gap(lse, q_data, cfg.cql_clip_diff_min, cfg.cql_clip_diff_max)  # (S, 2)
        if cfg.cql_lagrange:
            alpha_prime_grad = alpha_prime_value(self.log_alpha_prime)[:, :1]  # (S, 1); exp of the padded vector
            alpha_prime = alpha_prime_grad.detach()
            cql_penalty = alpha_prime * cql_alpha * (cql_gap - cfg.cql_target_action_gap)
            ap_loss = alpha_prime_loss(alpha_prime_grad, cql_gap, cql_alpha, cfg.cql_target_action_gap)
        else:
            alpha_prime = torch.zeros_like(alpha)
            cql_penalty = cql_alpha * cql_gap
            ap_loss = torch.zeros_like(alpha_loss)
        qf_loss = (bellman_error + cql_penalty).sum(-1)  # (S,)

        # The four losses touch disjoint parameters: one backward, then every optimiser steps.
        opts = [self.actor_opt, self.critic_opt]
        if cfg.auto_entropy:
            opts.append(self.alpha_opt)
        if cfg.cql_lagrange:
            opts.append(self.alpha_prime_opt)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        (qf_loss + policy_loss + alpha_loss + ap_loss).sum().backward()
        for opt in opts:
            opt.step()
        if cfg.target_update_period == 1:
            soft_update(self.target_critic, self.critic, cfg.tau)
        else:  # every target_update_period steps, decided on the device
            w = cfg.tau * (self.total_it % cfg.target_update_period == 0).to(torch.float32)
            with torch.no_grad():
                for t, p in zip(self.target_critic.parameters(), self.critic.parameters()):
                    t.lerp_(p, w)

        return {
            "qf_loss": qf_loss.detach(), "bellman_error": bellman_error.detach().mean(-1),
            "policy_loss": policy_loss.detach(), "alpha": alpha[:, 0], "alpha_loss": alpha_loss.detach(),
            "log_pi": logp_pi.detach().mean(-1), "q_data": mean_per_member(q_data.detach()),
            "target_q": target_q.mean(-1), "cql_gap": cql_gap.detach().mean(-1),
            "cql_penalty": cql_penalty.detach().mean(-1), "q_rand": mean_per_member(q_rand.detach()),
            "q_cur_pi": mean_per_member(q_cur_pi.detach()), "alpha_prime": alpha_prime[:, 0],
            "alpha_prime_loss": ap_loss.detach(),
        }

    @torch.no_grad()
    def act(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """Evaluation: max_action · tanh(μ(s)). Online: a sample of the policy."""
        if explore:
            return self.actor.rsample(obs, self.rng, 1)[0][:, :, 0]
        return self.actor.act(obs)

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimisers, α, α' and counters (member axis first)."""
        out = {k: getattr(self, k).state_dict() for k in MODULES}
        out.update(log_alpha=self.log_alpha.detach().clone(), log_alpha_prime=self.log_alpha_prime.detach().clone(),
                   total_it=self.total_it.clone())
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict() saved."""
        for k in MODULES:
            getattr(self, k).load_state_dict(state[k])
        with torch.no_grad():
            for k in ("log_alpha", "log_alpha_prime", "total_it"):
                getattr(self, k).copy_(state[k])


MODULES = ("actor", "critic", "target_critic", "actor_opt", "critic_opt", "alpha_opt", "alpha_prime_opt", "rng")


def algorithm(cfg: CQLConfig) -> Algorithm:
    """CQL for the engine (o2o/loop.py)."""
    return Algorithm(ALGORITHM, CQL, transforms)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status: 0 finished, 3 diverged (1 for a failure, which raises).

    The fine-tuning presets apply when --online-steps > 0 (o2o.cli.configure reads the flags before the presets).
    """
    return loop.main(CQLConfig, presets, algorithm, argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
