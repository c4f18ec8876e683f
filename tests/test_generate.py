"""local: datasets: D4RL layout, determinism, loader, state-replay consistency, medium-expert, medium-replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from behaviour import train as behaviour_train
from o2o import generate
from o2o.consistency import check_dataset
from o2o.data import load_dataset
from o2o.hdf5 import read_hdf5

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


def _arrays(path):
    return {k: v for k, v in read_hdf5(path).items() if not k.startswith("metadata/")}


def test_d4rl_layout_keys_dtypes(data_dir):
    path = generate.generate("local:hopper-medium", size=2000, seed=0)
    assert path == data_dir / "hopper-medium.hdf5"
    raw = read_hdf5(path)
    n = 2000
    spec = {"observations": ((n, 11), np.float32), "next_observations": ((n, 11), np.float32),
            "actions": ((n, 3), np.float32), "rewards": ((n,), np.float32), "terminals": ((n,), np.bool_),
            "timeouts": ((n,), np.bool_), "infos/qpos": ((n, 6), np.float64), "infos/qvel": ((n, 6), np.float64),
            "infos/action_log_probs": ((n,), np.float32)}
    for key, (shape, dtype) in spec.items():
        assert raw[key].shape == shape and raw[key].dtype == dtype, key
    assert np.abs(raw["actions"]).max() <= 1.0
    ends = raw["terminals"] | raw["timeouts"]
    assert ends[-1] and not (raw["terminals"] & raw["timeouts"]).any()
    # inside an episode s' of one row is s of the next; after an end the next row starts a new episode
    inside = np.flatnonzero(~ends[:-1])
    assert np.array_equal(raw["next_observations"][inside], raw["observations"][inside + 1])
    assert not np.allclose(raw["next_observations"][np.flatnonzero(ends[:-1])],
                           raw["observations"][np.flatnonzero(ends[:-1]) + 1])
    for key in ("behaviour_return", "behaviour_normalized", "seed", "generator_version", "size", "behaviour"):
        assert f"metadata/{key}" in raw, key
    assert int(raw["metadata/seed"]) == 0 and int(raw["metadata/size"]) == n


def test_deterministic_for_a_seed(data_dir):
    a = _arrays(generate.generate("local:hopper-expert", size=300, seed=0))
    b = _arrays(generate.generate("local:hopper-expert", size=300, seed=0, force=True))
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    c = _arrays(generate.generate("local:hopper-expert", size=300, seed=1))
    assert not np.array_equal(a["observations"], c["observations"])


def test_kept_unless_size_seed_or_policy_change(data_dir, monkeypatch):
    path = generate.generate("local:hopper-expert", size=200, seed=0)
    stamp = path.stat().st_mtime_ns
    assert generate.generate("local:hopper-expert", size=200, seed=0).stat().st_mtime_ns == stamp  # kept
    monkeypatch.setattr(generate, "behaviour_id", lambda *a: "a retrained policy")
    assert generate.generate("local:hopper-expert", size=200, seed=0).stat().st_mtime_ns != stamp  # stale: remade
    # the loader's path regenerates a stale file too, keeping its size and seed
    monkeypatch.setattr(generate, "behaviour_id", lambda *a: "retrained again")
    stamp = path.stat().st_mtime_ns
    assert generate.local_path("local:hopper-expert", create=True).stat().st_mtime_ns != stamp
    assert len(load_dataset("local:hopper-expert")) == 200


def test_loader_and_consistency(data_dir):
    generate.generate("local:hopper-medium", size=1500, seed=0)
    ds = load_dataset("local:hopper-medium")
    assert (len(ds), ds.obs_dim, ds.act_dim) == (1500, 11, 3) and ds.spec.env_id == "Hopper-v5"
    assert ds.metadata["metadata/generator_version"] == generate.GENERATOR_VERSION
    rep = check_dataset(ds, n=200)
    assert rep["obs_abs_error_max"] < 1e-5 and rep["reward_abs_error_max"] < 1e-5
    assert rep["fraction_within_atol"] == 1.0
    # the check can fail: a corrupted next observation is reported
    ds.next_observations[::5] += 1e-3
    assert check_dataset(ds, n=200)["fraction_within_atol"] < 0.9


def test_medium_expert_is_medium_then_expert(data_dir):
    me = _arrays(generate.generate("local:hopper-medium-expert", size=600, seed=0))
    m = _arrays(generate.generate("local:hopper-medium", size=300, seed=0))
    e = _arrays(generate.generate("local:hopper-expert", size=300, seed=0))
    assert set(me) == set(m)
    for k in me:
        assert np.array_equal(me[k], np.concatenate([m[k], e[k]])), k


def test_random_and_medium_replay(data_dir):
    for q in ("random", "medium-replay"):
        generate.generate(f"local:hopper-{q}", size=1200, seed=0)
        ds = load_dataset(f"local:hopper-{q}")
        assert len(ds) == 1200
        assert check_dataset(ds, n=150)["fraction_within_atol"] == 1.0
    rnd = load_dataset("local:hopper-random")
    exp = generate.generate("local:hopper-expert", size=1200, seed=0)
    assert rnd.episode_returns().mean() < load_dataset("local:hopper-expert").episode_returns().mean()
    assert exp.exists()


def test_medium_replay_reproduces_the_training_run(tmp_path, monkeypatch):
    """The compact source (executed actions) replays into exactly the episodes the PPO run saw."""
    raw_path = behaviour_train.train_behaviour("hopper", seed=3, total_steps=2048, snapshot_every=512,
                                               work_dir=tmp_path / "run",
                                               ppo_overrides=dict(num_envs=2, rollout_steps=256, epochs=1))
    out = tmp_path / "behaviour"
    info = behaviour_train.select_behaviour("hopper", raw_path, seed=3, candidates=1, episodes=1, out_dir=out)
    for which in ("medium", "expert"):
        st = torch.load(out / f"hopper-{which}.pt", weights_only=True)
        assert {"actor", "arch", "obs_norm", "return", "normalized"} <= set(st)
    monkeypatch.setattr(generate, "BEHAVIOUR_DIR", out)
    ds = load_dataset("local:hopper-medium-replay")
    assert len(ds) == info["medium_replay_transitions"]
    raw = torch.load(raw_path, weights_only=True)
    finished = ds.episode_returns()[:-2]  # the last episode of each of the 2 envs is cut at the medium snapshot
    train = raw["episode_returns"].numpy()
    assert len(finished) > 5
    np.testing.assert_allclose(finished, train[:len(finished)], rtol=1e-6)


def test_local_path_generates_on_first_use(data_dir, monkeypatch, capsys):
    monkeypatch.setattr(generate, "D4RL_SIZE", 250)
    path = generate.local_path("local:hopper-random", create=True)
    assert path.exists() and "generating" in capsys.readouterr().err
    assert generate.local_path("local:hopper-random", create=False) == path


@pytest.mark.parametrize("family", ["hopper", "halfcheetah", "walker2d"])
def test_committed_behaviour_policies(family):
    med, exp = generate.load_behaviour(family, "medium"), generate.load_behaviour(family, "expert")
    assert exp["return"] > 2 * med["return"] > 0
    assert set(med["obs_norm"]) == {"mean", "std", "clip"}
    assert generate.behaviour_path(family, "medium-replay").stat().st_size < 20e6


def test_random_policy_weights_are_those_the_random_datasets_were_made_with():
    """random_policy_state draws, without the PPO code, the weights baselines.ppo.GaussianActor got under
    torch.manual_seed(seed) when the `random` datasets were first made (values pinned from that actor), to float32
    rounding: the orthogonal init's QR (LAPACK) rounds differently on different CPUs (an AMD EPYC gives the pinned
    values ±1 ulp), so the same seed gives the same weights on one machine, bit for bit, and across machines to 1e-6."""
    from o2o.specs import get_spec

    state = generate.random_policy_state(get_spec("local:hopper-random"), 0)
    actor = state["actor"]
    assert {k: tuple(v.shape) for k, v in actor.items()} == {
        "mean_net.0.weight": (64, 11), "mean_net.0.bias": (64,), "mean_net.2.weight": (64, 64),
        "mean_net.2.bias": (64,), "mean_net.4.weight": (3, 64), "mean_net.4.bias": (3,), "log_std": (3,)}
    assert actor["mean_net.0.weight"][0, :3].tolist() == pytest.approx([0.10002020001411438, 0.05106677860021591,
                                                                        0.30872097611427307], rel=1e-6, abs=0)
    assert actor["mean_net.4.weight"][:, 0].tolist() == pytest.approx([-0.0011044431012123823, 0.0006057652644813061,
                                                                       0.0005158893181942403], rel=1e-6, abs=0)
    assert float(sum(v.abs().sum() for v in actor.values())) == pytest.approx(681.1786499023438, rel=1e-6)
    again = generate.random_policy_state(get_spec("local:hopper-random"), 0)["actor"]
    assert all(torch.equal(actor[k], again[k]) for k in actor)
    other = generate.random_policy_state(get_spec("local:hopper-random"), 1)["actor"]
    assert not torch.equal(actor["mean_net.0.weight"], other["mean_net.0.weight"])
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    generate.random_policy_state(get_spec("local:hopper-random"), 5)
    assert torch.equal(torch.rand(1), before)  # torch's global random stream is left alone
