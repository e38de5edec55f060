#!/usr/bin/env bash
# The recursion table: every arm against the baseline at equal FLOPs, 3 seeds, on language
# modelling (cpu-demo scale) and on a reasoning task (task-small scale); and the CPU-scale
# reasoning recipes (sudoku-hard, maze-hard): baseline, hrm and trm, and trm without augmentation
# at the same budget (the effect of task.augment). Beside trm run its controls: control:depth (the
# untied stack of its training FLOPs per step) and control:outer (its outer loop around one pass of
# the stack), and on sudoku-hard trm with the 1-step gradient: what pays, depth, the outer loop or
# the inner recursion.
#
#   benchmarks/recursion_study.sh OUT [lm|sudoku|addition|sudoku-hard|mor|maze-hard ...] [-- extra compare/tasks flags]
#
# mor: Mixture-of-Recursions beside looped+ACT (the two arms whose depth adapts per token) and the
# baseline, at equal FLOPs: on language modelling at the lm study's budget, and on sudoku-hard.
#
# Writes each arm's config under OUT/arms/ (so the study can be rerun and read), then
# OUT/lm (reasonlab compare --arms) and OUT/<task> (reasonlab tasks --arms).
set -euo pipefail
source "$(dirname "$0")/study_args.sh"
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
arm cpu-demo-mor cpu-demo $'model: {arch: mor}\nmor: {recursions: 4}\nrecursion: {max_segments: 1, use_act: false}'
arm looped-act-sudoku-hard-cpu sudoku-hard-cpu $'model: {arch: looped}\nlooped: {depth: 8, act: true}
recursion: {max_segments: 1, use_act: false}'
printf 'extends: trm-sudoku-hard-cpu\ntask: {augment: false}\n' >"$out/arms/trm-sudoku-hard-cpu-no-augment.yaml"
printf 'extends: trm-maze-hard-cpu\ntask: {augment: false}\n' >"$out/arms/trm-maze-hard-cpu-no-augment.yaml"
printf 'extends: trm-sudoku-hard-cpu\ntrm: {grad: one_step}\n' >"$out/arms/trm-sudoku-hard-cpu-one-step.yaml"
a="$out/arms"
for study in "${studies[@]:-lm}"; do
  case $study in
    lm)
      reasonlab compare --arms "cpu-demo,control:flops:$a/cpu-demo-hrm.yaml,$a/cpu-demo-hrm.yaml,$a/cpu-demo-trm.yaml,\
control:depth:$a/cpu-demo-trm.yaml,control:outer:$a/cpu-demo-trm.yaml,$a/cpu-demo-trm-carry-ema.yaml,\
$a/cpu-demo-looped.yaml,$a/cpu-demo-looped-act.yaml,$a/cpu-demo-looped-random.yaml,$a/cpu-demo-mor.yaml" \
        --steps 150 --seeds 3 --match flops --out "$out/lm" "$@" ;;
    sudoku)
      reasonlab tasks --task sudoku --size 4 --format grid --arms "task-small,control:flops:task-small-recursive,\
task-small-recursive,task-small-trm,control:depth:task-small-trm,control:outer:task-small-trm,\
$a/task-small-trm-carry-ema.yaml,task-small-looped,$a/task-small-looped-act.yaml,$a/task-small-looped-random.yaml" \
        --seeds 3 --match flops --out "$out/sudoku" "$@" ;;
    addition)
      reasonlab tasks --task addition --arms "task-small,control:flops:task-small-recursive,task-small-recursive,\
task-small-trm,$a/task-small-trm-carry-ema.yaml,task-small-looped,$a/task-small-looped-act.yaml,\
$a/task-small-looped-random.yaml" --seeds 3 --match flops --out "$out/addition" "$@" ;;
    sudoku-hard)
      reasonlab tasks --task sudoku --arms "sudoku-hard-cpu,control:depth:trm-sudoku-hard-cpu,\
control:outer:trm-sudoku-hard-cpu,hrm-sudoku-hard-cpu,trm-sudoku-hard-cpu,$a/trm-sudoku-hard-cpu-one-step.yaml,\
$a/trm-sudoku-hard-cpu-no-augment.yaml" --seeds 3 --match flops --out "$out/sudoku-hard-cpu" "$@" ;;
    mor)  # Mixture-of-Recursions beside looped+ACT, the other adaptive-depth arm, at equal FLOPs: the
      # costliest arm (looped+ACT, planned at full depth) at the steps that give the lm and
      # sudoku-hard tables' budgets (5.57e12 and 2.37e13 FLOPs)
      reasonlab compare --arms "cpu-demo,$a/cpu-demo-looped-act.yaml,$a/cpu-demo-mor.yaml" --steps 300 --seeds 3 \
        --match flops --out "$out/lm-mor" "$@"
      reasonlab tasks --task sudoku --arms "sudoku-hard-cpu,$a/looped-act-sudoku-hard-cpu.yaml,mor-sudoku-hard-cpu" \
        --steps 519 --seeds 3 --match flops --out "$out/sudoku-hard-cpu-mor" "$@" ;;
    maze-hard)
      reasonlab tasks --task maze --arms "maze-hard-cpu,trm-maze-hard-cpu,$a/trm-maze-hard-cpu-no-augment.yaml" \
        --seeds 3 --match flops --out "$out/maze-hard-cpu" "$@" ;;
    *) echo "unknown study $study (lm, sudoku, addition, sudoku-hard, mor, maze-hard)" >&2; exit 2 ;;
  esac
done
