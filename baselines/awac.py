"""AWAC: Advantage-Weighted Actor-Critic (Nair, Gupta, Dalal & Levine, arXiv 2006.09359), offline and offline-to-online.

Reference implementation: CORL (corl-team/CORL, algorithms/offline/awac.py and algorithms/finetune/awac.py,
configs/), reimplemented on the project's engine (o2o/loop.py: data, protocol, evaluation, records, S seeds per
process); losses are each seed's own mean. Twin critics learn Q^π by TD with next actions from the current policy; the
actor does advantage-weighted maximum likelihood on the buffer's actions:
  L_Q(θ_i) = E_(s,a,s')~D [ (Q_θi(s,a) − (r + γ (1 − d) min_j Q_θ̂j(s', a')))² ],  a' ~ π(·|s')   (summed over i)
  L_π(φ)   = −E_(s,a)~D [ min(exp(A(s,a) / λ), 100) · log π_φ(a|s) ],  A(s,a) = min_j Q_θj(s,a) − min_j Q_θj(s, ã),
             ã ~ π(·|s)   (the AWAC paper's weights exp(A/λ), λ the Lagrange multiplier, clipped at 100 as CORL)

Usage:
  python baselines/awac.py --dataset antmaze-umaze-v2 --seed 0 --out DIR --budget smoke|short|full --device cpu
  python baselines/awac.py --dataset hopper-medium-v2 --seeds 0,1,2,3,4      # five seeds in one process
  python baselines/awac.py --dataset pen-cloned-v1 --finetune true      # CORL's finetune protocol (1M + 1M)
  python baselines/awac.py --dataset data.hdf5 --env Hopper-v5 --online-steps 100000 --resume true
Every config field is a flag (`--help` lists them with their defaults). Exit status: 0 finished, 3 diverged, 1 failed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

if __package__ in (None, ""):  # `python baselines/awac.py` without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from o2o import loop
from o2o.cli import steps
from o2o.loop import Algorithm, LoopConfig, Setup, Transforms
from o2o.nets import GaussianActor, TwinQ, adam, mean_per_member, soft_update
from o2o.presets import run_preset
from o2o.registry import DatasetSpec
from o2o.rng import MemberRNG, member_generators
from o2o.transforms import RewardKind

ALGORITHM = "awac"
EXP_ADV_MAX = 100.0  # clip of exp(A/λ) (CORL AdvantageWeightedActorCritic exp_adv_max)
FINETUNE_ONLINE_STEPS = 1_000_000  # CORL configs/finetune/awac/*: online_iterations 1e6
FALLBACK = ("corl",)  # preset sources tried after --preset's


# ----------------------------------------------------------------------------------------------------------------------
# Config and presets (configs/awac/<source>/<dataset or domain>.yaml; README, "Presets")
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class AWACConfig(LoopConfig):
    """AWAC run: the engine's fields plus AWAC's hyperparameters (defaults = CORL's, locomotion)."""

    offline_steps: int = steps(1_000_000, 1000)  # gradient steps offline (CORL num_train_ops / offline_iterations)
    online_steps: int = steps(0, 1000)  # env steps online, one gradient step each (0 = offline only)
    finetune: bool = False  # offline-to-online with CORL's 1M online steps (scaled by --budget) unless --online-steps
    discount: float = 0.99  # discount γ of the critics' TD target (CORL gamma)
    tau: float = 0.005  # Polyak rate of the target critics (CORL tau)
    awac_lambda: float = 1.0 / 3.0  # λ of exp(A/λ) (CORL awac_lambda 0.3333 locomotion, 0.1 AntMaze and Adroit)
    exp_adv_max: float = EXP_ADV_MAX  # upper clip of the actor's weights exp(A/λ)
    actor_lr: float = 3e-4  # actor Adam lr (CORL learning_rate, one lr for actor and critics)
    critic_lr: float = 3e-4  # twin Q Adam lr (CORL learning_rate)
    hidden_dim: int = 256  # width of the actor's and critics' hidden layers (CORL hidden_dim)
    n_hidden: int = 3  # hidden layers of actor and critics: CORL's Actor and Critic have 3 (baselines.md says 2)
    normalize_states: bool = True  # z-score observations with dataset statistics (CORL always does for AWAC)
    reward_kind: Literal["auto"] | RewardKind = "auto"  # o2o.transforms; auto: r − 1 on AntMaze, else none (CORL)
    eval_every: int = steps(5000, 500)  # offline: gradient steps between evaluations (CORL eval_frequency 1000)


def presets(cfg: AWACConfig, spec: DatasetSpec) -> dict[str, Any]:
    """The dataset's preset from configs/awac/<--preset>/ (fine-tuning files when online; --finetune adds CORL's 1M
    online steps)."""
    return run_preset(ALGORITHM, cfg, spec, FALLBACK, FINETUNE_ONLINE_STEPS)


def transforms(cfg: AWACConfig, spec: DatasetSpec) -> Transforms:
    """State z-scoring (CORL always normalises for AWAC) and the reward transform (auto: r − 1 on AntMaze, else
    none, as CORL's AWAC configs)."""
    kind = cfg.reward_kind if cfg.reward_kind != "auto" else ("antmaze" if spec.domain == "antmaze" else "none")
    return Transforms(normalize_states=cfg.normalize_states, reward_kind=kind)


# ----------------------------------------------------------------------------------------------------------------------
# Losses: CORL's Actor is a Gaussian with a raw (unbounded) mean and a state-independent log-std clamped to [−20, 2];
# its samples are clamped to the action box [−1, 1]. Each loss returns every seed's own mean, shape (S,).
# ----------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_action(actor: GaussianActor, obs: torch.Tensor, rng: MemberRNG) -> torch.Tensor:
    """ã ~ π(·|s), clamped to the action box (CORL Actor.forward); used for targets, advantages and exploration."""
    return actor.sample(obs, rng).clamp(-1.0, 1.0)


def critic_loss(critic: TwinQ, critic_target: TwinQ, actor: GaussianActor, obs: torch.Tensor, act: torch.Tensor,
                rew: torch.Tensor, next_obs: torch.Tensor, done: torch.Tensor, discount: float,
                rng: MemberRNG) -> tuple[torch.Tensor, torch.Tensor]:
    """L_Q: TD regression of both critics onto r + γ (1 − d) min_j Q̂_j(s', a'), a' ~ π(·|s'); the twin MSEs summed as
    CORL. Returns (loss (S,), Q₁ of the batch (S, B), detached)."""
    with torch.no_grad():
        target = rew + discount * (1.0 - done) * critic_target(next_obs, sample_action(actor, next_obs, rng))
    qs = critic.all(obs, act)  # (S, 2, B)
    return 2.0 * mean_per_member((qs - target.unsqueeze(1)).square()), qs[:, 0].detach()


def awac_weights(adv: torch.Tensor, awac_lambda: float, max_weight: float = EXP_ADV_MAX) -> torch.Tensor:
    """exp(A / λ), clipped above at max_weight; no gradient."""
    return torch.exp(adv.detach() / awac_lambda).clamp(max=max_weight)


def actor_loss(actor: GaussianActor, critic: TwinQ, obs: torch.Tensor, act: torch.Tensor, awac_lambda: float,
               rng: MemberRNG, max_weight: float = EXP_ADV_MAX) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_π: −mean(w · log π(a|s)) with w = awac_weights(min Q(s,a) − min Q(s,ã)), ã ~ π(·|s).

    Returns (loss (S,), advantages, weights), the last two detached.
    """
    log_prob, pi_act = actor.log_prob_and_sample(obs, act, rng)  # one actor forward for both (CORL makes two)
    with torch.no_grad():  # Q(s, a) and Q(s, ã) in one critic forward of 2B rows (the same numbers as two)
        q_data, q_pi = critic(torch.cat([obs, obs], 1), torch.cat([act, pi_act.clamp(-1.0, 1.0)], 1)).chunk(2, 1)
        adv = q_data - q_pi
        weights = awac_weights(adv, awac_lambda, max_weight)
    return -mean_per_member(weights * log_prob), adv, weights


# ----------------------------------------------------------------------------------------------------------------------
# The agent: S seeds' networks (PyTorch default init, as CORL) and Adam optimizers
# ----------------------------------------------------------------------------------------------------------------------
class AWAC:
    """Actor, twin critics and their target; one `update` is one gradient step of every seed."""

    def __init__(self, cfg: AWACConfig, setup: Setup) -> None:
        self.cfg, seeds, dev = cfg, setup.seeds, setup.device
        self.rng = MemberRNG(seeds, ALGORITHM, dev)
        od, ad, h, n = setup.obs_dim, setup.act_dim, cfg.hidden_dim, cfg.n_hidden
        self.actor = GaussianActor(od, ad, member_generators(seeds, "awac/actor"), h, n, tanh_mean=False).to(dev)
        self.critic = TwinQ(od, ad, member_generators(seeds, "awac/critic"), h, n).to(dev)
        self.critic_target = TwinQ(od, ad, member_generators(seeds, "awac/critic"), h, n).to(dev)
        self.critic_target.requires_grad_(False)
        self.actor_opt = adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), cfg.critic_lr)

    def update(self, batch: tuple[torch.Tensor, ...], online: bool) -> dict[str, torch.Tensor]:
        """One AWAC gradient step on (s, a, r, s', done), in CORL's order: critics, actor (with the new critics),
        targets."""
        cfg = self.cfg
        obs, act, rew, next_obs, done = batch
        loss_q, q1 = critic_loss(self.critic, self.critic_target, self.actor, obs, act, rew, next_obs, done,
                                 cfg.discount, self.rng)
        self.critic_opt.zero_grad(set_to_none=True)
        loss_q.sum().backward()
        self.critic_opt.step()

        loss_pi, adv, weights = actor_loss(self.actor, self.critic, obs, act, cfg.awac_lambda, self.rng,
                                           cfg.exp_adv_max)
        self.actor_opt.zero_grad(set_to_none=True)
        loss_pi.sum().backward()
        self.actor_opt.step()

        soft_update(self.critic_target, self.critic, cfg.tau)
        return {"critic_loss": loss_q.detach(), "actor_loss": loss_pi.detach(), "q1_mean": mean_per_member(q1),
                "adv_mean": mean_per_member(adv), "weight_mean": mean_per_member(weights)}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """Evaluation: the mean. Online: a sample clamped to the action box (CORL finetune)."""
        return sample_action(self.actor, obs, self.rng) if explore else self.actor.act(obs)

    def state_dict(self) -> dict[str, Any]:
        """Everything trainable, for checkpoints (member axis first)."""
        return {k: getattr(self, k).state_dict() for k in PARTS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict()."""
        for k in PARTS:
            getattr(self, k).load_state_dict(state[k])


PARTS = ("actor", "critic", "critic_target", "actor_opt", "critic_opt", "rng")


def algorithm(cfg: AWACConfig) -> Algorithm:
    """AWAC for the engine (o2o/loop.py)."""
    return Algorithm(ALGORITHM, AWAC, transforms)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 finished, 3 diverged)."""
    return loop.main(AWACConfig, presets, algorithm, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
