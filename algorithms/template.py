"""BC: behaviour cloning on the engine, and the template for your own algorithm (README, "Add your algorithm").

Plain BC as CORL runs it (corl-team/CORL, algorithms/offline/any_percent_bc.py with frac 1.0, configs/offline/bc/*):
a tanh-MLP actor (2 × 256, ReLU) trained with Adam (lr 3e-4, batch 256, 1M steps) on one loss,
  L_BC(φ) = E_(s,a)~D [ ‖max_action · π_φ(s) − a‖² ] / act_dim                                  (CORL: F.mse_loss)
on z-scored states. It is also the reference row of every table: the score of imitating the data.

To make your own algorithm: copy this file, rename ALGORITHM (the name in the run records, tables and figures),
put your hyperparameters in the config, your losses under "Losses", and your networks and update in the agent.
The engine (o2o/loop.py) does the rest, the same way for every algorithm on it:
- seeds: `--seeds 0,1,2` trains S seeds in one process, every tensor with a leading seed axis (o2o/nets.py); each
  seed's numbers equal those it gets alone as long as random numbers come from a MemberRNG, losses are each seed's
  own mean (mean_per_member) and the optimiser steps on their sum;
- data: the dataset loaded once, transformed as `transforms` says, sampled per seed; online rows per seed;
- protocol: `--offline-steps` gradient steps, then `--online-steps` env steps with one update after each;
- evaluation every `--eval-every` steps in a vector env, the run records (summary.json, evals.csv, episodes.csv,
  metrics.csv from the dict `update` returns), checkpoints and exact `--resume`, divergence per seed;
- the device: `--device cuda` moves the data and the agent's networks; `--compile true` compiles the update.

Usage:
  python algorithms/template.py --dataset local:hopper-medium --seeds 0,1,2 --budget smoke --device cpu
  python algorithms/template.py --dataset hopper-medium-v2 --online-steps 100000   # offline, then online
  python -m o2o.suite compare offline algorithms/template.py --budget smoke        # beside the baselines
Every config field is a flag (`--help` lists them with their defaults). Exit status: 0 finished, 3 diverged, 1 failed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

if __package__ in (None, ""):  # `python algorithms/template.py` from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from o2o import loop
from o2o.cli import steps
from o2o.loop import Algorithm, LoopConfig, Setup, Transforms
from o2o.nets import DeterministicActor, adam, mean_per_member
from o2o.presets import run_preset
from o2o.registry import DatasetSpec
from o2o.rng import MemberRNG, member_generators

ALGORITHM = "bc"  # the run records' `algorithm`: rename it in your copy


# ----------------------------------------------------------------------------------------------------------------------
# Config and presets (README, "Presets"); LoopConfig brings the engine's flags (--seeds, --offline-steps, ...)
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class BCConfig(LoopConfig):
    """BC run: the engine's fields plus BC's (defaults = CORL's)."""

    offline_steps: int = steps(1_000_000, 1000)  # gradient steps offline (CORL max_timesteps); --budget scales it
    actor_lr: float = 3e-4  # Adam learning rate of the actor (CORL learning_rate)
    hidden_dim: int = 256  # width of the actor's hidden layers (CORL 256)
    n_hidden: int = 2  # hidden layers of the actor (CORL 2)
    expl_noise: float = 0.1  # online exploration: N(0, (expl_noise · max_action)²) added to the action (TD3's 0.1)
    normalize_states: bool = True  # z-score observations with the dataset's statistics (CORL normalize)

    RENAMED: ClassVar[dict[str, str]] = {"lr": "actor_lr"}  # old flag -> field (the old one warns for a release)


def presets(cfg: BCConfig, spec: DatasetSpec) -> dict[str, Any]:
    """The dataset's preset: configs/<ALGORITHM>/<--preset>/<dataset or domain>.yaml (configs/bc/corl/ holds CORL's
    BC configs; a copy of this file under another name starts without presets until you add its folder)."""
    return run_preset(ALGORITHM, cfg, spec)


def transforms(cfg: BCConfig, spec: DatasetSpec) -> Transforms:
    """State z-scoring only: BC reads no reward."""
    return Transforms(normalize_states=cfg.normalize_states)


# ----------------------------------------------------------------------------------------------------------------------
# Losses: each returns every seed's own mean, shape (S,); the optimiser steps on their sum (seeds never mix)
# ----------------------------------------------------------------------------------------------------------------------
def bc_loss(actor: DeterministicActor, obs: torch.Tensor, act: torch.Tensor, max_action: float) -> torch.Tensor:
    """L_BC: mean squared error between max_action · π(s) and the dataset action, per seed: (S, B, ·) -> (S,)."""
    return mean_per_member((max_action * actor(obs) - act).square())


# ----------------------------------------------------------------------------------------------------------------------
# The agent: S seeds' networks and optimisers (the engine's Agent interface, o2o/loop.py)
# ----------------------------------------------------------------------------------------------------------------------
class BC:
    """One deterministic actor per seed; one `update` is one gradient step of every seed."""

    def __init__(self, cfg: BCConfig, setup: Setup) -> None:
        self.cfg, self.max_action = cfg, setup.max_action
        self.rng = MemberRNG(setup.seeds, ALGORITHM, setup.device)  # every run-time random number comes from here
        gens = member_generators(setup.seeds, f"{ALGORITHM}/actor")  # each seed's initial weights from its own seed
        self.actor = DeterministicActor(setup.obs_dim, setup.act_dim, gens, cfg.hidden_dim, cfg.n_hidden)
        self.actor.to(setup.device)
        self.opt = adam(self.actor.parameters(), cfg.actor_lr)

    def update(self, batch: loop.Batch, online: bool) -> dict[str, torch.Tensor]:
        """One step on a batch (obs, act, rew, next_obs, done), each (S, B, ...); metrics (S,) go to metrics.csv."""
        obs, act, _, _, _ = batch
        loss = bc_loss(self.actor, obs, act, self.max_action)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.opt.step()
        return {"bc_loss": loss.detach()}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """Actions (S, N, act_dim): the actor's, plus Gaussian noise online (explore), within ±max_action."""
        a = self.max_action * self.actor(obs)
        if explore:
            a = a + self.cfg.expl_noise * self.max_action * self.rng.randn(*a.shape[1:])
        return a.clamp(-self.max_action, self.max_action)

    def state_dict(self) -> dict[str, Any]:
        """Everything trainable, for checkpoints (the seed axis first)."""
        return {"actor": self.actor.state_dict(), "opt": self.opt.state_dict(), "rng": self.rng.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict()."""
        for k in ("actor", "opt", "rng"):
            getattr(self, k).load_state_dict(state[k])


def algorithm(cfg: BCConfig) -> Algorithm:
    """BC for the engine: its record name, how to build the agent, its data transforms."""
    return Algorithm(ALGORITHM, BC, transforms)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 finished, 3 diverged)."""
    return loop.main(BCConfig, presets, algorithm, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
