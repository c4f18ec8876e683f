"""IQL (baselines/iql.py): losses against hand-computed values (each seed's own mean), behaviour on problems with a
known answer, presets and flags, and IQL's own record content. The engine's generic duties (packed = alone, resume,
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

from baselines import iql
from o2o.cli import configure
from o2o.nets import DeterministicActor, GaussianActor, TwinQ, ValueNet
from o2o.rng import member_generators

from .conftest import bandit_data, chain_data, train_agent

TINY = ["--hidden-dim", "32", "--batch-size", "64", "--eval-episodes", "1", "--device", "cpu", "--budget", "smoke"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_main(file: str, out: Path, *extra: str, env: str = "Hopper-v5") -> int:
    return iql.main(["--dataset", file, "--env", env, "--out", str(out), *TINY, *extra])


# ---------------------------------------------------------------------------------------------------------- losses
def test_expectile_loss_hand_computed_per_seed():
    u = torch.tensor([[-2.0, -1.0, 0.0, 1.0, 3.0], [1.0, 1.0, 1.0, 1.0, -1.0]])
    # seed 0: weights |τ − 1(u<0)| = [0.3, 0.3, 0.7, 0.7, 0.7]; mean(w u²) = (1.2 + 0.3 + 0 + 0.7 + 6.3) / 5
    # seed 1: (4 · 0.7 + 0.3) / 5 — its own mean, not pooled with seed 0's
    loss = iql.expectile_loss(u, 0.7)
    assert loss.shape == (2,)
    assert loss.tolist() == pytest.approx([1.7, 3.1 / 5])
    assert iql.expectile_loss(u, 0.5)[0].item() == pytest.approx(0.5 * (4 + 1 + 0 + 1 + 9) / 5)


def test_awr_weights_clip_at_100():
    adv = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    w = iql.awr_weights(adv, beta=3.0)
    assert w[0].tolist() == pytest.approx([math.exp(-3.0), 1.0, math.exp(1.5), 100.0], rel=1e-6)  # exp(6) → 100
    assert iql.awr_weights(adv, beta=3.0, max_weight=1e9)[0, -1].item() == pytest.approx(math.exp(6.0), rel=1e-6)


def test_policy_losses_hand_computed():
    obs = torch.zeros(2, 2, 1)  # (S, B, obs_dim): two seeds, two samples each
    act = torch.tensor([[[0.5], [-0.5]], [[0.2], [0.1]]])
    weights = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    det = DeterministicActor(1, 1, member_generators([0, 1], "det"), hidden_dim=4, n_hidden=1)
    pred = det(obs).detach()
    expect = (weights * (pred - act).square().sum(-1)).mean(1)
    loss = iql.awr_policy_loss(det, obs, act, weights)
    assert loss.shape == (2,) and torch.allclose(loss, expect, rtol=1e-5)
    gauss = GaussianActor(1, 1, member_generators([0, 1], "gauss"), hidden_dim=4, n_hidden=1)
    mu = gauss.act(obs)  # σ = 1: log-std starts at 0
    nll = (0.5 * (act - mu).square() + 0.5 * math.log(2 * math.pi)).sum(-1)
    expect = (weights * nll).mean(1)
    assert torch.allclose(iql.awr_policy_loss(gauss, obs, act, weights), expect, rtol=1e-5)


def test_value_and_q_losses_hand_computed():
    g = torch.Generator().manual_seed(0)
    q = TwinQ(2, 1, member_generators([0, 1], "q"), hidden_dim=8)
    obs, act = torch.randn(2, 5, 2, generator=g), torch.randn(2, 5, 1, generator=g)
    rew, next_v = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    done = torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0, 0.0]])
    qs = q.all(obs, act)  # (S, 2, B)
    q1, q2 = qs[:, 0], qs[:, 1]
    target = rew + 0.9 * (1 - done) * next_v
    expect = 0.5 * (((q1 - target) ** 2).mean(1) + ((q2 - target) ** 2).mean(1))  # mean over the twins, as CORL
    loss, q1_out = iql.q_loss(q, next_v, obs, act, rew, done, 0.9)
    assert loss.shape == (2,) and torch.allclose(loss, expect.detach(), rtol=1e-5)
    assert torch.allclose(q1_out, q1.detach())
    value = ValueNet(2, member_generators([0, 1], "v"), hidden_dim=8)
    loss_v, adv = iql.value_loss(value, q, obs, act, 0.8)
    u = torch.minimum(q1, q2) - value(obs)
    assert torch.allclose(adv, u.detach())
    assert torch.allclose(loss_v, iql.expectile_loss(u, 0.8).detach(), rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("deterministic", [False, True])
def test_bandit_policy_picks_best_in_support_mode(deterministic):
    cfg = iql.IQLConfig(hidden_dim=32, batch_size=64, actor_lr=1e-3, critic_lr=1e-3, value_lr=1e-3, expectile=0.9,
                        beta=10.0, offline_steps=600, deterministic_actor=deterministic)
    agent = train_agent(iql, cfg, bandit_data(), 600, seeds=(0, 1))
    a = agent.act(torch.zeros(2, 1, 1), explore=False)[:, 0, 0]
    assert torch.all((a > 0.4) & (a < 0.6)), a  # behaviour cloning would give ≈ 0; the good mode is at +0.5


def expectile_values(n: int, tau: float, gamma: float) -> np.ndarray:
    """Fixed point of V(s) = expectile_τ over the two (equally likely) actions of Q(s,a) = r + γ (1 − d) V(s').

    For two equally likely values the τ-expectile is τ·max + (1 − τ)·min."""
    v = np.zeros(n)
    for _ in range(2000):
        q_adv = np.array([gamma * v[s + 1] if s < n - 1 else 1.0 for s in range(n)])
        q_stay = gamma * v
        v = tau * np.maximum(q_adv, q_stay) + (1 - tau) * np.minimum(q_adv, q_stay)
    return v


def test_chain_values_match_the_expectile_fixed_point():
    n, gamma = 4, 0.9
    v09, v05 = expectile_values(n, 0.9, gamma), expectile_values(n, 0.5, gamma)
    best = gamma ** np.arange(n - 1, -1, -1)  # the dataset's best path: advance every step
    assert np.all(v09 <= best + 1e-9) and np.all(v05 < v09 - 0.05)  # the expectile lifts V towards the best path
    assert expectile_values(n, 0.999, gamma) == pytest.approx(best, abs=0.01)  # τ → 1 recovers it
    cfg = iql.IQLConfig(hidden_dim=32, batch_size=64, actor_lr=1e-3, critic_lr=1e-3, value_lr=1e-3, expectile=0.9,
                        discount=gamma, tau=0.05, offline_steps=1500)
    agent = train_agent(iql, cfg, chain_data(n), 1500)
    eye = torch.eye(n)[None]
    v = agent.value(eye)[0].detach().numpy()
    assert v == pytest.approx(v09, abs=0.05)
    q_adv = agent.q(eye, torch.full((1, n, 1), 0.5))[0].detach().numpy()
    assert q_adv == pytest.approx(np.r_[gamma * v09[1:], 1.0], abs=0.05)  # Q(s, a) = r + γ V(s')


# ---------------------------------------------------------------------------------------------------------- config
def test_presets_budget_and_flags():
    cfg = configure(iql.IQLConfig, iql.presets, ["--dataset", "antmaze-umaze-v2"])
    assert (cfg.expectile, cfg.beta, cfg.deterministic_actor, cfg.reward_kind) == (0.9, 10.0, False, "antmaze")
    assert cfg.eval_episodes == 100 and cfg.offline_steps == 1_000_000 and cfg.online_steps == 0
    cfg = configure(iql.IQLConfig, iql.presets, ["--dataset", "pen-cloned-v1", "--budget", "short", "--beta", "1"])
    assert (cfg.expectile, cfg.actor_dropout, cfg.beta, cfg.offline_steps) == (0.8, 0.1, 1.0, 100_000)
    cfg = configure(iql.IQLConfig, iql.presets, ["--dataset", "hopper-medium-v2", "--finetune", "true"])
    assert cfg.online_steps == 1_000_000 and cfg.reward_kind == "locomotion"  # CORL's hopper-medium normalises
    for budget, n in (("short", 100_000), ("smoke", 1000)):
        cfg = configure(iql.IQLConfig, iql.presets, ["--dataset", "hopper-medium-v2", "--finetune", "--budget",
                                                     budget])
        assert cfg.online_steps == n
    cfg = configure(iql.IQLConfig, iql.presets, ["--dataset", "hopper-medium-v2", "--finetune", "true",
                                                 "--online-steps", "7"])
    assert cfg.online_steps == 7


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        iql.main(["--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(iql.IQLConfig):
        assert f"--{f.name.replace('_', '-')}" in text


# ---------------------------------------------------------------------------------------------------------- runs
def test_finetune_flag_reaches_the_run(monkeypatch):
    """main() applies resolve_config: --finetune gives the run CORL's 1M online steps scaled by --budget."""
    seen = []
    monkeypatch.setattr(iql.loop, "train", lambda cfg, algo: seen.append(cfg) or [])
    assert iql.main(["--dataset", "hopper-medium-v2", "--finetune", "true", "--budget", "smoke"]) == 0
    assert seen[0].online_steps == 1000 and seen[0].offline_steps == 1000


def test_offline_run_records_iql_fields(hopper_file, tmp_path):
    out = tmp_path / "run"
    assert run_main(hopper_file, out, "--offline-steps", "20", "--eval-every", "20", "--log-every", "10", "--preset",
                    "paper") == 0  # the IQL paper's locomotion preset: scaled rewards
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["algorithm"] == "iql" and summary["steps"] == 20
    assert summary["config"]["expectile"] == 0.7 and summary["config"]["reward_kind"] == "locomotion"
    assert summary["config"]["preset"] == "paper" and (out / "config.yaml").is_file()
    assert summary["extra"]["reward_kind"] == "locomotion" and summary["extra"]["reward_scale"] > 0
    metrics = read_csv(out / "metrics.csv")
    assert {"value_loss", "q_loss", "actor_loss", "q1_mean", "adv_mean", "weight_mean"} <= set(metrics[0])
    assert all(math.isfinite(float(r["weight_mean"])) and float(r["weight_mean"]) > 0 for r in metrics)


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
    assert summary["config"]["expectile"] == 0.8 and summary["config"]["actor_dropout"] == 0.1  # Adroit preset
    online = [r for r in read_csv(out / "evals.csv") if r["phase"] == "online"]
    assert online and 0.0 <= float(online[-1]["regret"]) <= 1.0 and online[-1]["success_rate"] != ""
    assert 0.0 <= summary["extra"]["final_regret"] <= 1.0
