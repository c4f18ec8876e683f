"""FamO2O: Family Offline-to-Online RL (Wang et al., NeurIPS 2023, arXiv 2310.17966), single file, PyTorch.

FamO2O trains a *family* of policies in one network, the **universal model** π_u(a | s, β), where β is the balance
coefficient between policy improvement and policy constraint (IQL's and AWAC's inverse temperature: large β trusts
the critic, small β stays close to the data), and a **balance model** π_b(β | s) that picks β per state. The critic
side is the base algorithm's, unchanged. Names below follow the paper: "universal model", "balance model",
"balance coefficient"; the two objectives are the paper's universal-model update (advantage-weighted regression
with a state-wise β) and balance-model update (choose the β whose policy action the critic values most).

Reimplemented from the official JAX code (GitHub LeapLabTHU/FamO2O, jax_iql/: family_learner.py, family_actor.py,
family_temperature.py, family_utils.py, policy.py, family_train_finetune.py, configs/family_antmaze_finetune_config.py):

- β encoding: s ⊕ [sin β, cos β, sin(β/n^(2/6)), cos(β/n^(2/6)), sin(β/n^(4/6)), cos(β/n^(4/6))] with n = 10000,
  i.e. divisors 1, 21.544, 464.16 (family_utils.sin_cos_skill_func, d = 6, interleaved sin/cos), of the raw β.
- Universal model: 2×256 ReLU MLP on s ⊕ enc(β), Gaussian with mean tanh(·) and a state-independent learned log-std
  clipped to [−5, 2]; samples are not squashed (policy.NormalTanhPolicy, tanh_squash_distribution=False).
  Loss (IQL's AWR with a per-sample β):  L_u = −mean( min(exp(β·(Q̂(s,a) − V(s))), 100) · log π_u(a | s, β) ).
  Offline β ~ U[β_lo, β_hi] per sample; online β ~ π_b(·|s) (a sample of the balance model *before* this step's
  balance update, stop-gradient).
- Balance model: 2×256 MLP → tanh-squashed Gaussian over one scalar u (state-independent log-std clipped to
  [−10, 2]), β = (u + 1)/2·(β_hi − β_lo) + β_lo. SAC-style loss on the frozen universal model and critic:
  L_b = mean( α·log π_b(u | s) − min_i Q̂_i(s, ã) ),  β ~ π_b(s) and ã ~ π_u(· | s, β), both reparameterised
  (with independent noise: the official code happens to reuse one PRNG key for both draws).
  log π_b is the density of u (the affine map to β adds no term, as in the official code). Trained every step,
  offline included.
- Temperature α: log α learned, init α = 1, Adam 3e-4, loss α·(H(π_b) − H_target) with H_target = −0.5
  (family_temperature.update: the loss is linear in α itself, not in log α).
- Update order in one step (IQL base, family_learner._family_update_jit): V → balance model → α → universal model
  (with the new V and the old balance model) → Q → Polyak target. The balance model and the universal model's
  advantage use the *target* critic, as the official code does (IQL's own actor does so too).
- Acting: β = the balance model's deterministic output tanh(mean); online exploration samples a ~ π_u(·|s, β)
  (clipped to [−1, 1]); evaluation takes the mean action.
- Schedule: offline gradient steps, then online env steps with one gradient step per env step, one buffer holding
  the dataset and the online data (capacity 2M), uniform batches of 256; mask 0 only on true terminals
  (time-limit truncation bootstraps). Dataset actions clipped to ±(1 − 1e-5).

Base algorithms (`--base`):
- `iql` (default): the official code. V, Q and their losses are the project's IQL (baselines/iql.py: ValueFunction,
  expectile_loss, q_loss; baselines/common.py: TwinQ, soft_update), in the official FamO2O order above (the project's
  IQL itself follows CORL's order V → Q → actor with the old V). Raw states, as the official code. Two harmless
  differences: the project's q_loss averages the twins' squared errors where the official code sums them (Adam is
  insensitive to the factor 2), and V and Q keep the project's PyTorch-default init (the official code initialises
  every layer orthogonally with gain √2, which the universal and balance models here do).
- `awac`: no AWAC code was released (the paper reports AWAC+FamO2O). Our reading: β takes the role of AWAC's λ⁻¹
  (AWAC's weights exp(A/λ) become exp(β·A)); A(s,a) = min Q(s,a) − min Q(s, ã) with ã ~ π_u(·|s, β), the
  advantage of the β-member with the same β as its weight; the critic is the project's AWAC critic
  (baselines/awac.py critic_loss) evaluating the acting policy π_u(·|s', β_b(s')), β_b deterministic; the balance
  model maximises the critic AWAC's actor uses (the online Q, not a target) with the same SAC-style loss and α.
  Order: Q → balance model → α → universal model → Polyak. The universal model keeps FamO2O's tanh-mean Gaussian;
  width, depth (3×256), state normalisation and reward handling follow the project's AWAC (CORL).
- `cql`: the official jax_cql/ variant is not implemented here.

Presets (per domain; flags override):
- AntMaze: β ∈ [8, 14], expectile 0.9, 100 evaluation episodes (official config; plain IQL uses β = 10).
- Locomotion: FamO2O's locomotion hyperparameters were not released (an open issue on the official repository
  asks for them). Our choice: β ∈ [1, 5] and expectile 0.7, a range around IQL's usual β = 3 (for AWAC: λ = 1/3,
  λ⁻¹ = 3), as the official [8, 14] surrounds IQL's AntMaze β = 10.
- Adroit and Kitchen (not in the official code either): the same kind of range around the base's β (IQL Adroit:
  β 3 → [1, 5], expectile 0.8; IQL Kitchen: β 0.5 → [1/6, 5/6]; AWAC Adroit: λ 0.1 → [8, 14]).

Run records: summary.json and evals.csv (o2o.records) with extra columns beta_mean, beta_std, beta_q10, beta_q50,
beta_q90: the balance model's deterministic β over a fixed sample of dataset states at every evaluation; betas.npy
holds the final β of those states (for the histogram figure).

Command line: `python algorithms/famo2o.py --dataset local:hopper-medium --seed 0 --out DIR --budget smoke
[--base iql|awac] [--online-steps N] [--resume]` (every config field is a flag; `--help` lists them).
"""

from __future__ import annotations

import copy
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
import torch.nn.functional as F

if __package__ in (None, ""):  # `python algorithms/famo2o.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baselines import awac, iql  # noqa: E402  (the base algorithms' critic pieces)
from baselines.common import TwinQ, adam, soft_update, truncate_csv  # noqa: E402
from o2o.buffer import ReplayBuffer  # noqa: E402
from o2o.cli import RunConfig, default_out, parse_config, steps  # noqa: E402
from o2o.data import Dataset, load_dataset  # noqa: E402
from o2o.envs import make_env  # noqa: E402
from o2o.records import RunRecorder, is_finished  # noqa: E402
from o2o.registry import DatasetSpec, normalized_score  # noqa: E402
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
from o2o.transforms import (  # noqa: E402
    ObsNormalizer,
    RewardTransform,
    clip_actions,
    default_reward_kind,
    reward_transform,
)

BASES = ("iql", "awac")
BETA_COLUMNS = ("beta_mean", "beta_std", "beta_q10", "beta_q50", "beta_q90")


def algorithm_name(base: str) -> str:
    """Name in the run records: famo2o_iql / famo2o_awac (the analysis reads them as IQL+FamO2O / AWAC+FamO2O)."""
    return f"famo2o_{base}"


# ----------------------------------------------------------------------------------------------------- config
@dataclass
class FamO2OConfig(RunConfig):
    """FamO2O's fields; defaults are the official jax_iql values unless noted, names as in baselines/iql.py."""

    base: str = "iql"  # iql | awac: the algorithm whose critic FamO2O keeps
    offline_steps: int = steps(1_000_000, 1000)  # gradient steps on the dataset (official 1M)
    online_steps: int = steps(1_000_000, 1000)  # env steps online, one gradient step each (official 1M)
    eval_every: int = steps(5000, 500)  # gradient steps between evaluations, and at each phase's end (as IQL here)
    batch_size: int = 256
    buffer_size: int = 2_000_000  # ring capacity for dataset + online transitions (official 2M)
    hidden_dim: int = 256  # width of every net (official 2×256)
    n_hidden: int = 2
    actor_lr: float = 3e-4  # universal model (official: constant, opt_decay_schedule None)
    q_lr: float = 3e-4
    v_lr: float = 3e-4  # IQL's V
    balance_lr: float = 3e-4  # balance model (official: the actor's lr)
    temp_lr: float = 3e-4  # α of the balance model
    temp_init: float = 1.0
    target_entropy: float = -0.5  # of the balance model's u ∈ (−1, 1)
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target Q
    expectile: float = 0.7  # IQL's expectile (AntMaze 0.9)
    beta_lo: float = 1.0  # balance-coefficient range (AntMaze [8, 14])
    beta_hi: float = 5.0
    exp_adv_max: float = 100.0  # clip of the advantage weights
    enc_n: float = 10000.0  # β encoding: n and (even) dimension d
    enc_d: int = 6
    policy_log_std_min: float = -5.0  # universal model's log-std clip (official [−5, 2])
    policy_log_std_max: float = 2.0
    reward_kind: str = "auto"  # auto (the domain's: locomotion scaling, AntMaze r − 1) | none | locomotion | antmaze
    normalize_states: bool = False  # the official code feeds raw states; true = z-score with dataset statistics
    beta_states: int = 10_000  # dataset states whose β the run records summarise
    threads: int = 1  # torch.set_num_threads (0 = torch's default)


# (base, domain) -> preset; see the module docstring for the sources.
_LOCO = dict(expectile=0.7, beta_lo=1.0, beta_hi=5.0)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "iql": {
        "antmaze": dict(expectile=0.9, beta_lo=8.0, beta_hi=14.0, eval_episodes=100, eval_every=50_000),  # official
        "locomotion": _LOCO,  # our choice (not released)
        "adroit": dict(expectile=0.8, beta_lo=1.0, beta_hi=5.0),  # our choice (not in the official code)
        "kitchen": dict(expectile=0.7, beta_lo=0.5 / 3, beta_hi=2.5 / 3),  # our choice: IQL's β 0.5 × [1/3, 5/3]
    },
    "awac": {  # β around the project's AWAC λ⁻¹; AWAC's nets, state normalisation and rewards (baselines/awac.py)
        "antmaze": dict(beta_lo=8.0, beta_hi=14.0, eval_episodes=100, eval_every=50_000),  # λ = 0.1 → λ⁻¹ = 10
        "locomotion": dict(beta_lo=1.0, beta_hi=5.0),  # λ = 1/3 → λ⁻¹ = 3
        "adroit": dict(beta_lo=8.0, beta_hi=14.0),  # λ = 0.1
        "kitchen": dict(beta_lo=8.0, beta_hi=14.0),  # the project's AWAC uses Adroit's λ = 0.1 on Kitchen
    },
}
AWAC_COMMON = dict(n_hidden=awac.AWACConfig.n_hidden, normalize_states=awac.AWACConfig.normalize_states)


def presets(spec: DatasetSpec, base: str = "iql") -> dict[str, Any]:
    """Per-domain preset of FamO2O on `base` (the base's key is set too, so that --base picks the preset)."""
    if base not in BASES:
        raise ValueError(f"--base must be one of {BASES}, not {base!r}")
    preset = {"base": base, **PRESETS[base].get(spec.domain, PRESETS[base]["locomotion"])}
    if base == "awac":
        preset.update(AWAC_COMMON, reward_kind=awac.PRESETS.get(spec.domain, {}).get("reward_kind", "none"))
    return preset


# ----------------------------------------------------------------------------------------------------- nets
def _layer(fan_in: int, fan_out: int) -> nn.Linear:
    """Linear layer with the official init: orthogonal (gain √2) weights, zero bias."""
    layer = nn.Linear(fan_in, fan_out)
    nn.init.orthogonal_(layer.weight, gain=math.sqrt(2.0))
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """ReLU MLP with a linear output."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [_layer(d, h), nn.ReLU()]
        d = h
    layers.append(_layer(d, out_dim))
    return nn.Sequential(*layers)


def normal_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, std²) (no argument validation, so NaN reaches the divergence check)."""
    return -0.5 * ((x - mean) / std).square() - std.log() - 0.5 * math.log(2.0 * math.pi)


def beta_encoding(beta: torch.Tensor, n: float = 10000.0, d: int = 6) -> torch.Tensor:
    """Sinusoidal encoding of the raw β, shape (B,) -> (B, d): [sin(β/n^(2i/d)), cos(β/n^(2i/d))] for i < d/2."""
    if d % 2:
        raise ValueError(f"the β encoding needs an even dimension, not {d}")
    i = torch.arange(d // 2, dtype=beta.dtype, device=beta.device)
    angle = beta.reshape(-1, 1) / n ** (2.0 * i / d)
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).reshape(-1, d)  # sin, cos interleaved


class UniversalPolicy(nn.Module):
    """Universal model π_u(a | s, β): Gaussian with tanh mean on s ⊕ enc(β), state-independent clipped log-std."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256), enc_n: float = 10000.0,
                 enc_d: int = 6, log_std_min: float = -5.0, log_std_max: float = 2.0) -> None:
        super().__init__()
        self.enc_n, self.enc_d = float(enc_n), int(enc_d)
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)
        self.net = mlp(obs_dim + enc_d, hidden, act_dim)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of π_u(· | s, β)."""
        mean = torch.tanh(self.net(torch.cat([obs, beta_encoding(beta, self.enc_n, self.enc_d)], dim=-1)))
        std = self.log_std.clamp(self.log_std_min, self.log_std_max).exp().expand_as(mean)
        return mean, std

    def log_prob(self, obs: torch.Tensor, beta: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log π_u(a | s, β), summed over action dims."""
        mean, std = self(obs, beta)
        return normal_log_prob(act, mean, std).sum(-1)

    def rsample(self, obs: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """A reparameterised action sample (not squashed, as in the official code)."""
        mean, std = self(obs, beta)
        return mean + std * torch.randn_like(mean)

    def mean_action(self, obs: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """The deterministic (evaluation) action."""
        return self(obs, beta)[0]


class BalanceModel(nn.Module):
    """Balance model π_b(β | s): tanh-squashed Gaussian over u ∈ (−1, 1), β = (u + 1)/2·(β_hi − β_lo) + β_lo."""

    def __init__(self, obs_dim: int, beta_lo: float, beta_hi: float, hidden: tuple[int, ...] = (256, 256),
                 log_std_min: float = -10.0, log_std_max: float = 2.0) -> None:
        super().__init__()
        if not beta_hi > beta_lo:
            raise ValueError(f"need beta_lo < beta_hi, got [{beta_lo}, {beta_hi}]")
        self.beta_lo, self.beta_hi = float(beta_lo), float(beta_hi)
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)
        self.net = mlp(obs_dim, hidden, 1)
        self.log_std = nn.Parameter(torch.zeros(1))

    def to_beta(self, u: torch.Tensor) -> torch.Tensor:
        """Map u ∈ [−1, 1] affinely onto [β_lo, β_hi]."""
        return (u + 1.0) * 0.5 * (self.beta_hi - self.beta_lo) + self.beta_lo

    def rsample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised β (B,) and log π_b(u | s) of its u, with the tanh Jacobian (computed stably)."""
        mean = self.net(obs).squeeze(-1)
        std = self.log_std.clamp(self.log_std_min, self.log_std_max).exp().expand_as(mean)
        x = mean + std * torch.randn_like(mean)
        log_prob = normal_log_prob(x, mean, std)
        log_prob = log_prob - 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))  # − log(1 − tanh²x)
        return self.to_beta(torch.tanh(x)), log_prob

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """β used for acting: tanh of the Gaussian mean, mapped to the range."""
        return self.to_beta(torch.tanh(self.net(obs).squeeze(-1)))


class BalancedPolicy(nn.Module):
    """The acting policy π_u(·|s, β_b(s)), β_b the balance model's deterministic β, behind the project's actor
    interface (baselines/common.py GaussianActor: forward -> Normal, log_prob, sample, act), so that AWAC's critic
    loss (baselines/awac.py) draws its next actions from it."""

    def __init__(self, policy: UniversalPolicy, balance: BalanceModel) -> None:
        super().__init__()
        self.policy, self.balance = policy, balance

    def forward(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean, std = self.policy(obs, self.balance.deterministic(obs))
        return torch.distributions.Normal(mean, std, validate_args=False)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log π_u(a | s, β_b(s)) summed over action dims."""
        return self.policy.log_prob(obs, self.balance.deterministic(obs), act)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        """a ~ π_u(·|s, β_b(s)), without gradient."""
        return self.policy.rsample(obs, self.balance.deterministic(obs))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action."""
        return self.policy.mean_action(obs, self.balance.deterministic(obs))


# ----------------------------------------------------------------------------------------------------- losses
def awr_weights(adv: torch.Tensor, beta: torch.Tensor, exp_adv_max: float = 100.0) -> torch.Tensor:
    """min(exp(β·A), max): IQL's and AWAC's advantage weights with a per-sample β."""
    return torch.exp(adv * beta).clamp(max=exp_adv_max)


def universal_policy_loss(policy: UniversalPolicy, obs: torch.Tensor, act: torch.Tensor, beta: torch.Tensor,
                          adv: torch.Tensor, exp_adv_max: float = 100.0) -> torch.Tensor:
    """Universal-model update: −mean(min(exp(β·A), max) · log π_u(a | s, β)); β and A carry no gradient."""
    weights = awr_weights(adv.detach(), beta.detach(), exp_adv_max)
    return -(weights * policy.log_prob(obs, beta.detach(), act)).mean()


def balance_model_loss(balance: BalanceModel, policy: UniversalPolicy, q_fn: Callable[[torch.Tensor, torch.Tensor],
                       torch.Tensor], obs: torch.Tensor, alpha: torch.Tensor | float
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Balance-model update: mean(α·log π_b(u|s) − Q(s, ã)), β ~ π_b(s), ã ~ π_u(·|s, β), both reparameterised.

    Returns (loss, entropy estimate −mean log π_b, the sampled β). Only the balance model should step on it.
    """
    beta, log_prob = balance.rsample(obs)
    act = policy.rsample(obs, beta)
    q = q_fn(obs, act)
    return (alpha * log_prob - q).mean(), -log_prob.mean(), beta


def temperature_loss(log_alpha: torch.Tensor, entropy: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """α·(H − H_target), linear in α (family_temperature.update); α grows when the entropy falls below target."""
    return log_alpha.exp() * (entropy.detach() - target_entropy)


# ----------------------------------------------------------------------------------------------------- agent
def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
    """Backpropagate into `params` only (other nets in the graph get no gradient) and step."""
    opt.zero_grad(set_to_none=True)
    loss.backward(inputs=params)
    opt.step()


class FamO2O:
    """Universal model, balance model, α and the base algorithm's critic; one `update` per gradient step.

    Critic pieces are the project's IQL (baselines/iql.py: ValueFunction, expectile_loss, q_loss) and the shared
    TwinQ and Polyak update (baselines/common.py), with their initialisation (PyTorch's default); the universal and
    balance models use the official orthogonal init.
    """

    def __init__(self, cfg: FamO2OConfig, obs_dim: int, act_dim: int, device: torch.device | str = "cpu") -> None:
        if cfg.base not in BASES:
            raise ValueError(f"--base must be one of {BASES}, not {cfg.base!r}")
        self.cfg = cfg
        self.device = torch.device(device)
        hidden = (cfg.hidden_dim,) * cfg.n_hidden
        self.policy = UniversalPolicy(obs_dim, act_dim, hidden, cfg.enc_n, cfg.enc_d, cfg.policy_log_std_min,
                                      cfg.policy_log_std_max).to(self.device)
        self.balance = BalanceModel(obs_dim, cfg.beta_lo, cfg.beta_hi, hidden).to(self.device)
        self.log_alpha = torch.tensor(math.log(cfg.temp_init), device=self.device, requires_grad=True)
        self.q = TwinQ(obs_dim, act_dim, cfg.hidden_dim, cfg.n_hidden).to(self.device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.value = iql.ValueFunction(obs_dim, cfg.hidden_dim, cfg.n_hidden).to(self.device) \
            if cfg.base == "iql" else None
        self.policy_opt = adam(self.policy.parameters(), cfg.actor_lr)
        self.balance_opt = adam(self.balance.parameters(), cfg.balance_lr)
        self.alpha_opt = adam([self.log_alpha], cfg.temp_lr)
        self.q_opt = adam(self.q.parameters(), cfg.q_lr)
        self.v_opt = adam(self.value.parameters(), cfg.v_lr) if self.value is not None else None

    def policy_betas(self, obs: torch.Tensor, online: bool) -> torch.Tensor:
        """β of the universal model's loss: offline U[β_lo, β_hi] per sample; online a π_b sample, stop-gradient."""
        with torch.no_grad():
            if not online:
                return torch.rand(obs.shape[0], device=obs.device) * (self.cfg.beta_hi - self.cfg.beta_lo) \
                    + self.cfg.beta_lo
            return self.balance.rsample(obs)[0]

    def update(self, batch: tuple[torch.Tensor, ...], online: bool) -> dict[str, torch.Tensor]:
        """One gradient step of every net in the official order; detached device metrics (no host sync)."""
        if self.cfg.base == "iql":
            return self._update_iql(*batch, online=online)
        return self._update_awac(*batch, online=online)

    def _balance_and_alpha(self, obs: torch.Tensor, q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                           ) -> dict[str, torch.Tensor]:
        """Balance-model update on the frozen universal model and critic, then the temperature update."""
        alpha = self.log_alpha.detach().exp()
        loss, entropy, beta = balance_model_loss(self.balance, self.policy, q_fn, obs, alpha)
        _step(self.balance_opt, loss, list(self.balance.parameters()))
        _step(self.alpha_opt, temperature_loss(self.log_alpha, entropy, self.cfg.target_entropy), [self.log_alpha])
        return {"balance_loss": loss.detach(), "balance_entropy": entropy.detach(), "alpha": alpha,
                "beta_balance": beta.detach().mean()}

    def _policy_step(self, obs: torch.Tensor, act: torch.Tensor, beta: torch.Tensor, adv: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        """Universal-model update (AWR with a per-sample β)."""
        loss = universal_policy_loss(self.policy, obs, act, beta, adv, self.cfg.exp_adv_max)
        _step(self.policy_opt, loss, list(self.policy.parameters()))
        return {"actor_loss": loss.detach(), "adv_mean": adv.mean(), "beta_actor": beta.mean()}

    def _update_iql(self, obs, act, rew, next_obs, done, online: bool) -> dict[str, torch.Tensor]:
        """V → balance model → α → universal model (new V, old balance model) → Q (new V) → target."""
        cfg = self.cfg
        beta_u = self.policy_betas(obs, online)  # drawn before the balance model's step, as the official code
        with torch.no_grad():
            q_t = self.q_target(obs, act)  # min of the target twins
        v = self.value(obs)
        v_loss = iql.expectile_loss(q_t - v, cfg.expectile)
        _step(self.v_opt, v_loss, list(self.value.parameters()))
        info = self._balance_and_alpha(obs, self.q_target)
        with torch.no_grad():
            v_new, next_v = self.value(torch.cat([obs, next_obs])).chunk(2)  # one forward for V(s) and V(s')
            adv = q_t - v_new
        info.update(self._policy_step(obs, act, beta_u, adv))
        q_loss, q1 = iql.q_loss(self.q, next_v, obs, act, rew, done, cfg.discount)
        _step(self.q_opt, q_loss, list(self.q.parameters()))
        soft_update(self.q_target, self.q, cfg.tau)
        info.update(value_loss=v_loss.detach(), q_loss=q_loss.detach(), q1_mean=q1.mean(), v_mean=v.detach().mean())
        return info

    def _update_awac(self, obs, act, rew, next_obs, done, online: bool) -> dict[str, torch.Tensor]:
        """Q (target from the balanced policy) → balance model → α → universal model → target."""
        cfg = self.cfg
        beta_u = self.policy_betas(obs, online)
        q_loss, q1 = awac.critic_loss(self.q, self.q_target, BalancedPolicy(self.policy, self.balance), obs, act, rew,
                                      next_obs, done, cfg.discount)
        _step(self.q_opt, q_loss, list(self.q.parameters()))
        info = self._balance_and_alpha(obs, self.q)
        with torch.no_grad():
            pi_act = self.policy.rsample(obs, beta_u).clamp(-1.0, 1.0)
            q_data, q_pi = self.q(torch.cat([obs, obs]), torch.cat([act, pi_act])).chunk(2)
            adv = q_data - q_pi
        info.update(self._policy_step(obs, act, beta_u, adv))
        soft_update(self.q_target, self.q, cfg.tau)
        info.update(q_loss=q_loss.detach(), q1_mean=q1.mean())
        return info

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """β from the balance model (deterministic); the mean action, or a sample of π_u for exploration."""
        acting = BalancedPolicy(self.policy, self.balance)
        return acting.act(obs) if deterministic else acting.sample(obs)

    @torch.no_grad()
    def betas(self, obs: torch.Tensor) -> torch.Tensor:
        """The balance model's deterministic β of each state."""
        return self.balance.deterministic(obs)

    def _parts(self) -> dict[str, Any]:
        parts = {"policy": self.policy, "balance": self.balance, "q": self.q, "q_target": self.q_target,
                 "policy_opt": self.policy_opt, "balance_opt": self.balance_opt, "alpha_opt": self.alpha_opt,
                 "q_opt": self.q_opt}
        if self.value is not None:
            parts.update(value=self.value, v_opt=self.v_opt)
        return parts

    def state_dict(self) -> dict[str, Any]:
        """Every net, optimiser and α (weights_only-loadable)."""
        out = {k: m.state_dict() for k, m in self._parts().items()}
        out["log_alpha"] = self.log_alpha.detach().clone()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict()."""
        for k, m in self._parts().items():
            m.load_state_dict(state[k])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])


# ----------------------------------------------------------------------------------------------------- data
@dataclass
class Prepared:
    """The dataset as the agent sees it, and the transforms that also apply to the env."""

    buffer: ReplayBuffer
    n_data: int
    obs_transform: ObsNormalizer | None
    reward_fn: RewardTransform
    reward_kind: str
    beta_states: torch.Tensor


def prepare_data(cfg: FamO2OConfig, ds: Dataset, device: torch.device) -> Prepared:
    """Reward transform, optional state normalisation, clipped actions, the buffer and the fixed β-summary states."""
    kind = default_reward_kind(ds.spec.domain) if cfg.reward_kind == "auto" else cfg.reward_kind
    rt = reward_transform(ds, kind)
    norm = ObsNormalizer.fit(ds) if cfg.normalize_states else None
    obs = norm(ds.observations) if norm else ds.observations
    next_obs = norm(ds.next_observations) if norm else ds.next_observations
    rewards = np.asarray(rt(ds.rewards), dtype=np.float32)
    # a ring of buffer_size (official 2M); never larger than dataset + online steps need
    capacity = max(min(cfg.buffer_size, len(ds) + cfg.online_steps), len(ds))
    buffer = ReplayBuffer.from_dataset(ds, obs, next_obs, rewards, actions=clip_actions(ds.actions),
                                       capacity=capacity, device=device)
    rng = np.random.default_rng([cfg.seed, 0xBE7A])
    idx = np.sort(rng.choice(len(ds), size=min(cfg.beta_states, len(ds)), replace=False))
    return Prepared(buffer, len(ds), norm, rt, kind, torch.as_tensor(obs[idx], device=device))


def buffer_state(buf: ReplayBuffer, n_data: int, env_steps: int) -> dict[str, Any]:
    """The online transitions while the ring has not wrapped (the dataset is reloaded on resume), else everything."""
    if n_data + env_steps <= buf.capacity:
        return {"online": buf.rows_since(n_data)}
    return {"full": buf.state_dict()}


def load_buffer_state(buf: ReplayBuffer, state: dict[str, Any]) -> None:
    """Restore what buffer_state() saved into a buffer that holds the dataset."""
    if "full" in state:
        buf.load_state_dict(state["full"])
    else:
        buf.add_rows(state["online"])


def beta_summary(betas: torch.Tensor) -> dict[str, float]:
    """The evals.csv columns beta_mean, beta_std, beta_q10, beta_q50, beta_q90 (one host sync)."""
    q = torch.quantile(betas.float(), torch.tensor([0.1, 0.5, 0.9], device=betas.device))
    vals = torch.cat([betas.mean()[None], betas.std(unbiased=False)[None], q]).cpu().tolist()
    return dict(zip(BETA_COLUMNS, (float(v) for v in vals)))


# ----------------------------------------------------------------------------------------------------- training
def run(cfg: FamO2OConfig, recorder: RunRecorder, ds: Dataset) -> dict[str, Any]:
    """Offline then online training with evaluations, checkpoints and resume; returns the online episodes' stats."""
    for k in ("eval_every", "log_every", "checkpoint_every", "batch_size"):
        if getattr(cfg, k) <= 0:
            raise ValueError(f"--{k.replace('_', '-')} must be positive, not {getattr(cfg, k)}")
    device = pick_device(cfg.device)
    spec = ds.spec
    out = Path(cfg.out)
    name = algorithm_name(cfg.base)
    data = prepare_data(cfg, ds, device)
    recorder.extra.update(dataset_transitions=data.n_data, reward_kind=data.reward_kind,
                          reward_scale=data.reward_fn.scale, reward_bias=data.reward_fn.bias)
    agent = FamO2O(cfg, spec.obs_dim, spec.act_dim, device)
    evaluator = Evaluator(spec, recorder, cfg.seed, cfg.eval_episodes, obs_transform=data.obs_transform)
    ck = Checkpointer(out)
    total = cfg.offline_steps + cfg.online_steps
    log = MetricLog(out / "metrics.csv", total_steps=total, name=name)
    t, env_steps, train_scores, successes = 0, 0, [], []
    state = ck.load(map_location=device) if cfg.resume else None
    if state is not None:
        agent.load_state_dict(state["agent"])
        load_buffer_state(data.buffer, state["buffer"])
        t, env_steps = int(state["step"]), int(state["env_steps"])
        train_scores, successes = list(state["train_scores"]), list(state["successes"])
        set_rng_state(state["rng"])
        print(f"[{name}] resumed from {ck.path} at step {t} ({env_steps} env steps)", flush=True)
    else:
        (out / "metrics.csv").unlink(missing_ok=True)
    recorder.truncate_after(t)
    truncate_csv(out / "metrics.csv", t)
    evaluator.index = len(recorder.rows)
    recorder.progress(t, env_steps)
    log.reset_clock(t)
    policy_np = torch_policy(lambda o: agent.act(o, deterministic=True), device)

    def evaluate(phase: str) -> None:
        log.flush(t, phase)  # raises DivergenceError on NaN/inf before an evaluation
        recorder.progress(t, env_steps)
        summary = beta_summary(agent.betas(data.beta_states))
        if not all(math.isfinite(v) for v in summary.values()):
            raise DivergenceError(f"the balance model's β became NaN/inf at step {t} ({phase})")
        res = evaluator(policy_np, t, phase, env_steps, **summary)
        if not np.isfinite(res.return_mean):
            raise DivergenceError(f"evaluation return became NaN/inf at step {t} ({phase})")
        print(f"[{name} β at step {t}] mean {summary['beta_mean']:.3f} q10 {summary['beta_q10']:.3f} "
              f"q50 {summary['beta_q50']:.3f} q90 {summary['beta_q90']:.3f}", flush=True)
        log.reset_clock(t)

    def save() -> None:
        ck.save({"agent": agent.state_dict(), "buffer": buffer_state(data.buffer, data.n_data, env_steps), "step": t,
                 "env_steps": env_steps, "train_scores": train_scores, "successes": successes, "rng": rng_state(),
                 "config": config_dict(cfg)})

    env = None
    obs_env = np.zeros(spec.obs_dim)
    ep_ret, ep_success = 0.0, False
    started, t_start = time.time(), t
    try:
        while t < total:
            online = t >= cfg.offline_steps
            phase = "online" if online else "offline"
            if online:
                if env is None:  # a resumed run starts a new episode
                    env = make_env(spec)
                    obs_env, _ = env.reset(seed=cfg.seed + 10_000 + env_steps)
                    ep_ret, ep_success = 0.0, False
                x = obs_env[None].astype(np.float32)
                x = data.obs_transform(x) if data.obs_transform is not None else x
                a = agent.act(torch.as_tensor(x, device=device), deterministic=False).cpu().numpy()[0]
                if not np.all(np.isfinite(a)):
                    raise DivergenceError(f"the universal model's action became NaN/inf at step {t} (online)")
                a = np.clip(a, -1.0, 1.0)
                nxt, r, term, trunc, info = env.step(a)
                nx = nxt[None].astype(np.float32)
                nx = data.obs_transform(nx) if data.obs_transform is not None else nx
                # mask 0 only on a true terminal: a time-limit truncation bootstraps
                data.buffer.add(x, a[None], np.asarray([data.reward_fn(float(r))], np.float32), nx,
                                np.asarray([float(term)], np.float32))
                ep_ret += float(r)
                ep_success |= bool(info.get("success", False))
                env_steps += 1
                obs_env = nxt
                if term or trunc:
                    train_scores.append(normalized_score(spec, ep_ret))
                    successes.append(float(ep_success))
                    obs_env, _ = env.reset()
                    ep_ret, ep_success = 0.0, False
            log.add(agent.update(data.buffer.sample(cfg.batch_size), online))
            t += 1
            end_of_phase = t == cfg.offline_steps or t == total
            if t % cfg.log_every == 0:
                log.flush(t, phase)
                recorder.progress(t, env_steps)
            if (t - cfg.offline_steps if online else t) % cfg.eval_every == 0 or end_of_phase:
                evaluate(phase)
            if t % cfg.checkpoint_every == 0 or end_of_phase:
                save()
    finally:
        if env is not None:
            env.close()
    betas = agent.betas(data.beta_states).cpu().numpy()
    np.save(out / "betas.npy", betas)
    torch.save({"policy": agent.policy.state_dict(), "balance": agent.balance.state_dict(),
                "config": config_dict(cfg)}, out / "policy.pt")
    recorder.progress(t, env_steps)
    return {"train_scores": train_scores, "successes": successes, "has_success": spec.has_success,
            "updates_per_s": (t - t_start) / max(time.time() - started, 1e-9)}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 finished, 3 diverged, as baselines/iql.py)."""
    args = list(sys.argv[1:] if argv is None else argv)
    base = "iql"
    for i, a in enumerate(args):  # the preset depends on the base, and parse_config applies presets before flags
        if a == "--base" and i + 1 < len(args):
            base = args[i + 1]
        elif a.startswith("--base="):
            base = a.split("=", 1)[1]
    if base not in BASES:
        print(f"error: --base must be one of {', '.join(BASES)}, not {base!r}", file=sys.stderr)
        return 2
    cfg = parse_config(FamO2OConfig, lambda spec: presets(spec, base), argv=args, description=__doc__)
    name = algorithm_name(cfg.base)
    cfg = dataclasses.replace(cfg, out=default_out(name, cfg))
    if cfg.resume and is_finished(cfg.out):
        print(f"[{name}] {cfg.out} has finished already; nothing to do", flush=True)
        return 0
    recorder = RunRecorder(cfg.out, name, cfg.dataset, cfg.seed, config_dict(cfg), budget=cfg.budget,
                           resume=cfg.resume)
    set_seed(cfg.seed)
    ok, res = run_recorded(name, recorder, lambda: run(cfg, recorder, load_dataset(cfg.dataset, env_id=cfg.env)),
                           cfg.threads)
    if not ok:
        return 3
    scores, succ = res["train_scores"], res["successes"]
    recorder.extra.update(updates_per_s=round(res["updates_per_s"], 1), online_episodes=len(scores),
                          train_score_last10=float(np.mean(scores[-10:])) if scores else None)
    if succ and res["has_success"]:  # CORL's regret: mean(1 − success) over the training episodes
        recorder.extra["final_regret"] = float(np.mean(1.0 - np.asarray(succ)))
    recorder.finish("finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
