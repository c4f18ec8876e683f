"""The training engine (o2o/loop.py, o2o/nets.py, o2o/rng.py, o2o/buffer.py): seeds packed in one process give each
seed what it gets alone, seeds never influence each other, packed runs resume, compiled updates match eager ones."""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from o2o import loop, nets
from o2o.buffer import ReplayBuffer
from o2o.evaluation import evaluate, evaluate_members
from o2o.nets import MLP, EnsembleLinear, TwinQ, block_view, clip_grad_norm_per_member, join_members, split_members
from o2o.rng import MemberRNG, member_generators
from o2o.training import Checkpointer, CheckpointError, MetricLog, recover_pack, save_pack

ROOT = Path(__file__).resolve().parent.parent
MODULES = {"iql": "baselines.iql", "awac": "baselines.awac", "cql": "baselines.cql", "famo2o": "algorithms.famo2o"}
# batch 64 (a multiple of 64 rows per seed, as every default): see test_packed_seeds_match_seeds_alone
TINY = ["--hidden-dim", "32", "--batch-size", "64", "--eval-episodes", "2", "--device", "cpu", "--budget", "smoke",
        "--log-every", "10"]
EXTRA = {"cql": ["--cql-n-actions", "4"], "famo2o": [], "iql": [], "awac": []}


def read(path: Path) -> str:
    return path.read_text()


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run(algo: str, file: str, out: Path, *args: str) -> int:
    mod = importlib.import_module(MODULES[algo])
    return mod.main(["--dataset", file, "--env", "Hopper-v5", "--out", str(out), *TINY, *EXTRA[algo], *args])


# ------------------------------------------------------------------------------------------------ random streams
def test_member_streams_do_not_depend_on_the_pack():
    packed, alone = MemberRNG([0, 1, 2], "t"), MemberRNG([1], "t")
    for draw in ("bits", "rand", "randn"):
        a, b = getattr(packed, draw)(5, 7), getattr(alone, draw)(5, 7)
        assert torch.equal(a[1], b[0]), draw
    assert not torch.equal(packed.rand(100)[0], packed.rand(100)[1])  # seeds differ
    assert not torch.equal(MemberRNG([0], "t").rand(100), MemberRNG([0], "u").rand(100))  # streams differ


def test_member_stream_statistics():
    rng = MemberRNG([3], "stats")
    u = rng.rand(200_000)[0].double()
    assert abs(u.mean().item() - 0.5) < 0.005 and u.min() >= 0 and u.max() < 1
    z = rng.randn(200_000)[0].double()
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert abs(((z.abs() < 1.96).double().mean() - 0.95).item()) < 0.005  # the normal's tails, not just its moments
    counts = torch.bincount(rng.randint(10, 100_000)[0], minlength=10).double()
    chi2 = ((counts - 10_000) ** 2 / 10_000).sum().item()
    assert chi2 < 30  # χ²(9): p ≈ 0.0004 at 30
    a, b = rng.rand(50_000)[0].double(), rng.rand(50_000)[0].double()  # consecutive draws are uncorrelated
    assert abs(np.corrcoef(a.numpy(), b.numpy())[0, 1]) < 0.02


def test_member_stream_state_roundtrip():
    rng = MemberRNG([0, 1], "t")
    rng.rand(3)
    state = rng.state_dict()
    a = rng.randn(4)
    rng.load_state_dict(state)
    assert torch.equal(rng.randn(4), a)


# ------------------------------------------------------------------------------------------------ networks
def test_default_init_is_nn_linears_and_member_independent():
    gens = member_generators([5, 6], "net")
    layer = EnsembleLinear(2, 4, 3)
    for m, g in enumerate(gens):
        layer.init_member_(m, g)
    ref = torch.nn.Linear(4, 3)
    g = member_generators([6], "net")[0]
    with torch.no_grad():
        torch.nn.init.kaiming_uniform_(ref.weight, a=math.sqrt(5), generator=g)  # nn.Linear.reset_parameters
        bound = 1 / math.sqrt(4)
        torch.nn.init.uniform_(ref.bias, -bound, bound, generator=g)
    x = torch.randn(2, 5, 4)
    assert torch.allclose(layer(x)[1], ref(x[1]), atol=1e-6)


def test_orthogonal_and_small_output_inits():
    net = MLP(6, 2, member_generators([0, 1, 2], "o"), hidden_dim=8, n_hidden=2, init="orthogonal", out_gain=1e-2)
    w = net.layers[1].weight.detach()  # (3, 8, 8): orthogonal with gain √2 per member
    for m in range(3):
        assert torch.allclose(w[m].T @ w[m], 2.0 * torch.eye(8), atol=1e-5)
    assert net.layers[-1].weight.abs().max() < 0.05 and torch.all(net.layers[0].bias == 0)
    small = MLP(6, 2, member_generators([0], "o"), 8, 2, init="default", out_init="xavier", out_gain=1e-2)
    assert small.layers[-1].weight.abs().max() < 0.01 and torch.all(small.layers[-1].bias == 0)
    assert small.layers[0].bias.abs().max() > 0  # hidden layers keep PyTorch's default (biases too)


def test_scalar_head_storage_keeps_its_zero_column():
    """A scalar head (out = 1) is stored as 2 outputs (exact 2-column GEMM at any S) in nn.Linear's layout (a narrow
    layer); `weight` shows the real column, the forward equals x·w + b, and training leaves the second output at
    exactly zero. Unpadded blocks are stored 3-D (no view per forward); a control: a bias of 6 stays flat and padded,
    and a wide layer (16 outputs) keeps the (in, out) layout."""
    layer = EnsembleLinear(3, 64, 1)
    for m, g in enumerate(member_generators([0, 1, 2], "head")):
        layer.init_member_(m, g)
    assert layer.weight_store.shape == (3, 2, 64) and layer.weight.shape == (3, 64, 1)
    assert EnsembleLinear(2, 64, 6).bias_store.shape == (2, 64)  # 6 values padded to a MEMBER_PAD block
    assert EnsembleLinear(2, 64, 6).weight_store.shape == (2, 6, 64)
    assert EnsembleLinear(2, 64, 16).weight_store.shape == (2, 64, 16)
    x = torch.randn(3, 5, 64)
    assert torch.allclose(layer(x), x @ layer.weight + layer.bias, atol=1e-5)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1, fused=True)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(3, 5, 64)).square().sum().backward()
        opt.step()
    assert torch.all(layer.weight_store[:, 1] == 0) and torch.all(layer.bias_store[:, 1] == 0)
    assert torch.any(layer.weight_store[:, 0] != 0)


@pytest.mark.parametrize("narrow_matmul", [True, False])  # a narrow layer's weight gradient: NarrowMatmul, autograd's
@pytest.mark.parametrize("out", [1, 6, 15, 16, 40])  # narrow ((cols, in) blocks) and wide layers
def test_ensemble_linear_matches_a_linear_per_member_forward_and_backward(out, narrow_matmul, monkeypatch):
    """Each member's output and gradients (input, weight, bias; with `detach`, the input's only) equal those of an
    nn.Linear holding its weights (float64, so the comparison is exact up to rounding), and a member's numbers are
    bit-identical alone and among 5 (the layer's matmul forms are exact at any M), with a narrow layer's weight
    gradient from NarrowMatmul or from autograd (o2o.nets.NARROW_MATMUL, whichever this processor uses)."""
    monkeypatch.setattr(nets, "NARROW_MATMUL", narrow_matmul)
    torch.manual_seed(0)
    layer = EnsembleLinear(5, 24, out).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(5, 7, 24, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 7, out, dtype=torch.float64)
    layer(x).backward(g)
    for m in range(5):
        ref = torch.nn.Linear(24, out).double()
        with torch.no_grad():
            ref.weight.copy_(layer.weight[m].T), ref.bias.copy_(layer.bias[m, 0])
        xm = x[m].detach().clone().requires_grad_(True)
        ref(xm).backward(g[m])
        assert torch.allclose(layer(x)[m], ref(xm), atol=1e-12)
        assert torch.allclose(x.grad[m], xm.grad, atol=1e-12)
        assert torch.allclose(layer.in_out(layer.weight_store.grad)[m], ref.weight.grad.T, atol=1e-12)
        assert torch.allclose(block_view(layer.bias_store.grad, 1, layer.cols)[m, 0, :out], ref.bias.grad, atol=1e-12)
    layer.zero_grad()
    layer(x, detach=True).sum().backward()
    assert layer.weight_store.grad is None or not layer.weight_store.grad.any()
    # alone = packed, in float32 as training runs
    pack = EnsembleLinear(5, 24, out)
    with torch.no_grad():
        for p in pack.parameters():
            p.normal_()
    alone = EnsembleLinear(1, 24, out)
    alone.load_state_dict({k: v[2:3] for k, v in pack.state_dict().items()})
    xs = torch.randn(5, 256, 24, requires_grad=True)
    x2 = xs[2:3].detach().clone().requires_grad_(True)
    gs = torch.randn(5, 256, out)
    ys, y2 = pack(xs), alone(x2)
    ys.backward(gs), y2.backward(gs[2:3])
    assert torch.equal(ys[2:3], y2) and torch.equal(xs.grad[2:3], x2.grad)
    assert torch.equal(pack.weight_store.grad[2:3], alone.weight_store.grad)
    assert torch.equal(pack.bias_store.grad[2:3], alone.bias_store.grad)


@pytest.mark.parametrize("out", [1, 6])
def test_narrow_layer_runs_narrow_matmul_only_for_a_weight_gradient(out, monkeypatch):
    """Where NarrowMatmul is used (o2o.nets.NARROW_MATMUL), it is used only when the weight gets a gradient: a
    forward without gradient, or with `detach` (the input's gradient only), takes the same baddbmm and gives the same
    bits as NarrowMatmul itself; with NARROW_MATMUL off every forward is autograd's (the control)."""
    layer = EnsembleLinear(3, 64, out)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(3, 128, 64, requires_grad=True)
    g = torch.randn(3, 128, out)
    w, b = layer.stored()
    ref = layer.columns(nets.NarrowMatmul.apply(x, w.detach(), b.detach()))
    ref.backward(g)
    ref_grad, x.grad = x.grad.clone(), None

    def product(y: torch.Tensor) -> str:  # the autograd node of the layer's product (a head's column slice follows it)
        node = y.grad_fn
        return type(node.next_functions[0][0] if layer.cols != layer.out_dim else node).__name__

    for on in (True, False):
        monkeypatch.setattr(nets, "NARROW_MATMUL", on)
        assert product(layer(x)) == ("NarrowMatmulBackward" if on else "BaddbmmBackward0")
        with torch.no_grad():
            assert torch.equal(layer(x), ref)
        y = layer(x, detach=True)
        assert product(y) == "BaddbmmBackward0"
        y.backward(g)
        assert torch.equal(y, ref) and torch.equal(x.grad, ref_grad)
        x.grad = None


def test_narrow_matmul_is_chosen_for_mkl_on_amd_only():
    """NarrowMatmul where torch's BLAS is MKL on an AMD processor (measured: it pays there, not on an Intel Xeon),
    autograd's order elsewhere; the vendor comes from /proc/cpuinfo."""
    assert nets.narrow_matmul_pays("AuthenticAMD", True)
    assert not nets.narrow_matmul_pays("GenuineIntel", True)
    assert not nets.narrow_matmul_pays("AuthenticAMD", False) and not nets.narrow_matmul_pays("", True)
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "vendor_id" in info:
        assert nets.cpu_vendor() and f": {nets.cpu_vendor()}\n" in info


@pytest.mark.parametrize("hidden", [64, 20])  # the head's (hidden, 2) block: stored 3-D, or flat and padded
def test_clip_grad_norm_per_member_is_each_seeds_norm_of_its_real_values(hidden):
    """Per seed: the norm of its own gradient values (a scalar head's zero column left out: a gradient put there
    changes nothing), clipped to max_norm; a seed under the limit is left as it is."""
    net = MLP(5, 1, member_generators([0, 1], "clip"), hidden_dim=hidden)
    net(torch.randn(2, 8, 5)).square().sum().backward()
    head = net.layers[-1]
    block_view(head.weight_store.grad, *head.weight_shape)[:, 1] = 100.0  # the zero output: must not count

    def real_norms() -> torch.Tensor:
        sq = torch.zeros(2)
        for layer in net.layers:
            w = layer.real_weight(layer.weight_store.grad)
            b = block_view(layer.bias_store.grad, 1, layer.cols)[..., :layer.out_dim]
            sq += w.square().sum((1, 2)) + b.square().sum((1, 2))
        return sq.sqrt()

    before = real_norms()
    limit = float(before.min() + before.max()) / 2  # one seed above the limit, one below
    norms = clip_grad_norm_per_member(net, limit, 2)
    assert torch.allclose(norms, before)
    after = real_norms()
    big = int(before.argmax())
    assert after[big] == pytest.approx(limit, rel=1e-5) and after[1 - big] == before[1 - big]


def test_a_checkpoint_of_an_older_network_layout_is_refused(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.save({"step": 3})
    assert ck.load()["step"] == 3
    torch.save({"step": 3}, ck.path)  # what a checkpoint of layout 1 looked like: no nets_layout stamp
    ck.meta.unlink()
    with pytest.raises(CheckpointError, match="layout 1 of an older o2o-bench") as e:
        ck.load()
    assert "\n" not in str(e.value)


def test_twin_q_shapes_and_split_join_roundtrip():
    q = TwinQ(3, 2, member_generators([0, 1, 2], "q"), hidden_dim=8)
    obs, act = torch.randn(3, 5, 3), torch.randn(3, 5, 2)
    assert q.all(obs, act).shape == (3, 2, 5) and q(obs, act).shape == (3, 5)
    assert q.all(obs, torch.randn(3, 5, 4, 2)).shape == (3, 2, 5, 4)
    alone = TwinQ(3, 2, member_generators([1], "q"), hidden_dim=8)
    assert torch.equal(q.all(obs, act)[1], alone.all(obs[1:2], act[1:2])[0])
    opt = torch.optim.Adam(q.parameters())
    q(obs, act).sum().backward()
    opt.step()
    state = {"q": q.state_dict(), "opt": opt.state_dict(), "n": 4}
    parts = split_members(state, 3)
    assert parts[1]["n"] == 4 and parts[1]["q"]["net.layers.0.weight_store"].shape[0] == 2  # twins of one seed
    joined = join_members(parts)
    for k, v in state["q"].items():
        assert torch.equal(joined["q"][k], v)
    assert torch.equal(joined["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])


# ------------------------------------------------------------------------------------------------ buffer
def test_buffer_samples_each_seed_from_its_own_rows():
    ds = {"obs": np.zeros((10, 2)), "act": np.zeros((10, 1)), "rew": np.zeros(10), "next_obs": np.zeros((10, 2)),
          "done": np.zeros(10)}
    buf = ReplayBuffer(ds, members=3, online_capacity=5)
    for _ in range(5):
        buf.add(np.stack([buf.rows(np.full(2, s), [0.0], 100 + s, np.zeros(2), 0.0)[0] for s in range(3)]))
    obs, act, rew, next_obs, done = buf.sample(MemberRNG([0, 1, 2], "b"), 4000)
    for s in range(3):
        online = rew[s] > 50
        assert torch.all(rew[s][online] == 100 + s)  # a seed sees only its own online rows
        assert abs(online.float().mean().item() - 5 / 15) < 0.04  # uniform over dataset + its online rows
    fifo = ReplayBuffer(ds, members=1, online_capacity=5, buffer_size=6)
    for _ in range(5):
        fifo.add(fifo.rows(np.ones(2), [0.0], 1.0, np.zeros(2), 0.0))
    rew = fifo.sample(MemberRNG([0], "b"), 2000)[2]
    assert (rew == 1).float().mean().item() > 0.75  # 5 online rows of the newest 6 (only the last dataset row left)
    assert len(fifo.online_rows(0)) == 5 and fifo.online_rows(0).untyped_storage().nbytes() == 5 * 7 * 4


# ------------------------------------------------------------------------------------------------ evaluation
def test_evaluate_members_plays_each_seeds_own_episodes():
    def policy(obs):  # member m acts with a constant m-dependent action
        m = np.arange(obs.shape[0])[:, None, None]
        return np.broadcast_to(0.3 * (m - 1.0), (*obs.shape[:2], 3))

    packed = evaluate_members(policy, "hopper-medium-v2", 3, seeds=[4, 5], eval_index=2, num_envs=2)
    for m, seed in enumerate([4, 5]):
        alone = evaluate(lambda o, m=m: np.full((len(o), 3), 0.3 * (m - 1.0)), "hopper-medium-v2", 3, seed=seed,
                         eval_index=2, num_envs=2)
        np.testing.assert_array_equal(packed[m].returns, alone.returns)
        np.testing.assert_array_equal(packed[m].lengths, alone.lengths)


# ------------------------------------------------------------------------------------------------ records plumbing
def test_metric_log_writes_each_seed_its_own_file(tmp_path):
    log = MetricLog([tmp_path / "a.csv", tmp_path / "b.csv"], 10, "t")
    log.add({"loss": torch.tensor([1.0, 3.0])})
    log.add({"loss": torch.tensor([3.0, float("nan")])})
    out = log.flush_members(2, active=[True, True], quiet=True)
    assert out[0] == {"loss": 2.0} and math.isnan(out[1]["loss"])
    assert rows(tmp_path / "a.csv") == [{"step": "2", "phase": "offline", "loss": "2"}]


def test_pack_checkpoint_commits_all_or_none(tmp_path):
    cks = [Checkpointer(tmp_path / f"s{i}") for i in range(2)]
    for ck in cks:
        ck.path.parent.mkdir()
    save_pack(cks, [{"step": 10, "x": torch.tensor([i])} for i in range(2)])
    for ck, i in zip(cks, range(2)):  # a kill between the commits of a later save: seed 0 renamed, seed 1 not
        ck.stage({"step": 20, "x": torch.tensor([10 + i])})
    cks[0].commit()
    recover_pack(cks)
    assert [ck.load()["step"] for ck in cks] == [20, 20] and not cks[1].new_path.exists()
    for i, ck in enumerate(cks):  # a kill while staging: nobody committed, the staged files go
        ck.stage({"step": 30, "x": torch.tensor([i])})
    recover_pack(cks)
    assert [ck.load()["step"] for ck in cks] == [20, 20] and not cks[0].new_path.exists()
    data = bytearray(cks[1].path.read_bytes())  # flipped bytes are caught by the sidecar's sha256
    data[len(data) // 2] ^= 0xFF
    cks[1].path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        cks[1].load()


# ------------------------------------------------------------------------------------------------ equivalence
@pytest.mark.parametrize("algo", ["iql", "awac", "cql", "famo2o"])
def test_packed_seeds_match_seeds_alone(algo, hopper_file, tmp_path):
    """Each seed of a pack {0, 1, 2} gets bit-identical records (every evaluation, every metric) to the same seed
    trained alone, offline and online (CPU, eager). What makes this exact: per-seed random streams, per-seed
    parameters padded to whole SIMD blocks (nets.MEMBER_PAD), scalar heads run as 2-column GEMMs, and batches of
    a multiple of 64 rows per seed (acting pads its rows; training batches are the user's: the defaults qualify).
    """
    args = ["--offline-steps", "40", "--online-steps", "30", "--eval-every", "20", "--checkpoint-every", "1000"]
    assert run(algo, hopper_file, tmp_path / "pack", "--seeds", "0,1,2", *args) == 0
    for s in (0, 1, 2):
        assert run(algo, hopper_file, tmp_path / f"alone{s}", "--seed", str(s), *args) == 0
        for name in ("evals.csv", "episodes.csv", "metrics.csv"):
            assert read(tmp_path / "pack" / f"seed{s}" / name) == read(tmp_path / f"alone{s}" / name), (s, name)
        packed = json.loads(read(tmp_path / "pack" / f"seed{s}" / "summary.json"))
        alone = json.loads(read(tmp_path / f"alone{s}" / "summary.json"))
        assert packed["seed"] == alone["seed"] == s and packed["extra"]["pack"] == [0, 1, 2]
        assert {k: v for k, v in packed["config"].items() if k != "out"} == \
            {k: v for k, v in alone["config"].items() if k != "out"}
    online = rows(tmp_path / "pack" / "seed0" / "evals.csv")
    assert [(int(r["step"]), r["phase"], int(r["env_steps"])) for r in online] == [
        (20, "offline", 0), (40, "offline", 0), (60, "online", 20), (70, "online", 30)]
    assert float(online[0]["length_mean"]) > 0
    assert len(rows(tmp_path / "pack" / "seed0" / "episodes.csv")) == 4 * 2


@pytest.mark.parametrize("algo", ["iql", "awac", "cql", "famo2o"])
def test_one_seeds_parameters_never_reach_the_others(algo, hopper_file):
    """Poison seed 1 (NaN in every parameter): seeds 0 and 2 train exactly as in an unpoisoned pack."""
    from o2o.data import load_dataset

    mod = importlib.import_module(MODULES[algo])
    ds = load_dataset(hopper_file, env_id="Hopper-v5")

    def build(poison: bool) -> object:
        cls = {"iql": "IQLConfig", "awac": "AWACConfig", "cql": "CQLConfig", "famo2o": "FamO2OConfig"}[algo]
        c = getattr(mod, cls)(hidden_dim=32, batch_size=64, **({"cql_n_actions": 4} if algo == "cql" else {}))
        setup = loop.Setup([0, 1, 2], ds.spec, ds.obs_dim, ds.act_dim, 1.0, torch.device("cpu"), ds.observations)
        agent = mod.algorithm(c).build(c, setup)
        if poison:
            with torch.no_grad():
                for module in vars(agent).values():
                    if isinstance(module, torch.nn.Module):
                        for p in module.parameters():
                            k = p.shape[0] // 3
                            p[k:2 * k] = float("nan")
        return agent

    data = {"obs": ds.observations, "act": ds.actions, "rew": ds.rewards, "next_obs": ds.next_observations,
            "done": ds.terminals}
    results = []
    for poison in (False, True):
        agent, buf, rng = build(poison), ReplayBuffer(data, 3, 0), MemberRNG([0, 1, 2], "batches")
        for _ in range(15):
            metrics = agent.update(buf.sample(rng, 64), False)
        acts = agent.act(torch.as_tensor(ds.observations[:64]).expand(3, -1, -1).contiguous(), explore=False)
        results.append((metrics, acts))
    (clean, clean_act), (poisoned, poisoned_act) = results
    for k in clean:
        assert torch.equal(clean[k][[0, 2]], poisoned[k][[0, 2]]), k
    assert torch.equal(clean_act[[0, 2]], poisoned_act[[0, 2]])
    assert torch.isnan(poisoned_act[1]).any()


# ------------------------------------------------------------------------------------------------ resume
def test_killed_pack_resumes_every_seeds_curve(hopper_file, tmp_path):
    """kill -9 of a packed run (offline), then --resume: every seed's records equal those of an uninterrupted run."""
    args = ["--dataset", hopper_file, "--env", "Hopper-v5", *TINY, "--seeds", "0,1", "--offline-steps", "400",
            "--eval-every", "100", "--checkpoint-every", "50", "--eval-episodes", "1"]
    cmd = [sys.executable, str(ROOT / "baselines" / "iql.py"), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([*cmd, "--out", str(tmp_path / "whole")], check=True, env=env, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill -9 once both seeds hold a checkpoint past step 100
        steps = [json.loads(p.read_text()).get("step", 0) if p.exists() else 0
                 for p in (out / "seed0" / "checkpoint.json", out / "seed1" / "checkpoint.json")]
        if min(steps) >= 150:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((out / "seed0" / "summary.json").read_text())["status"] == "running"
    subprocess.run([*cmd, "--out", str(out), "--resume", "true"], check=True, env=env, capture_output=True)
    for s in (0, 1):
        for name in ("evals.csv", "metrics.csv", "episodes.csv"):
            assert read(out / f"seed{s}" / name) == read(tmp_path / "whole" / f"seed{s}" / name), (s, name)
        assert json.loads((out / f"seed{s}" / "summary.json").read_text())["status"] == "finished"


def test_resume_refuses_seeds_at_different_steps(hopper_file, tmp_path, capsys):
    base = ["--offline-steps", "40", "--eval-every", "20", "--checkpoint-every", "20"]
    assert run("iql", hopper_file, tmp_path / "p", "--seeds", "0,1", *base) == 0
    ck = Checkpointer(tmp_path / "p" / "seed1")  # as if seed 1 had been checkpointed at another step
    ck.save({**ck.load(), "step": 20})
    for s in (0, 1):
        (tmp_path / "p" / f"seed{s}" / "summary.json").unlink()  # not finished: resumable
    assert run("iql", hopper_file, tmp_path / "p", "--seeds", "0,1", *base, "--resume", "true") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different steps [20, 40]" in err[0]


def test_divergence_of_one_seed_leaves_the_others_running(hopper_file, tmp_path, capsys):
    """A seed that diverges is recorded 'diverged' and stops; with one seed the exit status is 3."""
    out = tmp_path / "run"
    assert run("iql", hopper_file, out, "--offline-steps", "40", "--critic-lr", "1e30") == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and "NaN/inf" in summary["error"]
    assert "diverged" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ compile
def test_compiled_update_matches_eager(hopper_file):
    """torch.compile of the whole update (optimiser steps included) gives eager's numbers to float tolerance:
    Inductor fuses and reorders float ops, so values differ in the last bits and the differences grow slowly."""
    from baselines import iql
    from o2o.data import load_dataset

    ds = load_dataset(hopper_file, env_id="Hopper-v5")
    data = {"obs": ds.observations, "act": ds.actions, "rew": ds.rewards, "next_obs": ds.next_observations,
            "done": ds.terminals}
    cfg = iql.IQLConfig(hidden_dim=32, batch_size=64, offline_steps=100)
    setup = loop.Setup([0, 1], ds.spec, ds.obs_dim, ds.act_dim, 1.0, torch.device("cpu"), ds.observations)
    outs = []
    for compiled in (False, True):
        agent, buf, rng = iql.IQL(cfg, setup), ReplayBuffer(data, 2, 0), MemberRNG([0, 1], "batches")
        step = loop.compile_step(lambda a=agent, b=buf, r=rng: a.update(b.sample(r, 64), False), compiled,
                                 torch.device("cpu"))
        for _ in range(10):
            metrics = step()
        outs.append((metrics, [p.detach().clone() for p in agent.actor.parameters()]))
    for k in outs[0][0]:
        assert torch.allclose(outs[0][0][k], outs[1][0][k], rtol=1e-4, atol=1e-5), k
    for a, b in zip(outs[0][1], outs[1][1]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def tiny_setup(algo: str, base: str | None, hopper_file: str, **fields):
    """(module, agent config, two-seed Setup, dataset fields, dataset) of `algo` at test sizes on the Hopper file."""
    from o2o.data import load_dataset

    mod = importlib.import_module(MODULES[algo])
    ds = load_dataset(hopper_file, env_id="Hopper-v5")
    data = {"obs": ds.observations, "act": ds.actions, "rew": ds.rewards, "next_obs": ds.next_observations,
            "done": ds.terminals}
    cls = {"iql": "IQLConfig", "awac": "AWACConfig", "cql": "CQLConfig", "famo2o": "FamO2OConfig"}[algo]
    extra = {"cql_n_actions": 4} if algo == "cql" else {"base": base} if base else {}
    cfg = getattr(mod, cls)(hidden_dim=32, batch_size=64, **fields, **extra)
    setup = loop.Setup([0, 1], ds.spec, ds.obs_dim, ds.act_dim, 1.0, torch.device("cpu"), ds.observations)
    return mod, cfg, setup, data, ds


@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
@pytest.mark.parametrize("algo,base", [("iql", None), ("awac", None), ("cql", None), ("famo2o", "iql"),
                                       ("famo2o", "awac")])
def test_every_update_compiles(algo, base, online, hopper_file):
    """Every algorithm's update runs under torch.compile with graph breaks at its optimiser steps (dynamo and AOT
    autograd, as `--compile` uses them, with eager kernels so the test takes seconds; Inductor's numbers are checked
    above) and gives eager's numbers. A loss whose graph is shared with an earlier backward (one autograd node per
    compiled region) fails here: FamO2O's temperature loss once did."""
    mod, cfg, setup, data, _ = tiny_setup(algo, base, hopper_file)
    torch._dynamo.reset()
    outs = []
    for compiled in (False, True):
        agent, buf, rng = mod.algorithm(cfg).build(cfg, setup), ReplayBuffer(data, 2, 0), MemberRNG([0, 1], "batches")

        def step(a=agent, b=buf, r=rng):
            return a.update(b.sample(r, 64), online)

        fn = torch.compile(step, backend="aot_eager") if compiled else step
        for _ in range(3):
            metrics = fn()
        outs.append(metrics)
    for k in outs[0]:
        assert torch.allclose(outs[0][k], outs[1][k], rtol=1e-4, atol=1e-5, equal_nan=True), k


def steady_updates(algo: str, base: str | None, hopper_file: str, change=None) -> None:
    """The loop's sequence under torch.compile (dynamo only): offline updates, then acting, buffer adds and online
    updates, with evaluation's acting between them. After one warm-up of each phase, any recompilation raises:
    dynamo recompiles when a Python value that the traced update read has changed (floats too, specialised here),
    and a CUDA graph (o2o.training.GraphedStep) would have frozen that value. `change(agent)` runs between the
    later steps (the control)."""
    mod, cfg, setup, data, ds = tiny_setup(algo, base, hopper_file, offline_steps=10, online_steps=10)
    agent, buf, rng = mod.algorithm(cfg).build(cfg, setup), ReplayBuffer(data, 2, 10), MemberRNG([0, 1], "batches")
    obs = torch.as_tensor(ds.observations[:2], dtype=torch.float32).unsqueeze(1).repeat(1, 64, 1)  # (S, 64, d)
    torch._dynamo.reset()
    step = torch.compile(lambda online: agent.update(buf.sample(rng, 64), online), backend="eager")

    def online_step() -> None:
        act = loop.act_padded(agent, obs, explore=True)[:, 0]
        buf.add(buf.rows(obs[:, 0].numpy(), act.numpy(), np.ones(2), obs[:, 0].numpy(), np.zeros(2)))
        step(True)

    with torch._dynamo.config.patch(specialize_float=True):
        for _ in range(2):
            step(False)
        for _ in range(2):
            online_step()
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(3):
                if change is not None:
                    change(agent)
                step(False)
                loop.act_padded(agent, obs, explore=False)  # evaluation between updates
                online_step()


@pytest.mark.parametrize("algo,base", [("iql", None), ("awac", None), ("cql", None), ("famo2o", "iql"),
                                       ("famo2o", "awac")])
def test_update_reads_no_python_value_that_changes(algo, base, hopper_file):
    """What a GPU run's CUDA graph freezes does not change: everything an update reads that moves between steps
    (random-stream counters, buffer counts, lr schedule, step counters) is a tensor changed in place."""
    steady_updates(algo, base, hopper_file)


def test_a_python_value_read_by_the_update_is_caught(hopper_file):
    """Control for the test above: an update that reads a Python float which changes (IQL's discount) recompiles."""
    import dataclasses

    def change(agent):
        agent.cfg = dataclasses.replace(agent.cfg, discount=agent.cfg.discount * 0.999)

    with pytest.raises(Exception, match="[Rr]ecompil"):
        steady_updates("iql", None, hopper_file, change)


class _Toy:
    """A stand-in update: one in-place step of a parameter, its new value as the output."""

    def __init__(self) -> None:
        self.w = torch.zeros(3)
        self.updates = 0

    def __call__(self, online: bool) -> dict[str, torch.Tensor]:
        self.updates += 1
        self.w.add_(2.0 if online else 1.0)
        return {"w": self.w * 1.0}


class _FakeGraphStep(loop.GraphedStep):
    """GraphedStep with its two CUDA calls emulated on the CPU: a capture records without running (state rolled
    back), a replay reruns the update writing into the captured output tensors."""

    def __init__(self, fn: _Toy, fail: bool = False) -> None:
        super().__init__(fn)
        self.fail, self.warmed, self.captured = fail, 0, 0

    def _warm(self, args):
        self.warmed += 1
        return self.fn(*args)

    def _capture(self, args):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captured += 1
        before, updates = self.fn.w.clone(), self.fn.updates
        out = self.fn(*args)
        self.fn.w.copy_(before)
        self.fn.updates = updates
        fn = self.fn

        class Graph:
            def replay(self):
                for k, v in fn(*args).items():
                    out[k].copy_(v)

        return Graph(), out


def test_graphed_step_makes_every_call_one_update():
    toy = _Toy()
    step = _FakeGraphStep(toy)
    seen = [step(False)["w"][0].item() for _ in range(6)] + [step(True)["w"][0].item() for _ in range(5)]
    assert toy.updates == 11 and seen == [1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16]  # eager's sequence
    assert step.warmed == 6 and step.captured == 2  # 3 warm-ups and one capture per phase
    assert step(False) is step(False)  # a replay returns the graph's own output tensors


def test_a_failed_capture_warns_once_and_the_update_runs_uncaptured(capsys):
    toy = _FakeGraphStep(_Toy(), fail=True)
    seen = [toy(False)["w"][0].item() for _ in range(6)]
    assert seen == [1, 2, 3, 4, 5, 6] and toy.fn.updates == 6
    err = capsys.readouterr().err
    assert err.count("CUDA graph capture of the update failed") == 1 and "stream is capturing" in err


# ------------------------------------------------------------------------------------------------ run safety
def test_resume_refuses_a_checkpoint_of_other_settings(hopper_file, tmp_path, capsys):
    """--resume with another expectile (or dataset, or seed) is refused in one line naming the fields; safe
    fields (evaluation, logging, device) may change."""
    out = tmp_path / "run"
    assert run("iql", hopper_file, out, "--offline-steps", "20", "--eval-every", "20", "--checkpoint-every", "10") == 0
    (out / "summary.json").unlink()  # an interrupted run
    assert run("iql", hopper_file, out, "--offline-steps", "20", "--eval-every", "20", "--checkpoint-every", "10",
               "--expectile", "0.9", "--resume", "true") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expectile: 0.7 -> 0.9" in err[0] and "--force" in err[0]
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    assert run("iql", hopper_file, out, "--offline-steps", "20", "--eval-every", "10", "--checkpoint-every", "10",
               "--eval-episodes", "1", "--resume", "true") == 0  # evaluation settings are safe to change


def test_a_finished_run_is_left_alone_unless_forced(hopper_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--offline-steps", "20", "--eval-every", "20"]
    assert run("iql", hopper_file, out, *args) == 0
    before = (out / "evals.csv").read_text(), (out / "summary.json").stat().st_mtime_ns
    (out / "run.json").write_text("{}")  # a suite's file from the earlier run
    assert run("iql", hopper_file, out, *args, "--seed", "1") == 0  # another seed on the same --out: refused
    assert "nothing to do" in capsys.readouterr().out
    assert ((out / "evals.csv").read_text(), (out / "summary.json").stat().st_mtime_ns) == before
    assert run("iql", hopper_file, out, *args, "--seed", "1", "--force", "true") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 1 and not (out / "run.json").exists()  # old records cleared


def test_a_locked_run_directory_is_refused(hopper_file, tmp_path, capsys):
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / loop.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another run holds it
    try:
        assert run("iql", hopper_file, out, "--offline-steps", "20") == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by another process" in err[0]
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_checkpoint_is_one_line(hopper_file, tmp_path, capsys, damage):
    out = tmp_path / "run"
    assert run("iql", hopper_file, out, "--offline-steps", "20", "--eval-every", "20") == 0
    (out / "summary.json").unlink()
    data = (out / "checkpoint.pt").read_bytes()
    if damage == "flip":
        data = data[:2000] + bytes(b ^ 0xFF for b in data[2000:4000]) + data[4000:]
    (out / "checkpoint.pt").write_bytes({"flip": data, "truncate": data[: len(data) // 2], "empty": b""}[damage])
    assert run("iql", hopper_file, out, "--offline-steps", "20", "--eval-every", "20", "--resume", "true") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint.pt is corrupt or truncated" in err[0]
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"


def test_bad_dataset_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "notes.hdf5"
    bad.write_text("not a dataset")
    assert run("iql", str(bad), tmp_path / "run", "--offline-steps", "20") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "notes.hdf5" in err[0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "notes.hdf5" in summary["error"]


def test_final_evaluation_and_episode_records(hopper_file, tmp_path):
    """--final-eval-episodes N: one evaluation of N episodes after training, summary.json final_score, and its
    episodes in episodes.csv beside every periodic evaluation's (return, score, length, success)."""
    out = tmp_path / "run"
    assert run("iql", hopper_file, out, "--offline-steps", "20", "--eval-every", "10", "--final-eval-episodes",
               "5") == 0
    summary = json.loads((out / "summary.json").read_text())
    episodes = rows(out / "episodes.csv")
    final = [e for e in episodes if e["phase"] == "final"]
    assert summary["final_episodes"] == 5 and len(final) == 5
    assert summary["final_score"] == pytest.approx(np.mean([float(e["normalized_score"]) for e in final]), rel=1e-5)
    periodic = [e for e in episodes if e["phase"] == "offline"]
    assert [int(e["step"]) for e in periodic] == [10, 10, 20, 20]  # 2 episodes per evaluation
    evals = rows(out / "evals.csv")
    assert float(evals[0]["length_mean"]) == pytest.approx(np.mean([int(e["length"]) for e in periodic[:2]]))
