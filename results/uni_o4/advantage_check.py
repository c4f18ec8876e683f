"""Does Uni-O4's critic rank the actions that the improvement samples? Checked against the simulator.

The offline improvement moves each member toward the actions a ~ π_k(·|s) with a high A(s, a) = min Q(s, a) − V(s).
Only the ranking of actions *within* a state matters for that direction (a per-state offset cancels in expectation),
so this script measures it directly on a finished run (its cached critic and BC ensemble):

  for M dataset states s (restored in the simulator from the dataset's infos/qpos, infos/qvel),
      K actions a_j ~ π_member(·|s) (the BC member, as the improvement samples them),
      true Q(s, a_j) = r(s, a_j) + Σ_{t≥1} γ^t r_t while the member's deterministic policy continues for H − 1 steps,
  report
      within-state Spearman ρ(critic A(s, ·), true Q(s, ·)), averaged over states (0 = no usable signal),
      within_share: the fraction of the critic's advantage variance that is within states (the rest is a per-state
      offset that only adds variance to the gradient),
      true_spread: mean over states of the std of the true Q over the K actions (how much there is to gain).

  python results/uni_o4/advantage_check.py check RUN_DIR [--states 48 --actions 8 --horizon 300 --member 0]
      scores the run's cached critic; writes RUN_DIR/advantage_check.json
  python results/uni_o4/advantage_check.py curve RUN_DIR --out DIR [--critic-steps N --critic-lr X --value-lr X ...]
      trains a critic with other settings on the same data, scored every --every steps (DIR/advantage_curve.json),
      and caches it in DIR/cache with links to the run's dynamics and BC caches, so that uni_o4.py with the run's
      flags plus the new critic flags and --out DIR goes on from there
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from algorithms import uni_o4 as U  # noqa: E402
from o2o.cli import renamed_fields  # noqa: E402
from o2o.consistency import restore  # noqa: E402
from o2o.data import load_dataset  # noqa: E402
from o2o.envs import make_env  # noqa: E402
from o2o.records import RunRecorder, read_summary  # noqa: E402


def load_run(run: Path) -> tuple[U.UniO4Config, object, U.OfflineData, U.ValueLearner, U.BoundedGaussianActor]:
    """The run's config, dataset, prepared data, cached critic and cached BC ensemble."""
    summary = read_summary(run)
    if summary is None:
        raise SystemExit(f"{run}: no readable summary.json (not a run directory?)")
    renamed = renamed_fields(U.UniO4Config)  # a run recorded before the renames too
    conf = {renamed.get(k, k): v for k, v in summary["config"].items()}
    fields = {f.name for f in dataclasses.fields(U.UniO4Config)}
    conf = {k: tuple(v) if isinstance(v, list) else v for k, v in conf.items() if k in fields}
    conf["seeds"] = ()  # the run directory is one seed's
    cfg = U.UniO4Config(**conf)
    device = torch.device("cpu")
    ds = load_dataset(cfg.dataset, env_id=cfg.env)
    data = U.prepare_data(ds, cfg, device)
    keys, cache = U.stage_keys(cfg), U.StageCache(run / "cache")
    obs_dim, act_dim = data.obs.shape[1], data.act.shape[1]
    st = cache.load(keys["critic"], device)
    if st is None:
        raise SystemExit(f"{run}: no cached critic {keys['critic']} (was the run made with --cache false?)")
    critic = U.load_critic_state(U.ValueLearner(cfg, obs_dim, act_dim, [cfg.seed]), st["state"])
    bc = U.make_policy(cfg, obs_dim, act_dim, [cfg.seed])
    st = cache.load(keys["bc"], device)
    if st is None:
        raise SystemExit(f"{run}: no cached BC ensemble {keys['bc']}")
    bc.load_state_dict(st["state"])
    return cfg, ds, data, critic, bc


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ of two 1-d arrays (no ties expected in continuous values)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def true_table(cfg: U.UniO4Config, ds, data: U.OfflineData, bc: U.BoundedGaussianActor, states: int, actions: int,
               horizon: int, member: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """M dataset states, K member actions at each, the simulator's Q of every pair: (M·K obs, M·K acts, M×K Q)."""
    if "infos/qpos" not in ds.infos or "infos/qvel" not in ds.infos:
        raise SystemExit(f"{ds.spec.name}: needs infos/qpos and infos/qvel to restore states")
    pi = U.member_actor(cfg, bc, [cfg.seed], [member]).eval()
    env = make_env(ds.spec)
    low, high = env.action_space.low, env.action_space.high
    rows = np.random.default_rng(seed).choice(len(ds), size=states, replace=False)
    gen = torch.Generator().manual_seed(seed)
    obs = data.obs[torch.as_tensor(rows)].repeat_interleave(actions, 0)
    with torch.no_grad():
        mean, log_std = (x[0] for x in pi.mean_log_std(obs[None]))
        acts = mean + log_std.exp() * torch.randn(obs.shape, generator=gen)[:, :ds.act_dim]  # a ~ π(·|s), seeded
    true = np.zeros((states, actions))
    t0 = time.time()
    for i, row in enumerate(rows):
        state = {"qpos": ds.infos["infos/qpos"][row], "qvel": ds.infos["infos/qvel"][row]}
        for j in range(actions):
            env.reset(seed=seed)
            restore(env, ds.spec.domain, state)
            act = np.clip(acts[i * actions + j].numpy().astype(np.float64), low, high)
            ret, disc = 0.0, 1.0
            for _ in range(horizon):
                o, r, term, trunc, _ = env.step(act)
                ret += disc * float(r)
                disc *= cfg.discount
                if term or trunc:
                    break
                with torch.no_grad():
                    act = pi.act(data.normalize(torch.as_tensor(o, dtype=torch.float32))[None, None])[0, 0].numpy()
                act = np.clip(act.astype(np.float64), low, high)
            true[i, j] = ret
        if (i + 1) % 16 == 0:
            print(f"[advantage_check] true Q: {i + 1}/{states} states, {time.time() - t0:.0f} s", flush=True)
    env.close()
    return obs, acts, true


def score(critic: U.ValueLearner, obs: torch.Tensor, acts: torch.Tensor, true: np.ndarray) -> dict[str, float]:
    """How well the critic's advantage ranks the actions within each state (see the module docstring)."""
    with torch.no_grad():
        crit = critic.advantage(obs[None], acts[None]).view(true.shape).double().numpy()
    m = true.shape[0]
    rho = [spearman(crit[i], true[i]) for i in range(m) if true[i].std() > 0 and crit[i].std() > 0]
    cc, tc = crit - crit.mean(1, keepdims=True), true - true.mean(1, keepdims=True)
    return {
        "within_state_spearman_mean": float(np.mean(rho)),
        "within_state_spearman_se": float(np.std(rho) / np.sqrt(len(rho))),
        "pooled_within_pearson": float((cc * tc).sum() / np.sqrt((cc ** 2).sum() * (tc ** 2).sum())),
        "within_share_of_critic_adv_variance": float(cc.var() / crit.var()),
        "true_spread": float(true.std(1).mean()),
        "true_gain_best_action": float((true.max(1) - true.mean(1)).mean()),
        "true_gain_critic_argmax": float((true[np.arange(m), crit.argmax(1)] - true.mean(1)).mean()),
    }


def header(args: argparse.Namespace, cfg: U.UniO4Config) -> dict:
    """What a result records of its inputs: the run, the sample and the critic's settings."""
    return {"run": str(args.run), "dataset": cfg.dataset, "member": args.member, "states": args.states,
            "actions": args.actions, "horizon": args.horizon, "seed": args.seed,
            "critic": {k: getattr(cfg, k) for k in U.STAGE_FIELDS["critic"]}}


def check(args: argparse.Namespace) -> dict:
    """Score a finished run's cached critic."""
    cfg, ds, data, critic, bc = load_run(args.run)
    t0 = time.time()
    obs, acts, true = true_table(cfg, ds, data, bc, args.states, args.actions, args.horizon, args.member, args.seed)
    res = {**header(args, cfg), **score(critic, obs, acts, true), "wall_s": round(time.time() - t0)}
    (args.run / "advantage_check.json").write_text(json.dumps(res, indent=1))
    return res


def curve(args: argparse.Namespace) -> dict:
    """Train a critic with other settings on the run's data, scoring it at every log flush; cache it for uni_o4.py.

    The critic goes to OUT/cache under the key uni_o4.py computes for the same flags, next to links to the run's
    dynamics and BC caches, so `uni_o4.py <the run's flags> <these critic flags> --out OUT` continues from it.
    """
    cfg0, ds, data, _, bc = load_run(args.run)
    over = {k: v for k, v in {"critic_steps": args.critic_steps, "critic_batch": args.critic_batch,
                              "critic_lr": args.critic_lr, "value_lr": args.value_lr,
                              "value_method": args.value_method}.items()
            if v is not None}
    cfg = dataclasses.replace(cfg0, out=str(args.out), log_every=args.every, **over)
    args.out.mkdir(parents=True, exist_ok=True)
    obs, acts, true = true_table(cfg, ds, data, bc, args.states, args.actions, args.horizon, args.member, args.seed)
    res = {**header(args, cfg), "curve": []}
    path = args.out / "advantage_curve.json"

    def on_flush(step: int, critic: U.ValueLearner) -> None:
        res["curve"].append({"critic_step": step, **score(critic, obs, acts, true)})
        path.write_text(json.dumps(res, indent=1))

    recorder = RunRecorder(args.out, "uni_o4-critic-curve", cfg.dataset, cfg.seed, {})
    critic = U.fit_critic(cfg, data, U.Pack([cfg.seed], [args.out], [recorder]), torch.device("cpu"),
                          on_flush=on_flush)
    keys, old_keys = U.stage_keys(cfg), U.stage_keys(cfg0)
    U.StageCache(args.out / "cache").save(keys["critic"], U.stage_entries(U.critic_state(critic), [{}])[0])
    for stage in ("dynamics", "bc"):
        assert keys[stage] == old_keys[stage]
        link = args.out / "cache" / f"{keys[stage]}.pt"
        if not link.exists():
            link.symlink_to((args.run / "cache" / f"{keys[stage]}.pt").resolve())
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="score a finished run's cached critic")
    k = sub.add_parser("curve", help="train a critic with other settings, scored as it learns")
    for q in (c, k):
        q.add_argument("run", type=Path)
        q.add_argument("--states", type=int, default=48)
        q.add_argument("--actions", type=int, default=8)
        q.add_argument("--horizon", type=int, default=300)
        q.add_argument("--member", type=int, default=0)
        q.add_argument("--seed", type=int, default=0)
    k.add_argument("--out", type=Path, required=True)
    k.add_argument("--every", type=int, default=25_000, help="critic steps between scores")
    k.add_argument("--critic-steps", type=int)
    k.add_argument("--critic-batch", type=int)
    k.add_argument("--critic-lr", type=float, help="Adam lr of the twin Q")
    k.add_argument("--value-lr", type=float, help="Adam lr of V")
    k.add_argument("--value-method", choices=("iql", "mc_sarsa"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    res = check(args) if args.cmd == "check" else curve(args)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
