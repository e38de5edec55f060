#!/usr/bin/env bash
# The recursion table: every arm against the baseline at equal FLOPs, 3 seeds, on language
# modelling (cpu-demo scale) and on a reasoning task (task-small scale).
#
#   benchmarks/recursion_study.sh OUT [lm|sudoku|addition ...] [-- extra compare/tasks flags]
#
# Writes each arm's config under OUT/arms/ (so the study can be rerun and read), then
# OUT/lm (reasonlab compare --arms) and OUT/<task> (reasonlab tasks --arms).
set -euo pipefail
out=$1; shift
studies=()
while (($#)) && [[ $1 != -- ]]; do studies+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
mkdir -p "$out/arms"
arm() {  # name base body
  printf 'extends: %s\n%s\n' "$2" "$3" >"$out/arms/$1.yaml"
}
for scale in cpu-demo task-small; do
  arm "$scale-trm-carry-ema" "$scale" $'model: {arch: trm}\ntrm: {latent_steps: 2, recursions: 2}
recursion: {max_segments: 2, carry_across_steps: true}\ntrain: {ema_decay: 0.999}'
  arm "$scale-looped-act" "$scale" $'model: {arch: looped}\nlooped: {depth: 4, act: true}
recursion: {max_segments: 1, use_act: false}'
  arm "$scale-looped-random" "$scale" $'model: {arch: looped}\nlooped: {mean_depth: 4, backprop_depth: 2}
recursion: {max_segments: 1, use_act: false}'
done
arm cpu-demo-hrm cpu-demo $'model: {arch: hrm}\nhrm: {H_cycles: 1, L_cycles: 1}\nrecursion: {max_segments: 2}'
arm cpu-demo-trm cpu-demo $'model: {arch: trm}\ntrm: {latent_steps: 2, recursions: 2}\nrecursion: {max_segments: 2}'
arm cpu-demo-looped cpu-demo $'model: {arch: looped}\nlooped: {depth: 4}\nrecursion: {max_segments: 1, use_act: false}'
a="$out/arms"
for study in "${studies[@]:-lm}"; do
  case $study in
    lm)
      reasonlab compare --arms "cpu-demo,control:flops:$a/cpu-demo-hrm.yaml,$a/cpu-demo-hrm.yaml,$a/cpu-demo-trm.yaml,\
$a/cpu-demo-trm-carry-ema.yaml,$a/cpu-demo-looped.yaml,$a/cpu-demo-looped-act.yaml,$a/cpu-demo-looped-random.yaml" \
        --steps 150 --seeds 3 --match flops --out "$out/lm" "$@" ;;
    sudoku)
      reasonlab tasks --task sudoku --size 4 --format grid --arms "task-small,control:flops:task-small-recursive,\
task-small-recursive,task-small-trm,$a/task-small-trm-carry-ema.yaml,task-small-looped,$a/task-small-looped-act.yaml,\
$a/task-small-looped-random.yaml" --seeds 3 --match flops --out "$out/sudoku" "$@" ;;
    addition)
      reasonlab tasks --task addition --arms "task-small,control:flops:task-small-recursive,task-small-recursive,\
task-small-trm,$a/task-small-trm-carry-ema.yaml,task-small-looped,$a/task-small-looped-act.yaml,\
$a/task-small-looped-random.yaml" --seeds 3 --match flops --out "$out/addition" "$@" ;;
    *) echo "unknown study $study (lm, sudoku, addition)" >&2; exit 2 ;;
  esac
done
