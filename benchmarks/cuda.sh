#!/usr/bin/env bash
# The CUDA path at the original study's size (configs/seed-gpu*.yaml) on the offline corpus:
# `reasonlab bench` for both arms eager, compiled, and compiled with CUDA graphs, then 200
# training steps of the baseline. Usage: bash benchmarks/cuda.sh [OUT_DIR]
set -euo pipefail
out="${1:-runs/cuda}"
py="${PYTHON:-python3}"
mkdir -p "$out"
offline=(--set data.source=shakespeare --set data.tokenizer=bpe --set model.vocab_size=49152
         --set data.max_documents=0 --set data.max_chars=0)
modes=("eager:--set train.compile=false" "compile:--set train.compile=true"
       "compile-graphs:--set train.compile=true --set train.cuda_graphs=true")
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
"$py" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
for config in seed-gpu seed-gpu-recursive; do
  for mode in "${modes[@]}"; do
    name="${mode%%:*}"
    flags="${mode#*:}"
    # shellcheck disable=SC2086
    "$py" -m reasonlab bench --config "$config" "${offline[@]}" $flags --steps 20 --json \
      > "$out/bench-$config-$name.json" 2>/dev/null
    echo "$config, $name"
    "$py" -c "import json, sys; from reasonlab.bench import format_bench; print(format_bench(json.load(open(sys.argv[1]))))" \
      "$out/bench-$config-$name.json" | tail -1
  done
done
echo "train seed-gpu, 200 steps, compiled with CUDA graphs"
"$py" -m reasonlab train --config seed-gpu "${offline[@]}" --set train.max_steps=200 --set train.compile=true \
  --set train.cuda_graphs=true --out "$out/seed-gpu" 2>&1 | grep -v Warn
