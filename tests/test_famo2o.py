"""Tests of algorithms/famo2o.py: β encoding, the universal model's loss, the balance model's gradient and temperature,
presets, and FamO2O's own records (beta_* columns, betas.npy, policy.pt per seed) and online data across a resume.
The engine's generic duties (packed = alone, resume of the curve, divergence, checkpoints, records columns) are tested
once in tests/test_engine.py."""

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
from o2o.cli import configure
from o2o.nets import member_parameter
from o2o.records import EVAL_COLUMNS
from o2o.rng import MemberRNG, member_generators

from .conftest import random_data, train_agent

# tiny nets and batches: the runs test FamO2O's records, not learning
FAST = ["--env", "Hopper-v5", "--budget", "smoke", "--hidden-dim", "32", "--batch-size", "64", "--eval-episodes", "1",
        "--beta-states", "500", "--log-every", "10", "--device", "cpu"]
SEEDS = [0, 1]


def read_evals(out: Path) -> list[dict[str, str]]:
    with open(out / "evals.csv") as f:
        return list(csv.DictReader(f))


def gens(name: str) -> list[torch.Generator]:
    return member_generators(SEEDS, name)


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
    pol = fam.UniversalPolicy(5, 2, gens("policy"), 16, 2)
    obs = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0))
    m1 = pol.mean_action(obs, torch.full((2, 4), 1.0))
    m2 = pol.mean_action(obs, torch.full((2, 4), 5.0))
    assert not torch.allclose(m1, m2)  # different members of the family
    assert m1.abs().max() < 1  # tanh mean
    with torch.no_grad():
        pol.actor.log_std.fill_(-9.0)
    assert torch.allclose(pol.actor.std(), torch.full((2, 1, 2), math.exp(-5.0)))  # clipped at −5


# ---------------------------------------------------------------------------------------------- universal model loss
class _FixedBeta(torch.nn.Module):
    """The universal model at one β, seen as a plain actor with log_prob(obs, act) (IQL's actor interface)."""

    def __init__(self, policy: fam.UniversalPolicy, beta: float) -> None:
        super().__init__()
        self.policy, self.beta = policy, beta

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.policy.log_prob(obs, torch.full(obs.shape[:2], self.beta), act)


@pytest.mark.parametrize("beta", [1.0, 3.0, 10.0])
def test_universal_loss_is_iql_awr_loss_at_fixed_beta(beta: float) -> None:
    pol = fam.UniversalPolicy(6, 3, gens("policy"), 16, 2)
    g = torch.Generator().manual_seed(1)
    obs, act = torch.randn(2, 64, 6, generator=g), torch.rand(2, 64, 3, generator=g) * 2 - 1
    adv = torch.randn(2, 64, generator=g) * 2
    adv[:, :4] = 6.0  # exp(β·6) > 100: these weights hit the clip
    ours = fam.universal_policy_loss(pol, obs, act, torch.full((2, 64), beta), adv)
    assert ours.shape == (2,)
    base = iql.awr_policy_loss(_FixedBeta(pol, beta), obs, act, iql.awr_weights(adv, beta, iql.EXP_ADV_MAX))
    torch.testing.assert_close(ours, base)
    # and the hand formula, per seed: −mean(min(exp(β·A), 100) · log N(a; μ(s, β), σ²))
    mean, std = pol.mean_action(obs, torch.full((2, 64), beta)), pol.actor.std()
    logp = (-0.5 * ((act - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(ours, -(torch.exp(beta * adv).clamp(max=100.0) * logp).mean(1))
    assert (torch.exp(beta * adv) > 100).any()


def test_universal_loss_uses_each_samples_beta() -> None:
    pol = fam.UniversalPolicy(4, 2, gens("policy"), 16, 1)
    g = torch.Generator().manual_seed(2)
    obs, act, adv = torch.randn(2, 8, 4, generator=g), torch.rand(2, 8, 2, generator=g) * 2 - 1, torch.randn(2, 8,
                                                                                                             generator=g)
    beta = torch.stack([torch.linspace(1, 5, 8), torch.linspace(5, 2, 8)])
    want = torch.stack([-torch.exp(beta[:, i] * adv[:, i]).clamp(max=100)
                        * pol.log_prob(obs[:, i:i + 1], beta[:, i:i + 1], act[:, i:i + 1])[:, 0]
                        for i in range(8)], 1).mean(1)
    torch.testing.assert_close(fam.universal_policy_loss(pol, obs, act, beta, adv), want)


# ----------------------------------------------------------------------------------------------------- balance model
class _MonotonePolicy(torch.nn.Module):
    """A universal model whose action grows with β: a = 2(β − lo)/(hi − lo) − 1 in every dimension (+ small noise)."""

    def __init__(self, lo: float, hi: float, act_dim: int = 3) -> None:
        super().__init__()
        self.lo, self.hi, self.act_dim = lo, hi, act_dim

    def rsample(self, obs: torch.Tensor, beta: torch.Tensor, rng: MemberRNG) -> torch.Tensor:
        a = (2 * (beta - self.lo) / (self.hi - self.lo) - 1).unsqueeze(-1).expand(-1, -1, self.act_dim)
        return a + 0.01 * rng.randn(*a.shape[1:])


def test_balance_model_moves_beta_to_the_better_end() -> None:
    """Q increasing in the action for seed 0 and decreasing for seed 1, an action increasing in β: seed 0's β must go
    to β_hi and seed 1's to β_lo, trained together (each seed its own balance model and temperature)."""
    lo, hi = 1.0, 5.0
    balance = fam.BalanceModel(4, lo, hi, gens("balance"), 32, 2)
    policy, rng = _MonotonePolicy(lo, hi), MemberRNG(SEEDS, "test")
    sign = torch.tensor([1.0, -1.0])
    q_fn = lambda s, a: sign[:, None] * 10.0 * a.sum(-1)  # noqa: E731
    log_alpha = member_parameter(2, 1, 0.0)
    opt = torch.optim.Adam(balance.parameters(), lr=1e-3)
    alpha_opt = torch.optim.Adam([log_alpha], lr=3e-4)
    obs = torch.randn(2, 256, 4, generator=torch.Generator().manual_seed(3))
    start = balance.deterministic(obs).mean(1)
    assert torch.all((lo + 0.2 * (hi - lo) < start) & (start < hi - 0.2 * (hi - lo))), start
    for _ in range(300):
        alpha = log_alpha.exp()[:, :1]
        loss, entropy, _ = fam.balance_model_loss(balance, policy, q_fn, obs, alpha.detach(), rng)
        assert loss.shape == entropy.shape == (2,)
        fam._step(opt, loss, list(balance.parameters()))
        fam._step(alpha_opt, fam.temperature_loss(alpha[:, 0], entropy, -0.5), [log_alpha])
    end = balance.deterministic(obs)
    assert end.min() >= lo and end.max() <= hi
    assert end[0].mean().item() > hi - 0.1 * (hi - lo), end[0].mean()
    assert end[1].mean().item() < lo + 0.1 * (hi - lo), end[1].mean()


def test_balance_log_prob_is_tanh_gaussian_density() -> None:
    bm = fam.BalanceModel(3, 8.0, 14.0, gens("balance"), 8, 1)
    obs = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(4))
    beta, logp = bm.rsample(obs, MemberRNG(SEEDS, "test"))
    assert beta.shape == logp.shape == (2, 5)
    u = (beta - 8.0) / 6.0 * 2 - 1
    mean, log_std = bm.net.dist(obs)
    x = torch.atanh(u.double()).float()
    want = torch.distributions.Normal(mean[..., 0], log_std.exp()[..., 0]).log_prob(x) - torch.log1p(-u.pow(2))
    torch.testing.assert_close(logp, want, rtol=1e-4, atol=1e-4)
    assert ((beta >= 8) & (beta <= 14)).all()


def test_temperature_rises_when_entropy_is_below_target() -> None:
    """Seed 0's entropy (−2) is below the target −0.5, seed 1's (1) above: descent raises α₀ and lowers α₁."""
    log_alpha = member_parameter(2, 1, 0.0)
    loss = fam.temperature_loss(log_alpha.exp()[:, 0], torch.tensor([-2.0, 1.0]), -0.5)
    assert loss.tolist() == pytest.approx([-1.5, 1.5])  # α·(H − H_target), α = 1
    loss.sum().backward()
    assert log_alpha.grad[0, 0] < 0 < log_alpha.grad[1, 0]
    assert torch.all(log_alpha.grad[:, 1:] == 0)  # the padding never gets a gradient


def _agent(base: str) -> fam.FamO2O:
    cfg = fam.FamO2OConfig(base=base, hidden_dim=32, beta_lo=1.0, beta_hi=5.0, batch_size=64)
    return train_agent(fam, cfg, random_data(5, 2, 100), 0, seeds=SEEDS)


def _batch(n: int = 64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(5)
    return (torch.randn(2, n, 5, generator=g), torch.rand(2, n, 2, generator=g) * 2 - 1, torch.randn(2, n, generator=g),
            torch.randn(2, n, 5, generator=g), torch.zeros(2, n))


def test_balance_step_changes_only_the_balance_model() -> None:
    agent = _agent("iql")
    others = {"policy": agent.policy, "q": agent.q, "q_target": agent.q_target, "value": agent.value}
    frozen = {k: [p.detach().clone() for p in m.parameters()] for k, m in others.items()}
    before = [p.detach().clone() for p in agent.balance.parameters()]
    alpha_before = agent.log_alpha.detach().clone()
    agent._balance_and_alpha(_batch()[0], agent.q_target)
    for k, m in others.items():
        assert all(p.grad is None for p in m.parameters()), k
        assert all(torch.equal(a, b) for a, b in zip(frozen[k], m.parameters())), k
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.balance.parameters()))
    assert not torch.equal(alpha_before[:, 0], agent.log_alpha.detach()[:, 0])  # then the temperature step


@pytest.mark.parametrize("base", ["iql", "awac"])
def test_update_runs_and_betas_stay_in_range(base: str) -> None:
    agent = _agent(base)
    for online in (False, True):
        info = agent.update(_batch(), online)
        assert all(v.shape == (2,) and torch.isfinite(v).all() for v in info.values())
    assert torch.all((info["beta_actor"] >= 1.0) & (info["beta_actor"] <= 5.0))
    b = agent.betas()  # each seed's summary states: min(beta_states, 100 dataset states)
    assert b.shape == (2, 100) and ((b >= 1.0) & (b <= 5.0)).all()
    offline = agent.policy_betas(torch.zeros(2, 4096, 5), online=False)
    assert offline.min() < 1.1 and offline.max() > 4.9  # U[β_lo, β_hi], not the balance model
    online_b = agent.policy_betas(torch.zeros(2, 4096, 5), online=True)  # π_b samples: one state, a spread around
    assert ((online_b >= 1.0) & (online_b <= 5.0)).all() and online_b.std() > 0  # its deterministic β


# ----------------------------------------------------------------------------------------------------- config
def test_presets_per_domain_and_base(monkeypatch: pytest.MonkeyPatch) -> None:
    def preset(*argv: str) -> fam.FamO2OConfig:
        return configure(fam.FamO2OConfig, fam.presets, list(argv))

    am = preset("--dataset", "antmaze-umaze-v2")  # configs/famo2o_iql/official/antmaze.yaml: the official config
    assert (am.beta_lo, am.beta_hi, am.expectile, am.awr_weight, am.preset) == (8.0, 14.0, 0.9, "official", "official")
    loco = preset("--dataset", "hopper-medium-v2")
    assert (loco.beta_lo, loco.beta_hi, loco.expectile) == (1.0, 5.0, 0.7)
    assert preset("--dataset", "pen-human-v1", "--base", "awac").beta_lo == 8.0
    aw = preset("--dataset", "hopper-medium-v2", "--base", "awac")  # β around the project's AWAC λ⁻¹ = 3
    assert (aw.beta_lo, aw.beta_hi, aw.n_hidden, aw.normalize_states, aw.reward_kind, aw.awr_weight) == \
        (1.0, 5.0, 3, True, "none", "paper")
    cfg = preset("--dataset", "antmaze-umaze-v2", "--beta-hi", "12", "--budget", "smoke", "--awr-weight", "paper")
    assert (cfg.beta_lo, cfg.beta_hi, cfg.expectile, cfg.eval_episodes, cfg.awr_weight) == (8.0, 12.0, 0.9, 2, "paper")
    assert cfg.offline_steps == 1000 and cfg.online_steps == 1000
    # main() picks the preset of --base before the other flags
    seen = []
    monkeypatch.setattr(fam.loop, "train", lambda cfg, algo: seen.append((cfg, algo.name)) or [])
    assert fam.main(["--dataset", "hopper-medium-v2", "--base=awac"]) == 0
    cfg, name = seen[-1]
    assert (cfg.base, cfg.n_hidden, cfg.normalize_states, cfg.reward_kind, name) == (
        "awac", 3, True, "none", "famo2o_awac")


def test_help_lists_the_common_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        fam.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--dataset", "--seed", "--out", "--budget", "--device", "--online-steps", "--resume", "--base",
                 "--beta-lo", "--beta-hi"):
        assert flag in text
    with pytest.raises(SystemExit) as e:
        fam.main(["--base", "cql"])
    assert e.value.code == 2 and capsys.readouterr().err == "error: --base: 'cql' is not one of iql, awac\n"


# ----------------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("base", ["iql", "awac"])
def test_smoke_run_records_betas_per_seed(hopper_file: str, tmp_path: Path, base: str) -> None:
    """Two seeds in one process, offline then online: each seed's own beta_* columns, betas.npy and policy.pt."""
    out = tmp_path / base
    rc = fam.main(["--dataset", hopper_file, *FAST, "--base", base, "--offline-steps", "20", "--online-steps", "20",
                   "--eval-every", "10", "--seeds", "0,1", "--out", str(out)])
    assert rc == 0
    for seed in SEEDS:
        d = out / f"seed{seed}"
        s = json.loads((d / "summary.json").read_text())
        assert s["status"] == "finished" and s["algorithm"] == f"famo2o_{base}"
        assert s["steps"] == 40 and s["env_steps"] == 20 and s["config"]["base"] == base
        with open(d / "evals.csv") as f:
            header = next(csv.reader(f))
        assert header[len(EVAL_COLUMNS):len(EVAL_COLUMNS) + 5] == list(fam.BETA_COLUMNS)
        rows = read_evals(d)
        assert [(int(r["step"]), r["phase"]) for r in rows] == [
            (10, "offline"), (20, "offline"), (30, "online"), (40, "online")]
        for r in rows:
            q10, q50, q90 = float(r["beta_q10"]), float(r["beta_q50"]), float(r["beta_q90"])
            assert 1.0 <= q10 <= q50 <= q90 <= 5.0 and float(r["beta_std"]) >= 0
        betas = np.load(d / "betas.npy")
        assert betas.shape == (500,) and np.all((betas >= 1.0) & (betas <= 5.0))
        assert float(rows[-1]["beta_mean"]) == pytest.approx(float(betas.mean()), rel=1e-5)
        saved = torch.load(d / "policy.pt", weights_only=True)
        assert saved["config"]["seed"] == seed and saved["config"]["base"] == base
        depth = 3 if base == "awac" else 2  # AWAC's preset: its 3 hidden layers
        balance = fam.BalanceModel(11, 1.0, 5.0, member_generators([seed], "x"), 32, depth)
        balance.load_state_dict(saved["balance"])  # strict: one seed's parameters, not the pack's
        policy = fam.UniversalPolicy(11, 3, member_generators([seed], "x"), 32, depth)
        policy.load_state_dict(saved["policy"])
    assert not np.array_equal(np.load(out / "seed0" / "betas.npy"), np.load(out / "seed1" / "betas.npy"))


def test_resume_offline_ends_with_the_uninterrupted_betas_and_policy(hopper_file: str, tmp_path: Path) -> None:
    """Stopped at step 10 and resumed to 20: betas.npy, policy.pt and the beta_* columns equal those of a run straight
    to 20 (the summary states and final files come from the restored agent)."""
    args = ["--dataset", hopper_file, *FAST, "--online-steps", "0", "--eval-every", "10", "--checkpoint-every", "5"]
    assert fam.main([*args, "--offline-steps", "20", "--out", str(tmp_path / "a")]) == 0
    assert fam.main([*args, "--offline-steps", "10", "--out", str(tmp_path / "b")]) == 0
    assert fam.main([*args, "--offline-steps", "20", "--out", str(tmp_path / "b"), "--resume", "true"]) == 0
    cols = ("step", *fam.BETA_COLUMNS)
    assert [[r[c] for c in cols] for r in read_evals(tmp_path / "a")] == \
        [[r[c] for c in cols] for r in read_evals(tmp_path / "b")]
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "betas.npy"), np.load(tmp_path / "b" / "betas.npy"))
    pa, pb = (torch.load(tmp_path / x / "policy.pt", weights_only=True) for x in "ab")
    for part in ("policy", "balance"):
        assert all(torch.equal(pa[part][k], pb[part][k]) for k in pa[part]), part


def test_resume_online_keeps_online_data(hopper_file: str, tmp_path: Path) -> None:
    """A run stopped after 10 env steps and resumed to 20 keeps its first 10 online transitions (FamO2O keeps the
    dataset and online data in one FIFO buffer of --buffer-size)."""
    args = ["--dataset", hopper_file, *FAST, "--offline-steps", "10", "--eval-every", "10", "--checkpoint-every", "5",
            "--out", str(tmp_path)]
    assert fam.main([*args, "--online-steps", "10"]) == 0
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 20 and ck["env_steps"] == 10 and ck["buffer"].shape == (10, 2 * 11 + 3 + 2)
    first = ck["buffer"]
    assert fam.main([*args, "--online-steps", "20", "--resume", "true"]) == 0
    rows = read_evals(tmp_path)
    assert [(int(r["step"]), r["phase"], int(r["env_steps"])) for r in rows] == [
        (10, "offline", 0), (20, "online", 10), (30, "online", 20)]
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["env_steps"] == 20 and ck["buffer"].shape[0] == 20
    assert torch.equal(ck["buffer"][:10], first)  # the online data from before the interruption is kept
    assert ck["buffer"][10:].abs().sum() > 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "finished" and s["env_steps"] == 20
