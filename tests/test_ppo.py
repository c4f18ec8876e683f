"""PPO: hand-worked losses and GAE, learning on a tiny bandit, smoke run with records, resume, divergence."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from baselines import ppo
from o2o.records import RunRecorder
from o2o.registry import spec_for_env

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------- hand-worked maths
def test_ppo_loss_hand_worked_and_clipped_gradients():
    old = torch.zeros(4)
    new = torch.tensor([0.1, -0.3, -0.3, 0.0], requires_grad=True)  # ratios e^0.1, e^-0.3, e^-0.3, 1
    adv = torch.tensor([1.0, 1.0, -1.0, -2.0])
    loss = ppo.ppo_loss(new, old, adv, clip=0.05)
    # per sample min(ρA, clip(ρ)A): 1.05 (clipped), e^-0.3 (unclipped, ρ<1−ε but A>0), −0.95 (clipped), −2
    expected = -(1.05 + math.exp(-0.3) - 0.95 - 2.0) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    # clipped samples carry no gradient; unclipped ones −ρA/n
    assert new.grad[0].item() == 0.0 and new.grad[2].item() == 0.0
    assert new.grad[1].item() == pytest.approx(-math.exp(-0.3) / 4, abs=1e-6)
    assert new.grad[3].item() == pytest.approx(2.0 / 4, abs=1e-6)


def test_value_loss_clipped_hand_worked():
    v = torch.tensor([1.0, 2.0, 1.0])
    v_old = torch.tensor([0.5, 2.0, 1.5])
    ret = torch.tensor([2.0, 1.0, 0.0])
    # sample 0: (1−2)²=1 vs clipped v 0.7 → 1.69; sample 1: 1 vs 1; sample 2: 1 vs clipped 1.3 → 1.69
    assert ppo.value_loss(v, v_old, ret, 0.2).item() == pytest.approx(0.5 * (1.69 + 1.0 + 1.69) / 3, abs=1e-6)
    assert ppo.value_loss(v, v_old, ret, None).item() == pytest.approx(0.5 * (1 + 1 + 1) / 3, abs=1e-6)


def test_gae_termination_and_truncation_hand_worked():
    g, lam = 0.9, 0.8
    # env 0: step 1 terminates (no bootstrap), step 3 is truncated with V(s_final) = 2 (bootstrap),
    # so next_value (5, the next episode's first state) must be ignored. env 1: no episode end, next_value 1.
    rewards = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    values = torch.tensor([[0.5, 0.0], [0.6, 0.0], [0.7, 0.0], [0.8, 0.0]])
    dones = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    final = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    adv, ret = ppo.gae(rewards, values, dones, torch.tensor([5.0, 1.0]), g, lam, final)
    # env 0 by hand: δ3 = 1 + .9·2 − .8 = 2.0; δ2 = 1 + .9·.8 − .7 = 1.02, A2 = 1.02 + .72·2 = 2.46;
    # δ1 = 1 − .6 = .4 (terminal), A1 = .4; δ0 = 1 + .9·.6 − .5 = 1.04, A0 = 1.04 + .72·.4 = 1.328
    assert adv[:, 0].tolist() == pytest.approx([1.328, 0.4, 2.46, 2.0], abs=1e-5)
    assert ret[:, 0].tolist() == pytest.approx([1.828, 1.0, 3.16, 2.8], abs=1e-5)
    # env 1: only the bootstrap from next_value: A3 = .9, A_t = (γλ)·A_{t+1} + 0 with δ_t = 0 for t < 3
    assert adv[:, 1].tolist() == pytest.approx([0.9 * 0.72**3, 0.9 * 0.72**2, 0.9 * 0.72, 0.9], abs=1e-5)
    # without the truncation bootstrap the last step is a plain termination
    adv2, _ = ppo.gae(rewards, values, dones, torch.tensor([5.0, 1.0]), g, lam)
    assert adv2[3, 0].item() == pytest.approx(1 - 0.8, abs=1e-6)


# ------------------------------------------------------------------------------------------- learning
class ContextBandit(gym.Env):
    """One-step episodes: observe s ~ U(−1, 1)², reward −(a − 0.6·s₀)²."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self.s, {}

    def step(self, action):
        r = -float((action[0] - 0.6 * self.s[0]) ** 2)
        return self.s, r, True, False, {}


@pytest.fixture(scope="module")
def bandit_spec():
    gym.register("O2OTestBandit-v0", entry_point=ContextBandit, max_episode_steps=1)
    spec = spec_for_env("bandit", "O2OTestBandit-v0", family="hopper")
    return dataclasses.replace(spec, obs_dim=2, act_dim=1, max_episode_steps=1)


def test_ppo_improves_on_a_bandit(tmp_path, bandit_spec):
    cfg = ppo.PPOConfig(dataset="bandit", seed=0, online_steps=4096, num_envs=8, rollout_steps=128,
                        minibatch_size=256, epochs=10, actor_lr=1e-2, critic_lr=1e-2, normalize_states=False,
                        normalize_rewards=False, eval_every=10**9, log_every=10**9, hidden=(32,), critic_hidden=(32,))
    agent = ppo.make_agent(cfg, bandit_spec)
    rec = RunRecorder(tmp_path, "ppo", "bandit", 0, {})
    res = ppo.run_ppo(cfg, bandit_spec, agent, recorders=[rec], evaluator=None)[0]
    rets = np.asarray(res["episode_returns"])
    first, last = rets[:1024].mean(), rets[-1024:].mean()
    assert first < -0.4  # σ = 1 at the start: E[−(a − t)²] ≈ −(σ² + t²) (clipped)
    assert last > first + 0.25, (first, last)  # σ shrinks and the mean moves to the optimum
    with torch.no_grad():  # the deterministic policy tracks the optimum 0.6·s₀
        s = torch.rand(256, 2) * 2 - 1
        err = (agent.act(s[None])[0, :, 0] - 0.6 * s[:, 0]).pow(2).mean().item()
    assert err < 0.03, err  # the initial mean action (≈ 0) has error E[(0.6 s₀)²] = 0.12


def test_actor_critic_interfaces():
    cfg = dataclasses.replace(ppo.PPOConfig(), hidden=(8, 8), critic_hidden=(8,))
    actor, critic = ppo.make_actor(cfg, 5, 2, [0, 1]), ppo.make_critic(cfg, 5, [0, 1])
    obs = torch.randn(2, 7, 5)
    mean, log_std = actor.mean_log_std(obs)
    assert mean.shape == (2, 7, 2) and log_std.shape == (2, 1, 2) and torch.equal(actor.act(obs), mean)
    assert critic(obs).shape == (2, 7)
    with pytest.raises(ValueError, match="equal widths"):
        ppo.make_actor(dataclasses.replace(cfg, hidden=(8, 4)), 5, 2, [0])
    plain = ppo.plain_actor_state(actor, 1)  # the portable layout o2o.generate reads, seed 1's weights
    x = obs[1].double().numpy()
    for i in range(3):
        x = x @ plain[f"mean_net.{2 * i}.weight"].double().numpy().T + plain[f"mean_net.{2 * i}.bias"].double().numpy()
        x = np.tanh(x) if i < 2 else x
    np.testing.assert_allclose(x, mean[1].detach().double().numpy(), rtol=1e-5, atol=1e-6)


def test_random_actor_state_is_the_earlier_random_policy():
    """o2o.generate's random datasets come from random_actor_state: the weights of the earlier nn.Linear actor under
    torch.manual_seed. It equals, bit for bit, o2o.generate.random_policy_state, which draws them without the PPO code
    and whose values tests/test_generate.py pins (to 1e-6: the orthogonal init's QR rounds differently on different
    CPUs, and with more threads, in the earlier code as well; a sha256 pinned here before held on one CPU type only)."""
    from o2o import generate
    from o2o.specs import get_spec

    for name, (obs_dim, act_dim) in {"local:hopper-random": (11, 3), "local:halfcheetah-random": (17, 6)}.items():
        st = ppo.random_actor_state(obs_dim, act_dim, 0)
        ref = generate.random_policy_state(get_spec(name), 0)["actor"]
        assert sorted(st) == sorted(ref) and all(torch.equal(st[k], ref[k]) for k in ref)
        other = generate.random_policy_state(get_spec(name), 1)["actor"]
        assert not torch.equal(st["mean_net.0.weight"], other["mean_net.0.weight"])  # control: another seed differs


# ------------------------------------------------------------------------------------------- command line
SMALL = ["--dataset", "local:hopper-medium", "--budget", "smoke", "--rollout-steps", "512", "--minibatch-size", "128",
         "--epochs", "2", "--eval-episodes", "1", "--eval-every", "512"]


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_smoke_run_writes_records(tmp_path):
    out = tmp_path / "run"
    assert ppo.main([*SMALL, "--out", str(out), "--online-steps", "1024"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["algorithm"] == "ppo"
    assert summary["env_steps"] == 1024 and summary["config"]["online_steps"] == 1024
    rows = _csv(out / "evals.csv")
    assert [int(r["env_steps"]) for r in rows] == [512, 1024] and {r["phase"] for r in rows} == {"online"}
    assert all(np.isfinite(float(r["normalized_score"])) for r in rows)
    assert (out / "metrics.csv").exists()
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["update"] == 2 and ck["phase"] == "online"
    pol = torch.load(out / "policy.pt", weights_only=True)
    assert set(pol["obs_norm"]) == {"mean", "std", "clip"} and pol["arch"]["obs_dim"] == 11


def test_resume_continues_from_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = [*SMALL, "--out", str(out), "--log-every", "512", "--checkpoint-every", "512"]
    assert ppo.main([*args, "--online-steps", "512"]) == 0
    first = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ppo.main([*args, "--online-steps", "1536", "--resume"]) == 0
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["update"] == 3
    # a resumed run continues: the first run's rows stay, the update at 512 is not run again
    assert [int(r["step"]) for r in _csv(out / "metrics.csv")] == [512, 1024, 1536]
    assert [int(r["env_steps"]) for r in _csv(out / "evals.csv")] == [512, 1024, 1536]
    assert not torch.equal(first["agent"]["actor"]["log_std"], ck["agent"]["actor"]["log_std"])
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


def test_divergence_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(ppo, "ppo_loss", lambda new, old, adv, clip: (new * float("nan")).mean())
    out = tmp_path / "run"
    assert ppo.main([*SMALL, "--out", str(out), "--online-steps", "1024"]) == 3  # the exit status of a divergence
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert "NaN" in summary["error"]


def test_unio4_preset():
    from o2o.specs import get_spec

    unio4 = ppo.PPOConfig(preset="unio4")
    p = ppo.presets(unio4, get_spec("hopper-medium-v2"))
    assert p["rollout_steps"] == 2048 and p["minibatch_size"] == 128 and p["clip"] == 0.05
    assert p["actor_lr"] == 2e-5 and p["critic_lr"] == 2e-4 and p["ent_coef"] == 0.01
    assert ppo.presets(unio4, get_spec("pen-human-v1"))["minibatch_size"] == 256
    official = ppo.presets(ppo.PPOConfig(), get_spec("hopper-medium-v2"))  # CleanRL's values: the defaults
    assert dataclasses.replace(ppo.PPOConfig(), **official) == ppo.PPOConfig()


def test_packed_seeds_get_the_records_they_get_alone(tmp_path):
    """--seeds 0,1 (2 seeds × 2 envs in one vector env) gives seed 1 exactly the records and weights of seed 1 alone:
    evaluations, episodes, metrics and the checkpointed networks, bit for bit on the CPU."""
    args = [*SMALL, "--online-steps", "1024", "--num-envs", "2", "--rollout-steps", "256", "--minibatch-size", "128"]
    assert ppo.main([*args, "--seeds", "0,1", "--out", str(tmp_path / "pack")]) == 0
    assert ppo.main([*args, "--seed", "1", "--out", str(tmp_path / "alone")]) == 0
    packed, alone = tmp_path / "pack" / "seed1", tmp_path / "alone"
    for name in ("evals.csv", "episodes.csv", "metrics.csv"):
        assert (packed / name).read_text() == (alone / name).read_text(), name
    a = torch.load(packed / "checkpoint.pt", weights_only=True)["agent"]
    b = torch.load(alone / "checkpoint.pt", weights_only=True)["agent"]
    for part in ("actor", "critic"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in b[part]), part
    assert (tmp_path / "pack" / "seed0" / "evals.csv").read_text() != (alone / "evals.csv").read_text()
    summary = json.loads((packed / "summary.json").read_text())
    assert summary["seed"] == 1 and summary["extra"]["pack"] == [0, 1] and summary["config"]["seeds"] == []
