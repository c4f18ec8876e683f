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
   π^i_{k+1} ← π^i (the "multi-step" improvement); the others keep π^i_k (`--gate never`: no member ever does, a
   control that measures what the gate adds).
5. One member initialises online PPO: by AM-Q alone here (`--selection ope`, the default: an offline result must
   not depend on real-environment returns), or by the official rule (`--selection official`: top-3 by AM-Q, then
   the best *real-environment* score; that uses online evaluations, and summary.json's extra says so). The online
   critic starts from the offline V (output scaled to the online reward scale), observations keep the offline
   normalisation, and PPO is `baselines.ppo.run_ppo` with the official ppo_finetune settings per family (presets;
   AntMaze and Kitchen have no official online script: main.py's defaults, AntMaze rewards × 0.1 on top of 10r − 5).

Seeds packed (`--seeds 0,1,2`, one run directory `<out>/seed<N>/` per seed, as the engine's o2o.loop.run_dirs):
every network is an o2o.nets module with a leading member axis, seeds × members: the critic S, BC S × N, the
dynamics model S × 7, the improvement and AM-Q S × N; every random number comes from the seed's own stream
(o2o.rng.MemberRNG), losses are each seed's own and summed, so a seed gets the records it gets alone
(tests/test_uni_o4.py). Stage caches are per seed (`<seed dir>/cache/`): a pack trains a stage only for the seeds
whose cache misses it.

Differences from the official code, on purpose (each is also noted where it happens):
- `--bc-disagreement working` (default) adds a penalty whose gradient acts; the official one is `official`.
- Timeouts bootstrap (`bootstrap_timeouts`): our loader gives the true s' of a truncated step, the official buffer
  pairs it with the next episode's first state and therefore masks it.
- AM-Q uses the same 512 start states for all members of one query (common random numbers across members).
- Cached stages are keyed by a hash of every config field that determines them (the official code reuses cached
  critics and dynamics across runs with different hyperparameters).
- The dynamics fit stops after `dyn_max_updates` gradient steps at the latest (official: only holdout early
  stopping; the full budget's bound, 2M, is about 500 epochs of a 1M-transition dataset).
- The online actor keeps the offline distribution; ppo_finetune/net.py applies tanh twice to the log-std of the
  loaded policy, which changes its σ at the hand-over. The official `dynamic` reward scaling path cannot run
  (`reward_normalize` returns None), so presets use fixed reward scales (configs/uni_o4/official/).

Measured (results/uni_o4/README.md, reduced CPU budgets): on a generated halfcheetah-medium dataset the improvement
lifts every BC member (3 seeds, +5.5 to +6.0 normalized); on hopper it lowered them, and there the critic does not
order the actions the improvement samples (results/uni_o4/advantage_check.py). AM-Q ranks unrelated policies well
(Spearman 0.8–0.9 on hopper) but cannot catch such critic errors: it averages the same critic the improvement climbs.

Offline `step` in evals.csv counts gradient steps: critic updates, then BC updates, then improvement updates
(dynamics epochs are not counted). Online rows count env steps from 0 (`env_steps` likewise).

Usage:
  python algorithms/uni_o4.py --dataset hopper-medium-v2 --seed 0 --out DIR --budget smoke|short|full --device cpu
  python algorithms/uni_o4.py --dataset local:hopper-medium --seeds 0,1 --budget smoke    # two seeds, one process
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
import shutil
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn as nn

if __package__ in (None, ""):  # `python algorithms/uni_o4.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baselines.ppo import PPOAgent, PPOConfig, gaussian_log_prob, pad_rows, ppo_loss, run_ppo  # noqa: E402
from o2o.cli import RunConfig, configure, dataset_spec, field_types, steps  # noqa: E402
from o2o.data import load_dataset  # noqa: E402
from o2o.dataset import Dataset  # noqa: E402
from o2o.loop import run_dirs  # noqa: E402
from o2o.nets import (  # noqa: E402
    BoundedGaussianActor,
    ProbabilisticEnsemble,
    TwinQ,
    ValueNet,
    adam,
    clip_grad_norm_per_member,
    join_members,
    mean_per_member,
    soft_update,
    split_members,
)
from o2o.presets import Source, layered_preset  # noqa: E402
from o2o.records import RunRecorder, atomic_save, atomic_write  # noqa: E402
from o2o.registry import DatasetSpec  # noqa: E402
from o2o.rng import MemberRNG, member_generators  # noqa: E402
from o2o.training import (  # noqa: E402
    Checkpointer,
    Evaluator,
    MetricLog,
    config_dict,
    pick_device,
    recover_pack,
    retain_freed_memory,
    run_recorded,
    save_pack,
)
from o2o.transforms import (  # noqa: E402
    ObsNormalizer,
    RewardKind,
    RewardTransform,
    clip_actions,
    reward_transform,
)

ALGORITHM = "uni_o4"
CACHE_VERSION = 4  # bump when a stage's computation or o2o.nets.NETS_LAYOUT changes (old caches then miss)
LOG_STD_RANGE = (-5.0, 0.0)  # net.py GaussPolicyMLP: tanh output mapped linearly onto (−5, 0)
ADV_EPS = 1e-10  # utils.py CONST_EPS in the advantage normalisation


# ======================================================================================================================
# Config and presets (configs/uni_o4/<source>/: README, "Presets")
# ======================================================================================================================
ValueMethod = Literal["iql", "mc_sarsa"]
BCDisagreement = Literal["working", "official", "none"]
FinalPolicy = Literal["last", "best"]
Selection = Literal["ope", "official"]
Gate = Literal["amq", "never"]
CriticInit = Literal["offline_v", "mc"]
Activation = Literal["relu", "tanh"]


@dataclass
class UniO4Config(RunConfig):
    """Uni-O4 hyperparameters. Defaults: the official main.py defaults and its locomotion scripts; per domain, family
    and dataset the official scripts' values come from configs/uni_o4/official/ (`--preset official`)."""

    seeds: tuple[int, ...] = ()  # train these seeds in one process, each in <out>/seed<N>/ (empty: --seed alone)
    # configs/uni_o4/<preset>/{<domain>,<family>,<dataset>}.yaml merged in that order (official: Lei-Kun/Uni-O4 scripts)
    preset: Source = "official"

    # ---- data (buffer.py)
    normalize_states: bool = True  # z-score states with the dataset's mean/std (official --is_state_norm)
    obs_norm_eps: float = 1e-3  # added to the std (official 1e-10; 1e-3 keeps constant dims finite online)
    reward_kind: RewardKind = "none"  # o2o.transforms reward transform (AntMaze: unio4_antmaze, 10 r − 5 as buffer.py)
    clip_actions: bool = False  # clip dataset actions to ±(1 − 1e-5) (official --is_clip_action, Adroit)
    bc_positive_return_only: bool = False  # BC on transitions with MC return > 0 only (official is_filter_bc, AntMaze)
    bootstrap_timeouts: bool = True  # bootstrap time-limit truncations (false: official, a timeout ends the trace)
    discount: float = 0.99  # γ of the critic, the MC returns and online GAE (official gamma)
    # ---- 1. value learning (critic.py IQL_Q_V / ValueLearner + QSarsaLearner)
    value_method: ValueMethod = "iql"  # iql: expectile V + twin Q (official --is_iql); mc_sarsa: MC V + SARSA Q
    critic_steps: int = steps(2_000_000, 100)  # gradient steps of the critic stage (official --v_steps = --q_bc_steps)
    critic_batch: int = 512  # critic batch size (official --v_batch_size, --q_batch_size)
    critic_lr: float = 1e-4  # Adam lr of the twin Q (official --q_lr)
    value_lr: float = 1e-4  # Adam lr of V (official --v_lr)
    q_hidden: int = 1024  # width of Q's hidden layers (official --q_hidden_dim)
    q_depth: int = 2  # hidden layers of Q (official --q_depth)
    v_hidden: int = 512  # width of V's hidden layers (official --v_hidden_dim)
    v_depth: int = 3  # hidden layers of V (official --v_depth)
    omega: float = 0.7  # expectile of V (IQL path); weight of positive advantages on the MC path (official --omega)
    tau: float = 0.005  # Polyak rate of the target Q (official --tau)
    target_every: int = 2  # critic steps between target updates (official --target_update_freq)
    # an IQL run's checkpoint.pt (baselines/iql.py, same widths) whose twin Q and V replace the critic stage (hypothesis
    # H1 of results/uni_o4/README.md; `{seed}` in the path is each seed's); empty = train the critic
    critic_from: str = ""
    # ---- 2. ensemble BC (BC_ensemble.py)
    n_policies: int = 4  # members of the BC / policy ensemble (official --num_policies)
    bc_steps: int = steps(400_000, 100)  # gradient steps of ensemble BC (official --bc_steps)
    bc_batch: int = 512  # BC batch size (official --bc_batch_size)
    bc_lr: float = 1e-4  # Adam lr of the BC ensemble (official --bc_lr)
    pi_hidden: int = 256  # width of the policies' hidden layers (official --bc_hidden_dim; hm/wm scripts sweep 512)
    pi_depth: int = 3  # hidden layers of the policies (official --bc_depth)
    pi_activation: Activation = "relu"  # the policies' hidden activation (official --pi_activation_f; halfcheetah tanh)
    bc_alpha: float = 0.1  # weight α of the disagreement term (official --alpha_bc)
    bc_disagreement: BCDisagreement = "working"  # disagreement penalty: working | official (no gradient) | none
    bc_kl_cap: float = 1.0  # 'working': the penalty saturates at this KL (nats) so σ cannot be inflated without bound
    # ---- 3. dynamics ensemble (transition_model/, configs/*/default.py)
    dyn_members: int = 7  # members of the dynamics ensemble (official n_ensemble)
    dyn_elites: int = 5  # elite members the rollouts draw from (official n_elites)
    dyn_hidden: tuple[int, ...] = (200, 200, 200, 200)  # hidden widths of the dynamics model (dynamics_hidden_dims)
    # weight decay of each dynamics layer, one more entry than dyn_hidden (official dynamics_weight_decay)
    dyn_weight_decay: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    dyn_lr: float = 1e-3  # Adam lr of the dynamics model (official dynamics_lr)
    dyn_batch: int = 256  # dynamics batch size (official EnsembleDynamics.train batch_size)
    dyn_holdout_ratio: float = 0.2  # share of transitions held out for early stopping (official holdout_ratio)
    dyn_holdout_max: int = 1000  # at most this many held-out transitions (official: min(20%, 1000))
    dyn_patience: int = 5  # epochs without a >1% holdout improvement of any member (max_epochs_since_update)
    dyn_max_epochs: int = steps(1000, 2)  # dynamics epochs at most (official dynamics_max_epochs None: unbounded)
    dyn_max_updates: int = steps(2_000_000, 300)  # gradient steps at most (official: none; early stopping ends it)
    dyn_logvar_coef: float = 0.01  # weight of the dynamics loss's log-variance bound term (official logvar_loss_coef)
    # ---- 4. multi-step improvement (abppo.py, main.py)
    improve_steps: int = steps(10_000, 100)  # PPO-clip steps on the dataset (official --bppo_steps)
    improve_batch: int = 512  # improvement batch size (official --bppo_batch_size)
    improve_lr: float = 1e-4  # improvement Adam lr, decays linearly to 0 (official --bppo_lr, --is_linear_decay)
    clip_ratio: float = 0.25  # PPO clip ε of the improvement (official --clip_ratio)
    clip_decay_steps: int = 200  # ε decays linearly only for the first 200 steps, then stays (main.py)
    entropy_weight: float = 0.0  # entropy bonus of the improvement loss (official --entropy_weight)
    q_action_clip: bool = False  # advantage at clip(a, ±1), the action the env executes (official: at the raw sample)
    grad_clip: float = 0.5  # gradient-norm clip of the improvement, per member (official)
    ope_every: int = 100  # improvement steps between AM-Q queries (official --eval_step)
    ope_horizon: int = steps(1000, 10)  # AM-Q rollout length in the learned model (official --rollout_step)
    ope_batch: int = 512  # AM-Q start states (official rollout_batch_size)
    gate: Gate = "amq"  # amq: a member replaces π_k when its AM-Q beats its best (official) | never (control, H3)
    final_policy: FinalPolicy = "last"  # last (official: the current π after the last step) | best (π_k, best AM-Q)
    offline_eval_every: int = 0  # improvement steps between env evaluations of every member (0: at the end only)
    # ---- 5. selection and online phase (ppo_finetune/)
    selection: Selection = "ope"  # ope (AM-Q only) | official (top-k by AM-Q, then best env score: uses online evals)
    selection_top_k: int = 3  # members by AM-Q that 'official' selection evaluates (ppo_finetune evaluate_budget)
    online_steps: int = steps(1_000_000, 4096)  # env steps of online PPO (paper: 1M); 0 = offline only
    online_eval_every: int = steps(20_000, 2048)  # env steps between online evaluations (official --evaluate_freq)
    online_rollout: int = 2048  # env steps per PPO update (official --batch_size)
    online_minibatch: int = 128  # PPO minibatch size (official --mini_batch_size; Adroit scripts 256)
    online_epochs: int = 30  # PPO epochs per update (official --K_epochs)
    online_actor_lr: float = 2e-5  # online actor Adam lr, decays linearly (official --lr_a)
    online_critic_lr: float = 2e-4  # online V Adam lr, decays linearly (official --lr_c)
    online_clip: float = 0.05  # PPO ratio clip, also the value clip (official --epsilon, --is_clip_value)
    online_ent_coef: float = 0.01  # PPO entropy bonus (official --entropy_coef)
    online_gae_lambda: float = 0.95  # GAE λ (official --lamda)
    online_reward_scale: float = 1.0  # online rewards (after reward_kind) × this; 0.1 = official 'number' strategy
    # offline_v: the offline V, output × online_reward_scale; mc: V refit on MC returns (official 'number'/'dynamic'
    # strategies: online_mc_steps steps, lr 1e-4, batch 512)
    online_critic_init: CriticInit = "offline_v"
    online_mc_steps: int = steps(1_000_000, 100)  # gradient steps of the 'mc' refit of the online V
    # ---- run plumbing
    cache: bool = True  # reuse stage artefacts of <seed dir>/cache whose key matches (see stage_keys)
    threads: int = 1  # torch.set_num_threads (0 = torch's default)

    RENAMED: ClassVar[dict[str, str]] = {"state_norm": "normalize_states", "gamma": "discount", "q_lr": "critic_lr",
                                         "v_lr": "value_lr"}


FALLBACK = ("official",)  # preset sources tried after --preset's (the paper's appendix values are not transcribed)


def dataset_stem(name: str) -> str:
    """'hopper-medium' of 'hopper-medium-v2' or 'local:hopper-medium'."""
    return re.sub(r"-v\d+$", "", name.split(":", 1)[-1])


def presets(cfg: UniO4Config, spec: DatasetSpec) -> dict[str, Any]:
    """The preset in layers from configs/uni_o4/<--preset>/: `<domain>.yaml`, then the family's online settings
    `<family>.yaml`, then the dataset's `<stem>.yaml` (the stem without prefix or version, so that local: datasets get
    their D4RL counterpart's settings), each file naming the official script it transcribes."""
    return layered_preset(ALGORITHM, (spec.domain, spec.family, dataset_stem(spec.name)), cfg.preset, FALLBACK,
                          spec.name)


CHOICES = {name: typing.get_args(tp) for name, tp in field_types(UniO4Config).items()
           if typing.get_origin(tp) is Literal}  # a config built in code is checked against the Literal types too


def check_config(cfg: UniO4Config) -> None:
    """Raise ValueError for a choice field outside its choices."""
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"--{name.replace('_', '-')} must be one of {allowed}, not {getattr(cfg, name)!r}")
    if len(cfg.dyn_weight_decay) != len(cfg.dyn_hidden) + 1:
        raise ValueError("dyn_weight_decay needs one entry per dynamics layer (len(dyn_hidden) + 1)")
    if not cfg.dyn_hidden or len(set(cfg.dyn_hidden)) != 1:
        raise ValueError(f"dyn_hidden must be one or more equal widths, not {cfg.dyn_hidden}")
    if cfg.critic_from and cfg.value_method != "iql":
        raise ValueError("--critic-from loads an IQL critic: it needs --value-method iql")
    if cfg.dyn_elites > cfg.dyn_members or cfg.n_policies < 1:
        raise ValueError("need dyn_elites <= dyn_members and n_policies >= 1")


# ======================================================================================================================
# Data: one copy on the device; each seed draws its own batches (S, B) from its own stream
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
    mc_return: torch.Tensor | None  # discounted MC return of the transformed rewards (MC paths only)
    raw_obs: torch.Tensor  # unnormalised s (dynamics model, AM-Q start states)
    raw_next_obs: torch.Tensor
    bc_index: torch.Tensor  # rows used for BC
    obs_mean: torch.Tensor
    obs_std: torch.Tensor
    normalizer: ObsNormalizer | None
    reward_fn: RewardTransform | None

    def __len__(self) -> int:
        return self.obs.shape[0]

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw states -> the states the networks see."""
        return (raw - self.obs_mean) / self.obs_std


def prepare_data(ds: Dataset, cfg: UniO4Config, device: torch.device) -> OfflineData:
    """State normalisation, reward transform, action clipping, SARSA next actions, MC returns, the BC subset."""
    norm = ObsNormalizer.fit(ds, eps=cfg.obs_norm_eps) if cfg.normalize_states else None
    n = norm or ObsNormalizer.identity(ds.obs_dim)
    rt = reward_transform(ds, cfg.reward_kind)
    act, next_act = ds.actions, ds.next_actions()
    if cfg.clip_actions:
        act, next_act = clip_actions(act), clip_actions(next_act)
    ends = ds.terminals if cfg.bootstrap_timeouts else (ds.terminals | ds.timeouts)
    rew = np.asarray(rt(ds.rewards), np.float32)
    need_mc = cfg.value_method == "mc_sarsa" or cfg.online_critic_init == "mc"
    mc = dataclasses.replace(ds, rewards=rew).mc_returns(cfg.discount) if need_mc else None
    if cfg.bc_positive_return_only:  # buffer.py load_filter_dataset: MC return of the raw rewards > 0
        keep = np.flatnonzero(ds.mc_returns(cfg.discount) > 0)
        if len(keep) == 0:
            raise ValueError("bc_positive_return_only: no transition has a positive Monte-Carlo return")
    else:
        keep = np.arange(len(ds))

    def t(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)

    return OfflineData(
        obs=t(n(ds.observations)), act=t(act), rew=t(rew), next_obs=t(n(ds.next_observations)), next_act=t(next_act),
        not_done=t(1.0 - ends.astype(np.float32)), mc_return=None if mc is None else t(mc),
        raw_obs=t(ds.observations), raw_next_obs=t(ds.next_observations), bc_index=t(keep, torch.long),
        obs_mean=t(n.mean), obs_std=t(n.std), normalizer=norm, reward_fn=rt,
    )


def expand_members(x: torch.Tensor, n: int) -> torch.Tensor:
    """A seed's rows for each of its n members: (S, B, ...) -> (S·n, B, ...)."""
    return x.unsqueeze(1).expand(x.shape[0], n, *x.shape[1:]).reshape(x.shape[0] * n, *x.shape[1:])


@torch.no_grad()
def copy_members(dst: nn.Module, src: nn.Module, mask: torch.Tensor) -> None:
    """dst's members where mask (M,) is True become src's; parameters and buffers with M leading rows."""
    for pd, ps in zip(dst.parameters(), src.parameters()):
        if pd.shape[0] == mask.shape[0]:
            pd.copy_(torch.where(mask.view(-1, *([1] * (pd.dim() - 1))), ps, pd))


# ======================================================================================================================
# 1. Value learning (S seeds)
# ======================================================================================================================
class ValueLearner(nn.Module):
    """V and Q of the behaviour data for S seeds: the IQL path (expectile V, twin Q) or the MC path (MC V, SARSA Q).
    PyTorch's default init (critic.py uses nn.Linear); every tensor with the seed axis first."""

    def __init__(self, cfg: UniO4Config, obs_dim: int, act_dim: int, seeds: Sequence[int]) -> None:
        super().__init__()
        self.method, self.omega, self.discount, self.tau = cfg.value_method, cfg.omega, cfg.discount, cfg.tau
        self.target_every, self.members = cfg.target_every, len(seeds)
        n = 2 if cfg.value_method == "iql" else 1
        self.q = TwinQ(obs_dim, act_dim, member_generators(seeds, "uni_o4/q"), cfg.q_hidden, cfg.q_depth, n=n)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = ValueNet(obs_dim, member_generators(seeds, "uni_o4/v"), cfg.v_hidden, cfg.v_depth)
        self.q_opt = adam(self.q.parameters(), cfg.critic_lr)
        self.v_opt = adam(self.v.parameters(), cfg.value_lr)
        self.updates = 0

    def q_value(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """min_k Q_k(s, a) (the Q that AM-Q and the advantage use): (S, B)."""
        return self.q(obs, act)

    def advantage(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """min_k Q_k(s, a) − V(s): obs (S, B, d) with act (S, B, a) -> (S, B), or K actions per state act
        (S, B, K, a) -> (S, B, K) (V once per state)."""
        v = self.v(obs)
        return self.q(obs, act) - (v.unsqueeze(-1) if act.dim() == 4 else v)

    def update(self, data: OfflineData, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step of every seed on its rows idx (S, B); metrics (S,)."""
        s, a, r, s2, nd = data.obs[idx], data.act[idx], data.rew[idx], data.next_obs[idx], data.not_done[idx]
        if self.method == "iql":  # critic.py IQL_Q_V.update: V first, then Q against the updated V
            with torch.no_grad():
                target_q = self.q_target(s, a)
            u = target_q - self.v(s)
            v_loss = mean_per_member(torch.where(u > 0, self.omega, 1.0 - self.omega) * u.square())
            self._step(self.v_opt, v_loss)
            with torch.no_grad():
                target = r + self.discount * nd * self.v(s2)
        else:  # ValueLearner (MC regression) + QSarsaLearner
            v_loss = mean_per_member((self.v(s) - data.mc_return[idx]).square())
            self._step(self.v_opt, v_loss)
            with torch.no_grad():
                target = r + self.discount * nd * self.q_target(s2, data.next_act[idx])
        q = self.q.all(s, a)  # (S, n, B)
        q_loss = (q - target.unsqueeze(1)).square().mean(-1).sum(1)  # Σ over the twins of their MSE
        self._step(self.q_opt, q_loss)
        self.updates += 1
        if self.updates % self.target_every == 0:
            soft_update(self.q_target, self.q, self.tau)
        return {"v_loss": v_loss.detach(), "q_loss": q_loss.detach(), "q_mean": mean_per_member(q.detach())}

    @staticmethod
    def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()


def critic_state(critic: ValueLearner) -> dict[str, Any]:
    """What the critic stage caches (all seeds of the module; split_members per seed)."""
    return {"q": critic.q.state_dict(), "v": critic.v.state_dict()}


def load_critic_state(critic: ValueLearner, state: dict[str, Any]) -> ValueLearner:
    """Put a critic_state() into `critic` (the target Q too); returns it."""
    critic.q.load_state_dict(state["q"])
    critic.q_target.load_state_dict(state["q"])
    critic.v.load_state_dict(state["v"])
    return critic


def iql_critic_state(path: str | Path) -> dict[str, Any]:
    """The twin Q and V of an IQL run's checkpoint.pt (baselines/iql.py) as one seed's critic_state (H1)."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    agent = ck.get("agent", {}) if isinstance(ck, dict) else {}
    if "q" not in agent or "value" not in agent:
        raise ValueError(f"{path}: not an IQL checkpoint (no agent q and value)")
    return {"q": agent["q"], "v": agent["value"]}


# ======================================================================================================================
# 2. Ensemble behaviour cloning with a disagreement penalty (S seeds × N members)
# ======================================================================================================================
def make_policy(cfg: UniO4Config, obs_dim: int, act_dim: int, seeds: Sequence[int], copies: int | None = None,
                stream: str = "uni_o4/bc") -> BoundedGaussianActor:
    """N Gaussian policies per seed (net.py GaussPolicyMLP: orthogonal init with gain 1, tanh-ended, log σ in
    (−5, 0)); rows s·N … s·N + N − 1 are seed s's members."""
    return BoundedGaussianActor(obs_dim, act_dim, member_generators(seeds, stream), cfg.pi_hidden, cfg.pi_depth,
                                copies=cfg.n_policies if copies is None else copies, log_std_range=LOG_STD_RANGE,
                                init="orthogonal", hidden_gain=1.0, out_gain=1.0, activation=cfg.pi_activation)


def gauss_kl(mu_p: torch.Tensor, ls_p: torch.Tensor, mu_q: torch.Tensor, ls_q: torch.Tensor) -> torch.Tensor:
    """KL(N(μ_p, e^{2 ls_p}) ‖ N(μ_q, e^{2 ls_q})) summed over the last dim."""
    var_p, var_q = (2 * ls_p).exp(), (2 * ls_q).exp()
    return (ls_q - ls_p + (var_p + (mu_p - mu_q).square()) / (2 * var_q) - 0.5).sum(-1)


def bc_loss(policy: BoundedGaussianActor, obs: torch.Tensor, act: torch.Tensor, alpha: float, mode: str,
            kl_cap: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per seed Σ_i E_B[ −log π^i(a|s) − α·D_i ] over its N members, on the seed's batch obs (S, B, d), act (S, B, a).

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
    Returns (loss (S,), metrics (S,) incl. mean pairwise KL and mean-action distance between a seed's members).
    """
    s, b = obs.shape[:2]
    n = policy.copies
    mu, log_std = (x.view(s, n, b, -1) for x in policy.mean_log_std(expand_members(obs, n)))  # (S, N, B, A)
    logp = gaussian_log_prob(act.unsqueeze(1), mu, log_std)  # (S, N, B)
    eye = torch.eye(n, dtype=torch.bool, device=logp.device)
    with torch.no_grad():  # [s, i, j, b]: member j's log-likelihood, for j ≠ i
        others = logp.detach().unsqueeze(1).expand(s, n, n, b).masked_fill(eye.view(1, n, n, 1), -math.inf)
        kl_all = gauss_kl(mu.unsqueeze(2), log_std.unsqueeze(2), mu.unsqueeze(1), log_std.unsqueeze(1))  # (S,N,N,B)
        off = (~eye).float().view(1, n, n, 1) / max(n * (n - 1) * b, 1)  # mean over ordered pairs i ≠ j
        pair_kl = (kl_all * off).sum((1, 2, 3))
        pair_dist = ((mu.unsqueeze(2) - mu.unsqueeze(1)).norm(dim=-1) * off).sum((1, 2, 3))
    if mode == "none" or n == 1 or alpha == 0.0:
        reg = torch.zeros_like(logp)
    elif mode == "official":
        reg = logp - others.max(2).values
    elif mode == "working":
        j_star = others.argmax(2).unsqueeze(-1).expand_as(mu)  # (S, N, B, A)
        mu_j = torch.gather(mu.detach(), 1, j_star)
        ls_j = torch.gather(log_std.detach(), 1, j_star)
        reg = gauss_kl(mu, log_std, mu_j, ls_j).clamp(max=kl_cap)
    else:
        raise ValueError(f"unknown bc_disagreement {mode!r}")
    nll = -logp.mean(-1)  # (S, N)
    loss = (nll - alpha * reg.mean(-1)).sum(1)
    return loss, {"bc_nll": nll.mean(1).detach(), "bc_reg": reg.mean((1, 2)).detach(), "pair_kl": pair_kl,
                  "pair_action_dist": pair_dist}


class BCEnsemble:
    """The S × N policies and one Adam over their weights (elementwise, so = one Adam per member)."""

    def __init__(self, policy: BoundedGaussianActor, cfg: UniO4Config) -> None:
        self.policy, self.cfg = policy, cfg
        self.opt = adam(policy.parameters(), cfg.bc_lr)

    def update(self, obs: torch.Tensor, act: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step on the seeds' batches (S, B, ·); metrics (S,)."""
        loss, metrics = bc_loss(self.policy, obs, act, self.cfg.bc_alpha, self.cfg.bc_disagreement,
                                self.cfg.bc_kl_cap)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.opt.step()
        return metrics


# ======================================================================================================================
# 3. Dynamics-model ensemble for AM-Q only (S seeds × 7 members)
# ======================================================================================================================
def make_dynamics(cfg: UniO4Config, obs_dim: int, act_dim: int, seeds: Sequence[int]) -> ProbabilisticEnsemble:
    """p(Δs, r | s, a) with `dyn_members` members per seed (transition_model/: Swish, trunc-normal init)."""
    return ProbabilisticEnsemble(obs_dim + act_dim, obs_dim + 1, member_generators(seeds, "uni_o4/dynamics"),
                                 copies=cfg.dyn_members, elites=cfg.dyn_elites, hidden_dim=cfg.dyn_hidden[0],
                                 n_hidden=len(cfg.dyn_hidden))


def dynamics_loss(model: ProbabilisticEnsemble, x: torch.Tensor, y: torch.Tensor, weight_decay: Sequence[float],
                  logvar_coef: float) -> torch.Tensor:
    """Per seed: Gaussian NLL (mean over batch and dims, summed over members) + per-layer weight decay + the
    log-variance bounds' penalty (ensemble_dynamics.py). x (S, k, B, in), y (S, k, B, out) -> (S,)."""
    s = x.shape[0]
    mean, logvar = model(x)
    nll = (((mean - y).square() * (-logvar).exp()).mean((2, 3)) + logvar.mean((2, 3))).sum(1)
    decay = sum(wd * 0.5 * layer.weight.reshape(s, -1).square().sum(1)
                for wd, layer in zip(weight_decay, model.net.layers))
    bounds = model.max_logvar[:, :model.out_dim].sum(1) - model.min_logvar[:, :model.out_dim].sum(1)
    return nll + decay + logvar_coef * bounds


def _row_params(model: ProbabilisticEnsemble) -> list[torch.Tensor]:
    """The parameters with one row per member (S·k): the layers' weights and biases."""
    return [p for layer in model.net.layers for p in (layer.weight_store, layer.bias_store)]


def train_dynamics(model: ProbabilisticEnsemble, inputs: torch.Tensor, targets: torch.Tensor, cfg: UniO4Config,
                   rng: MemberRNG, log: MetricLog | None = None) -> list[dict[str, Any]]:
    """ensemble_dynamics.py train for every seed: its own holdout split and bootstrap rows, holdout early stopping
    (>1 % rule), the best weights of each member, elites. A seed that stops keeps computing in the pack (its rows are
    thrown away: its best weights were saved), so its result is the one it gets alone. One info dict per seed."""
    device, s, k = inputs.device, model.seeds, model.copies
    n = inputs.shape[0]
    n_hold = min(int(n * cfg.dyn_holdout_ratio), cfg.dyn_holdout_max)
    perm = rng.bits(n).argsort(dim=-1, stable=True)  # (S, n): each seed's own split
    hold, train = perm[:, :n_hold], perm[:, n_hold:]
    n_tr = train.shape[1]
    stats = [(inputs[train[i]].mean(0), inputs[train[i]].std(0, unbiased=False)) for i in range(s)]
    model.set_input_stats(torch.stack([m for m, _ in stats]), torch.stack([sd for _, sd in stats]))
    x_ho = inputs[hold].unsqueeze(1).expand(s, k, n_hold, -1)
    y_ho = targets[hold].unsqueeze(1).expand(s, k, n_hold, -1)
    opt = adam(model.parameters(), cfg.dyn_lr)
    boot = rng.randint(n_tr, k, n_tr)  # (S, k, n_tr): bootstrap rows of every member
    best = torch.full((s, k), math.inf)
    saved = [p.detach().clone() for p in _row_params(model)]
    running = [True] * s
    epochs, since, updates = [0] * s, [0] * s, [0] * s
    total = 0
    while any(running) and total < cfg.dyn_max_updates:
        loss_sum, n_batches = torch.zeros(s, device=device), 0
        for b in range(0, n_tr, cfg.dyn_batch):
            rows = train.gather(1, boot[:, :, b:b + cfg.dyn_batch].reshape(s, -1)).view(s, k, -1)
            loss = dynamics_loss(model, inputs[rows], targets[rows], cfg.dyn_weight_decay, cfg.dyn_logvar_coef)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            loss_sum += loss.detach()
            n_batches += 1
            total += 1
            if total >= cfg.dyn_max_updates:
                break
        boot = torch.gather(boot, 2, rng.bits(k, n_tr).argsort(dim=-1, stable=True))
        with torch.no_grad():
            new = (model(x_ho)[0] - y_ho).square().mean((2, 3)).cpu()  # (S, k); one host sync per epoch
        rows_log = []
        for i in range(s):
            if not running[i]:
                continue
            epochs[i] += 1
            updates[i] += n_batches
            better = torch.where(torch.isfinite(best[i]), (best[i] - new[i]) / best[i] > 0.01, True)
            better &= torch.isfinite(new[i])
            best[i] = torch.where(better, new[i], best[i])
            if bool(better.any()):
                mask = torch.zeros(s * k, dtype=torch.bool, device=device)
                mask[i * k:(i + 1) * k] = better.to(device)
                with torch.no_grad():
                    for sv, p in zip(saved, _row_params(model)):
                        sv.copy_(torch.where(mask.view(-1, *([1] * (p.dim() - 1))), p, sv))
                since[i] = 0
            else:
                since[i] += 1
            rows_log.append(i)
            if (since[i] >= cfg.dyn_patience or epochs[i] >= cfg.dyn_max_epochs or not torch.isfinite(new[i]).all()
                    or total >= cfg.dyn_max_updates):
                running[i] = False
        if log is not None:  # one row per epoch of each seed still fitting: mean train loss, holdout MSE of its elites
            elite = torch.sort(new, dim=1).values[:, :cfg.dyn_elites].mean(1)
            log.add({"dyn_loss": loss_sum / max(n_batches, 1), "dyn_holdout_mse": elite.to(device)})
            log.flush_members(max(epochs), "offline", quiet=False, active=[i in rows_log for i in range(s)])
    with torch.no_grad():
        for sv, p in zip(saved, _row_params(model)):
            p.copy_(sv)
    elites = torch.argsort(best, dim=1, stable=True)[:, :cfg.dyn_elites]
    model.elites.copy_(elites.to(device))
    return [{"epochs": epochs[i], "updates": updates[i], "holdout_mse": best[i].tolist(),
             "elites": elites[i].tolist(), "elite_holdout_mse": float(best[i][elites[i]].mean())} for i in range(s)]


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
# 4. Multi-step policy ensemble optimisation, gated by AM-Q (S seeds × N members)
# ======================================================================================================================
AMQ_DRAWS_PER_STEP = 2  # random draws of one model step (ProbabilisticEnsemble.sample: noise, elite choice)


@torch.no_grad()
def am_q(policy: Any, q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], dynamics: ProbabilisticEnsemble,
         start_raw: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor], horizon: int,
         done_fn: Callable[[torch.Tensor], torch.Tensor], rng: MemberRNG, members: int) -> torch.Tensor:
    """AM-Q of every member of every seed: mean of Q(s_t, π(s_t)) over all (t, rollout) pairs visited in the model.

    dynamics_eval.py rollout: deterministic policy (`policy.act` on (S·N, b, d) states, N = members), start states
    start_raw (S, b, d) from the dataset, model steps on raw states, a rollout stops at the first terminal s' (its
    last pair still counts). The official early exit when every rollout ended is checked every 100 steps; the
    stream then moves on as if all `horizon` steps had been drawn, so a seed's next query does not depend on when
    its pack stopped. Returns (S, N).
    """
    s, b, d = start_raw.shape
    n = members
    counter = rng.counter.clone()
    obs = start_raw.unsqueeze(1).expand(s, n, b, d).reshape(s, n * b, d)
    alive = torch.ones(s, n * b, dtype=torch.bool, device=obs.device)
    q_sum = torch.zeros(s, n, device=obs.device)
    count = torch.zeros(s, n, device=obs.device)
    for t in range(horizon):
        x = normalize(obs)
        a = policy.act(x.view(s * n, b, d)).view(s, n * b, -1)  # each member acts on its own rollouts
        q = q_fn(x, a)
        w = alive.float()
        q_sum += (q * w).view(s, n, b).sum(-1)
        count += w.view(s, n, b).sum(-1)
        nxt = obs + dynamics.sample(torch.cat([obs, a], -1), rng)[..., :-1]
        alive = alive & ~done_fn(nxt.reshape(s * n * b, d)).view(s, n * b)
        obs = torch.where(alive.unsqueeze(-1), nxt, obs)  # frozen once done (no NaN from diverging model states)
        if (t + 1) % 100 == 0 and not bool(alive.any()):  # the official early exit; a host sync every 100 steps
            break
    rng.counter.copy_(counter + AMQ_DRAWS_PER_STEP * horizon)
    return q_sum / count.clamp(min=1.0)


def ope_gate(scores: torch.Tensor, best: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The replacement rule: a member improves iff its AM-Q beats its best so far. Returns (mask, new best)."""
    improved = scores > best
    return improved, torch.where(improved, scores, best)


def normalize_advantage(adv: torch.Tensor, omega: float | None = None) -> torch.Tensor:
    """(A − mean)/(std + 1e-10) per member over the batch; on the MC path then ω·A⁺ and (1 − ω)·A⁻ (abppo.py)."""
    adv = (adv - adv.mean(-1, keepdim=True)) / (adv.std(-1, keepdim=True) + ADV_EPS)
    if omega is not None and omega != 0.5:
        adv = torch.where(adv > 0, omega, 1.0 - omega) * adv
    return adv


class Improver:
    """Per member: PPO-clip on dataset states against its behaviour policy π_k (pi_old), replaced only by the gate."""

    def __init__(self, policy: BoundedGaussianActor, critic: Any, cfg: UniO4Config, seeds: Sequence[int]) -> None:
        self.pi, self.critic, self.cfg = policy, critic, cfg
        self.seeds, self.n = list(seeds), policy.copies
        self.pi_old = copy.deepcopy(policy).requires_grad_(False)
        self.opt = adam(policy.parameters(), cfg.improve_lr)
        self.rng = MemberRNG(seeds, "uni_o4/improve", next(policy.parameters()).device)
        self.best: torch.Tensor | None = None  # (S, N) best AM-Q of every member so far (initially the BC policies')
        self.replacements = torch.zeros(len(self.seeds), self.n, dtype=torch.long,
                                        device=next(policy.parameters()).device)

    def schedule(self, step: int) -> tuple[float, float]:
        """(lr, ε) at improvement step `step`: lr decays linearly to 0; ε only over the first clip_decay_steps."""
        frac = step / max(self.cfg.improve_steps, 1)
        eps = self.cfg.clip_ratio * (1.0 - min(step, self.cfg.clip_decay_steps) / max(self.cfg.improve_steps, 1))
        return self.cfg.improve_lr * (1.0 - frac), eps

    def update(self, obs: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """One step of every member on its seed's dataset states obs (S, B, d); metrics (S,)."""
        lr, eps = self.schedule(step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        s, b = obs.shape[:2]
        n = self.n
        x = expand_members(obs, n)  # (S·N, B, d)
        with torch.no_grad():
            mean_old, ls_old = self.pi_old.mean_log_std(x)
            a = mean_old + ls_old.exp() * self.rng.randn(n, b, mean_old.shape[-1]).view_as(mean_old)  # a ~ π_k(·|s)
            if self.cfg.clip_actions:
                a = a.clamp(-(1.0 - 1e-5), 1.0 - 1e-5)
            logp_old = gaussian_log_prob(a, mean_old, ls_old)
            q_a = a.clamp(-1.0, 1.0) if self.cfg.q_action_clip else a  # Q never saw |a| > 1 in the data
            per_state = q_a.view(s, n, b, -1).transpose(1, 2)  # (S, B, N, a): the N members' actions at each state
            raw_adv = self.critic.advantage(obs, per_state).transpose(1, 2).contiguous().view(s * n, b)
            adv = normalize_advantage(raw_adv, self.cfg.omega if self.critic.method == "mc_sarsa" else None)
        mean, log_std = self.pi.mean_log_std(x)
        logp = gaussian_log_prob(a, mean, log_std)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1).mean(-1)
        loss = ppo_loss(logp, logp_old, adv, eps) - self.cfg.entropy_weight * entropy  # (S·N,)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        gn = clip_grad_norm_per_member(self.pi, self.cfg.grad_clip, s * n)
        self.opt.step()
        with torch.no_grad():
            logr = (logp.detach() - logp_old).view(s, -1)
            ratio = logr.exp()
            return {"improve_loss": loss.detach().view(s, n).mean(1), "ratio": ratio.mean(1),
                    "clipfrac": ((ratio - 1).abs() > eps).float().mean(1), "approx_kl": ((ratio - 1) - logr).mean(1),
                    "adv_raw": raw_adv.view(s, -1).mean(1),
                    "out_of_range": (a.abs() > 1.0).float().view(s, -1).mean(1),  # sampled actions outside the box
                    "grad_norm": gn.view(s, n).mean(1), "lr": torch.full((s,), lr, device=obs.device),
                    "clip": torch.full((s,), eps, device=obs.device)}

    def gate(self, scores: torch.Tensor) -> torch.Tensor:
        """Apply the AM-Q gate to scores (S, N): improved members copy π into π_k (`gate never`: none does). Returns
        the mask (S, N) (no host sync)."""
        if self.best is None:
            self.best = scores.clone()
            return torch.zeros_like(scores, dtype=torch.bool)
        improved, self.best = ope_gate(scores, self.best)
        if self.cfg.gate == "never":
            improved = torch.zeros_like(improved)
        copy_members(self.pi_old, self.pi, improved.reshape(-1))
        self.replacements += improved.long()
        return improved

    def state_dict(self) -> dict[str, Any]:
        """The stage's state for a partial checkpoint (member axis first)."""
        return {"pi": self.pi.state_dict(), "pi_old": self.pi_old.state_dict(), "opt": self.opt.state_dict(),
                "best": self.best, "replacements": self.replacements, "rng": self.rng.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict()."""
        self.pi.load_state_dict(state["pi"])
        self.pi_old.load_state_dict(state["pi_old"])
        self.opt.load_state_dict(state["opt"])
        self.best, self.replacements = state["best"], state["replacements"]
        self.rng.load_state_dict(state["rng"])


# ======================================================================================================================
# Stage cache: artefacts keyed by a hash of the fields that determine them, one cache per seed
# ======================================================================================================================
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "data": ("dataset", "env", "seed", "normalize_states", "obs_norm_eps", "reward_kind", "clip_actions",
             "bootstrap_timeouts", "discount"),
    "critic": ("value_method", "critic_steps", "critic_batch", "critic_lr", "value_lr", "q_hidden", "q_depth",
               "v_hidden", "v_depth", "omega", "tau", "target_every", "critic_from"),
    "dynamics": ("dyn_members", "dyn_elites", "dyn_hidden", "dyn_weight_decay", "dyn_lr", "dyn_batch",
                 "dyn_holdout_ratio", "dyn_holdout_max", "dyn_patience", "dyn_max_epochs", "dyn_max_updates",
                 "dyn_logvar_coef"),
    "bc": ("bc_positive_return_only", "n_policies", "bc_steps", "bc_batch", "bc_lr", "pi_hidden", "pi_depth",
           "pi_activation", "bc_alpha", "bc_disagreement", "bc_kl_cap"),
    "improve": ("improve_steps", "improve_batch", "improve_lr", "clip_ratio", "clip_decay_steps", "entropy_weight",
                "grad_clip", "ope_every", "ope_horizon", "ope_batch", "final_policy", "q_action_clip", "gate"),
}
STAGE_DEPENDS = {"critic": ("data", "critic"), "dynamics": ("data", "dynamics"), "bc": ("data", "bc"),
                 "improve": ("data", "critic", "dynamics", "bc", "improve")}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_fields(cfg: UniO4Config, stage: str) -> dict[str, Any]:
    """The config fields a stage depends on (its own and its inputs'), with files as absolute paths."""
    fields = {f: getattr(cfg, f) for g in STAGE_DEPENDS[stage] for f in STAGE_FIELDS[g]}
    for f in ("dataset", "critic_from"):
        if f in fields and fields[f] and os.path.exists(fields[f]):
            fields[f] = os.path.abspath(fields[f])
    return fields


# The stage keys hash renamed fields under their old names, so caches written before the renames are still found.
KEY_NAMES = {new: old for old, new in UniO4Config.RENAMED.items()}


def stage_keys(cfg: UniO4Config) -> dict[str, str]:
    """Key of each cached stage of one seed (cfg.seed): a hash of the config fields it depends on."""
    keys = {}
    for stage in STAGE_DEPENDS:
        fields = {KEY_NAMES.get(k, k): v for k, v in stage_fields(cfg, stage).items()}
        keys[stage] = f"{stage}-{_hash({'v': CACHE_VERSION, 'stage': stage, **fields})}"
    return keys


class StageCache:
    """`<seed dir>/cache/<stage>-<hash>.pt` ({"state": the seed's module state, "info": JSON}), written atomically,
    loaded with weights_only=True."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root, self.enabled = root, enabled
        self.hits: list[str] = []

    def path(self, key: str) -> Path:
        """The file of a key."""
        return self.root / f"{key}.pt"

    def load(self, key: str, device: torch.device) -> dict[str, Any] | None:
        """The cached state of `key`, or None."""
        p = self.path(key)
        if not self.enabled or not p.exists():
            return None
        state = torch.load(p, map_location=device, weights_only=True)
        self.hits.append(key)
        print(f"[{ALGORITHM}] reusing cached {key} ({p})", flush=True)
        return state

    def save(self, key: str, state: dict[str, Any]) -> None:
        """Store `state` under `key` (atomically)."""
        if not self.enabled:
            return
        atomic_save(self.path(key), lambda f: torch.save(state, f))

    def partial(self, key: str) -> Checkpointer:
        """The checkpoint of an unfinished stage (`<key>.partial/checkpoint.pt`)."""
        return Checkpointer(self.root / f"{key}.partial")


# ======================================================================================================================
# Training: the stages in order, each for a pack of seeds
# ======================================================================================================================
def stage_entries(state: dict[str, Any], infos: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A packed module state as one cache entry per seed: {"state": that seed's part, "info": JSON of its info}."""
    return [{"state": part, "info": json.dumps(info)} for part, info in zip(split_members(state, len(infos)), infos)]


def load_entries(module: Any, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Inverse of stage_entries: the seeds' states into one packed module (load_state_dict); returns their infos."""
    module.load_state_dict(join_members([e["state"] for e in entries]))
    return [json.loads(e["info"]) for e in entries]


class _AllDiverged(Exception):
    """Every seed of the run diverged: nothing left to train."""


@dataclass
class Pack:
    """The seeds a stage trains together, their run directories and records (a seed is active while its record is
    'running')."""

    seeds: list[int]
    dirs: list[Path]
    recorders: list[RunRecorder]

    def __len__(self) -> int:
        return len(self.seeds)

    def active(self) -> list[bool]:
        """Per seed: not diverged."""
        return [r.status == "running" for r in self.recorders]

    def subset(self, idx: Sequence[int]) -> Pack:
        """The seeds idx of this pack."""
        return Pack([self.seeds[i] for i in idx], [self.dirs[i] for i in idx], [self.recorders[i] for i in idx])

    def diverge(self, i: int, why: str) -> None:
        """Record seed i diverged (the others go on); stop when none is left."""
        if self.recorders[i].status == "running":
            print(f"[{ALGORITHM}] seed {self.seeds[i]} diverged: {why}", flush=True)
            self.recorders[i].finish("diverged", f"diverged: {why}")

    def check(self, rows: Sequence[dict[str, float]], where: str) -> None:
        """Diverge the active seeds whose metric row holds NaN/inf."""
        for i, row in enumerate(rows):
            bad = [k for k, v in row.items() if not math.isfinite(v)]
            if bad and self.recorders[i].status == "running":
                self.diverge(i, f"{', '.join(bad)} became NaN/inf {where}")


def fit_critic(cfg: UniO4Config, data: OfflineData, pack: Pack, device: torch.device,
               on_flush: Callable[[int, ValueLearner], None] | None = None) -> ValueLearner:
    """Stage 1 for the pack's seeds; `on_flush(step, critic)` runs at every metric flush (diagnostics that watch
    the critic learn)."""
    critic = ValueLearner(cfg, data.obs.shape[1], data.act.shape[1], pack.seeds).to(device)
    rng = MemberRNG(pack.seeds, "uni_o4/critic-batches", device)
    log = MetricLog([d / "metrics_critic.csv" for d in pack.dirs], cfg.critic_steps, f"{ALGORITHM} critic")
    for t in range(cfg.critic_steps):
        log.add(critic.update(data, rng.randint(len(data), cfg.critic_batch)))
        if (t + 1) % cfg.log_every == 0 or t + 1 == cfg.critic_steps:
            pack.check(log.flush_members(t + 1, "offline", active=pack.active()), f"at critic step {t + 1}")
            if on_flush is not None:
                on_flush(t + 1, critic)
    return critic


def fit_bc(cfg: UniO4Config, data: OfflineData, pack: Pack, device: torch.device
           ) -> tuple[BoundedGaussianActor, list[dict[str, float]]]:
    """Stage 2 for the pack's seeds: the S × N policies and each seed's last metric row."""
    policy = make_policy(cfg, data.obs.shape[1], data.act.shape[1], pack.seeds).to(device)
    bc = BCEnsemble(policy, cfg)
    rng = MemberRNG(pack.seeds, "uni_o4/bc-batches", device)
    log = MetricLog([d / "metrics_bc.csv" for d in pack.dirs], cfg.critic_steps + cfg.bc_steps, f"{ALGORITHM} bc")
    last: list[dict[str, float]] = [{} for _ in pack.seeds]
    for t in range(cfg.bc_steps):
        idx = data.bc_index[rng.randint(len(data.bc_index), cfg.bc_batch)]
        log.add(bc.update(data.obs[idx], data.act[idx]))
        if (t + 1) % cfg.log_every == 0 or t + 1 == cfg.bc_steps:
            last = log.flush_members(cfg.critic_steps + t + 1, "offline", active=pack.active())
            pack.check(last, f"at BC step {t + 1}")
    return policy, last


def fit_dynamics(cfg: UniO4Config, data: OfflineData, pack: Pack, device: torch.device
                 ) -> tuple[ProbabilisticEnsemble, list[dict[str, Any]]]:
    """Stage 3 for the pack's seeds: the model of (Δs, r) on raw states and each seed's fit summary."""
    model = make_dynamics(cfg, data.obs.shape[1], data.act.shape[1], pack.seeds).to(device)
    inputs = torch.cat([data.raw_obs, data.act], -1)
    targets = torch.cat([data.raw_next_obs - data.raw_obs, data.rew.unsqueeze(-1)], -1)
    log = MetricLog([d / "metrics_dynamics.csv" for d in pack.dirs], cfg.dyn_max_epochs, f"{ALGORITHM} dynamics")
    infos = train_dynamics(model, inputs, targets, cfg, MemberRNG(pack.seeds, "uni_o4/dynamics", device), log)
    for i, info in enumerate(infos):
        if not math.isfinite(info["elite_holdout_mse"]):
            pack.diverge(i, "the dynamics holdout loss became NaN/inf")
    return model, infos


def improve(cfg: UniO4Config, data: OfflineData, critic: ValueLearner, dynamics: ProbabilisticEnsemble,
            policy: BoundedGaussianActor, done_fn: Callable, pack: Pack, device: torch.device,
            partials: Sequence[Checkpointer],
            on_eval: Callable[[BoundedGaussianActor, int, torch.Tensor], None] | None = None) -> dict[str, Any]:
    """Stage 4 for the pack's seeds: multi-step improvement of every member; returns the final policies (S·N),
    the AM-Q scores (S, N) of BC, of the final and of the best policies, replacements (S, N) and each seed's AM-Q
    history. `partials` (one per seed) checkpoint the stage every `checkpoint_every` steps (resumed with --resume)."""
    n = policy.copies
    imp = Improver(policy, critic, cfg, pack.seeds)
    batch_rng = MemberRNG(pack.seeds, "uni_o4/improve-batches", device)
    ope_rng = MemberRNG(pack.seeds, "uni_o4/amq", device)
    critic.requires_grad_(False)
    dynamics.requires_grad_(False)
    offset = cfg.critic_steps + cfg.bc_steps
    log = MetricLog([d / "metrics_improve.csv" for d in pack.dirs], offset + cfg.improve_steps, f"{ALGORITHM} improve")
    ope_log = MetricLog([d / "metrics_ope.csv" for d in pack.dirs], offset + cfg.improve_steps, f"{ALGORITHM} AM-Q")
    history: list[list[list[float]]] = [[] for _ in pack.seeds]

    def query() -> torch.Tensor:
        start = data.raw_obs[ope_rng.randint(len(data), cfg.ope_batch)]
        return am_q(imp.pi, critic.q_value, dynamics, start, data.normalize, cfg.ope_horizon, done_fn, ope_rng, n)

    def record(scores: torch.Tensor, replaced: torch.Tensor, step: int) -> None:
        for h, row in zip(history, scores.cpu().tolist()):
            h.append(row)
        ope_log.add({"ope_mean": scores.mean(1), "ope_best_mean": imp.best.mean(1), "replaced": replaced.sum(1).float(),
                     **{f"ope_{k}": scores[:, k] for k in range(n)}})
        ope_log.flush_members(step, "offline", quiet=True, active=pack.active())  # one row per AM-Q query
        for i, row in enumerate(history):
            if not all(math.isfinite(v) for v in row[-1]):
                pack.diverge(i, f"AM-Q score became NaN/inf at improvement step {step - offset}")

    start_step = 0
    if cfg.resume:
        recover_pack(partials)
        loaded = [ck.load(device) for ck in partials]
        at = {None if st is None else int(st["step"]) for st in loaded}
        if len(at) == 1 and None not in at:
            imp.load_state_dict(join_members([st["improver"] for st in loaded]))
            batch_rng.load_state_dict(join_members([st["batch_rng"] for st in loaded]))
            ope_rng.load_state_dict(join_members([st["ope_rng"] for st in loaded]))
            history = [[list(h) for h in st["history"]] for st in loaded]
            start_step = at.pop()
            print(f"[{ALGORITHM}] resumed the improvement stage at step {start_step}", flush=True)
        elif at != {None}:
            print(f"[{ALGORITHM}] the seeds' improvement checkpoints differ ({sorted(at, key=str)}): the stage starts "
                  "again", flush=True)
    if start_step == 0:
        bc_scores = query()
        imp.gate(bc_scores)  # the BC policies' AM-Q is every member's first 'best'
        record(bc_scores, torch.zeros_like(bc_scores), offset)
    initial = torch.tensor([h[0] for h in history], device=device)
    scores = imp.best.clone()
    last_query = 0
    for t in range(start_step, cfg.improve_steps):
        idx = batch_rng.randint(len(data), cfg.improve_batch)
        metrics = imp.update(data.obs[idx], t)
        if (t + 1) % cfg.ope_every == 0:
            scores = query()
            record(scores, imp.gate(scores), offset + t + 1)
            last_query = t + 1
        log.add(metrics)
        if (t + 1) % cfg.log_every == 0 or t + 1 == cfg.improve_steps:
            pack.check(log.flush_members(offset + t + 1, "offline", active=pack.active()),
                       f"at improvement step {t + 1}")
        if on_eval is not None and cfg.offline_eval_every and (t + 1) % cfg.offline_eval_every == 0 \
                and t + 1 < cfg.improve_steps:
            on_eval(imp.pi, offset + t + 1, scores)
        if (t + 1) % cfg.checkpoint_every == 0 and t + 1 < cfg.improve_steps:
            parts = split_members({"improver": imp.state_dict(), "batch_rng": batch_rng.state_dict(),
                                   "ope_rng": ope_rng.state_dict()}, len(pack))
            for ck in partials:
                ck.path.parent.mkdir(parents=True, exist_ok=True)
            save_pack(partials, [{**p, "history": h, "step": t + 1} for p, h in zip(parts, history)])
    if cfg.final_policy == "best":
        final, final_scores = imp.pi_old, imp.best.clone()
    else:
        final = imp.pi
        if last_query != cfg.improve_steps:
            scores = query()
            for h, row in zip(history, scores.cpu().tolist()):
                h.append(row)
        final_scores = scores
    for ck in partials:
        shutil.rmtree(ck.path.parent, ignore_errors=True)
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


def member_actor(cfg: UniO4Config, ensemble: BoundedGaussianActor, seeds: Sequence[int], chosen: Sequence[int]
                 ) -> BoundedGaussianActor:
    """One policy per seed: member chosen[s] of seed s's ensemble (a copy)."""
    actor = make_policy(cfg, ensemble.obs_dim, ensemble.act_dim, seeds, copies=1)
    rows = [s * ensemble.copies + k for s, k in enumerate(chosen)]
    actor.load_state_dict({name: t[rows] for name, t in ensemble.state_dict().items()})
    return actor.to(next(ensemble.parameters()).device)


def plain_policy_state(policy: BoundedGaussianActor, row: int) -> dict[str, torch.Tensor]:
    """Member `row` in the nn.Sequential layout of net.py's GaussPolicyMLP: net.{2i}.weight (out, in), net.{2i}.bias."""
    out = {}
    for i, layer in enumerate(policy.net.layers):
        out[f"net.{2 * i}.weight"] = layer.weight[row].detach().T.cpu().clone()
        out[f"net.{2 * i}.bias"] = layer.bias[row, 0].detach().cpu().clone()
    return out


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


def ppo_config(cfg: UniO4Config) -> PPOConfig:
    """The PPOConfig of the online phase (baselines.ppo) from this run's online_* fields."""
    return PPOConfig(
        dataset=cfg.dataset, env=cfg.env, seed=cfg.seed, seeds=tuple(cfg.seeds), out=cfg.out, budget=cfg.budget,
        device=cfg.device, resume=cfg.resume, eval_episodes=cfg.eval_episodes, log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every, online_steps=cfg.online_steps, eval_every=cfg.online_eval_every,
        num_envs=1, rollout_steps=cfg.online_rollout, minibatch_size=cfg.online_minibatch, epochs=cfg.online_epochs,
        actor_lr=cfg.online_actor_lr, critic_lr=cfg.online_critic_lr, anneal_lr=True, discount=cfg.discount,
        gae_lambda=cfg.online_gae_lambda, clip=cfg.online_clip, value_clip=cfg.online_clip,
        ent_coef=cfg.online_ent_coef, vf_coef=2.0, max_grad_norm=0.5, normalize_advantages=True,
        normalize_states=False, normalize_rewards=False, hidden=(cfg.pi_hidden,) * cfg.pi_depth,
        critic_hidden=(cfg.v_hidden,) * cfg.v_depth,
        activation=cfg.pi_activation, preset="unio4", threads=cfg.threads,
    )


def online_critic(cfg: UniO4Config, critic: ValueLearner, data: OfflineData, pack: Pack,
                  device: torch.device) -> ValueNet:
    """The PPO critic of every seed: its offline V with the output scaled to the online reward scale, or a V refit
    on MC returns (official 'number'/'dynamic' strategies: lr 1e-4, batch 512)."""
    if cfg.online_critic_init == "offline_v":
        v = copy.deepcopy(critic.v).requires_grad_(True)
        last = v.net.layers[-1]
        with torch.no_grad():  # V of rewards × c is c·V: scale the last layer
            last.weight_store.mul_(cfg.online_reward_scale)
            last.bias_store.mul_(cfg.online_reward_scale)
        return v
    v = ValueNet(data.obs.shape[1], member_generators(pack.seeds, "uni_o4/online-v"), cfg.v_hidden,
                 cfg.v_depth).to(device)
    opt = adam(v.parameters(), 1e-4)
    rng = MemberRNG(pack.seeds, "uni_o4/online-v", device)
    target = data.mc_return * cfg.online_reward_scale
    log = MetricLog(None, cfg.online_mc_steps, f"{ALGORITHM} online V refit")
    for t in range(cfg.online_mc_steps):
        idx = rng.randint(len(data), 512)
        loss = mean_per_member((v(data.obs[idx]) - target[idx]).square())
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        log.add({"mc_v_loss": loss.detach()})
        if (t + 1) % cfg.log_every == 0 or t + 1 == cfg.online_mc_steps:
            pack.check(log.flush_members(t + 1, "online", active=pack.active()), f"at V refit step {t + 1}")
    return v


# ======================================================================================================================
# The run
# ======================================================================================================================
def train(cfg: UniO4Config) -> list[dict[str, Any]]:
    """The run's seeds (--seeds, else --seed) in one process: offline stages, selection, online PPO. Writes
    summary.json, evals.csv, episodes.csv, metrics_*.csv, cache/ and policy.pt in each seed's run directory;
    returns each seed's summary (status finished, or diverged on NaN/inf)."""
    check_config(cfg)
    seeds = list(cfg.seeds) or [cfg.seed]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds repeats a seed: {','.join(map(str, seeds))}")
    dirs = run_dirs(ALGORITHM, cfg)
    configs = [dataclasses.replace(cfg, seed=s, seeds=(), out=str(d)) for s, d in zip(seeds, dirs)]
    recorders = [RunRecorder(d, ALGORITHM, cfg.dataset, s, config_dict(c), cfg.budget, resume=cfg.resume)
                 for s, d, c in zip(seeds, dirs, configs)]
    if len(seeds) > 1:
        for r in recorders:
            r.extra["pack"] = seeds

    def body() -> None:
        try:
            _train(cfg, configs, Pack(seeds, dirs, recorders))
        except _AllDiverged:
            pass

    run_recorded(ALGORITHM, recorders, body, cfg.threads)
    for r in recorders:
        if r.status == "running":
            r.finish("finished")
    return [r.summary() for r in recorders]


def _extra_all(pack: Pack, values: dict[str, Sequence[Any]] | None = None, **same: Any) -> None:
    """summary.json extras: `same` for every seed, values[k][i] for seed i."""
    for i, r in enumerate(pack.recorders):
        r.extra.update(same)
        for k, v in (values or {}).items():
            r.extra[k] = v[i]


def _train(cfg: UniO4Config, configs: list[UniO4Config], pack: Pack) -> None:
    device = pick_device(cfg.device)
    seeds = pack.seeds
    if not cfg.resume:  # a fresh run starts its metric files anew (cached stages keep no metrics of their own)
        for d in pack.dirs:
            for p in d.glob("metrics*.csv"):
                p.unlink()
    spec = dataset_spec(cfg)
    data = prepare_data(load_dataset(cfg.dataset, env_id=cfg.env), cfg, device)
    retain_freed_memory(device)
    keys = [stage_keys(c) for c in configs]
    caches = [StageCache(d / "cache", cfg.cache) for d in pack.dirs]
    od, ad, n = data.obs.shape[1], data.act.shape[1], cfg.n_policies
    timings: dict[str, float] = {}
    _extra_all(pack, {"stage_keys": keys}, dataset_transitions=len(data), bc_transitions=int(len(data.bc_index)),
               bc_disagreement=cfg.bc_disagreement, selection=cfg.selection, gate=cfg.gate,
               selection_used_online_evaluations=cfg.selection == "official", reward_scale=data.reward_fn.scale,
               reward_bias=data.reward_fn.bias, critic_from=cfg.critic_from or None)

    def alive() -> None:
        if not any(pack.active()):
            raise _AllDiverged

    def stage(name: str, fit: Callable[[Pack], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Each seed's state of a stage: from its cache, else fitted for the seeds whose cache misses it."""
        t0 = time.time()
        states = [c.load(k[name], device) for c, k in zip(caches, keys)]
        miss = [i for i, st in enumerate(states) if st is None]
        if miss:
            fitted = fit(pack.subset(miss))
            for j, i in enumerate(miss):
                states[i] = fitted[j]
                if pack.recorders[i].status == "running":
                    caches[i].save(keys[i][name], fitted[j])
        timings[f"{name}_s"] = time.time() - t0
        alive()
        return states

    # ---- 1. value learning
    def fit_critic_stage(sub: Pack) -> list[dict[str, Any]]:
        if cfg.critic_from:
            return [{"state": iql_critic_state(cfg.critic_from.format(seed=s)), "info": "{}"} for s in sub.seeds]
        return stage_entries(critic_state(fit_critic(cfg, data, sub, device)), [{}] * len(sub))

    crit_states = stage("critic", fit_critic_stage)
    critic = ValueLearner(cfg, od, ad, seeds).to(device)
    try:
        load_critic_state(critic, join_members([st["state"] for st in crit_states]))
    except RuntimeError:
        raise ValueError(f"--critic-from {cfg.critic_from}: its networks do not have this run's widths (--q-hidden "
                         f"{cfg.q_hidden} --q-depth {cfg.q_depth} --v-hidden {cfg.v_hidden} --v-depth "
                         f"{cfg.v_depth})") from None

    def module_stage(name: str, fit: Callable[[Pack], tuple[nn.Module, list[dict[str, Any]]]], module: nn.Module
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A stage whose fit returns (packed module, infos): its cache entries, loaded into `module`, and the infos."""
        def fit_entries(sub: Pack) -> list[dict[str, Any]]:
            fitted, infos = fit(sub)
            return stage_entries(fitted.state_dict(), infos)

        entries = stage(name, fit_entries)
        return entries, load_entries(module, entries)

    # ---- 3. dynamics model (trained before BC as in main.py; independent of it)
    dynamics = make_dynamics(cfg, od, ad, seeds).to(device)
    dyn_states, dyn_info = module_stage("dynamics", lambda sub: fit_dynamics(cfg, data, sub, device), dynamics)
    _extra_all(pack, {"dynamics_epochs": [d["epochs"] for d in dyn_info],
                      "dynamics_elites": [d["elites"] for d in dyn_info],
                      "dynamics_elite_holdout_mse": [d["elite_holdout_mse"] for d in dyn_info]})

    # ---- 2. ensemble BC
    bc_policy = make_policy(cfg, od, ad, seeds).to(device)
    bc_states, bc_metrics = module_stage("bc", lambda sub: fit_bc(cfg, data, sub, device), bc_policy)
    _extra_all(pack, {k: [m.get(src) for m in bc_metrics] for k, src in
                      (("bc_pair_kl", "pair_kl"), ("bc_pair_action_dist", "pair_action_dist"), ("bc_nll", "bc_nll"))})

    # offline evaluations: the run's records are rebuilt on resume unless the online phase had started
    ckpts = [Checkpointer(d) for d in pack.dirs]
    if cfg.resume:
        recover_pack(ckpts)
    phases = [st.get("phase") if (st := ck.load("cpu")) is not None else None for ck in ckpts] if cfg.resume else []
    online_started = bool(phases) and all(p == "online" for p in phases)
    if not online_started:
        for r in pack.recorders:
            r.rows = []
            r.write()
            (r.out / "episodes.csv").unlink(missing_ok=True)
    done_fn = termination_fn(spec)
    bc_end = cfg.critic_steps + cfg.bc_steps
    offline_end = bc_end + cfg.improve_steps

    def evaluate_members(sub: Pack, policy: BoundedGaussianActor, step: int, stage_name: str, ope: torch.Tensor,
                         members: Sequence[int] | None = None, code: int = 0) -> list[list[Any]]:
        """Evaluate members (default all) of every seed of `sub` in one vector env per member; per seed, per member
        the EvalResult. Evaluation k of a point `code` has the eval index code·N + k (the same alone and packed)."""
        ev = Evaluator(spec, sub.recorders, sub.seeds, cfg.eval_episodes, obs_transform=data.normalizer)
        ope_l = ope.cpu().tolist()
        out: list[list[Any]] = [[] for _ in sub.seeds]
        k_rows = policy.copies
        for k in members if members is not None else range(k_rows):
            def act(obs: np.ndarray, k: int = k) -> np.ndarray:
                x = pad_rows(torch.as_tensor(obs, dtype=torch.float32, device=device))
                a = policy.act(expand_members(x, k_rows)).view(x.shape[0], k_rows, x.shape[1], -1)
                return a[:, k, :obs.shape[1]].cpu().numpy()

            ev.index = code * max(n, 1) + k
            extras = [{"member": k, "stage": stage_name, "ope": ope_l[i][k]} for i in range(len(sub))]
            for i, res in enumerate(ev.members(act, step, "offline", 0, extras, sub.active())):
                out[i].append(res)
        return out

    # ---- 4. multi-step improvement
    def fit_improve_stage(sub: Pack) -> list[dict[str, Any]]:
        idx = [seeds.index(s) for s in sub.seeds]

        def pick(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [entries[i] for i in idx]

        sub_critic = ValueLearner(cfg, od, ad, sub.seeds).to(device)
        load_critic_state(sub_critic, join_members([e["state"] for e in pick(crit_states)]))
        sub_dyn = make_dynamics(cfg, od, ad, sub.seeds).to(device)
        load_entries(sub_dyn, pick(dyn_states))
        pol = make_policy(cfg, od, ad, sub.seeds).to(device)
        load_entries(pol, pick(bc_states))
        on_eval = None if online_started else (
            lambda p, step, o: evaluate_members(sub, p, step, "improve", o, code=step))
        partials = [caches[i].partial(keys[i]["improve"]) for i in idx]
        res = improve(cfg, data, sub_critic, sub_dyn, pol, done_fn, sub, device, partials, on_eval)
        infos = [{"ope": res["ope"][j].tolist(), "ope_bc": res["ope_bc"][j].tolist(), "best": res["best"][j].tolist(),
                  "replacements": res["replacements"][j].tolist(), "history": res["history"][j]}
                 for j in range(len(sub))]
        return stage_entries(res["policy"].state_dict(), infos)

    imp_states = stage("improve", fit_improve_stage)
    final = make_policy(cfg, od, ad, seeds).to(device)
    imp = load_entries(final, imp_states)
    _extra_all(pack, {"ope_bc": [x["ope_bc"] for x in imp], "ope_final": [x["ope"] for x in imp],
                      "ope_best": [x["best"] for x in imp], "behaviour_replacements": [x["replacements"] for x in imp],
                      "ope_queries": [len(x["history"]) for x in imp]})
    for d, x in zip(pack.dirs, imp):
        atomic_write(d / "ope_history.json", json.dumps(x["history"]))

    # ---- offline evaluations, selection
    if not online_started:
        bc_res = evaluate_members(pack, bc_policy, bc_end, "bc", torch.tensor([x["ope_bc"] for x in imp]), code=0)
        fin_res = evaluate_members(pack, final, offline_end, "improve", torch.tensor([x["ope"] for x in imp]),
                                   code=cfg.improve_steps + 1)
        _extra_all(pack, {"bc_scores": [[r.normalized_score for r in rs] for rs in bc_res],
                          "member_scores": [[r.normalized_score for r in rs] for rs in fin_res],
                          "bc_lengths": [[r.length_mean for r in rs] for rs in bc_res],
                          "member_lengths": [[r.length_mean for r in rs] for rs in fin_res]})
    env_scores = [r.extra.get("member_scores") for r in pack.recorders]
    chosen = [select_member(x["ope"], sc, cfg.selection, cfg.selection_top_k) for x, sc in zip(imp, env_scores)]
    _extra_all(pack, {"selected_member": chosen})
    actor = member_actor(cfg, final, seeds, chosen)
    if not online_started:
        ope_sel = torch.tensor([[x["ope"][k]] * max(n, 1) for x, k in zip(imp, chosen)])
        ev = Evaluator(spec, pack.recorders, seeds, cfg.eval_episodes, obs_transform=data.normalizer,
                       index=(cfg.improve_steps + 2) * max(n, 1))
        extras = [{"member": k, "stage": "selected", "ope": o[0]} for k, o in zip(chosen, ope_sel.tolist())]
        ev.members(lambda obs: actor.act(pad_rows(torch.as_tensor(obs, device=device)))[:, :obs.shape[1]].cpu().numpy(),
                   offline_end, "offline", 0, extras, pack.active())
    for r in pack.recorders:
        r.progress(offline_end, 0)
    _save_policies(pack, actor, data, cfg, chosen)

    # ---- 6. online PPO from the selected member
    if cfg.online_steps > 0:
        t0 = time.time()
        v = online_critic(cfg, critic, data, pack, device)
        rt = data.reward_fn
        online_rt = RewardTransform(rt.scale * cfg.online_reward_scale, rt.bias * cfg.online_reward_scale)
        actor.train()
        pcfg = ppo_config(cfg)
        evaluator = Evaluator(spec, pack.recorders, seeds, cfg.eval_episodes, obs_transform=data.normalizer,
                              index=(cfg.improve_steps + 3) * max(n, 1))
        results = run_ppo(pcfg, spec, PPOAgent(pcfg, actor, v, seeds),
                          recorders=[_OnlineRowsRecorder(r) for r in pack.recorders], evaluator=evaluator,
                          obs_normalizer=data.normalizer, reward_transform=online_rt, checkpointers=ckpts,
                          phase="online")
        timings["online_s"] = time.time() - t0
        _extra_all(pack, {"online_env_steps_per_s": [round(r["env_steps_per_s"], 1) for r in results],
                          "online_train_return_last10": [float(np.mean(r["episode_returns"][-10:]))
                                                         if r["episode_returns"] else None for r in results]})
        _save_policies(pack, actor, data, cfg, chosen)
        for r, res in zip(pack.recorders, results):
            r.progress(offline_end, res["env_steps"])
    _extra_all(pack, {"cache_hits": [c.hits for c in caches]},
               timings={k: round(v, 1) for k, v in timings.items()})


def _save_policies(pack: Pack, actor: BoundedGaussianActor, data: OfflineData, cfg: UniO4Config,
                   chosen: Sequence[int]) -> None:
    """policy.pt of every active seed: the selected (and, after the online phase, fine-tuned) actor in the layout
    of net.py's GaussPolicyMLP, with its architecture and the observation statistics."""
    for s, (r, k) in enumerate(zip(pack.recorders, chosen)):
        if r.status != "running":
            continue
        state = {"actor": plain_policy_state(actor, s),
                 "arch": {"obs_dim": actor.obs_dim, "act_dim": actor.act_dim, "hidden": cfg.pi_hidden,
                          "depth": cfg.pi_depth, "activation": cfg.pi_activation, "log_std_range": LOG_STD_RANGE},
                 "obs_norm": {"mean": data.obs_mean.cpu(), "std": data.obs_std.cpu()}, "member": k}
        atomic_save(r.out / "policy.pt", lambda f, state=state: torch.save(state, f))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 all finished, 3 a seed diverged)."""
    cfg = configure(UniO4Config, presets, argv, description=__doc__)
    statuses = [s["status"] for s in train(cfg)]
    return 0 if all(s == "finished" for s in statuses) else 3 if "diverged" in statuses else 1


if __name__ == "__main__":
    raise SystemExit(main())
