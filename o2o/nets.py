"""Network building blocks with a leading member axis: S seeds' copies of a network trained as one module.

Every parameter has shape (S·k, ...): member s owns rows s·k … s·k + k − 1 (k = 1, or 2 for twin critics). Inputs and
outputs carry the seed axis first: a batch is (S, B, dim), a twin critic returns (S, 2, B). Each layer is one
batched matmul (`torch.baddbmm`) over the members, so S seeds cost one set of kernel launches; S = 1 is the ordinary
single-seed network. Members never mix: no op reduces over the member axis, so each seed's numbers are those it
would have alone (tests/test_engine.py).

Initialisation is per member from that seed's own `torch.Generator` (o2o.rng.member_generators), in a fixed order,
so a seed's initial weights do not depend on the other seeds in its pack. The schemes the sources use:
- "default": PyTorch's nn.Linear default, W and b ~ U(±1/√fan_in) (CORL's IQL and AWAC);
- "orthogonal": orthogonal W with gain √2 and zero bias (JaxCQL, FamO2O's official code), with the output layer's
  own gain (CQL: 1e-2);
- `out_init="xavier"`: the output layer xavier-uniform with a small gain and zero bias (CORL's CQL actor without
  orthogonal init: "small output layer");
- "trunc_normal": W ~ N(0, 1/(4·fan_in)) truncated to ±2, zero bias (the MBPO/MOBILE dynamics ensembles).
Random numbers at run time (sampling, dropout) come from a MemberRNG (o2o.rng), never from torch's global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from o2o.rng import MemberRNG

LOG_2PI = math.log(2.0 * math.pi)
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "swish": F.silu}  # the hidden activations MLP offers
# Elements per seed of a small per-seed parameter (log σ, α): a multiple of every SIMD block, so exp/log of a seed's
# values run through the same vectorised code whatever S is (a scalar tail would round differently).
MEMBER_PAD = 64


# The layout of EnsembleLinear's parameters in state dicts and checkpoints; bumped when it changes (checkpoints
# record it, and a run of another layout is refused on --resume rather than loaded wrongly).
NETS_LAYOUT = 3


def member_parameter(members: int, n: int, value: float) -> nn.Parameter:
    """A per-seed vector of n values (all `value`), stored padded to (S, MEMBER_PAD·k); use `[:, :n]` of a function
    of it. The padding never gets a gradient, so Adam leaves it as it is."""
    return nn.Parameter(torch.full((members, MEMBER_PAD * math.ceil(n / MEMBER_PAD)), float(value)))


def member_block(members: int, rows: int, cols: int) -> nn.Parameter:
    """Zeros for a (rows, cols) block per seed: stored as it is, (S, rows, cols), when rows·cols is a whole number of
    MEMBER_PAD blocks, otherwise flat and padded (member_parameter); `block_view` gives the (S, rows, cols) view."""
    if rows * cols % MEMBER_PAD == 0:
        return nn.Parameter(torch.zeros(members, rows, cols))
    return member_parameter(members, rows * cols, 0.0)


def block_view(param: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(S, rows, cols) view of a member_block (the block itself when it is stored unpadded)."""
    return param if param.dim() == 3 else param[:, :rows * cols].view(-1, rows, cols)


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------
class NarrowMatmul(torch.autograd.Function):
    """x (M, B, in) · wᵀ + b for a weight stored in nn.Linear's layout, w (M, cols, in), with the weight gradient
    computed as gᵀ·x (M, cols, in) rather than xᵀ·g (M, in, cols), autograd's order for baddbmm.

    MKL's batched matmuls whose result has few columns (2 to 8) run several times slower than the same products with
    the narrow operand transposed, so on a CPU the xᵀ·g gradient of a narrow layer (a critic's or value head, a
    locomotion actor's mean) can cost more than its 256 × 256 hidden layers. Whether that outweighs this Function's
    Python cost depends on the processor (`narrow_matmul_pays`). Both orders are exact at any M: a member's numbers
    never depend on the other members (tests/test_engine.py).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return torch.baddbmm(b, x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        return (torch.bmm(grad, w) if need_x else None,
                torch.bmm(grad.transpose(1, 2), x) if need_w else None,
                grad.sum(1, keepdim=True) if need_b else None)


NARROW = 16  # a layer of fewer output columns is stored (M, cols, in), nn.Linear's layout


def cpu_vendor() -> str:
    """The processor's vendor id (GenuineIntel, AuthenticAMD, ...; '' where /proc/cpuinfo does not say)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def narrow_matmul_pays(vendor: str | None = None, mkl: bool | None = None) -> bool:
    """Whether a CPU run computes narrow layers' weight gradients with NarrowMatmul: where torch's BLAS is MKL on an
    AMD processor (this machine's by default). Elsewhere (other processors, other BLAS, CUDA) autograd's own order.

    Both processors measured so far run MKL's xᵀ·g several times slower than gᵀ·x, but only on the AMD EPYC does the
    difference outweigh the Function's Python cost: there the single-seed updates run faster with it, on the Intel
    Xeon slower, with the same numbers (README, Benchmarks; benchmarks/bench_engine.py::test_narrow_matmul_choice).
    """
    vendor = cpu_vendor() if vendor is None else vendor
    mkl = torch.backends.mkl.is_available() if mkl is None else mkl
    return mkl and vendor == "AuthenticAMD"


NARROW_MATMUL = narrow_matmul_pays()  # this process's choice for narrow layers with a weight gradient on a CPU


class EnsembleLinear(nn.Module):
    """M independent Linear layers as one batched matmul: (M, B, in) -> (M, B, out).

    Each member's weight and bias (1, cols) are member_blocks (`weight_store`, `bias_store`): stored as they are
    when their size is a whole number of MEMBER_PAD elements, else flat and padded to one, so the fused optimisers
    run every member's values through the same vectorised code whatever M is and a seed gets bit-identical updates
    alone and packed (their tail loops round differently). The weight block is (in, cols), or (cols, in), nn.Linear's
    layout, for a narrow layer (cols < NARROW; its weight gradient by NarrowMatmul where that pays). cols = out, except
    for a scalar head (out = 1): batched GEMV kernels round differently for 1 and M members, so a head is stored with
    a second output of zeros and runs as a 2-column GEMM (exact at any M) whose first column is kept; no gradient
    reaches the zero column, so it stays zero. `weight` (M, in, out) and `bias` (M, 1, out) are views of the real
    values whatever the layout.
    """

    def __init__(self, members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.cols = 2 if out_dim == 1 else out_dim
        self.narrow = self.cols < NARROW
        self.weight_shape = (self.cols, in_dim) if self.narrow else (in_dim, self.cols)  # one member's block
        self.weight_store = member_block(members, *self.weight_shape)
        self.bias_store = member_block(members, 1, self.cols)

    def stored(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight (M, *weight_shape) and bias (M, 1, cols) as the forward uses them (a head's zero column included)."""
        return block_view(self.weight_store, *self.weight_shape), block_view(self.bias_store, 1, self.cols)

    def columns(self, t: torch.Tensor) -> torch.Tensor:
        """The real columns (..., out) of a (..., cols) tensor: a head's zero column left out."""
        return t if self.cols == self.out_dim else t[..., :self.out_dim]

    def real_weight(self, store: torch.Tensor) -> torch.Tensor:
        """The real values of weight_store or of its gradient, (M, *weight_shape) less a head's zero output, in the
        stored order."""
        w = block_view(store, *self.weight_shape)
        return w[:, :self.out_dim] if self.narrow else w

    def in_out(self, store: torch.Tensor) -> torch.Tensor:
        """(M, in, out) view of weight_store or of its gradient, whatever the layout."""
        w = self.real_weight(store)
        return w.transpose(1, 2) if self.narrow else w

    @property
    def weight(self) -> torch.Tensor:
        """(M, in, out) view of weight_store."""
        return self.in_out(self.weight_store)

    @property
    def bias(self) -> torch.Tensor:
        """(M, 1, out) view of bias_store."""
        return self.columns(block_view(self.bias_store, 1, self.cols))

    @torch.no_grad()
    def init_member_(self, m: int, gen: torch.Generator, scheme: str = "default", gain: float = 1.0) -> None:
        """Initialise member m from `gen`: 'default' (nn.Linear's), 'orthogonal' or 'xavier' (with `gain`), or
        'trunc_normal' (std 1/(2√fan_in), truncated at ±2; `gain` unused)."""
        w = torch.empty(self.out_dim, self.in_dim)  # nn.Linear's (out, in) layout, so the draws match an nn.Linear's
        b = torch.zeros(self.out_dim)
        if scheme == "default":
            bound = 1.0 / math.sqrt(self.in_dim)
            w.uniform_(-bound, bound, generator=gen)
            b.uniform_(-bound, bound, generator=gen)
        elif scheme == "orthogonal":
            nn.init.orthogonal_(w, gain=gain, generator=gen)
        elif scheme == "xavier":
            nn.init.xavier_uniform_(w, gain=gain, generator=gen)
        elif scheme == "trunc_normal":
            nn.init.trunc_normal_(w, std=1.0 / (2.0 * math.sqrt(self.in_dim)), generator=gen)
        else:
            raise ValueError(f"unknown init scheme {scheme!r} (default | orthogonal | xavier | trunc_normal)")
        self.weight[m].copy_(w.T)
        self.bias[m, 0].copy_(b)

    def forward(self, x: torch.Tensor, detach: bool = False, rows: torch.Tensor | None = None) -> torch.Tensor:
        """x (M, B, in) -> (M, B, out); `detach` uses detached weights (gradients reach x only); `rows` (M',) runs
        those members only, x (M', B, in)."""
        w, b = self.stored()
        if detach:
            w, b = w.detach(), b.detach()
        if rows is not None:
            w, b = w[rows], b[rows]
        if not self.narrow:
            return torch.baddbmm(b, x, w)
        if NARROW_MATMUL and w.requires_grad and torch.is_grad_enabled() and x.device.type == "cpu":
            return self.columns(NarrowMatmul.apply(x, w, b))
        return self.columns(torch.baddbmm(b, x, w.transpose(1, 2)))  # NarrowMatmul's forward, autograd's backward


class MLP(nn.Module):
    """MLP with a member axis: Linear-activation(-Dropout) × n_hidden, then Linear (and tanh when `out_tanh`).

    `activation`: relu (default), tanh or swish (ACTIVATIONS).
    gens: one generator per seed; `copies` networks per seed (2 for twin critics) are initialised from it in turn.
    Dropout masks come from `rng` (the seed's stream), drawn only in training mode.
    """

    def __init__(self, in_dim: int, out_dim: int, gens: Sequence[torch.Generator], hidden_dim: int = 256,
                 n_hidden: int = 2, copies: int = 1, init: str = "default", hidden_gain: float = math.sqrt(2.0),
                 out_init: str | None = None, out_gain: float | None = None, dropout: float = 0.0,
                 rng: MemberRNG | None = None, out_tanh: bool = False, activation: str = "relu") -> None:
        super().__init__()
        if dropout > 0 and (rng is None or copies != 1):
            raise ValueError("dropout needs the members' MemberRNG and one copy per seed")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r} ({' | '.join(ACTIVATIONS)})")
        self.act_fn = ACTIVATIONS[activation]
        self.seeds, self.copies = len(gens), copies
        self.dropout, self.rng, self.out_tanh = float(dropout), rng, out_tanh
        dims = [in_dim, *([hidden_dim] * n_hidden), out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(len(gens) * copies, i, o) for i, o in zip(dims[:-1], dims[1:]))
        schemes = [(init, hidden_gain)] * n_hidden + [(out_init or init, hidden_gain if out_gain is None else out_gain)]
        for layer, (scheme, gain) in zip(self.layers, schemes):
            for s, gen in enumerate(gens):
                for c in range(copies):
                    layer.init_member_(s * copies + c, gen, scheme, gain)

    def forward(self, x: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """x (S·copies, B, in) -> (S·copies, B, out)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, detach)
            if i < last:
                # ReLU in place (the matmul's backward needs its inputs, not its output); the others out of place
                x = torch.relu_(x) if self.act_fn is F.relu else self.act_fn(x)
                if self.dropout > 0 and self.training:
                    keep = self.rng.rand(*x.shape[1:]) >= self.dropout
                    x = x * keep / (1.0 - self.dropout)
        return torch.tanh(x) if self.out_tanh else x


# ----------------------------------------------------------------------------------------------------------------
# Critics
# ----------------------------------------------------------------------------------------------------------------
class TwinQ(nn.Module):
    """n Q(s, a) networks per seed (twin critics, n = 2), one module: parameters (S·n, ...)."""

    def __init__(self, obs_dim: int, act_dim: int, gens: Sequence[torch.Generator], hidden_dim: int = 256,
                 n_hidden: int = 2, n: int = 2, **init: Any) -> None:
        super().__init__()
        self.n = n
        self.net = MLP(obs_dim + act_dim, 1, gens, hidden_dim, n_hidden, copies=n, **init)

    def all(self, obs: torch.Tensor, act: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """Every critic's Q: obs (S, B, do), act (S, B, da) -> (S, n, B); act (S, B, K, da) -> (S, n, B, K)."""
        s, lead = act.shape[0], act.shape[1:-1]
        if act.dim() == 4:
            obs = obs.unsqueeze(2).expand(-1, -1, act.shape[2], -1)
        x = torch.cat([obs, act], -1).reshape(s, 1, -1, obs.shape[-1] + act.shape[-1])
        x = x.expand(-1, self.n, -1, -1).reshape(s * self.n, x.shape[2], x.shape[3])
        return self.net(x, detach).view(s, self.n, *lead)

    def forward(self, obs: torch.Tensor, act: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """min over the critics: (S, B) (or (S, B, K))."""
        return self.all(obs, act, detach).min(1).values


class ValueNet(nn.Module):
    """V(s): shape (S, B)."""

    def __init__(self, obs_dim: int, gens: Sequence[torch.Generator], hidden_dim: int = 256, n_hidden: int = 2,
                 **init: Any) -> None:
        super().__init__()
        self.net = MLP(obs_dim, 1, gens, hidden_dim, n_hidden, **init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


# ----------------------------------------------------------------------------------------------------------------
# Actors
# ----------------------------------------------------------------------------------------------------------------
def normal_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, std²) (no argument validation, so NaN reaches the divergence checks)."""
    return -0.5 * ((x - mean) / std).square() - std.log() - 0.5 * LOG_2PI


def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """log |d tanh(u) / du| = log(1 − tanh²u) = 2 (log 2 − u − softplus(−2u)), the numerically stable form."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


class GaussianActor(nn.Module):
    """π(a|s) = N(μ(s), diag σ²), not squashed: MLP mean (tanh-bounded when `tanh_mean`), learned state-independent
    log σ clamped to [log_std_min, log_std_max] (CORL's IQL GaussianPolicy: tanh mean; CORL's AWAC Actor: raw mean;
    FamO2O's universal model: tanh mean, clamp [−5, 2])."""

    def __init__(self, obs_dim: int, act_dim: int, gens: Sequence[torch.Generator], hidden_dim: int = 256,
                 n_hidden: int = 2, tanh_mean: bool = True, log_std_min: float = -20.0, log_std_max: float = 2.0,
                 **mlp_kw: Any) -> None:
        super().__init__()
        self.net = MLP(obs_dim, act_dim, gens, hidden_dim, n_hidden, out_tanh=tanh_mean, **mlp_kw)
        self.act_dim = act_dim
        self.log_std = member_parameter(len(gens), act_dim, 0.0)
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)

    def _log_std(self) -> torch.Tensor:
        return self.log_std.clamp(self.log_std_min, self.log_std_max)

    def std(self) -> torch.Tensor:
        """σ, shape (S, 1, act_dim)."""
        return self._log_std().exp()[:, :self.act_dim].unsqueeze(1)

    def mean_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ(s) (S, B, act_dim) and log σ (S, 1, act_dim), which broadcasts against it."""
        return self.net(obs), self._log_std()[:, :self.act_dim].unsqueeze(1)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log π(a|s) summed over action dims: (S, B)."""
        return self._log_prob_at(self.net(obs), act)

    def _log_prob_at(self, mean: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log N(a; μ, σ²) summed over action dims, for the mean μ of a forward already made."""
        log_std = self._log_std()[:, :self.act_dim].unsqueeze(1)
        return (-0.5 * ((act - mean) / log_std.exp()).square() - log_std - 0.5 * LOG_2PI).sum(-1)

    def rsample(self, obs: torch.Tensor, rng: MemberRNG) -> torch.Tensor:
        """a = μ(s) + σ ε, ε from the members' streams (reparameterised)."""
        mean = self.net(obs)
        return mean + self.std() * rng.randn(*mean.shape[1:])

    def log_prob_and_sample(self, obs: torch.Tensor, act: torch.Tensor, rng: MemberRNG
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(a|s) (S, B) and a sample ã ~ π(·|s) without gradient, from one forward of the mean network: the
        same numbers as `log_prob` and `sample` called one after the other (same parameters, same draw)."""
        mean = self.net(obs)
        log_prob = self._log_prob_at(mean, act)
        with torch.no_grad():
            sample = mean.detach() + self.std() * rng.randn(*mean.shape[1:])
        return log_prob, sample

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, rng: MemberRNG) -> torch.Tensor:
        """rsample without gradient (NaN parameters give NaN actions rather than an error)."""
        return self.rsample(obs, rng)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic (evaluation) action: the mean."""
        return self.net(obs)


class DeterministicActor(nn.Module):
    """a = tanh(MLP(s)) (CORL's IQL DeterministicPolicy)."""

    def __init__(self, obs_dim: int, act_dim: int, gens: Sequence[torch.Generator], hidden_dim: int = 256,
                 n_hidden: int = 2, **mlp_kw: Any) -> None:
        super().__init__()
        self.net = MLP(obs_dim, act_dim, gens, hidden_dim, n_hidden, out_tanh=True, **mlp_kw)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic (evaluation) action."""
        return self.net(obs)


class TanhGaussianActor(nn.Module):
    """π(a|s) = max_action · tanh(u), u ~ N(μ(s), σ²): the tanh-squashed Gaussian of SAC/CQL.

    log σ is `state` dependent (the MLP outputs [μ, raw] and log σ = m · raw + c with learned scalars m and c per
    seed, JaxCQL/CORL) or a state-independent `param` (FamO2O's balance model), clamped to [log_std_min, max].
    """

    def __init__(self, obs_dim: int, act_dim: int, gens: Sequence[torch.Generator], hidden_dim: int = 256,
                 n_hidden: int = 2, max_action: float = 1.0, log_std: str = "state", log_std_min: float = -20.0,
                 log_std_max: float = 2.0, log_std_multiplier: float = 1.0, log_std_offset: float = -1.0,
                 **mlp_kw: Any) -> None:
        super().__init__()
        if log_std not in ("state", "param"):
            raise ValueError(f"log_std must be 'state' or 'param', not {log_std!r}")
        s = len(gens)
        self.act_dim, self.max_action, self.log_std_kind = act_dim, float(max_action), log_std
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)
        self.net = MLP(obs_dim, (2 if log_std == "state" else 1) * act_dim, gens, hidden_dim, n_hidden, **mlp_kw)
        if log_std == "state":
            self.log_std_multiplier = member_parameter(s, 1, log_std_multiplier)
            self.log_std_offset = member_parameter(s, 1, log_std_offset)
        else:
            self.log_std = member_parameter(s, act_dim, 0.0)

    def dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clamped log σ of the pre-tanh Gaussian, each (S, B, act_dim)."""
        out = self.net(obs)
        if self.log_std_kind == "state":
            mean, raw = out.split(self.act_dim, dim=-1)
            log_std = self.log_std_multiplier[:, :1, None] * raw + self.log_std_offset[:, :1, None]
        else:
            mean, log_std = out, self.log_std[:, None, :self.act_dim].expand_as(out)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample_from(self, mean: torch.Tensor, log_std: torch.Tensor, rng: MemberRNG,
                    n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n reparameterised samples per state: actions (S, B, n, act_dim) and log π (S, B, n)."""
        eps = rng.randn(mean.shape[1], n, mean.shape[-1])
        u = mean.unsqueeze(2) + log_std.exp().unsqueeze(2) * eps
        logp = (-0.5 * eps.square() - log_std.unsqueeze(2) - 0.5 * LOG_2PI - tanh_log_det(u)).sum(-1)
        return self.max_action * torch.tanh(u), logp

    def rsample(self, obs: torch.Tensor, rng: MemberRNG, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample n actions per state (with gradient)."""
        return self.sample_from(*self.dist(obs), rng, n)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log π(a|s) of actions (S, B, act_dim), clipped to ±(1 − 1e-5) before atanh: (S, B)."""
        mean, log_std = self.dist(obs)
        u = torch.atanh((actions / self.max_action).clamp(-1 + 1e-5, 1 - 1e-5))
        return (normal_log_prob(u, mean, log_std.exp()) - tanh_log_det(u)).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action max_action · tanh(μ(s)) (evaluation)."""
        return self.max_action * torch.tanh(self.dist(obs)[0])


# ----------------------------------------------------------------------------------------------------------------
# Optimisation helpers and the member axis of states
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging θ' ← (1 − τ) θ' + τ θ, in place (one fused op for all tensors)."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def adam(params: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with PyTorch's defaults and the fused kernel; elementwise, so members stay independent."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def mean_per_member(x: torch.Tensor) -> torch.Tensor:
    """Each seed's own mean over everything but the leading member axis: (S, ...) -> (S,)."""
    return x.reshape(x.shape[0], -1).mean(1)


def split_members(state: Any, members: int) -> list[Any]:
    """Split a nested state (dicts, lists, tensors) along the member axis into `members` states.

    Every tensor with at least one dimension has S·k leading rows (member s: rows s·k … s·k + k − 1); 0-dim tensors
    and Python values are shared (optimiser step counts, schedules) and copied into every part.
    """
    if isinstance(state, dict):
        parts = {k: split_members(v, members) for k, v in state.items()}
        return [{k: parts[k][i] for k in state} for i in range(members)]
    if isinstance(state, (list, tuple)):
        parts = [split_members(v, members) for v in state]
        return [type(state)(p[i] for p in parts) for i in range(members)]
    if isinstance(state, torch.Tensor) and state.dim() > 0:
        if state.shape[0] % members:
            raise ValueError(f"a state tensor of shape {tuple(state.shape)} has no member axis of {members}")
        k = state.shape[0] // members
        return [state[i * k:(i + 1) * k].clone() for i in range(members)]
    return [state] * members


def join_members(states: Sequence[Any]) -> Any:
    """Inverse of split_members: concatenate member tensors, keep the first member's shared values."""
    first = states[0]
    if isinstance(first, dict):
        return {k: join_members([s[k] for s in states]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(join_members([s[i] for s in states]) for i in range(len(first)))
    if isinstance(first, torch.Tensor) and first.dim() > 0:
        return torch.cat(list(states), 0)
    return first


# ----------------------------------------------------------------------------------------------------------------
# Ensembles within a seed: `copies` networks per seed on the same member axis (S·copies, ...)
# ----------------------------------------------------------------------------------------------------------------
class BoundedGaussianActor(nn.Module):
    """π(a|s) = N(μ(s), σ(s)²) with both from one tanh-ended MLP: tanh(MLP(s)) = [μ, t], μ ∈ (−1, 1) and
    log σ = lo + (hi − lo)(t + 1)/2 ∈ (lo, hi) (BPPO's and Uni-O4's GaussPolicyMLP: orthogonal init, (lo, hi) =
    (−5, 0)). `copies` policies per seed (an ensemble): parameters (S·copies, ...), inputs (S·copies, B, obs_dim)."""

    def __init__(self, obs_dim: int, act_dim: int, gens: Sequence[torch.Generator], hidden_dim: int = 256,
                 n_hidden: int = 2, copies: int = 1, log_std_range: tuple[float, float] = (-5.0, 0.0),
                 **mlp_kw: Any) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.copies = obs_dim, act_dim, copies
        self.log_std_range = (float(log_std_range[0]), float(log_std_range[1]))
        self.net = MLP(obs_dim, 2 * act_dim, gens, hidden_dim, n_hidden, copies=copies, out_tanh=True, **mlp_kw)

    def mean_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ(s) and log σ(s), each (M, B, act_dim)."""
        mean, t = self.net(obs).split(self.act_dim, dim=-1)
        lo, hi = self.log_std_range
        return mean, lo + 0.5 * (hi - lo) * (t + 1.0)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log π(a|s) summed over action dims: (M, B)."""
        mean, log_std = self.mean_log_std(obs)
        return normal_log_prob(act, mean, log_std.exp()).sum(-1)

    def rsample(self, obs: torch.Tensor, rng: MemberRNG) -> torch.Tensor:
        """a = μ(s) + σ(s) ε with ε from the seeds' streams: rng has S members, obs S·copies rows of members."""
        mean, log_std = self.mean_log_std(obs)
        eps = rng.randn(self.copies, *mean.shape[1:]).reshape(mean.shape)
        return mean + log_std.exp() * eps

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic (evaluation) action: the mean."""
        return self.mean_log_std(obs)[0]


def soft_clamp(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """x squashed into (low, high) by two softplus walls, keeping a gradient everywhere (PETS/MBPO's logvar bounds)."""
    x = high - F.softplus(high - x)
    return low + F.softplus(x - low)


class ProbabilisticEnsemble(nn.Module):
    """`copies` Gaussian regressors per seed, p_k(y|x) = N(μ_k(x), diag exp(logvar_k(x))): the dynamics ensembles of
    PETS/MBPO/MOPO/MOBILE. A Swish MLP with trunc-normal init; inputs z-scored with each seed's own statistics
    (`set_input_stats`); log-variance soft-clamped into per-seed learned bounds (init −10 and 0.5). Each seed keeps
    the indices of its `elites` best members (set by the trainer) for `sample`."""

    def __init__(self, in_dim: int, out_dim: int, gens: Sequence[torch.Generator], copies: int = 7, elites: int = 5,
                 hidden_dim: int = 200, n_hidden: int = 4) -> None:
        super().__init__()
        s = len(gens)
        self.in_dim, self.out_dim, self.copies, self.seeds = in_dim, out_dim, copies, s
        self.net = MLP(in_dim, 2 * out_dim, gens, hidden_dim, n_hidden, copies=copies, init="trunc_normal",
                       activation="swish")
        self.max_logvar = member_parameter(s, out_dim, 0.5)
        self.min_logvar = member_parameter(s, out_dim, -10.0)
        self.register_buffer("in_mean", torch.zeros(s, in_dim))
        self.register_buffer("in_std", torch.ones(s, in_dim))
        self.register_buffer("elites", torch.arange(elites).repeat(s, 1))

    @torch.no_grad()
    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-seed input mean and std (S, in_dim); a std below 1e-12 becomes 1."""
        self.in_mean.copy_(mean)
        self.in_std.copy_(torch.where(std < 1e-12, torch.ones_like(std), std))

    def _heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = h.split(self.out_dim, dim=-1)
        low = self.min_logvar[:, None, None, :self.out_dim]
        high = self.max_logvar[:, None, None, :self.out_dim]
        return mean, soft_clamp(raw, low, high)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (S, copies, B, in) -> mean and log-variance of y, each (S, copies, B, out)."""
        s, k, b, _ = x.shape
        z = (x - self.in_mean[:, None, None]) / self.in_std[:, None, None]
        h = self.net(z.reshape(s * k, b, self.in_dim)).view(s, k, b, -1)
        return self._heads(h)

    def elite_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The elites only, on the same rows: x (S, B, in) -> mean, log-variance (S, elites, B, out)."""
        s, b, _ = x.shape
        e = self.elites.shape[1]
        rows = (self.elites + torch.arange(s, device=x.device).unsqueeze(1) * self.copies).reshape(-1)
        h = ((x - self.in_mean[:, None]) / self.in_std[:, None]).unsqueeze(1).expand(s, e, b, self.in_dim)
        h = h.reshape(s * e, b, self.in_dim)
        last = len(self.net.layers) - 1
        for i, layer in enumerate(self.net.layers):
            h = layer(h, rows=rows)
            if i < last:
                h = F.silu(h)
        return self._heads(h.view(s, e, b, -1))

    @torch.no_grad()
    def sample(self, x: torch.Tensor, rng: MemberRNG) -> torch.Tensor:
        """y for each row of x (S, B, in) from one elite drawn at random per row: (S, B, out) (MBPO's step)."""
        mean, logvar = self.elite_forward(x)
        s, e, b, d = mean.shape
        draw = mean + rng.randn(e, b, d) * (0.5 * logvar).exp()
        pick = rng.randint(e, b)  # (S, B)
        return torch.gather(draw, 1, pick[:, None, :, None].expand(s, 1, b, d)).squeeze(1)


def clip_grad_norm_per_member(module: nn.Module, max_norm: float, members: int) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ over `module`'s parameters for each of `members` members separately
    (parameters with a member axis of members·k rows; no host sync). A scalar head's zero column (EnsembleLinear) is
    left out of the norm, so the sum runs over the values a plain layer has, in their order. Returns the norms
    before clipping, (members,)."""
    grads = []  # (members, n) per parameter, in module.parameters() order
    for mod in module.modules():
        for name, p in mod.named_parameters(recurse=False):
            if p.grad is None:
                continue
            g = p.grad
            if isinstance(mod, EnsembleLinear) and name == "weight_store" and mod.cols != mod.out_dim:
                g = mod.real_weight(g)  # flat and padded unless in·2 fills blocks
            grads.append(g.reshape(members, -1))
    norms = sum(g.square().sum(1) for g in grads).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in module.parameters():
        if p.grad is not None:
            p.grad.mul_(scale.view(-1, *([1] * (p.dim() - 1))).repeat_interleave(p.shape[0] // members, 0))
    return norms
