#!/usr/bin/env bash
# The CPU-scale reasoning recipes judged together: baseline, hrm and trm at equal training FLOPs,
# 3 seeds, and trm without augmentation at the same budget (the effect of task.augment).
#
#   benchmarks/recipes_study.sh OUT [sudoku|maze ...] [-- extra tasks flags, e.g. --steps 300]
set -euo pipefail
out=$1; shift
studies=()
while (($#)) && [[ $1 != -- ]]; do studies+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
mkdir -p "$out/arms"
printf 'extends: trm-sudoku-hard-cpu\ntask: {augment: false}\n' >"$out/arms/trm-sudoku-hard-cpu-no-augment.yaml"
printf 'extends: trm-maze-hard-cpu\ntask: {augment: false}\n' >"$out/arms/trm-maze-hard-cpu-no-augment.yaml"
for study in "${studies[@]:-sudoku}"; do
  case $study in
    sudoku)
      reasonlab tasks --task sudoku --arms "sudoku-hard-cpu,hrm-sudoku-hard-cpu,trm-sudoku-hard-cpu,\
$out/arms/trm-sudoku-hard-cpu-no-augment.yaml" --seeds 3 --match flops --out "$out/sudoku-hard-cpu" "$@" ;;
    maze)
      reasonlab tasks --task maze --arms "maze-hard-cpu,trm-maze-hard-cpu,$out/arms/trm-maze-hard-cpu-no-augment.yaml" \
        --seeds 3 --match flops --out "$out/maze-hard-cpu" "$@" ;;
    *) echo "unknown study $study (sudoku, maze)" >&2; exit 2 ;;
  esac
done
