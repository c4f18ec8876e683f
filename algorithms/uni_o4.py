"""Uni-O4: Unifying Online and Offline Deep RL with Multi-Step On-Policy Optimization (Lei et al., ICLR 2024).

Paper: arXiv 2311.03351. Official code: GitHub Lei-Kun/Uni-O4 (main.py, critic.py, BC_ensemble.py, abppo.py,
dynamics_eval.py + transition_model/, ppo_finetune/). Reimplemented in one file, top to bottom in the order the
method runs:

1. Value learning. The "IQL path" used by nearly every published run:
     L_V = E_D[ L₂^ω(min_k Q̂_k(s,a) − V(s)) ],  L₂^ω(u) = |ω − 1(u < 0)| u²            (expectile value)
     L_Q = E_D[ Σ_k (r + γ·not_done·V(s') − Q_k(s,a))² ]                                (twin Q, target V)
   with Q̂ the Polyak average (τ = 0.005, every 2 updates) of the twin Q. The other path (official `--is_iql False`,
   used for halfcheetah/hopper medium-expert): V regressed onto Monte-Carlo returns, Q by SARSA
   r + γ·not_done·Q̂(s', a') with the dataset's next action.
2. Ensemble behaviour cloning with a disagreement penalty: N Gaussian policies π^i trained on the
   same batches, max_π^i E_D[log π^i(a|s)] + α·D(π^i, π^{j≠i}). See `bc_loss` for the three variants and why the
   default differs from the official code.
3. A probabilistic dynamics-model ensemble (7 members, 5 elites, Swish, Gaussian over (Δs, r)) with holdout early
   stopping, used only for offline policy evaluation (the official transition_model/, taken from MOBILE).
4. Multi-step policy ensemble optimisation: every member i runs PPO-clip on dataset states with
   actions sampled from its behaviour policy π^i_k,
     J(π^i) = E_{s~D, a~π^i_k}[ min(ρ·Â, clip(ρ, 1 ± ε)·Â) ],  ρ = π^i(a|s)/π^i_k(a|s),  Â = norm(min Q(s,a) − V(s)),
   and every K steps queries AM-Q, the offline policy evaluation
     AM-Q(π) = E_{s_0~D, s_{t+1}~T̂(s_t, π(s_t))}[ mean_t Q(s_t, π(s_t)) ],  t < H,
   with the learned model T̂. Only a member whose AM-Q beats its best so far replaces its behaviour policy:
   π^i_{k+1} ← π^i (the "multi-step" improvement); the others keep π^i_k.
5. One member initialises online PPO: by AM-Q alone here (`--selection ope`, the default: an offline result must
   not depend on real-environment returns), or by the official rule (`--selection official`: top-3 by AM-Q, then
   the best *real-environment* score; that uses online evaluations, and summary.json's extra says so). The online
   critic starts from the offline V (output scaled to the online reward scale), observations keep the offline
   normalisation, and PPO is `baselines.ppo.run_ppo` with the official ppo_finetune settings per family (PRESETS;
   AntMaze and Kitchen have no official online script: main.py's defaults, AntMaze rewards × 0.1 on top of 10r − 5).

Differences from the official code, on purpose (each is also noted where it happens):
- `--bc-disagreement working` (default) adds a penalty whose gradient acts; the official one is `official`.
- Timeouts bootstrap (`bootstrap_timeouts`): our loader gives the true s' of a truncated step, the official buffer
  pairs it with the next episode's first state and therefore masks it.
- The ensembles (twin Q, BC policies, dynamics members, improving policies) are stacked-weight modules evaluated with
  one batched matmul per layer; per-member Adam and per-member grad-norm clipping keep them independent.
- AM-Q uses the same 512 start states for all members of one query (common random numbers across members).
- Cached stages are keyed by a hash of every config field that determines them (the official code reuses cached
  critics and dynamics across runs with different hyperparameters).
- The online actor keeps the offline distribution; ppo_finetune/net.py applies tanh twice to the log-std of the
  loaded policy, which changes its σ at the hand-over. The official `dynamic` reward scaling path cannot run
  (`reward_normalize` returns None), so presets use fixed reward scales (see PRESETS).

Measured (results/uni_o4/README.md, reduced CPU budgets): on a generated halfcheetah-medium dataset the improvement
lifts every BC member (3 seeds, +5.5 to +6.0 normalized); on hopper it lowered them, and there the critic does not
order the actions the improvement samples (results/uni_o4/advantage_check.py). AM-Q ranks unrelated policies well
(Spearman 0.8–0.9 on hopper) but cannot catch such critic errors: it averages the same critic the improvement climbs.

Offline `step` in evals.csv counts gradient steps: critic updates, then BC updates, then improvement updates
(dynamics epochs are not counted). Online rows count env steps from 0 (`env_steps` likewise).

Usage:
  python algorithms/uni_o4.py --dataset hopper-medium-v2 --seed 0 --out DIR --budget smoke|short|full --device cpu
  python algorithms/uni_o4.py --dataset local:hopper-medium --bc-disagreement official --selection official
Every config field is a flag (`--help`). Exit status: 0 finished, 3 diverged, 1 failed.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
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

if __package__ in (None, ""):  # `python algorithms/uni_o4.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from o2o.cli import RunConfig, dataset_spec, default_out, parse_config, steps  # noqa: E402
from o2o.data import Dataset, load_dataset  # noqa: E402
from o2o.records import RunRecorder  # noqa: E402
from o2o.registry import DatasetSpec  # noqa: E402
from o2o.training import (  # noqa: E402
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
from o2o.transforms import ObsNormalizer, RewardTransform, clip_actions, reward_transform  # noqa: E402

ALGORITHM = "uni_o4"
CACHE_VERSION = 1  # bump when a stage's computation changes, so that old cached artefacts are not reused
LOG_STD_RANGE = (-5.0, 0.0)  # net.py GaussPolicyMLP: tanh output mapped linearly onto (−5, 0)
ADV_EPS = 1e-10  # utils.py CONST_EPS in the advantage normalisation


# ======================================================================================================================
# Config and presets
# ======================================================================================================================
@dataclass
class UniO4Config(RunConfig):
    """Uni-O4 hyperparameters. Defaults: the official main.py defaults and its locomotion scripts (PRESETS)."""

    # ---- data (buffer.py)
    state_norm: bool = True  # z-score states with dataset mean/std (official --is_state_norm; scripts set it)
    obs_norm_eps: float = 1e-3  # added to the std (official 1e-10; 1e-3 keeps constant dims finite online)
    reward_kind: str = "none"  # o2o.transforms kind: none | unio4_antmaze (10 r − 5, buffer.py for antmaze)
    clip_actions: bool = False  # clip dataset actions to ±(1 − 1e-5) (official --is_clip_action, Adroit)
    bc_positive_return_only: bool = False  # BC on transitions with MC return > 0 only (official is_filter_bc, AntMaze)
    bootstrap_timeouts: bool = True  # False = official not_done = 1 − (terminal or timeout)
    gamma: float = 0.99  # transition_model configs: gamma
    # ---- 1. value learning (critic.py IQL_Q_V / ValueLearner + QSarsaLearner)
    value_method: str = "iql"  # iql | mc_sarsa
    critic_steps: int = steps(2_000_000, 100)  # --v_steps (= --q_bc_steps) 2e6
    critic_batch: int = 512  # --v_batch_size, --q_batch_size
    q_lr: float = 1e-4
    v_lr: float = 1e-4
    q_hidden: int = 1024  # --q_hidden_dim
    q_depth: int = 2  # --q_depth: hidden layers
    v_hidden: int = 512  # --v_hidden_dim
    v_depth: int = 3  # --v_depth
    omega: float = 0.7  # expectile of V (IQL path); weight of positive advantages on the MC path (official --omega)
    tau: float = 0.005  # Polyak rate of the target Q
    target_every: int = 2  # --target_update_freq
    # ---- 2. ensemble BC (BC_ensemble.py)
    n_policies: int = 4  # --num_policies
    bc_steps: int = steps(400_000, 100)  # --bc_steps
    bc_batch: int = 512
    bc_lr: float = 1e-4
    pi_hidden: int = 256  # --bc_hidden_dim (hm/wm scripts sweep 256 and 512)
    pi_depth: int = 3  # --bc_depth
    pi_activation: str = "relu"  # --pi_activation_f (halfcheetah scripts: tanh)
    bc_alpha: float = 0.1  # --alpha_bc
    bc_disagreement: str = "working"  # working | official | none (see bc_loss)
    bc_kl_cap: float = 1.0  # 'working': the penalty saturates at this KL (nats) so σ cannot be inflated without bound
    # ---- 3. dynamics ensemble (transition_model/, configs/*/default.py)
    dyn_members: int = 7
    dyn_elites: int = 5
    dyn_hidden: tuple[int, ...] = (200, 200, 200, 200)
    dyn_weight_decay: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    dyn_lr: float = 1e-3
    dyn_batch: int = 256
    dyn_holdout_ratio: float = 0.2
    dyn_holdout_max: int = 1000
    dyn_patience: int = 5  # epochs without a >1% holdout improvement of any member (max_epochs_since_update)
    dyn_max_epochs: int = steps(1000, 2)  # official: unbounded (None)
    dyn_logvar_coef: float = 0.01
    # ---- 4. multi-step improvement (abppo.py, main.py)
    improve_steps: int = steps(10_000, 100)  # --bppo_steps
    improve_batch: int = 512  # --bppo_batch_size
    improve_lr: float = 1e-4  # --bppo_lr, decays linearly to 0 (--is_linear_decay)
    clip_ratio: float = 0.25  # --clip_ratio
    clip_decay_steps: int = 200  # ε decays linearly only for the first 200 steps, then stays (main.py)
    entropy_weight: float = 0.0  # --entropy_weight
    q_action_clip: bool = False  # advantage at clip(a, ±1), the action the env executes (official: at the raw sample)
    grad_clip: float = 0.5  # per member
    ope_every: int = 100  # --eval_step: AM-Q query interval (steps)
    ope_horizon: int = steps(1000, 10)  # --rollout_step
    ope_batch: int = 512  # rollout_batch_size
    final_policy: str = "last"  # last (official: the current π after the last step) | best (π_k, best AM-Q)
    offline_eval_every: int = 0  # improvement steps between env evaluations of every member (0: at the end only)
    # ---- 5. selection and online phase (ppo_finetune/)
    selection: str = "ope"  # ope (AM-Q only) | official (top-k by AM-Q, then best env score: uses online evals)
    selection_top_k: int = 3  # evaluate_budget of ppo_finetune/ppo.py load_pi_value
    online_steps: int = steps(1_000_000, 4096)  # env steps (paper: 1M); 0 = offline only
    online_eval_every: int = steps(20_000, 2048)  # --evaluate_freq 2e4
    online_rollout: int = 2048  # --batch_size
    online_minibatch: int = 128  # --mini_batch_size (Adroit scripts 256)
    online_epochs: int = 30  # --K_epochs
    online_actor_lr: float = 2e-5  # --lr_a
    online_critic_lr: float = 2e-4  # --lr_c
    online_clip: float = 0.05  # --epsilon (also the value clip, --is_clip_value)
    online_ent_coef: float = 0.01  # --entropy_coef
    online_gae_lambda: float = 0.95  # --lamda
    online_reward_scale: float = 1.0  # online rewards (after reward_kind) × this; 0.1 = official 'number' strategy
    online_critic_init: str = "offline_v"  # offline_v (× online_reward_scale) | mc (refit V on MC returns, official
    #                                        'number'/'dynamic' strategies: 1e6 steps, lr 1e-4, batch 512)
    online_mc_steps: int = steps(1_000_000, 100)
    # ---- run plumbing
    cache: bool = True  # reuse stage artefacts of <out>/cache whose key matches (see stage_keys)
    threads: int = 1  # torch.set_num_threads (0 = torch's default)


# Per-domain presets, then per-dataset overrides, each with its source in Lei-Kun/Uni-O4. Where a script sweeps a
# value the choice is named. Flags given on the command line override all of this.
PRESETS: dict[str, dict[str, Any]] = {
    # main.py defaults, transition_model/configs/gym/default.py, scripts/mujoco_loco/*.sh (is_state_norm, is_iql),
    # ppo_finetune/main.py defaults. Online: 1M env steps (the paper's fine-tuning budget).
    "locomotion": dict(state_norm=True, value_method="iql", reward_kind="none"),
    # scripts/antmaze/*.sh: v/q 256×3 (q_depth 3), omega 0.9, is_filter_bc, is_iql, no state norm, eval_episode 30,
    # bppo_lr swept {1e-5, 3e-5, 5e-5} (u.sh: 3e-5 fixed) -> 3e-5; alpha_bc swept {0, 0.1} -> 0.1; rollout_step
    # per maze below. Dynamics: configs/antmaze/default.py (4×400, lr 3e-4). No official online script: we use the
    # ppo_finetune/main.py defaults with online_reward_scale 0.1 (our choice: keeps V of the 10r − 5 rewards near
    # the scale the 0.05 value clip was tuned for, like the hopper scripts' 'number' strategy).
    "antmaze": dict(state_norm=False, value_method="iql", reward_kind="unio4_antmaze", bc_positive_return_only=True,
                    q_hidden=256, q_depth=3, v_hidden=256, v_depth=3, omega=0.9, improve_lr=3e-5,
                    dyn_hidden=(400, 400, 400, 400), dyn_lr=3e-4, eval_episodes=30, online_reward_scale=0.1),
    # scripts/adroit/*.sh: is_iql, is_clip_action, bppo_lr 1e-5, clip 0.25, eval_step 100; dynamics configs/adroit
    # (4×400, lr 3e-4, patience 10; *-human: pen_human_args, patience 20). ppo_finetune/scripts/adroit: minibatch
    # 256, K_epochs swept {8, 10, 12} -> 10, lr_a swept {4e-6, 8e-6, 1e-5} -> 1e-5 (pen: {2e-6, 3e-6, 6e-6} -> 3e-6).
    "adroit": dict(state_norm=False, value_method="iql", reward_kind="none", clip_actions=True, improve_lr=1e-5,
                   dyn_hidden=(400, 400, 400, 400), dyn_lr=3e-4, dyn_patience=10, online_minibatch=256,
                   online_epochs=10, online_actor_lr=1e-5),
    # scripts/kitchen/*.sh: is_iql, bppo_steps 1000, bc 256×3; dynamics: pen_human_args (4×400, lr 3e-4, patience 20).
    # No official online script: ppo_finetune/main.py defaults, rewards unscaled (our choice: kitchen rewards are
    # already 0..4 per step).
    "kitchen": dict(state_norm=False, value_method="iql", reward_kind="none", improve_steps=1000,
                    dyn_hidden=(400, 400, 400, 400), dyn_lr=3e-4, dyn_patience=20),
}
# Online settings per locomotion family (ppo_finetune/scripts/mujoco_loco), so that local: and bring-your-own
# datasets of a family get them too: hm.sh/hmr.sh lr_a swept {1e-5, 2e-5} -> 2e-5, K_epochs swept {5, 10} -> 10,
# scale_strategy 'number' (rewards × 0.1); wm/wme/wmr.sh lr_a swept {1e-5, 3e-5} -> 3e-5, K_epochs swept {20, 30}
# -> 30, no reward scaling (they load the offline V as is); halfm.sh 3e-5 × 30 with 'dynamic' scaling, which cannot
# run in the official code (see the module docstring) -> fixed 0.1 ('number', as halfmr.sh also sweeps).
FAMILY_PRESETS: dict[str, dict[str, Any]] = {
    "hopper": dict(online_actor_lr=2e-5, online_epochs=10, online_reward_scale=0.1),
    "walker2d": dict(online_actor_lr=3e-5, online_epochs=30, online_reward_scale=1.0),
    "halfcheetah": dict(online_actor_lr=3e-5, online_epochs=30, online_reward_scale=0.1),
}
DATASET_PRESETS: dict[str, dict[str, Any]] = {
    # scripts/mujoco_loco: halfm.sh (tanh), halfmr.sh (no state norm, tanh), halfme.sh (no --is_iql: MC + SARSA).
    # ppo_finetune/scripts/mujoco_loco: halfmr 3e-5 × 20 epochs, halfme 2e-5 × 10.
    "halfcheetah-medium": dict(pi_activation="tanh"),
    "halfcheetah-medium-replay": dict(state_norm=False, pi_activation="tanh", online_epochs=20),
    "halfcheetah-medium-expert": dict(value_method="mc_sarsa", online_actor_lr=2e-5, online_epochs=10),
    # hme.sh (its file runs hopper-medium-replay by mistake; the intended medium-expert run): no --is_iql, state norm;
    # ppo_finetune hme.sh: lr_a swept {6e-6, 1e-6} -> 6e-6, 5 epochs, 'number'.
    "hopper-medium-expert": dict(value_method="mc_sarsa", online_actor_lr=6e-6, online_epochs=5),
    # wmr.sh: v/q steps 5e5.
    "walker2d-medium-replay": dict(critic_steps=500_000),
    # scripts/antmaze: rollout_step swept u {50, 70, 150} -> 70, up {50, 70, 100} -> 70, mp/md {100, 150, 200} -> 150,
    # lp/ld {150, 200} -> 200.
    "antmaze-umaze": dict(ope_horizon=70),
    "antmaze-umaze-diverse": dict(ope_horizon=70),
    "antmaze-medium-play": dict(ope_horizon=150),
    "antmaze-medium-diverse": dict(ope_horizon=150),
    "antmaze-large-play": dict(ope_horizon=200),
    "antmaze-large-diverse": dict(ope_horizon=200),
    # scripts/adroit: pen.sh v/q 1e6, bc 2e5; rollout_step swept, *-human {20..100} -> 50, *-cloned {5..50} -> 20;
    # door.sh bppo_steps 5000; hammer*.sh tanh + state norm, relocate*.sh tanh. ppo_finetune pen*.sh lr_a 3e-6;
    # hammer*.sh 'number'|'dynamic' -> × 0.1.
    "pen-human": dict(critic_steps=1_000_000, bc_steps=200_000, ope_horizon=50, dyn_patience=20,
                      online_actor_lr=3e-6),
    "pen-cloned": dict(ope_horizon=20, online_actor_lr=3e-6),
    "door-human": dict(improve_steps=5000, ope_horizon=50, dyn_patience=20),
    "door-cloned": dict(ope_horizon=20),
    "hammer-human": dict(state_norm=True, pi_activation="tanh", ope_horizon=50, dyn_patience=20,
                         online_reward_scale=0.1),
    "hammer-cloned": dict(state_norm=True, pi_activation="tanh", ope_horizon=20, online_reward_scale=0.1),
    "relocate-human": dict(pi_activation="tanh", ope_horizon=50, dyn_patience=20),
    "relocate-cloned": dict(pi_activation="tanh", ope_horizon=20),
    # scripts/kitchen: kc.sh v/q 5e5, bc 1e5, rollout_step {5, 10, 20} -> 10, bppo_lr {5e-6, 1e-5, 3e-5} -> 1e-5;
    # kp.sh / mix.sh v/q 1e6, bc 2e5, state norm, rollout_step {2, 4, 6, 8} -> 4, bppo_lr {1e-5, 3e-5} -> 1e-5;
    # mix.sh alpha_bc 0.
    "kitchen-complete": dict(critic_steps=500_000, bc_steps=100_000, ope_horizon=10, improve_lr=1e-5),
    "kitchen-partial": dict(critic_steps=1_000_000, bc_steps=200_000, state_norm=True, ope_horizon=4,
                            improve_lr=1e-5),
    "kitchen-mixed": dict(critic_steps=1_000_000, bc_steps=200_000, state_norm=True, ope_horizon=4, improve_lr=1e-5,
                          bc_alpha=0.0),
}


def dataset_stem(name: str) -> str:
    """'hopper-medium' of 'hopper-medium-v2' or 'local:hopper-medium'."""
    return re.sub(r"-v\d+$", "", name.split(":", 1)[-1])


def presets(spec: DatasetSpec) -> dict[str, Any]:
    """The domain preset, then the family's online settings, then the dataset's overrides."""
    out = dict(PRESETS.get(spec.domain, {}))
    out.update(FAMILY_PRESETS.get(spec.family, {}))
    out.update(DATASET_PRESETS.get(dataset_stem(spec.name), {}))
    return out


CHOICES = {"value_method": ("iql", "mc_sarsa"), "bc_disagreement": ("working", "official", "none"),
           "final_policy": ("last", "best"), "selection": ("ope", "official"),
           "online_critic_init": ("offline_v", "mc"), "pi_activation": ("relu", "tanh")}


def check_config(cfg: UniO4Config) -> None:
    """Raise ValueError for a choice field outside its choices."""
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"--{name.replace('_', '-')} must be one of {allowed}, not {getattr(cfg, name)!r}")
    if len(cfg.dyn_weight_decay) != len(cfg.dyn_hidden) + 1:
        raise ValueError("dyn_weight_decay needs one entry per dynamics layer (len(dyn_hidden) + 1)")
    if cfg.dyn_elites > cfg.dyn_members or cfg.n_policies < 1:
        raise ValueError("need dyn_elites <= dyn_members and n_policies >= 1")


# ======================================================================================================================
# Networks: stacked-weight ensembles (one batched matmul per layer for all members)
# ======================================================================================================================
class EnsembleLinear(nn.Module):
    """n independent Linear layers: (n, B, in) -> (n, B, out) with torch.baddbmm."""

    def __init__(self, n: int, in_dim: int, out_dim: int, init: str = "torch") -> None:
        super().__init__()
        self.n, self.in_dim, self.out_dim = n, in_dim, out_dim
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(n, 1, out_dim))
        with torch.no_grad():
            if init == "torch":  # nn.Linear's default: kaiming_uniform(a=√5) = U(±1/√in), bias U(±1/√in)
                bound = 1.0 / math.sqrt(in_dim)
                self.weight.uniform_(-bound, bound)
                self.bias.uniform_(-bound, bound)
            elif init == "orthogonal":  # net.py GaussPolicyMLP: orthogonal (gain 1), zero bias
                for k in range(n):
                    nn.init.orthogonal_(self.weight[k], gain=1.0)
            elif init == "trunc_normal":  # transition_model/models/nets.py EnsembleLinear
                nn.init.trunc_normal_(self.weight, std=1.0 / (2.0 * math.sqrt(in_dim)))
            else:
                raise ValueError(f"unknown init {init!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def _activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "tanh": nn.Tanh(), "swish": nn.SiLU()}[name]


def ensemble_mlp(n: int, dims: list[int], activation: str, init: str, out_tanh: bool = False) -> nn.Sequential:
    """Stacked MLP dims[0] -> ... -> dims[-1] with `activation` between layers (and tanh at the end if asked)."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(EnsembleLinear(n, dims[i], dims[i + 1], init))
        if i < len(dims) - 2:
            layers.append(_activation(activation))
    if out_tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _expand(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, D) -> (n, B, D) view; (n, B, D) unchanged."""
    return x.unsqueeze(0).expand(n, *x.shape) if x.dim() == 2 else x


def _gauss_params(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a tanh-ended net output into (μ ∈ (−1, 1), log σ ∈ (−5, 0)) as net.py soft_clamp does."""
    mu, t = out.chunk(2, dim=-1)
    lo, hi = LOG_STD_RANGE
    return mu, lo + 0.5 * (hi - lo) * (t + 1.0)


class GaussPolicy(nn.Module):
    """One policy π(a|s) = N(μ(s), σ(s)²): the member handed to online PPO (`dist`, `act` as run_ppo expects)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, depth: int, activation: str) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        dims = [obs_dim] + [hidden] * depth + [2 * act_dim]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            layers.append(_activation(activation) if i < len(dims) - 2 else nn.Tanh())
        self.net = nn.Sequential(*layers)

    def dist(self, obs: torch.Tensor) -> Normal:
        mu, log_std = _gauss_params(self.net(obs))
        return Normal(mu, log_std.exp(), validate_args=False)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action: the mean, clamped to [−1, 1] (select_action(is_sample=False))."""
        return _gauss_params(self.net(obs))[0].clamp(-1.0, 1.0)

    forward = act


class PolicyEnsemble(nn.Module):
    """N Gaussian policies with stacked weights; dist/act of (B, D) or per-member (N, B, D) states -> (N, B, A)."""

    def __init__(self, n: int, obs_dim: int, act_dim: int, hidden: int, depth: int, activation: str) -> None:
        super().__init__()
        self.n, self.obs_dim, self.act_dim = n, obs_dim, act_dim
        self.hidden, self.depth, self.activation = hidden, depth, activation
        self.net = ensemble_mlp(n, [obs_dim] + [hidden] * depth + [2 * act_dim], activation, "orthogonal",
                                out_tanh=True)

    def params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _gauss_params(self.net(_expand(obs, self.n)))

    def dist(self, obs: torch.Tensor) -> Normal:
        mu, log_std = self.params(obs)
        return Normal(mu, log_std.exp(), validate_args=False)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.params(obs)[0].clamp(-1.0, 1.0)

    def member(self, k: int) -> GaussPolicy:
        """Member k as a standalone GaussPolicy (a copy of its weights)."""
        pol = GaussPolicy(self.obs_dim, self.act_dim, self.hidden, self.depth, self.activation)
        lins = [m for m in pol.net if isinstance(m, nn.Linear)]
        ens = [m for m in self.net if isinstance(m, EnsembleLinear)]
        with torch.no_grad():
            for lin, el in zip(lins, ens):
                lin.weight.copy_(el.weight[k].T)
                lin.bias.copy_(el.bias[k, 0])
        return pol.to(self.net[0].weight.device)


class QEnsemble(nn.Module):
    """n Q(s, a) nets (n = 2: the twin Q of the IQL path; n = 1: the SARSA Q); forward -> (n, B)."""

    def __init__(self, n: int, obs_dim: int, act_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.n = n
        self.net = ensemble_mlp(n, [obs_dim + act_dim] + [hidden] * depth + [1], "relu", "torch")

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        sa = torch.cat([obs, act], -1)
        return self.net(_expand(sa, self.n)).squeeze(-1)


class VNet(nn.Module):
    """V(s) -> (B,); also the online PPO critic."""

    def __init__(self, obs_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        dims = [obs_dim] + [hidden] * depth + [1]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


def stacked_params(module: nn.Module) -> list[nn.Parameter]:
    """Parameters whose first dim is the ensemble dim."""
    return [p for m in module.modules() if isinstance(m, EnsembleLinear) for p in (m.weight, m.bias)]


def clip_grad_norm_per_member(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ applied to each member separately (no host sync). Returns the norms (n,)."""
    sq = sum(p.grad.reshape(p.shape[0], -1).square().sum(1) for p in params)
    norms = sq.sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(scale.view(-1, *([1] * (p.dim() - 1))))
    return norms


@torch.no_grad()
def copy_members(dst: nn.Module, src: nn.Module, mask: torch.Tensor) -> None:
    """dst's members where mask (n,) is True become src's (the other members keep their weights)."""
    for pd, ps in zip(stacked_params(dst), stacked_params(src)):
        pd.copy_(torch.where(mask.view(-1, *([1] * (pd.dim() - 1))), ps, pd))


# ======================================================================================================================
# Data
# ======================================================================================================================
@dataclass
class OfflineData:
    """Device tensors of the dataset as every stage uses them."""

    obs: torch.Tensor  # normalised s
    act: torch.Tensor
    rew: torch.Tensor  # transformed r
    next_obs: torch.Tensor  # normalised s'
    next_act: torch.Tensor  # a' (SARSA)
    not_done: torch.Tensor
    mc_return: torch.Tensor  # discounted MC return of the transformed rewards
    raw_obs: torch.Tensor  # unnormalised s (dynamics model, AM-Q start states)
    raw_next_obs: torch.Tensor
    bc_index: torch.Tensor  # rows used for BC
    obs_mean: torch.Tensor
    obs_std: torch.Tensor
    normalizer: ObsNormalizer | None
    reward_fn: RewardTransform

    def __len__(self) -> int:
        return self.obs.shape[0]

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.obs_mean) / self.obs_std


def prepare_data(ds: Dataset, cfg: UniO4Config, device: torch.device) -> OfflineData:
    """State normalisation, reward transform, action clipping, SARSA next actions, MC returns, the BC subset."""
    norm = ObsNormalizer.fit(ds, eps=cfg.obs_norm_eps) if cfg.state_norm else None
    ident = ObsNormalizer.identity(ds.obs_dim)
    n = norm or ident
    rt = reward_transform(ds, cfg.reward_kind)
    act, next_act = ds.actions, ds.next_actions()
    if cfg.clip_actions:
        act, next_act = clip_actions(act), clip_actions(next_act)
    ends = ds.terminals if cfg.bootstrap_timeouts else (ds.terminals | ds.timeouts)
    rew = np.asarray(rt(ds.rewards), np.float32)
    tmp = dataclasses.replace(ds, rewards=rew)
    mc = tmp.mc_returns(cfg.gamma)
    if cfg.bc_positive_return_only:  # buffer.py load_filter_dataset: MC return of the raw rewards > 0
        keep = np.flatnonzero(ds.mc_returns(cfg.gamma) > 0)
        if len(keep) == 0:
            raise ValueError("bc_positive_return_only: no transition has a positive Monte-Carlo return")
    else:
        keep = np.arange(len(ds))

    def t(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)

    return OfflineData(
        obs=t(n(ds.observations)), act=t(act), rew=t(rew), next_obs=t(n(ds.next_observations)), next_act=t(next_act),
        not_done=t(1.0 - ends.astype(np.float32)), mc_return=t(mc), raw_obs=t(ds.observations),
        raw_next_obs=t(ds.next_observations), bc_index=t(keep, torch.long), obs_mean=t(n.mean), obs_std=t(n.std),
        normalizer=norm, reward_fn=rt,
    )


def sample_index(n: int, batch: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(0, n, (batch,), generator=gen, device=device)


# ======================================================================================================================
# 1. Value learning
# ======================================================================================================================
class ValueLearner(nn.Module):
    """V and Q of the behaviour data: the IQL path (expectile V, twin Q) or the MC path (MC V, SARSA Q)."""

    def __init__(self, cfg: UniO4Config, obs_dim: int, act_dim: int) -> None:
        super().__init__()
        self.method, self.omega, self.gamma, self.tau = cfg.value_method, cfg.omega, cfg.gamma, cfg.tau
        self.target_every = cfg.target_every
        self.q = QEnsemble(2 if cfg.value_method == "iql" else 1, obs_dim, act_dim, cfg.q_hidden, cfg.q_depth)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = VNet(obs_dim, cfg.v_hidden, cfg.v_depth)
        self.q_opt = torch.optim.Adam(self.q.parameters(), lr=cfg.q_lr)
        self.v_opt = torch.optim.Adam(self.v.parameters(), lr=cfg.v_lr)
        self.updates = 0

    def q_value(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """min_k Q_k(s, a) (the Q that AM-Q and the advantage use): (B,)."""
        return self.q(obs, act).min(0).values

    def advantage(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.q_value(obs, act) - self.v(obs)

    def update(self, data: OfflineData, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        s, a, r, s2, nd = data.obs[idx], data.act[idx], data.rew[idx], data.next_obs[idx], data.not_done[idx]
        if self.method == "iql":  # critic.py IQL_Q_V.update: V first, then Q against the updated V
            with torch.no_grad():
                target_q = self.q_target(s, a).min(0).values
            u = target_q - self.v(s)
            v_loss = (torch.where(u > 0, self.omega, 1.0 - self.omega) * u.square()).mean()
            self._step(self.v_opt, v_loss)
            with torch.no_grad():
                target = r + self.gamma * nd * self.v(s2)
        else:  # ValueLearner (MC regression) + QSarsaLearner
            v_loss = (self.v(s) - data.mc_return[idx]).square().mean()
            self._step(self.v_opt, v_loss)
            with torch.no_grad():
                target = r + self.gamma * nd * self.q_target(s2, data.next_act[idx]).min(0).values
        q = self.q(s, a)
        q_loss = (q - target).square().mean(1).sum()  # Σ over the twins of their MSE
        self._step(self.q_opt, q_loss)
        self.updates += 1
        if self.updates % self.target_every == 0:
            with torch.no_grad():
                for pt, p in zip(self.q_target.parameters(), self.q.parameters()):
                    pt.lerp_(p, self.tau)
        return {"v_loss": v_loss.detach(), "q_loss": q_loss.detach(), "q_mean": q.detach().mean()}

    @staticmethod
    def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# ======================================================================================================================
# 2. Ensemble behaviour cloning with a disagreement penalty
# ======================================================================================================================
def gauss_kl(mu_p: torch.Tensor, ls_p: torch.Tensor, mu_q: torch.Tensor, ls_q: torch.Tensor) -> torch.Tensor:
    """KL(N(μ_p, e^{2 ls_p}) ‖ N(μ_q, e^{2 ls_q})) summed over the last dim."""
    var_p, var_q = (2 * ls_p).exp(), (2 * ls_q).exp()
    return (ls_q - ls_p + (var_p + (mu_p - mu_q).square()) / (2 * var_q) - 0.5).sum(-1)


def bc_loss(policy: PolicyEnsemble, obs: torch.Tensor, act: torch.Tensor, alpha: float, mode: str,
            kl_cap: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Σ_i E_B[ −log π^i(a|s) − α·D_i ] for the N members on one shared batch.

    mode 'official' (BC_ensemble.py, kl_type 'heuristic'): D_i = log π^i(a|s) − max_{j≠i} sg[log π^j(a|s)].
        The comparison term is detached, so ∇L_i = −(1 + α)·∇ log π^i(a|s): the "penalty" only rescales the BC
        gradient, and the members differ only through their random initialisations.
    mode 'working' (default here): D_i = min(KL(π^i(·|s) ‖ sg[π^{j*}(·|s)]), cap), j* = argmax_{j≠i} log π^j(a|s)
        the other member that explains this sample best (the official code's unused kl_type 'distribution' with a
        cap). The gradient flows through π^i and pushes it away from its closest competitor; the cap stops the
        reward for disagreement at `kl_cap` nats, so a member cannot buy an unbounded bonus by inflating σ, and the
        BC term keeps every member on the data. Default because it is what the paper's objective asks for: a
        regulariser that makes the behaviour policies diverse; the official behaviour stays available. Measured
        (results/uni_o4/README.md, hopper, α = 0.1): it adds little at the published α (mean pairwise KL 0.042 vs
        0.036 official, BC scores within noise); at α = 1 the members do spread (KL 1.07) and two of them get worse.
    mode 'none': plain BC (D_i = 0).
    Returns (loss summed over members, metrics incl. mean pairwise KL and mean-action distance between members).
    """
    mu, log_std = policy.params(obs)  # (N, B, A)
    dist = Normal(mu, log_std.exp(), validate_args=False)
    logp = dist.log_prob(act.unsqueeze(0)).sum(-1)  # (N, B)
    n = logp.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=logp.device)
    with torch.no_grad():
        others = logp.detach().unsqueeze(0).expand(n, n, -1).masked_fill(eye.unsqueeze(-1), -math.inf)  # [i, j]
        kl_all = gauss_kl(mu.unsqueeze(1), log_std.unsqueeze(1), mu.unsqueeze(0), log_std.unsqueeze(0))  # (N, N, B)
        off = (~eye).float().unsqueeze(-1) / max(n * (n - 1) * logp.shape[1], 1)  # mean over ordered pairs i ≠ j
        pair_kl = (kl_all * off).sum()
        pair_dist = ((mu.unsqueeze(1) - mu.unsqueeze(0)).norm(dim=-1) * off).sum()
    if mode == "none" or n == 1 or alpha == 0.0:
        reg = torch.zeros_like(logp)
    elif mode == "official":
        reg = logp - others.max(1).values
    elif mode == "working":
        j_star = others.argmax(1)  # (N, B)
        mu_j = torch.gather(mu.detach(), 0, j_star.unsqueeze(-1).expand_as(mu))
        ls_j = torch.gather(log_std.detach(), 0, j_star.unsqueeze(-1).expand_as(log_std))
        reg = gauss_kl(mu, log_std, mu_j, ls_j).clamp(max=kl_cap)
    else:
        raise ValueError(f"unknown bc_disagreement {mode!r}")
    nll = -logp.mean(1)  # (N,)
    loss = (nll - alpha * reg.mean(1)).sum()
    return loss, {"bc_nll": nll.mean().detach(), "bc_reg": reg.mean().detach(), "pair_kl": pair_kl,
                  "pair_action_dist": pair_dist}


class BCEnsemble:
    """The N policies and one Adam over their stacked weights (elementwise, so = one Adam per member)."""

    def __init__(self, policy: PolicyEnsemble, cfg: UniO4Config) -> None:
        self.policy, self.cfg = policy, cfg
        self.opt = torch.optim.Adam(policy.parameters(), lr=cfg.bc_lr)

    def update(self, obs: torch.Tensor, act: torch.Tensor) -> dict[str, torch.Tensor]:
        loss, metrics = bc_loss(self.policy, obs, act, self.cfg.bc_alpha, self.cfg.bc_disagreement,
                                self.cfg.bc_kl_cap)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return metrics


# ======================================================================================================================
# 3. Dynamics-model ensemble (for AM-Q only)
# ======================================================================================================================
def _soft_clamp(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Clamp into (lo, hi) keeping a gradient (dynamics_model.py soft_clamp)."""
    x = hi - nn.functional.softplus(hi - x)
    return lo + nn.functional.softplus(x - lo)


class DynamicsEnsemble(nn.Module):
    """Probabilistic ensemble p_k(Δs, r | s, a) = N(μ_k, diag e^{logvar_k}); inputs z-scored with training stats."""

    def __init__(self, obs_dim: int, act_dim: int, members: int = 7, elites: int = 5,
                 hidden: tuple[int, ...] = (200, 200, 200, 200),
                 weight_decay: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.members, self.n_elites = obs_dim, act_dim, members, elites
        out = obs_dim + 1
        dims = [obs_dim + act_dim, *hidden, 2 * out]
        self.layers = nn.ModuleList(EnsembleLinear(members, dims[i], dims[i + 1], "trunc_normal")
                                    for i in range(len(dims) - 1))
        self.weight_decay = tuple(weight_decay)
        self.max_logvar = nn.Parameter(torch.full((out,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((out,), -10.0))
        self.register_buffer("in_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elites", torch.arange(elites))

    def _run(self, x: torch.Tensor, weights: list[tuple[torch.Tensor, torch.Tensor]]
             ) -> tuple[torch.Tensor, torch.Tensor]:
        h = (x - self.in_mean) / self.in_std
        for i, (w, b) in enumerate(weights):
            h = torch.baddbmm(b, h, w)
            if i < len(weights) - 1:
                h = nn.functional.silu(h)  # Swish
        mean, logvar = h.chunk(2, dim=-1)
        return mean, _soft_clamp(logvar, self.min_logvar, self.max_logvar)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, in) or (members, B, in) -> (members, B, out) mean and log-variance of (Δs, r)."""
        return self._run(_expand(x, self.members), [(m.weight, m.bias) for m in self.layers])

    def loss(self, x: torch.Tensor, y: torch.Tensor, logvar_coef: float) -> torch.Tensor:
        """Gaussian NLL (mean over batch and dims, summed over members) + weight decay + log-variance bounds."""
        mean, logvar = self(x)
        nll = ((mean - y).square() * (-logvar).exp()).mean((1, 2)) + logvar.mean((1, 2))
        decay = sum(wd * 0.5 * m.weight.square().sum() for wd, m in zip(self.weight_decay, self.layers))
        return nll.sum() + decay + logvar_coef * (self.max_logvar.sum() - self.min_logvar.sum())

    @torch.no_grad()
    def holdout_mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member MSE of the mean on held-out data: (members,)."""
        return (self(x)[0] - y).square().mean((1, 2))

    @torch.no_grad()
    def step(self, obs: torch.Tensor, act: torch.Tensor, gen: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample (s', r) for each row from one elite drawn at random per row (ensemble_dynamics.py step)."""
        weights = [(m.weight[self.elites], m.bias[self.elites]) for m in self.layers]
        x = torch.cat([obs, act], -1)
        mean, logvar = self._run(_expand(x, len(self.elites)), weights)  # (E, B, out)
        sample = mean + torch.randn(mean.shape, generator=gen, device=mean.device) * (0.5 * logvar).exp()
        pick = torch.randint(0, len(self.elites), (x.shape[0],), generator=gen, device=x.device)
        row = sample[pick, torch.arange(x.shape[0], device=x.device)]
        return obs + row[:, :-1], row[:, -1]


def dynamics_update(model: DynamicsEnsemble, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                    logvar_coef: float) -> torch.Tensor:
    """One gradient step on (members, B, ·) bootstrapped batches; returns the detached loss."""
    loss = model.loss(x, y, logvar_coef)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def train_dynamics(model: DynamicsEnsemble, inputs: torch.Tensor, targets: torch.Tensor, cfg: UniO4Config,
                   gen: torch.Generator, log: MetricLog | None = None) -> dict[str, Any]:
    """ensemble_dynamics.py train: bootstrap per member, holdout early stopping (>1% rule), best weights, elites."""
    device = inputs.device
    n = inputs.shape[0]
    n_hold = min(int(n * cfg.dyn_holdout_ratio), cfg.dyn_holdout_max)
    perm = torch.randperm(n, generator=gen, device=device)
    hold, train = perm[:n_hold], perm[n_hold:]
    x_tr, y_tr, x_ho, y_ho = inputs[train], targets[train], inputs[hold], targets[hold]
    mean, std = x_tr.mean(0), x_tr.std(0, unbiased=False)
    model.in_mean.copy_(mean)
    model.in_std.copy_(torch.where(std < 1e-12, torch.ones_like(std), std))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.dyn_lr)
    m, n_tr = model.members, x_tr.shape[0]
    boot = torch.randint(0, n_tr, (m, n_tr), generator=gen, device=device)  # bootstrap rows of every member
    best = [math.inf] * m
    saved = [(p.detach().clone()) for p in stacked_params(model)]
    epoch, since, updates = 0, 0, 0
    while True:
        epoch += 1
        loss_sum = torch.zeros((), device=device)
        n_batches = 0
        for b in range(0, n_tr, cfg.dyn_batch):
            rows = boot[:, b:b + cfg.dyn_batch]
            loss_sum += dynamics_update(model, opt, x_tr[rows], y_tr[rows], cfg.dyn_logvar_coef)
            n_batches += 1
        updates += n_batches
        boot = torch.gather(boot, 1, torch.argsort(torch.rand(boot.shape, generator=gen, device=device), dim=1))
        new = model.holdout_mse(x_ho, y_ho).cpu().tolist()  # one host sync per epoch
        if not all(math.isfinite(v) for v in new):
            raise DivergenceError(f"dynamics holdout loss became NaN/inf at epoch {epoch}")
        better = [(best[k] - new[k]) / best[k] > 0.01 if math.isfinite(best[k]) else True for k in range(m)]
        for k in range(m):
            if better[k]:
                best[k] = new[k]
        if any(better):
            mask = torch.tensor(better, device=device)
            with torch.no_grad():
                for s, p in zip(saved, stacked_params(model)):
                    s.copy_(torch.where(mask.view(-1, *([1] * (p.dim() - 1))), p, s))
            since = 0
        else:
            since += 1
        if log is not None:  # one row per epoch: mean train loss, holdout MSE of the current best n_elites
            log.add({"dyn_loss": loss_sum / max(n_batches, 1),
                     "dyn_holdout_mse": torch.tensor(float(np.mean(sorted(new)[: model.n_elites])), device=device)})
            log.flush(epoch, "offline")
        if since >= cfg.dyn_patience or epoch >= cfg.dyn_max_epochs:
            break
    with torch.no_grad():
        for s, p in zip(saved, stacked_params(model)):
            p.copy_(s)
    elites = sorted(range(m), key=lambda k: best[k])[: model.n_elites]
    model.elites.copy_(torch.tensor(elites, device=device))
    return {"epochs": epoch, "updates": updates, "holdout_mse": best, "elites": elites,
            "elite_holdout_mse": float(np.mean([best[k] for k in elites]))}


def termination_fn(spec: DatasetSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """done(s') of the env family on raw (unnormalised) next states; non-finite states always end a rollout.

    hopper (gymnasium Hopper-v5 is_healthy): z = s'[0] > 0.7, |angle = s'[1]| < 0.2, every s'[1:] in (−100, 100);
    walker2d (Walker2d-v4): 0.8 < z < 2, −1 < angle < 1; ant (Ant-v4): 0.2 ≤ z ≤ 1; antmaze: ‖xy − goal‖ ≤ 0.5
    (D4RL's success radius, goal = the eval map's goal cell centre); Minari's AntMaze is a continuing task (never
    terminates) in its own observation layout; otherwise no termination.
    """
    fam = spec.family

    def finite(s: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(s).all(-1)

    if fam == "hopper":
        def done(s: torch.Tensor) -> torch.Tensor:
            healthy = (finite(s) & (s[:, 1:].abs() < 100).all(-1) & (s[:, 0] > 0.7) & (s[:, 1].abs() < 0.2))
            return ~healthy
    elif fam == "walker2d":
        def done(s: torch.Tensor) -> torch.Tensor:
            z, ang = s[:, 0], s[:, 1]
            return ~(finite(s) & (z > 0.8) & (z < 2.0) & (ang > -1.0) & (ang < 1.0))
    elif fam == "ant":
        def done(s: torch.Tensor) -> torch.Tensor:
            return ~(finite(s) & (s[:, 0] >= 0.2) & (s[:, 0] <= 1.0))
    elif fam == "antmaze" and spec.source != "minari":
        from o2o.domains.antmaze import goal_and_start

        goal_np, _ = goal_and_start(dataset_stem(spec.name))
        goal = torch.as_tensor(np.asarray(goal_np, np.float32))

        def done(s: torch.Tensor) -> torch.Tensor:
            return ~finite(s) | ((s[:, :2] - goal.to(s.device)).norm(dim=-1) <= 0.5)
    else:
        def done(s: torch.Tensor) -> torch.Tensor:
            return ~finite(s)
    return done


# ======================================================================================================================
# 4. Multi-step policy ensemble optimisation, gated by AM-Q
# ======================================================================================================================
@torch.no_grad()
def am_q(policy: PolicyEnsemble, q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
         dynamics: DynamicsEnsemble, start_raw: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor],
         horizon: int, done_fn: Callable[[torch.Tensor], torch.Tensor], gen: torch.Generator | None = None
         ) -> torch.Tensor:
    """AM-Q of every member: mean of Q(s_t, π(s_t)) over all (t, rollout) pairs visited in the learned model.

    dynamics_eval.py rollout: deterministic policy (its mean), start states from the dataset, model steps on raw
    states, a rollout stops at the first terminal s' (its last pair still counts). Returns (N,).
    """
    n, b = policy.n, start_raw.shape[0]
    obs = start_raw.unsqueeze(0).expand(n, b, -1).reshape(n * b, -1)
    alive = torch.ones(n * b, dtype=torch.bool, device=obs.device)
    q_sum = torch.zeros(n, device=obs.device)
    count = torch.zeros(n, device=obs.device)
    for t in range(horizon):
        s = normalize(obs)
        a = policy.act(s.view(n, b, -1))  # each member acts on its own rollouts
        q = q_fn(s, a.reshape(n * b, -1))
        w = alive.float()
        q_sum += (q * w).view(n, b).sum(1)
        count += w.view(n, b).sum(1)
        nxt, _ = dynamics.step(obs, a.reshape(n * b, -1), gen)
        alive = alive & ~done_fn(nxt)
        obs = torch.where(alive.unsqueeze(-1), nxt, obs)  # frozen once done (no NaN from diverging model states)
        if (t + 1) % 100 == 0 and not bool(alive.any()):  # the official early exit; a host sync every 100 steps
            break
    return q_sum / count.clamp(min=1.0)


def ope_gate(scores: torch.Tensor, best: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The replacement rule: a member improves iff its AM-Q beats its best so far. Returns (mask, new best)."""
    improved = scores > best
    return improved, torch.where(improved, scores, best)


def clipped_surrogate(logp_new: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """Per-member PPO-clip loss −E_B[min(ρA, clip(ρ, 1 ± ε)A)], ρ = exp(logp_new − logp_old); inputs (N, B) -> (N,).

    The same equation as baselines.ppo.ppo_loss, kept per member (the ensemble dim) instead of one mean.
    """
    ratio = (logp_new - logp_old).exp()
    return -torch.min(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv).mean(-1)


def normalize_advantage(adv: torch.Tensor, omega: float | None = None) -> torch.Tensor:
    """(A − mean)/(std + 1e-10) per member over the batch; on the MC path then ω·A⁺ and (1 − ω)·A⁻ (abppo.py)."""
    adv = (adv - adv.mean(-1, keepdim=True)) / (adv.std(-1, keepdim=True) + ADV_EPS)
    if omega is not None and omega != 0.5:
        adv = torch.where(adv > 0, omega, 1.0 - omega) * adv
    return adv


class Improver:
    """Per member: PPO-clip on dataset states against its behaviour policy π_k (pi_old), replaced only by the gate."""

    def __init__(self, policy: PolicyEnsemble, critic: ValueLearner, cfg: UniO4Config) -> None:
        self.pi, self.critic, self.cfg = policy, critic, cfg
        self.pi_old = copy.deepcopy(policy).requires_grad_(False)
        self.opt = torch.optim.Adam(policy.parameters(), lr=cfg.improve_lr)
        self.params = stacked_params(policy)
        self.best: torch.Tensor | None = None  # best AM-Q of every member so far (initially the BC policies')
        self.replacements = torch.zeros(policy.n, dtype=torch.long, device=self.params[0].device)

    def schedule(self, step: int) -> tuple[float, float]:
        """(lr, ε) at improvement step `step`: lr decays linearly to 0; ε only over the first clip_decay_steps."""
        frac = step / max(self.cfg.improve_steps, 1)
        eps = self.cfg.clip_ratio * (1.0 - min(step, self.cfg.clip_decay_steps) / max(self.cfg.improve_steps, 1))
        return self.cfg.improve_lr * (1.0 - frac), eps

    def update(self, obs: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        lr, eps = self.schedule(step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        n, b = self.pi.n, obs.shape[0]
        with torch.no_grad():
            old = self.pi_old.dist(obs)
            a = old.sample()  # a ~ π_k(·|s), not the dataset action
            if self.cfg.clip_actions:
                a = a.clamp(-(1.0 - 1e-5), 1.0 - 1e-5)
            logp_old = old.log_prob(a).sum(-1)
            s_rep = obs.unsqueeze(0).expand(n, b, -1).reshape(n * b, -1)
            q_a = a.clamp(-1.0, 1.0) if self.cfg.q_action_clip else a  # Q never saw |a| > 1 in the data
            raw_adv = self.critic.advantage(s_rep, q_a.reshape(n * b, -1)).view(n, b)
            adv = normalize_advantage(raw_adv, self.cfg.omega if self.critic.method == "mc_sarsa" else None)
        new = self.pi.dist(obs)
        logp = new.log_prob(a).sum(-1)
        loss = clipped_surrogate(logp, logp_old, adv, eps) - self.cfg.entropy_weight * new.entropy().sum(-1).mean(-1)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        gn = clip_grad_norm_per_member(self.params, self.cfg.grad_clip)
        self.opt.step()
        with torch.no_grad():
            logr = logp.detach() - logp_old
            return {"improve_loss": loss.detach().mean(), "ratio": logr.exp().mean(),
                    "clipfrac": ((logr.exp() - 1).abs() > eps).float().mean(),
                    "approx_kl": ((logr.exp() - 1) - logr).mean(), "adv_raw": raw_adv.mean(),
                    "out_of_range": (a.abs() > 1.0).float().mean(),  # sampled actions outside the action box
                    "grad_norm": gn.mean(), "lr": torch.tensor(lr, device=obs.device),
                    "clip": torch.tensor(eps, device=obs.device)}

    def gate(self, scores: torch.Tensor) -> torch.Tensor:
        """Apply the AM-Q gate: improved members copy π into π_k. Returns the mask (no host sync)."""
        if self.best is None:
            self.best = scores.clone()
            return torch.zeros_like(scores, dtype=torch.bool)
        improved, self.best = ope_gate(scores, self.best)
        copy_members(self.pi_old, self.pi, improved)
        self.replacements += improved.long()
        return improved


# ======================================================================================================================
# Stage cache: artefacts keyed by a hash of the fields that determine them
# ======================================================================================================================
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "data": ("dataset", "env", "seed", "state_norm", "obs_norm_eps", "reward_kind", "clip_actions",
             "bootstrap_timeouts", "gamma"),
    "critic": ("value_method", "critic_steps", "critic_batch", "q_lr", "v_lr", "q_hidden", "q_depth", "v_hidden",
               "v_depth", "omega", "tau", "target_every"),
    "dynamics": ("dyn_members", "dyn_elites", "dyn_hidden", "dyn_weight_decay", "dyn_lr", "dyn_batch",
                 "dyn_holdout_ratio", "dyn_holdout_max", "dyn_patience", "dyn_max_epochs", "dyn_logvar_coef"),
    "bc": ("bc_positive_return_only", "n_policies", "bc_steps", "bc_batch", "bc_lr", "pi_hidden", "pi_depth",
           "pi_activation", "bc_alpha", "bc_disagreement", "bc_kl_cap"),
    "improve": ("improve_steps", "improve_batch", "improve_lr", "clip_ratio", "clip_decay_steps", "entropy_weight",
                "grad_clip", "ope_every", "ope_horizon", "ope_batch", "final_policy", "q_action_clip"),
}
STAGE_DEPENDS = {"critic": ("data", "critic"), "dynamics": ("data", "dynamics"), "bc": ("data", "bc"),
                 "improve": ("data", "critic", "dynamics", "bc", "improve")}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_keys(cfg: UniO4Config) -> dict[str, str]:
    """Key of each cached stage: a hash of the config fields it depends on (its own and its inputs')."""
    out = {}
    for stage, groups in STAGE_DEPENDS.items():
        fields = {f: getattr(cfg, f) for g in groups for f in STAGE_FIELDS[g]}
        fields["dataset"] = os.path.abspath(cfg.dataset) if os.path.exists(cfg.dataset) else cfg.dataset
        out[stage] = f"{stage}-{_hash({'v': CACHE_VERSION, 'stage': stage, **fields})}"
    return out


def stage_fields(cfg: UniO4Config, stage: str) -> dict[str, Any]:
    return {f: getattr(cfg, f) for g in STAGE_DEPENDS[stage] for f in STAGE_FIELDS[g]}


class StageCache:
    """`<out>/cache/<stage>-<hash>.pt`, written atomically, loaded with weights_only=True."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root, self.enabled = root, enabled
        self.hits: list[str] = []
        self.misses: list[str] = []

    def path(self, key: str, suffix: str = "") -> Path:
        return self.root / f"{key}{suffix}.pt"

    def load(self, key: str, device: torch.device, suffix: str = "") -> dict[str, Any] | None:
        p = self.path(key, suffix)
        if not self.enabled or not p.exists():
            if not suffix:
                self.misses.append(key)
            return None
        state = torch.load(p, map_location=device, weights_only=True)
        if not suffix:
            self.hits.append(key)
            print(f"[{ALGORITHM}] reusing cached {key} ({p})", flush=True)
        return state

    def save(self, key: str, state: dict[str, Any], suffix: str = "") -> None:
        if not self.enabled:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        p = self.path(key, suffix)
        tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, p)

    def remove(self, key: str, suffix: str) -> None:
        self.path(key, suffix).unlink(missing_ok=True)


def stage_seed(seed: int, stage: str) -> int:
    """A seed per stage, so a stage computes the same thing whether or not the stages before it came from the cache."""
    return int(hashlib.sha256(f"{seed}:{stage}".encode()).hexdigest()[:8], 16)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


# ======================================================================================================================
# Training: the stages in order
# ======================================================================================================================
def fit_critic(cfg: UniO4Config, data: OfflineData, device: torch.device, out: Path,
               on_flush: Callable[[int, ValueLearner], None] | None = None) -> ValueLearner:
    """Stage 1; `on_flush(step, critic)` runs at every metric flush (diagnostics that watch the critic learn)."""
    seed = stage_seed(cfg.seed, "critic")
    set_seed(seed)
    critic = ValueLearner(cfg, data.obs.shape[1], data.act.shape[1]).to(device)
    gen = _generator(seed, device)
    log = MetricLog(out / "metrics_critic.csv", cfg.critic_steps, f"{ALGORITHM} critic")
    for t in range(cfg.critic_steps):
        log.add(critic.update(data, sample_index(len(data), cfg.critic_batch, gen, device)))
        if (t + 1) % cfg.log_every == 0 or t + 1 == cfg.critic_steps:
            log.flush(t + 1)
            if on_flush is not None:
                on_flush(t + 1, critic)
    return critic


def critic_state(critic: ValueLearner, cfg: UniO4Config) -> dict[str, Any]:
    """What the critic stage caches."""
    return {"q": critic.q.state_dict(), "v": critic.v.state_dict(),
            "fields": json.dumps(stage_fields(cfg, "critic"), default=str)}


def load_critic_state(critic: ValueLearner, state: dict[str, Any]) -> ValueLearner:
    """Put a cached critic_state() into `critic`; returns it."""
    critic.q.load_state_dict(state["q"])
    critic.v.load_state_dict(state["v"])
    return critic


def fit_dynamics(cfg: UniO4Config, data: OfflineData, device: torch.device, out: Path
                 ) -> tuple[DynamicsEnsemble, dict[str, Any]]:
    seed = stage_seed(cfg.seed, "dynamics")
    set_seed(seed)
    model = DynamicsEnsemble(data.obs.shape[1], data.act.shape[1], cfg.dyn_members, cfg.dyn_elites,
                             cfg.dyn_hidden, cfg.dyn_weight_decay).to(device)
    inputs = torch.cat([data.raw_obs, data.act], -1)
    targets = torch.cat([data.raw_next_obs - data.raw_obs, data.rew.unsqueeze(-1)], -1)
    log = MetricLog(out / "metrics_dynamics.csv", cfg.dyn_max_epochs, f"{ALGORITHM} dynamics")
    info = train_dynamics(model, inputs, targets, cfg, _generator(seed, device), log)
    return model, info


def fit_bc(cfg: UniO4Config, data: OfflineData, device: torch.device, out: Path) -> tuple[PolicyEnsemble, dict]:
    seed = stage_seed(cfg.seed, "bc")
    set_seed(seed)
    policy = PolicyEnsemble(cfg.n_policies, data.obs.shape[1], data.act.shape[1], cfg.pi_hidden, cfg.pi_depth,
                            cfg.pi_activation).to(device)
    bc = BCEnsemble(policy, cfg)
    gen = _generator(seed, device)
    log = MetricLog(out / "metrics_bc.csv", cfg.critic_steps + cfg.bc_steps, f"{ALGORITHM} bc")
    last: dict[str, float] = {}
    for t in range(cfg.bc_steps):
        idx = data.bc_index[sample_index(len(data.bc_index), cfg.bc_batch, gen, device)]
        log.add(bc.update(data.obs[idx], data.act[idx]))
        if (t + 1) % cfg.log_every == 0 or t + 1 == cfg.bc_steps:
            last = log.flush(cfg.critic_steps + t + 1)
    return policy, last


def improve(cfg: UniO4Config, data: OfflineData, critic: ValueLearner, dynamics: DynamicsEnsemble,
            policy: PolicyEnsemble, done_fn: Callable, device: torch.device, out: Path, cache: StageCache,
            key: str, on_eval: Callable[[PolicyEnsemble, int, torch.Tensor], None] | None = None) -> dict[str, Any]:
    """Multi-step improvement of every member; returns final policies, AM-Q scores and gate statistics."""
    seed = stage_seed(cfg.seed, "improve")
    set_seed(seed)
    gen = _generator(seed, device)
    ope_gen = _generator(seed + 1, device)
    imp = Improver(policy, critic, cfg)
    critic.requires_grad_(False)
    dynamics.requires_grad_(False)
    offset = cfg.critic_steps + cfg.bc_steps
    log = MetricLog(out / "metrics_improve.csv", offset + cfg.improve_steps, f"{ALGORITHM} improve")
    ope_log = MetricLog(out / "metrics_ope.csv", offset + cfg.improve_steps, f"{ALGORITHM} AM-Q")
    history: list[list[float]] = []

    def query() -> torch.Tensor:
        start = data.raw_obs[sample_index(len(data), cfg.ope_batch, ope_gen, device)]
        scores = am_q(imp.pi, critic.q_value, dynamics, start, data.normalize, cfg.ope_horizon, done_fn, ope_gen)
        return scores

    start_step = 0
    partial = cache.load(key, device, suffix=".partial") if cfg.resume else None
    if partial is not None:
        imp.pi.load_state_dict(partial["pi"])
        imp.pi_old.load_state_dict(partial["pi_old"])
        imp.opt.load_state_dict(partial["opt"])
        imp.best = partial["best"]
        imp.replacements = partial["replacements"]
        history = [list(h) for h in partial["history"]]
        gen.set_state(partial["gen"])
        ope_gen.set_state(partial["ope_gen"])
        set_rng_state(partial["rng"])
        start_step = int(partial["step"])
        print(f"[{ALGORITHM}] resumed the improvement stage at step {start_step}", flush=True)
    else:
        bc_scores = query()
        imp.gate(bc_scores)  # the BC policies' AM-Q is every member's first 'best'
        history.append(bc_scores.cpu().tolist())
        ope_log.add({"ope_mean": bc_scores.mean(), "ope_best_mean": bc_scores.mean(),
                     "replaced": torch.zeros((), device=device), **{f"ope_{k}": bc_scores[k] for k in range(policy.n)}})
        ope_log.flush(offset, quiet=True)
    initial = torch.tensor(history[0], device=device)
    scores = imp.best.clone()
    last_query = 0
    for t in range(start_step, cfg.improve_steps):
        idx = sample_index(len(data), cfg.improve_batch, gen, device)
        metrics = imp.update(data.obs[idx], t)
        if (t + 1) % cfg.ope_every == 0:
            scores = query()
            improved = imp.gate(scores)
            history.append(scores.cpu().tolist())
            ope_log.add({"ope_mean": scores.mean(), "ope_best_mean": imp.best.mean(), "replaced": improved.sum(),
                         **{f"ope_{k}": scores[k] for k in range(len(scores))}})
            ope_log.flush(offset + t + 1, quiet=True)  # one row per AM-Q query (the host sync happened above)
            last_query = t + 1
            if not all(math.isfinite(v) for v in history[-1]):
                raise DivergenceError(f"AM-Q score became NaN/inf at improvement step {t + 1}")
        log.add(metrics)
        if (t + 1) % cfg.log_every == 0 or t + 1 == cfg.improve_steps:
            log.flush(offset + t + 1)
        if on_eval is not None and cfg.offline_eval_every and (t + 1) % cfg.offline_eval_every == 0 \
                and t + 1 < cfg.improve_steps:
            on_eval(imp.pi, offset + t + 1, scores)
        if (t + 1) % cfg.checkpoint_every == 0 and t + 1 < cfg.improve_steps:
            cache.save(key, {"pi": imp.pi.state_dict(), "pi_old": imp.pi_old.state_dict(),
                             "opt": imp.opt.state_dict(), "best": imp.best, "replacements": imp.replacements,
                             "history": history, "gen": gen.get_state(), "ope_gen": ope_gen.get_state(),
                             "rng": rng_state(), "step": t + 1}, suffix=".partial")
    if cfg.final_policy == "best":
        final, final_scores = imp.pi_old, imp.best.clone()
    else:
        final = imp.pi
        if last_query != cfg.improve_steps:
            scores = query()
            history.append(scores.cpu().tolist())
        final_scores = scores
    cache.remove(key, ".partial")
    return {"policy": final, "ope": final_scores, "ope_bc": initial, "best": imp.best,
            "replacements": imp.replacements, "history": history}


# ======================================================================================================================
# 5. Selection and the online phase
# ======================================================================================================================
def select_member(ope: list[float], env_scores: list[float] | None, rule: str, top_k: int = 3) -> int:
    """'ope': argmax AM-Q. 'official' (ppo_finetune/ppo.py load_pi_value): among the top_k members by AM-Q, the one
    with the best real-environment score (this uses online evaluations)."""
    if rule == "ope":
        return int(np.argmax(ope))
    if env_scores is None:
        raise ValueError("the official selection rule needs the members' environment scores")
    top = list(np.argsort(-np.asarray(ope), kind="stable")[:top_k])
    return int(max(top, key=lambda k: env_scores[k]))


class _OnlineRowsRecorder:
    """run_ppo counts online steps from 0 and truncates evaluations after its checkpoint's step on resume; this
    proxy keeps that truncation to the online rows, so the offline rows (whose steps are gradient steps) stay."""

    def __init__(self, recorder: RunRecorder) -> None:
        self._rec = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rec, name)

    def truncate_after(self, step: int) -> None:
        self._rec.rows = [r for r in self._rec.rows if r["phase"] != "online" or int(r["step"]) <= step]
        self._rec.write()


def ppo_config(cfg: UniO4Config) -> Any:
    """The PPOConfig of the online phase (baselines.ppo) from this run's online_* fields."""
    from baselines.ppo import PPOConfig

    return PPOConfig(
        dataset=cfg.dataset, env=cfg.env, seed=cfg.seed, out=cfg.out, budget=cfg.budget, device=cfg.device,
        resume=cfg.resume, eval_episodes=cfg.eval_episodes, log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every, total_steps=cfg.online_steps, eval_every=cfg.online_eval_every,
        num_envs=1, rollout_steps=cfg.online_rollout, minibatch_size=cfg.online_minibatch, epochs=cfg.online_epochs,
        actor_lr=cfg.online_actor_lr, critic_lr=cfg.online_critic_lr, anneal_lr=True, gamma=cfg.gamma,
        gae_lambda=cfg.online_gae_lambda, clip=cfg.online_clip, value_clip=cfg.online_clip,
        ent_coef=cfg.online_ent_coef, vf_coef=2.0, max_grad_norm=0.5, norm_adv=True, norm_obs=False,
        norm_reward=False, hidden=(cfg.pi_hidden,) * cfg.pi_depth, critic_hidden=(cfg.v_hidden,) * cfg.v_depth,
        activation=cfg.pi_activation, preset="unio4",
    )


def online_critic(cfg: UniO4Config, critic: ValueLearner, data: OfflineData, device: torch.device) -> VNet:
    """The PPO critic: the offline V with its output scaled to the online reward scale, or a V refit on MC returns."""
    v = copy.deepcopy(critic.v).requires_grad_(True)
    last = [m for m in v.net if isinstance(m, nn.Linear)][-1]
    if cfg.online_critic_init == "offline_v":
        with torch.no_grad():  # V of rewards × c is c·V: scale the last layer
            last.weight.mul_(cfg.online_reward_scale)
            last.bias.mul_(cfg.online_reward_scale)
        return v
    seed = stage_seed(cfg.seed, "online_mc_v")
    set_seed(seed)
    gen = _generator(seed, device)
    v = VNet(data.obs.shape[1], cfg.v_hidden, cfg.v_depth).to(device)
    opt = torch.optim.Adam(v.parameters(), lr=1e-4)
    target = data.mc_return * cfg.online_reward_scale
    log = MetricLog(None, cfg.online_mc_steps, f"{ALGORITHM} online V refit")
    for t in range(cfg.online_mc_steps):
        idx = sample_index(len(data), 512, gen, device)
        loss = (v(data.obs[idx]) - target[idx]).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.add({"mc_v_loss": loss.detach()})
        if (t + 1) % cfg.log_every == 0 or t + 1 == cfg.online_mc_steps:
            log.flush(t + 1)
    return v


# ======================================================================================================================
# The run
# ======================================================================================================================
def train(cfg: UniO4Config) -> dict[str, Any]:
    """One run: offline stages, selection, online PPO. Writes summary.json, evals.csv, metrics_*.csv, cache/ and
    policy.pt under the run directory; returns the summary (status finished, or diverged on NaN/inf)."""
    check_config(cfg)
    cfg = dataclasses.replace(cfg, out=default_out(ALGORITHM, cfg))
    out = Path(cfg.out)
    recorder = RunRecorder(out, ALGORITHM, cfg.dataset, cfg.seed, config_dict(cfg), cfg.budget, resume=cfg.resume)
    ok, _ = run_recorded(ALGORITHM, recorder, lambda: _train(cfg, out, recorder))
    if ok:
        recorder.finish("finished")
    return recorder.summary()


def _train(cfg: UniO4Config, out: Path, recorder: RunRecorder) -> None:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    set_seed(cfg.seed)
    if not cfg.resume:  # a fresh run starts its metric files anew (cached stages keep no metrics of their own)
        for p in out.glob("metrics*.csv"):
            p.unlink()
    spec = dataset_spec(cfg)
    ds = load_dataset(cfg.dataset, env_id=cfg.env)
    data = prepare_data(ds, cfg, device)
    keys = stage_keys(cfg)
    cache = StageCache(out / "cache", cfg.cache)
    timings: dict[str, float] = {}
    extra = recorder.extra
    extra.update(dataset_transitions=len(data), bc_transitions=int(len(data.bc_index)), stage_keys=keys,
                 bc_disagreement=cfg.bc_disagreement, selection=cfg.selection,
                 selection_used_online_evaluations=cfg.selection == "official",
                 reward_scale=data.reward_fn.scale, reward_bias=data.reward_fn.bias)
    obs_dim, act_dim = data.obs.shape[1], data.act.shape[1]

    # ---- 1. value learning
    t0 = time.time()
    critic = ValueLearner(cfg, obs_dim, act_dim).to(device)
    st = cache.load(keys["critic"], device)
    if st is None:
        critic = fit_critic(cfg, data, device, out)
        cache.save(keys["critic"], critic_state(critic, cfg))
    else:
        load_critic_state(critic, st)
    timings["critic_s"] = time.time() - t0

    # ---- 3. dynamics model (trained before BC as in main.py; independent of it)
    t0 = time.time()
    dynamics = DynamicsEnsemble(obs_dim, act_dim, cfg.dyn_members, cfg.dyn_elites, cfg.dyn_hidden,
                                cfg.dyn_weight_decay).to(device)
    st = cache.load(keys["dynamics"], device)
    if st is None:
        dynamics, dyn_info = fit_dynamics(cfg, data, device, out)
        cache.save(keys["dynamics"], {"model": dynamics.state_dict(), "info": json.dumps(dyn_info),
                                      "fields": json.dumps(stage_fields(cfg, "dynamics"), default=str)})
    else:
        dynamics.load_state_dict(st["model"])
        dyn_info = json.loads(st["info"])
    extra.update(dynamics_epochs=dyn_info["epochs"], dynamics_elites=dyn_info["elites"],
                 dynamics_elite_holdout_mse=dyn_info["elite_holdout_mse"])
    timings["dynamics_s"] = time.time() - t0

    # ---- 2. ensemble BC
    t0 = time.time()
    st = cache.load(keys["bc"], device)
    if st is None:
        bc_policy, bc_metrics = fit_bc(cfg, data, device, out)
        cache.save(keys["bc"], {"policy": bc_policy.state_dict(), "metrics": json.dumps(bc_metrics),
                                "fields": json.dumps(stage_fields(cfg, "bc"), default=str)})
    else:
        bc_policy = PolicyEnsemble(cfg.n_policies, obs_dim, act_dim, cfg.pi_hidden, cfg.pi_depth,
                                   cfg.pi_activation).to(device)
        bc_policy.load_state_dict(st["policy"])
        bc_metrics = json.loads(st["metrics"])
    extra.update(bc_pair_kl=bc_metrics.get("pair_kl"), bc_pair_action_dist=bc_metrics.get("pair_action_dist"),
                 bc_nll=bc_metrics.get("bc_nll"))
    timings["bc_s"] = time.time() - t0

    # offline evaluations: the run's records are rebuilt on resume unless the online phase had started
    ckpt = Checkpointer(out)
    online_started = cfg.resume and (ck := ckpt.load("cpu")) is not None and ck.get("phase") == "online"
    if not online_started:
        recorder.rows = []
        recorder.write()
    evaluator = Evaluator(spec, recorder, cfg.seed, cfg.eval_episodes, obs_transform=data.normalizer)
    done_fn = termination_fn(spec)
    bc_end = cfg.critic_steps + cfg.bc_steps
    offline_end = bc_end + cfg.improve_steps

    def evaluate_members(policy: PolicyEnsemble, step: int, stage: str, ope: torch.Tensor) -> list[float]:
        scores = []
        ope_l = ope.cpu().tolist()
        for k in range(policy.n):
            pol = policy.member(k).eval()
            res = evaluator(torch_policy(pol.act, device), step, "offline", 0, member=k, stage=stage, ope=ope_l[k])
            scores.append(res.normalized_score)
        return scores

    # ---- 4. multi-step improvement
    t0 = time.time()
    st = cache.load(keys["improve"], device)
    if st is None:
        pol = copy.deepcopy(bc_policy)
        on_eval = None if online_started else (lambda p, s, o: evaluate_members(p, s, "improve", o))
        res = improve(cfg, data, critic, dynamics, pol, done_fn, device, out, cache, keys["improve"], on_eval)
        final = res["policy"]
        imp = {"ope": res["ope"].cpu().tolist(), "ope_bc": res["ope_bc"].cpu().tolist(),
               "best": res["best"].cpu().tolist(), "replacements": res["replacements"].cpu().tolist(),
               "history": res["history"]}
        cache.save(keys["improve"], {"policy": final.state_dict(), "info": json.dumps(imp),
                                     "fields": json.dumps(stage_fields(cfg, "improve"), default=str)})
    else:
        final = PolicyEnsemble(cfg.n_policies, obs_dim, act_dim, cfg.pi_hidden, cfg.pi_depth,
                               cfg.pi_activation).to(device)
        final.load_state_dict(st["policy"])
        imp = json.loads(st["info"])
    timings["improve_s"] = time.time() - t0
    extra.update(ope_bc=imp["ope_bc"], ope_final=imp["ope"], ope_best=imp["best"],
                 behaviour_replacements=imp["replacements"], ope_queries=len(imp["history"]))
    (out / "ope_history.json").write_text(json.dumps(imp["history"]))

    # ---- offline evaluations, selection
    if not online_started:
        bc_scores = evaluate_members(bc_policy, bc_end, "bc", torch.tensor(imp["ope_bc"]))
        env_scores = evaluate_members(final, offline_end, "improve", torch.tensor(imp["ope"]))
        extra.update(bc_scores=bc_scores, member_scores=env_scores)
    else:
        env_scores = extra.get("member_scores")
    sel = select_member(imp["ope"], env_scores, cfg.selection, cfg.selection_top_k)
    extra.update(selected_member=sel)
    actor = final.member(sel)
    if not online_started:
        evaluator(torch_policy(actor.act, device), offline_end, "offline", 0, member=sel, stage="selected",
                  ope=imp["ope"][sel])
    recorder.progress(offline_end, 0)
    _save_policy(out, actor, data, cfg, sel)

    # ---- 6. online PPO from the selected member
    if cfg.online_steps > 0:
        from baselines.ppo import run_ppo

        t0 = time.time()
        v = online_critic(cfg, critic, data, device)
        rt = data.reward_fn
        online_rt = RewardTransform(rt.scale * cfg.online_reward_scale, rt.bias * cfg.online_reward_scale)
        actor.train()
        res = run_ppo(ppo_config(cfg), spec, actor, v, recorder=_OnlineRowsRecorder(recorder), evaluator=evaluator,
                      obs_normalizer=data.normalizer, reward_transform=online_rt, step_offset=0, checkpointer=ckpt,
                      phase="online")
        timings["online_s"] = time.time() - t0
        extra.update(online_env_steps_per_s=round(res["env_steps_per_s"], 1),
                     online_train_return_last10=float(np.mean(res["episode_returns"][-10:]))
                     if res["episode_returns"] else None)
        _save_policy(out, actor, data, cfg, sel)
        recorder.progress(offline_end, res["env_steps"])
    extra.update(timings={k: round(v, 1) for k, v in timings.items()}, cache_hits=cache.hits)


def _save_policy(out: Path, actor: GaussPolicy, data: OfflineData, cfg: UniO4Config, member: int) -> None:
    """policy.pt: the selected (and, after the online phase, fine-tuned) actor with its architecture and obs stats."""
    torch.save({"actor": {k: v.detach().cpu() for k, v in actor.state_dict().items()},
                "arch": {"obs_dim": actor.obs_dim, "act_dim": actor.act_dim, "hidden": cfg.pi_hidden,
                         "depth": cfg.pi_depth, "activation": cfg.pi_activation},
                "obs_norm": {"mean": data.obs_mean.cpu(), "std": data.obs_std.cpu()}, "member": member},
               out / "policy.pt")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 finished, 3 diverged)."""
    torch.set_num_threads(1)
    cfg = parse_config(UniO4Config, presets, argv, description=__doc__)
    summary = train(cfg)
    return {"finished": 0, "diverged": 3}.get(summary["status"], 1)


if __name__ == "__main__":
    raise SystemExit(main())
