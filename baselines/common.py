"""Small network pieces shared by the baseline files (IQL, AWAC, CQL, ...): MLP, twin Q, Gaussian actor, Polyak update.

Kept deliberately small and stable: other algorithm files import from here. Initialisation is PyTorch's nn.Linear
default everywhere (as in CORL).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn as nn
from torch.distributions import Normal

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # CORL's clamp of the state-independent log-std (iql.py, awac.py)


def mlp(in_dim: int, out_dim: int, hidden_dim: int = 256, n_hidden: int = 2, dropout: float = 0.0,
        out_act: type[nn.Module] | None = None) -> nn.Sequential:
    """Linear-ReLU(-Dropout) × n_hidden, then a Linear to out_dim (and an optional output activation)."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(d, hidden_dim), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = hidden_dim
    layers.append(nn.Linear(d, out_dim))
    if out_act is not None:
        layers.append(out_act())
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """`n` independent Linear layers applied as one batched matmul: (n, B, in) -> (n, B, out)."""

    def __init__(self, n: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init (kaiming_uniform a=√5 ⇒ U(±1/√in)) per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class TwinQ(nn.Module):
    """Two Q(s, a) MLPs evaluated together (stacked parameters, one batched matmul per layer)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256, n_hidden: int = 2, n: int = 2) -> None:
        super().__init__()
        self.n = n
        dims = [obs_dim + act_dim, *([hidden_dim] * n_hidden), 1]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(EnsembleLinear(n, dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def all(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Every member's Q(s, a): shape (n, B)."""
        sa = torch.cat([obs, act], -1)
        return self.net(sa.unsqueeze(0).expand(self.n, *sa.shape)).squeeze(-1)

    def both(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(Q1(s, a), Q2(s, a)), each of shape (B,)."""
        return tuple(self.all(obs, act).unbind(0))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """min_i Q_i(s, a): shape (B,)."""
        return self.all(obs, act).min(0).values


class GaussianActor(nn.Module):
    """π(a|s) = N(μ(s), diag σ²): MLP mean (tanh-bounded when `tanh_mean`), state-independent learned log σ.

    The distribution itself is not tanh-squashed (CORL's IQL GaussianPolicy: tanh mean; CORL's AWAC Actor: raw mean).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256, n_hidden: int = 2, dropout: float = 0.0,
                 tanh_mean: bool = True) -> None:
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden_dim, n_hidden, dropout, nn.Tanh if tanh_mean else None)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: torch.Tensor) -> Normal:
        std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        return Normal(self.net(obs), std, validate_args=False)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log π(a|s) summed over action dims: shape (B,)."""
        return self(obs).log_prob(act).sum(-1)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        """a = μ(s) + σ·ε, ε ~ N(0, I), without gradient (NaN parameters give NaN actions rather than an error)."""
        with torch.no_grad():
            mu = self.net(obs)
            return mu + self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp() * torch.randn_like(mu)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic (evaluation) action: the mean."""
        return self.net(obs)


class DeterministicActor(nn.Module):
    """a = tanh(MLP(s)) (CORL's IQL DeterministicPolicy)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256, n_hidden: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden_dim, n_hidden, dropout, nn.Tanh)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic (evaluation) action."""
        return self.net(obs)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging θ' ← (1 − τ) θ' + τ θ, in place (one fused op per tensor list)."""
    tp, sp = list(target.parameters()), list(source.parameters())
    torch._foreach_lerp_(tp, sp, tau)


def adam(params: Iterable[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with PyTorch's defaults, fused kernel (same maths, ~3x faster step on CPU)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def truncate_csv(path: str | Path, step: int) -> None:
    """Keep the header and the rows whose first column (step) is <= `step` (a resumed run continues its curve)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(keep)
