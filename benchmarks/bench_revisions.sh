#!/usr/bin/env bash
# `reasonlab bench` of two git revisions, alternating process by process, so that a speed claim
# is a before/after ratio from one run on one host (machine drift touches both alike).
#
#   benchmarks/bench_revisions.sh BEFORE AFTER [ROUNDS] > bench.jsonl
#
# Each line of output is one bench result (JSON) with "revision" added; every row runs in its
# own process: baseline and recursive (hrm H1/L1, 2 segments) at cpu-bench, fp32, and bf16 where
# the CPU has bf16 instructions (reasonlab refuses bf16 elsewhere). The old key names
# (recursion.H_cycles, --model recursive) are the ones every revision accepts.
set -euo pipefail
before=$1 after=$2 rounds=${3:-2}
top=$(git rev-parse --show-toplevel)
trees=$(mktemp -d)
trap 'git -C "$top" worktree remove --force "$trees/before" >/dev/null 2>&1 || true;
      git -C "$top" worktree remove --force "$trees/after" >/dev/null 2>&1 || true; rm -rf "$trees"' EXIT
git -C "$top" worktree add --quiet --detach "$trees/before" "$before"
git -C "$top" worktree add --quiet --detach "$trees/after" "$after"
bench() {  # revision-label arch precision steps
  (cd "$trees" && PYTHONPATH="$trees/$1/src" python -c \
    "import sys; from reasonlab.cli import main; sys.exit(main(sys.argv[1:]))" bench --config cpu-bench \
    --model "$2" --set "train.precision=$3" --set recursion.H_cycles=1 --set recursion.L_cycles=1 --steps "$4" --json) |
    python -c "import json, sys; r = json.load(sys.stdin); r['revision'] = '$1'; print(json.dumps(r))"
}
rows=("baseline fp32 10" "recursive fp32 5")
if python -c "import sys; from reasonlab.runtime import cpu_has_native_bf16; sys.exit(not cpu_has_native_bf16())"; then
  rows+=("baseline bf16 10" "recursive bf16 5")
fi
for _ in $(seq "$rounds"); do
  for row in "${rows[@]}"; do
    read -r arch precision steps <<<"$row"
    bench before "$arch" "$precision" "$steps"
    bench after "$arch" "$precision" "$steps"
  done
done
