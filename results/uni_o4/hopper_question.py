"""The hopper question (README section 2e): members' score and episode length before and after the improvement.

For each Uni-O4 run directory (offline, with --offline-eval-every), prints one markdown row: the mean over the members
of the normalized score and of the mean episode length (`length_mean` of evals.csv) for the BC ensemble and at every
improvement evaluation, the members' final scores, the return per env step (return / length, mean of members) of
the BC ensemble and at the end, the gate's replacements and AM-Q from BC to the best accepted.

  python results/uni_o4/hopper_question.py RUN_DIR[=LABEL] [RUN_DIR[=LABEL] ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from o2o.records import read_summary  # noqa: E402


def members(run: Path) -> pd.DataFrame:
    """(improve_step, member, score, length) of the BC ensemble (step 0) and every improvement evaluation."""
    ev = pd.read_csv(run / "evals.csv")
    ev = ev[ev["stage"].isin(["bc", "improve"])].copy()
    if ev.empty or "length_mean" not in ev:
        raise SystemExit(f"{run}: no bc/improve rows with length_mean in evals.csv (an offline Uni-O4 run?)")
    ev["improve_step"] = ev["step"] - ev.loc[ev["stage"] == "bc", "step"].max()
    ev["per_step"] = ev["return_mean"] / ev["length_mean"]
    return ev[["improve_step", "member", "normalized_score", "length_mean", "per_step"]]


def row(label: str, run: Path) -> str:
    """One table row of a run."""
    summary = read_summary(run)
    if summary is None:
        raise SystemExit(f"{run}: no readable summary.json (not a run directory?)")
    ext = summary["extra"]
    means = members(run).groupby("improve_step")[["normalized_score", "length_mean", "per_step"]].mean()
    cells = [f"{s:.1f} / {n:.0f}" for s, n, _ in means.itertuples(index=False)]
    per_step = f"{means['per_step'].iloc[0]:.2f} → {means['per_step'].iloc[-1]:.2f}"
    final = ", ".join(f"{v:.1f}" for v in ext["member_scores"])
    ope_bc, ope_best = (sum(ext[k]) / len(ext[k]) for k in ("ope_bc", "ope_best"))
    replaced = ", ".join(str(r) for r in ext["behaviour_replacements"])
    return f"| {label} | {' | '.join(cells)} | {final} | {per_step} | {replaced} | {ope_bc:.1f} → {ope_best:.1f} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    args = p.parse_args(argv)
    parsed = [(Path(item.partition("=")[0]), item.partition("=")[2] or Path(item).name) for item in args.runs]
    steps = sorted(members(parsed[0][0])["improve_step"].unique())
    head = " | ".join("BC" if s == 0 else f"{s}" for s in steps)
    print(f"| run (score / length, mean of members) | {head} | final members | return per step | replacements "
          "| AM-Q: BC → best |")
    print("|---" * (len(steps) + 5) + "|")
    for run, label in parsed:
        print(row(label, run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
