"""Tests of baselines/cql.py: the CQL(H) penalty, the Lagrange multiplier, behaviour on a bandit, presets (fine-tuning
ones included), and CQL's own state in records and checkpoints. The engine's generic duties (packed = alone, resume of
the curve, divergence, online buffer, records columns) are tested once in tests/test_engine.py."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines import cql
from o2o.specs import get_spec

from .conftest import random_data, train_agent

# Tiny networks and batches: the run tests check CQL's records, not learning.
TINY = ["--hidden-dim", "32", "--batch-size", "64", "--eval-episodes", "1", "--device", "cpu", "--budget", "smoke",
        "--cql-n-actions", "4"]


def run_args(data: str, out: Path, *extra: str) -> list[str]:
    return ["--dataset", data, "--env", "Hopper-v5", "--seed", "0", "--out", str(out), *TINY, *extra]


def parsed(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> cql.CQLConfig:
    """The config cql.main(argv) would train, with main's own choice of presets (no training)."""
    seen: list[cql.CQLConfig] = []
    monkeypatch.setattr(cql.loop, "train", lambda cfg, algo: seen.append(cfg) or [])
    assert cql.main(argv) == 0
    return seen[0]


# ---------------------------------------------------------------------------------------------- penalty, Lagrange

def test_importance_sampled_logsumexp_matches_hand_computed_value() -> None:
    q_rand = torch.tensor([[1.0, 2.0]])
    q_next = torch.tensor([[0.5, 0.0]])
    q_cur = torch.tensor([[3.0, -1.0]])
    logp_next = torch.tensor([[-1.0, -2.0]])
    logp_cur = torch.tensor([[0.5, -0.5]])
    act_dim = 2
    log_u = act_dim * math.log(0.5)  # uniform density on [-1, 1]^2 is 1/4
    # Every sample divided by its proposal density: exp(Q)/U for uniform, exp(Q)/π for policy samples.
    terms = [math.exp(1.0) * 4, math.exp(2.0) * 4, math.exp(0.5) / math.exp(-1.0), math.exp(0.0) / math.exp(-2.0),
             math.exp(3.0) / math.exp(0.5), math.exp(-1.0) / math.exp(-0.5)]
    expected = math.log(sum(terms))
    got = cql.cql_logsumexp(q_rand, q_next, q_cur, logp_next, logp_cur, log_u)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # the agent uses the uniform density of its action box [−max_action, max_action]^d
    cfg = cql.CQLConfig(hidden_dim=8)
    assert train_agent(cql, cfg, random_data(3, act_dim), 0).log_density_rand == pytest.approx(log_u)
    wide = train_agent(cql, cfg, random_data(3, act_dim), 0, max_action=2.0)
    assert wide.log_density_rand == pytest.approx(-act_dim * math.log(4.0))

    # temperature: temp · log Σ exp(x / temp)
    xs = [1.0 - log_u, 2.0 - log_u, 0.5 + 1.0, 0.0 + 2.0, 3.0 - 0.5, -1.0 + 0.5]
    got_t = cql.cql_logsumexp(q_rand, q_next, q_cur, logp_next, logp_cur, log_u, temp=0.5)
    assert got_t.item() == pytest.approx(0.5 * math.log(sum(math.exp(x / 0.5) for x in xs)), rel=1e-6)

    # without importance sampling: plain logsumexp over the samples and the dataset action
    q_data = torch.tensor([0.25])
    plain = cql.cql_logsumexp(q_rand, q_next, q_cur, logp_next, logp_cur, log_u, importance_sample=False,
                              q_data=q_data)
    assert plain.item() == pytest.approx(math.log(sum(math.exp(x) for x in (1, 2, 0.25, 0.5, 0, 3, -1))), rel=1e-6)

    # the CQL(H) gap subtracts the dataset Q and clips per sample before the mean
    lse = torch.tensor([[3.0, 10.0]])
    qd = torch.tensor([[1.0, 1.0]])
    assert cql.cql_h_gap(lse, qd).item() == pytest.approx((2.0 + 9.0) / 2)
    assert cql.cql_h_gap(lse, qd, clip_max=5.0).item() == pytest.approx((2.0 + 5.0) / 2)


def test_lagrange_update_moves_each_seeds_alpha_prime_towards_the_target_gap() -> None:
    """Seed 0's gap (2.0) exceeds τ = 0.8, seed 1's (0.3) is below: one step raises α'₀ and lowers α'₁."""
    log_ap = torch.ones(2, 1, requires_grad=True)
    opt = torch.optim.Adam([log_ap], lr=0.1)
    before = cql.alpha_prime_value(log_ap).detach().clone()
    gap = torch.tensor([[2.0, 2.0], [0.3, 0.3]])  # (S, twin critics)
    loss = cql.alpha_prime_loss(cql.alpha_prime_value(log_ap), gap, cql_alpha=5.0, target_action_gap=0.8)
    assert loss.shape == (2,)
    assert loss.tolist() == pytest.approx([-math.e * 5.0 * 1.2, math.e * 5.0 * 0.5], rel=1e-6)  # −α'·α·(gap − τ)
    opt.zero_grad()
    loss.sum().backward()
    opt.step()
    after = cql.alpha_prime_value(log_ap).detach()
    assert after[0, 0] > before[0, 0] and after[1, 0] < before[1, 0]


@pytest.mark.parametrize("target_gap, moves", [(-100.0, "up"), (100.0, "down")])
def test_agent_lagrange_multiplier_follows_the_gap(target_gap: float, moves: str) -> None:
    """Through the full update: α' grows while the measured gap exceeds τ and shrinks while it is below."""
    cfg = cql.CQLConfig(hidden_dim=16, q_hidden_layers=2, actor_hidden_layers=2, batch_size=64, cql_lagrange=True,
                        cql_alpha=5.0, cql_target_action_gap=target_gap, cql_n_actions=4)
    data = random_data(4, 2)
    agent = train_agent(cql, cfg, data, 0, seeds=(0, 1))
    batch = tuple(torch.as_tensor(data[k], dtype=torch.float32).expand(2, *data[k].shape).contiguous()
                  for k in ("obs", "act", "rew", "next_obs", "done"))
    start = agent.log_alpha_prime[:, 0].detach().clone()
    for _ in range(5):
        m = agent.update(batch, online=False)
    end = agent.log_alpha_prime[:, 0].detach()
    assert torch.all(end > start) if moves == "up" else torch.all(end < start)
    assert m["alpha_prime"].tolist() == pytest.approx(end.exp().tolist(), rel=1e-2)


# ---------------------------------------------------------------------------------------------- behaviour

def _bandit(cql_alpha: float, steps: int = 1000, seed: int = 0) -> tuple[np.ndarray, float]:
    """One-step bandit: one state, actions from two modes (−0.5 and +0.5, spread 0.15), reward −5a (the mode at
    −0.5 is better; a linear fit would extrapolate to a = −1 outside the data). Returns Q on a grid and π's action."""
    rng = np.random.default_rng(seed)
    n = 1000
    mode = rng.integers(0, 2, n)
    a = np.clip(np.where(mode == 0, -0.5, 0.5) + 0.15 * rng.standard_normal(n), -0.99, 0.99)[:, None]
    data = {"obs": np.zeros((n, 1)), "act": a, "rew": -5.0 * a[:, 0], "next_obs": np.zeros((n, 1)),
            "done": np.ones(n)}
    cfg = cql.CQLConfig(cql_alpha=cql_alpha, actor_lr=2e-3, critic_lr=3e-3, hidden_dim=32, q_hidden_layers=2,
                        actor_hidden_layers=2, batch_size=64)
    agent = train_agent(cql, cfg, data, steps, seeds=(seed,))
    grid = torch.linspace(-1, 1, 21).view(1, 1, 21, 1)
    with torch.no_grad():
        q = agent.critic(torch.zeros(1, 1, 1), grid)[0, 0]  # min over the twins
    return q.numpy(), agent.act(torch.zeros(1, 1, 1), explore=False).item()


def test_bandit_q_is_conservative_out_of_distribution_and_policy_picks_the_better_mode() -> None:
    grid = np.round(np.linspace(-1, 1, 21), 2)
    in_dist = np.isin(grid, [-0.6, -0.5, -0.4, 0.4, 0.5, 0.6])
    ood = np.isin(grid, [-1.0, -0.9, -0.1, 0.0, 0.1, 0.9, 1.0])
    q, action = _bandit(cql_alpha=5.0)
    assert q[ood].mean() < q[in_dist].mean() - 1.0
    assert q[grid == -1.0] < q[grid == -0.5]  # no credit for the extrapolated, unseen a = −1
    assert abs(action + 0.5) < 0.15, action  # the better mode, inside the data's support

    # Control: without the penalty the same learner extrapolates to the unseen edge, so the checks above can fail.
    q0, action0 = _bandit(cql_alpha=0.0, steps=500)
    assert q0[grid == -1.0] > q0[grid == -0.5]
    assert action0 < -0.6


# ---------------------------------------------------------------------------------------------- command line

def test_presets_follow_corl_configs_and_flags_override(monkeypatch: pytest.MonkeyPatch) -> None:
    loco = parsed(["--dataset", "hopper-medium-v2"], monkeypatch)
    assert (loco.cql_alpha, loco.actor_lr, loco.critic_lr, loco.cql_lagrange, loco.q_hidden_layers) == (10.0, 3e-5,
                                                                                                     3e-4, False, 3)
    assert (loco.cql_n_actions, loco.cql_importance_sample, loco.auto_entropy, loco.orthogonal_init) == (10, True,
                                                                                                         True, True)
    assert loco.offline_steps == 1_000_000 and loco.online_steps == 0 and loco.bc_steps == 0
    ant = parsed(["--dataset", "antmaze-umaze-v2", "--budget", "short"], monkeypatch)
    assert ant.cql_lagrange and ant.cql_alpha == 5.0 and ant.cql_target_action_gap == 0.8
    assert ant.cql_max_target_backup and ant.q_hidden_layers == 5 and ant.reward_kind == "cql_antmaze"
    assert ant.actor_lr == 1e-4 and not ant.normalize_states and ant.offline_steps == 100_000
    pen = parsed(["--dataset", "pen-cloned-v1"], monkeypatch)
    assert pen.cql_alpha == 1.0 and pen.actor_lr == 1e-4 and not pen.cql_max_target_backup and pen.normalize_states
    # CORL's fine-tuning configs for Adroit, chosen by main() when --online-steps > 0
    pen_o2o = parsed(["--dataset", "pen-cloned-v1", "--online-steps", "1000000"], monkeypatch)
    assert pen_o2o.cql_max_target_backup and pen_o2o.cql_clip_diff_min == -200 and not pen_o2o.normalize_states
    assert pen_o2o.cql_alpha == 1.0 and pen_o2o.online_steps == 1_000_000
    pen_flag = parsed(["--dataset", "pen-cloned-v1", "--online-steps", "10", "--normalize-states", "true"],
                      monkeypatch)
    assert pen_flag.normalize_states and pen_flag.cql_max_target_backup  # a flag still beats the fine-tuning preset
    old = parsed(["--dataset", "pen-cloned-v1", "--normalize-obs", "false", "--policy-lr", "0.5"], monkeypatch)
    assert not old.normalize_states and old.actor_lr == 0.5  # the old names still work (with a deprecation line)
    flags = parsed(["--dataset", "antmaze-umaze-v2", "--cql-alpha", "2", "--cql-lagrange", "false"], monkeypatch)
    assert flags.cql_alpha == 2.0 and not flags.cql_lagrange
    assert get_spec("antmaze-umaze-v2").domain == "antmaze"


def test_help_lists_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cql.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for name in (f.name for f in dataclasses.fields(cql.CQLConfig)):
        assert f"--{name.replace('_', '-')}" in text


# ---------------------------------------------------------------------------------------------- CQL's run state

def test_run_records_cql_metrics_and_its_multipliers_survive_a_resume(hopper_file: str, tmp_path: Path) -> None:
    """A Lagrange run stopped at step 20 and resumed to 40 ends with the uninterrupted run's α, α', their optimiser
    states and the step counter; metrics.csv carries CQL's columns."""
    args = ("--eval-every", "20", "--log-every", "10", "--checkpoint-every", "10", "--cql-lagrange", "true")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert cql.main(run_args(hopper_file, straight, "--offline-steps", "40", *args)) == 0
    assert cql.main(run_args(hopper_file, resumed, "--offline-steps", "20", *args)) == 0
    half = torch.load(resumed / "checkpoint.pt", weights_only=True)["agent"]
    assert cql.main(run_args(hopper_file, resumed, "--offline-steps", "40", "--resume", "true", *args)) == 0

    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["algorithm"] == "cql" and summary["steps"] == 40
    assert summary["config"]["cql_alpha"] == 10.0 and summary["config"]["cql_lagrange"] is True
    with open(resumed / "metrics.csv") as f:
        metrics = list(csv.DictReader(f))
    assert [int(r["step"]) for r in metrics] == [10, 20, 30, 40]
    assert {"qf_loss", "cql_gap", "cql_penalty", "alpha", "alpha_prime", "policy_loss"} <= set(metrics[0])
    assert float(metrics[0]["alpha_prime"]) > 0

    a = torch.load(straight / "checkpoint.pt", weights_only=True)["agent"]
    b = torch.load(resumed / "checkpoint.pt", weights_only=True)["agent"]
    assert half["total_it"] == 20 and a["total_it"] == b["total_it"] == 40
    assert not torch.equal(half["log_alpha_prime"], b["log_alpha_prime"])  # α' moved after the resume
    for k in ("log_alpha", "log_alpha_prime"):
        assert torch.equal(a[k], b[k]), k
    for opt in ("alpha_opt", "alpha_prime_opt"):
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a[opt]["state"][0][k], b[opt]["state"][0][k]), (opt, k)
