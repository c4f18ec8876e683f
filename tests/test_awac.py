"""AWAC (baselines/awac.py): losses against hand-computed values, behaviour on problems with a known answer, and
end-to-end runs (records, offline-to-online, resume, divergence) on a tiny generated hopper dataset."""

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
from baselines.common import GaussianActor, TwinQ
from o2o.cli import parse_config
from o2o.records import EVAL_COLUMNS

TINY = ["--hidden-dim", "32", "--batch-size", "64", "--eval-episodes", "1", "--device", "cpu", "--budget", "smoke"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_main(file: str, out: Path, *extra: str, env: str = "Hopper-v5") -> int:
    return awac.main(["--dataset", file, "--env", env, "--out", str(out), *TINY, *extra])


# ---------------------------------------------------------------------------------------------------------- losses
def test_awac_weights_hand_computed():
    adv = torch.tensor([-0.2, 0.0, 0.1, 1.0])
    w = awac.awac_weights(adv, 1 / 3)
    assert w.tolist() == pytest.approx([math.exp(-0.6), 1.0, math.exp(0.3), math.exp(3.0)], rel=1e-5)
    assert awac.awac_weights(adv, 0.1)[-1].item() == pytest.approx(100.0)  # exp(10) ≈ 22026 is clipped at 100


def small_nets(seed: int = 0) -> tuple[GaussianActor, TwinQ, TwinQ, tuple[torch.Tensor, ...]]:
    torch.manual_seed(seed)
    actor, critic, target = GaussianActor(3, 2, 8, 2, tanh_mean=False), TwinQ(3, 2, 8, 2), TwinQ(3, 2, 8, 2)
    batch = (torch.randn(6, 3), torch.rand(6, 2) * 2 - 1, torch.randn(6), torch.randn(6, 3),
             torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 0.0]))
    return actor, critic, target, batch


def gaussian_log_prob(mu: torch.Tensor, log_std: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((a - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_critic_loss_hand_computed():
    actor, critic, target, (obs, act, rew, next_obs, done) = small_nets()
    torch.manual_seed(5)
    with torch.no_grad():  # a' ~ N(μ(s'), σ), clamped to the box; target = r + γ (1 − d) min_j Q̂_j(s', a')
        a_next = (actor.act(next_obs) + actor.log_std.exp() * torch.randn(6, 2)).clamp(-1, 1)
        y = rew + 0.99 * (1 - done) * torch.minimum(*target.both(next_obs, a_next))
    q1, q2 = critic.both(obs, act)
    expect = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()  # CORL sums the two critics' MSEs
    torch.manual_seed(5)
    loss, q1_out = awac.critic_loss(critic, target, actor, obs, act, rew, next_obs, done, 0.99)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    assert torch.allclose(q1_out, q1.detach())


def test_actor_loss_hand_computed():
    actor, critic, _, (obs, act, *_) = small_nets()
    with torch.no_grad():
        actor.log_std.fill_(-0.5)
    torch.manual_seed(7)
    with torch.no_grad():  # A = min Q(s, a) − min Q(s, ã), ã ~ π(·|s)
        a_pi = (actor.act(obs) + math.exp(-0.5) * torch.randn(6, 2)).clamp(-1, 1)
        adv = torch.minimum(*critic.both(obs, act)) - torch.minimum(*critic.both(obs, a_pi))
        w = torch.exp(adv / 0.1).clamp(max=100.0)
    expect = -(w * gaussian_log_prob(actor.act(obs), actor.log_std, act)).mean()
    torch.manual_seed(7)
    loss, adv_out, w_out = awac.actor_loss(actor, critic, obs, act, 0.1)
    assert torch.allclose(adv_out, adv) and torch.allclose(w_out, w)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------- behaviour
def train_on(cfg: awac.AWACConfig, data: tuple[torch.Tensor, ...], n_steps: int, seed: int = 0) -> awac.AWACAgent:
    torch.manual_seed(seed)
    agent = awac.make_agent(data[0].shape[1], data[1].shape[1], cfg, torch.device("cpu"))
    for _ in range(n_steps):
        idx = torch.randint(0, len(data[0]), (cfg.batch_size,))
        awac.update(agent, tuple(x[idx] for x in data), cfg)
    return agent


def bandit(n: int = 2048) -> tuple[torch.Tensor, ...]:
    """One state, actions from two modes ±0.5 (σ 0.05); reward 1 for the +0.5 mode, 0 for the other; terminal."""
    g = torch.Generator().manual_seed(1)
    good = torch.rand(n, generator=g) < 0.5
    act = torch.where(good, 0.5, -0.5) + 0.05 * torch.randn(n, generator=g)
    return torch.zeros(n, 1), act[:, None], good.float(), torch.zeros(n, 1), torch.ones(n)


def test_bandit_policy_picks_best_in_support_mode():
    cfg = awac.AWACConfig(hidden_dim=32, n_hidden=2, batch_size=64, actor_lr=1e-3, critic_lr=1e-3, awac_lambda=0.1)
    agent = train_on(cfg, bandit(), 600)
    a = agent.actor.act(torch.zeros(1, 1)).item()
    assert 0.4 < a < 0.6, a  # behaviour cloning would give ≈ 0; the good mode is at +0.5


def chain(n: int = 4, reward: float = 10.0) -> tuple[torch.Tensor, ...]:
    """Chain of n one-hot states; a = +0.5 advances (reward 10 and terminal from the last state), a = −0.5 stays."""
    eye, rows = torch.eye(n), []
    for s in range(n):
        last = s == n - 1
        rows.append((eye[s], torch.tensor([0.5]), reward * last, eye[min(s + 1, n - 1)], float(last)))
        rows.append((eye[s], torch.tensor([-0.5]), 0.0, eye[s], 0.0))
    return tuple(torch.stack([torch.as_tensor(r[i]) for r in rows]) for i in range(5))


def test_chain_learns_the_best_path_values():
    n, gamma = 4, 0.9
    cfg = awac.AWACConfig(hidden_dim=32, n_hidden=2, batch_size=64, actor_lr=1e-3, critic_lr=1e-3, awac_lambda=0.1,
                          tau=0.05, discount=gamma)
    agent = train_on(cfg, chain(n), 1500)
    eye = torch.eye(n)
    q_star = 10.0 * gamma ** np.arange(n - 1, -1, -1)  # advance every step: Q*(s, advance) = 10 γ^(n−1−s)
    q_adv = agent.critic(eye, torch.full((n, 1), 0.5)).detach().numpy()
    q_stay = agent.critic(eye, torch.full((n, 1), -0.5)).detach().numpy()
    assert q_adv == pytest.approx(q_star, abs=0.3)
    assert q_stay == pytest.approx(gamma * q_star, abs=0.3)  # stay, then follow the best path
    assert agent.actor.act(eye).detach().numpy().ravel() == pytest.approx(np.full(n, 0.5), abs=0.1)


# ---------------------------------------------------------------------------------------------------------- config
def test_presets_budget_and_flags():
    cfg = parse_config(awac.AWACConfig, awac.presets, ["--dataset", "antmaze-umaze-v2"])
    assert (cfg.awac_lambda, cfg.reward_kind, cfg.eval_episodes, cfg.n_hidden) == (0.1, "antmaze", 100, 3)
    cfg = parse_config(awac.AWACConfig, awac.presets, ["--dataset", "pen-cloned-v1", "--budget", "short"])
    assert (cfg.awac_lambda, cfg.reward_kind, cfg.offline_steps) == (0.1, "none", 100_000)
    cfg = parse_config(awac.AWACConfig, awac.presets, ["--dataset", "hopper-medium-v2", "--awac-lambda", "0.5"])
    assert (cfg.awac_lambda, cfg.reward_kind, cfg.online_steps) == (0.5, "none", 0)
    cfg = parse_config(awac.AWACConfig, awac.presets, ["--dataset", "hopper-medium-v2", "--finetune", "true",
                                                        "--budget", "smoke"])
    assert awac.resolve_config(cfg).online_steps == 1000 and cfg.offline_steps == 1000


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        awac.main(["--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(awac.AWACConfig):
        assert f"--{f.name.replace('_', '-')}" in text


# ---------------------------------------------------------------------------------------------------------- runs
def test_offline_smoke_run_writes_valid_records(hopper_file, tmp_path):
    out = tmp_path / "run"
    assert run_main(hopper_file, out, "--offline-steps", "40", "--eval-every", "20", "--log-every", "10") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["algorithm"] == "awac" and summary["steps"] == 40
    assert summary["config"]["awac_lambda"] == pytest.approx(1 / 3) and summary["config"]["reward_kind"] == "none"
    assert summary["extra"]["reward_scale"] == 1.0 and summary["n_evals"] == 2
    rows = read_csv(out / "evals.csv")
    assert list(rows[0])[: len(EVAL_COLUMNS)] == EVAL_COLUMNS
    assert [(int(r["step"]), r["phase"]) for r in rows] == [(20, "offline"), (40, "offline")]
    assert all(math.isfinite(float(r["normalized_score"])) for r in rows)
    metrics = read_csv(out / "metrics.csv")
    assert [int(r["step"]) for r in metrics] == [10, 20, 30, 40]
    assert {"critic_loss", "actor_loss", "adv_mean", "weight_mean"} <= set(metrics[0])
    assert (out / "checkpoint.pt").exists()


def test_offline_to_online_smoke_run_logs_both_phases(hopper_file, tmp_path):
    out = tmp_path / "run"
    code = run_main(hopper_file, out, "--offline-steps", "20", "--online-steps", "60", "--eval-every", "20",
                    "--log-every", "20")
    assert code == 0
    rows = read_csv(out / "evals.csv")
    assert [(int(r["step"]), r["phase"], int(r["env_steps"])) for r in rows] == [
        (20, "offline", 0), (40, "online", 20), (60, "online", 40), (80, "online", 60)]
    assert "train_score" in rows[0] and rows[-1]["train_score"] != ""  # random hopper episodes are short
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 60 and summary["online_score"] is not None
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert len(ckpt["online_buffer"]["rew"]) == 60 and ckpt["step"] == 80
    # only the online rows are saved (a view would drag the whole dataset-sized storage into every checkpoint)
    assert ckpt["online_buffer"]["obs"].untyped_storage().nbytes() == 60 * 11 * 4


def test_regret_column_on_a_success_domain(tmp_path):
    from o2o.generate import rollout, write_d4rl_hdf5
    from o2o.registry import get_spec

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


class Killed(Exception):
    pass


@pytest.mark.parametrize("online", [False, True])
def test_resume_continues_the_same_curve(hopper_file, tmp_path, monkeypatch, online):
    steps = ["--offline-steps", "20", "--online-steps", "40"] if online else ["--offline-steps", "60"]
    args = [*steps, "--eval-every", "10", "--log-every", "10", "--checkpoint-every", "30"]
    assert run_main(hopper_file, tmp_path / "whole", *args) == 0

    # Kill the second run right after its evaluation at step 50: the checkpoint is at step 30.
    original = awac.Evaluator.__call__

    def killing_call(self, policy, step, *a, **kw):
        res = original(self, policy, step, *a, **kw)
        if step == 50:
            raise Killed
        return res

    monkeypatch.setattr(awac.Evaluator, "__call__", killing_call)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run_main(hopper_file, out, *args)
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    assert [int(r["step"]) for r in read_csv(out / "evals.csv")] == [10, 20, 30, 40, 50]
    monkeypatch.setattr(awac.Evaluator, "__call__", original)
    assert run_main(hopper_file, out, *args, "--resume", "true") == 0

    whole, resumed = read_csv(tmp_path / "whole" / "evals.csv"), read_csv(out / "evals.csv")
    assert [int(r["step"]) for r in resumed] == [10, 20, 30, 40, 50, 60]  # continued, nothing duplicated
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    assert [int(r["step"]) for r in read_csv(out / "metrics.csv")] == [10, 20, 30, 40, 50, 60]
    if not online:  # offline: the resumed run is the uninterrupted one, bit for bit
        assert resumed == whole
        assert read_csv(out / "metrics.csv") == read_csv(tmp_path / "whole" / "metrics.csv")
        a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["agent"]
        b = torch.load(out / "checkpoint.pt", weights_only=True)["agent"]
        for net in ("actor", "critic", "critic_target"):
            for k in a[net]:
                assert torch.equal(a[net][k], b[net][k]), (net, k)
    else:  # online: the episode restarts, so only the bookkeeping must continue
        assert [int(r["env_steps"]) for r in resumed] == [0, 0, 10, 20, 30, 40]
        ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
        assert ckpt["env_steps"] == 40 and len(ckpt["online_buffer"]["obs"]) == 40


def test_divergence_is_recorded(hopper_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(hopper_file, out, "--offline-steps", "40", "--log-every", "10", "--critic-lr", "1e30") == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and "NaN/inf" in summary["error"]
    assert "diverged" in capsys.readouterr().out
