#!/usr/bin/env bash
# The hopper question (results/uni_o4/README.md, section 2e): H1 (IQL's critic in place of Uni-O4's), H2 (episode
# lengths before and after the improvement, recorded by every run below) and H3 (a never-replace gate), at the
# reduced budget of section 2b on local:hopper-medium, seed 0. The runs share one stage cache (dynamics model and BC
# ensemble are trained once), so the variants differ only in the critic (H1) or the gate (H3).
#   bash results/uni_o4/hypotheses.sh [OUT]          (default OUT = runs/evidence/hopper-question)
# CPU: about 30 min for the first run, 5 min for H3, 15 min for IQL and H1 (2 cores, one thread each).
set -euo pipefail
OUT=${1:-runs/evidence/hopper-question}
PY=${PY:-python}
COMMON="--dataset local:hopper-medium --seed 0 --budget short --q-hidden 256 --v-hidden 256 --critic-steps 100000 \
  --critic-batch 256 --bc-steps 20000 --bc-batch 256 --dyn-max-epochs 5 --improve-steps 1000 --improve-batch 256 \
  --ope-horizon 200 --ope-batch 256 --offline-eval-every 250 --log-every 5000 --eval-episodes 10 --online-steps 0"
mkdir -p "$OUT/base"
# the reference: Uni-O4 at the reduced budget (its own 100k-step critic)
$PY algorithms/uni_o4.py $COMMON --out "$OUT/base"
link() { mkdir -p "$OUT/$1"; [ -e "$OUT/$1/cache" ] || ln -s "$(cd "$OUT/base" && pwd)/cache" "$OUT/$1/cache"; }
# H3: the same improvement with a gate that never replaces π_k (every member keeps its BC policy as behaviour policy)
link never
$PY algorithms/uni_o4.py $COMMON --gate never --out "$OUT/never"
# H1: IQL's 100k-step critic (twin Q 2×256, V 2×256, the one that lifts IQL above BC) in place of Uni-O4's
$PY baselines/iql.py --dataset local:hopper-medium --seed 0 --offline-steps 100000 --eval-every 25000 \
  --eval-episodes 10 --out "$OUT/iql"
link iqlcritic
$PY algorithms/uni_o4.py $COMMON --v-depth 2 --critic-from "$OUT/iql/checkpoint.pt" --out "$OUT/iqlcritic"
