#!/usr/bin/env bash
# FamO2O vs its base algorithms, offline then online, on two locally generated locomotion datasets.
#
#   bash results/famo2o/compare.sh                 # short budget (100k offline + 100k online steps), seeds 0 1 2
#   BUDGET=smoke SEEDS="0 1 2" bash results/famo2o/compare.sh
#   DATASETS="local:hopper-medium" JOBS=2 EXTRA="--device cuda" bash results/famo2o/compare.sh
#   PAIRS=iql bash results/famo2o/compare.sh       # only IQL vs FamO2O+IQL (PAIRS="iql awac" by default)
#
# Runs go to results/famo2o/runs/<algorithm>/<dataset>/seed<N>/ (summary.json, evals.csv; FamO2O adds beta_* columns
# and betas.npy). A finished run is skipped; an interrupted one resumes from its checkpoint.
# Controlled settings: everything except FamO2O itself is the same on both sides of a pair.
# - IQL vs FamO2O+IQL: the baseline IQL runs CORL's finetune protocol with a constant actor lr (FamO2O's official
#   lr is constant) and FamO2O runs with the baseline's z-scored states (the official FamO2O code uses raw states).
# - AWAC vs FamO2O+AWAC: FamO2O's AWAC preset already copies the baseline's nets, state normalisation and rewards.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
BUDGET=${BUDGET:-short}
SEEDS=${SEEDS:-"0 1 2"}
DATASETS=${DATASETS:-"local:hopper-medium local:walker2d-medium"}
JOBS=${JOBS:-1}
PAIRS=${PAIRS:-"iql awac"}  # base algorithms to compare FamO2O against
EXTRA=${EXTRA:-}  # more flags for every run, e.g. EXTRA="--device cuda" or "--env Hopper-v5" for an HDF5 path
OUT=${OUT:-results/famo2o/runs}

cmds=()
for ds in $DATASETS; do
  safe=${ds//[:\/]/_}
  for s in $SEEDS; do
    if [[ " $PAIRS " == *" iql "* ]]; then
      cmds+=("$PY baselines/iql.py --dataset $ds --seed $s --budget $BUDGET --finetune true --actor-cosine false  $EXTRA --out $OUT/iql/$safe/seed$s")
      cmds+=("$PY algorithms/famo2o.py --base iql --dataset $ds --seed $s --budget $BUDGET --normalize-states true  $EXTRA --out $OUT/famo2o_iql/$safe/seed$s")
    fi
    if [[ " $PAIRS " == *" awac "* ]]; then
      cmds+=("$PY baselines/awac.py --dataset $ds --seed $s --budget $BUDGET --finetune true  $EXTRA --out $OUT/awac/$safe/seed$s")
      cmds+=("$PY algorithms/famo2o.py --base awac --dataset $ds --seed $s --budget $BUDGET  $EXTRA --out $OUT/famo2o_awac/$safe/seed$s")
    fi
  done
done

run_one() {
  local cmd=$1 out=${1##* }
  if $PY -c "import sys; from o2o.records import is_finished; sys.exit(0 if is_finished('$out') else 1)"; then
    echo "done already: $out"; return 0
  fi
  local resume=""
  [ -f "$out/checkpoint.pt" ] && resume="--resume true"
  mkdir -p "$out"
  echo "running: $cmd $resume"
  $cmd $resume > "$out/log.txt" 2>&1 || echo "FAILED ($?): $out (see $out/log.txt)"
}
export -f run_one
export PY
printf '%s\n' "${cmds[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one "$@"' _ {}

# Summary table: last and best normalized score per algorithm and dataset, mean ± std over seeds.
$PY - "$OUT" <<'PYEOF'
import json, sys
from collections import defaultdict
from pathlib import Path
import numpy as np
rows = defaultdict(list)
for p in sorted(Path(sys.argv[1]).glob("*/*/seed*/summary.json")):
    s = json.loads(p.read_text())
    if s.get("status") == "finished":
        rows[(s["algorithm"], s["dataset"])].append((s["offline_score"], s["online_score"], s["best_score"]))
print(f"{'algorithm':14s} {'dataset':24s} {'n':>2s} {'offline':>14s} {'online (last)':>14s} {'best':>14s}")
for (alg, ds), v in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    a = np.asarray(v, dtype=float)
    cell = lambda x: f"{np.nanmean(x):6.1f} ± {np.nanstd(x):5.1f}"
    print(f"{alg:14s} {ds:24s} {len(v):2d} {cell(a[:, 0]):>14s} {cell(a[:, 1]):>14s} {cell(a[:, 2]):>14s}")
PYEOF
