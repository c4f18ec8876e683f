"""Environments, evaluator, transforms, run records, checkpoints and the common command line (the engine's buffer:
tests/test_engine.py)."""

from __future__ import annotations

import csv
import json
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from o2o.cli import RunConfig, apply_budget, parse_config, steps
from o2o.dataset import from_arrays
from o2o.envs import make_env
from o2o.evaluation import eval_seeds, evaluate
from o2o.records import EVAL_COLUMNS, RunRecorder, is_finished
from o2o.registry import normalized_score
from o2o.specs import get_spec
from o2o.training import Checkpointer, DivergenceError, MetricLog, rng_state, set_rng_state
from o2o.transforms import ObsNormalizer, RewardTransform, clip_actions, reward_transform


@pytest.mark.parametrize("name", ["hopper-medium-v2", "halfcheetah-medium-v2", "walker2d-medium-v2", "ant-medium-v2"])
def test_locomotion_envs_have_d4rl_layout(name):
    spec = get_spec(name)
    env = make_env(spec)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (spec.obs_dim,) and env.action_space.shape == (spec.act_dim,)
    assert env.spec.max_episode_steps == 1000
    if spec.family == "ant":
        assert np.all(obs[27:] == 0)  # D4RL's ant: 84 contact-force dims that mujoco-py 2.x left at zero
        obs, *_ = env.step(env.action_space.sample())
        assert obs.shape == (111,) and np.all(obs[27:] == 0)
    env.close()


def _zero(act_dim):
    return lambda o: np.zeros((len(o), act_dim))


def test_evaluator_is_deterministic_with_fresh_starts():
    a = evaluate(_zero(3), "hopper-medium-v2", n_episodes=4, seed=3, eval_index=0, num_envs=2)
    b = evaluate(_zero(3), "hopper-medium-v2", n_episodes=4, seed=3, eval_index=0, num_envs=4)
    c = evaluate(_zero(3), "hopper-medium-v2", n_episodes=4, seed=3, eval_index=1)
    np.testing.assert_array_equal(a.returns, b.returns)  # same seeds, any batching
    assert not np.array_equal(a.returns, c.returns)  # the next evaluation sees new start states
    assert a.normalized_score == pytest.approx(np.mean([normalized_score(get_spec("hopper-medium-v2"), r)
                                                        for r in a.returns]))
    assert a.success_rate is None and len(a.lengths) == 4
    assert len(set(eval_seeds(0, 0, 100))) == 100 and eval_seeds(0, 1, 3) != eval_seeds(0, 0, 3)


def test_evaluator_applies_obs_transform_and_counts_episodes():
    seen = []

    def policy(o):
        seen.append(o.copy())
        return np.zeros((len(o), 3))

    evaluate(policy, "hopper-medium-v2", n_episodes=3, num_envs=3, obs_transform=lambda o: o * 0 + 7)
    assert np.all(np.concatenate(seen) == 7)


def test_reward_transforms(hopper_arrays):
    ds = from_arrays(hopper_arrays, get_spec("hopper-medium-v2"))
    rets = ds.episode_returns()
    t = reward_transform(ds, "locomotion")
    assert t.scale == pytest.approx(1000.0 / (rets.max() - rets.min())) and t.bias == 0
    assert reward_transform(ds, "antmaze")(np.array([0.0, 1.0])).tolist() == [-1.0, 0.0]
    assert reward_transform(ds, "cql_antmaze")(1.0) == 5.0
    with pytest.raises(ValueError):
        reward_transform(ds, "bogus")
    norm = ObsNormalizer.fit(ds)
    z = norm(ds.observations)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    assert np.all(z.std(0) <= 1.0 + 1e-4)  # eps 1e-3 in the denominator
    assert clip_actions(np.array([-1.0, 0.5, 1.0])).tolist() == [-1 + 1e-5, 0.5, 1 - 1e-5]
    assert RewardTransform(2.0, -1.0)(3.0) == 5.0


def test_run_records_contract(tmp_path):
    rec = RunRecorder(tmp_path, "iql", "hopper-medium-v2", 1, {"lr": 3e-4}, budget="smoke")
    rec.log_eval(1000, "offline", 0, 40.0, 1300.0, 10.0)
    rec.log_eval(2000, "offline", 0, 50.0, 1600.0, 12.0)
    rec.log_eval(3000, "online", 500, 45.0, 1450.0, 9.0, success_rate=None, regret=0.5)
    rec.finish()
    s = json.loads((tmp_path / "summary.json").read_text())
    assert (s["algorithm"], s["dataset"], s["seed"], s["status"]) == ("iql", "hopper-medium-v2", 1, "finished")
    assert (s["last_score"], s["best_score"]) == (45.0, 50.0)
    assert (s["offline_score"], s["online_score"], s["offline_best"]) == (50.0, 45.0, 50.0)
    assert s["steps"] == 3000 and s["env_steps"] == 500 and s["config"] == {"lr": 3e-4}
    assert "torch" in s["versions"] and "wall_time_s" in s and "git_commit" in s
    rows = list(csv.DictReader(open(tmp_path / "evals.csv")))
    assert list(rows[0])[: len(EVAL_COLUMNS)] == EVAL_COLUMNS and rows[2]["regret"] == "0.5"
    assert rows[0]["success_rate"] == "" and is_finished(tmp_path)
    assert (tmp_path / "summary.json").stat().st_mode & 0o044  # readable by others (mkstemp alone gives 0600)
    # resume: rows after the checkpoint's step are dropped, the curve continues
    again = RunRecorder(tmp_path, "iql", "hopper-medium-v2", 1, {"lr": 3e-4}, resume=True)
    again.truncate_after(2000)
    assert [r["step"] for r in again.rows] == [1000, 2000] and not is_finished(tmp_path)
    with pytest.raises(ValueError):
        again.log_eval(1, "train", 0, 0, 0, 0)


def test_run_records_nan_becomes_null_and_diverged(tmp_path):
    rec = RunRecorder(tmp_path, "cql", "hopper-medium-v2", 0, {})
    rec.log_eval(10, "offline", 0, float("nan"), float("nan"), 0.0)
    rec.finish("diverged", "q_loss became NaN/inf at step 10")
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "diverged" and s["last_score"] is None and "NaN" in s["error"]


def test_metric_log_syncs_only_on_flush_and_catches_divergence(tmp_path):
    log = MetricLog(tmp_path / "m.csv", total_steps=10, name="t")
    for i in range(4):
        log.add({"loss": torch.tensor(float(i))})
    assert log.flush(4, quiet=True) == {"loss": 1.5}
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == "step,phase,loss"
    log.add({"loss": torch.tensor(float("inf"))})
    with pytest.raises(DivergenceError, match="loss"):
        log.flush(5, quiet=True)


def test_checkpoint_roundtrip_weights_only(tmp_path):
    import random

    ck = Checkpointer(tmp_path)
    assert ck.load() is None
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = rng_state()
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    ck.save({"net": net.state_dict(), "opt": opt.state_dict(), "rng": state, "step": 7})
    got = ck.load()
    set_rng_state(got["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want
    assert got["step"] == 7 and torch.equal(got["net"]["weight"], net.weight.detach())


@dataclass
class ToyConfig(RunConfig):
    lr: float = 1e-3
    offline_steps: int = steps(1_000_000, smoke=2_000)
    hidden: tuple[int, ...] = (256, 256)
    dropout: float | None = None
    use_layer_norm: bool = False


def _presets(spec):
    return {"lr": 5e-4} if spec.domain == "antmaze" else {}


def test_cli_precedence_budget_and_types():
    cfg = parse_config(ToyConfig, _presets, ["--dataset", "antmaze-umaze-v2", "--budget", "short"])
    assert cfg.lr == 5e-4 and cfg.offline_steps == 100_000 and cfg.eval_episodes == 10
    cfg = parse_config(ToyConfig, _presets, ["--dataset", "antmaze-umaze-v2", "--lr", "1e-2", "--budget", "smoke",
                                             "--hidden", "64,64", "--dropout", "0.1", "--use-layer-norm", "false"])
    assert cfg.lr == 1e-2 and cfg.offline_steps == 2000 and cfg.eval_episodes == 2 and cfg.hidden == (64, 64)
    assert cfg.dropout == 0.1 and cfg.use_layer_norm is False
    cfg = parse_config(ToyConfig, _presets, ["--budget", "smoke", "--offline-steps", "50", "--resume"])
    assert cfg.offline_steps == 50 and cfg.resume is True and cfg.lr == 1e-3
    assert apply_budget(ToyConfig(), "full").offline_steps == 1_000_000


def test_cli_rejects_bad_input(capsys):
    with pytest.raises(SystemExit):
        parse_config(ToyConfig, _presets, ["--use-layer-norm", "maybe"])
    with pytest.raises(SystemExit):
        parse_config(ToyConfig, _presets, ["--budget", "huge"])
    with pytest.raises(SystemExit):
        parse_config(ToyConfig, _presets, ["--dataset", "hoper-medium-v2"])
    assert "unknown dataset" in capsys.readouterr().err


def test_cli_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        parse_config(ToyConfig, _presets, ["--help"])
    out = capsys.readouterr().out
    for flag in ("--dataset", "--seed", "--out", "--budget", "--device", "--resume", "--offline-steps", "--lr",
                 "--hidden", "--eval-episodes"):
        assert flag in out
    assert "default: 1000000" in out


RETAIN_PROBE = """
import resource, torch
from o2o.training import retain_freed_memory
def faults():
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(16 * 2**20)  # a 64 MiB temporary, written and freed, as an update's activations are
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
before = faults()
not_cpu = retain_freed_memory(torch.device("cuda"))
applied = retain_freed_memory(torch.device("cpu"))
faults()  # the heap grows to hold it once
print(before, not_cpu, applied, faults())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retain_freed_memory_stops_the_page_faults_of_repeated_temporaries():
    """In a fresh process: five 64 MiB temporaries fault their pages in each time (the control), and none once the
    freed memory is retained; a non-CPU device leaves the allocator alone."""
    out = subprocess.run([sys.executable, "-c", RETAIN_PROBE], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.split()
    before, not_cpu, applied, after = int(out[0]), out[1], out[2], int(out[3])
    assert before > 5 * 4000 and not_cpu == "False" and applied == "True"
    assert after < 100, (before, after)
