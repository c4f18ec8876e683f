"""Markdown tables of a FamO2O comparison: scores per algorithm and dataset, and the balance model's final β.

    python results/famo2o/summarize.py [RUNS_DIR]        # default results/famo2o/runs (written by compare.sh)

Scores are D4RL-normalized means of the 10 evaluation episodes at the end of each phase (summary.json: offline_score,
online_score = the last evaluation of the online phase) and the online gain online − offline per seed; mean ± std
over seeds (population std). β: each FamO2O run's betas.npy (β the balance model picks deterministically for 10k
fixed dataset states at the end of the run), pooled per dataset, and each run's evals.csv β columns at the end of
the offline phase.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def _ms(x: list[float]) -> str:
    a = np.asarray(x, dtype=float)
    return f"{np.nanmean(a):.1f} ± {np.nanstd(a):.1f}" if len(a) else "–"


def main(root: Path) -> int:
    runs = defaultdict(list)
    betas = defaultdict(list)
    beta_offline = defaultdict(list)
    for p in sorted(root.glob("*/*/seed*/summary.json")):
        s = json.loads(p.read_text())
        if s.get("status") != "finished":
            print(f"skipped ({s.get('status')}): {p.parent}", file=sys.stderr)
            continue
        key = (s["dataset"], s["algorithm"])
        runs[key].append((s["seed"], s["offline_score"], s["online_score"]))
        if (p.parent / "betas.npy").exists():
            betas[key].append(np.load(p.parent / "betas.npy").reshape(-1))
            with open(p.parent / "evals.csv") as f:
                off = [r for r in csv.DictReader(f) if r["phase"] == "offline" and r.get("beta_mean")]
            if off:
                beta_offline[key].append(float(off[-1]["beta_mean"]))
    if not runs:
        print(f"no finished runs under {root}", file=sys.stderr)
        return 1
    print("| dataset | algorithm | seeds | offline (end) | online (end) | online − offline |")
    print("|---|---|---:|---:|---:|---:|")
    for (ds, alg), v in sorted(runs.items()):
        seeds = ",".join(str(x[0]) for x in sorted(v))
        off, on = [x[1] for x in v], [x[2] for x in v]
        print(f"| {ds} | {alg} | {seeds} | {_ms(off)} | {_ms(on)} | {_ms([b - a for a, b in zip(off, on)])} |")
    if betas:
        print("\n| dataset | algorithm | β at the end of offline (mean over states; per seed) "
              "| final β over 10k states: mean | q10 | q50 | q90 |")
        print("|---|---|---|---:|---:|---:|---:|")
        for (ds, alg), bs in sorted(betas.items()):
            b = np.concatenate(bs)
            q10, q50, q90 = np.quantile(b, [0.1, 0.5, 0.9])
            offs = ", ".join(f"{x:.2f}" for x in beta_offline[(ds, alg)])
            print(f"| {ds} | {alg} | {offs} | {b.mean():.2f} | {q10:.2f} | {q50:.2f} | {q90:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/famo2o/runs")))
