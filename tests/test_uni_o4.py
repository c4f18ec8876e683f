"""Uni-O4 (algorithms/uni_o4.py): the pieces on hand values and toy problems, smoke runs end to end, packed seeds."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from algorithms import uni_o4 as U
from o2o.rng import MemberRNG

torch.set_num_threads(1)

# Small networks and step counts: the smoke runs finish in seconds on one CPU thread. ope_batch × n_policies and the
# batches are multiples of 64 rows, as packed seeds need for bit-identical elementwise kernels (o2o.loop.ROW_PAD).
TINY = dict(q_hidden=32, q_depth=2, v_hidden=32, v_depth=2, pi_hidden=32, pi_depth=2, dyn_hidden=(32, 32),
            dyn_weight_decay=(2.5e-5, 5e-5, 1e-4), critic_batch=64, bc_batch=64, improve_batch=64, ope_batch=16,
            ope_horizon=5, critic_steps=60, bc_steps=60, improve_steps=40, ope_every=20, dyn_max_epochs=2,
            online_steps=256, online_rollout=128, online_minibatch=64, online_epochs=2, online_eval_every=256,
            eval_episodes=1, log_every=20, checkpoint_every=1000)
RECORDS = ("evals.csv", "episodes.csv", "metrics_critic.csv", "metrics_bc.csv", "metrics_dynamics.csv",
           "metrics_improve.csv", "metrics_ope.csv", "metrics.csv", "ope_history.json")


def _ensemble(n=4, obs_dim=3, act_dim=2, hidden=32, depth=2, seeds=(0,)) -> U.BoundedGaussianActor:
    cfg = U.UniO4Config(n_policies=n, pi_hidden=hidden, pi_depth=depth)
    return U.make_policy(cfg, obs_dim, act_dim, list(seeds))


def _toy_bc_data(n=2048, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, 3, generator=g)
    a = torch.tanh(s[:, :2] * 0.8) * 0.7 + 0.15 * torch.randn(n, 2, generator=g)
    return s, a.clamp(-0.99, 0.99)


def _params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters()])


# ---------------------------------------------------------------------------------------------- ensemble BC
def test_official_disagreement_gradient_is_a_scaled_bc_gradient():
    s, a = _toy_bc_data(256)
    s, a = s[None], a[None]  # one seed
    alpha = 0.3
    grads = {}
    for mode in ("none", "official", "working"):
        pol = _ensemble()
        loss, _ = U.bc_loss(pol, s, a, alpha, mode)
        loss.sum().backward()
        grads[mode] = _params(pol)
    # official: −log π_i − α (log π_i − sg max_j log π_j)  =>  ∇ = (1 + α) ∇BC exactly
    torch.testing.assert_close(grads["official"], (1 + alpha) * grads["none"], rtol=1e-4, atol=1e-5)
    # working: the penalty's own gradient is not along the BC gradient, and a step down it pushes members apart
    g_pen = grads["working"] - grads["none"]
    assert g_pen.norm() > 1e-4 * grads["none"].norm()
    assert torch.nn.functional.cosine_similarity(g_pen, grads["none"], dim=0).abs() < 0.99
    pol = _ensemble()
    kl_before = float(U.bc_loss(pol, s, a, 0.0, "none")[1]["pair_kl"])
    pen = U.bc_loss(pol, s, a, alpha, "working")[0] - U.bc_loss(pol, s, a, alpha, "none")[0]
    pen.sum().backward()
    with torch.no_grad():
        for p in pol.parameters():
            p.sub_(0.05 * p.grad / g_pen.norm())
    assert float(U.bc_loss(pol, s, a, 0.0, "none")[1]["pair_kl"]) > kl_before


def _train_bc(mode: str, alpha: float, steps: int = 300) -> float:
    s, a = _toy_bc_data()
    pol = _ensemble(seeds=(1,))  # same initialisation for every variant
    cfg = U.UniO4Config(bc_alpha=alpha, bc_disagreement=mode, bc_lr=3e-3, bc_kl_cap=1.0)
    bc = U.BCEnsemble(pol, cfg)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(s), (128,), generator=g)
        bc.update(s[idx][None], a[idx][None])
    with torch.no_grad():
        _, m = U.bc_loss(pol, s[None, :512], a[None, :512], 0.0, "none")
    return float(m["pair_kl"])


def test_working_disagreement_grows_with_its_coefficient_and_official_does_not():
    kl = {alpha: _train_bc("working", alpha) for alpha in (0.0, 0.3, 1.0)}
    assert kl[0.0] < kl[0.3] < kl[1.0], kl
    assert kl[1.0] > 2 * kl[0.0], kl
    # the official penalty only rescales the gradient, which Adam undoes: same members as plain BC
    kl_official = _train_bc("official", 1.0)
    assert kl_official == pytest.approx(kl[0.0], rel=0.05), (kl_official, kl[0.0])


# ---------------------------------------------------------------------------------------------- improvement
def test_advantage_normalisation_and_schedules():
    adv = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    z = U.normalize_advantage(adv)
    torch.testing.assert_close(z.mean(-1), torch.zeros(1), atol=1e-6, rtol=0)
    assert z.std().item() == pytest.approx(1.0, abs=1e-5)
    w = U.normalize_advantage(adv, omega=0.7)  # MC path: 0.7 A⁺, 0.3 A⁻
    torch.testing.assert_close(w, torch.where(z > 0, 0.7 * z, 0.3 * z))
    cfg = U.UniO4Config(improve_steps=10_000, improve_lr=1e-4, clip_ratio=0.25)
    imp = U.Improver(_ensemble(), None, cfg, [0])
    assert imp.schedule(0) == pytest.approx((1e-4, 0.25))
    assert imp.schedule(5000) == pytest.approx((5e-5, 0.25 * (1 - 200 / 10_000)))
    assert imp.schedule(200)[1] == imp.schedule(9000)[1]  # ε decays over the first 200 steps only


@pytest.mark.parametrize("gate", ["amq", "never"])
def test_ope_gate_accepts_only_improvements(gate):
    improved, best = U.ope_gate(torch.tensor([2.0, 1.0, 3.0]), torch.tensor([1.0, 1.0, 4.0]))
    assert improved.tolist() == [True, False, False] and best.tolist() == [2.0, 1.0, 4.0]

    pol = _ensemble(n=3, seeds=(0, 1))
    imp = U.Improver(pol, None, U.UniO4Config(gate=gate), [0, 1])
    assert not imp.gate(torch.ones(2, 3)).any()  # the first query only sets the bests
    with torch.no_grad():
        for p in pol.parameters():
            p.add_(0.1)  # the current policies move away from π_k
    before = [p.clone() for p in imp.pi_old.parameters()]
    mask = imp.gate(torch.tensor([[1.5, 1.0, 0.5], [0.5, 1.0, 2.0]]))  # seed 0: member 0 better; seed 1: member 2
    replaced = [[True, False, False], [False, False, True]] if gate == "amq" else [[False] * 3] * 2
    assert mask.tolist() == replaced
    rows = torch.tensor(replaced).reshape(-1)
    for p_old, p_new, p_before in zip(imp.pi_old.parameters(), pol.parameters(), before):
        torch.testing.assert_close(p_old[rows], p_new[rows])  # replaced members took the current policy
        torch.testing.assert_close(p_old[~rows], p_before[~rows])  # the others kept theirs
    assert imp.best.tolist() == [[1.5, 1.0, 1.0], [1.0, 1.0, 2.0]]  # AM-Q's best so far, gate or not
    assert imp.replacements.tolist() == torch.tensor(replaced).long().tolist()


def test_improver_update_moves_policies_and_clips_grad_per_member():
    cfg = dataclasses.replace(U.UniO4Config(), q_hidden=16, q_depth=1, v_hidden=16, v_depth=1, improve_lr=1e-3,
                              grad_clip=1e-3)
    critic = U.ValueLearner(cfg, 3, 2, [0])
    pol = _ensemble(n=2)
    imp = U.Improver(pol, critic, cfg, [0])
    before = [p.clone() for p in pol.parameters()]
    m = imp.update(torch.randn(1, 64, 3, generator=torch.Generator().manual_seed(0)), step=0)
    assert m["improve_loss"].shape == (1,) and float(m["ratio"]) == pytest.approx(1.0, abs=0.05)
    moved = [(p - b).reshape(2, -1).norm(dim=1) for p, b in zip(pol.parameters(), before)]
    assert all((d > 0).all() for d in moved)
    grads = torch.stack([p.grad.reshape(2, -1).square().sum(1) for p in pol.parameters()]).sum(0).sqrt()
    assert (grads <= 1e-3 * 1.001).all()  # each member's gradient norm clipped separately


class _QuadraticCritic:
    """A known advantage A(s, a) = −‖a − a*‖² (+ const): the improvement must move every member towards a*."""

    method = "iql"

    def __init__(self, target: torch.Tensor) -> None:
        self.target = target

    def advantage(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return -(act - self.target).square().sum(-1)


def test_improvement_climbs_a_known_advantage():
    target = torch.tensor([0.6, -0.4])
    cfg = U.UniO4Config(improve_steps=300, improve_lr=3e-3, clip_ratio=0.25)
    pol = _ensemble(n=3)
    imp = U.Improver(pol, _QuadraticCritic(target), cfg, [0])
    s = torch.randn(1, 256, 3, generator=torch.Generator().manual_seed(0))

    def distance() -> torch.Tensor:
        return (pol.act(U.expand_members(s, 3)) - target).norm(dim=-1).mean(-1)

    dist0 = distance()
    for t in range(cfg.improve_steps):
        imp.update(s, t)
        if (t + 1) % 10 == 0:  # a gate that always accepts: multi-step, π_k follows π (ε bounds each step)
            U.copy_members(imp.pi_old, imp.pi, torch.ones(3, dtype=torch.bool))
    assert (distance() < 0.5 * dist0).all(), (dist0, distance())


class _RecordingCritic(_QuadraticCritic):
    """The quadratic critic, remembering the actions it was asked about."""

    def advantage(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        self.seen = act.clone()
        return super().advantage(obs, act)


@pytest.mark.parametrize("clip", [False, True])
def test_q_action_clip_scores_the_executed_action(clip):
    """q_action_clip: the advantage is taken at clip(a, ±1), the ratio still at the sampled a; off (official): raw a."""
    cfg = U.UniO4Config(q_action_clip=clip)
    pol = _ensemble(n=2)
    critic = _RecordingCritic(torch.tensor([0.9, 0.9]))
    imp = U.Improver(pol, critic, cfg, [0])
    m = imp.update(20.0 * torch.randn(1, 512, 3, generator=torch.Generator().manual_seed(0)), 0)
    outside = float(m["out_of_range"])
    assert 0.05 < outside < 0.95  # samples around a mean near ±1 leave the box
    assert (critic.seen.abs().max() <= 1.0) == clip


# ---------------------------------------------------------------------------------------------- dynamics model
def test_dynamics_ensemble_fits_a_linear_system_and_picks_elites():
    g = torch.Generator().manual_seed(0)
    n, ds, da = 4000, 3, 2
    A = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.7]])
    B = torch.tensor([[0.5, 0.0], [0.0, 0.5], [0.3, -0.3]])
    s = torch.randn(n, ds, generator=g)
    a = torch.rand(n, da, generator=g) * 2 - 1
    s2 = s @ A.T + a @ B.T
    r = s[:, 0] - 0.5 * a[:, 1]
    x, y = torch.cat([s, a], -1), torch.cat([s2 - s, r[:, None]], -1)
    cfg = U.UniO4Config(dyn_members=5, dyn_elites=3, dyn_hidden=(64, 64), dyn_weight_decay=(2.5e-5, 5e-5, 1e-4),
                        dyn_patience=5, dyn_max_epochs=40, dyn_lr=3e-3, dyn_batch=256)
    model = U.make_dynamics(cfg, ds, da, [0])
    info = U.train_dynamics(model, x, y, cfg, MemberRNG([0], "test"))[0]
    var = y.var(0).mean().item()
    assert info["elite_holdout_mse"] < 0.02 * var, (info["elite_holdout_mse"], var)
    assert sorted(info["elites"]) == sorted(np.argsort(info["holdout_mse"])[:3].tolist())
    assert model.elites[0].tolist() == info["elites"]
    pred = model.sample(x[None, :512], MemberRNG([0], "step"))[0]
    assert (pred[:, :-1] + s[:512] - s2[:512]).square().mean().item() < 0.05 * s2.var(0).mean().item()
    assert (pred[:, -1] - r[:512]).square().mean().item() < 0.05 * r.var().item()
    capped = U.train_dynamics(U.make_dynamics(cfg, ds, da, [0]), x, y, dataclasses.replace(cfg, dyn_max_updates=15),
                              MemberRNG([0], "test"))[0]
    assert capped["updates"] == 15 and capped["epochs"] == 2  # 12 batches per epoch: the cap ends epoch 2 early


def test_termination_functions_follow_gymnasium_health_checks():
    from o2o.specs import get_spec

    hop = U.termination_fn(get_spec("hopper-medium-v2"))
    s = torch.zeros(4, 11)
    s[:, 0] = torch.tensor([1.2, 0.6, 1.2, 1.2])  # height
    s[:, 1] = torch.tensor([0.0, 0.0, 0.3, 0.0])  # angle
    s[3, 5] = 150.0  # a state entry out of (−100, 100)
    assert hop(s).tolist() == [False, True, True, True]
    walker = U.termination_fn(get_spec("walker2d-medium-v2"))
    w = torch.zeros(3, 17)
    w[:, 0] = torch.tensor([1.2, 2.5, 1.2])
    w[:, 1] = torch.tensor([0.0, 0.0, -1.5])
    assert walker(w).tolist() == [False, True, True]
    cheetah = U.termination_fn(get_spec("halfcheetah-medium-v2"))
    assert cheetah(torch.full((2, 17), 1e3)).tolist() == [False, False]
    maze = U.termination_fn(get_spec("antmaze-umaze-v2"))
    from o2o.domains.antmaze import goal_and_start

    goal, _ = goal_and_start("antmaze-umaze-v2")
    m = torch.zeros(2, 29)
    m[0, :2] = torch.as_tensor(goal, dtype=torch.float32) + 0.3
    assert maze(m).tolist() == [True, False]


# ---------------------------------------------------------------------------------------------- AM-Q quality (toy)
def test_am_q_ranks_policies_like_their_true_return():
    """A point mass x' = x + 0.3 a, r = −|x|: data from random actions; AM-Q (learned Q, learned model) must order
    linear policies a = −k·x the way their true returns do (Spearman > 0)."""
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    n_ep, T = 60, 50
    x = torch.rand(n_ep, 1, generator=g) * 4 - 2
    obs, act, nxt = [], [], []
    for _t in range(T):
        a = torch.rand(n_ep, 1, generator=g) * 2 - 1
        obs.append(x), act.append(a), nxt.append(x + 0.3 * a)
        x = nxt[-1]
    obs, act, nxt = torch.cat(obs), torch.cat(act), torch.cat(nxt)
    rew, nd = -obs[:, 0].abs(), torch.ones(len(obs))
    data = U.OfflineData(obs=obs, act=act, rew=rew, next_obs=nxt, next_act=act, not_done=nd, mc_return=None,
                         raw_obs=obs, raw_next_obs=nxt, bc_index=torch.arange(len(obs)), obs_mean=torch.zeros(1),
                         obs_std=torch.ones(1), normalizer=None, reward_fn=None)
    cfg = U.UniO4Config(q_hidden=64, q_depth=2, v_hidden=64, v_depth=2, critic_lr=1e-3, value_lr=1e-3, discount=0.9,
                        dyn_members=5, dyn_elites=3, dyn_hidden=(32, 32), dyn_weight_decay=(2.5e-5, 5e-5, 1e-4),
                        dyn_patience=5, dyn_max_epochs=30, dyn_lr=3e-3)
    critic = U.ValueLearner(cfg, 1, 1, [0])
    rng = MemberRNG([0], "toy")
    for _ in range(1500):
        critic.update(data, rng.randint(len(data), 128))
    model = U.make_dynamics(cfg, 1, 1, [0])
    U.train_dynamics(model, torch.cat([obs, act], -1), torch.cat([nxt - obs, rew[:, None]], -1), cfg, rng)
    gains = [-1.0, -0.3, 0.0, 0.3, 1.0, 3.0]  # a = tanh(−k x): k > 0 steers to 0 (better), k < 0 away
    pol = U.make_policy(dataclasses.replace(cfg, n_policies=len(gains), pi_depth=0), 1, 1, [0])  # μ = tanh(W s + b)
    with torch.no_grad():
        lin = pol.net.layers[0]
        lin.weight.zero_(), lin.bias.zero_()
        lin.weight[:, 0, 0] = -torch.tensor(gains)
    start = obs[torch.randint(0, len(obs), (256,), generator=g)]
    scores = U.am_q(pol, critic.q_value, model, start[None], lambda z: z, 30,
                    lambda z: torch.zeros(len(z), dtype=torch.bool), rng, len(gains))[0]

    def true_return(k: float) -> float:
        x, tot = start[:, 0].clone(), torch.zeros(len(start))
        for t in range(30):
            tot += (0.9 ** t) * -x.abs()
            x = x + 0.3 * torch.tanh(-k * x)
        return tot.mean().item()

    rho = spearmanr(scores.tolist(), [true_return(k) for k in gains]).statistic
    assert rho > 0.5, (scores.tolist(), rho)


# ---------------------------------------------------------------------------------------------- cache and runs
def test_stage_keys_depend_on_exactly_their_fields():
    base = U.UniO4Config()
    k0 = U.stage_keys(base)
    k_bc = U.stage_keys(dataclasses.replace(base, bc_lr=3e-4))
    assert k_bc["critic"] == k0["critic"] and k_bc["dynamics"] == k0["dynamics"]
    assert k_bc["bc"] != k0["bc"] and k_bc["improve"] != k0["improve"]
    k_q = U.stage_keys(dataclasses.replace(base, q_hidden=256))
    assert k_q["critic"] != k0["critic"] and k_q["bc"] == k0["bc"] and k_q["improve"] != k0["improve"]
    k_dyn = U.stage_keys(dataclasses.replace(base, dyn_lr=3e-4))
    assert k_dyn["dynamics"] != k0["dynamics"] and k_dyn["critic"] == k0["critic"]
    k_gate = U.stage_keys(dataclasses.replace(base, gate="never"))
    assert k_gate["improve"] != k0["improve"] and k_gate["bc"] == k0["bc"]
    k_from = U.stage_keys(dataclasses.replace(base, critic_from="iql/seed0/checkpoint.pt"))
    assert k_from["critic"] != k0["critic"] and k_from["improve"] != k0["improve"] and k_from["bc"] == k0["bc"]
    k_seed = U.stage_keys(dataclasses.replace(base, seed=1))
    assert all(k_seed[s] != k0[s] for s in k0)
    k_run = U.stage_keys(dataclasses.replace(base, online_actor_lr=1e-6, eval_episodes=3, out="x", seeds=(0, 1)))
    assert k_run == k0  # online and run fields do not touch the offline artefacts


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "evals.csv") as f:
        return list(csv.DictReader(f))


def test_smoke_run_end_to_end_and_cache_reuse(tmp_path, hopper_file):
    out = tmp_path / "run"
    cfg = U.UniO4Config(dataset=hopper_file, env="Hopper-v5", out=str(out), budget="smoke", **TINY)
    (summary,) = U.train(cfg)
    assert summary["status"] == "finished", summary["error"]
    rows = _rows(out)
    phases = [r["phase"] for r in rows]
    assert "offline" in phases and "online" in phases and phases.index("online") > max(
        i for i, p in enumerate(phases) if p == "offline")
    off = [r for r in rows if r["phase"] == "offline"]
    assert [r["stage"] for r in off] == ["bc"] * 4 + ["improve"] * 4 + ["selected"]
    assert {int(r["step"]) for r in off if r["stage"] == "bc"} == {TINY["critic_steps"] + TINY["bc_steps"]}
    assert all(float(r["length_mean"]) >= 1 for r in rows)  # every evaluation records its mean episode length (H2)
    end = TINY["critic_steps"] + TINY["bc_steps"] + TINY["improve_steps"]
    assert int(off[-1]["step"]) == end and all(np.isfinite(float(r["ope"])) for r in off)
    ext = summary["extra"]
    assert int(off[-1]["member"]) == ext["selected_member"] == int(np.argmax(ext["ope_final"]))
    assert ext["selection_used_online_evaluations"] is False and ext["bc_disagreement"] == "working"
    assert ext["member_lengths"] == [float(r["length_mean"]) for r in off if r["stage"] == "improve"]
    assert summary["offline_score"] == pytest.approx(float(off[-1]["normalized_score"]))
    assert summary["online_score"] is not None and summary["env_steps"] == TINY["online_steps"]
    assert len(json.loads((out / "ope_history.json").read_text())) == 1 + TINY["improve_steps"] // TINY["ope_every"]
    pol = torch.load(out / "policy.pt", weights_only=True)
    assert pol["member"] == ext["selected_member"] and "net.0.weight" in pol["actor"]
    for name in RECORDS:
        assert (out / name).exists(), name
    assert len(list((out / "cache").glob("*.pt"))) == 4

    # a changed improvement hyperparameter: critic, dynamics and BC come from the cache, the improvement is redone
    cfg2 = dataclasses.replace(cfg, improve_lr=3e-5, online_steps=0, selection="official")
    (summary2,) = U.train(cfg2)
    assert summary2["status"] == "finished"
    keys, keys2 = U.stage_keys(cfg), U.stage_keys(cfg2)
    assert summary2["extra"]["cache_hits"] == [keys["critic"], keys["dynamics"], keys["bc"]]
    assert keys2["improve"] != keys["improve"] and len(list((out / "cache").glob("improve-*.pt"))) == 2
    assert summary2["extra"]["selection_used_online_evaluations"] is True
    assert summary2["extra"]["ope_bc"] == ext["ope_bc"]  # the same BC ensemble and AM-Q draws as the first run
    assert [r["phase"] for r in _rows(out)] == ["offline"] * 9


def test_packed_seeds_get_the_records_they_get_alone(tmp_path, hopper_file):
    """--seeds 0,1 gives seed 1 exactly what seed 1 alone gets, every stage (critic, dynamics, BC, improvement with
    AM-Q and member evaluations) and the online phase: records, AM-Q history and policy, bit for bit on the CPU.
    Then a pack whose seed 0 has every stage cached trains seed 2 alone inside it: again the same numbers."""
    base = dict(TINY, offline_eval_every=20)
    (a, b) = U.train(U.UniO4Config(dataset=hopper_file, env="Hopper-v5", out=str(tmp_path / "pack"), seeds=(0, 1),
                                   **base))
    (c,) = U.train(U.UniO4Config(dataset=hopper_file, env="Hopper-v5", out=str(tmp_path / "alone"), seed=1, **base))
    assert a["status"] == b["status"] == c["status"] == "finished"
    packed, alone = tmp_path / "pack" / "seed1", tmp_path / "alone"
    for name in RECORDS:
        assert (packed / name).read_text() == (alone / name).read_text(), name
    pa, pb = (torch.load(d / "policy.pt", weights_only=True)["actor"] for d in (packed, alone))
    assert all(torch.equal(pa[k], pb[k]) for k in pb)
    assert b["extra"]["pack"] == [0, 1] and b["seed"] == 1 and b["extra"]["ope_final"] == c["extra"]["ope_final"]
    assert (tmp_path / "pack" / "seed0" / "evals.csv").read_text() != (alone / "evals.csv").read_text()

    # seed 0 from its cache, seed 2 trained: a pack of one inside the pack; seed 2 as alone
    off = dict(base, online_steps=0)
    (a2, b2) = U.train(U.UniO4Config(dataset=hopper_file, env="Hopper-v5", out=str(tmp_path / "pack"),
                                     seeds=(0, 2), **off))
    (c2,) = U.train(U.UniO4Config(dataset=hopper_file, env="Hopper-v5", out=str(tmp_path / "alone2"), seed=2, **off))
    assert len(a2["extra"]["cache_hits"]) == 4 and b2["extra"]["cache_hits"] == []
    for name in ("evals.csv", "metrics_critic.csv", "metrics_dynamics.csv", "metrics_improve.csv", "ope_history.json"):
        assert (tmp_path / "pack" / "seed2" / name).read_text() == (tmp_path / "alone2" / name).read_text(), name


def test_fit_critic_hook_and_a_critic_cached_from_outside_is_reused(tmp_path, hopper_file):
    """results/uni_o4/advantage_check.py curve watches fit_critic through on_flush and caches its critic for train()."""
    from o2o.data import load_file

    out = tmp_path / "run"
    cfg = U.UniO4Config(dataset=hopper_file, env="Hopper-v5", out=str(out), budget="smoke",
                        **{**TINY, "online_steps": 0})
    data = U.prepare_data(load_file(hopper_file, env_id="Hopper-v5"), cfg, torch.device("cpu"))
    out.mkdir()
    seen = []
    pack = U.Pack([0], [out], [U.RunRecorder(out, "uni_o4", cfg.dataset, 0, {})])
    critic = U.fit_critic(cfg, data, pack, torch.device("cpu"), on_flush=lambda t, c: seen.append((t, c)))
    assert [t for t, _ in seen] == [20, 40, 60] and all(c is critic for _, c in seen)
    key = U.stage_keys(cfg)["critic"]
    U.StageCache(out / "cache").save(key, U.stage_entries(U.critic_state(critic), [{}])[0])
    (summary,) = U.train(cfg)
    assert summary["status"] == "finished", summary["error"]
    assert key in summary["extra"]["cache_hits"]
    other = dataclasses.replace(cfg, critic_lr=3e-4)  # another critic setting is not served this one
    assert U.stage_keys(other)["critic"] != key


def test_critic_from_an_iql_run_replaces_the_critic_stage(tmp_path, hopper_file):
    """H1: --critic-from loads IQL's twin Q and V (baselines/iql.py, same widths) for each seed ({seed} in the path);
    the improvement then climbs that critic. Widths that differ are one line, not a traceback."""
    from baselines import iql

    args = ["--dataset", hopper_file, "--env", "Hopper-v5", "--offline-steps", "40", "--eval-every", "40",
            "--eval-episodes", "1", "--hidden-dim", "32", "--log-every", "20"]
    assert iql.main([*args, "--seeds", "0,1", "--out", str(tmp_path / "iql")]) == 0
    cfg = U.UniO4Config(dataset=hopper_file, env="Hopper-v5", out=str(tmp_path / "u"), seeds=(0, 1),
                        critic_from=str(tmp_path / "iql" / "seed{seed}" / "checkpoint.pt"),
                        **dict(TINY, online_steps=0))
    summaries = U.train(cfg)
    assert [s["status"] for s in summaries] == ["finished", "finished"]
    for s in (0, 1):
        entry = next((tmp_path / "u" / f"seed{s}" / "cache").glob("critic-*.pt"))
        cached = torch.load(entry, weights_only=True)["state"]
        ours = torch.load(tmp_path / "iql" / f"seed{s}" / "checkpoint.pt", weights_only=True)["agent"]
        assert all(torch.equal(cached["q"][k], ours["q"][k]) for k in ours["q"])
        assert all(torch.equal(cached["v"][k], ours["value"][k]) for k in ours["value"])
    assert not (tmp_path / "u" / "seed0" / "metrics_critic.csv").exists()  # nothing trained
    with pytest.raises(ValueError, match="do not have this run's widths"):
        U.train(dataclasses.replace(cfg, q_hidden=64, out=str(tmp_path / "u2")))


def test_command_line_help_and_presets(capsys):
    with pytest.raises(SystemExit):
        U.main(["--help"])
    assert "--bc-disagreement" in capsys.readouterr().out
    from o2o.cli import configure

    cfg = configure(U.UniO4Config, U.presets, ["--dataset", "antmaze-umaze-v2", "--budget", "smoke"])
    assert cfg.omega == 0.9 and cfg.reward_kind == "unio4_antmaze" and cfg.ope_horizon == 10  # smoke caps it
    cfg = configure(U.UniO4Config, U.presets, ["--dataset", "hopper-medium-expert-v2", "--omega", "0.6"])
    assert cfg.value_method == "mc_sarsa" and cfg.omega == 0.6 and cfg.critic_steps == 2_000_000
    with pytest.raises(ValueError):
        U.check_config(dataclasses.replace(cfg, bc_disagreement="both"))
    with pytest.raises(ValueError):
        U.check_config(dataclasses.replace(cfg, gate="sometimes"))


def test_resume_continues_an_interrupted_improvement_stage_exactly(tmp_path, hopper_file, monkeypatch):
    base = dict(TINY, online_steps=0, checkpoint_every=20, improve_steps=40)
    (ref,) = U.train(U.UniO4Config(dataset=hopper_file, env="Hopper-v5", out=str(tmp_path / "ref"), **base))
    cfg = U.UniO4Config(dataset=hopper_file, env="Hopper-v5", out=str(tmp_path / "cut"), **base)
    real_update = U.Improver.update

    def crash_at_30(self, obs, step):
        if step == 30:
            raise KeyboardInterrupt("simulated interruption")
        return real_update(self, obs, step)

    monkeypatch.setattr(U.Improver, "update", crash_at_30)
    with pytest.raises(KeyboardInterrupt):
        U.train(cfg)
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "failed"
    assert list((tmp_path / "cut" / "cache").glob("improve-*.partial/checkpoint.pt"))  # the step-20 checkpoint
    monkeypatch.setattr(U.Improver, "update", real_update)
    (res,) = U.train(dataclasses.replace(cfg, resume=True))
    assert res["status"] == "finished"
    assert res["extra"]["cache_hits"] == [U.stage_keys(cfg)[s] for s in ("critic", "dynamics", "bc")]
    assert res["extra"]["ope_final"] == ref["extra"]["ope_final"]  # bit-identical to the uninterrupted run
    assert res["extra"]["member_scores"] == ref["extra"]["member_scores"]
    assert not list((tmp_path / "cut" / "cache").glob("*.partial"))


def test_nan_loss_ends_the_run_as_diverged(tmp_path, hopper_file, monkeypatch):
    real = U.ValueLearner.update

    def nan_update(self, data, idx):
        out = real(self, data, idx)
        out["q_loss"] = out["q_loss"] * float("nan")
        return out

    monkeypatch.setattr(U.ValueLearner, "update", nan_update)
    cfg = U.UniO4Config(dataset=hopper_file, env="Hopper-v5", out=str(tmp_path / "nan"), **dict(TINY, online_steps=0))
    (summary,) = U.train(cfg)
    assert summary["status"] == "diverged" and "q_loss" in summary["error"]
    assert json.loads((tmp_path / "nan" / "summary.json").read_text())["status"] == "diverged"
    assert U.main(["--dataset", hopper_file, "--env", "Hopper-v5", "--out", str(tmp_path / "nan2"),
                   "--budget", "smoke", "--online-steps", "0", "--q-hidden", "16", "--critic-steps", "20"]) == 3




def _advantage_check_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "results" / "uni_o4" / "advantage_check.py"
    spec = importlib.util.spec_from_file_location("advantage_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _TableCritic:
    """advantage(obs, acts) = a fixed table (per-state offset + within-state values), as the check reads it."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = torch.as_tensor(values.reshape(-1), dtype=torch.float32)

    def advantage(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.values


def test_advantage_check_scores_within_state_ranking():
    A = _advantage_check_module()
    rng = np.random.default_rng(0)
    true = rng.normal(size=(20, 8)) + 100.0 * rng.normal(size=(20, 1))  # large per-state offsets
    obs, acts = torch.zeros(160, 3), torch.zeros(160, 2)
    offset = 50.0 * rng.normal(size=(20, 1))  # the critic's own per-state error must not matter
    good = A.score(_TableCritic(true + offset), obs, acts, true)
    assert good["within_state_spearman_mean"] == pytest.approx(1.0)
    assert good["true_gain_critic_argmax"] == pytest.approx(good["true_gain_best_action"])
    bad = A.score(_TableCritic(-true), obs, acts, true)
    assert bad["within_state_spearman_mean"] == pytest.approx(-1.0) and bad["true_gain_critic_argmax"] < 0
    noise = A.score(_TableCritic(rng.normal(size=(20, 8)) + offset), obs, acts, true)
    assert abs(noise["within_state_spearman_mean"]) < 0.3 and noise["within_share_of_critic_adv_variance"] < 0.5


def test_hopper_question_table_reads_scores_and_lengths(tmp_path):
    """results/uni_o4/hopper_question.py: means of score and episode length per evaluation point, from the records."""
    import importlib.util

    from o2o.records import RunRecorder

    path = Path(__file__).resolve().parents[1] / "results" / "uni_o4" / "hopper_question.py"
    spec = importlib.util.spec_from_file_location("hopper_question", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rec = RunRecorder(tmp_path, "uni_o4", "local:hopper-medium", 0, {})
    points = ((100, "bc", (30.0, 32.0), (200, 220)), (110, "improve", (20.0, 26.0), (90, 150)),
              (120, "improve", (22.0, 24.0), (100, 110)))
    for step, stage, scores, lengths in points:
        for k, (z, n) in enumerate(zip(scores, lengths)):
            rec.log_eval(step, "offline", 0, z, 10 * z, 1.0, None, float(n), member=k, stage=stage, ope=1.0)
    rec.extra.update(member_scores=[22.0, 24.0], ope_bc=[1.0, 3.0], ope_best=[2.0, 4.0], behaviour_replacements=[1, 0])
    rec.finish("finished")
    # return = 10 × score: per step (300/200 + 320/220)/2 = 1.48 for BC, (220/100 + 240/110)/2 = 2.19 at the end
    assert mod.row("x", tmp_path) == ("| x | 31.0 / 210 | 23.0 / 120 | 23.0 / 105 | 22.0, 24.0 | 1.48 → 2.19 | 1, 0 "
                                      "| 2.0 → 3.0 |")
