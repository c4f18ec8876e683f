"""IQL: Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022, arXiv 2110.06169), offline and offline-to-online.

Reference implementation: CORL (corl-team/CORL, algorithms/offline/iql.py and algorithms/finetune/iql.py, configs/),
reimplemented on the project's engine (o2o/loop.py: data, protocol, evaluation, records, S seeds per process).
Three losses (paper §4), each seed's own mean:
  L_V(ψ) = E_(s,a)~D [ L₂^τ(Q_θ̂(s,a) − V_ψ(s)) ],   L₂^τ(u) = |τ − 1(u < 0)| u²     (expectile value regression)
  L_Q(θ) = E_(s,a,s')~D [ (r + γ (1 − d) V_ψ(s') − Q_θ(s,a))² ]                        (for each of the twin Qs)
  L_π(φ) = −E_(s,a)~D [ min(exp(β (Q_θ̂(s,a) − V_ψ(s))), 100) · log π_φ(a|s) ]          (AWR policy extraction)
with Q_θ̂ the Polyak-averaged target of min(Q₁, Q₂).

Usage:
  python baselines/iql.py --dataset antmaze-umaze-v2 --seed 0 --out DIR --budget smoke|short|full --device cpu
  python baselines/iql.py --dataset hopper-medium-v2 --seeds 0,1,2,3,4      # five seeds in one process
  python baselines/iql.py --dataset hopper-medium-v2 --finetune true      # CORL's finetune protocol (1M + 1M)
  python baselines/iql.py --dataset data.hdf5 --env Hopper-v5 --online-steps 100000 --resume true
Every config field is a flag (`--help` lists them with their defaults). Exit status: 0 finished, 3 diverged, 1 failed.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn

if __package__ in (None, ""):  # `python baselines/iql.py` without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from o2o import loop
from o2o.cli import steps
from o2o.loop import Algorithm, LoopConfig, Setup, Transforms
from o2o.nets import DeterministicActor, GaussianActor, TwinQ, ValueNet, adam, mean_per_member, soft_update
from o2o.presets import run_preset
from o2o.registry import DatasetSpec
from o2o.rng import MemberRNG, member_generators
from o2o.transforms import RewardKind, default_reward_kind

ALGORITHM = "iql"
EXP_ADV_MAX = 100.0  # clip of exp(β·A) (CORL EXP_ADV_MAX; the IQL code clips at 100 too)
FINETUNE_ONLINE_STEPS = 1_000_000  # CORL configs/finetune/iql/*: online_iterations 1e6
FALLBACK = ("corl", "paper")  # preset sources tried after --preset's (CORL has no Kitchen config: the paper's)


# ----------------------------------------------------------------------------------------------------------------------
# Config and presets (configs/iql/<source>/<dataset or domain>.yaml; README, "Presets")
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class IQLConfig(LoopConfig):
    """IQL run: the engine's fields plus IQL's hyperparameters (defaults = CORL's, locomotion)."""

    offline_steps: int = steps(1_000_000, 1000)  # gradient steps offline (CORL max_timesteps / offline_iterations)
    online_steps: int = steps(0, 1000)  # env steps online, one gradient step each (0 = offline only)
    finetune: bool = False  # offline-to-online: CORL's 1M online steps (scaled by --budget) unless --online-steps
    discount: float = 0.99  # discount γ of the Q target (CORL discount)
    tau: float = 0.005  # Polyak rate of the target Q (CORL tau)
    expectile: float = 0.7  # τ of L₂^τ (CORL iql_tau; paper: 0.7 locomotion, 0.9 AntMaze)
    beta: float = 3.0  # inverse temperature β of the AWR weights (paper: 3 locomotion, 10 AntMaze)
    exp_adv_max: float = EXP_ADV_MAX  # upper clip of the AWR weights exp(β·A) (CORL EXP_ADV_MAX)
    actor_lr: float = 3e-4  # actor Adam lr (CORL actor_lr)
    critic_lr: float = 3e-4  # twin Q Adam lr (CORL qf_lr)
    value_lr: float = 3e-4  # V Adam lr (CORL vf_lr)
    actor_cosine: bool = True  # cosine-annealed actor lr with period 2·offline_steps (CORL CosineAnnealingLR)
    deterministic_actor: bool = False  # tanh-MLP actor + MSE AWR instead of the Gaussian (CORL iql_deterministic)
    actor_dropout: float = 0.0  # dropout in the actor's hidden layers (CORL actor_dropout; Adroit 0.1)
    hidden_dim: int = 256  # width of every MLP (CORL 256)
    n_hidden: int = 2  # hidden layers of actor, Q and V (CORL 2)
    expl_noise: float = 0.03  # online exploration noise of the deterministic actor (CORL expl_noise)
    noise_clip: float = 0.5  # its clip (CORL noise_clip)
    normalize_states: bool = True  # z-score observations with dataset statistics (CORL normalize)
    # rewards (o2o.transforms): locomotion r·1000/(max − min episode return), antmaze r − 1; auto = the domain's
    reward_kind: Literal["auto"] | RewardKind = "auto"
    eval_every: int = steps(5000, 500)  # offline: gradient steps between evaluations (CORL eval_freq 5000)

    RENAMED: ClassVar[dict[str, str]] = {"q_lr": "critic_lr", "v_lr": "value_lr"}


def presets(cfg: IQLConfig, spec: DatasetSpec) -> dict[str, Any]:
    """The dataset's preset from configs/iql/<--preset>/ (fine-tuning files when online; --finetune adds CORL's 1M
    online steps)."""
    return run_preset(ALGORITHM, cfg, spec, FALLBACK, FINETUNE_ONLINE_STEPS)


def transforms(cfg: IQLConfig, spec: DatasetSpec) -> Transforms:
    """State z-scoring (CORL normalize) and the reward transform (auto: o2o.transforms.default_reward_kind)."""
    kind = default_reward_kind(spec.domain) if cfg.reward_kind == "auto" else cfg.reward_kind
    return Transforms(normalize_states=cfg.normalize_states, reward_kind=kind)


# ----------------------------------------------------------------------------------------------------------------------
# Losses: each returns every seed's own mean, shape (S,); the optimiser steps on their sum (seeds never mix)
# ----------------------------------------------------------------------------------------------------------------------
def expectile_loss(u: torch.Tensor, expectile: float) -> torch.Tensor:
    """L₂^τ averaged per seed: mean(|τ − 1(u < 0)| · u²), with u = target − prediction of shape (S, B)."""
    weight = torch.where(u < 0, 1.0 - expectile, expectile)
    return mean_per_member(weight * u.square())


def value_loss(value: ValueNet, q_target: TwinQ, obs: torch.Tensor, act: torch.Tensor,
               expectile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L_V: expectile regression of V(s) onto min target Q(s, a). Returns (loss, advantage Q̂ − V, detached)."""
    with torch.no_grad():
        target_q = q_target(obs, act)
    adv = target_q - value(obs)
    return expectile_loss(adv, expectile), adv.detach()


def q_loss(q: TwinQ, next_v: torch.Tensor, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor,
           done: torch.Tensor, discount: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L_Q: each Q regresses r + γ (1 − d) V(s') (next_v carries no gradient); the mean over the twins, as CORL.

    Returns (loss (S,), Q₁ of the batch (S, B), detached).
    """
    target = rew + discount * (1.0 - done) * next_v.detach()
    qs = q.all(obs, act)  # (S, 2, B)
    return mean_per_member((qs - target.unsqueeze(1)).square()), qs[:, 0].detach()


def awr_weights(adv: torch.Tensor, beta: float, max_weight: float = EXP_ADV_MAX) -> torch.Tensor:
    """exp(β · A), clipped above at max_weight; no gradient."""
    return torch.exp(beta * adv.detach()).clamp(max=max_weight)


def awr_policy_loss(actor: nn.Module, obs: torch.Tensor, act: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_π: weighted negative log-likelihood (Gaussian actor) or weighted squared error (deterministic actor)."""
    if isinstance(actor, DeterministicActor):
        bc = (actor(obs) - act).square().sum(-1)
    else:
        bc = -actor.log_prob(obs, act)
    return mean_per_member(weights * bc)


# ----------------------------------------------------------------------------------------------------------------------
# The agent: S seeds' networks (PyTorch default init, as CORL) and Adam optimizers
# ----------------------------------------------------------------------------------------------------------------------
class IQL:
    """Actor, twin Q with its target, V; one `update` is one gradient step of every seed."""

    def __init__(self, cfg: IQLConfig, setup: Setup) -> None:
        self.cfg, seeds, dev = cfg, setup.seeds, setup.device
        self.rng = MemberRNG(seeds, ALGORITHM, dev)
        od, ad, h, n = setup.obs_dim, setup.act_dim, cfg.hidden_dim, cfg.n_hidden
        actor_gens = member_generators(seeds, "iql/actor")
        if cfg.deterministic_actor:
            actor = DeterministicActor(od, ad, actor_gens, h, n, dropout=cfg.actor_dropout, rng=self.rng)
        else:
            actor = GaussianActor(od, ad, actor_gens, h, n, tanh_mean=True, dropout=cfg.actor_dropout, rng=self.rng)
        self.actor = actor.to(dev)
        self.q = TwinQ(od, ad, member_generators(seeds, "iql/q"), h, n).to(dev)
        self.q_target = TwinQ(od, ad, member_generators(seeds, "iql/q"), h, n).to(dev).requires_grad_(False)
        self.value = ValueNet(od, member_generators(seeds, "iql/value"), h, n).to(dev)
        # CORL steps CosineAnnealingLR(T_max = offline steps) at every update, online ones too, so the actor lr reaches
        # 0 at the end of the offline phase and climbs back along the cosine while fine-tuning; we keep that (closed
        # form, on the device, so a compiled update needs no host value).
        self.actor_opt = adam(self.actor.parameters(), torch.tensor(cfg.actor_lr, device=dev))
        self.q_opt = adam(self.q.parameters(), cfg.critic_lr)
        self.v_opt = adam(self.value.parameters(), cfg.value_lr)
        self.t_max = cfg.offline_steps or cfg.online_steps or 1
        self.updates = torch.zeros((), dtype=torch.int64, device=dev)

    def update(self, batch: tuple[torch.Tensor, ...], online: bool) -> dict[str, torch.Tensor]:
        """One IQL gradient step on (s, a, r, s', done), in CORL's order: V, then Q, then the actor, then the target.

        V(s') for the Q target and the advantage for the actor come from V before its step (as CORL).
        """
        cfg = self.cfg
        obs, act, rew, next_obs, done = batch
        with torch.no_grad():
            next_v = self.value(next_obs)

        loss_v, adv = value_loss(self.value, self.q_target, obs, act, cfg.expectile)
        self.v_opt.zero_grad(set_to_none=True)
        loss_v.sum().backward()
        self.v_opt.step()

        loss_q, q1 = q_loss(self.q, next_v, obs, act, rew, done, cfg.discount)
        self.q_opt.zero_grad(set_to_none=True)
        loss_q.sum().backward()
        self.q_opt.step()
        soft_update(self.q_target, self.q, cfg.tau)

        weights = awr_weights(adv, cfg.beta, cfg.exp_adv_max)
        loss_pi = awr_policy_loss(self.actor, obs, act, weights)
        self.actor_opt.zero_grad(set_to_none=True)
        loss_pi.sum().backward()
        self.actor_opt.step()
        self.updates.add_(1)
        if cfg.actor_cosine:  # CosineAnnealingLR's closed form: lr₀ · (1 + cos(π t / T)) / 2
            cos = torch.cos(self.updates.to(torch.float32) * (math.pi / self.t_max))
            self.actor_opt.param_groups[0]["lr"].copy_(cfg.actor_lr * 0.5 * (1.0 + cos))

        return {"value_loss": loss_v.detach(), "q_loss": loss_q.detach(), "actor_loss": loss_pi.detach(),
                "q1_mean": mean_per_member(q1), "adv_mean": mean_per_member(adv),
                "weight_mean": mean_per_member(weights)}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """Evaluation: the mean (no dropout). Online (CORL finetune): a Gaussian sample, or the tanh action plus
        clipped Gaussian noise for the deterministic actor; clamped to [−1, 1]."""
        if not explore:
            self.actor.eval()
            try:
                return self.actor.act(obs)
            finally:
                self.actor.train()
        if isinstance(self.actor, DeterministicActor):
            a = self.actor(obs)
            a = a + (self.rng.randn(*a.shape[1:]) * self.cfg.expl_noise).clamp(-self.cfg.noise_clip,
                                                                                 self.cfg.noise_clip)
        else:
            a = self.actor.sample(obs, self.rng)
        return a.clamp(-1.0, 1.0)

    def state_dict(self) -> dict[str, Any]:
        """Everything trainable, for checkpoints (member axis first)."""
        return {"actor": self.actor.state_dict(), "q": self.q.state_dict(), "q_target": self.q_target.state_dict(),
                "value": self.value.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "q_opt": self.q_opt.state_dict(), "v_opt": self.v_opt.state_dict(), "rng": self.rng.state_dict(),
                "updates": self.updates.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict()."""
        for k in ("actor", "q", "q_target", "value", "actor_opt", "q_opt", "v_opt", "rng"):
            getattr(self, k).load_state_dict(state[k])
        self.updates.copy_(state["updates"])
        group = self.actor_opt.param_groups[0]  # the loaded lr tensor lives where the checkpoint was mapped
        group["lr"] = torch.as_tensor(group["lr"], device=self.updates.device).clone()


def algorithm(cfg: IQLConfig) -> Algorithm:
    """IQL for the engine (o2o/loop.py)."""
    return Algorithm(ALGORITHM, IQL, transforms)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 finished, 3 diverged)."""
    return loop.main(IQLConfig, presets, algorithm, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
