"""FamO2O: Family Offline-to-Online RL (Wang et al., NeurIPS 2023, arXiv 2310.17966), single file, PyTorch.

FamO2O trains a *family* of policies in one network, the **universal model** π_u(a | s, β), where β is the balance
coefficient between policy improvement and policy constraint (IQL's and AWAC's inverse temperature: large β trusts
the critic, small β stays close to the data), and a **balance model** π_b(β | s) that picks β per state. The critic
side is the base algorithm's, unchanged. Names below follow the paper: "universal model", "balance model",
"balance coefficient"; the two objectives are the paper's universal-model update (advantage-weighted regression
with a state-wise β) and balance-model update (choose the β whose policy action the critic values most).

Reimplemented on the project's engine (o2o/loop.py: data, protocol, evaluation, records, S seeds per process; each
seed has its own balance model and temperature, every loss is that seed's own mean) from the official JAX code
(GitHub LeapLabTHU/FamO2O, jax_iql/: family_learner.py, family_actor.py, family_temperature.py, family_utils.py,
policy.py, family_train_finetune.py, configs/family_antmaze_finetune_config.py):

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
- `iql` (default): the official code. V, Q and their losses are the project's IQL (baselines/iql.py: expectile_loss,
  q_loss; o2o/nets.py: ValueNet, TwinQ, soft_update), in the official FamO2O order above (the project's
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

Presets (configs/famo2o_<base>/official/<domain>.yaml, `--preset official` by default; flags override):
- AntMaze: β ∈ [8, 14], expectile 0.9, 100 evaluation episodes (official config; plain IQL uses β = 10).
- Locomotion: FamO2O's locomotion hyperparameters were not released (an open issue on the official repository
  asks for them). Our choice: β ∈ [1, 5] and expectile 0.7, a range around IQL's usual β = 3 (for AWAC: λ = 1/3,
  λ⁻¹ = 3), as the official [8, 14] surrounds IQL's AntMaze β = 10.
- Adroit and Kitchen (not in the official code either): the same kind of range around the base's β (IQL Adroit:
  β 3 → [1, 5], expectile 0.8; IQL Kitchen: β 0.5 → [1/6, 5/6]; AWAC Adroit: λ 0.1 → [8, 14]).
- Advantage weights (`--awr-weight`): `paper`, each sample's min(exp(β_i·A_i), 100); `official`, the JAX code's
  broadcast (official_awr_weights), which the IQL base's official presets select: the published numbers come
  from it.

Run records: summary.json and evals.csv (o2o.records) with extra columns beta_mean, beta_std, beta_q10, beta_q50,
beta_q90: the balance model's deterministic β over a fixed sample of dataset states at every evaluation; betas.npy
holds the final β of those states (for the histogram figure).

Command line: `python algorithms/famo2o.py --dataset local:hopper-medium --seed 0 --out DIR --budget smoke
[--base iql|awac] [--awr-weight paper|official] [--online-steps N] [--seeds 0,1,2] [--resume]` (every config
field is a flag; `--help` lists them).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn as nn

if __package__ in (None, ""):  # `python algorithms/famo2o.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baselines import awac, iql  # noqa: E402  (the base algorithms' critic pieces)
from o2o import loop  # noqa: E402
from o2o.cli import steps  # noqa: E402
from o2o.loop import Algorithm, LoopConfig, Setup, Transforms  # noqa: E402
from o2o.nets import (  # noqa: E402
    GaussianActor,
    TanhGaussianActor,
    TwinQ,
    ValueNet,
    adam,
    mean_per_member,
    member_parameter,
    soft_update,
    split_members,
)
from o2o.presets import Source, run_preset  # noqa: E402
from o2o.records import atomic_save  # noqa: E402
from o2o.registry import DatasetSpec  # noqa: E402
from o2o.rng import MemberRNG, member_generators  # noqa: E402
from o2o.training import config_dict  # noqa: E402
from o2o.transforms import RewardKind, default_reward_kind  # noqa: E402

BASES = ("iql", "awac")
FALLBACK = ("official",)  # preset sources tried after --preset's
BETA_COLUMNS = ("beta_mean", "beta_std", "beta_q10", "beta_q50", "beta_q90")


def algorithm_name(base: str) -> str:
    """Name in the run records: famo2o_iql / famo2o_awac (the analysis reads them as IQL+FamO2O / AWAC+FamO2O)."""
    return f"famo2o_{base}"


# ----------------------------------------------------------------------------------------------------- config
@dataclass
class FamO2OConfig(LoopConfig):
    """FamO2O's fields; defaults are the official jax_iql values unless noted, names as in baselines/iql.py."""

    base: Literal["iql", "awac"] = "iql"  # the algorithm whose critic FamO2O keeps
    offline_steps: int = steps(1_000_000, 1000)  # gradient steps on the dataset (official 1M)
    online_steps: int = steps(1_000_000, 1000)  # env steps online, one gradient step each (official 1M)
    eval_every: int = steps(5000, 500)  # offline: gradient steps between evaluations; online: env steps
    buffer_size: int = 2_000_000  # newest transitions kept of dataset + online data (official 2M ring)
    hidden_dim: int = 256  # width of every net (official 2×256)
    n_hidden: int = 2  # hidden layers of every net (official 2)
    actor_lr: float = 3e-4  # universal model Adam lr (official: constant, opt_decay_schedule None)
    critic_lr: float = 3e-4  # twin Q Adam lr (official critic_lr)
    value_lr: float = 3e-4  # IQL's V Adam lr (official value_lr)
    balance_lr: float = 3e-4  # balance model Adam lr (official: the actor's lr)
    temp_lr: float = 3e-4  # Adam lr of the balance model's temperature α (official hierarchical_temp_lr)
    temp_init: float = 1.0  # initial α (official hierarchical_init_temperature)
    target_entropy: float = -0.5  # of the balance model's u ∈ (−1, 1)
    discount: float = 0.99  # discount γ of the Q target (official discount)
    tau: float = 0.005  # Polyak rate of the target Q
    expectile: float = 0.7  # IQL's expectile (AntMaze 0.9)
    beta_lo: float = 1.0  # lower end of the balance-coefficient range (AntMaze [8, 14])
    beta_hi: float = 5.0  # upper end of the balance-coefficient range
    exp_adv_max: float = 100.0  # clip of the advantage weights
    # paper: min(exp(β_i·A_i), 100) per sample; official: the JAX code's broadcast, mean_i min(exp(β_i·A_j), 100) for
    # sample j (jax_iql/family_actor.py: (q − v) has shape (B,), β (B, 1))
    awr_weight: Literal["paper", "official"] = "paper"
    enc_n: float = 10000.0  # β encoding: n of the divisors n^(2i/d)
    enc_d: int = 6  # β encoding: its (even) dimension d
    policy_log_std_min: float = -5.0  # universal model's log-std clip (official [−5, 2])
    policy_log_std_max: float = 2.0  # upper clip of the universal model's log-std (official 2)
    # rewards (o2o.transforms); auto: the domain's (locomotion scaling, AntMaze r − 1, else none)
    reward_kind: Literal["auto"] | RewardKind = "auto"
    normalize_states: bool = False  # the official code feeds raw states; true = z-score with dataset statistics
    beta_states: int = 10_000  # dataset states whose β the run records summarise
    preset: Source = "official"  # configs/famo2o_<base>/<preset>/<dataset or domain>.yaml (README, "Presets")

    RENAMED: ClassVar[dict[str, str]] = {"q_lr": "critic_lr", "v_lr": "value_lr"}


def presets(cfg: FamO2OConfig, spec: DatasetSpec) -> dict[str, Any]:
    """The preset of FamO2O on --base for the dataset: configs/famo2o_<base>/<--preset>/ (see each file's source)."""
    return run_preset(algorithm_name(cfg.base), cfg, spec, FALLBACK)


def transforms(cfg: FamO2OConfig, spec: DatasetSpec) -> Transforms:
    """Raw states unless --normalize-states (official: raw), the domain's reward transform, clipped actions."""
    kind = default_reward_kind(spec.domain) if cfg.reward_kind == "auto" else cfg.reward_kind
    return Transforms(normalize_states=cfg.normalize_states, reward_kind=kind, clip_actions=True)


# ----------------------------------------------------------------------------------------------------- nets
def beta_encoding(beta: torch.Tensor, n: float = 10000.0, d: int = 6) -> torch.Tensor:
    """Sinusoidal encoding of the raw β, shape (...) -> (..., d): [sin(β/n^(2i/d)), cos(β/n^(2i/d))] for i < d/2."""
    if d % 2:
        raise ValueError(f"the β encoding needs an even dimension, not {d}")
    i = torch.arange(d // 2, dtype=beta.dtype, device=beta.device)
    angle = beta.unsqueeze(-1) / n ** (2.0 * i / d)
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(-2)  # sin, cos interleaved


class UniversalPolicy(nn.Module):
    """Universal model π_u(a | s, β): o2o.nets.GaussianActor (tanh mean, state-independent clipped log-std) on
    s ⊕ enc(β), orthogonal init (gain √2) as the official code."""

    def __init__(self, obs_dim: int, act_dim: int, gens: list[torch.Generator], hidden_dim: int = 256,
                 n_hidden: int = 2, enc_n: float = 10000.0, enc_d: int = 6, log_std_min: float = -5.0,
                 log_std_max: float = 2.0) -> None:
        super().__init__()
        self.enc_n, self.enc_d = float(enc_n), int(enc_d)
        self.actor = GaussianActor(obs_dim + enc_d, act_dim, gens, hidden_dim, n_hidden, tanh_mean=True,
                                   log_std_min=log_std_min, log_std_max=log_std_max, init="orthogonal")

    def inputs(self, obs: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """s ⊕ enc(β)."""
        return torch.cat([obs, beta_encoding(beta, self.enc_n, self.enc_d)], dim=-1)

    def log_prob(self, obs: torch.Tensor, beta: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log π_u(a | s, β), summed over action dims: (S, B)."""
        return self.actor.log_prob(self.inputs(obs, beta), act)

    def rsample(self, obs: torch.Tensor, beta: torch.Tensor, rng: MemberRNG) -> torch.Tensor:
        """A reparameterised action sample (not squashed, as in the official code)."""
        return self.actor.rsample(self.inputs(obs, beta), rng)

    def mean_action(self, obs: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """The deterministic (evaluation) action."""
        return self.actor.net(self.inputs(obs, beta))


class BalanceModel(nn.Module):
    """Balance model π_b(β | s): tanh-squashed Gaussian over u ∈ (−1, 1) with a state-independent log-std clipped to
    [−10, 2] (o2o.nets.TanhGaussianActor), β = (u + 1)/2·(β_hi − β_lo) + β_lo."""

    def __init__(self, obs_dim: int, beta_lo: float, beta_hi: float, gens: list[torch.Generator],
                 hidden_dim: int = 256, n_hidden: int = 2) -> None:
        super().__init__()
        if not beta_hi > beta_lo:
            raise ValueError(f"need beta_lo < beta_hi, got [{beta_lo}, {beta_hi}]")
        self.beta_lo, self.beta_hi = float(beta_lo), float(beta_hi)
        self.net = TanhGaussianActor(obs_dim, 1, gens, hidden_dim, n_hidden, log_std="param", log_std_min=-10.0,
                                     log_std_max=2.0, init="orthogonal")

    def to_beta(self, u: torch.Tensor) -> torch.Tensor:
        """Map u ∈ [−1, 1] affinely onto [β_lo, β_hi]."""
        return (u + 1.0) * 0.5 * (self.beta_hi - self.beta_lo) + self.beta_lo

    def rsample(self, obs: torch.Tensor, rng: MemberRNG) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised β (S, B) and log π_b(u | s) of its u, with the tanh Jacobian."""
        u, log_prob = self.net.rsample(obs, rng, 1)
        return self.to_beta(u[..., 0, 0]), log_prob[..., 0]

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """β used for acting: tanh of the Gaussian mean, mapped to the range."""
        return self.to_beta(self.net.act(obs)[..., 0])


class BalancedPolicy(nn.Module):
    """The acting policy π_u(·|s, β_b(s)), β_b the balance model's deterministic β, behind the actor interface of
    o2o.nets.GaussianActor (log_prob, sample, act), so that AWAC's critic loss (baselines/awac.py) draws its next
    actions from it."""

    def __init__(self, policy: UniversalPolicy, balance: BalanceModel) -> None:
        super().__init__()
        self.policy, self.balance = policy, balance

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log π_u(a | s, β_b(s)) summed over action dims."""
        return self.policy.log_prob(obs, self.balance.deterministic(obs), act)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, rng: MemberRNG) -> torch.Tensor:
        """a ~ π_u(·|s, β_b(s)), without gradient."""
        return self.policy.rsample(obs, self.balance.deterministic(obs), rng)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action."""
        return self.policy.mean_action(obs, self.balance.deterministic(obs))


# ----------------------------------------------------------------------------------------------------- losses
def awr_weights(adv: torch.Tensor, beta: torch.Tensor, exp_adv_max: float = 100.0) -> torch.Tensor:
    """min(exp(β·A), max): IQL's and AWAC's advantage weights with a per-sample β."""
    return torch.exp(adv * beta).clamp(max=exp_adv_max)


def official_awr_weights(adv: torch.Tensor, beta: torch.Tensor, exp_adv_max: float = 100.0) -> torch.Tensor:
    """The official JAX code's weights (jax_iql/family_actor.py): A = q − v has shape (B,) and β shape (B, 1), so
    exp(A·β) is (B, B) with entry [i, j] = exp(A_j·β_i), and −mean(exp_a · log π) weights sample j by
    mean_i min(exp(A_j·β_i), max), whatever its own β. Per seed: adv, beta (S, B) -> (S, B)."""
    return torch.exp(adv.unsqueeze(-2) * beta.unsqueeze(-1)).clamp(max=exp_adv_max).mean(-2)


def universal_policy_loss(policy: UniversalPolicy, obs: torch.Tensor, act: torch.Tensor, beta: torch.Tensor,
                          adv: torch.Tensor, exp_adv_max: float = 100.0, awr_weight: str = "paper") -> torch.Tensor:
    """Universal-model update: −mean(w · log π_u(a | s, β)) per seed, w = min(exp(β·A), max) (paper) or the
    official code's broadcast weights (official_awr_weights); β and A carry no gradient."""
    weigh = official_awr_weights if awr_weight == "official" else awr_weights
    weights = weigh(adv.detach(), beta.detach(), exp_adv_max)
    return -mean_per_member(weights * policy.log_prob(obs, beta.detach(), act))


def balance_model_loss(balance: BalanceModel, policy: UniversalPolicy, q_fn: Callable[[torch.Tensor, torch.Tensor],
                       torch.Tensor], obs: torch.Tensor, alpha: torch.Tensor, rng: MemberRNG
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Balance-model update: mean(α·log π_b(u|s) − Q(s, ã)) per seed, β ~ π_b(s), ã ~ π_u(·|s, β), both
    reparameterised (independent noise). α has shape (S, 1).

    Returns (loss (S,), entropy estimate −mean log π_b (S,), the sampled β (S, B)). Only the balance model should
    step on it.
    """
    beta, log_prob = balance.rsample(obs, rng)
    act = policy.rsample(obs, beta, rng)
    q = q_fn(obs, act)
    return mean_per_member(alpha * log_prob - q), -mean_per_member(log_prob), beta


def temperature_loss(alpha: torch.Tensor, entropy: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """α·(H − H_target) per seed, linear in α = exp(log α) (family_temperature.update); α grows when the entropy falls
    below target."""
    return alpha * (entropy.detach() - target_entropy)


# ----------------------------------------------------------------------------------------------------- agent
def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
    """Backpropagate every seed's loss into `params` only (other nets in the graph get no gradient) and step."""
    opt.zero_grad(set_to_none=True)
    loss.sum().backward(inputs=params)
    opt.step()


def beta_summary(betas: torch.Tensor) -> list[dict[str, float]]:
    """Each seed's evals.csv columns beta_mean, beta_std, beta_q10, beta_q50, beta_q90 from betas (S, n), one sync."""
    q = torch.quantile(betas.float(), torch.tensor([0.1, 0.5, 0.9], device=betas.device), dim=1).T  # (S, 3)
    vals = torch.cat([betas.mean(1, keepdim=True), betas.std(1, unbiased=False, keepdim=True), q], 1).cpu().tolist()
    return [dict(zip(BETA_COLUMNS, (float(v) for v in row))) for row in vals]


class FamO2O:
    """Universal model, balance model, α and the base algorithm's critic for S seeds; one `update` per gradient step.

    Critic pieces are the project's IQL/AWAC with their initialisation (PyTorch's default); the universal and
    balance models use the official orthogonal init.
    """

    def __init__(self, cfg: FamO2OConfig, setup: Setup) -> None:
        if cfg.base not in BASES:
            raise ValueError(f"--base must be one of {BASES}, not {cfg.base!r}")
        self.cfg, seeds, dev = cfg, setup.seeds, setup.device
        self.seeds = seeds
        self.rng = MemberRNG(seeds, "famo2o", dev)
        od, ad, h, n = setup.obs_dim, setup.act_dim, cfg.hidden_dim, cfg.n_hidden
        self.policy = UniversalPolicy(od, ad, member_generators(seeds, "famo2o/policy"), h, n, cfg.enc_n, cfg.enc_d,
                                      cfg.policy_log_std_min, cfg.policy_log_std_max).to(dev)
        self.balance = BalanceModel(od, cfg.beta_lo, cfg.beta_hi, member_generators(seeds, "famo2o/balance"), h,
                                    n).to(dev)
        self.log_alpha = member_parameter(len(seeds), 1, math.log(cfg.temp_init)).to(dev)
        self.q = TwinQ(od, ad, member_generators(seeds, "famo2o/q"), h, n).to(dev)
        self.q_target = TwinQ(od, ad, member_generators(seeds, "famo2o/q"), h, n).to(dev).requires_grad_(False)
        self.value = ValueNet(od, member_generators(seeds, "famo2o/value"), h, n).to(dev) \
            if cfg.base == "iql" else None
        self.policy_opt = adam(self.policy.parameters(), cfg.actor_lr)
        self.balance_opt = adam(self.balance.parameters(), cfg.balance_lr)
        self.alpha_opt = adam([self.log_alpha], cfg.temp_lr)
        self.q_opt = adam(self.q.parameters(), cfg.critic_lr)
        self.v_opt = adam(self.value.parameters(), cfg.value_lr) if self.value is not None else None
        # The dataset states whose β the records summarise: a fixed sample per seed (as each seed alone would draw).
        idx = [np.sort(np.random.default_rng([s, 0xBE7A]).choice(len(setup.observations), replace=False,
                                                                   size=min(cfg.beta_states, len(setup.observations))))
               for s in seeds]
        self.beta_states = torch.as_tensor(np.stack([setup.observations[i] for i in idx]), device=dev)

    def policy_betas(self, obs: torch.Tensor, online: bool) -> torch.Tensor:
        """β of the universal model's loss: offline U[β_lo, β_hi] per sample; online a π_b sample, stop-gradient."""
        with torch.no_grad():
            if not online:
                return self.rng.uniform(self.cfg.beta_lo, self.cfg.beta_hi, obs.shape[1])
            return self.balance.rsample(obs, self.rng)[0]

    def update(self, batch: tuple[torch.Tensor, ...], online: bool) -> dict[str, torch.Tensor]:
        """One gradient step of every net of every seed in the official order; metrics (S,), no host sync."""
        if self.cfg.base == "iql":
            return self._update_iql(*batch, online=online)
        return self._update_awac(*batch, online=online)

    def _balance_and_alpha(self, obs: torch.Tensor, q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                           ) -> dict[str, torch.Tensor]:
        """Balance-model update on the frozen universal model and critic, then the temperature update."""
        alpha_all = self.log_alpha.exp()[:, :1]  # (S, 1); exp of the padded vector
        loss, entropy, beta = balance_model_loss(self.balance, self.policy, q_fn, obs, alpha_all.detach(), self.rng)
        _step(self.balance_opt, loss, list(self.balance.parameters()))
        # α again from log α (unchanged so far): the temperature loss gets a graph of its own, so that a compiled
        # update (one autograd node per region between graph breaks) never backpropagates through a node twice
        alpha = self.log_alpha.exp()[:, 0]
        _step(self.alpha_opt, temperature_loss(alpha, entropy, self.cfg.target_entropy), [self.log_alpha])
        return {"balance_loss": loss.detach(), "balance_entropy": entropy.detach(), "alpha": alpha_all.detach()[:, 0],
                "beta_balance": mean_per_member(beta.detach())}

    def _policy_step(self, obs: torch.Tensor, act: torch.Tensor, beta: torch.Tensor, adv: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        """Universal-model update (AWR with a per-sample β)."""
        loss = universal_policy_loss(self.policy, obs, act, beta, adv, self.cfg.exp_adv_max, self.cfg.awr_weight)
        _step(self.policy_opt, loss, list(self.policy.parameters()))
        return {"actor_loss": loss.detach(), "adv_mean": mean_per_member(adv), "beta_actor": mean_per_member(beta)}

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
            v_new, next_v = self.value(torch.cat([obs, next_obs], 1)).chunk(2, dim=1)  # one forward: V(s), V(s')
            adv = q_t - v_new
        policy_info = self._policy_step(obs, act, beta_u, adv)
        q_loss, q1 = iql.q_loss(self.q, next_v, obs, act, rew, done, cfg.discount)
        _step(self.q_opt, q_loss, list(self.q.parameters()))
        soft_update(self.q_target, self.q, cfg.tau)
        return {**info, **policy_info, "value_loss": v_loss.detach(), "q_loss": q_loss.detach(),
                "q1_mean": mean_per_member(q1), "v_mean": mean_per_member(v.detach())}

    def _update_awac(self, obs, act, rew, next_obs, done, online: bool) -> dict[str, torch.Tensor]:
        """Q (target from the balanced policy) → balance model → α → universal model → target."""
        cfg = self.cfg
        beta_u = self.policy_betas(obs, online)
        q_loss, q1 = awac.critic_loss(self.q, self.q_target, BalancedPolicy(self.policy, self.balance), obs, act, rew,
                                      next_obs, done, cfg.discount, self.rng)
        _step(self.q_opt, q_loss, list(self.q.parameters()))
        info = self._balance_and_alpha(obs, self.q)
        with torch.no_grad():
            pi_act = self.policy.rsample(obs, beta_u, self.rng).clamp(-1.0, 1.0)
            q_data, q_pi = self.q(torch.cat([obs, obs], 1), torch.cat([act, pi_act], 1)).chunk(2, dim=1)
            adv = q_data - q_pi
        policy_info = self._policy_step(obs, act, beta_u, adv)
        soft_update(self.q_target, self.q, cfg.tau)
        return {**info, **policy_info, "q_loss": q_loss.detach(), "q1_mean": mean_per_member(q1)}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """β from the balance model (deterministic); the mean action, or a sample of π_u for exploration."""
        acting = BalancedPolicy(self.policy, self.balance)
        return acting.sample(obs, self.rng) if explore else acting.act(obs)

    @torch.no_grad()
    def betas(self) -> torch.Tensor:
        """The balance model's deterministic β of each seed's summary states: (S, n)."""
        return self.balance.deterministic(self.beta_states)

    def eval_extras(self) -> list[dict[str, float]]:
        """evals.csv columns beta_mean … beta_q90 per seed, printed as well."""
        out = beta_summary(self.betas())
        for seed, row in zip(self.seeds, out):
            print(f"[{algorithm_name(self.cfg.base)} β seed {seed}] mean {row['beta_mean']:.3f} q10 "
                  f"{row['beta_q10']:.3f} q50 {row['beta_q50']:.3f} q90 {row['beta_q90']:.3f}", flush=True)
        return out

    def save_final(self, dirs: list[Path], active: list[bool]) -> None:
        """betas.npy (the final β of the summary states) and policy.pt (universal and balance models) per seed."""
        betas = self.betas().cpu().numpy()
        parts = split_members({"policy": self.policy.state_dict(), "balance": self.balance.state_dict()},
                              len(self.seeds))
        for s, (d, on) in enumerate(zip(dirs, active)):
            if on:
                atomic_save(d / "betas.npy", lambda f, s=s: np.save(f, betas[s]))
                cfg = config_dict(dataclasses.replace(self.cfg, seed=self.seeds[s], seeds=(), out=str(d)))
                atomic_save(d / "policy.pt", lambda f, s=s, cfg=cfg: torch.save({**parts[s], "config": cfg}, f))

    def _parts(self) -> dict[str, Any]:
        parts = {"policy": self.policy, "balance": self.balance, "q": self.q, "q_target": self.q_target,
                 "policy_opt": self.policy_opt, "balance_opt": self.balance_opt, "alpha_opt": self.alpha_opt,
                 "q_opt": self.q_opt, "rng": self.rng}
        if self.value is not None:
            parts.update(value=self.value, v_opt=self.v_opt)
        return parts

    def state_dict(self) -> dict[str, Any]:
        """Every net, optimiser, α and the random stream (member axis first)."""
        out = {k: m.state_dict() for k, m in self._parts().items()}
        out["log_alpha"] = self.log_alpha.detach().clone()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict()."""
        for k, m in self._parts().items():
            m.load_state_dict(state[k])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])


def algorithm(cfg: FamO2OConfig) -> Algorithm:
    """FamO2O on its base for the engine (o2o/loop.py)."""
    return Algorithm(algorithm_name(cfg.base), FamO2O, transforms)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 finished, 3 diverged, as baselines/iql.py)."""
    return loop.main(FamO2OConfig, presets, algorithm, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
