"""Training the PPO behaviour policies behind the `local:` datasets, and choosing their medium and expert snapshots.

This sits above o2o/ and baselines/ (it trains with baselines/ppo.py), so that o2o/generate.py, which only rolls the
committed policies out (o2o.generate.NumpyGaussianPolicy), imports nothing above o2o/. See behaviour/README.md for
the runs behind the committed files.

Command line (trains, then writes behaviour/<env>-{medium,expert}.pt, <env>-medium-replay.npz and <env>.json):
  python -m behaviour.train hopper --seed 0 --steps 1000000
  python -m behaviour.train hopper --select-only    # redo only the selection from ~/.o2o/behaviour-runs/<env>-seed<N>
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # `python behaviour/train.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baselines.ppo import PPOConfig, make_agent, run_ppo  # noqa: E402
from o2o.envs import make_env  # noqa: E402
from o2o.generate import BEHAVIOUR_DIR, NumpyGaussianPolicy  # noqa: E402
from o2o.records import RunRecorder  # noqa: E402
from o2o.registry import LOCAL_FAMILIES, DatasetSpec, normalized_score  # noqa: E402
from o2o.specs import get_spec  # noqa: E402
from o2o.training import Evaluator, config_dict, set_seed  # noqa: E402

# PPO settings of the behaviour runs: CleanRL's, except 4 envs x 512 steps and minibatch 128 (a quarter of CleanRL's
# gradient steps per env step), chosen to fit 1M env steps per env into the 2-core CPU budget.
BEHAVIOUR_PPO: dict[str, Any] = dict(num_envs=4, rollout_steps=512, minibatch_size=128, epochs=10)
BEHAVIOUR_RUNS = Path("~/.o2o/behaviour-runs").expanduser()


def policy_return(spec: DatasetSpec, policy: Callable, episodes: int, seed: int, stochastic: bool = True
                  ) -> tuple[float, float]:
    """Mean and std of the undiscounted return of `episodes` episodes (stochastic actions as in the datasets)."""
    env = make_env(spec)
    rng = np.random.default_rng(seed)
    rets = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + 1000003 * ep)
        done, ret = False, 0.0
        while not done:
            x = obs[None].astype(np.float32)
            a = policy(x, rng)[0][0] if stochastic else policy.act(x)[0]
            obs, r, term, trunc, _ = env.step(np.clip(a, env.action_space.low, env.action_space.high))
            ret += float(r)
            done = term or trunc
        rets.append(ret)
    env.close()
    return float(np.mean(rets)), float(np.std(rets))


def train_behaviour(family: str, seed: int = 0, total_steps: int = 1_000_000, snapshot_every: int = 10_000,
                    work_dir: Path | None = None, ppo_overrides: dict[str, Any] | None = None) -> Path:
    """Train a PPO behaviour policy from scratch; keep every snapshot and the executed actions in work_dir/raw.pt."""
    torch.set_num_threads(1)
    work = Path(work_dir or BEHAVIOUR_RUNS / f"{family}-seed{seed}")
    cfg = PPOConfig(dataset=f"local:{family}-medium", seed=seed, out=str(work), online_steps=total_steps,
                    snapshot_every=snapshot_every, record_actions=True, eval_every=100_000, eval_episodes=5,
                    checkpoint_every=10**12, log_every=50_000, **{**BEHAVIOUR_PPO, **(ppo_overrides or {})})
    spec = get_spec(cfg.dataset)
    set_seed(seed)
    recorder = RunRecorder(work, "ppo-behaviour", spec.name, seed, config_dict(cfg), budget="full")
    res = run_ppo(cfg, spec, make_agent(cfg, spec), recorders=[recorder],
                  evaluator=Evaluator(spec, recorder, seed, 5))[0]
    recorder.extra["env_steps_per_s"] = res["env_steps_per_s"]
    recorder.finish("finished")
    raw = {"snapshots": res["snapshots"], "actions": torch.from_numpy(res["actions"]),
           "episode_returns": torch.tensor(res["episode_returns"], dtype=torch.float64),
           "log_probs": torch.from_numpy(res["log_probs"]), "reset_seed": int(res["reset_seed"]),
           "config": dataclasses.asdict(cfg), "wall_time_s": res["wall_time_s"],
           "env_steps_per_s": res["env_steps_per_s"]}
    torch.save(raw, work / "raw.pt")
    print(f"[behaviour] {family}: {total_steps} env steps in {res['wall_time_s']:.0f} s "
          f"({res['env_steps_per_s']:.0f} steps/s) -> {work / 'raw.pt'}", flush=True)
    return work / "raw.pt"


def select_behaviour(family: str, raw_path: Path, seed: int = 0, candidates: int = 4, episodes: int = 10,
                     out_dir: Path | None = None) -> dict[str, Any]:
    """Expert = final policy; medium = the snapshot whose stochastic return is closest to 1/3 of the expert's.

    Candidates are the `candidates` snapshots whose training-episode return is closest to the target; each is
    evaluated with `episodes` stochastic episodes and the closest wins. Writes behaviour/<family>-{medium,expert}.pt,
    behaviour/<family>-medium-replay.npz (training actions up to the medium snapshot) and behaviour/<family>.json.
    """
    out = Path(out_dir or BEHAVIOUR_DIR)
    out.mkdir(parents=True, exist_ok=True)
    raw = torch.load(raw_path, map_location="cpu", weights_only=True)
    cfg = raw["config"]
    spec = get_spec(f"local:{family}-medium")
    arch = {"obs_dim": spec.obs_dim, "act_dim": spec.act_dim, "hidden": list(cfg["hidden"]),
            "activation": cfg["activation"], "tanh_mean": False}
    snaps = raw["snapshots"]

    def state(snap: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"actor": snap["actor"], "arch": arch, "obs_norm": snap["obs_norm"], "env_steps": snap["env_steps"],
                "train_return": snap["train_return"], "seed": seed, "trainer": "baselines/ppo.py run_ppo",
                **extra}

    eval_seed = 10_000 + seed
    expert = snaps[-1]
    e_ret, e_std = policy_return(spec, NumpyGaussianPolicy(state(expert)), episodes, eval_seed)
    e_det, _ = policy_return(spec, NumpyGaussianPolicy(state(expert)), episodes, eval_seed, stochastic=False)
    target = e_ret / 3.0
    tr = np.array([s["train_return"] if np.isfinite(s["train_return"]) else -1e9 for s in snaps[:-1]])
    order = np.argsort(np.abs(tr - target))[:candidates]
    evals = []
    for i in order:
        r, sd = policy_return(spec, NumpyGaussianPolicy(state(snaps[i])), episodes, eval_seed)
        evals.append((abs(r - target), int(i), r, sd))
        print(f"[behaviour] {family} candidate at {snaps[i]['env_steps']} env steps: train return "
              f"{snaps[i]['train_return']:.1f}, stochastic return {r:.1f} (target {target:.1f})", flush=True)
    _, mi, m_ret, m_std = min(evals)
    medium = snaps[mi]
    m_det, _ = policy_return(spec, NumpyGaussianPolicy(state(medium)), episodes, eval_seed, stochastic=False)
    torch.save(state(expert, **{"return": e_ret, "return_std": e_std, "return_deterministic": e_det,
                                "normalized": normalized_score(spec, e_ret)}), out / f"{family}-expert.pt")
    torch.save(state(medium, **{"return": m_ret, "return_std": m_std, "return_deterministic": m_det,
                                "normalized": normalized_score(spec, m_ret)}), out / f"{family}-medium.pt")
    n_envs = int(cfg["num_envs"])
    per_env = int(medium["env_steps"]) // n_envs
    np.savez_compressed(out / f"{family}-medium-replay.npz", actions=raw["actions"][:per_env].numpy(),
                        log_probs=raw["log_probs"][:per_env].numpy(), reset_seed=np.int64(raw["reset_seed"]),
                        steps_per_env=np.int64(per_env), num_envs=np.int64(n_envs))
    info = {
        "family": family, "env_id": spec.env_id, "seed": seed, "total_env_steps": int(expert["env_steps"]),
        "train_wall_time_s": round(float(raw["wall_time_s"]), 1),
        "train_env_steps_per_s": round(float(raw["env_steps_per_s"]), 1),
        "expert": {"env_steps": int(expert["env_steps"]), "return": e_ret, "return_std": e_std,
                   "return_deterministic": e_det, "normalized": normalized_score(spec, e_ret)},
        "medium": {"env_steps": int(medium["env_steps"]), "return": m_ret, "return_std": m_std,
                   "return_deterministic": m_det, "normalized": normalized_score(spec, m_ret), "target": target},
        "medium_replay_transitions": per_env * n_envs,
        "snapshots": [[int(s["env_steps"]), round(float(s["train_return"]), 1)] for s in snaps],
        "ppo": {k: cfg[k] for k in ("num_envs", "rollout_steps", "minibatch_size", "epochs", "actor_lr", "clip",
                                    "ent_coef", "hidden", "online_steps")},
    }
    (out / f"{family}.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"[behaviour] {family}: expert {e_ret:.1f} (det {e_det:.1f}), medium {m_ret:.1f} at "
          f"{medium['env_steps']} env steps, medium-replay {per_env * n_envs} transitions", flush=True)
    return info


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m behaviour.train`."""
    p = argparse.ArgumentParser(prog="python -m behaviour.train",
                                description="train a PPO behaviour policy and select its medium and expert snapshots")
    p.add_argument("env", choices=LOCAL_FAMILIES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1_000_000, help="env steps of the PPO run")
    p.add_argument("--select-only", action="store_true", help="reuse the raw run in ~/.o2o/behaviour-runs")
    args = p.parse_args(argv)
    raw = BEHAVIOUR_RUNS / f"{args.env}-seed{args.seed}" / "raw.pt"
    if args.select_only and not raw.exists():
        print(f"error: --select-only: no raw run at {raw}", file=sys.stderr)
        return 2
    if not args.select_only:
        raw = train_behaviour(args.env, args.seed, args.steps)
    select_behaviour(args.env, raw, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
