"""AM-Q quality on hopper: rank policies of different quality by Uni-O4's AM-Q and by their true return.

Steps (each caches its output under $UNI_O4_OPE_DIR, default ~/.o2o/uni_o4_ope):
  behaviour  train PPO (baselines/ppo.py, CleanRL defaults) on Hopper-v5 and keep policy snapshots
  data       roll out a spread of snapshots (stochastic actions) into one mixed-quality D4RL-layout file
  rank       fit Uni-O4's critic, dynamics model and BC ensemble on that file (algorithms/uni_o4.py stages),
             improve the ensemble a little, then score every candidate policy with AM-Q and with 10 real episodes;
             print Spearman's rank correlation and write results/uni_o4/ope_rank.json
Used when local:hopper-medium is not available; `--dataset local:hopper-medium` ranks on that instead.

  python results/uni_o4/ope_rank.py behaviour --steps 400000
  python results/uni_o4/ope_rank.py data
  python results/uni_o4/ope_rank.py rank [--dataset PATH_OR_NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from algorithms import uni_o4 as U  # noqa: E402
from o2o.rng import MemberRNG  # noqa: E402
from o2o.specs import get_spec  # noqa: E402

WORK = Path(os.environ.get("UNI_O4_OPE_DIR", "~/.o2o/uni_o4_ope")).expanduser()
SPEC = get_spec("hopper-medium-v2")


def behaviour(args: argparse.Namespace) -> None:
    from baselines.ppo import PPOConfig, make_agent, run_ppo
    from o2o.records import RunRecorder

    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    cfg = PPOConfig(dataset="hopper-medium-v2", seed=args.seed, out=str(WORK / "ppo_run"),
                    online_steps=args.steps, snapshot_every=args.snapshot_every, log_every=20_000)
    rec = RunRecorder(cfg.out, "ppo", cfg.dataset, cfg.seed, {}, None)
    res = run_ppo(cfg, SPEC, make_agent(cfg, SPEC), recorders=[rec], evaluator=None)[0]
    arch = {"obs_dim": SPEC.obs_dim, "act_dim": SPEC.act_dim, "hidden": list(cfg.hidden),
            "activation": cfg.activation, "tanh_mean": False}
    snaps = [{**s, "arch": arch} for s in res["snapshots"]]
    torch.save(snaps, WORK / "ppo_snapshots.pt")
    print(f"saved {len(snaps)} snapshots; train returns {[round(s['train_return'], 1) for s in snaps]}")



def data(args: argparse.Namespace) -> None:
    from o2o.generate import NumpyGaussianPolicy, rollout
    from o2o.hdf5 import write_d4rl_hdf5

    snaps = torch.load(WORK / "ppo_snapshots.pt", weights_only=True)
    order = np.argsort([s["train_return"] for s in snaps])
    pick = [int(order[round(q * (len(order) - 1))]) for q in np.linspace(0, 1, args.policies)]
    parts, info = [], []
    for i, k in enumerate(pick):
        arr = rollout(SPEC, NumpyGaussianPolicy(snaps[k]), args.size // args.policies, seed=1000 + i)
        parts.append(arr)
        ends = np.flatnonzero(arr["terminals"] | arr["timeouts"])
        starts = np.concatenate([[0], ends[:-1] + 1])
        rets = [float(arr["rewards"][a:b + 1].sum()) for a, b in zip(starts, ends)]
        info.append({"snapshot": k, "env_steps": int(snaps[k]["env_steps"]), "return_mean": float(np.mean(rets))})
        print(info[-1], flush=True)
    raw = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    path = write_d4rl_hdf5(WORK / "hopper-mixed.hdf5", raw, {"source": "uni_o4 ope_rank.py data",
                                                             "snapshots": json.dumps(info)})
    (WORK / "hopper-mixed.json").write_text(json.dumps(info, indent=1))
    print(path)


class Candidates:
    """Arbitrary policies (raw obs -> action, torch) behind the ensemble interface that U.am_q uses (one seed)."""

    def __init__(self, fns, data: U.OfflineData) -> None:
        self.fns, self.n, self.data = fns, len(fns), data

    def act(self, s: torch.Tensor) -> torch.Tensor:
        raw = s * self.data.obs_std + self.data.obs_mean  # (N, b, d): member k acts on raw[k]
        return torch.stack([fn(raw[k]).clamp(-1.0, 1.0) for k, fn in enumerate(self.fns)])


def rank_config(args: argparse.Namespace) -> U.UniO4Config:
    """The official hopper settings, scaled down to what two shared CPU cores run in minutes (see ope_rank.md)."""
    dataset = args.dataset or str(WORK / "hopper-mixed.hdf5")
    env = None if dataset.startswith("local:") else "Hopper-v5"
    return U.UniO4Config(
        dataset=dataset, env=env, seed=args.seed, out=str(WORK / f"uni_o4_{Path(dataset).stem}_s{args.seed}"),
        budget="short", q_hidden=256, v_hidden=256, critic_steps=args.critic_steps, critic_batch=256,
        bc_steps=args.bc_steps, bc_batch=256, dyn_max_epochs=args.dyn_epochs, improve_steps=args.improve_steps,
        improve_batch=256, ope_every=100, ope_horizon=100, ope_batch=256, online_steps=0, eval_episodes=10,
        log_every=2000, checkpoint_every=10 ** 9, threads=1, bc_disagreement=args.bc_disagreement)


def rank(args: argparse.Namespace) -> None:
    from scipy.stats import spearmanr

    from o2o.data import load_dataset
    from o2o.evaluation import evaluate
    from o2o.generate import NumpyGaussianPolicy

    torch.set_num_threads(1)
    cfg = rank_config(args)
    t0 = time.time()
    (summary,) = U.train(cfg)  # the offline pipeline; its stages are cached in <out>/cache
    assert summary["status"] == "finished", summary
    device = torch.device("cpu")
    ds = load_dataset(cfg.dataset, env_id=cfg.env)
    data = U.prepare_data(ds, cfg, device)
    keys, cache = U.stage_keys(cfg), U.StageCache(Path(cfg.out) / "cache")
    obs_dim, act_dim = data.obs.shape[1], data.act.shape[1]
    critic = U.ValueLearner(cfg, obs_dim, act_dim, [cfg.seed])
    U.load_critic_state(critic, cache.load(keys["critic"], device)["state"])
    dyn = U.make_dynamics(cfg, obs_dim, act_dim, [cfg.seed])
    dyn.load_state_dict(cache.load(keys["dynamics"], device)["state"])

    def ensemble(key: str) -> U.BoundedGaussianActor:
        pe = U.make_policy(cfg, obs_dim, act_dim, [cfg.seed])
        pe.load_state_dict(cache.load(key, device)["state"])
        return pe

    def member(pe: U.BoundedGaussianActor, k: int) -> U.BoundedGaussianActor:
        return U.member_actor(cfg, pe, [cfg.seed], [k]).eval()

    bc, improved = ensemble(keys["bc"]), ensemble(keys["improve"])
    names, fns = [], []
    for tag, pe in (("bc", bc), ("uni_o4", improved)):
        for k in range(pe.copies):
            m = member(pe, k)
            names.append(f"{tag}_member{k}")
            fns.append(lambda raw, m=m: m.act(data.normalize(raw)[None])[0])
    snaps = torch.load(WORK / "ppo_snapshots.pt", weights_only=True) if (WORK / "ppo_snapshots.pt").exists() else []
    for k in np.linspace(0, len(snaps) - 1, min(args.snapshots, len(snaps))).round().astype(int) if snaps else []:
        pol = NumpyGaussianPolicy(snaps[k])
        names.append(f"ppo_snapshot_{int(snaps[k]['env_steps'])}")
        fns.append(lambda raw, pol=pol: torch.as_tensor(pol.act(raw.numpy()), dtype=torch.float32))
    rand_net = U.make_policy(dataclasses.replace(cfg, pi_hidden=64, pi_depth=2), obs_dim, act_dim, [123], copies=1)
    names += ["zero_action", "random_network", "bc_member0_noise0.3", "bc_member0_noise0.6"]
    fns += [lambda raw: torch.zeros(raw.shape[0], act_dim),
            lambda raw: rand_net.act(data.normalize(raw)[None])[0]]
    m0 = member(bc, 0)
    torch.manual_seed(123)
    for sigma in (0.3, 0.6):
        fns.append(lambda raw, s=sigma: m0.act(data.normalize(raw)[None])[0] + s * torch.randn(raw.shape[0], act_dim))
    cands = Candidates(fns, data)
    done = U.termination_fn(ds.spec)
    rng = MemberRNG([7], "ope_rank")
    start = data.raw_obs[rng.randint(len(data), args.ope_batch)]  # (1, b, d)
    ope = {}
    for h in args.horizons:
        t1 = time.time()
        with torch.no_grad():
            ope[h] = U.am_q(cands, critic.q_value, dyn, start, data.normalize, h, done, rng, len(fns))[0].tolist()
        print(f"AM-Q horizon {h}: {time.time() - t1:.0f} s", flush=True)
    true = []
    for i, fn in enumerate(fns):
        def policy(obs: np.ndarray, fn=fn) -> np.ndarray:
            with torch.no_grad():
                return fn(torch.as_tensor(obs, dtype=torch.float32)).clamp(-1, 1).numpy()

        res = evaluate(policy, SPEC, n_episodes=args.episodes, seed=4242, eval_index=i)
        true.append(res.normalized_score)
        print(f"{names[i]:28s} true {res.normalized_score:7.2f}  " +
              "  ".join(f"AM-Q(H={h}) {ope[h][i]:8.3f}" for h in args.horizons), flush=True)
    rho = {h: float(spearmanr(ope[h], true).statistic) for h in args.horizons}
    print("Spearman", rho)
    result = {"policies": names, "true_normalized": true, "am_q": {str(h): v for h, v in ope.items()},
              "spearman": {str(h): v for h, v in rho.items()}, "config": dataclasses.asdict(cfg),
              "offline_summary": {k: summary[k] for k in ("offline_score", "extra")},
              "ope_batch": args.ope_batch, "episodes": args.episodes, "wall_s": round(time.time() - t0)}
    out = Path(args.json or ROOT / "results" / "uni_o4" / "ope_rank.json")
    out.write_text(json.dumps(result, indent=1, default=str))
    print(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("behaviour")
    b.add_argument("--steps", type=int, default=400_000)
    b.add_argument("--snapshot-every", type=int, default=25_000)
    b.add_argument("--seed", type=int, default=0)
    d = sub.add_parser("data")
    d.add_argument("--size", type=int, default=150_000)
    d.add_argument("--policies", type=int, default=6)
    r = sub.add_parser("rank")
    r.add_argument("--dataset", default=None, help="default: the file `data` wrote")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--critic-steps", type=int, default=30_000)
    r.add_argument("--bc-steps", type=int, default=20_000)
    r.add_argument("--dyn-epochs", type=int, default=10)
    r.add_argument("--improve-steps", type=int, default=1000)
    r.add_argument("--bc-disagreement", default="working")
    r.add_argument("--snapshots", type=int, default=5)
    r.add_argument("--horizons", type=int, nargs="+", default=[100, 1000])
    r.add_argument("--ope-batch", type=int, default=512)
    r.add_argument("--episodes", type=int, default=10)
    r.add_argument("--json", default=None)
    args = p.parse_args(argv)
    {"behaviour": behaviour, "data": data, "rank": rank}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
