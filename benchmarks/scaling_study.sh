#!/usr/bin/env bash
# The compute-scaling studies of the results page, on a 2-core CPU (hours each; every one resumes
# where it stopped when run again, and reuses what finished):
#
#   benchmarks/scaling_study.sh OUT [sudoku|lm|wsd ...] [-- extra scale flags]
#
# sudoku: what pays on sudoku-hard-cpu: the baseline, trm's controls for depth (control:depth) and
#   for the outer loop (control:outer), trm, trm with the 1-step gradient, and hrm; 5 budgets over
#   16x up to 2.37e13 FLOPs (the comparison's budget on the results page), 3 seeds, the lr grid at
#   the smallest budget.
# lm: language modelling at cpu-demo scale: the baseline, control:depth of looped+ACT (the best
#   recursive arm of the LM table), looped+ACT and hrm; 5 budgets over 32x up to 1.2e13 FLOPs
#   (twice the LM table's 5.57e12), 3 seeds, the lr grid at the smallest budget.
# wsd: the cooldown branches against training every budget from scratch: the lm study's baseline
#   (beside hrm, as a study needs two arms) at its three smallest budgets with --schedule
#   independent (the linear decay over each run's own steps), at the lr the lm study chose and
#   on the same seeds; then each seed's baseline val loss under the two schedules is paired at
#   the two smallest budgets (needs the lm study first).
#
# On a GPU node the original study's question at its own scale (seed-gpu, 8 layers at d_model 512):
#   reasonlab scale --arms seed-gpu,control:depth:seed-gpu-recursive,seed-gpu-recursive \
#     --budgets 5 --span 32 --max-flops 2e17 --seeds 3 --lr-grid 0.5,1,2 --workers 8 --out runs/seed-scale
set -euo pipefail
source "$(dirname "$0")/study_args.sh"
arm trm-sudoku-hard-cpu-one-step trm-sudoku-hard-cpu 'trm: {grad: one_step}'
arm cpu-demo-hrm cpu-demo $'model: {arch: hrm}\nhrm: {H_cycles: 1, L_cycles: 1}\nrecursion: {max_segments: 2}'
arm cpu-demo-looped-act cpu-demo $'model: {arch: looped}\nlooped: {depth: 4, act: true}
recursion: {max_segments: 1, use_act: false}'
a="$out/arms"
lm_budgets=(5 --span 32 --max-flops 1.2e13)
for study in "${studies[@]:-sudoku}"; do
  case $study in
    sudoku)
      reasonlab scale --arms "sudoku-hard-cpu,control:depth:trm-sudoku-hard-cpu,control:outer:trm-sudoku-hard-cpu,\
trm-sudoku-hard-cpu,$a/trm-sudoku-hard-cpu-one-step.yaml,hrm-sudoku-hard-cpu" --budgets 5 --span 16 --max-flops 2.37e13 \
        --seeds 3 --lr-grid 0.5,1,2 --lr-grid-at smallest --set train.eval_every=100000 --out "$out/sudoku" "$@" ;;
    lm)
      reasonlab scale --arms "cpu-demo,control:depth:$a/cpu-demo-looped-act.yaml,$a/cpu-demo-looped-act.yaml,\
$a/cpu-demo-hrm.yaml" --budgets "${lm_budgets[@]}" --seeds 3 --lr-grid 0.5,1,2 --lr-grid-at smallest \
        --set train.eval_every=100000 --out "$out/lm" "$@" ;;
    wsd)
      read -r budgets lr < <(python - "$out/lm/scaling.json" <<'EOF'
import json
import sys

study = json.load(open(sys.argv[1]))
baseline = study["arms"]["a"]
multiplier = baseline["readings"][0]["lr_multiplier"]
print(",".join(map(repr, study["budgets"][:3])), baseline["config"]["train"]["lr"] * multiplier)
EOF
)
      reasonlab scale --arms "cpu-demo,$a/cpu-demo-hrm.yaml" --budgets "$budgets" --seeds 3 --schedule independent \
        --set train.eval_every=100000 --set "train.lr=$lr" --out "$out/wsd-independent" "$@"
      python - "$out/lm/scaling.json" "$out/wsd-independent/scaling.json" <<'EOF'
import json
import sys

from reasonlab.experiments.stats import paired_diff

wsd, independent = (json.load(open(path)) for path in sys.argv[1:])
for i in range(2):
    w, s = wsd["arms"]["a"]["readings"][i], independent["arms"]["a"]["readings"][i]
    assert w["seeds"] == s["seeds"], "the two studies must run the same seeds"
    d = paired_diff(s["loss"], w["loss"])
    print(f"baseline at {w['budget']:.3g} FLOPs: wsd branch {sum(w['loss']) / len(w['loss']):.4f}, independent "
          f"{sum(s['loss']) / len(s['loss']):.4f}, wsd - independent {d['diff']:+.4f} "
          f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] (95%, paired over seeds {w['seeds']})")
EOF
      ;;
    *) echo "unknown study $study (sudoku, lm, wsd)" >&2; exit 2 ;;
  esac
done
