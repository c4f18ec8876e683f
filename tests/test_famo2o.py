"""Tests of algorithms/famo2o.py: β encoding, the universal model's loss, the balance model's gradient, end-to-end runs
(offline then online) on a tiny generated hopper dataset, run records, resume and divergence."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from algorithms import famo2o as fam
from baselines import iql

torch.set_num_threads(1)

# tiny nets and batches: the runs test plumbing, not learning
FAST = ["--env", "Hopper-v5", "--budget", "smoke", "--hidden-dim", "32", "--batch-size", "32", "--eval-episodes", "1",
        "--beta-states", "500", "--log-every", "10"]


@pytest.fixture(scope="module")
def tiny_hopper(tmp_path_factory: pytest.TempPathFactory) -> str:
    """1000 transitions of a uniform-random policy in Hopper-v5, written in D4RL's HDF5 layout."""
    from o2o.generate import rollout, write_d4rl_hdf5
    from o2o.registry import spec_for_env

    spec = spec_for_env("tiny-hopper", "Hopper-v5")

    def policy(obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return rng.uniform(-1, 1, size=(1, spec.act_dim)).astype(np.float32), np.zeros(1, np.float32)

    path = tmp_path_factory.mktemp("data") / "tiny_hopper.hdf5"
    write_d4rl_hdf5(path, rollout(spec, policy, 1000, seed=0))
    return str(path)


def read_evals(out: Path) -> list[dict[str, str]]:
    with open(out / "evals.csv") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------------------- β encoding
def test_beta_encoding_values() -> None:
    betas = torch.tensor([0.0, 1.0, 3.0, 10.0, 14.0], dtype=torch.float64)
    enc = fam.beta_encoding(betas)
    assert enc.shape == (5, 6)
    for b, row in zip(betas.tolist(), enc.tolist()):
        # official sin_cos_skill_func(n=10000, d=6): divisors 10000^(0/6), 10000^(2/6), 10000^(4/6), sin/cos interleaved
        want = [math.sin(b), math.cos(b), math.sin(b / 21.544346900318832), math.cos(b / 21.544346900318832),
                math.sin(b / 464.15888336127773), math.cos(b / 464.15888336127773)]
        np.testing.assert_allclose(row, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(enc[0].tolist(), [0, 1, 0, 1, 0, 1])
    assert fam.beta_encoding(torch.tensor([2.0]), d=4).shape == (1, 4)
    with pytest.raises(ValueError):
        fam.beta_encoding(torch.tensor([1.0]), d=5)


def test_universal_policy_sees_beta() -> None:
    torch.manual_seed(0)
    pol = fam.UniversalPolicy(5, 2, (16, 16))
    obs = torch.randn(4, 5)
    m1, s1 = pol(obs, torch.full((4,), 1.0))
    m2, _ = pol(obs, torch.full((4,), 5.0))
    assert not torch.allclose(m1, m2)  # different members of the family
    assert m1.abs().max() < 1  # tanh mean
    pol.log_std.data.fill_(-9.0)
    assert torch.allclose(pol(obs, torch.ones(4))[1], torch.full((4, 2), math.exp(-5.0)))  # clipped at −5


# ---------------------------------------------------------------------------------------------- universal model loss
class _FixedBeta(torch.nn.Module):
    """The universal model at one β, seen as a plain actor with log_prob(obs, act) (IQL's actor interface)."""

    def __init__(self, policy: fam.UniversalPolicy, beta: float) -> None:
        super().__init__()
        self.policy, self.beta = policy, beta

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.policy.log_prob(obs, torch.full((obs.shape[0],), self.beta), act)


@pytest.mark.parametrize("beta", [1.0, 3.0, 10.0])
def test_universal_loss_is_iql_awr_loss_at_fixed_beta(beta: float) -> None:
    torch.manual_seed(1)
    pol = fam.UniversalPolicy(6, 3, (16, 16))
    obs, act = torch.randn(64, 6), torch.rand(64, 3) * 2 - 1
    adv = torch.randn(64) * 2
    adv[:4] = 6.0  # exp(β·6) > 100: these weights hit the clip
    ours = fam.universal_policy_loss(pol, obs, act, torch.full((64,), beta), adv)
    base = iql.awr_policy_loss(_FixedBeta(pol, beta), obs, act, iql.awr_weights(adv, beta, iql.EXP_ADV_MAX))
    torch.testing.assert_close(ours, base)
    # and the hand formula: −mean(min(exp(β·A), 100) · log N(a; μ(s, β), σ²))
    mean, std = pol(obs, torch.full((64,), beta))
    logp = (-0.5 * ((act - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(ours, -(torch.exp(beta * adv).clamp(max=100.0) * logp).mean())
    assert (torch.exp(beta * adv) > 100).any()


def test_universal_loss_uses_each_samples_beta() -> None:
    torch.manual_seed(2)
    pol = fam.UniversalPolicy(4, 2, (16,))
    obs, act, adv = torch.randn(8, 4), torch.rand(8, 2) * 2 - 1, torch.randn(8)
    beta = torch.linspace(1, 5, 8)
    want = torch.stack([-torch.exp(beta[i] * adv[i]).clamp(max=100) * pol.log_prob(obs[i:i + 1], beta[i:i + 1],
                                                                                      act[i:i + 1])[0]
                        for i in range(8)]).mean()
    torch.testing.assert_close(fam.universal_policy_loss(pol, obs, act, beta, adv), want)


# ----------------------------------------------------------------------------------------------------- balance model
class _MonotonePolicy(torch.nn.Module):
    """A universal model whose action grows with β: a = 2(β − lo)/(hi − lo) − 1 in every dimension (+ small noise)."""

    def __init__(self, lo: float, hi: float, act_dim: int = 3) -> None:
        super().__init__()
        self.lo, self.hi, self.act_dim = lo, hi, act_dim

    def rsample(self, obs: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        a = (2 * (beta - self.lo) / (self.hi - self.lo) - 1).unsqueeze(-1).expand(-1, self.act_dim)
        return a + 0.01 * torch.randn_like(a)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_balance_model_moves_beta_to_the_better_end(sign: float) -> None:
    """Q increasing (decreasing) in the action and an action increasing in β: β must go to β_hi (β_lo)."""
    torch.manual_seed(3)
    lo, hi = 1.0, 5.0
    balance = fam.BalanceModel(4, lo, hi, (32, 32))
    policy = _MonotonePolicy(lo, hi)
    q_fn = lambda s, a: sign * 10.0 * a.sum(-1)  # noqa: E731
    log_alpha = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam(balance.parameters(), lr=1e-3)
    alpha_opt = torch.optim.Adam([log_alpha], lr=3e-4)
    obs = torch.randn(256, 4)
    start = balance.deterministic(obs).mean().item()
    assert lo + 0.2 * (hi - lo) < start < hi - 0.2 * (hi - lo)
    for _ in range(300):
        loss, entropy, _ = fam.balance_model_loss(balance, policy, q_fn, obs, log_alpha.detach().exp())
        fam._step(opt, loss, list(balance.parameters()))
        fam._step(alpha_opt, fam.temperature_loss(log_alpha, entropy, -0.5), [log_alpha])
    end = balance.deterministic(obs)
    assert end.min() >= lo and end.max() <= hi
    if sign > 0:
        assert end.mean().item() > hi - 0.1 * (hi - lo), end.mean()
    else:
        assert end.mean().item() < lo + 0.1 * (hi - lo), end.mean()


def test_balance_log_prob_is_tanh_gaussian_density() -> None:
    torch.manual_seed(4)
    bm = fam.BalanceModel(3, 8.0, 14.0, (8,))
    obs = torch.randn(5, 3)
    torch.manual_seed(5)
    beta, logp = bm.rsample(obs)
    u = (beta - 8.0) / 6.0 * 2 - 1
    mean, std = bm.net(obs).squeeze(-1), bm.log_std.exp()
    x = torch.atanh(u.double()).float()
    want = torch.distributions.Normal(mean, std).log_prob(x) - torch.log1p(-u.pow(2))
    torch.testing.assert_close(logp, want, rtol=1e-4, atol=1e-4)
    assert ((beta >= 8) & (beta <= 14)).all()


def test_temperature_rises_when_entropy_is_below_target() -> None:
    log_alpha = torch.zeros((), requires_grad=True)
    fam.temperature_loss(log_alpha, torch.tensor(-2.0), -0.5).backward()
    assert log_alpha.grad < 0  # gradient descent raises α
    log_alpha.grad = None
    fam.temperature_loss(log_alpha, torch.tensor(1.0), -0.5).backward()
    assert log_alpha.grad > 0


def _agent(base: str) -> fam.FamO2O:
    cfg = fam.FamO2OConfig(base=base, hidden_dim=32, beta_lo=1.0, beta_hi=5.0)
    return fam.FamO2O(cfg, 5, 2)


def _batch(n: int = 32) -> tuple[torch.Tensor, ...]:
    return torch.randn(n, 5), torch.rand(n, 2) * 2 - 1, torch.randn(n), torch.randn(n, 5), torch.zeros(n)


def test_balance_step_changes_only_the_balance_model() -> None:
    torch.manual_seed(6)
    agent = _agent("iql")
    frozen = {k: [p.detach().clone() for p in m.parameters()] for k, m in
              (("policy", agent.policy), ("q", agent.q), ("q_target", agent.q_target))}
    before = [p.detach().clone() for p in agent.balance.parameters()]
    agent._balance_and_alpha(torch.randn(32, 5), agent.q_target)
    for k, m in (("policy", agent.policy), ("q", agent.q), ("q_target", agent.q_target)):
        assert all(p.grad is None for p in m.parameters()), k
        assert all(torch.equal(a, b) for a, b in zip(frozen[k], m.parameters())), k
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.balance.parameters()))


@pytest.mark.parametrize("base", ["iql", "awac"])
def test_update_runs_and_betas_stay_in_range(base: str) -> None:
    torch.manual_seed(7)
    agent = _agent(base)
    for online in (False, True):
        info = agent.update(_batch(), online)
        assert all(torch.isfinite(v).all() for v in info.values())
    assert 1.0 <= info["beta_actor"] <= 5.0
    b = agent.betas(torch.randn(100, 5))
    assert ((b >= 1.0) & (b <= 5.0)).all()
    offline = agent.policy_betas(torch.zeros(4096, 5), online=False)
    assert offline.min() < 1.1 and offline.max() > 4.9  # U[β_lo, β_hi], not the balance model


# ----------------------------------------------------------------------------------------------------- config
def test_presets_per_domain_and_base(tiny_hopper: str) -> None:
    from o2o.registry import get_spec

    am = fam.presets(get_spec("antmaze-umaze-v2"))
    assert (am["beta_lo"], am["beta_hi"], am["expectile"]) == (8.0, 14.0, 0.9)
    loco = fam.presets(get_spec("hopper-medium-v2"))
    assert (loco["beta_lo"], loco["beta_hi"], loco["expectile"]) == (1.0, 5.0, 0.7)
    assert fam.presets(get_spec("pen-human-v1"), "awac")["beta_lo"] == 8.0
    aw = fam.presets(get_spec("hopper-medium-v2"), "awac")  # β around the project's AWAC λ⁻¹ = 3, its nets and data
    assert (aw["beta_lo"], aw["beta_hi"], aw["n_hidden"], aw["normalize_states"], aw["reward_kind"]) == \
        (1.0, 5.0, 3, True, "none")
    cfg = fam.parse_config(fam.FamO2OConfig, lambda s: fam.presets(s, "iql"),
                           argv=["--dataset", "antmaze-umaze-v2", "--beta-hi", "12", "--budget", "smoke"])
    assert (cfg.beta_lo, cfg.beta_hi, cfg.expectile, cfg.eval_episodes) == (8.0, 12.0, 0.9, 2)
    assert cfg.offline_steps == 1000 and cfg.online_steps == 1000


def test_help_lists_the_common_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        fam.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--dataset", "--seed", "--out", "--budget", "--device", "--online-steps", "--resume", "--base",
                 "--beta-lo", "--beta-hi"):
        assert flag in text
    assert fam.main(["--base", "cql"]) == 2


# ----------------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("base", ["iql", "awac"])
def test_smoke_run_offline_then_online(tiny_hopper: str, tmp_path: Path, base: str) -> None:
    out = tmp_path / base
    rc = fam.main(["--dataset", tiny_hopper, *FAST, "--base", base, "--offline-steps", "20", "--online-steps", "20",
                   "--eval-every", "10", "--out", str(out)])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "finished" and s["algorithm"] == f"famo2o_{base}"
    assert s["steps"] == 40 and s["env_steps"] == 20 and s["config"]["base"] == base
    with open(out / "evals.csv") as f:
        header = next(csv.reader(f))
    assert header[-5:] == ["beta_mean", "beta_std", "beta_q10", "beta_q50", "beta_q90"]
    rows = read_evals(out)
    assert [(int(r["step"]), r["phase"], int(r["env_steps"])) for r in rows] == [
        (10, "offline", 0), (20, "offline", 0), (30, "online", 10), (40, "online", 20)]
    for r in rows:
        q10, q50, q90 = float(r["beta_q10"]), float(r["beta_q50"]), float(r["beta_q90"])
        assert 1.0 <= q10 <= q50 <= q90 <= 5.0 and float(r["beta_std"]) >= 0
    betas = np.load(out / "betas.npy")
    assert betas.shape == (500,) and np.all((betas >= 1.0) & (betas <= 5.0))
    assert float(rows[-1]["beta_mean"]) == pytest.approx(float(betas.mean()), rel=1e-5)
    assert (out / "checkpoint.pt").exists() and (out / "metrics.csv").exists() and (out / "policy.pt").exists()


class _Interrupt(Exception):
    pass


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    real = fam.FamO2O.update
    calls = {"n": 0}

    def update(self: fam.FamO2O, batch: tuple[torch.Tensor, ...], online: bool) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        if calls["n"] > n:
            raise _Interrupt
        return real(self, batch, online)

    monkeypatch.setattr(fam.FamO2O, "update", update)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / "policy.pt", weights_only=True)["policy"]


def test_resume_offline_reproduces_the_uninterrupted_run(tiny_hopper: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--dataset", tiny_hopper, *FAST, "--offline-steps", "30", "--online-steps", "10", "--eval-every", "15",
            "--checkpoint-every", "10"]
    assert fam.main([*args, "--out", str(tmp_path / "a")]) == 0
    with monkeypatch.context() as m:
        _interrupt_after(m, 24)  # dies during update 25: the last checkpoint is at step 20
        with pytest.raises(_Interrupt):
            fam.main([*args, "--out", str(tmp_path / "b")])
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["status"] == "failed"
    assert [int(r["step"]) for r in read_evals(tmp_path / "b")] == [15]
    assert fam.main([*args, "--out", str(tmp_path / "b"), "--resume", "true"]) == 0
    ra, rb = read_evals(tmp_path / "a"), read_evals(tmp_path / "b")
    drop = ("return_std",)  # both deterministic; compare everything
    assert [{k: v for k, v in r.items() if k not in drop} for r in ra] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rb]
    pa, pb = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "betas.npy"), np.load(tmp_path / "b" / "betas.npy"))
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["status"] == "finished"
    # a finished run is left alone
    assert fam.main([*args, "--out", str(tmp_path / "b"), "--resume", "true"]) == 0


def test_resume_online_keeps_online_data(tiny_hopper: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--dataset", tiny_hopper, *FAST, "--offline-steps", "10", "--online-steps", "20", "--eval-every", "10",
            "--checkpoint-every", "5", "--out", str(tmp_path)]
    with monkeypatch.context() as m:
        _interrupt_after(m, 22)  # online; the last checkpoint is at step 20 (10 env steps)
        with pytest.raises(_Interrupt):
            fam.main(args)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 20 and ck["env_steps"] == 10 and len(ck["buffer"]["online"]["rew"]) == 10
    first = ck["buffer"]["online"]
    assert fam.main([*args, "--resume", "true"]) == 0
    rows = read_evals(tmp_path)
    assert [(int(r["step"]), r["phase"], int(r["env_steps"])) for r in rows] == [
        (10, "offline", 0), (20, "online", 10), (30, "online", 20)]
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["env_steps"] == 20 and len(ck["buffer"]["online"]["rew"]) == 20
    for k in ("obs", "act", "rew", "next_obs", "done"):  # the online data from before the interruption is kept
        assert torch.equal(ck["buffer"]["online"][k][:10], first[k])
    assert ck["buffer"]["online"]["obs"][10:].abs().sum() > 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "finished" and s["env_steps"] == 20


def test_nan_loss_gives_a_diverged_record(tiny_hopper: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = fam.universal_policy_loss
    monkeypatch.setattr(fam, "universal_policy_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    rc = fam.main(["--dataset", tiny_hopper, *FAST, "--offline-steps", "20", "--online-steps", "0",
                   "--eval-every", "20", "--out", str(tmp_path)])
    assert rc == 3
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "diverged" and "NaN" in s["error"]
