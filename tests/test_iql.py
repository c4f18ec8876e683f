"""IQL (baselines/iql.py): losses against hand-computed values, behaviour on problems with a known answer, and
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

from baselines import iql
from baselines.common import DeterministicActor, GaussianActor, TwinQ
from o2o.cli import parse_config
from o2o.records import EVAL_COLUMNS

TINY = ["--hidden-dim", "32", "--batch-size", "64", "--eval-episodes", "1", "--device", "cpu", "--budget", "smoke"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_main(file: str, out: Path, *extra: str, env: str = "Hopper-v5") -> int:
    return iql.main(["--dataset", file, "--env", env, "--out", str(out), *TINY, *extra])


# ---------------------------------------------------------------------------------------------------------- losses
def test_expectile_loss_hand_computed():
    u = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    # weights |τ − 1(u<0)| = [0.3, 0.3, 0.7, 0.7, 0.7]; mean(w u²) = (1.2 + 0.3 + 0 + 0.7 + 6.3) / 5
    assert iql.expectile_loss(u, 0.7).item() == pytest.approx(1.7)
    assert iql.expectile_loss(u, 0.5).item() == pytest.approx(0.5 * (4 + 1 + 0 + 1 + 9) / 5)


def test_awr_weights_clip_at_100():
    adv = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    w = iql.awr_weights(adv, beta=3.0)
    assert w.tolist() == pytest.approx([math.exp(-3.0), 1.0, math.exp(1.5), 100.0], rel=1e-6)  # exp(6) ≈ 403 → 100
    assert iql.awr_weights(adv, beta=3.0, max_weight=1e9)[-1].item() == pytest.approx(math.exp(6.0), rel=1e-6)


def test_policy_losses_hand_computed():
    obs, act = torch.zeros(2, 1), torch.tensor([[0.5], [-0.5]])
    weights = torch.tensor([2.0, 1.0])
    det = DeterministicActor(1, 1, hidden_dim=4, n_hidden=1)
    pred = det(obs)
    expect = (2.0 * (pred[0] - 0.5) ** 2 + 1.0 * (pred[1] + 0.5) ** 2).item() / 2
    assert iql.awr_policy_loss(det, obs, act, weights).item() == pytest.approx(expect, rel=1e-5)
    gauss = GaussianActor(1, 1, hidden_dim=4, n_hidden=1)
    mu, sigma = gauss.act(obs).detach()[:, 0], 1.0  # log-std starts at 0
    nll = 0.5 * ((act[:, 0] - mu) / sigma) ** 2 + 0.5 * math.log(2 * math.pi)
    expect = (weights * nll).mean().item()
    assert iql.awr_policy_loss(gauss, obs, act, weights).item() == pytest.approx(expect, rel=1e-5)


def test_value_and_q_losses_hand_computed():
    torch.manual_seed(0)
    q = TwinQ(2, 1, hidden_dim=8)
    obs, act = torch.randn(5, 2), torch.randn(5, 1)
    rew, done, next_v = torch.randn(5), torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0]), torch.randn(5)
    q1, q2 = q.both(obs, act)
    target = rew + 0.9 * (1 - done) * next_v
    expect = 0.5 * (((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean())
    loss, q1_out = iql.q_loss(q, next_v, obs, act, rew, done, 0.9)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    assert torch.allclose(q1_out, q1.detach())
    value = iql.ValueFunction(2, hidden_dim=8)
    loss_v, adv = iql.value_loss(value, q, obs, act, 0.8)
    u = torch.minimum(q1, q2) - value(obs)
    assert torch.allclose(adv, u.detach())
    assert loss_v.item() == pytest.approx(iql.expectile_loss(u, 0.8).item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------- behaviour
def train_on(cfg: iql.IQLConfig, data: tuple[torch.Tensor, ...], n_steps: int, seed: int = 0) -> iql.IQLAgent:
    torch.manual_seed(seed)
    agent = iql.make_agent(data[0].shape[1], data[1].shape[1], cfg, torch.device("cpu"))
    for _ in range(n_steps):
        idx = torch.randint(0, len(data[0]), (cfg.batch_size,))
        iql.update(agent, tuple(x[idx] for x in data), cfg)
    return agent


def bandit(n: int = 2048) -> tuple[torch.Tensor, ...]:
    """One state, actions from two modes ±0.5 (σ 0.05); reward 1 for the +0.5 mode, 0 for the other; terminal."""
    g = torch.Generator().manual_seed(1)
    good = torch.rand(n, generator=g) < 0.5
    act = torch.where(good, 0.5, -0.5) + 0.05 * torch.randn(n, generator=g)
    return torch.zeros(n, 1), act[:, None], good.float(), torch.zeros(n, 1), torch.ones(n)


@pytest.mark.parametrize("deterministic", [False, True])
def test_bandit_policy_picks_best_in_support_mode(deterministic):
    cfg = iql.IQLConfig(hidden_dim=32, batch_size=64, actor_lr=1e-3, q_lr=1e-3, v_lr=1e-3, expectile=0.9, beta=10.0,
                        offline_steps=600, deterministic_actor=deterministic)
    agent = train_on(cfg, bandit(), 600)
    a = agent.actor.act(torch.zeros(1, 1)).item()
    assert 0.4 < a < 0.6, a  # behaviour cloning would give ≈ 0; the good mode is at +0.5


def chain(n: int = 4) -> tuple[torch.Tensor, ...]:
    """Chain of n one-hot states; a = +0.5 advances (reward 1 and terminal from the last state), a = −0.5 stays."""
    eye, rows = torch.eye(n), []
    for s in range(n):
        last = s == n - 1
        rows.append((eye[s], torch.tensor([0.5]), float(last), eye[min(s + 1, n - 1)], float(last)))
        rows.append((eye[s], torch.tensor([-0.5]), 0.0, eye[s], 0.0))
    return tuple(torch.stack([torch.as_tensor(r[i]) for r in rows]) for i in range(5))


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
    cfg = iql.IQLConfig(hidden_dim=32, batch_size=64, actor_lr=1e-3, q_lr=1e-3, v_lr=1e-3, expectile=0.9,
                        discount=gamma, tau=0.05, offline_steps=1500)
    agent = train_on(cfg, chain(n), 1500)
    eye = torch.eye(n)
    v = agent.value(eye).detach().numpy()
    assert v == pytest.approx(v09, abs=0.05)
    q_adv = agent.q(eye, torch.full((n, 1), 0.5)).detach().numpy()
    assert q_adv == pytest.approx(np.r_[gamma * v09[1:], 1.0], abs=0.05)  # Q(s, a) = r + γ V(s')


# ---------------------------------------------------------------------------------------------------------- config
def test_presets_budget_and_flags():
    cfg = parse_config(iql.IQLConfig, iql.presets, ["--dataset", "antmaze-umaze-v2"])
    assert (cfg.expectile, cfg.beta, cfg.deterministic_actor, cfg.reward_kind) == (0.9, 10.0, False, "antmaze")
    assert cfg.eval_episodes == 100 and cfg.offline_steps == 1_000_000 and cfg.online_steps == 0
    cfg = parse_config(iql.IQLConfig, iql.presets, ["--dataset", "pen-cloned-v1", "--budget", "short", "--beta", "1"])
    assert (cfg.expectile, cfg.actor_dropout, cfg.beta, cfg.offline_steps) == (0.8, 0.1, 1.0, 100_000)
    cfg = parse_config(iql.IQLConfig, iql.presets, ["--dataset", "hopper-medium-v2", "--finetune", "true"])
    assert iql.resolve_config(cfg).online_steps == 1_000_000 and cfg.reward_kind == "locomotion"
    for budget, n in (("short", 100_000), ("smoke", 1000)):
        cfg = parse_config(iql.IQLConfig, iql.presets, ["--dataset", "hopper-medium-v2", "--finetune", "--budget",
                                                        budget])
        assert iql.resolve_config(cfg).online_steps == n
    cfg = parse_config(iql.IQLConfig, iql.presets, ["--dataset", "hopper-medium-v2", "--finetune", "true",
                                                    "--online-steps", "7"])
    assert iql.resolve_config(cfg).online_steps == 7


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        iql.main(["--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(iql.IQLConfig):
        assert f"--{f.name.replace('_', '-')}" in text


# ---------------------------------------------------------------------------------------------------------- runs
def test_offline_smoke_run_writes_valid_records(hopper_file, tmp_path):
    out = tmp_path / "run"
    assert run_main(hopper_file, out, "--offline-steps", "40", "--eval-every", "20", "--log-every", "10") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["algorithm"] == "iql" and summary["steps"] == 40
    assert summary["config"]["expectile"] == 0.7 and summary["config"]["reward_kind"] == "locomotion"
    assert summary["extra"]["reward_scale"] > 0 and summary["n_evals"] == 2
    rows = read_csv(out / "evals.csv")
    assert list(rows[0])[: len(EVAL_COLUMNS)] == EVAL_COLUMNS
    assert [(int(r["step"]), r["phase"]) for r in rows] == [(20, "offline"), (40, "offline")]
    assert all(math.isfinite(float(r["normalized_score"])) for r in rows)
    metrics = read_csv(out / "metrics.csv")
    assert [int(r["step"]) for r in metrics] == [10, 20, 30, 40]
    assert {"value_loss", "q_loss", "actor_loss", "adv_mean"} <= set(metrics[0])
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
    assert summary["config"]["expectile"] == 0.8 and summary["config"]["actor_dropout"] == 0.1  # Adroit preset
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
    original = iql.Evaluator.__call__

    def killing_call(self, policy, step, *a, **kw):
        res = original(self, policy, step, *a, **kw)
        if step == 50:
            raise Killed
        return res

    monkeypatch.setattr(iql.Evaluator, "__call__", killing_call)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run_main(hopper_file, out, *args)
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    assert [int(r["step"]) for r in read_csv(out / "evals.csv")] == [10, 20, 30, 40, 50]
    monkeypatch.setattr(iql.Evaluator, "__call__", original)
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
        for net in ("actor", "q", "q_target", "value"):
            for k in a[net]:
                assert torch.equal(a[net][k], b[net][k]), (net, k)
    else:  # online: the episode restarts, so only the bookkeeping must continue
        assert [int(r["env_steps"]) for r in resumed] == [0, 0, 10, 20, 30, 40]
        ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
        assert ckpt["env_steps"] == 40 and len(ckpt["online_buffer"]["obs"]) == 40


def test_divergence_is_recorded(hopper_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(hopper_file, out, "--offline-steps", "40", "--log-every", "10", "--q-lr", "1e30") == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and "NaN/inf" in summary["error"]
    assert "diverged" in capsys.readouterr().out
