"""AWAC (baselines/awac.py): losses against hand-computed values (each seed's own mean), behaviour on problems with a
known answer, presets and flags, and AWAC's own record content. The engine's generic duties (packed = alone, resume,
divergence, checkpoints, records columns) are tested once in tests/test_engine.py."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines import awac
from o2o.cli import configure
from o2o.nets import GaussianActor, TwinQ
from o2o.rng import MemberRNG, member_generators

from .conftest import bandit_data, chain_data, train_agent

TINY = ["--hidden-dim", "32", "--batch-size", "64", "--eval-episodes", "1", "--device", "cpu", "--budget", "smoke"]
SEEDS = [0, 1]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_main(file: str, out: Path, *extra: str, env: str = "Hopper-v5") -> int:
    return awac.main(["--dataset", file, "--env", env, "--out", str(out), *TINY, *extra])


# ---------------------------------------------------------------------------------------------------------- losses
def test_awac_weights_hand_computed():
    adv = torch.tensor([[-0.2, 0.0, 0.1, 1.0]])
    w = awac.awac_weights(adv, 1 / 3)
    assert w[0].tolist() == pytest.approx([math.exp(-0.6), 1.0, math.exp(0.3), math.exp(3.0)], rel=1e-5)
    assert awac.awac_weights(adv, 0.1)[0, -1].item() == pytest.approx(100.0)  # exp(10) ≈ 22026 is clipped at 100


def small_nets() -> tuple[GaussianActor, TwinQ, TwinQ, tuple[torch.Tensor, ...]]:
    """Two seeds' actor, critic and target critic (2 hidden layers of 8) and a batch of 6 transitions per seed."""
    actor = GaussianActor(3, 2, member_generators(SEEDS, "actor"), 8, 2, tanh_mean=False)
    critic, target = TwinQ(3, 2, member_generators(SEEDS, "q"), 8, 2), TwinQ(3, 2, member_generators(SEEDS, "t"), 8, 2)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(2, 6, 3, generator=g), torch.rand(2, 6, 2, generator=g) * 2 - 1,
             torch.randn(2, 6, generator=g), torch.randn(2, 6, 3, generator=g),
             torch.tensor([[0.0, 0.0, 1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]]))
    return actor, critic, target, batch


def gaussian_log_prob(mu: torch.Tensor, log_std: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((a - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_critic_loss_hand_computed():
    actor, critic, target, (obs, act, rew, next_obs, done) = small_nets()
    eps = MemberRNG(SEEDS, "noise").randn(6, 2)  # the first draw of the stream critic_loss gets below
    with torch.no_grad():  # a' ~ N(μ(s'), σ), clamped to the box; target = r + γ (1 − d) min_j Q̂_j(s', a')
        a_next = (actor.act(next_obs) + actor.std() * eps).clamp(-1, 1)
        y = rew + 0.99 * (1 - done) * target(next_obs, a_next)
    qs = critic.all(obs, act)
    expect = ((qs[:, 0] - y) ** 2).mean(1) + ((qs[:, 1] - y) ** 2).mean(1)  # CORL sums the two critics' MSEs
    loss, q1_out = awac.critic_loss(critic, target, actor, obs, act, rew, next_obs, done, 0.99,
                                    MemberRNG(SEEDS, "noise"))
    assert loss.shape == (2,) and torch.allclose(loss, expect.detach(), rtol=1e-5)
    assert torch.allclose(q1_out, qs[:, 0].detach())


def test_actor_loss_hand_computed():
    actor, critic, _, (obs, act, *_) = small_nets()
    with torch.no_grad():
        actor.log_std.fill_(-0.5)
    eps = MemberRNG(SEEDS, "noise").randn(6, 2)
    with torch.no_grad():  # A = min Q(s, a) − min Q(s, ã), ã ~ π(·|s)
        a_pi = (actor.act(obs) + math.exp(-0.5) * eps).clamp(-1, 1)
        adv = critic(obs, act) - critic(obs, a_pi)
        w = torch.exp(adv / 0.1).clamp(max=100.0)
    expect = -(w * gaussian_log_prob(actor.act(obs), torch.tensor(-0.5), act)).mean(1)
    loss, adv_out, w_out = awac.actor_loss(actor, critic, obs, act, 0.1, MemberRNG(SEEDS, "noise"))
    assert torch.allclose(adv_out, adv) and torch.allclose(w_out, w)
    assert loss.shape == (2,) and torch.allclose(loss, expect, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------- behaviour
def test_bandit_policy_picks_best_in_support_mode():
    cfg = awac.AWACConfig(hidden_dim=32, n_hidden=2, batch_size=64, actor_lr=1e-3, critic_lr=1e-3, awac_lambda=0.1)
    agent = train_agent(awac, cfg, bandit_data(), 600, seeds=SEEDS)
    a = agent.act(torch.zeros(2, 1, 1), explore=False)[:, 0, 0]
    assert torch.all((a > 0.4) & (a < 0.6)), a  # behaviour cloning would give ≈ 0; the good mode is at +0.5


def test_chain_learns_the_best_path_values():
    n, gamma = 4, 0.9
    cfg = awac.AWACConfig(hidden_dim=32, n_hidden=2, batch_size=64, actor_lr=1e-3, critic_lr=1e-3, awac_lambda=0.1,
                          tau=0.05, discount=gamma)
    agent = train_agent(awac, cfg, chain_data(n, reward=10.0), 1500)
    eye = torch.eye(n)[None]
    q_star = 10.0 * gamma ** np.arange(n - 1, -1, -1)  # advance every step: Q*(s, advance) = 10 γ^(n−1−s)
    q_adv = agent.critic(eye, torch.full((1, n, 1), 0.5))[0].detach().numpy()
    q_stay = agent.critic(eye, torch.full((1, n, 1), -0.5))[0].detach().numpy()
    assert q_adv == pytest.approx(q_star, abs=0.3)
    assert q_stay == pytest.approx(gamma * q_star, abs=0.3)  # stay, then follow the best path
    assert agent.act(eye, explore=False).numpy().ravel() == pytest.approx(np.full(n, 0.5), abs=0.1)


# ---------------------------------------------------------------------------------------------------------- config
def test_presets_budget_and_flags():
    cfg = configure(awac.AWACConfig, awac.presets, ["--dataset", "antmaze-umaze-v2"])
    assert (cfg.awac_lambda, cfg.reward_kind, cfg.eval_episodes, cfg.n_hidden) == (0.1, "antmaze", 100, 3)
    cfg = configure(awac.AWACConfig, awac.presets, ["--dataset", "pen-cloned-v1", "--budget", "short"])
    assert (cfg.awac_lambda, cfg.reward_kind, cfg.offline_steps) == (0.1, "none", 100_000)
    cfg = configure(awac.AWACConfig, awac.presets, ["--dataset", "hopper-medium-v2", "--awac-lambda", "0.5"])
    assert (cfg.awac_lambda, cfg.reward_kind, cfg.online_steps) == (0.5, "none", 0)
    cfg = configure(awac.AWACConfig, awac.presets, ["--dataset", "hopper-medium-v2", "--finetune", "true",
                                                     "--budget", "smoke"])
    assert cfg.online_steps == 1000 and cfg.offline_steps == 1000


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        awac.main(["--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(awac.AWACConfig):
        assert f"--{f.name.replace('_', '-')}" in text


# ---------------------------------------------------------------------------------------------------------- runs
def test_offline_run_records_awac_fields(hopper_file, tmp_path):
    out = tmp_path / "run"
    assert run_main(hopper_file, out, "--offline-steps", "20", "--eval-every", "20", "--log-every", "10") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["algorithm"] == "awac" and summary["steps"] == 20
    assert summary["config"]["awac_lambda"] == 0.3333 and summary["config"]["reward_kind"] == "none"  # CORL's
    assert summary["extra"]["reward_kind"] == "none" and summary["extra"]["reward_scale"] == 1.0
    metrics = read_csv(out / "metrics.csv")
    assert {"critic_loss", "actor_loss", "q1_mean", "adv_mean", "weight_mean"} <= set(metrics[0])
    assert all(0 < float(r["weight_mean"]) <= 100 for r in metrics)


def test_regret_column_on_a_success_domain(tmp_path):
    from o2o.generate import rollout
    from o2o.hdf5 import write_d4rl_hdf5
    from o2o.specs import get_spec

    def policy(obs, rng):
        return rng.uniform(-1, 1, size=(len(obs), 24)).astype(np.float32), np.zeros(len(obs), np.float32)

    path = write_d4rl_hdf5(tmp_path / "pen.hdf5", rollout(get_spec("pen-human-v1"), policy, 200, seed=0))
    out = tmp_path / "run"
    # AdroitHandPen-v1's own time limit (200 steps) ends the first training episode
    code = run_main(str(path), out, "--offline-steps", "10", "--online-steps", "205", "--eval-every", "1000",
                    env="AdroitHandPen-v1")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["awac_lambda"] == 0.1  # Adroit preset
    online = [r for r in read_csv(out / "evals.csv") if r["phase"] == "online"]
    assert online and 0.0 <= float(online[-1]["regret"]) <= 1.0 and online[-1]["success_rate"] != ""
    assert 0.0 <= summary["extra"]["final_regret"] <= 1.0
