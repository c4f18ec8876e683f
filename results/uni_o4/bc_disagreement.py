"""Ensemble BC with the official and the working disagreement penalty on the same data, init and batches.

  python results/uni_o4/bc_disagreement.py official 0.1
  python results/uni_o4/bc_disagreement.py working 0.1
  python results/uni_o4/bc_disagreement.py working 1.0
Trains the 4-member BC ensemble of algorithms/uni_o4.py (3×256, 20k steps, batch 256) on the mixed hopper file of
ope_rank.py (or --dataset) and prints one JSON line: each member's normalized score (10 episodes), the final BC
NLL and the members' mean pairwise KL and mean-action distance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from algorithms import uni_o4 as U  # noqa: E402
from o2o.data import load_dataset  # noqa: E402
from o2o.evaluation import evaluate  # noqa: E402
from o2o.records import RunRecorder  # noqa: E402
from o2o.training import torch_policy  # noqa: E402

WORK = Path(os.environ.get("UNI_O4_OPE_DIR", "~/.o2o/uni_o4_ope")).expanduser()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["official", "working", "none"])
    p.add_argument("alpha", type=float)
    p.add_argument("--dataset", default=str(WORK / "hopper-mixed.hdf5"))
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--steps", type=int, default=20_000)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = U.UniO4Config(dataset=args.dataset, env=args.env, bc_steps=args.steps, bc_batch=256, critic_steps=0,
                        bc_disagreement=args.mode, bc_alpha=args.alpha, log_every=5000)
    ds = load_dataset(args.dataset, env_id=args.env)
    data = U.prepare_data(ds, cfg, torch.device("cpu"))
    out = WORK / f"bc_{args.mode}_{args.alpha}"
    out.mkdir(parents=True, exist_ok=True)
    pack = U.Pack([cfg.seed], [out], [RunRecorder(out, "uni_o4-bc", cfg.dataset, cfg.seed, {})])
    pol, metrics = U.fit_bc(cfg, data, pack, torch.device("cpu"))  # same seed: same init and batches
    scores = []
    for k in range(pol.copies):
        member = U.member_actor(cfg, pol, [cfg.seed], [k]).eval()
        policy = torch_policy(lambda o, m=member: m.act(data.normalize(o)[None])[0], torch.device("cpu"))
        scores.append(evaluate(policy, ds.spec, n_episodes=10, seed=0, eval_index=k).normalized_score)
    print(json.dumps({"mode": args.mode, "alpha": args.alpha, "scores": scores, "mean": float(np.mean(scores)),
                      **metrics[0]}))


if __name__ == "__main__":
    main()
