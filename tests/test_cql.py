"""Tests of baselines/cql.py: the CQL(H) penalty, the Lagrange multiplier, behaviour on a bandit, and the run
contract (records, offline-to-online, resume, divergence)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from baselines import cql
from o2o.generate import rollout, write_d4rl_hdf5
from o2o.registry import get_spec, spec_for_env

torch.set_num_threads(1)

# Tiny networks and batches: the run-contract tests check plumbing, not learning.
TINY = ["--hidden-dim", "32", "--batch-size", "32", "--eval-episodes", "2", "--threads", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def hopper_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 600-transition Hopper-v5 dataset of a random Gaussian policy in D4RL's layout."""
    spec = spec_for_env("tiny-hopper", "Hopper-v5")

    def policy(obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return np.clip(rng.normal(0.0, 0.5, size=(1, 3)), -1, 1).astype(np.float32), np.zeros(1, np.float32)

    path = tmp_path_factory.mktemp("data") / "tiny-hopper.hdf5"
    return write_d4rl_hdf5(path, rollout(spec, policy, 600, seed=0))


def run_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", str(data), "--env", "Hopper-v5", "--seed", "0", "--out", str(out), "--budget", "smoke",
            *TINY, *extra]


def read_evals(out: Path) -> list[dict[str, str]]:
    with open(out / "evals.csv") as f:
        return list(csv.DictReader(f))


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
    # the agent uses the uniform density of its action box
    agent = cql.CQL(3, act_dim, cql.CQLConfig(hidden_dim=8))
    assert agent.log_density_rand == pytest.approx(log_u)

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


@pytest.mark.parametrize("gap, moves", [(2.0, "up"), (0.3, "down")])
def test_lagrange_update_moves_alpha_prime_towards_the_target_gap(gap: float, moves: str) -> None:
    log_ap = torch.ones((), requires_grad=True)
    opt = torch.optim.Adam([log_ap], lr=0.1)
    before = cql.alpha_prime_value(log_ap).item()
    loss = cql.alpha_prime_loss(log_ap, torch.tensor([gap, gap]), cql_alpha=5.0, target_action_gap=0.8)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = cql.alpha_prime_value(log_ap).item()
    assert (after > before) if moves == "up" else (after < before)


@pytest.mark.parametrize("target_gap, moves", [(-100.0, "up"), (100.0, "down")])
def test_agent_lagrange_multiplier_follows_the_gap(target_gap: float, moves: str) -> None:
    """Through the full update: α' grows while the measured gap exceeds τ and shrinks while it is below."""
    torch.manual_seed(0)
    cfg = cql.CQLConfig(hidden_dim=16, q_hidden_layers=2, actor_hidden_layers=2, batch_size=16, cql_lagrange=True,
                        cql_alpha=5.0, cql_target_action_gap=target_gap)
    agent = cql.CQL(4, 2, cfg)
    batch = (torch.randn(16, 4), torch.rand(16, 2) * 2 - 1, torch.randn(16), torch.randn(16, 4), torch.zeros(16))
    start = agent.log_alpha_prime.item()
    for _ in range(5):
        m = agent.update(batch)
    end = agent.log_alpha_prime.item()
    assert (end > start) if moves == "up" else (end < start)
    assert m["alpha_prime"].item() == pytest.approx(math.exp(end), rel=1e-2)


# ---------------------------------------------------------------------------------------------- behaviour

def _bandit(cql_alpha: float, steps: int = 1000, seed: int = 0) -> tuple[torch.Tensor, float]:
    """One-step bandit: one state, actions from two modes (−0.5 and +0.5, spread 0.15), reward −5a (the mode at
    −0.5 is better; a linear fit would extrapolate to a = −1 outside the data). Returns Q on a grid and π's action."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n = 1000
    mode = torch.randint(0, 2, (n,), generator=g)
    a = (torch.where(mode == 0, -0.5, 0.5) + 0.15 * torch.randn(n, generator=g)).clamp(-0.99, 0.99).unsqueeze(1)
    r = -5.0 * a.squeeze(1)
    obs, done = torch.zeros(n, 1), torch.ones(n)
    cfg = cql.CQLConfig(cql_alpha=cql_alpha, policy_lr=2e-3, qf_lr=3e-3, hidden_dim=32, q_hidden_layers=2,
                        actor_hidden_layers=2, batch_size=64)
    agent = cql.CQL(1, 1, cfg)
    for _ in range(steps):
        idx = torch.randint(0, n, (64,))
        agent.update((obs[idx], a[idx], r[idx], obs[idx], done[idx]))
    grid = torch.linspace(-1, 1, 21).view(1, 21, 1)
    with torch.no_grad():
        q = agent.critic(torch.zeros(1, 1), grid).min(dim=0).values[0]
    return q, agent.actor.act(torch.zeros(1, 1)).item()


def test_bandit_q_is_conservative_out_of_distribution_and_policy_picks_the_better_mode() -> None:
    grid = np.round(np.linspace(-1, 1, 21), 2)
    in_dist = np.isin(grid, [-0.6, -0.5, -0.4, 0.4, 0.5, 0.6])
    ood = np.isin(grid, [-1.0, -0.9, -0.1, 0.0, 0.1, 0.9, 1.0])
    q, action = _bandit(cql_alpha=5.0)
    q = q.numpy()
    assert q[ood].mean() < q[in_dist].mean() - 1.0
    assert q[grid == -1.0] < q[grid == -0.5]  # no credit for the extrapolated, unseen a = −1
    assert abs(action + 0.5) < 0.15, action  # the better mode, inside the data's support

    # Control: without the penalty the same learner extrapolates to the unseen edge, so the checks above can fail.
    q0, action0 = _bandit(cql_alpha=0.0, steps=500)
    assert q0.numpy()[grid == -1.0] > q0.numpy()[grid == -0.5]
    assert action0 < -0.6


# ---------------------------------------------------------------------------------------------- command line

def test_presets_follow_corl_configs_and_flags_override() -> None:
    loco = cql.parse(["--dataset", "hopper-medium-v2"])
    assert (loco.cql_alpha, loco.policy_lr, loco.qf_lr, loco.cql_lagrange, loco.q_hidden_layers) == (10.0, 3e-5,
                                                                                                     3e-4, False, 3)
    assert (loco.cql_n_actions, loco.cql_importance_sample, loco.auto_entropy, loco.orthogonal_init) == (10, True,
                                                                                                         True, True)
    assert loco.offline_steps == 1_000_000 and loco.online_steps == 0 and loco.bc_steps == 0
    ant = cql.parse(["--dataset", "antmaze-umaze-v2", "--budget", "short"])
    assert ant.cql_lagrange and ant.cql_alpha == 5.0 and ant.cql_target_action_gap == 0.8
    assert ant.cql_max_target_backup and ant.q_hidden_layers == 5 and ant.reward_kind == "cql_antmaze"
    assert ant.policy_lr == 1e-4 and not ant.normalize_obs and ant.offline_steps == 100_000
    pen = cql.parse(["--dataset", "pen-cloned-v1"])
    assert pen.cql_alpha == 1.0 and pen.policy_lr == 1e-4 and not pen.cql_max_target_backup and pen.normalize_obs
    pen_o2o = cql.parse(["--dataset", "pen-cloned-v1", "--online-steps", "1000000"])
    assert pen_o2o.cql_max_target_backup and pen_o2o.cql_clip_diff_min == -200 and not pen_o2o.normalize_obs
    flags = cql.parse(["--dataset", "antmaze-umaze-v2", "--cql-alpha", "2", "--cql-lagrange", "false"])
    assert flags.cql_alpha == 2.0 and not flags.cql_lagrange
    assert get_spec("antmaze-umaze-v2").domain == "antmaze"


def test_help_lists_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cql.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for name in cql.CQLConfig.__dataclass_fields__:
        assert f"--{name.replace('_', '-')}" in text


# ---------------------------------------------------------------------------------------------- run contract

def test_smoke_run_writes_valid_records(hopper_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cql.main(run_args(hopper_file, out, "--offline-steps", "20", "--eval-every", "10", "--log-every",
                             "10")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["algorithm"] == "cql" and summary["steps"] == 20
    assert summary["n_evals"] == 2 and summary["config"]["cql_alpha"] == 10.0
    rows = read_evals(out)
    assert [int(r["step"]) for r in rows] == [10, 20] and {r["phase"] for r in rows} == {"offline"}
    assert all(np.isfinite(float(r["normalized_score"])) for r in rows)
    with open(out / "metrics.csv") as f:
        metrics = list(csv.DictReader(f))
    assert [int(r["step"]) for r in metrics] == [10, 20]
    assert {"qf_loss", "cql_gap", "alpha", "policy_loss"} <= set(metrics[0])
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 20 and state["agent"]["total_it"] == 20


def test_offline_to_online_logs_both_phases(hopper_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "o2o"
    assert cql.main(run_args(hopper_file, out, "--offline-steps", "10", "--online-steps", "20", "--eval-every",
                             "10")) == 0
    rows = read_evals(out)
    assert [(int(r["step"]), r["phase"], int(r["env_steps"])) for r in rows] == [
        (10, "offline", 0), (20, "online", 10), (30, "online", 20)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 20 and summary["offline_score"] is not None
    assert summary["online_score"] is not None
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["online_buffer"]["obs"].shape == (20, 11)  # the buffer grew by one transition per env step


def test_regret_is_mean_failure_over_training_episodes() -> None:
    assert cql.OnlineState(successes=[]).regret() is None
    assert cql.OnlineState(successes=[1.0, 0.0, 0.0, 1.0]).regret() == pytest.approx(0.5)


def test_resume_continues_the_same_curve(hopper_file: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("--offline-steps", "40", "--eval-every", "10", "--checkpoint-every", "20")
    straight = tmp_path / "straight"
    assert cql.main(run_args(hopper_file, straight, *args)) == 0

    # Crash right after the evaluation at step 30: the checkpoint is from step 20, evals.csv already has step 30.
    original = cql.Evaluator.__call__

    def crash_at_30(self: cql.Evaluator, policy: Any, step: int, *a: Any, **kw: Any) -> Any:
        res = original(self, policy, step, *a, **kw)
        if step == 30:
            raise RuntimeError("simulated crash")
        return res

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(cql.Evaluator, "__call__", crash_at_30)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cql.main(run_args(hopper_file, resumed, *args))
    assert json.loads((resumed / "summary.json").read_text())["status"] == "failed"
    monkeypatch.setattr(cql.Evaluator, "__call__", original)
    assert cql.main(run_args(hopper_file, resumed, *args, "--resume")) == 0

    a, b = read_evals(straight), read_evals(resumed)
    assert [r["step"] for r in b] == ["10", "20", "30", "40"]
    assert [r["normalized_score"] for r in a] == [r["normalized_score"] for r in b]
    sa = torch.load(straight / "checkpoint.pt", weights_only=True)["agent"]
    sb = torch.load(resumed / "checkpoint.pt", weights_only=True)["agent"]
    for k, v in sa["actor"].items():
        assert torch.equal(v, sb["actor"][k]), k
    assert json.loads((resumed / "summary.json").read_text())["status"] == "finished"


def test_divergence_is_recorded_with_nonzero_exit(hopper_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "div"
    code = cql.main(run_args(hopper_file, out, "--offline-steps", "30", "--log-every", "10", "--qf-lr", "1e30"))
    assert code == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] == 10  # stopped at the first metric flush
    assert "NaN/inf" in summary["error"]


def test_resume_in_the_online_phase_keeps_the_online_buffer(hopper_file: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("--offline-steps", "10", "--online-steps", "20", "--eval-every", "10", "--checkpoint-every", "10")
    out = tmp_path / "o2o-resume"
    original = cql.Evaluator.__call__

    def crash_at_20(self: cql.Evaluator, policy: Any, step: int, *a: Any, **kw: Any) -> Any:
        res = original(self, policy, step, *a, **kw)
        if step == 20:
            raise RuntimeError("simulated crash")
        return res

    monkeypatch.setattr(cql.Evaluator, "__call__", crash_at_20)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cql.main(run_args(hopper_file, out, *args))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 10  # the crash came before step 20's
    monkeypatch.setattr(cql.Evaluator, "__call__", original)
    assert cql.main(run_args(hopper_file, out, *args, "--resume")) == 0
    rows = read_evals(out)
    assert [(int(r["step"]), r["phase"], int(r["env_steps"])) for r in rows] == [
        (10, "offline", 0), (20, "online", 10), (30, "online", 20)]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["online_buffer"]["obs"].shape == (20, 11) and state["online"]["env_steps"] == 20
